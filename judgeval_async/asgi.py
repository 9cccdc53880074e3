"""ASGI integration: flush when the application shuts down, and one span per request named after its route.

Pure ASGI, so it works with FastAPI, Starlette, Quart or a bare ASGI callable, and imports no web framework::

    from fastapi import FastAPI
    from judgeval_async import Tracer
    from judgeval_async.asgi import TracingMiddleware

    tracer = Tracer(project_name="my-service")
    app = FastAPI()
    app.add_middleware(TracingMiddleware, tracer=tracer)

Not required for delivery at shutdown: a SIGTERM already flushes (see docs/deployment.md). The middleware makes the
flush explicit and early (on the server's lifespan shutdown, once in-flight requests are done) and adds request
spans. ``lifespan(tracer)`` is the same shutdown flush for an application that has no lifespan of its own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from ._tracer import Tracer

__all__ = ["TracingMiddleware", "lifespan"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SHUTDOWN_DONE = frozenset({"lifespan.shutdown.complete", "lifespan.shutdown.failed"})


class TracingMiddleware:
    """Wrap an ASGI app: flush ``tracer`` on lifespan shutdown; with ``trace_requests``, a span per HTTP request.

    The request span is named ``"{method} {route}"`` with the route *template* (``/items/{item_id}``) when the
    framework puts the matched route in the scope (Starlette and FastAPI do), else ``"{method}"``: never the raw
    path, which would make one span name per URL. It carries ``http.request.method``, ``http.route`` and
    ``http.response.status_code``; spans the handler creates are its children.

    ``flush_timeout`` bounds the shutdown flush (seconds; default the tracer's ``exit_timeout``).
    """

    def __init__(
        self,
        app: ASGIApp,
        tracer: Tracer,
        *,
        trace_requests: bool = True,
        flush_timeout: float | None = None,
        span_type: str = "span",
    ) -> None:
        self.app = app
        self._tracer = tracer
        self._trace_requests = trace_requests
        self._flush_timeout = flush_timeout
        self._span_type = span_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self.app(scope, receive, self._flushing_send(send))
        elif kind == "http" and self._trace_requests:
            await self._traced(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _flushing_send(self, send: Send) -> Send:
        async def flushing_send(message: Message) -> None:
            if message.get("type") in _SHUTDOWN_DONE:
                # The server has finished every request: deliver what they produced before it reports done.
                await _flush(self._tracer, self._flush_timeout)
            await send(message)

        return flushing_send

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope.get("method", "HTTP"))
        status: list[int] = []

        async def recording_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message.get("status", 0)))
            await send(message)

        async with self._tracer.span(method, span_type=self._span_type) as span:
            try:
                await self.app(scope, receive, recording_send)
            finally:
                # After the call: the router has put the matched route into the scope by now.
                try:
                    route = _route_of(scope)
                    span.set_attribute("http.request.method", method)
                    if route:
                        span.update_name(f"{method} {route}")
                        span.set_attribute("http.route", route)
                    if status:
                        span.set_attribute("http.response.status_code", status[0])
                except Exception:  # never break the request for a span attribute
                    logger.debug("judgeval_async request span attributes failed", exc_info=True)


def lifespan(
    tracer: Tracer, *, flush_timeout: float | None = None
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A ``lifespan=`` for FastAPI/Starlette apps that have none: flush ``tracer`` when the app shuts down."""

    @contextlib.asynccontextmanager
    async def flushing_lifespan(app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await _flush(tracer, flush_timeout)

    return flushing_lifespan


async def _flush(tracer: Tracer, timeout: float | None) -> None:
    budget = tracer.config.exit_timeout if timeout is None else timeout
    try:
        if not await tracer.aflush(timeout=budget):
            logger.warning("judgeval_async: shutdown flush did not finish within %.3gs", budget)
    except Exception:  # the server's shutdown must go on
        logger.debug("judgeval_async shutdown flush failed", exc_info=True)


def _route_of(scope: Scope) -> str | None:
    route = scope.get("route")
    path = getattr(route, "path", None) or getattr(route, "path_format", None)
    if isinstance(path, str) and path:
        return path
    return None
