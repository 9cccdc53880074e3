"""What tracing costs the caller when the CPU caches are cold, as between a web service's requests (issue 12).

A hot loop prices tracing with everything cached; in a service the application's own request evicts our code and
objects in between, and the same calls cost several times more (docs/performance.md, "Compiling the same code").
This measures that directly, without a web server's noise: a handler traced like ``web.py``'s request (an observed
call with a ``tag()``, an ``async_evaluate()``, a nested ``observe`` and a ``with tracer.span``: four spans) and
each of its parts alone, called with the thread's CPU time read around each call, and between calls a walk over
N MiB of other objects (4 KiB buffers and small dicts). Tracing cost = a handler's call - an untraced call, per N.

Subjects, each in its own process against one local server process: ``interpreted`` (this checkout) and, when
``BENCH_COLD_MYPYC=DEST`` names a copy built by ``_mypyc_variant.py``, ``compiled`` (the same run, alternating).

Run: ``python benchmarks/cold_cache.py`` (about two minutes; ``--quick``: seconds).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import ServerProcess, markdown_table, parse_args, server_process, write_results
from opentelemetry import context as otel_context
from opentelemetry import trace

from judgeval_async import Tracer  # in a subject's process, the copy its PYTHONPATH names

LEVELS_MIB = (0, 8, 32)
ROUNDS, CALLS = 5, 200
QUICK_LEVELS_MIB, QUICK_ROUNDS, QUICK_CALLS = (0, 4), 2, 30
QUESTION = "what is the weather in Paris"
# What each handler adds, and its spans per call: the full one (web.py's request: spans, a tag, an evaluation) and
# its parts, so a row says which feature the cold caches make expensive.
HANDLERS = {
    "context attach + detach": 0,
    "observe, no I/O": 1,
    "observe": 1,
    "with tracer.span": 1,
    "tag() in a span": 1,
    "async_evaluate() in a span": 1,
    "four nested spans": 4,
    "full handler": 4,
}


def _handlers(tracer: Tracer) -> dict[str, Callable[[str], object]]:
    """The handlers of ``HANDLERS``, traced by ``tracer``."""

    @tracer.observe
    def inner(x: int) -> int:
        return x + 1

    @tracer.observe
    def outer(q: str, k: int = 3) -> int:
        with tracer.span("step"):
            return inner(k)

    @tracer.observe
    def full(q: str) -> int:
        tracer.tag(["web"])
        tracer.async_evaluate("faithfulness", {"input": q, "actual_output": "o"})
        return outer(q)

    @tracer.observe
    def nested(q: str) -> int:
        return outer(q)

    @tracer.observe
    def one(q: str) -> int:
        return len(q)

    @tracer.observe(record_input=False, record_output=False)
    def one_no_io(q: str) -> int:
        return len(q)

    @tracer.observe(record_input=False, record_output=False)
    def tag(q: str) -> int:
        tracer.tag(["web"])
        return len(q)

    @tracer.observe(record_input=False, record_output=False)
    def evaluate(q: str) -> int:
        tracer.async_evaluate("faithfulness", {"input": q, "actual_output": "o"})
        return len(q)

    def with_span(q: str) -> int:
        with tracer.span("step"):
            return len(q)

    def context(q: str) -> int:
        otel_context.detach(otel_context.attach(trace.set_span_in_context(trace.INVALID_SPAN)))
        return len(q)

    funcs = (context, one_no_io, one, with_span, tag, evaluate, nested, full)
    return dict(zip(HANDLERS, funcs, strict=True))


def child(url: str, api_key: str, org_id: str, mib: int, rounds: int, calls: int) -> dict[str, Any]:
    """In the subject's process: per handler, its thread CPU per call minus an untraced call's, after an N MiB walk
    before every call (medians over rounds)."""
    tracer = Tracer(project_name="cold-cache", api_key=api_key, organization_id=org_id, api_url=url)

    def untraced(q: str) -> int:
        return len(q)

    pages = [bytearray(4096) for _ in range(mib * 256)]
    small = [{"k": i, "v": str(i)} for i in range(mib * 2000)]

    def walk() -> None:
        for page in pages:
            page[0] = (page[0] + 1) & 255
        for item in small:
            item["k"]

    funcs = {"untraced": untraced, **_handlers(tracer)}
    per_call: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(rounds):
        for name, func in funcs.items():
            total = 0
            for _ in range(calls):
                walk()
                start = time.thread_time_ns()
                func(QUESTION)
                total += time.thread_time_ns() - start
            per_call[name].append(total / calls / 1e3)
        tracer.force_flush(timeout=30.0)  # between rounds: the loop's work is not what is timed
    health = tracer.get_health_metrics()
    tracer.shutdown(timeout=10.0)
    base = statistics.median(per_call["untraced"])
    return {
        "untraced_us": base,
        "tracing_us": {name: statistics.median(per_call[name]) - base for name in HANDLERS},
        "spans_expected": rounds * calls * sum(HANDLERS.values()),
        "spans_created": health["spans_created"],
        "spans_exported": health["spans_exported"],
        "ledger_balanced": health["ledger_balanced"],
    }


def run_subject(pythonpath: str | None, srv: ServerProcess, mib: int, rounds: int, calls: int) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    args = [srv.url, srv.api_key, srv.org_id, str(mib), str(rounds), str(calls)]
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cold_cache child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args("tracing's caller CPU with the caches emptied between calls", argv)
    levels, rounds, calls = (QUICK_LEVELS_MIB, QUICK_ROUNDS, QUICK_CALLS) if args.quick else (LEVELS_MIB, ROUNDS, CALLS)
    compiled = os.environ.get("BENCH_COLD_MYPYC", "")
    if compiled and not any(Path(compiled, "judgeval_async").glob("*.so")):
        raise SystemExit(f"BENCH_COLD_MYPYC={compiled!r}: no compiled copy there (benchmarks/_mypyc_variant.py DEST)")
    subjects = {"interpreted": None, **({"compiled": compiled} if compiled else {})}
    results: list[dict[str, Any]] = []
    with server_process() as srv:
        for mib in levels:
            order = list(subjects.items())
            for i in range(2 if compiled else 1):  # alternate which subject goes first
                for name, path in order if i % 2 == 0 else reversed(order):
                    results.append({"subject": name, "mib": mib, **run_subject(path, srv, mib, rounds, calls)})
    columns = [(name, mib) for name in subjects for mib in levels]
    rows = []
    for handler in HANDLERS:
        cells: list[Any] = [handler]
        for name, mib in columns:
            mine = [r["tracing_us"][handler] for r in results if r["subject"] == name and r["mib"] == mib]
            cells.append(statistics.median(mine))
        rows.append(cells)
    headers = ["tracing µs per call", *(f"{name}, {mib} MiB walked" for name, mib in columns)]
    markdown = markdown_table(headers, rows, digits=1)
    markdown += (
        f"\n{rounds} rounds x {calls} calls per handler, subject and level, medians; tracing = the handler's thread "
        "CPU per call - an untraced call's; the walk between calls is not timed. The full handler is like "
        "web.py's request (four spans, a tag, an evaluation); the rows above it are its parts.\n"
    )
    params = {"levels_mib": list(levels), "rounds": rounds, "calls": calls, "compiled": compiled or None}
    write_results("cold_cache", {"quick": args.quick, "params": params, "runs": results}, markdown, args.results_dir)
    print(markdown)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        url, key, org, mib, rounds, calls = sys.argv[2:8]
        print(json.dumps(child(url, key, org, int(mib), int(rounds), int(calls))))
        sys.exit(0)
    sys.exit(main())
