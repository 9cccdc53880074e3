"""A quiet, healthy service holds spans briefly: with no send in flight, a partial batch goes out in well under
``schedule_delay`` (the window a killed process can lose), while a busy one still sends full batches."""

from __future__ import annotations

import time
from collections.abc import Callable

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer

SCHEDULE_DELAY = 30.0  # long, so "well before schedule_delay" cannot be an accident of timing


def _received_within(server: LocalJudgmentServer, n: int, timeout: float) -> float | None:
    """Seconds until the server holds ``n`` spans, or None if it did not within ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if len(server.spans) >= n:
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


def test_a_span_at_a_low_rate_is_exported_well_before_schedule_delay(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """At a low rate against a healthy backend, each span reaches the server within seconds, not schedule_delay."""
    tracer = make_tracer(schedule_delay=SCHEDULE_DELAY)
    for i in range(3):
        with tracer.span(f"quiet-{i}"):
            pass
        waited = _received_within(local_server, i + 1, timeout=10.0)
        assert waited is not None, f"span {i} still held after 10 s (schedule_delay is {SCHEDULE_DELAY} s)"
        time.sleep(0.3)  # a low rate: the previous send has finished when the next span ends
    snap = tracer.metrics.spans.snapshot()
    assert (snap.delivered, snap.queued, snap.in_flight) == (3, 0, 0)


def test_under_load_spans_still_go_out_in_full_batches(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """A burst far larger than a batch is sent mostly in full batches: the idle rule does not turn a busy
    exporter into one request per few spans."""
    tracer = make_tracer(schedule_delay=SCHEDULE_DELAY, max_export_batch_size=200, max_concurrent_exports=1)
    local_server.set_fault("traces", kind="latency", seconds=0.2)  # a send is in flight while the burst arrives
    for i in range(2000):
        with tracer.span(f"busy-{i}"):
            pass
    assert tracer.force_flush(timeout=30.0)
    assert len(local_server.spans) == 2000
    # 2000 spans in batches of 200 is 10 requests; idle-sent partial batches add a few, never hundreds.
    assert local_server.request_count("traces") <= 20
