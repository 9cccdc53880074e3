"""Retry policy: what to retry, how long to wait, when to give up. Pure: no I/O, no clock reads of its own.

Vocabulary follows stamina: ``attempts``, ``timeout`` (overall deadline, seconds), ``wait_initial``, ``wait_max``,
``wait_exp_base``, ``wait_jitter``. Backoff is exponential with *full* jitter (AWS architecture blog): the wait
before attempt ``n+1`` is uniform in ``[0, min(wait_max, wait_initial * wait_exp_base**n)]``, which spreads a fleet
of clients that all failed at the same moment.
"""

from __future__ import annotations

import datetime
import email.utils
import enum
import math
import random
from dataclasses import dataclass

__all__ = [
    "RETRYABLE_STATUSES",
    "Outcome",
    "RetryPolicy",
    "classify_status",
    "parse_retry_after",
]

# 408/429 and the transient 5xx family. Every other 4xx is the client's fault and resending cannot help.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class Outcome(enum.Enum):
    """What a response status means for the item that was sent."""

    DELIVERED = "delivered"
    RETRY = "retry"
    AUTH = "auth"  # 401/403: open the endpoint's circuit
    TOO_LARGE = "too_large"  # 413: split and resend
    REJECTED = "rejected"  # any other 4xx: never retried


def classify_status(status: int) -> Outcome:
    """Map an HTTP status to what the sender should do next."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in RETRYABLE_STATUSES:
        return Outcome.RETRY
    if status in (401, 403):
        return Outcome.AUTH
    if status == 413:
        return Outcome.TOO_LARGE
    if 500 <= status < 600:
        # 501, 505, ...: the server says it will never handle this request.
        return Outcome.REJECTED
    return Outcome.REJECTED


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None if absent/invalid.

    ``now`` is the current unix time; it is a parameter so the function stays pure and testable.
    Negative or past values give 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            return None
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; "-0000" and zone-less forms parse as naive, which Python would read as
        # local time.
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retry: at most ``attempts`` tries, all within ``timeout`` seconds of the first.

    ``testing=True`` keeps every decision but waits zero seconds, so tests of retry logic run instantly.
    """

    attempts: int = 5
    timeout: float = 30.0
    wait_initial: float = 0.5
    wait_max: float = 10.0
    wait_exp_base: float = 2.0
    wait_jitter: bool = True
    testing: bool = False

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Wait before retry number ``retry_number`` (1 = the first retry)."""
        if self.testing:
            return 0.0
        cap = self.backoff_cap(retry_number)
        if not self.wait_jitter:
            return cap
        return (rng or random).uniform(0.0, cap)

    def backoff_after_timeout(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Wait before retry ``retry_number`` when the previous attempt was sent but never answered.

        A read timeout means the backend may still be busy with (or have already recorded) that request: resending
        at once piles more work on a server that is already too slow. So the range is doubled (one exponential step
        further) and the draw comes from its upper half ("equal jitter"), never near zero.
        """
        if self.testing:
            return 0.0
        cap = self.backoff_cap(retry_number + 1)
        if not self.wait_jitter:
            return cap
        return (rng or random).uniform(cap / 2, cap)

    def backoff_cap(self, retry_number: int) -> float:
        """The upper bound of the jittered wait before retry ``retry_number``."""
        try:
            grown = self.wait_initial * self.wait_exp_base ** max(0, retry_number - 1)
        except OverflowError:  # a very late retry: the cap applies anyway
            grown = self.wait_max
        return min(self.wait_max, grown)

    def next_wait(
        self,
        *,
        attempt: int,
        elapsed: float,
        retry_after: float | None = None,
        rng: random.Random | None = None,
        after_timeout: bool = False,
    ) -> float | None:
        """Seconds to wait before the next try after ``attempt`` tries took ``elapsed`` seconds; None = give up.

        A server's ``Retry-After`` replaces the computed backoff (it knows better than we do), but is clamped so
        the next try still starts before the deadline; if even that is impossible, give up now rather than sleep
        into a certain failure. ``after_timeout``: the last attempt was sent and never answered, so back off
        harder (see :meth:`backoff_after_timeout`).
        """
        if attempt >= self.attempts:
            return None
        remaining = self.timeout - elapsed
        if remaining <= 0:
            return None
        if retry_after is not None:
            wait = retry_after
        elif after_timeout:
            wait = self.backoff_after_timeout(attempt, rng)
        else:
            wait = self.backoff(attempt, rng)
        if self.testing and retry_after is None:
            wait = 0.0
        if wait >= remaining:
            return None
        return wait
