"""Spans to a third-party otlp_endpoint: no project resolve, no Judgment credentials, the backend's own headers;
tags and evaluations are counted no-ops when there is no Judgment API to take them."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer


@pytest.fixture
def otlp_server() -> Iterator[LocalJudgmentServer]:
    """A second local server standing in for a third-party OTLP backend, with credentials of its own."""
    server = LocalJudgmentServer(api_key="otlp-key", org_id="otlp-org", require_project_id=False).start()
    yield server
    server.stop()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there


def _work(tracer: Tracer, n: int = 3) -> None:
    for i in range(n):
        with tracer.span(f"step-{i}"):
            tracer.tag(["otlp"])
            tracer.async_evaluate(example={"i": i})


def test_judgment_credentials_never_reach_a_third_party_otlp_endpoint(
    local_server: LocalJudgmentServer, otlp_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """With Judgment configured and otlp_endpoint elsewhere, the OTLP server gets otlp_headers and no Judgment
    credential or project id; Judgment still gets tags with its own credentials; no resolve is done for spans."""
    tracer = make_tracer(
        otlp_endpoint=f"{otlp_server.url}/otel/v1/traces",
        otlp_headers={"authorization": "Bearer otlp-key", "x-organization-id": "otlp-org", "x-backend": "phoenix"},
    )
    with tracer.span("root"):
        tracer.tag(["to-judgment"])
    assert tracer.force_flush(timeout=10.0)
    assert [r.name for r in otlp_server.spans.values()] == ["root"]
    assert local_server.request_count("traces") == 0
    seen = otlp_server.headers_seen("traces")
    assert seen
    for headers in seen:
        assert headers["authorization"] == "Bearer <redacted>"  # the OTLP server accepted it: its own key (401 else)
        assert headers["x-organization-id"] == "otlp-org"
        assert headers["x-backend"] == "phoenix"
        assert "x-project-id" not in headers
    # Tags still go to Judgment (an api_key is set), with Judgment's credentials.
    assert local_server.tags and all(t == {"to-judgment"} for t in local_server.tags.values())
    tag_headers = local_server.headers_seen("tags_batch") + local_server.headers_seen("tags")
    assert tag_headers and all(h["x-organization-id"] == local_server.org_id for h in tag_headers)
    assert all("x-backend" not in h for h in tag_headers)  # otlp_headers go to otlp_endpoint only
    assert tracer.get_health_metrics()["calls_ignored"] == {}


def test_no_judgment_credential_without_otlp_headers(
    otlp_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """With an api_key and organization set but no otlp_headers, requests to the third party carry neither."""
    tracer = make_tracer(otlp_endpoint=f"{otlp_server.url}/otel/v1/traces")
    with tracer.span("root"):
        pass
    tracer.force_flush(timeout=10.0)  # the OTLP server answers 401 (none of its credentials): dropped, counted
    seen = otlp_server.headers_seen("traces")
    assert seen
    for headers in seen:
        assert "authorization" not in headers
        assert "x-organization-id" not in headers
        assert "x-project-id" not in headers


def test_only_otlp_endpoint_sends_without_resolve_or_stall(otlp_server: LocalJudgmentServer) -> None:
    """Only otlp_endpoint (no api_key, no project_id, api_url unreachable): spans arrive at once, no resolve wait;
    tag() and async_evaluate() are counted no-ops (no_judgment_api), the tags still on the span."""
    tracer = Tracer(
        project_name="otlp-only",
        api_url=_closed_port_url(),
        otlp_endpoint=f"{otlp_server.url}/otel/v1/traces",
        otlp_headers={"authorization": "Bearer otlp-key", "x-organization-id": "otlp-org"},
        project_resolve_wait=30.0,  # a resolve would stall the export this long
        retry_testing=True,
        schedule_delay=0.05,
        install_signal_handlers=False,
    )
    try:
        _work(tracer)
        # Well within the 30 s a resolve against the dead api_url would have waited.
        assert tracer.force_flush(timeout=15.0)
        spans = {r.name: r for r in otlp_server.spans.values()}
        assert sorted(spans) == ["step-0", "step-1", "step-2"]
        assert all(list(r.attributes["tag.tags"]) == ["otlp"] for r in spans.values())
        health = tracer.get_health_metrics()
        assert health["calls_ignored"] == {"tag:no_judgment_api": 3, "async_evaluate:no_judgment_api": 3}
        assert otlp_server.request_count("resolve") == 0
        assert otlp_server.request_count("tags_batch") == otlp_server.request_count("evals") == 0
    finally:
        tracer.shutdown(timeout=5.0)
