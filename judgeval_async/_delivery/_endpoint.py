"""Endpoint health: stop sending to an endpoint that fails everything, probe it, resume on success; tell a poison
payload (fails while others succeed) from an outage (everything fails). Pure: no I/O; clock and random injected.

States::

    UP  --failure_threshold consecutive failures-->  DOWN  --probe due-->  PROBING  --probe succeeds--> UP
     ^                                                 ^                      |
     +------------- any success ----------------------+---- probe fails -----+  (next probe: full-jitter backoff)

A *failure* is what says the endpoint is unwell: connection error, timeout, 5xx, 408, 429 (``SendResult.FAILED``).
A non-retryable answer about one payload (400, 413, ...) is ``REJECTED``: the endpoint answered, so it counts as
reachable. Payload attempts are spent only on *strikes*: a failure of a payload after some other request succeeded
since that payload's previous attempt. An outage therefore never uses up a payload's attempts (the OpenTelemetry
Collector's ``max_elapsed_time`` drops the oldest data during long outages; this does not), and a payload that
fails ``max_payload_strikes`` times while others get through is ``POISON``: the caller drops it with that reason.

While DOWN exactly one probe is admitted at a time. The caller should probe with the oldest payload other than the
one that failed the previous probe (a poison payload must not be the only thing ever tried). Retry-After (429/503)
pauses admission for ``min(retry_after, max_retry_after)`` seconds. Concurrency while UP is an ``AimdLimiter``,
reset to its initial limit on recovery so a backlog drains without a thundering herd.

Not thread-safe: it lives on the SDK loop thread with the sender.
"""

from __future__ import annotations

import enum
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from judgeval_async._errors import ConfigError
from judgeval_async._retry import RetryPolicy

from ._aimd import AimdLimiter, Ticket

__all__ = ["EndpointHealth", "EndpointSnapshot", "EndpointState", "Permit", "SendResult", "Verdict"]

_MAX_TRACKED = 100_000  # payloads with a failure on record; beyond this the oldest record is forgotten


class EndpointState(enum.Enum):
    UP = "up"
    DOWN = "down"
    PROBING = "probing"


class SendResult(enum.Enum):
    """What one request's outcome says (the caller maps statuses and exceptions to it)."""

    SUCCESS = "success"  # 2xx
    FAILED = "failed"  # connection error, timeout, 5xx, 408, 429: the endpoint is unwell
    REJECTED = "rejected"  # a final answer about this payload (4xx): the endpoint is fine, the payload is not


class Verdict(enum.Enum):
    """What the caller does with the payload after ``on_result``."""

    DELIVERED = "delivered"  # settle as delivered
    REJECTED = "rejected"  # drop with the caller's reason for that status
    RETRY = "retry"  # keep it (requeue at the front); send again when admitted
    POISON = "poison"  # drop: it failed max_payload_strikes times while other requests succeeded


@dataclass(frozen=True, slots=True)
class Permit:
    """Permission to send one request now. ``probe``: it is the single request that tests a down endpoint."""

    ticket: Ticket
    probe: bool
    started: float
    successes_at_start: int


@dataclass(frozen=True, slots=True)
class EndpointSnapshot:
    state: EndpointState
    limit: int
    in_flight: int
    consecutive_failures: int
    probe_failures: int
    seconds_until_probe: float | None
    paused_for_seconds: float
    down_events: int
    poisoned: int
    successes: int
    failures: int


