"""What the health metrics cost the caller: spans/s through ``@tracer.observe`` with metrics on vs off.

Each round builds two fresh tracers (``metrics_enabled=True`` and ``False``) on an in-memory backend
(``httpx.MockTransport``) and times them back to back, alternating which goes first, so drift in the machine hits
both equally. Each round times only
the caller's side (``N`` calls of a trivial traced function); the flush between rounds is not timed. The loss
ledger itself is always on (it is the exact accounting, not an option); ``metrics_enabled`` switches the sampled
``observe_overhead`` timing.

Run: ``python benchmarks/ledger_cost.py`` (about 30 s). Writes ``benchmarks/results/ledger_cost.json`` and
prints a Markdown table.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx
from _common import machine_info, markdown_table, parse_args, write_results

from judgeval_async import Tracer

CALLS_PER_ROUND = 15_000
ROUNDS = 8
WARMUP_CALLS = 2_000


def backend(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/projects/resolve/"):
        return httpx.Response(200, json={"project_id": "p1"})
    return httpx.Response(200, json={})


def make_tracer(metrics_enabled: bool, calls: int) -> Tracer:
    return Tracer(
        "ledger-cost",
        api_key="bench",
        organization_id="bench",
        api_url="http://judgment.test",
        http_transport=httpx.MockTransport(backend),
        metrics_enabled=metrics_enabled,
        max_queue_size=4 * calls,
        schedule_delay=0.05,
    )


def one_round(tracer: Tracer, calls: int) -> float:
    """Spans per second for ``calls`` traced calls (caller side only), then an untimed flush."""

    @tracer.observe
    def trivial(x: int) -> int:
        return x + 1

    start = time.perf_counter()
    for i in range(calls):
        trivial(i)
    elapsed = time.perf_counter() - start
    tracer.force_flush(timeout=30)
    return calls / elapsed


def main(argv: list[str] | None = None) -> int:
    args = parse_args("spans/s through observe with health metrics on vs off", argv)
    rounds, calls, warmup = (2, 2_000, 200) if args.quick else (ROUNDS, CALLS_PER_ROUND, WARMUP_CALLS)
    rates: dict[str, list[float]] = {"on": [], "off": []}
    health: dict[str, dict[str, Any]] = {}
    for r in range(rounds):
        # Fresh tracers each round, created and timed in alternating order: a long-lived tracer (or simply the
        # first one created) turned out slower in an A/A run, which would bias a comparison of two fixed tracers.
        order = ("on", "off") if r % 2 == 0 else ("off", "on")
        tracers = {mode: make_tracer(mode == "on", calls) for mode in order}
        try:
            for t in tracers.values():
                one_round(t, warmup)
            for mode in order:
                rates[mode].append(one_round(tracers[mode], calls))
            health = {mode: t.get_health_metrics() for mode, t in tracers.items()}
        finally:
            for t in tracers.values():
                t.shutdown(timeout=10)

    median = {mode: statistics.median(v) for mode, v in rates.items()}
    ratio = median["on"] / median["off"]
    result = {
        "benchmark": "ledger_cost",
        "machine": machine_info(),
        "quick": args.quick,
        "calls_per_round": calls,
        "rounds": rounds,
        "spans_per_second": {mode: {"median": median[mode], "rounds": rates[mode]} for mode in rates},
        "ratio_on_over_off": ratio,
        "spans_dropped": {mode: h["spans_dropped"] for mode, h in health.items()},
        "ledger_balanced": {mode: h["ledger_balanced"] for mode, h in health.items()},
    }
    rows = [
        [label, f"{median[mode]:,.0f}", f"{min(rates[mode]):,.0f}", f"{max(rates[mode]):,.0f}"]
        for mode, label in (("on", "True"), ("off", "False"))
    ]
    markdown = (
        "# ledger_cost\n\n"
        + markdown_table(["metrics_enabled", "median spans/s", "min", "max"], rows)
        + f"\n\nratio on/off: **{ratio:.3f}** ({(1 - ratio) * 100:+.1f}% cost) · drops: {result['spans_dropped']}\n"
    )
    print(markdown)
    json_path, _ = write_results("ledger_cost", result, markdown, args.results_dir)
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
