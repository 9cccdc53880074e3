"""judgeval_async.asgi: request spans named after the route template, and the flush on lifespan shutdown, driven
as an ASGI server would drive them (no web framework needed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from judgeval_async import Tracer
from judgeval_async.asgi import TracingMiddleware, lifespan
from judgeval_async.testing import LocalJudgmentServer

pytestmark = pytest.mark.asyncio


class _Route:
    path = "/items/{item_id}"


def _http_scope(path: str) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "headers": []}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _endpoint(tracer: Tracer, *, route: bool, status: int = 200, fail: bool = False) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if route:
            scope["route"] = _Route()  # what Starlette's router does once it has matched
        with tracer.span("handler"):
            if fail:
                raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def _call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, _receive, send)
    return sent


async def test_request_span_is_named_after_the_route_template(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """The request span is "GET /items/{item_id}" (not the raw path), with route, method and status attributes,
    and the handler's span is its child."""
    tracer = make_tracer()
    app = TracingMiddleware(_endpoint(tracer, route=True, status=201), tracer=tracer)
    sent = await _call(app, _http_scope("/items/42"))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert await tracer.aflush(timeout=10.0)
    spans = {r.name: r for r in local_server.spans.values()}
    request = spans["GET /items/{item_id}"]
    assert request.attributes["http.route"] == "/items/{item_id}"
    assert request.attributes["http.request.method"] == "GET"
    assert request.attributes["http.response.status_code"] == 201
    assert spans["handler"].parent_span_id == request.span_id


async def test_without_a_route_the_span_is_named_by_method_only(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """No matched route in the scope: the span is named "GET", never after the raw (high-cardinality) path."""
    tracer = make_tracer()
    await _call(TracingMiddleware(_endpoint(tracer, route=False), tracer=tracer), _http_scope("/users/123"))
    assert await tracer.aflush(timeout=10.0)
    names = sorted(r.name for r in local_server.spans.values())
    assert names == ["GET", "handler"]


async def test_failing_handler_propagates_and_marks_the_span(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """An exception from the app reaches the server unchanged; the request span records the error."""
    tracer = make_tracer()
    app = TracingMiddleware(_endpoint(tracer, route=True, fail=True), tracer=tracer)
    with pytest.raises(RuntimeError, match="boom"):
        await _call(app, _http_scope("/items/1"))
    assert await tracer.aflush(timeout=10.0)
    request = next(r for r in local_server.spans.values() if r.name == "GET /items/{item_id}")
    assert request.status_code == 2  # OTLP STATUS_CODE_ERROR
    assert "http.response.status_code" not in request.attributes


async def test_trace_requests_off_passes_http_through(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """trace_requests=False: no request span, the app's own spans unchanged."""
    tracer = make_tracer()
    app = TracingMiddleware(_endpoint(tracer, route=True), tracer=tracer, trace_requests=False)
    await _call(app, _http_scope("/items/1"))
    assert await tracer.aflush(timeout=10.0)
    assert [r.name for r in local_server.spans.values()] == ["handler"]


async def test_lifespan_shutdown_delivers_before_reporting_complete(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """On lifespan shutdown the middleware delivers what is held before it forwards shutdown.complete."""
    tracer = make_tracer(schedule_delay=60.0, tag_flush_interval=60.0)
    for _ in range(5):
        with tracer.span("held"):
            tracer.tag("t")

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    seen_at_complete: list[tuple[int, int]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.shutdown.complete":
            seen_at_complete.append((len(local_server.spans), len(local_server.tags)))

    await TracingMiddleware(inner, tracer=tracer)({"type": "lifespan"}, receive, send)
    assert seen_at_complete == [(5, 5)]


async def test_lifespan_helper_flushes_when_the_app_stops(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """lifespan(tracer), used as FastAPI/Starlette's lifespan=, delivers what is held when the app stops."""
    tracer = make_tracer(schedule_delay=60.0)
    async with lifespan(tracer)(object()):
        with tracer.span("during-app"):
            pass
        assert len(local_server.spans) == 0
    assert [r.name for r in local_server.spans.values()] == ["during-app"]


async def test_other_scopes_pass_through_untouched(make_tracer: Callable[..., Tracer]) -> None:
    """A websocket scope goes to the app with the server's own receive and send callables."""
    tracer = make_tracer()
    calls: list[tuple[Any, Any]] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        calls.append((receive, send))

    async def send(message: dict[str, Any]) -> None:
        return None

    await TracingMiddleware(inner, tracer=tracer)({"type": "websocket"}, _receive, send)
    assert calls == [(_receive, send)]
