"""Loss and host-service latency at a fixed span rate: ``@tracer.observe`` side by side with stock OpenTelemetry.

The roadmap KPI is "lose nothing at 10 k spans/s" and "the host service's p99 doesn't move". One run measures both,
against the local Judgment API server running in its own process (so its protobuf decoding stays off this
process's GIL):

- Producers: 1 or 4 threads sharing a paced total of 10 000 spans/s. Each thread emits its share in small bursts
  every 1 ms (catching up if it fell behind) and sleeps until its next tick, so the rate is real, not "as fast as
  possible"; the achieved rate is recorded. Threads are phase-shifted within the 1 ms tick.
- The "host service": an asyncio loop in the main thread handling one synthetic request every 2 ms (a pure-Python
  CPU task calibrated to ~50 µs). Request latency = done - scheduled (open loop: a late request delays the next
  ones, and that queueing is counted). p50/p99/max per variant and the p99 ratio to the baseline of the same round.
- Variants: ``baseline`` (the producers call the same trivial function untraced), ``observe``
  (``@tracer.observe``, input/output recorded), ``observe (no I/O)`` (``record_input=False,
  record_output=False``), and ``otel`` (an isolated ``TracerProvider`` + ``BatchSpanProcessor(OTLPSpanExporter)``
  to the server's ``/otel/v1/traces``). Each is built fresh for its run, warmed up, flushed, and shut down with a
  bounded timeout afterwards. Defaults of each are kept (ours: queue 8 192, batch 512, schedule delay 5 s; OTel:
  queue 2 048, batch 512, schedule delay 5 s): at 10 k/s a 512-span batch fills every ~51 ms, so both export on
  batch-full and the schedule delay only matters for the tail.
- Backend states: healthy, and slow (200 ms latency on every request, set through ``/_control/fault``).
- Loss = 1 - spans the server recorded / spans produced, after ``force_flush(30 s)``; for ours also the health
  ledger (``spans_created/exported/dropped_by_reason``, ``ledger_balanced``).

Rounds are (backend state, producer threads); within a round the four variants run back to back in a rotating
order. Targets: loss 0 % with a healthy backend at ≥ 95 % of the rate (ours), our loss ≤ stock OTel's, host p99 /
baseline ≤ 1.5 (ours).
The machine has 2 cores shared by the producers, the service, the SDK's background thread and the server process:
results are noisy, and single runs are one sample each.

    python benchmarks/load.py [--quick] [--results-dir DIR]
"""

from __future__ import annotations

import asyncio
import gc
import logging
import selectors
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _judgeval_env
from _common import ServerProcess, markdown_table, parse_args, ratio, server_process, summarize, verdict, write_results
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from judgeval_async import Tracer
from judgeval_async.testing import project_id_for

PROJECT = "bench-load"
TOTAL_RATE = 10_000.0  # spans/s, shared by the producer threads
TICK_S = 0.001  # producers emit a burst every tick
MAX_BURST = 100  # spans per burst at most (catching up), so the end of the run is seen promptly
SERVICE_PERIOD_S = 0.002  # one synthetic host request every 2 ms
SERVICE_WORK_US = 50.0  # CPU per request
P99_RATIO_BUDGET = 1.5
MIN_RATE_FRACTION = 0.95  # the loss target needs the producers to have made at least this share of TOTAL_RATE
FLUSH_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0
VARIANTS = ("baseline", "observe", "observe (no I/O)", "otel")
OURS = ("observe", "observe (no I/O)")
STATES: tuple[tuple[str, dict[str, Any] | None], ...] = (
    ("healthy", None),
    ("slow (200 ms)", {"kind": "latency", "seconds": 0.2}),
)
THREADS = (1, 4)


# ---------------------------------------------------------------------------------------------------- host service
def _spin(n: int) -> int:
    acc = 0
    for i in range(n):
        acc += i * i
    return acc


