"""One subject in a fresh process: what ``memory.py``, ``overhead.py`` and ``load.py`` cannot measure in their own.

    python benchmarks/_worker.py MODE SUBJECT '{"param": ...}'

Prints ``RESULT {json}`` as its last line. SUBJECT is ``judgeval_async``, ``otel`` or ``judgeval`` (the PyPI SDK:
run with ``.venv-judgeval``'s interpreter, see ``_judgeval_env.py``). Standalone on purpose (stdlib plus the
subject's SDK), so the judgeval venv needs nothing of ours. The server's URL and credentials come from
``JUDGMENT_API_URL``, ``JUDGMENT_API_KEY`` and ``JUDGMENT_ORG_ID`` (always the local server on 127.0.0.1).

Modes:
- ``memory``: ``n`` spans in one burst from one thread as fast as possible, then a flush; RSS sampled every 10 ms
  from before the burst to after the flush. Working set = peak RSS - RSS after warm-up.
- ``first_call``: time from the SDK's construction to the first observed call returning, and that call alone.
- ``overhead``: per-call latency of a trivial sync and async function, bare vs observed, interleaved in rounds;
  then ``load_n`` spans as fast as possible plus a flush: process CPU per span.
- ``load``: paced ``rate`` spans/s from one thread for ``duration`` seconds (bursts every 1 ms), then a flush.
"""

# Each subject imports its SDK lazily: one interpreter (the judgeval venv) has only one of them installed.
# ruff: noqa: PLC0415
from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PROJECT = "bench-worker"


def rss_kb() -> int:
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Subject:
    """``observe(f)`` and ``flush()`` for one SDK."""

    def __init__(self, name: str) -> None:
        self.name = name
        url = os.environ["JUDGMENT_API_URL"]
        key = os.environ["JUDGMENT_API_KEY"]
        org = os.environ["JUDGMENT_ORG_ID"]
        self.health: Callable[[], dict[str, Any]] = dict
        if name == "judgeval_async":
            from judgeval_async import Tracer

            tracer = Tracer(project_name=PROJECT, api_key=key, organization_id=org, api_url=url)
            self.observe: Callable[[Any], Any] = tracer.observe
            self.flush: Callable[[], bool] = lambda: bool(tracer.force_flush(timeout=60.0))
            self.health = tracer.get_health_metrics
        elif name == "otel":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            from judgeval_async.testing import project_id_for

            exporter = OTLPSpanExporter(
                endpoint=f"{url}/otel/v1/traces",
                headers={
                    "Authorization": f"Bearer {key}",
                    "X-Organization-Id": org,
                    "x-project-id": project_id_for(PROJECT),
                },
            )
            provider = TracerProvider(resource=Resource.create({"service.name": PROJECT}), shutdown_on_exit=False)
            provider.add_span_processor(BatchSpanProcessor(exporter))
            otel = provider.get_tracer("bench")

            def observe(f: Any) -> Any:
                name = f.__qualname__
                if asyncio.iscoroutinefunction(f):

                    async def awrapper(*args: Any, **kwargs: Any) -> Any:
                        with otel.start_as_current_span(name):
                            return await f(*args, **kwargs)

                    return awrapper

                def wrapper(*args: Any, **kwargs: Any) -> Any:
                    with otel.start_as_current_span(name):
                        return f(*args, **kwargs)

                return wrapper

            self.observe = observe
            self.flush = lambda: bool(provider.force_flush(60_000))
        else:
            from judgeval.trace import Tracer as JTracer  # type: ignore[import-not-found]

            JTracer.init(project_name=PROJECT)
            self.observe = JTracer.observe
            self.flush = lambda: bool(JTracer.force_flush(60_000))


def work(x: int) -> int:
    return x + 1


async def awork(x: int) -> int:
    return x + 1


# ---------------------------------------------------------------------------------------------------- modes
def mode_memory(subject_name: str, p: dict[str, Any]) -> dict[str, Any]:
    n = int(p["n"])
    subject = Subject(subject_name)
    fn = subject.observe(work)
    for i in range(500):
        fn(i)
    subject.flush()
    gc.collect()
    base = rss_kb()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], rss_kb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    made_s = time.perf_counter() - t0
    peak[0] = max(peak[0], rss_kb())
    flushed = subject.flush()
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], rss_kb())
    cpu = time.process_time() - cpu0
    gc.collect()
    health = subject.health()
    return {
        "subject": subject_name,
        "n": n,
        "rss_base_mb": base / 1024,
        "rss_peak_mb": peak[0] / 1024,
        "working_set_mb": (peak[0] - base) / 1024,
        "retained_mb": (rss_kb() - base) / 1024,
        "make_s": made_s,
        "cpu_us_per_span": cpu / n * 1e6,
        "flushed": flushed,
        "spans_dropped": health.get("spans_dropped"),
    }


