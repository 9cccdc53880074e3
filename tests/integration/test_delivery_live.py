"""Delivery over real sockets against the local server: retry, Retry-After, deadlines, shutdown with a hung backend."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer


def _evaluate_once(tracer: Tracer) -> None:
    with tracer.span("root"):
        tracer.async_evaluate("faithfulness", {"input": "q", "actual_output": "a"})


def test_503_503_200_is_delivered_once(local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]) -> None:
    """A send answered 503, 503, then 200 is delivered exactly once after two retries."""
    local_server.set_fault("evals", kind="status", status=503, recover_after_requests=2)
    tracer = make_tracer()
    _evaluate_once(tracer)
    assert tracer.force_flush(timeout=10.0)
    assert len(local_server.raw_evals) == 1
    assert local_server.request_count("evals", 503) == 2
    health = tracer.get_health_metrics()
    assert health["evaluations_delivered"] == 1
    assert health["endpoints"]["evals"]["retries"] == 2
    assert health["api_errors_by_endpoint"]["evals"] == {"503": 2}
    assert health["endpoints"]["evals"]["last_error"] == "HTTP 503"
    assert health["endpoints"]["evals"]["bytes_sent"] > 0
    # The three attempts are one logical send: they carry the same idempotency key.
    seen = local_server.headers_seen("evals")
    assert len(seen) == 3
    keys = {h.get("idempotency-key") for h in seen}
    assert len(keys) == 1 and None not in keys


def test_429_retry_after_is_honoured(local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]) -> None:
    """A 429 with Retry-After: 1 is retried after about a second, not at once (even in zero-backoff mode)."""
    local_server.set_fault("evals", kind="status", status=429, retry_after=1, recover_after_requests=1)
    tracer = make_tracer()
    started = time.monotonic()
    _evaluate_once(tracer)
    assert local_server.wait_for(evals=1, timeout=15.0)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.9  # the behaviour *is* the wait: it must not come early
    assert elapsed < 10.0
    assert local_server.request_count("evals", 429) == 1


def test_429_pauses_only_its_endpoint(local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]) -> None:
    """While evals are paused by a long Retry-After, spans still go out."""
    local_server.set_fault("evals", kind="status", status=429, retry_after=30)
    tracer = make_tracer()
    _evaluate_once(tracer)
    assert local_server.wait_for(requests={"evals": 1}, timeout=10.0)
    with tracer.span("other"):
        pass
    assert local_server.wait_for(spans=2, timeout=10.0)
    assert tracer.get_health_metrics()["endpoints"]["evals"]["paused_for_seconds"] > 0


def test_black_holed_request_is_abandoned_at_its_deadline(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """A request the backend never answers times out and is held (endpoint down), not dropped; it is delivered
    once the backend answers again."""
    local_server.set_fault("traces", kind="blackhole")
    tracer = make_tracer(export_timeout=1.0, read_timeout=0.3)
    with tracer.span("held"):
        pass
    started = time.monotonic()
    assert not tracer.force_flush(timeout=2.0)  # the flush keeps its own deadline
    assert time.monotonic() - started < 8.0
    health = tracer.get_health_metrics()
    assert health["spans_dropped_by_reason"] == {}
    assert health["api_errors_by_endpoint"]["traces"].get("timeout", 0) >= 1
    assert health["ledger_balanced"]
    local_server.clear_faults()
    assert tracer.force_flush(timeout=10.0)
    assert [r.name for r in local_server.spans.values()] == ["held"]


def test_shutdown_with_hung_backend_keeps_its_deadline(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """shutdown(timeout=1) returns within its deadline while the backend black-holes, and reports the drops."""
    local_server.set_fault(None, kind="blackhole")
    tracer = make_tracer(read_timeout=30.0, export_timeout=60.0)
    for _ in range(20):
        with tracer.span("s"):
            tracer.tag("t")
            tracer.async_evaluate("faithfulness", {"input": "x"})
    started = time.monotonic()
    tracer.shutdown(timeout=1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 4.0  # 1 s deadline plus generous slack; the backend would hold us 30 s+
    health = tracer.get_health_metrics()
    assert health["ledger_balanced"]
    # Held, then persisted to the spool at shutdown (the next process replays them), or counted if not.
    assert health["spans_dropped_by_reason"].get("shutdown_deadline", 0) + health["spans_spooled"] == 20
    assert health["evaluations_dropped_by_reason"].get("shutdown_deadline", 0) + health["evaluations_spooled"] == 20
    assert health["tags_dropped"] + health["tags_spooled"] == 20


@pytest.mark.timeout(60)
def test_refused_connection_is_retried_then_delivered(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """Spans survive a backend that refuses connections for a moment, then comes back."""
    tracer = make_tracer(retry_testing=False, retry_wait_initial=0.05, retry_wait_max=0.2, retry_attempts=100)
    local_server.set_fault(None, kind="refuse", recover_after_seconds=1.0)
    with tracer.span("survivor"):
        pass
    assert tracer.force_flush(timeout=30.0)
    assert len(local_server.spans) == 1
    assert tracer.get_health_metrics()["api_errors_by_endpoint"]["resolve"].get("network", 0) >= 1


def test_flush_sends_queued_batches_back_to_back(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """With one send slot and a slow backend, a flush sends batch after batch as each send finishes, without
    waiting out schedule_delay between them."""
    local_server.set_fault("traces", kind="latency", seconds=0.2)
    tracer = make_tracer(schedule_delay=30.0, max_concurrent_exports=1, project_id="p", max_export_batch_size=512)
    for i in range(1500):  # three batches of 512
        with tracer.span(f"s{i}"):
            pass
    started = time.monotonic()
    assert tracer.force_flush(timeout=25.0)
    assert time.monotonic() - started < 15.0  # one schedule_delay of waiting would already be 30 s
    assert len(local_server.spans) == 1500
    assert local_server.request_count("traces") == 3
