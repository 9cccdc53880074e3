"""The span consumer looks at its handoff on its own timer while spans arrive: an application thread's span end does
not wake the loop (it would take the GIL mid-request), only a burst does; once spans stop arriving the consumer goes
back to its long wait instead of polling."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource

from judgeval_async import Config
from judgeval_async._handoff import Handoff
from judgeval_async._metrics import Metrics
from judgeval_async._project import ProjectResolver
from judgeval_async._provider import EngineTracerProvider
from judgeval_async._span import EngineSpan
from judgeval_async._spans import POLL_INTERVAL, SpanExportService
from judgeval_async._transport import AsyncTransport

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # generous bound for "this should happen promptly" on a noisy 2-core box


def _config() -> Config:
    return Config(
        api_key="k",
        organization_id="o",
        api_url="http://127.0.0.1:9",
        retry_testing=True,
        spool=False,
        schedule_delay=60.0,
    )


class _NoLane:
    """Takes what the consumer submits and never settles it; never idle, never unwell (no idle-rule sends)."""

    unwell = False

    def submit(self, envelope: Any) -> None:
        pass

    def idle(self) -> bool:
        return False


def _spans(n: int) -> list[EngineSpan]:
    ended: list[EngineSpan] = []
    tracer = EngineTracerProvider(resource=Resource.create({}), on_end=ended.append).get_tracer("lib")
    for i in range(n):
        with tracer.start_as_current_span(f"op{i}"):
            pass
    return ended


def _trickle(offer: Callable[[Any], bool], items: list[Any], per_step: int, pause: float) -> threading.Thread:
    """Offer ``items`` from another thread, ``per_step`` at a time with ``pause`` seconds between steps: an
    application producing at a rate (the pause paces the producer; nothing is asserted after it)."""

    def run() -> None:
        for i in range(0, len(items), per_step):
            for item in items[i : i + per_step]:
                offer(item)
            time.sleep(pause)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _record_looks(handoff: Handoff[Any], monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The timeout of each of the consumer's take_batch calls on ``handoff`` (its looks at the handoff)."""
    waits: list[float] = []
    take = Handoff.take_batch

    async def recorded(self: Handoff[Any], max_items: int, timeout: float, **kwargs: Any) -> Any:
        if self is handoff:
            waits.append(timeout)
        return await take(self, max_items, timeout, **kwargs)

    monkeypatch.setattr(Handoff, "take_batch", recorded)
    return waits


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_a_span_trickle_is_taken_without_a_single_producer_wake_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """600 spans at ~1 000/s from another thread all reach the encoded backlog, found by the consumer's own looks:
    the handoff scheduled no cross-thread wake-up (before, one per 64 spans); then, idle, it stops polling."""
    config = _config()
    metrics = Metrics()
    transport = AsyncTransport(config, metrics)
    service = SpanExportService(config, metrics, transport, ProjectResolver(config, transport))
    service.lane = _NoLane()  # type: ignore[assignment]
    waits = _record_looks(service.handoff, monkeypatch)
    spans = _spans(600)
    task = asyncio.get_running_loop().create_task(service._consume())
    thread = _trickle(service.offer, spans, per_step=2, pause=0.002)
    try:
        led = service.ledger
        await _until(lambda: not thread.is_alive() and not len(service.handoff) and led.parked + led.in_flight == 600)
        assert service.handoff.wakeups == 0
        assert len(waits) > 1  # taken over several looks, not at the end
        assert POLL_INTERVAL in waits  # ... by polling while spans arrived
        # Idle: a look that finds nothing ends the polling; the consumer parks with its long wait again (a consumer
        # that kept polling would never get here, and a slow machine only makes the looks fewer).
        done = len(waits)
        await _until(lambda: any(w > POLL_INTERVAL for w in waits[done:]))
    finally:
        thread.join(WAIT)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await transport.aclose()
