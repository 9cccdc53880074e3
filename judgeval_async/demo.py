"""The demo: a traced async "agent service" against the embedded local Judgment API, with the backend flipped through
healthy -> 2 s latency -> down -> healthy while it runs, printing the SDK's own health as it goes.

    python -m judgeval_async.demo [--duration 16] [--metrics-port 9464] [--schedule healthy:4,slow:4,down:4,healthy:4]

Exits 0 when every span, evaluation and tag call is accounted for (delivered, or dropped with a reason).
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
    async def handle_request(user: int, query: str) -> str:
        tracer.tag(["demo", f"user-{user % 5}"])
        steps = plan(query)
        docs = await retrieve(query) if "retrieve" in steps else []
        tokens = [t async for t in stream_tokens(query + " ".join(docs))]
        answer = " ".join(postprocess(tokens))
        tracer.async_evaluate("answer_relevancy", {"input": query, "actual_output": answer, "context": docs})
        return answer

    return handle_request


def live_line(phase: str, h: dict[str, Any]) -> str:
    drops = ",".join(f"{k}={v}" for k, v in h["spans_dropped_by_reason"].items()) or "-"
    return (
        f"[{phase:>7}] spans created={h['spans_created']:>6} exported={h['spans_exported']:>6} "
        f"queued={h['spans_queued']:>5} in_flight={h['spans_in_flight']:>4} dropped={drops} | "
        f"queue={h['queue_utilization'] * 100:5.1f}% retries={h['retries']:>4} api_errors={h['api_errors']:>4} | "
        f"evals {h['evaluations_delivered']}/{h['evaluations_enqueued']} tags {h['tags_flushed']}/{h['tags_buffered']}"
        f" | observe p50={h['observe_overhead_p50_seconds'] * 1e6:.0f}us"
        f" p95={h['observe_overhead_p95_seconds'] * 1e6:.0f}us"
        f" lag={h['loop_lag_seconds'] * 1e3:.1f}ms"
    )


async def workload(tracer: Tracer, server: LocalJudgmentServer, schedule: list[tuple[str, float]]) -> int:
    handle = build_agent(tracer)
    requests = 0
    stop = asyncio.Event()

    async def user(uid: int) -> None:
        nonlocal requests
        while not stop.is_set():
            await handle(uid, f"question {requests} from {uid}")
            requests += 1
            await asyncio.sleep(random.uniform(0.005, 0.02))

    users = [asyncio.create_task(user(i)) for i in range(8)]
    for phase, seconds in schedule:
        apply_phase(server, phase)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
            print(live_line(phase, tracer.get_health_metrics()), flush=True)
    stop.set()
    await asyncio.gather(*users)
    server.clear_faults()
    return requests


def summary(tracer: Tracer, server: LocalJudgmentServer, requests: int) -> bool:
    h = tracer.get_health_metrics()
    rows = [
        ("spans", h["spans_created"], h["spans_exported"], len(server.spans), h["spans_dropped_by_reason"]),
        (
            "evaluations",
            h["evaluations_enqueued"],
            h["evaluations_delivered"],
            len(server.evals),
            h["evaluations_dropped_by_reason"],
        ),
        ("tag() calls", h["tags_buffered"], h["tags_flushed"], len(server.tags), h["tags_dropped_by_reason"]),
    ]
    print("\n=== summary ===")
    print(f"requests handled by the app: {requests}")
    print(f"{'signal':<12} {'produced':>9} {'delivered':>10} {'backend saw':>12}  dropped (by reason)")
    for name, produced, delivered, seen, dropped in rows:
        print(f"{name:<12} {produced:>9} {delivered:>10} {seen:>12}  {dropped or '{}'}")
    print("(backend saw: distinct spans / eval runs / tagged traces)")
    print(f"retries={h['retries']} api_errors={h['api_errors_by_endpoint']}")
    p50, p95 = h["observe_overhead_p50_seconds"] * 1e6, h["observe_overhead_p95_seconds"] * 1e6
    print(f"observe overhead p50={p50:.0f}us p95={p95:.0f}us")
    print(f"ledger balanced (every item delivered or dropped with a reason): {h['ledger_balanced']}")
    return bool(h["ledger_balanced"]) and h["spans_exported"] == len(server.spans)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m judgeval_async.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--schedule", type=parse_schedule, default=None, help="phase:seconds,... (healthy/slow/down/flaky)"
    )
    parser.add_argument("--duration", type=float, default=16.0, help="total seconds, split over the 4 default phases")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    schedule = args.schedule or [(p, args.duration / 4) for p in ("healthy", "slow", "down", "healthy")]
    with LocalJudgmentServer() as server:
        print(f"local Judgment API at {server.url}; schedule: {schedule}", flush=True)
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
        if args.metrics_port:
            srv = tracer.start_metrics_server(port=args.metrics_port)
            print(f"Prometheus metrics at {getattr(srv, 'url', args.metrics_port)}", flush=True)
        try:
            requests = asyncio.run(workload(tracer, server, schedule))
            print("flushing ...", flush=True)
            tracer.force_flush(timeout=20.0)
            ok = summary(tracer, server, requests)
        finally:
            tracer.shutdown(timeout=5.0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
