"""The demo: a traced async "agent service" against the embedded local Judgment API, with the backend flipped through
healthy -> 2 s latency -> down -> healthy while it runs, printing the SDK's own health as it goes.

    python -m judgeval_async.demo [--duration 16] [--metrics-port 9464] [--schedule healthy:4,slow:4,down:4,healthy:4]

With both ``--duration`` and ``--schedule``, the schedule's phases are scaled to add up to the duration. Exits 0 when
every span, evaluation and tag call is accounted for (delivered, or dropped with a reason); 130 after Ctrl-C, which
stops the workload, flushes briefly and prints the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ._tracer import Tracer
from .testing import LocalJudgmentServer

PHASES = {"healthy", "slow", "down", "flaky"}
DEFAULT_PHASES = ("healthy", "slow", "down", "healthy")
DEFAULT_DURATION = 16.0
# One request in EVAL_EVERY runs an evaluation. Each evaluation is one POST, with max_concurrent_requests (4) in
# flight: against the local server on a busy 2-core machine that is ~190 evaluations/s. Evaluating every request
# (~280/s) overflowed the evaluation queue while the backend was healthy; one in four (~70/s) leaves a wide
# margin, as sampling evaluations does in production.
EVAL_EVERY = 4


def parse_schedule(text: str) -> list[tuple[str, float]]:
    """'healthy:4,slow:4' -> [('healthy', 4.0), ('slow', 4.0)]."""
    out = []
    for part in text.split(","):
        name, _, seconds = part.partition(":")
        if name not in PHASES:
            raise argparse.ArgumentTypeError(f"unknown phase {name!r}; choose from {sorted(PHASES)}")
        out.append((name, float(seconds or 4)))
    return out


def apply_phase(server: LocalJudgmentServer, phase: str) -> None:
    server.clear_faults()
    if phase == "slow":
        server.set_fault(None, kind="latency", seconds=2.0)
    elif phase == "down":
        server.set_fault(None, kind="refuse")
    elif phase == "flaky":
        server.set_fault(None, kind="ratio", ratio=0.3, status=503)


def build_agent(tracer: Tracer) -> Any:
    """A small LLM-agent-shaped workload: nested spans, sync and async functions, generators, tags, evals."""

    @tracer.observe(span_type="tool")
    async def retrieve(query: str) -> list[str]:
        await asyncio.sleep(random.uniform(0.001, 0.005))
        return [f"doc-{i}:{query[:12]}" for i in range(3)]

    @tracer.observe(span_type="llm")
    async def stream_tokens(prompt: str) -> AsyncIterator[str]:
        for token in ("The", "answer", "is", "42."):
            await asyncio.sleep(0.001)
            yield token

    @tracer.observe
    def plan(query: str) -> list[str]:
        return ["retrieve", "generate"] if len(query) % 2 else ["generate"]

    @tracer.observe
    def postprocess(tokens: list[str]) -> Iterator[str]:
        yield from (t.upper() for t in tokens)

    @tracer.observe(span_type="chain")
    async def handle_request(user: int, query: str, evaluate: bool) -> str:
        tracer.tag(["demo", f"user-{user % 5}"])
        steps = plan(query)
        docs = await retrieve(query) if "retrieve" in steps else []
        tokens = [t async for t in stream_tokens(query + " ".join(docs))]
        answer = " ".join(postprocess(tokens))
        if evaluate:
            tracer.async_evaluate("answer_relevancy", {"input": query, "actual_output": answer, "context": docs})
        return answer

    return handle_request


# Every line and the summary use the same words, defined once here.
LEGEND = (
    "legend: created = handed to the SDK; delivered = accepted by the backend; pending = queued or in flight; "
    "dropped = lost, with the reason in [...]. Every created item is exactly one of delivered, pending, dropped."
)


def _dropped(by_reason: dict[str, int]) -> str:
    """``0``, or ``279[queue_full=279]``: the total, then each reason."""
    total = sum(by_reason.values())
    if not total:
        return "0"
    return f"{total}[" + ",".join(f"{k}={v}" for k, v in sorted(by_reason.items()) if v) + "]"


def signal_counts(h: dict[str, Any]) -> dict[str, tuple[int, int, int, dict[str, int]]]:
    """(created, delivered, pending, dropped by reason) per signal, read from one health snapshot."""
    return {
        "spans": (
            h["spans_created"],
            h["spans_exported"],
            h["spans_queued"] + h["spans_in_flight"],
            h["spans_dropped_by_reason"],
        ),
        "evals": (
            h["evaluations_enqueued"],
            h["evaluations_delivered"],
            h["evaluations_queued"] + h["evaluations_in_flight"],
            h["evaluations_dropped_by_reason"],
        ),
        "tags": (
            h["tags_buffered"],
            h["tags_flushed"],
            h["tags_queued"] + h["tags_in_flight"],
            h["tags_dropped_by_reason"],
        ),
    }


def live_line(phase: str, elapsed: float, h: dict[str, Any]) -> str:
    parts = [
        f"{name} created={c} delivered={d} pending={p} dropped={_dropped(r)}"
        for name, (c, d, p, r) in signal_counts(h).items()
    ]
    return (
        f"[{phase:>7} {elapsed:4.0f}s] "
        + " | ".join(parts)
        + f" | span_queue={h['queue_utilization'] * 100:.0f}% retries={h['retries']} api_errors={h['api_errors']}"
        f" | observe p50={h['observe_overhead_p50_seconds'] * 1e6:.0f}us"
        f" p95={h['observe_overhead_p95_seconds'] * 1e6:.0f}us"
        f" loop_lag={h['loop_lag_seconds'] * 1e3:.1f}ms"
    )


class Progress:
    """What the workload has done so far; read by the summary even when Ctrl-C cut the workload short."""

    def __init__(self) -> None:
        self.requests = 0


async def workload(
    tracer: Tracer, server: LocalJudgmentServer, schedule: list[tuple[str, float]], progress: Progress
) -> None:
    handle = build_agent(tracer)
    stop = asyncio.Event()
    started = time.monotonic()

    async def user(uid: int) -> None:
        while not stop.is_set():
            await handle(uid, f"question {progress.requests} from {uid}", progress.requests % EVAL_EVERY == 0)
            progress.requests += 1
            await asyncio.sleep(random.uniform(0.005, 0.02))

    users = [asyncio.create_task(user(i)) for i in range(8)]
    for phase, seconds in schedule:
        apply_phase(server, phase)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
            print(live_line(phase, time.monotonic() - started, tracer.get_health_metrics()), flush=True)
    stop.set()
    await asyncio.gather(*users)
    server.clear_faults()


def summary(tracer: Tracer, server: LocalJudgmentServer, requests: int) -> bool:
    h = tracer.get_health_metrics()
    # Evaluations arrive on their spans (eval_transport "auto" with spans to Judgment) or POSTed (the fallback).
    evals = len(server.evals) + len(server.span_evals)
    seen = {"spans": len(server.spans), "evals": evals, "tags": len(server.tags)}
    names = {"spans": "spans", "evals": "evaluations", "tags": "tag() calls"}
    print("\n=== summary ===")
    print(f"requests handled by the app: {requests} (an evaluation for every {EVAL_EVERY}th)")
    header = ("signal", "created", "delivered", "pending", "dropped", "backend saw")
    print(f"{header[0]:<12}" + "".join(f"{h_:>13}" for h_ in header[1:]) + "  dropped by reason")
    for key, (created, delivered, pending, by_reason) in signal_counts(h).items():
        row = (created, delivered, pending, sum(by_reason.values()), seen[key])
        print(f"{names[key]:<12}" + "".join(f"{n:>13}" for n in row) + f"  {_dropped(by_reason)}")
    print("(backend saw: distinct spans / eval runs / tagged traces)")
    print(f"retries={h['retries']} api_errors={h['api_errors_by_endpoint']}")
    p50, p95 = h["observe_overhead_p50_seconds"] * 1e6, h["observe_overhead_p95_seconds"] * 1e6
    print(f"observe overhead p50={p50:.0f}us p95={p95:.0f}us")
    print(f"ledger balanced (every item delivered or dropped with a reason): {h['ledger_balanced']}")
    return bool(h["ledger_balanced"]) and h["spans_exported"] == len(server.spans)


def resolve_schedule(schedule: list[tuple[str, float]] | None, duration: float | None) -> list[tuple[str, float]]:
    """The phases to run. ``--duration`` alone splits the default four phases evenly; with ``--schedule`` it scales
    the schedule's phases, keeping their proportions, so that they add up to it (neither is ever ignored)."""
    if schedule is None:
        total = DEFAULT_DURATION if duration is None else duration
        return [(p, total / len(DEFAULT_PHASES)) for p in DEFAULT_PHASES]
    if duration is None:
        return schedule
    factor = duration / sum(seconds for _, seconds in schedule)
    return [(phase, seconds * factor) for phase, seconds in schedule]


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the demo; the exit code: 0 when every item is accounted for, 1 when not, 130 after Ctrl-C."""
    try:
        return _run(argv)
    except KeyboardInterrupt:  # a Ctrl-C during shutdown itself: still no traceback
        print("\ninterrupted", file=sys.stderr, flush=True)
        return 130


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m judgeval_async.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--schedule", type=parse_schedule, default=None, help="phase:seconds,... (healthy/slow/down/flaky)"
    )
    parser.add_argument(
        "--duration",
        type=_positive_seconds,
        default=None,
        help=f"total seconds (default {DEFAULT_DURATION:g}): split evenly over the default phases, or, with "
        "--schedule, the schedule's phases scaled to add up to it",
    )
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    schedule = resolve_schedule(args.schedule, args.duration)
    with LocalJudgmentServer() as server:
        pretty = ", ".join(f"{phase} {seconds:g}s" for phase, seconds in schedule)
        print(f"local Judgment API at {server.url}; schedule: {pretty}", flush=True)
        print(LEGEND, flush=True)
        tracer = Tracer(
            project_name="demo-agent",
            api_key=server.api_key,
            organization_id=server.org_id,
            api_url=server.url,
            schedule_delay=0.5,
            tag_flush_interval=1.0,
            retry_attempts=12,
            retry_wait_max=2.0,
        )
        progress = Progress()
        interrupted = False
        try:
            if args.metrics_port:
                srv = tracer.start_metrics_server(port=args.metrics_port)
                print(f"Prometheus metrics at {srv.url}", flush=True)
            try:
                asyncio.run(workload(tracer, server, schedule, progress))
                print("flushing ...", flush=True)
                tracer.force_flush(timeout=20.0)
            except KeyboardInterrupt:
                interrupted = True
                server.clear_faults()
                print("\ninterrupted: flushing for up to 5 s (Ctrl-C again to skip) ...", flush=True)
                try:
                    tracer.force_flush(timeout=5.0)
                except KeyboardInterrupt:
                    print("flush skipped", flush=True)
            ok = summary(tracer, server, progress.requests)
        finally:
            tracer.shutdown(timeout=5.0)
    if interrupted:
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
