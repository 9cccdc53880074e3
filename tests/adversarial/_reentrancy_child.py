"""Re-entrancy stress, run in a child process by test_reentrancy.py (and by hand, in a loop, to hunt crashes).

    python tests/adversarial/_reentrancy_child.py {signals|finalizers|hamt} URL API_KEY ORG_ID SECONDS

``signals``: a 100 µs SIGALRM storm whose handler traces (observe, span, tag, async_evaluate) while the main thread
traces in a loop. ``finalizers``: objects whose ``__del__`` (and weakref callbacks) trace, left in reference cycles
for the garbage collector, under four tracing threads plus allocation churn and ``gc.collect()``. ``hamt``: CPython
3.10/3.11's use-after-free when a collection triggered inside ``ContextVar.set`` runs a finalizer that sets a context
variable (python/cpython#148891), made likely: the finalizers open a span (``with tracer.span``) and the collector
runs at every allocation. With ``REENTRANCY_NO_GC_GUARD=1`` the tracer's guard (judgeval_async._gcguard) is removed:
the control, which segfaults on CPython 3.11 (not seen to on 3.10.13).

A hang is caught by ``faulthandler.dump_traceback_later`` (every thread's stack on stderr, exit code 1). On success
the last stdout line is JSON: per signal, the ledger after shutdown and how many items the script created.
"""

from __future__ import annotations

import faulthandler
import gc
import itertools
import json
import os
import signal
import sys
import threading
import time
import weakref
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

from judgeval_async import Tracer, _gcguard

HANG_AFTER = float(os.environ.get("REENTRANCY_HANG_AFTER", "60"))


def count_value(counter: itertools.count[int]) -> int:
    """The next value of ``counter``, without advancing it."""
    return int(repr(counter)[6:-1])


def _tracer(url: str, api_key: str, org_id: str) -> Tracer:
    return Tracer(
        project_name="reentrancy",
        api_key=api_key,
        organization_id=org_id,
        api_url=url,
        retry_testing=True,
        schedule_delay=0.05,
        tag_flush_interval=0.05,
        max_queue_size=100_000,
    )


def _ledgers(tracer: Tracer) -> dict[str, Any]:
    m = tracer.metrics
    out = {}
    for name, led in (("spans", m.spans), ("evaluations", m.evaluations), ("tags", m.tags)):
        s = led.snapshot()
        out[name] = {
            "created": s.created,
            "delivered": s.delivered,
            "dropped": s.dropped,
            "queued": s.queued,
            "in_flight": s.in_flight,
            "balanced": s.balanced,
        }
    return out


def signals(tracer: Tracer, seconds: float) -> dict[str, int]:
    """Main thread traces in a loop; SIGALRM every 100 µs traces too, re-entering whatever the main thread holds."""
    handled = itertools.count()

    @tracer.observe
    def in_handler(x: int) -> int:
        tracer.tag("from-signal")
        tracer.async_evaluate("faithfulness", {"input": x})
        return x

    nested = [0]

    def on_alarm(signum: int, frame: Any) -> None:
        if nested[0]:
            return  # a handler slower than the timer would otherwise nest without end and starve the main thread
        nested[0] = 1
        try:
            n = next(handled)
            tracer.set_attribute("from_handler", n)  # on the interrupted frame's span, maybe mid-update
            in_handler(n)
            with tracer.span("signal-span"):
                tracer.set_attribute("n", n)
            tracer.get_health_metrics()  # a snapshot re-entered from a handler must not hang either
        finally:
            nested[0] = 0

    @tracer.observe
    def work(i: int) -> int:
        tracer.tag(["main", str(i % 7)])
        tracer.async_evaluate("faithfulness", {"input": i})
        tracer.set_attribute("i", i)
        return i

    previous = signal.signal(signal.SIGALRM, on_alarm)
    loops = 0
    deadline = time.monotonic() + seconds
    signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
    try:
        while time.monotonic() < deadline:
            work(loops)
            with tracer.span("main-span"):
                tracer.get_health_metrics()
            loops += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    n = count_value(handled)
    return {"spans": loops * 2 + n * 2, "tags": loops + n, "evaluations": loops + n, "handler_runs": n}


def collect_until_stable(tracer: Tracer, *counters: itertools.count[int]) -> None:
    """Collect until the finalizers' counters stop moving, so no finalizer runs after the caller's tally.

    Garbage still appears after the workers stop: the SDK loop drops its references to ended work as it exports it.
    So each round flushes first, then collects; gc.collect() returns at once, collecting nothing, while another
    thread (the SDK loop) is collecting, and that collection's finalizers run before its "stop" callback, so the
    round also waits for no collection to be running. Done when five rounds in a row changed nothing."""
    idle = threading.Event()
    idle.set()

    def track(phase: str, info: dict[str, int]) -> None:
        (idle.set if phase == "stop" else idle.clear)()

    gc.callbacks.append(track)
    try:
        stable = 0
        while stable < 5:
            before = [count_value(c) for c in counters]
            tracer.force_flush(timeout=10.0)
            gc.collect()
            idle.wait(timeout=30.0)  # another thread's collection, if one started: its end
            stable = stable + 1 if [count_value(c) for c in counters] == before else 0
    finally:
        gc.callbacks.remove(track)