def preimport(subject_name: str) -> None:
    """Import the SDK's modules, so construction is timed without them (imports happen once per process anyway)."""
    if subject_name == "judgeval_async":
        import judgeval_async  # noqa: F401
    elif subject_name == "otel":
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace
        import opentelemetry.sdk.trace.export  # noqa: F401
    else:
        import judgeval.trace  # type: ignore[import-not-found]  # noqa: F401


def mode_first_call(subject_name: str, p: dict[str, Any]) -> dict[str, Any]:
    i0 = time.perf_counter()
    preimport(subject_name)
    t0 = time.perf_counter()
    subject = Subject(subject_name)
    fn = subject.observe(work)
    t1 = time.perf_counter()
    fn(1)
    t2 = time.perf_counter()
    fn(2)
    t3 = time.perf_counter()
    subject.flush()
    return {
        "subject": subject_name,
        "import_ms": (t0 - i0) * 1e3,
        "construct_ms": (t1 - t0) * 1e3,
        "first_call_ms": (t2 - t1) * 1e3,
        "construct_to_first_return_ms": (t2 - t0) * 1e3,
        "second_call_ms": (t3 - t2) * 1e3,
    }


def _pct(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(len(data) * q / 100))] if data else float("nan")


def mode_overhead(subject_name: str, p: dict[str, Any]) -> dict[str, Any]:
    rounds, per_round, load_n = int(p["rounds"]), int(p["per_round"]), int(p["load_n"])
    subject = Subject(subject_name)
    fns = {"bare": (work, awork), "observe": (subject.observe(work), subject.observe(awork))}
    samples: dict[str, list[int]] = {f"{k}|{v}": [] for k in ("sync", "async") for v in fns}
    clock = time.perf_counter_ns

    async def run_async(f: Any, n: int, out: list[int]) -> None:
        for i in range(n):
            t = clock()
            await f(i)
            out.append(clock() - t)

    loop = asyncio.new_event_loop()
    for r in range(rounds + 1):  # round 0 warms up
        for v in list(fns) if r % 2 else list(fns)[::-1]:
            sync_f, async_f = fns[v]
            out = samples[f"sync|{v}"] if r else []
            for i in range(per_round):
                t = clock()
                sync_f(i)
                out.append(clock() - t)
            loop.run_until_complete(run_async(async_f, per_round, samples[f"async|{v}"] if r else []))
    loop.close()
    subject.flush()
    lat = {k: {"p50": _pct(v, 50) / 1e3, "p99": _pct(v, 99) / 1e3} for k, v in samples.items()}
    print("READY_FOR_LOAD", flush=True)
    sys.stdin.readline()  # the parent resets the server's records, then lets the load start
    gc.collect()
    fn = fns["observe"][0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(load_n):
        fn(i)
    make_s = time.perf_counter() - t0
    flushed = subject.flush()
    cpu = time.process_time() - cpu0
    return {
        "subject": subject_name,
        "latency_us": lat,
        "load_n": load_n,
        "cpu_us_per_span": cpu / load_n * 1e6,
        "make_rate_per_s": load_n / make_s,
        "flushed": flushed,
    }


def mode_load(subject_name: str, p: dict[str, Any]) -> dict[str, Any]:
    rate, duration = float(p["rate"]), float(p["duration"])
    subject = Subject(subject_name)
    fn = subject.observe(work)
    for i in range(200):
        fn(i)
    subject.flush()
    print("READY_FOR_LOAD", flush=True)
    sys.stdin.readline()
    clock = time.perf_counter
    n = 0
    cpu0 = time.thread_time()
    t0 = clock()
    end = t0 + duration
    while True:
        now = clock()
        if now >= end:
            break
        due = int((now - t0) * rate) + 1
        burst_end = min(due, n + 100)
        while n < burst_end:
            fn(n)
            n += 1
        if n < due:
            continue
        time.sleep(0.001 - ((clock() - t0) % 0.001))
    caller_cpu = time.thread_time() - cpu0
    f0 = clock()
    flushed = subject.flush()
    return {
        "subject": subject_name,
        "produced": n,
        "achieved_rate": n / duration,
        "caller_cpu_us_per_span": caller_cpu / n * 1e6 if n else float("nan"),
        "flushed": flushed,
        "flush_s": clock() - f0,
    }


MODES = {"memory": mode_memory, "first_call": mode_first_call, "overhead": mode_overhead, "load": mode_load}


def main() -> None:
    mode, subject = sys.argv[1], sys.argv[2]
    params = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    result = MODES[mode](subject, params)
    print("RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
