"""The memory backlog: encoded payloads waiting to be sent, bounded by bytes and by age, never by retry count.

Oldest first. Bytes of payloads handed out (``take``) stay charged to the budget until they are settled (``done``)
or put back (``requeue``), so the memory held is bounded by ``max_bytes``, in flight included; a payload larger
than the whole budget is refused like any other that does not fit. ``offer`` returns False when a payload does not fit;
the caller then spills it to the disk spool (``Spool.append``) or, if that refuses too, counts it ``backlog_full``.
``spill`` moves the newest queued payloads to a sink (the spool) when the endpoint goes down, and ``drain`` empties
the backlog at exit (for ``Spool.persist_all``).

Not thread-safe: it lives on the SDK loop thread, like the sender that uses it. Pure: the clock is injected.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from judgeval_async._errors import ConfigError

from ._envelope import Envelope

__all__ = ["DEFAULT_BACKLOG_MAX_BYTES", "Backlog"]

DEFAULT_BACKLOG_MAX_BYTES = 64 << 20


class Backlog:
    """Byte- and age-bounded FIFO of envelopes.

    ``on_expired(envelope)`` is called for each envelope dropped for age (so the ledger can count it ``expired``
    by signal); expiry happens in ``take``, ``expire`` and ``offer`` (which makes room by expiring first).
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_BACKLOG_MAX_BYTES,
        max_item_age: float = 3600.0,
        clock: Callable[[], float] = time.time,
        on_expired: Callable[[Envelope], None] | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ConfigError("backlog_max_bytes", "must be > 0")
        if not max_item_age > 0:
            raise ConfigError("max_item_age", "must be > 0")
        self._max_bytes = max_bytes
        self._max_age = max_item_age
        self._clock = clock
        self._on_expired = on_expired
        self._queue: deque[Envelope] = deque()
        self._queued_bytes = 0
        self._queued_items = 0
        self._in_flight: dict[int, Envelope] = {}
        self._in_flight_bytes = 0
        self.expired_items = 0
        self.refused_items = 0  # offers that did not fit (the caller spilled or dropped them)
        self.spilled_items = 0

    # ------------------------------------------------------------------ sizes
    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def bytes(self) -> int:
        """Bytes charged to the budget: queued plus handed out and not yet settled."""
        return self._queued_bytes + self._in_flight_bytes

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def queued_items(self) -> int:
        return self._queued_items

    @property
    def in_flight_items(self) -> int:
        return sum(env.items for env in self._in_flight.values())

    def __len__(self) -> int:
        """Envelopes queued (not counting those handed out)."""
        return len(self._queue)

    def fits(self, size: int) -> bool:
        """Whether a payload of ``size`` bytes would be accepted now."""
        return self.bytes + size <= self._max_bytes

    def oldest_created(self) -> float | None:
        """``created`` of the next envelope ``take`` would return (for merging with the spool's replay)."""
        return self._queue[0].created if self._queue else None

    # ------------------------------------------------------------------ flow
    def offer(self, envelope: Envelope) -> bool:
        """Queue ``envelope`` at the back; False (counted ``refused_items``) when it does not fit the byte budget.

        The backlog never drops queued data to make room: the caller decides what a refused payload becomes
        (spilled to the spool, or dropped ``backlog_full``). Expired envelopes are dropped first.
        """
        if not self.fits(envelope.size):
            self.expire()
            if not self.fits(envelope.size):
                self.refused_items += envelope.items
                return False
        self._queue.append(envelope)
        self._queued_bytes += envelope.size
        self._queued_items += envelope.items
        return True

    def take(self) -> Envelope | None:
        """The oldest unexpired envelope, now handed out (its bytes stay charged until ``done`` or ``requeue``)."""
        self.expire()
        if not self._queue:
            return None
        env = self._queue.popleft()
        self._queued_bytes -= env.size
        self._queued_items -= env.items
        self._in_flight[id(env)] = env
        self._in_flight_bytes += env.size
        return env

    def done(self, envelope: Envelope) -> None:
        """A handed-out envelope is settled (delivered or dropped): release its bytes. Unknown ones are ignored."""
        if self._in_flight.pop(id(envelope), None) is not None:
            self._in_flight_bytes -= envelope.size

    def requeue(self, envelope: Envelope) -> None:
        """Put a handed-out envelope back at the front (its send failed for the endpoint's reasons, not its own).

        Cannot fail: its bytes were never released. An envelope that was not handed out is ignored.
        """
        if self._in_flight.pop(id(envelope), None) is None:
            return
        self._in_flight_bytes -= envelope.size
        self._queue.appendleft(envelope)
        self._queued_bytes += envelope.size
        self._queued_items += envelope.items

    def expire(self) -> int:
        """Drop queued envelopes older than ``max_item_age`` (from the front: the queue is oldest-first, and one
        requeued envelope can only make the front older); returns the items dropped."""
        cutoff = self._clock() - self._max_age
        dropped = 0
        while self._queue and self._queue[0].created < cutoff:
            env = self._queue.popleft()
            self._queued_bytes -= env.size
            self._queued_items -= env.items
            dropped += env.items
            self.expired_items += env.items
            if self._on_expired is not None:
                self._on_expired(env)
        return dropped

    def spill(self, sink: Callable[[Envelope], bool], *, keep_bytes: int = 0) -> int:
        """Move the newest queued envelopes to ``sink`` (``Spool.append``) until at most ``keep_bytes`` stay
        queued; stops at the first one the sink refuses (it stays queued). Returns the items moved.

        Newest first, because the oldest are the next to be sent and are cheaper to send from memory.
        """
        moved = 0
        while self._queue and self._queued_bytes > keep_bytes:
            env = self._queue[-1]
            if not sink(env):
                break
            self._queue.pop()
            self._queued_bytes -= env.size
            self._queued_items -= env.items
            moved += env.items
            self.spilled_items += env.items
        return moved

    def drain(self) -> list[Envelope]:
        """Remove and return every queued envelope, oldest first (for ``Spool.persist_all`` at exit). Handed-out
        ones are not included: the caller settles or requeues them first."""
        out = list(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        self._queued_items = 0
        return out
