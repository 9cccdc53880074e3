"""A hostile or misconfigured backend, over real sockets: every drop names its cause, and the SDK's HTTP logging
stays out of the application's logs even with the root logger at DEBUG."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from judgeval_async import Tracer
from judgeval_async._config import LOOP_THREAD_NAME
from judgeval_async.testing import LocalJudgmentServer

pytestmark = pytest.mark.timeout(60)


def _produce(tracer: Tracer) -> None:
    with tracer.span("root"):
        tracer.tag("t1")
        tracer.async_evaluate("faithfulness", {"input": "q", "actual_output": "a"})


def _reasons(health: dict[str, Any]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    return (
        health["spans_dropped_by_reason"],
        health["evaluations_dropped_by_reason"],
        health["tags_dropped_by_reason"],
    )


@pytest.mark.parametrize(
    ("status", "reason"),
    [(401, "auth_error"), (403, "auth_error"), (405, "non_retryable_status"), (404, "non_retryable_status")],
)
def test_failed_project_resolve_drops_with_its_cause(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], status: int, reason: str
) -> None:
    """A resolve refused with 401/403/405 drops spans, evaluations and tags for that cause, not retries_exhausted."""
    local_server.set_fault("resolve", kind="status", status=status)
    local_server.set_batch_tags_enabled(False)  # per-trace tags need the project id as well
    tracer = make_tracer(project_resolve_wait=10.0)
    _produce(tracer)
    assert tracer.force_flush(timeout=20.0)
    health = tracer.get_health_metrics()
    assert _reasons(health) == ({reason: 1}, {reason: 1}, {reason: 1})
    assert health["ledger_balanced"]


def test_missing_credentials_are_an_auth_error(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], caplog: pytest.LogCaptureFixture
) -> None:
    """No API key: the backend's 401 drops everything as auth_error, and the error log says no key is configured."""
    tracer = make_tracer(api_key="", organization_id="")
    with caplog.at_level(logging.ERROR, logger="judgeval_async"):
        _produce(tracer)
        assert tracer.force_flush(timeout=20.0)
    health = tracer.get_health_metrics()
    spans, evals, _ = _reasons(health)
    assert spans == {"auth_error": 1} and evals == {"auth_error": 1}
    assert health["ledger_balanced"]
    assert any("no API key is configured" in r.getMessage() for r in caplog.records)


def test_resolve_that_keeps_failing_holds_the_spans(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """A retryable resolve failure (503 on every call) holds the spans like an outage; they go once it resolves."""
    local_server.set_fault("resolve", kind="status", status=503)
    tracer = make_tracer(retry_attempts=2)
    with tracer.span("root"):
        pass
    assert not tracer.force_flush(timeout=2.0)
    assert tracer.get_health_metrics()["spans_dropped_by_reason"] == {}
    local_server.clear_faults()
    assert tracer.force_flush(timeout=20.0)
    assert tracer.get_health_metrics()["spans_exported"] == 1


def test_no_http_library_record_from_the_loop_thread_reaches_the_application(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], caplog: pytest.LogCaptureFixture
) -> None:
    """With the root logger at DEBUG, httpx/httpcore records of our sends never reach it; the app's own still do."""
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG):
            tracer = make_tracer()
            _produce(tracer)
            assert tracer.force_flush(timeout=20.0)
            assert local_server.request_count("traces", 200) >= 1
            # The application's own httpx use, on its own thread, is logged as usual.
            with httpx.Client(timeout=5.0) as client:
                client.post(local_server.url + "/v1/projects/resolve/", json={"project_name": "x"})
    finally:
        root.setLevel(saved)
    http_records = [r for r in caplog.records if r.name.split(".")[0] in ("httpx", "httpcore")]
    assert not [r for r in http_records if r.threadName == LOOP_THREAD_NAME]
    ours = threading.current_thread().name
    assert any(r.name.startswith("httpcore.") and r.threadName == ours for r in http_records)
    assert any(r.name == "httpx" and r.threadName == ours for r in http_records)
