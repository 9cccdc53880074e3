"""What every consumer service shares: a handoff, one task on the loop, flush waiters, and the shutdown rules.

A consumer subclasses :class:`QueueService` and implements ``_consume``: take from ``self.handoff``, send, and settle
every taken item in the ledger exactly once. This base class turns that into the runtime's ``Service`` contract:

- ``flush``: wait until every item created before the call is settled (items offered later do not delay it);
- ``drain`` (shutdown): intake is closed; the consumer empties the queue and returns;
- ``aclose``: cancel the task, then count whatever is still queued or in flight as ``shutdown_deadline``;
- ``after_fork_in_child``: count what the parent left behind as ``fork_discard`` and start the ledger afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

from ._handoff import Handoff
from ._metrics import SignalLedger
from ._sender import Lane

__all__ = ["QueueService"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class QueueService(Generic[T]):
    """Base for the span exporter, the evaluation dispatcher and the tag batcher. See the module docstring."""

    def __init__(self, ledger: SignalLedger, capacity: int, policy: str) -> None:
        self.ledger = ledger
        self.handoff: Handoff[T] = Handoff(ledger, capacity, policy)
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()  # sends spawned by the consumer (bounded by _spawn)
        self._progress: asyncio.Event | None = None
        self.lane: Lane | None = None  # the sending half (set by the subclass): backlog, spool, endpoint health

    # ------------------------------------------------------------------ producer side
    def offer(self, item: T) -> bool:
        """Hand ``item`` to the loop. O(1), never blocks, never raises."""
        return self.handoff.offer(item)

    # ------------------------------------------------------------------ Service contract
    def locks(self) -> list[threading.Lock]:
        return [self.ledger.lock]

    async def start(self) -> None:
        self._progress = asyncio.Event()
        if self.lane is not None:
            self.lane.on_progress = self._notify
            self.lane.start()
        self._task = asyncio.get_running_loop().create_task(self._guarded())

    def close_intake(self) -> None:
        self.handoff.close()

    async def drain(self) -> None:
        task = self._task
        if task is not None:
            # shield: when the runtime's deadline cancels drain(), aclose() decides what happens to the task.
            await asyncio.shield(task)
        if self.lane is not None:
            # Send what memory holds while the endpoint answers; aclose() persists the rest to the spool.
            await self.lane.drain(lambda: False)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        pending = [t for t in (task, *self._running) if t is not None and not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await self._on_close()
        if self.lane is not None:
            # Milliseconds: one writev per payload and one fsync. What it could not persist is counted below.
            await self.lane.aclose(timeout=0.2)
        self.abandon()
        self._notify()

    def abandon(self) -> None:
        """Count whatever is still queued or in flight as ``shutdown_deadline``. Any thread; idempotent."""
        self.handoff.discard_all("shutdown_deadline")
        self.ledger.abandon_in_flight("shutdown_deadline")

    def after_fork_in_child(self) -> None:
        led = self.ledger
        inherited = len(self.handoff) + led.in_flight + led.parked
        self.handoff.discard_all("fork_discard")
        # A fresh ledger for the child: it records only what it discarded, so per-process metrics are not the
        # parent's counts twice and the invariant still balances.
        led.lock = threading.Lock()
        self.handoff._lock = led.lock
        led.created = inherited
        led.delivered = 0
        led.in_flight = 0
        led.parked = 0
        led.spooled = 0  # the parent's spool files stay the parent's (or are adopted once it has died)
        led.replayed = 0
        led.refused = 0
        led.abandoned = False
        led.dropped = dict.fromkeys(led.dropped, 0)
        led.dropped["fork_discard"] = inherited
        self.handoff.reset_after_fork()
        self._task = None
        self._running = set()
        self._progress = None
        if self.lane is not None:
            self.lane.after_fork_in_child()
        self._forget_after_fork()

    # ------------------------------------------------------------------ flush
    async def flush(self, timeout: float | None = None) -> bool:
        """Deliver (or drop, with a reason) everything created before this call. Runs on the loop."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        target, _ = self.ledger.accepted_and_settled()
        self.handoff.request_flush()
        self._on_flush_requested()
        while True:
            _, settled = self.ledger.accepted_and_settled()
            if settled >= target:
                return True
            progress = self._progress
            if progress is None or self._task is None or self._task.done():
                return False
            if self.lane is not None:
                self.lane.kick()
            progress.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(progress.wait(), remaining)

    def _notify(self) -> None:
        """Call after settling items: wakes flush() waiters."""
        if self._progress is not None:
            self._progress.set()

    # ------------------------------------------------------------------ bounded concurrency for a stream of sends
    async def _spawn(self, coro: Coroutine[Any, Any, None], limit: int) -> None:
        """Start ``coro`` once fewer than ``limit`` spawned sends are running.

        aiometer bounds concurrency over a collection known up front (we use it for fan-outs: 413 halves, per-trace
        tags); a consumer reads an unbounded stream, so it waits for a free slot here instead. Waiting here is the
        backpressure: the consumer stops taking from the queue, and the queue's overflow policy decides.
        """
        try:
            while len(self._running) >= limit:
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            coro.close()  # cancelled while waiting for a slot (shutdown): its items are counted by aclose()
            raise
        task = asyncio.get_running_loop().create_task(coro)
        self._running.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("judgeval_async %s send failed", self.ledger.name, exc_info=task.exception())
        self._notify()

    async def _join_spawned(self) -> None:
        """Wait for every spawned send (the consumer calls it before returning at shutdown)."""
        while self._running:
            await asyncio.wait(set(self._running))

    # ------------------------------------------------------------------ subclass hooks
    async def _consume(self) -> None:
        raise NotImplementedError

    def _on_flush_requested(self) -> None:
        """Extra flush behaviour (the tag batcher sends its buffer). Runs on the loop."""

    async def _on_close(self) -> None:
        """Drop anything the subclass holds outside the handoff (already counted in_flight)."""

    def _forget_after_fork(self) -> None:
        """Forget loop-bound state inherited from the parent."""

    async def _guarded(self) -> None:
        # The consumer must never die silently: log, back off briefly, and resume.
        while True:
            try:
                await self._consume()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("judgeval_async %s consumer failed; restarting it", self.ledger.name)
                self._notify()
                await asyncio.sleep(0.5)
