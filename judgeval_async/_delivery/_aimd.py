"""Adaptive concurrency (AIMD) for one endpoint: how many requests may be in flight right now.

The limit moves between 1 and ``max_limit``: +``increase`` after each window of ``limit`` successes in which at
least half the limit was in flight at once (Netflix's AIMDLimit rule: an idle sender does not grow a limit it never
tested), and times ``decrease_factor`` on a failure or a 429. A burst of failures from
requests that were all in flight together decreases it once, not once per failure: a failure decreases the limit
only if its request started after the previous decrease (TCP's once-per-window rule). Clock-free: windows are
counted in requests.

Not thread-safe: it lives on the SDK loop thread with the sender.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from judgeval_async._errors import ConfigError

__all__ = ["AimdLimiter", "Ticket"]


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted request; ``seq`` orders requests (probes that bypass the limiter use -1)."""

    seq: int


class AimdLimiter:
    """Additive-increase / multiplicative-decrease concurrency limit."""

    def __init__(
        self,
        *,
        max_limit: int,
        initial_limit: int = 1,
        increase: float = 1.0,
        decrease_factor: float = 0.5,
    ) -> None:
        if max_limit < 1:
            raise ConfigError("max_concurrent_exports", "must be >= 1")
        if not 1 <= initial_limit <= max_limit:
            raise ConfigError("initial_limit", f"must be between 1 and {max_limit}")
        if not increase > 0:
            raise ConfigError("increase", "must be > 0")
        if not 0 < decrease_factor < 1:
            raise ConfigError("decrease_factor", "must be between 0 and 1 (exclusive)")
        self._max = float(max_limit)
        self._initial = float(initial_limit)
        self._increase = increase
        self._factor = decrease_factor
        self._limit = float(initial_limit)
        self._in_flight = 0
        self._seq = 0
        self._decreased_at_seq = 0  # requests numbered up to this were in flight at the last decrease
        self._credit = 0  # successes in the current window
        self._peak = 0  # most requests in flight at once in the current window
        self.decreases = 0

    @property
    def limit(self) -> int:
        """Requests allowed in flight at once now."""
        return max(1, math.floor(self._limit))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_acquire(self) -> Ticket | None:
        """A ticket for one more request, or None when ``limit`` are already in flight."""
        if self._in_flight >= self.limit:
            return None
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)
        self._seq += 1
        return Ticket(seq=self._seq)

    def on_success(self, ticket: Ticket) -> None:
        """The request succeeded: release it; a window of ``limit`` successes that used the limit grows it."""
        del ticket
        self._release()
        self._credit += 1
        if self._credit >= self.limit:
            if 2 * self._peak >= self.limit:
                self._limit = min(self._max, self._limit + self._increase)
            self._credit = 0
            self._peak = self._in_flight

    def on_failure(self, ticket: Ticket) -> None:
        """The request failed in a way that says the endpoint is overloaded or unwell (timeout, 5xx, 429)."""
        self._release()
        if ticket.seq > self._decreased_at_seq:
            self._limit = max(1.0, self._limit * self._factor)
            self._decreased_at_seq = self._seq
            self._credit = 0
            self._peak = self._in_flight
            self.decreases += 1

    def on_neutral(self, ticket: Ticket) -> None:
        """Release without a verdict on the endpoint (a payload-specific rejection, a cancelled request)."""
        del ticket
        self._release()

    def reset(self) -> None:
        """Back to the initial limit (after the endpoint was down: recovery starts small and ramps up)."""
        self._limit = self._initial
        self._decreased_at_seq = self._seq
        self._credit = 0
        self._peak = self._in_flight

    def _release(self) -> None:
        self._in_flight = max(0, self._in_flight - 1)
