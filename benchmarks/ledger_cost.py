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

import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from judgeval_async import Tracer

CALLS_PER_ROUND = 15_000
ROUNDS = 8
WARMUP_CALLS = 2_000
RESULTS = Path(__file__).resolve().parent / "results" / "ledger_cost.json"


def backend(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/projects/resolve/"):
        return httpx.Response(200, json={"project_id": "p1"})
    return httpx.Response(200, json={})


def make_tracer(metrics_enabled: bool) -> Tracer:
    return Tracer(
        "ledger-cost",
        api_key="bench",
        organization_id="bench",
        api_url="http://judgment.test",
        http_transport=httpx.MockTransport(backend),
        metrics_enabled=metrics_enabled,
        max_queue_size=4 * CALLS_PER_ROUND,
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


def main() -> int:
    rates: dict[str, list[float]] = {"on": [], "off": []}
    health: dict[str, dict[str, Any]] = {}
    for r in range(ROUNDS):
        # Fresh tracers each round, created and timed in alternating order: a long-lived tracer (or simply the
        # first one created) turned out slower in an A/A run, which would bias a comparison of two fixed tracers.
        order = ("on", "off") if r % 2 == 0 else ("off", "on")
        tracers = {mode: make_tracer(mode == "on") for mode in order}
        try:
            for t in tracers.values():
                one_round(t, WARMUP_CALLS)
            for mode in order:
                rates[mode].append(one_round(tracers[mode], CALLS_PER_ROUND))
            health = {mode: t.get_health_metrics() for mode, t in tracers.items()}
        finally:
            for t in tracers.values():
                t.shutdown(timeout=10)

    median = {mode: statistics.median(v) for mode, v in rates.items()}
    ratio = median["on"] / median["off"]
    result = {
        "benchmark": "ledger_cost",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "calls_per_round": CALLS_PER_ROUND,
        "rounds": ROUNDS,
        "spans_per_second": {mode: {"median": median[mode], "rounds": rates[mode]} for mode in rates},
        "ratio_on_over_off": ratio,
        "spans_dropped": {mode: h["spans_dropped"] for mode, h in health.items()},
        "ledger_balanced": {mode: h["ledger_balanced"] for mode, h in health.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print("| metrics_enabled | median spans/s | min | max |")
    print("|---|---:|---:|---:|")
    for mode, label in (("on", "True"), ("off", "False")):
        v = rates[mode]
        print(f"| {label} | {median[mode]:,.0f} | {min(v):,.0f} | {max(v):,.0f} |")
    print(f"\nratio on/off: **{ratio:.3f}** ({(1 - ratio) * 100:+.1f}% cost)  ·  drops: {result['spans_dropped']}")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