def calibrate_work(target_us: float) -> int:
    """Iterations of ``_spin`` taking ~``target_us`` of CPU here (median of repeated timings)."""
    n = 200
    for _ in range(4):
        samples = []
        for _ in range(60):
            t0 = time.perf_counter_ns()
            _spin(n)
            samples.append(time.perf_counter_ns() - t0)
        median_us = statistics.median(samples) / 1e3
        n = max(10, round(n * target_us / median_us))
    return n


async def host_service(t0: float, duration: float, work_n: int, out: list[float]) -> None:
    """One request every ``SERVICE_PERIOD_S`` from ``t0`` for ``duration``; latency (s) = done - scheduled."""
    clock = time.perf_counter
    k = 0
    end = t0 + duration
    while True:
        scheduled = t0 + k * SERVICE_PERIOD_S
        if scheduled >= end:
            break
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        _spin(work_n)
        out.append(clock() - scheduled)
        k += 1


def run_service(t0: float, duration: float, work_n: int, out: list[float]) -> None:
    """``host_service`` on a fresh event loop in this thread.

    The loop polls with ``select()`` (µs timeouts) instead of the default epoll, which rounds every timeout up to the
    next millisecond: with epoll the untraced baseline would measure the timer's granularity, not the service."""
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        loop.run_until_complete(host_service(t0, duration, work_n, out))
    finally:
        loop.close()


# ---------------------------------------------------------------------------------------------------- producers
def producer(
    fn: Callable[[int], Any], rate: float, t0: float, end: float, counts: list[int], cpu: list[float], idx: int
) -> None:
    """Emit ``rate`` spans/s from ``t0`` to ``end`` in bursts every tick; ``counts[idx]`` = spans emitted,
    ``cpu[idx]`` = this thread's CPU seconds while producing."""
    clock = time.perf_counter
    sleep = time.sleep
    n = 0
    delay = t0 - clock()
    if delay > 0:
        sleep(delay)
    cpu0 = time.thread_time()
    while True:
        now = clock()
        if now >= end:
            break
        due = int((now - t0) * rate) + 1
        burst_end = min(due, n + MAX_BURST)
        while n < burst_end:
            fn(n)
            n += 1
        if n < due:
            continue  # behind: keep going (checking the end every MAX_BURST spans)
        now = clock()
        sleep(TICK_S - ((now - t0) % TICK_S))
    counts[idx] = n
    cpu[idx] = time.thread_time() - cpu0


