"""Every blocking call returns by its deadline, whatever the backend or the SDK loop is doing.

Where a bound must be tight it is compared with a control measured in the same test (a plain ``Event.wait`` of the
same length: the same kind of thread wake-up, on the same loaded machine). Overshoots are recorded as test
properties (``--junitxml``) and printed (``-s``).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable

import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer

# Loose bound for a loaded CI box; the tight comparisons below use a control instead.
SLACK = 0.5
# How much later than a plain Event.wait of the same length a deadline-bound call may return. The old code
# overshot by 0.25 s (force_flush waited timeout + 0.25) whenever the loop was late to answer.
OVER_CONTROL = 0.15


def _control_overshoot(timeout: float) -> float:
    started = time.monotonic()
    threading.Event().wait(timeout)
    return time.monotonic() - started - timeout


def _timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def _queue_items(tracer: Tracer, n: int = 20) -> None:
    for i in range(n):
        with tracer.span(f"s{i}"):
            tracer.tag("t")
            tracer.async_evaluate("faithfulness", {"i": i})


async def _hold_loop(seconds: float) -> None:
    time.sleep(seconds)  # blocks the SDK loop thread: a stand-in for a loop busy encoding a huge batch


def _slow_backend_tracer(server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]) -> Tracer:
    # A backend that answers after 30 s, well inside the client's timeouts: only the caller's deadline can stop a wait.
    server.set_fault(None, kind="latency", seconds=30.0)
    return make_tracer(read_timeout=60.0, export_timeout=120.0, exit_timeout=1.0)


def test_force_flush_returns_by_its_deadline_not_the_backends(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], record_property: Callable[..., None]
) -> None:
    """force_flush(1.0) against a backend answering in 30 s returns False after about 1 s."""
    tracer = _slow_backend_tracer(local_server, make_tracer)
    _queue_items(tracer)
    ok, elapsed = _timed(lambda: tracer.force_flush(timeout=1.0))
    record_property("force_flush_overshoot_s", round(elapsed - 1.0, 4))
    assert ok is False
    assert 0.9 <= elapsed < 1.0 + SLACK
    tracer.shutdown(timeout=0.2)  # not the fixture's 5 s against a backend that never answers in time


def test_shutdown_after_force_flush_is_bounded_by_its_own_timeout(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], record_property: Callable[..., None]
) -> None:
    """force_flush(t) then shutdown(t) against a slow backend: each call keeps its own t; everything is counted."""
    tracer = _slow_backend_tracer(local_server, make_tracer)
    _queue_items(tracer)
    _, flush_elapsed = _timed(lambda: tracer.force_flush(timeout=1.0))
    drained, shutdown_elapsed = _timed(lambda: tracer.shutdown(timeout=1.0))
    record_property("shutdown_overshoot_s", round(shutdown_elapsed - 1.0, 4))
    assert drained is False
    assert flush_elapsed < 1.0 + SLACK
    assert shutdown_elapsed < 1.0 + SLACK
    health = tracer.get_health_metrics()
    assert health["ledger_balanced"]
    # Persisted to the spool at shutdown (the next process replays them), or counted if persisting ran out of time.
    assert health["spans_dropped_by_reason"].get("shutdown_deadline", 0) + health["spans_spooled"] == 20


@pytest.mark.slow
def test_blocking_calls_keep_their_deadline_when_the_loop_is_busy(
    make_tracer: Callable[..., Tracer], record_property: Callable[..., None]
) -> None:
    """With the SDK loop stuck for longer than the deadline, force_flush, aflush and shutdown return on time."""
    tracer = make_tracer()
    _queue_items(tracer, 5)
    assert tracer.force_flush(timeout=10.0)
    timeout = 0.5
    control = _control_overshoot(timeout)

    tracer._runtime.submit(_hold_loop(1.5))
    ok, flush_elapsed = _timed(lambda: tracer.force_flush(timeout=timeout))
    assert ok is False
    time.sleep(1.2)  # let the loop recover before the next case

    tracer._runtime.submit(_hold_loop(1.5))
    aok, aflush_elapsed = _timed(lambda: asyncio.run(tracer.aflush(timeout=timeout)))
    assert aok is False
    time.sleep(1.2)

    _queue_items(tracer, 5)
    tracer._runtime.submit(_hold_loop(1.5))
    _, shutdown_elapsed = _timed(lambda: tracer.shutdown(timeout=timeout))

    overshoots = {
        "control": control,
        "force_flush": flush_elapsed - timeout,
        "aflush": aflush_elapsed - timeout,
        "shutdown": shutdown_elapsed - timeout,
    }
    for name, value in overshoots.items():
        record_property(f"busy_loop_{name}_overshoot_s", round(value, 4))
    print("overshoot with the loop stuck (s):", {k: round(v, 4) for k, v in overshoots.items()})
    for name in ("force_flush", "aflush", "shutdown"):
        assert overshoots[name] < control + OVER_CONTROL, overshoots
    # Everything still balances, the stuck loop's items included.
    assert tracer.get_health_metrics()["ledger_balanced"]


@pytest.mark.slow
def test_deadline_overshoot_median(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], record_property: Callable[..., None]
) -> None:
    """Repeated force_flush(0.3) calls against a black hole: each returns within 0.3 s + slack; the median is logged."""
    local_server.set_fault("traces", kind="blackhole")
    tracer = make_tracer(read_timeout=60.0, export_timeout=120.0)
    timeout = 0.3
    controls, overshoots = [], []
    for _ in range(7):
        _queue_items(tracer, 3)
        controls.append(_control_overshoot(timeout))
        ok, elapsed = _timed(lambda: tracer.force_flush(timeout=timeout))
        assert ok is False
        assert elapsed < timeout + SLACK
        overshoots.append(elapsed - timeout)
    median, control = statistics.median(overshoots), statistics.median(controls)
    record_property("force_flush_median_overshoot_s", round(median, 4))
    record_property("control_median_overshoot_s", round(control, 4))
    print(f"force_flush(0.3) median overshoot {median * 1000:.1f} ms (control {control * 1000:.1f} ms)")
    assert median < control + OVER_CONTROL
    tracer.shutdown(timeout=0.2)
