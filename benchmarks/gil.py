"""How long a tracing SDK's own thread makes the application's thread wait for the GIL.

A thread that returns from a system call (a socket read or write, ``epoll_wait``) must take the GIL back; if the
SDK's export thread holds it, the application waits until that thread next releases it, at worst CPython's 5 ms
switch interval. That wait is latency the SDK adds without showing up as CPU on the request's thread.

Each subject runs in its own process: the web benchmark's handlers (``_web_app.py``: an observed ``handle`` span
with a sync and an async span inside, one ``tag()`` and one ``async_evaluate()``) called in-process at a paced 500
requests/s on an asyncio loop, exporting to the local server, and a probe on the same loop 1 000 times a second:
``time.sleep(0)`` (a system call, so the GIL is dropped and taken back) timed, minus the thread's own CPU time and
its run-queue wait from ``/proc/self/task/<tid>/schedstat`` (time the OS kept it off a core: other processes). What
remains is time the thread slept waiting for the GIL; without a second thread it reads ~0. Subjects: ``untraced``
(no SDK: the probe's floor), ``judgeval_async``, stock OpenTelemetry (``otel``), judgeval from PyPI (``judgeval``,
its own venv; skipped with a message when absent). Rounds interleave the subjects.

    python benchmarks/gil.py [--quick] [--with-judgeval | --without-judgeval] [--results-dir DIR]
"""

# The child imports only what its interpreter has (the judgeval venv has no judgeval_async): imports are lazy.
# ruff: noqa: PLC0415
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RATE = 500.0  # requests/s
PROBE_INTERVAL = 0.001  # s between probes
SUBJECTS = ("untraced", "judgeval_async", "otel", "judgeval")


# ---------------------------------------------------------------------------------------------------- child process
def child(kind: str, url: str, api_key: str, org_id: str, duration: float) -> dict[str, Any]:
    """Run one subject for ``duration`` seconds in this process; the measurements as a dict. Standalone: stdlib and
    ``_web_app`` only (the judgeval venv has neither judgeval_async's benchmarks helpers nor its dependencies)."""
    sys.path.insert(0, str(HERE))
    import argparse

    import _web_app

    subject = _web_app.Subject()
    args = argparse.Namespace(url=url, api_key=api_key, org_id=org_id, burn_us=0.0)
    makers = {
        "judgeval_async": _web_app.make_judgeval_async,
        "otel": _web_app.make_otel,
        "judgeval": _web_app.make_judgeval,
    }
    if kind in makers:
        makers[kind](subject, args)
    handler = subject.handler
    fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)

    def schedstat() -> tuple[int, int]:
        on_cpu, waiting = os.pread(fd, 200, 0).split()[:2]
        return int(on_cpu), int(waiting)

    blocked: list[float] = []
    latencies: list[float] = []

    async def probe(end: float) -> None:
        while time.perf_counter() < end:
            c0, r0 = schedstat()
            t0 = time.perf_counter_ns()
            time.sleep(0)  # noqa: ASYNC251 - the probe: a system call that drops the GIL and takes it back
            t1 = time.perf_counter_ns()
            c1, r1 = schedstat()
            blocked.append(max(0, (t1 - t0) - (c1 - c0) - (r1 - r0)) / 1e6)
            await asyncio.sleep(PROBE_INTERVAL)

    async def one(due: float) -> None:
        await handler("hello")
        latencies.append((time.perf_counter() - due) * 1e3)

    async def run(seconds: float) -> None:
        end = time.perf_counter() + seconds
        prober = asyncio.create_task(probe(end))
        t0 = time.perf_counter()
        tasks = []
        for k in range(int(RATE * seconds)):
            due = t0 + k / RATE
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        await prober

    asyncio.run(run(1.0))  # warm-up: imports, connections, the first batches
    subject.flush(10.0)
    blocked.clear()
    latencies.clear()
    cpu0 = time.process_time()
    asyncio.run(run(duration))
    cpu = time.process_time() - cpu0
    subject.flush(10.0)
    return {"blocked_ms": blocked, "latency_ms": latencies, "cpu_us_per_request": cpu / len(latencies) * 1e6}


