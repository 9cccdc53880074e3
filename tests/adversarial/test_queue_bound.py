"""One bound for the span backlog: the handoff and the encoded spans behind it share ``max_queue_size``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer

CAPACITY = 100


def _eventually(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def _spans(tracer: Tracer, n: int) -> None:
    for i in range(n):
        with tracer.span(f"s{i}"):
            pass


@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest"])
def test_span_backlog_never_exceeds_max_queue_size(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], overflow: str
) -> None:
    """Behind a backend that never answers and a loop that stalls, queued spans stay <= max_queue_size
    (utilization <= 1.0); the rest is dropped queue_full, and the ledger balances."""
    local_server.set_fault("traces", kind="blackhole")
    tracer = make_tracer(
        max_queue_size=CAPACITY,
        max_export_batch_size=10,
        max_concurrent_exports=1,
        schedule_delay=0.01,
        span_overflow=overflow,
    )
    # 1. Behind the one stuck send, encoded batches are held by the delivery lane's byte-bounded backlog (in
    #    flight), outside the span queue's bound.
    _spans(tracer, 3 * CAPACITY)
    led = tracer.metrics.spans
    assert _eventually(lambda: led.in_flight >= CAPACITY and not len(tracer._spans.handoff), 10.0)
    # 2. The SDK loop stalls (a long GC pause, a starved core) while the application goes on producing.
    loop = tracer._runtime._loop
    assert loop is not None
    release = threading.Event()
    stalled = threading.Event()

    def stall() -> None:
        stalled.set()
        release.wait(10.0)

    loop.call_soon_threadsafe(stall)
    try:
        assert stalled.wait(10.0)
        _spans(tracer, 3 * CAPACITY)
        snap = tracer.metrics.spans.snapshot()
        utilization = tracer.get_health_metrics()["queue_utilization"]
        waiting = len(tracer._spans.handoff)
    finally:
        release.set()
    assert snap.queued <= CAPACITY
    assert utilization <= 1.0
    assert snap.created == 6 * CAPACITY
    assert snap.dropped.get("queue_full", 0) >= 3 * CAPACITY - CAPACITY  # the second wave beyond the queue's bound
    if overflow == "drop_oldest":
        assert waiting == CAPACITY  # the newest spans were kept, the oldest (encoded) ones dropped
    tracer.shutdown(timeout=0.5)
    final = tracer.metrics.spans.snapshot()
    assert final.balanced
    assert (final.queued, final.in_flight) == (0, 0)
