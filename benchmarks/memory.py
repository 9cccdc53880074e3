"""Memory working set under a burst of spans, and the first traced call: judgeval_async vs stock OpenTelemetry.

Every measurement runs in a fresh process (``_worker.py``; RSS is per process and never shrinks back), against the
local Judgment API server in its own process:

1. RSS working set: 50 k, 100 k and 1 M spans from one thread as fast as it can make them, then a flush. RSS is
   sampled every 10 ms; working set = peak - RSS after the warm-up. Both SDKs keep their defaults (ours: queue
   8 192; OTel's BatchSpanProcessor: queue 2 048), so a burst faster than export drops at the bound; the loss is
   shown next to the memory. Target: ours ≤ OTel's at every size.
2. First traced call: time from constructing the SDK (imports done beforehand and shown apart) to the first
   observed call returning, and that call's own duration. Target: the first call ≤ 200 µs.

Subjects alternate (rotating order, R rounds; medians reported). The judgeval SDK from PyPI is a third subject when
``.venv-judgeval`` exists (``make bench-judgeval``).

    python benchmarks/memory.py [--quick] [--with-judgeval | --without-judgeval] [--results-dir DIR]
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import _judgeval_env
from _common import markdown_table, parse_args, ratio, server_process, verdict, write_results

FIRST_CALL_BUDGET_MS = 0.2
WARMUP_SPANS = 500  # _worker.py's memory mode makes these (and flushes) before the measured burst


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    if args.quick:
        sizes, mem_rounds, first_rounds = (2_000, 5_000), 1, 1
    else:
        sizes, mem_rounds, first_rounds = (50_000, 100_000, 1_000_000), 1, 5
    jv_ok = False if args.without_judgeval else _judgeval_env.ensure(create=args.with_judgeval)
    subjects = ["judgeval_async", "otel"] + (["judgeval"] if jv_ok else [])
    t_start = time.perf_counter()
    load_avg = os.getloadavg()
    memory: list[dict[str, Any]] = []
    first: list[dict[str, Any]] = []
    with server_process() as srv:

        def run(subject: str, mode: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
            out = _judgeval_env.run_worker(subject, mode, srv.url, srv.api_key, srv.org_id, params, timeout)
            out.setdefault("subject", subject)
            return out

        k = 0
        for _ in range(first_rounds):
            for subject in subjects[k % len(subjects) :] + subjects[: k % len(subjects)]:
                first.append(run(subject, "first_call", {}, 120.0))
                print(f"  first call {subject:15} {first[-1]}", flush=True)
            k += 1
        for _ in range(mem_rounds):
            for n in sizes:
                for subject in subjects[k % len(subjects) :] + subjects[: k % len(subjects)]:
                    # judgeval makes ~4 k spans/s here: 1 M of its spans would take minutes; cap it at 100 k.
                    if subject == "judgeval" and n > 100_000:
                        continue
                    srv.reset_records()
                    res = run(subject, "memory", {"n": n}, 60.0 + n / 1000)
                    res["n"] = n
                    # What reached the server, for every subject alike (OTel's BatchSpanProcessor drops uncounted).
                    # Every subject has flushed before its worker returns; the short wait covers the server's side.
                    received = srv.wait_for_spans(n + WARMUP_SPANS, timeout=5.0) - WARMUP_SPANS
                    res["server_received"] = received
                    res["lost_pct"] = 100.0 * (n - received) / n
                    memory.append(res)
                    print(f"  memory {n:>9,} {subject:15} {res.get('working_set_mb', res.get('error'))}", flush=True)
                k += 1
    elapsed = time.perf_counter() - t_start
    params = {
        "sizes": sizes,
        "mem_rounds": mem_rounds,
        "first_rounds": first_rounds,
        "load_avg_at_start": load_avg,
        "load_avg_at_end": os.getloadavg(),
        "judgeval": _judgeval_env.version() if jv_ok else _judgeval_env.SKIP_REASON,
    }
    report(args.quick, subjects, memory, first, params, elapsed, args.results_dir)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(
    quick: bool,
    subjects: list[str],
    memory: list[dict[str, Any]],
    first: list[dict[str, Any]],
    params: dict[str, Any],
    elapsed: float,
    results_dir: Path | None,
) -> None:
    targets: dict[str, dict[str, Any]] = {}
    trows: list[list[Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    rows = []
    for n in params["sizes"]:
        for subject in subjects:
            got = [m for m in memory if m["subject"] == subject and m["n"] == n and "working_set_mb" in m]
            if not got:
                continue
            s = {
                "working_set_mb": _median([m["working_set_mb"] for m in got]),
                "retained_mb": _median([m["retained_mb"] for m in got]),
                "rss_base_mb": _median([m["rss_base_mb"] for m in got]),
                "cpu_us_per_span": _median([m["cpu_us_per_span"] for m in got]),
                "make_rate_per_s": _median([n / m["make_s"] for m in got]),
                "spans_dropped": got[0].get("spans_dropped"),
                "lost_pct": _median([m.get("lost_pct", float("nan")) for m in got]),
            }
            summary[f"{subject}|{n}"] = s
            rows.append(
                [
                    f"{n:,}",
                    subject,
                    s["rss_base_mb"],
                    s["working_set_mb"],
                    s["retained_mb"],
                    s["make_rate_per_s"],
                    s["cpu_us_per_span"],
                    "-" if s["spans_dropped"] is None else s["spans_dropped"],
                    s["lost_pct"],
                ]
            )
        ours, otel = summary.get(f"judgeval_async|{n}"), summary.get(f"otel|{n}")
        if ours and otel:
            ok = ours["working_set_mb"] <= otel["working_set_mb"]
            targets[f"rss_le_otel|{n}"] = {
                "ours_mb": ours["working_set_mb"],
                "otel_mb": otel["working_set_mb"],
                "pass": ok,
            }
            trows.append(
                [
                    f"RSS working set ≤ stock OTel's, {n:,} spans",
                    f"{ours['working_set_mb']:.1f} vs {otel['working_set_mb']:.1f} MB"
                    f" ({ratio(ours['working_set_mb'], otel['working_set_mb']):.2f}x)",
                    verdict(ok),
                ]
            )
    frows = []
    for subject in subjects:
        got = [f for f in first if f["subject"] == subject and "first_call_ms" in f]
        if not got:
            continue
        s = {
            k: _median([f[k] for f in got])
            for k in ("import_ms", "construct_ms", "first_call_ms", "construct_to_first_return_ms", "second_call_ms")
        }
        s["first_call_max_ms"] = max(f["first_call_ms"] for f in got)
        summary[f"{subject}|first_call"] = s
        frows.append(
            [
                subject,
                s["import_ms"],
                s["construct_ms"],
                s["first_call_ms"],
                s["first_call_max_ms"],
                s["construct_to_first_return_ms"],
                s["second_call_ms"],
            ]
        )
    ours_first = summary.get("judgeval_async|first_call")
    if ours_first:
        ok = ours_first["first_call_ms"] <= FIRST_CALL_BUDGET_MS
        targets["first_call_le_200us"] = {"first_call_ms": ours_first["first_call_ms"], "pass": ok}
        trows.append(
            [
                "first traced call ≤ 200 µs (judgeval_async, median)",
                f"{ours_first['first_call_ms'] * 1e3:.0f} µs (max {ours_first['first_call_max_ms'] * 1e3:.0f} µs);"
                f" construction to first return {ours_first['construct_to_first_return_ms']:.1f} ms",
                verdict(ok),
            ]
        )
    if "judgeval" not in subjects:
        trows.append(["judgeval 1.x from PyPI", params["judgeval"], "SKIPPED"])
    md = (
        "## Targets\n\n"
        + markdown_table(["target", "measured", "result"], trows)
        + "\n\n## 1. RSS working set under a burst (one thread, as fast as possible, then flush)\n\n"
        + markdown_table(
            [
                "spans",
                "subject",
                "RSS after warm-up MB",
                "working set MB",
                "retained MB",
                "spans/s made",
                "CPU µs/span",
                "our dropped",
                "lost % (server count)",
            ],
            rows,
            digits=1,
        )
        + "\n\nWorking set = peak RSS (sampled every 10 ms, burst and flush) - RSS after a 500-span warm-up; retained"
        " = RSS after the flush and a full collection - the same base. A fresh process per cell. judgeval (if"
        " present) is capped at 100 k spans (it makes ~4 k/s here).\n\n"
        + "## 2. First traced call (ms, median of fresh processes)\n\n"
        + markdown_table(
            [
                "subject",
                "imports",
                "construction",
                "first call",
                "first call max",
                "construction to first return",
                "second call",
            ],
            frows,
            digits=3,
        )
        + "\n\nImports are timed apart (they happen once per process whatever the SDK does); construction = the"
        " SDK's constructor (ours: `Tracer(...)`; OTel: provider + BatchSpanProcessor + OTLP exporter; judgeval:"
        " `Tracer.init`, which resolves the project over HTTP); first call = the first `observe`-decorated call."
        f"\n\nLoad average {params['load_avg_at_start'][0]:.2f} at the start, {params['load_avg_at_end'][0]:.2f} at"
        f" the end (shared machine). {elapsed:.1f} s in total.\n"
    )
    print(md)
    write_results(
        "memory",
        {
            "quick": quick,
            "params": params,
            "memory": memory,
            "first_call": first,
            "summary": summary,
            "targets": targets,
            "elapsed_s": elapsed,
        },
        md,
        results_dir,
    )


if __name__ == "__main__":
    main()