# ---------------------------------------------------------------------------------------------------- parent
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, url, api_key, org_id, seconds = sys.argv[2:7]
        print(json.dumps(child(kind, url, api_key, org_id, float(seconds))), flush=True)
        return
    import _judgeval_env
    from _common import markdown_table, parse_args, percentile, server_process, write_results

    args = parse_args(__doc__.splitlines()[0])
    rounds, duration = (1, 2.0) if args.quick else (4, 6.0)
    jv_ok = False if args.without_judgeval else _judgeval_env.ensure(create=args.with_judgeval)
    names = [s for s in SUBJECTS if s != "judgeval" or jv_ok]
    results: dict[str, dict[str, list[float]]] = {n: {"blocked_ms": [], "latency_ms": [], "cpu": []} for n in names}
    load_avg = os.getloadavg()
    t_start = time.perf_counter()
    with server_process() as srv:
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                if name == "judgeval":
                    python, env = (
                        str(_judgeval_env.PYTHON),
                        _judgeval_env.judgeval_env(srv.url, srv.api_key, srv.org_id),
                    )
                else:
                    python, env = sys.executable, dict(os.environ)
                out = subprocess.run(
                    [python, __file__, "--child", name, srv.url, srv.api_key, srv.org_id, str(duration)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=duration * 10 + 60,
                    check=False,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"{name}: the child failed:\n{out.stderr[-2000:]}")
                data = json.loads(out.stdout.strip().splitlines()[-1])
                results[name]["blocked_ms"] += data["blocked_ms"]
                results[name]["latency_ms"] += data["latency_ms"]
                results[name]["cpu"].append(data["cpu_us_per_request"])
                b = sorted(data["blocked_ms"])
                request_p99 = percentile(sorted(data["latency_ms"]), 99)
                print(
                    f"  round {r} {name:16} blocked >1 ms {sum(x > 1 for x in b) / len(b) * 100:5.2f} %"
                    f" p99.9 {percentile(b, 99.9):6.2f} ms | request p99 {request_p99:6.2f} ms",
                    flush=True,
                )
    rows = []
    summary: dict[str, dict[str, float]] = {}
    for name in names:
        b = sorted(results[name]["blocked_ms"])
        lat = sorted(results[name]["latency_ms"])
        s = {
            "probes": len(b),
            "blocked_over_0_5ms_pct": sum(x > 0.5 for x in b) / len(b) * 100,
            "blocked_over_1ms_pct": sum(x > 1 for x in b) / len(b) * 100,
            "blocked_p99_ms": percentile(b, 99),
            "blocked_p99_9_ms": percentile(b, 99.9),
            "blocked_max_ms": b[-1],
            "request_p50_ms": percentile(lat, 50),
            "request_p99_ms": percentile(lat, 99),
            "cpu_us_per_request": sorted(results[name]["cpu"])[len(results[name]["cpu"]) // 2],
        }
        summary[name] = s
        rows.append([name, *s.values()])
    if not jv_ok:
        rows.append(["judgeval", _judgeval_env.SKIP_REASON, *["-"] * 8])
    headers = [
        "subject",
        "probes",
        "blocked > 0.5 ms %",
        "blocked > 1 ms %",
        "blocked p99 ms",
        "blocked p99.9 ms",
        "blocked max ms",
        "request p50 ms",
        "request p99 ms",
        "CPU µs/request (median)",
    ]
    md = "\n".join(
        [
            "## Waiting for the GIL: the application thread's probe, in-process load at 500 req/s",
            "",
            markdown_table(headers, rows),
            "",
            f"{rounds} round(s) of {duration} s per subject, interleaved; probes pooled over rounds. Blocked = the"
            " wall time of `time.sleep(0)` minus the thread's CPU and run-queue time (schedstat): time asleep on the"
            f" GIL. Load average {load_avg[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.",
        ]
    )
    print(md)
    elapsed = time.perf_counter() - t_start
    params = {"rate": RATE, "rounds": rounds, "duration_s": duration, "load_avg_at_start": load_avg}
    write_results("gil", {"params": params, "summary": summary, "elapsed_s": elapsed}, md, args.results_dir)


if __name__ == "__main__":
    main()