# ---------------------------------------------------------------------------------------------------- subjects
@dataclass
class Subject:
    fn: Callable[[int], Any]
    flush: Callable[[], bool] = lambda: True
    shutdown: Callable[[], object] = lambda: None
    health: Callable[[], dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def make_subject(variant: str, srv: ServerProcess) -> Subject:
    def work(x: int) -> int:
        return x + 1

    if variant == "baseline":
        return Subject(work)
    if variant in OURS:
        tracer = Tracer(project_name=PROJECT, api_key=srv.api_key, organization_id=srv.org_id, api_url=srv.url)
        deco = tracer.observe if variant == "observe" else tracer.observe(record_input=False, record_output=False)
        return Subject(
            deco(work),
            flush=lambda: tracer.force_flush(timeout=FLUSH_TIMEOUT_S),
            shutdown=lambda: tracer.shutdown(timeout=5.0),
            health=tracer.get_health_metrics,
        )
    exporter = OTLPSpanExporter(
        endpoint=f"{srv.url}/otel/v1/traces",
        headers={
            "Authorization": f"Bearer {srv.api_key}",
            "X-Organization-Id": srv.org_id,
            "x-project-id": project_id_for(PROJECT),
        },
    )
    provider = TracerProvider(resource=Resource.create({"service.name": PROJECT}), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    otel_tracer = provider.get_tracer("bench")
    name = work.__qualname__

    def otel_work(x: int) -> int:
        with otel_tracer.start_as_current_span(name):
            return work(x)

    return Subject(
        otel_work, flush=lambda: provider.force_flush(int(FLUSH_TIMEOUT_S * 1000)), shutdown=provider.shutdown
    )


def bounded(call: Callable[[], object], timeout: float) -> tuple[bool, float]:
    """Run ``call`` in a daemon thread, wait at most ``timeout``; (finished, seconds waited)."""
    t0 = time.perf_counter()
    worker = threading.Thread(target=call, name="bench-bounded", daemon=True)
    worker.start()
    worker.join(timeout)
    return not worker.is_alive(), time.perf_counter() - t0


def settled_span_count(srv: ServerProcess, expected: int, quiet_s: float = 0.3) -> int:
    """Poll the server until it holds ``expected`` spans or its count stops moving for ``quiet_s``."""
    count = srv.stats()["spans"]
    still_since = time.monotonic()
    while count < expected and time.monotonic() - still_since < quiet_s:
        time.sleep(0.1)
        new = srv.stats()["spans"]
        if new != count:
            count, still_since = new, time.monotonic()
    return int(count)


class GcWatch:
    """Longest garbage collection (CPU of the collecting thread) and gen-2 count since the last ``take``."""

    def __init__(self) -> None:
        self._t0 = 0
        self._max_ns = 0
        self._gen2 = 0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.thread_time_ns()
        else:
            self._max_ns = max(self._max_ns, time.thread_time_ns() - self._t0)
            self._gen2 += info["generation"] == 2

    def take(self) -> dict[str, float]:
        out = {"max_ms": self._max_ns / 1e6, "gen2": self._gen2}
        self._max_ns = self._gen2 = 0
        return out

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


# ---------------------------------------------------------------------------------------------------- one run
def one_run(
    srv: ServerProcess, variant: str, state: str, threads: int, duration: float, work_n: int, gcw: GcWatch
) -> dict[str, Any]:
    subject = make_subject(variant, srv)
    for i in range(200):  # warm-up: loop thread, project resolution, connection, caches
        subject.fn(i)
    subject.flush()
    srv.reset_records()
    before = subject.health() if subject.health else None
    gc.collect()
    gcw.take()

    counts = [0] * threads
    caller_cpu = [0.0] * threads
    t0 = time.perf_counter() + 0.05
    end = t0 + duration
    workers = [
        threading.Thread(
            target=producer,
            args=(subject.fn, TOTAL_RATE / threads, t0 + i * TICK_S / threads, end, counts, caller_cpu, i),
            name=f"bench-producer-{i}",
            daemon=True,
        )
        for i in range(threads)
    ]
    latencies: list[float] = []
    cpu0 = time.process_time()
    for w in workers:
        w.start()
    run_service(t0, duration, work_n, latencies)
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    gc_info = gcw.take()
    produced = sum(counts)

    f0 = time.perf_counter()
    flushed = bool(subject.flush())
    flush_s = time.perf_counter() - f0
    received = produced if variant == "baseline" else settled_span_count(srv, produced)
    server_requests = srv.stats()["requests"]
    after = subject.health() if subject.health else None
    shut_ok, shut_s = bounded(subject.shutdown, SHUTDOWN_TIMEOUT_S)

    run: dict[str, Any] = {
        "state": state,
        "threads": threads,
        "variant": variant,
        "duration_s": duration,
        "produced": produced,
        "achieved_rate": produced / duration,
        "server_received": received,
        "loss": (1 - received / produced) if produced and variant != "baseline" else 0.0,
        "host_latency_us": summarize(latencies, 1e6),
        "host_requests_expected": round(duration / SERVICE_PERIOD_S),
        "process_cpu_cores": cpu / wall,
        "caller_cpu_us_per_span": sum(caller_cpu) / produced * 1e6 if produced else float("nan"),
        "gc": gc_info,
        "flush_ok": flushed,
        "flush_s": flush_s,
        "shutdown_finished": shut_ok,
        "shutdown_s": shut_s,
        "server_requests": server_requests,
    }
    if before is not None and after is not None:
        run["spans_created"] = after["spans_created"] - before["spans_created"]
        run["spans_exported"] = after["spans_exported"] - before["spans_exported"]
        run["spans_dropped"] = after["spans_dropped"] - before["spans_dropped"]
        run["dropped_by_reason"] = {
            k: v - before["spans_dropped_by_reason"].get(k, 0)
            for k, v in after["spans_dropped_by_reason"].items()
            if v - before["spans_dropped_by_reason"].get(k, 0)
        }
        run["ledger_balanced"] = after.get("ledger_balanced")
        run["retries"] = after["retries"] - before["retries"]
        run["api_errors"] = after["api_errors"] - before["api_errors"]
        run["loop_lag_max_s"] = after.get("loop_lag_max_seconds")
    return run


# ---------------------------------------------------------------------------------------------------- main
def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    duration = 0.4 if args.quick else 10.0  # quick: the smoke test checks the script and its bookkeeping
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)  # "Queue full, dropping span." is counted, not logged
    t_start = time.perf_counter()
    work_n = calibrate_work(SERVICE_WORK_US)
    t = time.perf_counter_ns()
    _spin(work_n)
    work_us = (time.perf_counter_ns() - t) / 1e3
    gcw = GcWatch()
    runs: list[dict[str, Any]] = []
    jv_ok = False if args.without_judgeval else _judgeval_env.ensure(create=args.with_judgeval)
    judgeval_runs: list[dict[str, Any]] = []
    r = 0
    with server_process() as srv:
        for state, fault in STATES:
            srv.clear_faults()
            if fault is not None:
                srv.set_fault(None, **fault)
            for threads in THREADS:
                order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
                r += 1
                for variant in order:
                    runs.append(one_run(srv, variant, state, threads, duration, work_n, gcw))
                    print(
                        f"  {state:14} {threads}t {variant:17} made {runs[-1]['produced']:>7,}"
                        f" loss {runs[-1]['loss'] * 100:5.1f} %"
                        f" host p99 {runs[-1]['host_latency_us']['p99']:8.0f} µs",
                        flush=True,
                    )
            if jv_ok:  # the judgeval SDK from PyPI, one producer thread, in its own venv and process
                jv = _judgeval_env.run_worker(
                    "judgeval",
                    "load",
                    srv.url,
                    srv.api_key,
                    srv.org_id,
                    {"rate": TOTAL_RATE, "duration": duration},
                    timeout=duration + 120.0,
                    on_ready=srv.reset_records,
                )
                jv["state"] = state
                if "produced" in jv:
                    jv["server_received"] = settled_span_count(srv, jv["produced"])
                    jv["loss"] = 1 - jv["server_received"] / jv["produced"] if jv["produced"] else 0.0
                    print(f"  {state:14} 1t judgeval          made {jv['produced']:>7,} loss {jv['loss'] * 100:5.1f} %")
                judgeval_runs.append(jv)
        srv.clear_faults()
    gcw.close()
    elapsed = time.perf_counter() - t_start
    report(
        args.quick,
        runs,
        {
            "duration_s": duration,
            "total_rate": TOTAL_RATE,
            "service_work_us": work_us,
            "service_work_n": work_n,
            "judgeval": _judgeval_env.version() if jv_ok else _judgeval_env.SKIP_REASON,
        },
        elapsed,
        args.results_dir,
        judgeval_runs,
    )


def report(
    quick: bool,
    runs: list[dict[str, Any]],
    params: dict[str, Any],
    elapsed: float,
    results_dir: Path | None,
    judgeval_runs: list[dict[str, Any]],
) -> None:
    by_key = {(run["state"], run["threads"], run["variant"]): run for run in runs}
    summary: dict[str, dict[str, Any]] = {}
    rows = []
    for state, _ in STATES:
        for threads in THREADS:
            base_p99 = by_key[state, threads, "baseline"]["host_latency_us"]["p99"]
            otel_loss = by_key[state, threads, "otel"]["loss"]
            otel_p99 = by_key[state, threads, "otel"]["host_latency_us"]["p99"]
            for variant in VARIANTS:
                run = by_key[state, threads, variant]
                h = run["host_latency_us"]
                p99_ratio = ratio(h["p99"], base_p99)
                summary[f"{variant}|{state}|{threads}"] = {
                    "achieved_rate": run["achieved_rate"],
                    "loss": run["loss"],
                    "host_p50_us": h["p50"],
                    "host_p99_us": h["p99"],
                    "host_max_us": h["max"],
                    "host_p99_ratio": p99_ratio,
                    "host_p99_vs_otel": ratio(h["p99"], otel_p99),
                    "caller_cpu_us_per_span": run["caller_cpu_us_per_span"],
                    "loss_vs_otel": run["loss"] - otel_loss,
                }
                reasons = ", ".join(f"{k}: {n:,}" for k, n in run.get("dropped_by_reason", {}).items())
                rows.append(
                    [
                        state,
                        threads,
                        variant,
                        run["achieved_rate"],
                        run["produced"],
                        run["server_received"],
                        "-" if variant == "baseline" else f"{run['loss'] * 100:.1f} %",
                        reasons or "-",
                        h["p50"],
                        h["p99"],
                        h["max"],
                        p99_ratio,
                        float("nan") if variant == "baseline" else ratio(h["p99"], otel_p99),
                        run["caller_cpu_us_per_span"],
                        run["process_cpu_cores"],
                        run["gc"]["max_ms"],
                    ]
                )
    table = markdown_table(
        [
            "backend",
            "threads",
            "variant",
            "spans/s made",
            "produced",
            "server got",
            "loss",
            "our drops by reason",
            "host p50 µs",
            "host p99 µs",
            "host max µs",
            "p99 / baseline",
            "p99 / otel",
            "caller CPU µs/span",
            "CPU cores",
            "max GC ms",
        ],
        rows,
        digits=1,
    )

    targets: dict[str, dict[str, Any]] = {}
    trows = []
    for variant in OURS:
        losses = {th: by_key["healthy", th, variant]["loss"] for th in THREADS}
        rates = {th: by_key["healthy", th, variant]["achieved_rate"] for th in THREADS}
        # Losing nothing only counts if the producers actually reached the rate.
        ok = all(v == 0 for v in losses.values()) and all(r >= MIN_RATE_FRACTION * TOTAL_RATE for r in rates.values())
        targets[f"healthy_loss_zero|{variant}"] = {"loss": losses, "achieved_rate": rates, "pass": ok}
        trows.append(
            [
                f"loss 0 % at 10 k/s (≥ {MIN_RATE_FRACTION * TOTAL_RATE:,.0f}/s made), healthy backend ({variant})",
                ", ".join(f"{th}t {losses[th] * 100:.1f} % at {rates[th]:,.0f}/s" for th in THREADS),
                verdict(ok),
            ]
        )
        for state, _ in STATES:
            pairs = {th: (by_key[state, th, variant]["loss"], by_key[state, th, "otel"]["loss"]) for th in THREADS}
            ok = all(ours <= otel for ours, otel in pairs.values())
            targets[f"loss_le_otel|{variant}|{state}"] = {"loss_ours_otel": pairs, "pass": ok}
            trows.append(
                [
                    f"loss ≤ stock OTel, {state} ({variant})",
                    ", ".join(f"{th}t {a * 100:.1f} vs {b * 100:.1f} %" for th, (a, b) in pairs.items()),
                    verdict(ok),
                ]
            )
        for state, _ in STATES:
            ratios = {th: summary[f"{variant}|{state}|{th}"]["host_p99_ratio"] for th in THREADS}
            ok = all(v <= P99_RATIO_BUDGET for v in ratios.values())
            targets[f"host_p99_ratio_le_1.5|{variant}|{state}"] = {"ratio": ratios, "pass": ok}
            trows.append(
                [
                    f"host p99 / baseline ≤ {P99_RATIO_BUDGET}, {state} ({variant})",
                    ", ".join(f"{th}t {v:.2f}x" for th, v in ratios.items()),
                    verdict(ok),
                ]
            )
    jrows = []
    for jv in judgeval_runs:
        state = jv["state"]
        ours, otel = by_key[state, 1, "observe"], by_key[state, 1, "otel"]
        if "produced" in jv:
            jrows.append(
                [
                    state,
                    f"{ours['loss'] * 100:.1f} % at {ours['achieved_rate']:,.0f}/s",
                    f"{otel['loss'] * 100:.1f} % at {otel['achieved_rate']:,.0f}/s",
                    f"{jv['loss'] * 100:.1f} % at {jv['achieved_rate']:,.0f}/s",
                    f"{ours['caller_cpu_us_per_span']:.1f} / {otel['caller_cpu_us_per_span']:.1f}"
                    f" / {jv['caller_cpu_us_per_span']:.1f}",
                ]
            )
        else:
            jrows.append([state, "-", "-", jv.get("error", "?"), "-"])
    if judgeval_runs:
        jv_md = (
            f"## The three SDKs side by side at 10 000 spans/s, one producer thread (judgeval {params['judgeval']})\n\n"
            + markdown_table(
                [
                    "backend",
                    "judgeval_async loss",
                    "stock OTel loss",
                    "judgeval loss",
                    "caller CPU µs/span (ours / OTel / judgeval)",
                ],
                jrows,
            )
            + "\n\njudgeval runs in its own venv and process (`_worker.py load`, the same paced producer, no host"
            " service in that process), right after the round of the same backend state; the achieved rate shows"
            " how much of 10 000/s each producer could make.\n\n"
        )
    else:
        jv_md = f"## The judgeval SDK from PyPI\n\n{params['judgeval']}\n\n"
    ledger = [
        f"{r['state']} {r['threads']}t {r['variant']}: created {r['spans_created']:,}, exported"
        f" {r['spans_exported']:,}, dropped {r['spans_dropped']:,}, balanced {r['ledger_balanced']},"
        f" retries {r['retries']}, API errors {r['api_errors']}"
        for r in runs
        if r["variant"] in OURS
    ]
    md = (
        "## Targets\n\n"
        + markdown_table(["target", "measured", "result"], trows)
        + "\n\n## Loss and host latency at a paced 10 000 spans/s\n\n"
        + table
        + "\n\nOne run per cell"
        f" ({params['duration_s']:.0f} s of paced production; a host request every {SERVICE_PERIOD_S * 1e3:.0f} ms,"
        f" {params['service_work_us']:.0f} µs of CPU each). Host latency = done - scheduled, open loop."
        " p99 / baseline compares with the untraced run of the same round. Caller CPU = the producer threads'"
        " CPU time per span made; CPU cores = this process's CPU time / wall time while producing (1.0 = the GIL is"
        " saturated; the server is another process). max GC ms = the longest collection (CPU) during the run."
        " **Noisy:** 2 shared cores carry the producers, the host loop, the SDK's background thread and the server"
        " process; compare cells of the same round, and treat single tails (max) as GC or scheduler events.\n\n"
        + jv_md
        + "Our health ledger per run (after the flush):\n\n"
        + "\n".join(f"- {line}" for line in ledger)
        + f"\n\n{elapsed:.1f} s in total.\n"
    )
    print(md)
    write_results(
        "load",
        {
            "quick": quick,
            "params": params,
            "runs": runs,
            "summary": summary,
            "targets": targets,
            "judgeval_runs": judgeval_runs,
            "elapsed_s": elapsed,
        },
        md,
        results_dir,
    )


if __name__ == "__main__":
    main()