class EndpointHealth:
    """Health state machine + AIMD concurrency for one endpoint (see the module docstring)."""

    def __init__(
        self,
        *,
        max_concurrent: int = 8,
        initial_concurrency: int = 1,
        failure_threshold: int = 3,
        max_payload_strikes: int = 5,
        probe_wait_initial: float = 1.0,
        probe_wait_max: float = 30.0,
        probe_wait_exp_base: float = 2.0,
        probe_timeout: float = 60.0,
        max_retry_after: float = 60.0,
        decrease_factor: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigError("failure_threshold", "must be >= 1")
        if max_payload_strikes < 1:
            raise ConfigError("max_payload_strikes", "must be >= 1")
        if not 0 < probe_wait_initial <= probe_wait_max:
            raise ConfigError("probe_wait_initial", "must be > 0 and <= probe_wait_max")
        if not probe_wait_exp_base >= 1:
            raise ConfigError("probe_wait_exp_base", "must be >= 1")
        if not probe_timeout > 0:
            raise ConfigError("probe_timeout", "must be > 0")
        if not max_retry_after >= 0:
            raise ConfigError("max_retry_after", "must be >= 0")
        self.aimd = AimdLimiter(
            max_limit=max_concurrent, initial_limit=initial_concurrency, decrease_factor=decrease_factor
        )
        self._threshold = failure_threshold
        self._max_strikes = max_payload_strikes
        self._backoff = RetryPolicy(
            wait_initial=probe_wait_initial, wait_max=probe_wait_max, wait_exp_base=probe_wait_exp_base
        )
        self._probe_timeout = probe_timeout
        self._max_retry_after = max_retry_after
        self._clock = clock
        self._rng = rng or random.Random()
        self._state = EndpointState.UP
        self._consecutive = 0
        self._probe_failures = 0
        self._next_probe_at = 0.0
        self._probe_started: float | None = None
        self._paused_until = 0.0
        self._successes = 0
        self._failures = 0
        self._down_events = 0
        self._poisoned = 0
        # idempotency key -> (strikes, successes count at its last attempt's failure)
        self._strikes: OrderedDict[str, tuple[int, int]] = OrderedDict()

    @property
    def state(self) -> EndpointState:
        return self._state

    @property
    def unwell(self) -> bool:
        """Not known healthy: down, probing, or a request failed since the last success (before the threshold)."""
        return self._state is not EndpointState.UP or self._consecutive > 0

    def admit(self) -> Permit | None:
        """A permit to send one request now, or None (see ``wait_time`` for how long to wait)."""
        now = self._clock()
        if now < self._paused_until:
            return None
        if self._state is EndpointState.UP:
            ticket = self.aimd.try_acquire()
            if ticket is None:
                return None
            return Permit(ticket, probe=False, started=now, successes_at_start=self._successes)
        if self._state is EndpointState.PROBING:
            if self._probe_started is not None and now - self._probe_started < self._probe_timeout:
                return None
            # The probe has hung past its timeout: its answer, if it ever comes, is still handled; try another.
        elif now < self._next_probe_at:
            return None
        self._state = EndpointState.PROBING
        self._probe_started = now
        # A probe bypasses the AIMD limit (requests still in flight from before the outage may hold it).
        ticket = Ticket(seq=-1)
        return Permit(ticket, probe=True, started=now, successes_at_start=self._successes)

    def wait_time(self) -> float | None:
        """Seconds until ``admit`` can succeed, or None when it waits for a request in flight to finish."""
        now = self._clock()
        paused = max(0.0, self._paused_until - now)
        if self._state is EndpointState.UP:
            if paused > 0:
                return paused
            return 0.0 if self.aimd.in_flight < self.aimd.limit else None
        if self._state is EndpointState.PROBING:
            if self._probe_started is None:
                return 0.0
            return max(paused, self._probe_started + self._probe_timeout - now)
        return max(paused, self._next_probe_at - now)

    def on_result(
        self,
        permit: Permit,
        result: SendResult,
        *,
        payload_key: str,
        retry_after: float | None = None,
    ) -> Verdict:
        """Record one request's outcome; returns what to do with its payload (keyed by its Idempotency-Key)."""
        now = self._clock()
        if permit.probe:
            self._probe_started = None
        if result is SendResult.SUCCESS:
            self._successes += 1
            self._strikes.pop(payload_key, None)
            self._release(permit, success=True)
            self._mark_up()
            return Verdict.DELIVERED
        if result is SendResult.REJECTED:
            self._strikes.pop(payload_key, None)
            self._release(permit, success=None)
            self._consecutive = 0  # it answered: reachable
            if self._state is not EndpointState.UP:
                self._mark_up()
            return Verdict.REJECTED
        # FAILED
        self._failures += 1
        self._release(permit, success=False)
        if retry_after is not None:
            self._paused_until = max(self._paused_until, now + min(max(0.0, retry_after), self._max_retry_after))
        verdict = self._strike(payload_key, permit)
        self._consecutive += 1
        if permit.probe:
            self._probe_failed(now, retry_after)
        elif self._state is EndpointState.UP and self._consecutive >= self._threshold:
            self._mark_down(now, retry_after)
        return verdict

    def cancel(self, permit: Permit) -> None:
        """A permit that sent nothing, or whose request was cut off (shutdown): release it without a verdict. A
        cancelled probe leaves the endpoint DOWN with its next probe due at once."""
        if permit.probe:
            if self._state is EndpointState.PROBING:
                self._state = EndpointState.DOWN
                self._next_probe_at = self._clock()
            self._probe_started = None
            return
        self.aimd.on_neutral(permit.ticket)

    def forget(self, payload_key: str) -> None:
        """Drop the failure record of a payload that left by another way (expired, spilled and replayed later)."""
        self._strikes.pop(payload_key, None)

    def snapshot(self) -> EndpointSnapshot:
        now = self._clock()
        until_probe = None
        if self._state is EndpointState.DOWN:
            until_probe = max(0.0, self._next_probe_at - now)
        return EndpointSnapshot(
            state=self._state,
            limit=self.aimd.limit,
            in_flight=self.aimd.in_flight,
            consecutive_failures=self._consecutive,
            probe_failures=self._probe_failures,
            seconds_until_probe=until_probe,
            paused_for_seconds=max(0.0, self._paused_until - now),
            down_events=self._down_events,
            poisoned=self._poisoned,
            successes=self._successes,
            failures=self._failures,
        )

    # ------------------------------------------------------------------ internals
    def _release(self, permit: Permit, *, success: bool | None) -> None:
        if permit.probe:
            return  # probes never held an AIMD slot
        if success is None:
            self.aimd.on_neutral(permit.ticket)
        elif success:
            self.aimd.on_success(permit.ticket)
        else:
            self.aimd.on_failure(permit.ticket)

    def _strike(self, key: str, permit: Permit) -> Verdict:
        """A strike when another request succeeded since this payload's previous attempt (its first: since it was
        sent). Only strikes spend attempts."""
        strikes, mark = self._strikes.pop(key, (0, permit.successes_at_start))
        if self._successes > mark:
            strikes += 1
        if strikes >= self._max_strikes:
            self._poisoned += 1
            return Verdict.POISON
        self._strikes[key] = (strikes, self._successes)
        if len(self._strikes) > _MAX_TRACKED:
            self._strikes.popitem(last=False)
        return Verdict.RETRY

    def _mark_up(self) -> None:
        if self._state is not EndpointState.UP:
            self.aimd.reset()
        self._state = EndpointState.UP
        self._consecutive = 0
        self._probe_failures = 0
        self._probe_started = None

    def _mark_down(self, now: float, retry_after: float | None) -> None:
        self._state = EndpointState.DOWN
        self._down_events += 1
        self._probe_failures = 0
        self._schedule_probe(now, retry_after)

    def _probe_failed(self, now: float, retry_after: float | None) -> None:
        self._probe_failures += 1
        self._state = EndpointState.DOWN
        self._schedule_probe(now, retry_after)

    def _schedule_probe(self, now: float, retry_after: float | None) -> None:
        wait = self._backoff.backoff(self._probe_failures + 1, self._rng)
        if retry_after is not None:
            wait = max(wait, min(max(0.0, retry_after), self._max_retry_after))
        self._next_probe_at = now + wait
