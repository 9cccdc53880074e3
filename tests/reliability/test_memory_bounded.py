"""Memory stays bounded while the backend is down: queues, the tag buffer and span metadata all have limits."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_memory_is_bounded_during_an_outage(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """30 000 traced requests against a refusing backend hold memory for the bounded queues only, not for all."""
    local_server.set_fault(None, kind="refuse")
    tracer = make_tracer(
        project_id="p",
        max_queue_size=1024,
        max_export_batch_size=256,
        eval_queue_size=200,
        eval_transport="api",  # the evaluation queue's own bound is checked below
        tag_buffer_max_traces=500,
        metadata_max_entries=1000,
        retry_testing=False,
        retry_wait_initial=0.5,
        retry_wait_max=1.0,
        retry_attempts=1000,
        export_timeout=600.0,
    )
    payload = "x" * 2000  # ~2 KB per span input, so an unbounded pipeline would need ~60 MB+ for 30 000 spans

    @tracer.observe
    def handle(i: int, body: str) -> int:
        tracer.tag([f"t{i}"])
        tracer.async_evaluate("faithfulness", {"input": body})
        return i

    def run(n: int) -> None:
        for i in range(n):
            with tracer.span("hung") as span:
                tracer.processor.set_internal_attribute(span, "judgment.i", i)
                handle(i, payload)

    run(2000)  # warm-up: the loop thread, the client and the caches exist before we measure
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        run(30_000)
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    health = tracer.get_health_metrics()
    grown_mb = (after - before) / 1e6
    # Bounded: two span queues' worth (queued + one batch per send slot) plus buffers; unbounded would be 60 MB+.
    assert grown_mb < 25, f"memory grew by {grown_mb:.1f} MB (peak {peak / 1e6:.1f} MB)"
    assert health["spans_dropped_by_reason"].get("queue_full", 0) > 0
    assert health["evaluations_dropped_by_reason"].get("queue_full", 0) > 0
    assert health["metadata_entries"] <= 1000
    assert health["ledger_balanced"]
    tracer.shutdown(timeout=1.0)


def test_backlog_behind_a_dead_backend_is_bytes_not_spans(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """Spans waiting behind a black-holed backend are held (not dropped) as encoded bytes: few live span objects for
    the GC, and the backlog's bytes are reported."""
    from opentelemetry.sdk.trace import ReadableSpan

    from judgeval_async._span import EngineSpan

    local_server.set_fault(None, kind="blackhole")
    tracer = make_tracer(project_id="p", max_queue_size=2000, max_concurrent_exports=1, read_timeout=60.0)
    for i in range(6000):
        with tracer.span(f"s{i}"):
            pass
    # Give the loop a moment of its own to encode what it has taken (the handoff drains in slices of 64).
    assert tracer._runtime.ensure_started(wait=10.0)
    deadline_ok = tracer._runtime.run(_settle(tracer), timeout=30.0)
    assert deadline_ok
    gc.collect()
    live_spans = sum(1 for o in gc.get_objects() if isinstance(o, (ReadableSpan, EngineSpan)))
    health = tracer.get_health_metrics()
    # Only the queue's own bound drops (a producer faster than the loop); what got in is held, not dropped: in the
    # byte-bounded backlog (in flight) or on disk (spooled).
    assert set(health["spans_dropped_by_reason"]) <= {"queue_full"}
    held = health["spans_queued"] + health["spans_in_flight"] + health["spans_spooled"]
    assert held == 6000 - health["spans_dropped"] and held >= 2000
    assert health["backlog_bytes"]["spans"] + health["spool_bytes"]["spans"] > 0
    assert live_spans < 200, live_spans
    assert health["ledger_balanced"]
    tracer.shutdown(timeout=1.0)


async def _settle(tracer: Tracer) -> bool:
    """Wait (on the SDK loop) until the handoff is empty: everything taken is encoded or dropped."""
    import asyncio

    for _ in range(3000):
        if not len(tracer._spans.handoff):
            await asyncio.sleep(0.05)  # one more loop turn for the last slice's encoding
            return True
        await asyncio.sleep(0.01)
    return False