def finalizers(tracer: Tracer, seconds: float) -> dict[str, int]:
    """Four threads trace and leave cycles of objects whose __del__ and weakref callbacks trace, for the GC."""
    finalized = itertools.count()
    callbacks = itertools.count()
    loops = itertools.count()

    @tracer.observe
    def in_finalizer(x: int) -> int:
        tracer.tag("from-del")
        tracer.async_evaluate("faithfulness", {"input": x})
        return x

    class Traced:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it, at whatever allocation triggers it
            self.payload = [object() for _ in range(8)]

        def __del__(self) -> None:
            in_finalizer(next(finalized))

    def on_collected(ref: object) -> None:
        next(callbacks)
        with tracer.span("weakref-callback"):
            tracer.tag("from-weakref")

    class Anchor:
        def __init__(self) -> None:
            self.me = self

    keep_refs: set[weakref.ref[Anchor]] = set()

    @tracer.observe
    def work(i: int) -> int:
        Traced()
        anchor = Anchor()
        ref = weakref.ref(anchor, on_collected)
        keep_refs.add(ref)  # the ref must outlive its object for the callback to run
        del anchor
        tracer.tag(["worker", str(i % 5)])
        tracer.set_attribute("i", i)
        # Internal attributes (the metadata store) and a health snapshot: two more locked regions that allocate.
        tracer.processor.set_internal_attribute(trace.get_current_span(), "judgment.i", i)  # type: ignore[arg-type]
        tracer.get_health_metrics()
        _ = [{"churn": j} for j in range(20)]
        return i

    stop = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            i = 0
            while not stop.is_set():
                work(i)
                next(loops)
                i += 1
                if i % 200 == 0:
                    gc.collect(i % 3)
        except BaseException as exc:  # pragma: no cover - reported by the test
            errors.append(exc)

    old_threshold = gc.get_threshold()
    gc.set_threshold(20, 5, 5)  # collect often, so finalizers land inside every kind of locked region
    threads = [threading.Thread(target=worker, name=f"worker-{k}") for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    gc.set_threshold(*old_threshold)
    collect_until_stable(tracer, finalized, callbacks)
    if errors:
        raise errors[0]
    n_loops, n_del, n_cb = count_value(loops), count_value(finalized), count_value(callbacks)
    keep_refs.clear()
    return {
        "spans": n_loops + n_del + n_cb,
        "tags": n_loops + n_del + n_cb,
        "evaluations": n_del,
        "finalizers": n_del,
        "weakref_callbacks": n_cb,
    }


def hamt(tracer: Tracer, seconds: float) -> dict[str, int]:
    """The application sets its own context variables in a loop (a HAMT deep enough that a set copies nodes, each
    copy an allocation); every allocation may collect, and the collected objects' finalizers open a span."""
    if os.environ.get("REENTRANCY_NO_GC_GUARD") == "1":
        gc.callbacks.remove(_gcguard._on_gc)  # the control: what happens without the guard
    finalized = itertools.count()
    pads = [ContextVar(f"pad{i}", default=None) for i in range(40)]
    for var in pads:
        var.set(object())

    class Traced:
        def __init__(self) -> None:
            self.me = self  # a cycle: freed only by the collector, from inside whatever allocation triggers it

        def __del__(self) -> None:
            next(finalized)
            with tracer.span("del-span"):
                tracer.tag("from-del")
                # Allocations of every small size, alive until __del__ returns: what a busy process does meanwhile.
                # Without the guard, memory freed under the interrupted set is reused by then, and it crashes.
                kept = [tuple(range(n)) for n in range(1, 41) for _ in range(3)]
            del kept

    def step(i: int) -> None:
        Traced()
        pads[i % 40].set(i)  # the HAMT copy a collection may interrupt

    old_threshold = gc.get_threshold()
    gc.set_threshold(1, 1_000_000, 1_000_000)  # a young collection at (nearly) every allocation
    try:
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            for _ in range(1000):
                step(i)
                i += 1
    finally:
        gc.set_threshold(*old_threshold)
    collect_until_stable(tracer, finalized)
    n = count_value(finalized)
    return {"spans": n, "tags": n, "evaluations": 0, "finalizers": n}


SCENARIOS = {"signals": signals, "finalizers": finalizers, "hamt": hamt}


def main() -> None:
    scenario, url, api_key, org_id, seconds = sys.argv[1:6]
    faulthandler.enable()
    faulthandler.dump_traceback_later(HANG_AFTER, exit=True)
    tracer = _tracer(url, api_key, org_id)
    made = SCENARIOS[scenario](tracer, float(seconds))
    flushed = tracer.force_flush(timeout=20.0)
    tracer.shutdown(timeout=20.0)
    faulthandler.cancel_dump_traceback_later()
    print(json.dumps({"made": made, "flushed": flushed, "ledgers": _ledgers(tracer)}))


if __name__ == "__main__":
    main()
