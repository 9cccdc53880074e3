"""The bounded handoff between the application's threads and the SDK's loop.

Producers call :meth:`Handoff.offer` from any thread, and from inside any running event loop, without blocking and
without awaiting: one uncontended lock, a deque append, and (rarely) one coalesced wake-up. The consumer runs on the
SDK loop and awaits :meth:`Handoff.take_batch`.

Wake-ups are coalesced: the consumer parks with a *threshold* (the batch size it wants). ``offer`` only wakes it when
the queue reaches that threshold and no wake-up is already pending; while the consumer is busy (not parked) offers
schedule nothing at all. The consumer's own timer covers the partial-batch case, so a quiet producer costs nothing.

Races, documented: ``offer`` and ``close`` may race; an offer that takes the lock after ``close`` returns False and
is counted as dropped with reason ``shutdown``. Every other item is taken by the consumer or discarded with a reason.

Re-entrance: ``offer`` may run *inside* a locked region of the same thread (a signal handler, or a ``__del__`` /
weakref callback run by the garbage collector, at any bytecode). The lock is re-entrant, and every locked region sets
the ledger's ``busy`` flag while it updates: an ``offer`` that finds it set touches nothing that region may be
touching. It sets the item aside on a deque of its own (one atomic append, bounded by the capacity), and the
consumer's next take (or the next read of the ledger) admits it under the usual rules; only when that deque is full
is the item refused, counted ``reentrant`` on a counter of its own. A plain lock would deadlock there; a bare
re-entrant lock would interleave two updates. Objects are released outside the lock where a ``__del__`` could run.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from ._config import OVERFLOW_POLICIES
from ._metrics import SignalLedger, new_lock

__all__ = ["Handoff"]

T = TypeVar("T")

# Enqueue times closer than this to the previous item's share its float object (8 B a queued item, not 32): the
# oldest queued age reads at most this much low.
_TIME_GRAIN = 0.001


class Handoff(Generic[T]):
    """A bounded multi-producer, single-consumer queue whose producers never block. See the module docstring."""

    __slots__ = (
        "_capacity",
        "_closed",
        "_deferred",
        "_drop_oldest",
        "_flush_requested",
        "_items",
        "_kicked",
        "_ledger",
        "_lock",
        "_loop",
        "_threshold",
        "_times",
        "_waiter",
        "_wake_pending",
        "evict_parked",
        "name",
        "wakeups",
    )

    def __init__(self, ledger: SignalLedger, capacity: int, policy: str = "drop_newest") -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        if policy not in OVERFLOW_POLICIES:
            raise ValueError(f"policy must be one of {sorted(OVERFLOW_POLICIES)}")
        self.name = ledger.name
        self._ledger = ledger
        self._lock = ledger.lock  # shared: one lock covers the queue and its ledger, so snapshots are consistent
        self._capacity = capacity
        self._drop_oldest = policy == "drop_oldest"
        self._items: deque[T] = deque()
        self._times: deque[float] = deque()  # enqueue time per item (shared within _TIME_GRAIN), for the oldest age
        self._closed = False
        # Items offered by a re-entrant call (a signal handler or GC callback interrupting this thread mid-update),
        # not yet in the ledger: admitted, under offer()'s rules, by the consumer's next take or the next read of the
        # ledger (offer itself does not look, to stay cheap).
        self._deferred: deque[T] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._threshold = 0  # > 0 only while the consumer is parked waiting for that many items
        self._wake_pending = False
        self._flush_requested = False
        self._kicked = False  # set by wake_consumer(): the next take returns at once (loop thread only)
        self.wakeups = 0  # how many cross-thread wake-ups offer() scheduled (tests check coalescing)
        # Set by a consumer that parks items (counted in ledger.parked): under drop_oldest, with the lock held, drop
        # the oldest parked item (counting nothing: offer counts the queue_full) and return True if there was one.
        self.evict_parked: Callable[[], bool] | None = None
        ledger.capacity = capacity
        ledger.oldest = self._view
        ledger.merge = self._merge_deferred_locked

    # ------------------------------------------------------------------ producer side (any thread, never blocks)
    def offer(self, item: T) -> bool:
        """Add ``item`` if there is room (or make room, under ``drop_oldest``). Never blocks, never raises.

        Returns False when ``item`` itself was not queued (queue full under ``drop_newest``, or closed).
        """
        loop = None
        evicted: T | None = None  # released after the lock: its __del__ may call offer() again (re-entrancy)
        led = self._ledger
        with self._lock:
            if led.busy:
                # This thread re-entered a region that is mid-update (see the module docstring): touch nothing that
                # region may be touching. Set the item aside (one atomic append); the next update admits it.
                if len(self._deferred) < self._capacity:
                    self._deferred.append(item)
                    return True
                next(led.reentrant)
                return False
            try:
                led.busy = True
                led.created += 1
                if self._closed:
                    led.dropped["shutdown"] += 1
                    led.refused += 1
                    return False
                items = self._items
                # One bound for the whole backlog: what waits here plus what the consumer parked (encoded, waiting
                # for a send slot) never exceeds the capacity, so utilization never exceeds 1.0.
                if len(items) + led.parked >= self._capacity:
                    led.dropped["queue_full"] += 1
                    if not self._drop_oldest:
                        led.refused += 1
                        return False
                    # drop_oldest: parked items were taken before anything still here, so they go first.
                    if led.parked and self.evict_parked is not None and self.evict_parked():
                        pass
                    elif items:
                        evicted = items.popleft()
                        self._times.popleft()
                    else:
                        led.refused += 1
                        return False
                items.append(item)
                now = time.monotonic()
                times = self._times
                times.append(times[-1] if times and now - times[-1] < _TIME_GRAIN else now)
                if self._threshold and len(items) >= self._threshold and not self._wake_pending:
                    self._wake_pending = True
                    loop = self._loop
            finally:
                led.busy = False
        if loop is not None:
            self._schedule_wake(loop)
        del evicted
        return True

    def close(self) -> None:
        """Stop accepting items and wake the consumer so it can drain what is left. Idempotent, any thread."""
        with self._ledger.updating():
            self._closed = True
            loop = self._loop if self._threshold else None
            self._wake_pending = True
        if loop is not None:
            self._schedule_wake(loop)

    def request_flush(self) -> None:
        """Ask the consumer to take whatever is queued now instead of waiting for a full batch. Any thread."""
        with self._ledger.updating():
            self._flush_requested = True
            loop = self._loop if self._threshold else None
            self._wake_pending = True
        if loop is not None:
            self._schedule_wake(loop)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._items)

    # ------------------------------------------------------------------ consumer side (the SDK loop only)
    async def take_batch(self, max_items: int, timeout: float, *, wake_at: int | None = None) -> list[T]:
        """Wait until ``wake_at`` items (default ``max_items``) are queued, ``timeout`` seconds pass, a flush is
        requested or the handoff is closed; then take up to ``max_items`` (possibly none). Taken items move to the
        ledger's ``in_flight``.

        ``wake_at`` above ``max_items`` is for a consumer that looks on its own timer: ``max_items`` already queued
        are still taken at once, but a parked consumer is woken by ``offer`` only at ``wake_at`` (a burst)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        threshold = max_items if wake_at is None else max(1, wake_at)
        ready = min(threshold, max_items)
        updating = self._ledger.updating
        while True:
            released: list[T] = []  # admitted-then-refused items: let go after the lock (a __del__ may trace)
            with updating() as fresh:
                if fresh and self._deferred:
                    released = self._merge_deferred_locked()
                self._loop = loop
                n = len(self._items)
                expired = loop.time() >= deadline
                if n >= ready or self._closed or self._flush_requested or self._kicked or expired:
                    self._flush_requested = self._flush_requested and n > max_items
                    self._kicked = False
                    return self._take_locked(max_items)
                fut: asyncio.Future[None] = loop.create_future()
                self._waiter = fut
                self._threshold = threshold
                self._wake_pending = False
            del released
            timer = loop.call_at(deadline, _resolve, fut)
            try:
                await fut
            finally:
                timer.cancel()
                with updating():
                    self._threshold = 0
                    self._waiter = None

    def take_nowait(self, max_items: int) -> list[T]:
        """Take up to ``max_items`` without waiting (used when draining)."""
        released: list[T] = []
        with self._ledger.updating() as fresh:
            if fresh and self._deferred:
                released = self._merge_deferred_locked()
            batch = self._take_locked(max_items)
        del released
        return batch

    def wake_consumer(self) -> None:
        """Make the consumer's current (or next) ``take_batch`` return now with what is there, e.g. because a send
        slot came free. Call on the loop thread."""
        self._kicked = True
        self._wake()

    def discard_all(self, reason: str) -> int:
        """Drop every queued item, counted under ``reason``. Any thread. Returns how many were dropped."""
        released: list[T] = []
        with self._ledger.updating() as fresh:
            if fresh and self._deferred:
                released = self._merge_deferred_locked()
            dropped, self._items = self._items, deque()
            self._times.clear()
            n = len(dropped)
            self._ledger.dropped[reason] += n
        dropped.clear()  # outside the lock: an item's __del__ may call offer() again
        del released
        return n

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's loop and waiter (they belong to a thread that does not exist
        here). The caller holds or has just re-created the lock; see ``_runtime``."""
        led = self._ledger
        led.lock = self._lock = new_lock()  # re-entrant, whatever the caller re-created
        led.busy = False
        led.reentrant = itertools.count()  # the parent's refusals are the parent's
        inherited = len(self._deferred)  # set aside in the parent and never admitted: the parent's too
        self._deferred.clear()
        led.created += inherited
        led.dropped["fork_discard"] += inherited
        self._loop = None
        self._waiter = None
        self._threshold = 0
        self._wake_pending = False
        self._flush_requested = False
        self._kicked = False
        self._closed = False

    # ------------------------------------------------------------------ internals
    def _merge_deferred_locked(self) -> list[T]:
        """Admit the items re-entrant offers set aside, oldest first, under offer()'s rules. Call with the lock held
        and ``busy`` set by a region that is not itself re-entrant. Returns the items to release after the lock."""
        released: list[T] = []
        deferred = self._deferred
        while deferred:
            self._admit_locked(deferred.popleft(), released)
        return released

    def _admit_locked(self, item: T, released: list[T]) -> None:
        # offer()'s admission steps (offer inlines them: it is the hot path). Refused or evicted items go to
        # ``released``, to be let go after the lock (their __del__ may trace).
        led = self._ledger
        led.created += 1
        if self._closed:
            led.dropped["shutdown"] += 1
            led.refused += 1
            released.append(item)
            return
        items = self._items
        if len(items) + led.parked >= self._capacity:
            led.dropped["queue_full"] += 1
            if not self._drop_oldest:
                led.refused += 1
                released.append(item)
                return
            if led.parked and self.evict_parked is not None and self.evict_parked():
                pass
            elif items:
                released.append(items.popleft())
                self._times.popleft()
            else:
                led.refused += 1
                released.append(item)
                return
        items.append(item)
        self._times.append(time.monotonic())

    def _take_locked(self, max_items: int) -> list[T]:
        items = self._items
        k = min(len(items), max_items)
        if k == len(items):
            batch = list(items)
            items.clear()
            self._times.clear()
        else:
            batch = [items.popleft() for _ in range(k)]
            for _ in range(k):
                self._times.popleft()
        self._ledger.in_flight += k
        return batch

    def _view(self) -> tuple[int, float | None]:
        # Called by SignalLedger.snapshot() with the lock already held.
        return len(self._items), (self._times[0] if self._times else None)

    def _schedule_wake(self, loop: asyncio.AbstractEventLoop) -> None:
        self.wakeups += 1
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:
            # The loop is closed (shutdown raced with this offer); the item stays queued and is accounted for
            # by the shutdown path.
            pass

    def _wake(self) -> None:
        # Runs on the SDK loop.
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
