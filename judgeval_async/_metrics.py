"""The loss ledger and the SDK's own counters. No I/O and no third-party imports: Prometheus lives in ``_prometheus``.

Every item of every signal (spans, evaluations, tags) is, at any moment, in exactly one bucket::

    created == delivered + sum(dropped.values()) + queued + in_flight + spooled

``queued`` means "in the bounded handoff, waiting for the loop"; ``in_flight`` means "taken by the loop and not
settled yet" (being batched, encoded, held in the memory backlog, sent or retried); ``spooled`` means "on disk in
the durable spool, not settled yet". Items taken over from an earlier (or dead) process's spool are *replayed*:
they enter this ledger at adoption as ``created`` and ``spooled`` (``replayed`` counts them, a part of ``created``),
then settle like any other item, so the equation holds in every process and, summed, across restarts.
All transitions of one signal happen under that signal's
lock, which the handoff shares: producers pay for one uncontended lock they already hold for the queue, and a
snapshot taken from any thread is consistent.

Re-entrancy: a signal handler, a ``__del__`` or weakref callback run by the garbage collector can call a traced
function *on a thread that is already inside one of these locked regions*, at any bytecode. A plain lock would
deadlock there for ever. So every lock here is re-entrant, and every region that updates state under it sets a
``busy`` flag: a call that finds the lock already held by its own thread *and* ``busy`` set knows that a frame below
it is mid-update, touches nothing that frame may be touching, and degrades: an offered item is set aside and admitted
by the next update or read (dropped as ``reentrant`` only if that side deque is full, on a counter only that path
increments, merged when read). Other threads never see ``busy`` set: they wait for the lock.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

# Called with the ledger lock held: (queued count, monotonic enqueue time of the oldest item or None).
QueueView = Callable[[], tuple[int, "float | None"]]

__all__ = [
    "DROP_REASONS",
    "Histogram",
    "LedgerSnapshot",
    "Metrics",
    "QueueView",
    "SignalLedger",
    "count_value",
    "new_lock",
]

# The fixed set of reasons an item can be dropped for. docs/reliability.md explains each one.
DROP_REASONS: tuple[str, ...] = (
    "queue_full",  # the bounded handoff was full (per-queue overflow policy chose this item)
    "buffer_full",  # the tag buffer reached its trace or per-trace tag limit
    "retries_exhausted",  # retryable failures until attempts or the deadline ran out
    "unacknowledged",  # the last attempt was fully sent but never answered (read timeout): maybe delivered
    "non_retryable_status",  # the backend refused the item with a 4xx other than 401/403/408/413/429
    "auth_error",  # 401/403, or dropped while that endpoint's auth circuit was open
    "payload_too_large",  # a single item still too large after splitting on 413
    "serialization_error",  # the item could not be encoded
    "shutdown_deadline",  # still queued or in flight when shutdown's deadline expired
    "shutdown",  # offered after shutdown began
    "fork_discard",  # inherited from the parent process across os.fork()
    "reentrant",  # offered re-entrantly (signal handler, GC callback) mid-update, with the set-aside deque full
    "expired",  # held (memory backlog or spool) longer than max_item_age
    "backlog_full",  # the memory backlog was over backlog_max_bytes and the spool could not take the payload
    "spool_corrupt",  # a damaged spool record (its items, when its header was readable)
)


def new_lock() -> threading.Lock:
    """A re-entrant lock for state that a signal handler or GC callback may re-enter (see the module docstring).

    Typed as ``threading.Lock`` because its other users (the fork hooks) only acquire and release it.
    """
    return cast("threading.Lock", threading.RLock())


def count_value(counter: itertools.count[int]) -> int:
    """The next value ``counter`` would return, without advancing it (``count(7)`` -> 7)."""
    return int(repr(counter)[6:-1])


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    """A consistent copy of one signal's ledger."""

    created: int
    delivered: int
    dropped: dict[str, int]
    queued: int
    in_flight: int
    capacity: int
    oldest_queued_age: float
    spooled: int = 0
    replayed: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def balanced(self) -> bool:
        """True when every created item is accounted for exactly once."""
        return self.created == self.delivered + self.dropped_total + self.queued + self.in_flight + self.spooled


class _Region:
    """``SignalLedger.updating()``: a slotted class, not a ``contextlib`` generator, because the loop enters several
    per look at a queue (take, park, cut, settle) and the generator form cost ~3x as much (docs/performance.md)."""

    __slots__ = ("_busy", "_ledger", "_lock")

    def __init__(self, ledger: SignalLedger) -> None:
        self._ledger = ledger

    def __enter__(self) -> bool:
        led = self._ledger
        self._lock = lock = led.lock  # the lock entered is the one released (a fork child replaces led.lock)
        lock.acquire()
        try:
            self._busy = busy = led.busy
            led.busy = True
        except BaseException:
            # A KeyboardInterrupt landing here (Ctrl-C during force_flush on the main thread) must not leave the lock
            # held: the generator form was covered by its own `with lock`, and a with-statement whose __enter__ raised
            # never calls __exit__.
            lock.release()
            raise
        return not busy

    def __exit__(self, *exc: object) -> None:
        try:
            self._ledger.busy = self._busy
        finally:
            self._lock.release()


class SignalLedger:
    """Exact accounting for one signal. Mutate only while holding ``lock``; the handoff holds it for you."""

    __slots__ = (
        "abandoned",
        "busy",
        "capacity",
        "created",
        "delivered",
        "dropped",
        "in_flight",
        "lock",
        "merge",
        "name",
        "oldest",
        "parked",
        "reentrant",
        "refused",
        "replayed",
        "spooled",
    )

    def __init__(self, name: str, capacity: int = 0) -> None:
        self.name = name
        self.capacity = capacity
        self.lock = new_lock()
        self.busy = False  # True while a holder of ``lock`` is mid-update (see the module docstring)
        # Items refused because they re-entered a busy region: advanced only by that path (``next`` is one C call, so
        # it cannot be interrupted half-way the way ``created += 1`` can), and merged into created/dropped when read.
        self.reentrant = itertools.count()
        self.created = 0
        self.delivered = 0
        self.in_flight = 0
        self.abandoned = False  # set at the shutdown deadline: in-flight items were counted, later settles ignored
        self.refused = 0  # created and dropped in the same offer (queue full under drop_newest, or closed)
        # Taken off the handoff by the loop but waiting again (spans encoded to bytes, waiting for a send slot):
        # reported as queued, because that is what they are from the user's point of view.
        self.parked = 0
        self.spooled = 0  # on disk in the spool (see the module docstring)
        self.replayed = 0  # adopted from an earlier process's spool; part of created
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        # Set by the handoff: a callable giving (queued count, monotonic time of the oldest queued item or None).
        self.oldest: QueueView | None = None
        # Set by the handoff: admits items set aside by re-entrant offers (lock held); returns objects to release
        # after the lock. Every read calls it first, so what was offered is in the counts it reports.
        self.merge: Callable[[], list[Any]] | None = None

    def updating(self) -> _Region:
        """Hold ``lock`` with ``busy`` set, for a region that changes (or reads several of) the counters; enters as
        True unless this region itself re-entered a busy one (then it must only read, or touch what is its own).

        A producer re-entering on this thread meanwhile is set aside instead of interleaving its update with ours.
        Restores ``busy`` on exit, so a (rare) nested use keeps the outer region protected.
        """
        return _Region(self)

    # --- transitions of items the loop holds (call from the loop; they take the lock)
    def settle_delivered(self, n: int) -> None:
        if n:
            with self.updating():
                if not self.abandoned:
                    self.in_flight -= n
                    self.delivered += n

    def settle_dropped(self, reason: str, n: int) -> None:
        if n:
            with self.updating():
                if not self.abandoned:
                    self.in_flight -= n
                    self.dropped[reason] += n

    def spill(self, n: int) -> None:
        """``n`` in-flight items were written to the spool."""
        if n:
            with self.lock:
                if not self.abandoned:
                    self.in_flight -= n
                    self.spooled += n

    def unspill(self, n: int) -> None:
        """``n`` spooled items were read back for a send (in flight again)."""
        if n:
            with self.lock:
                if not self.abandoned:
                    self.spooled -= n
                    self.in_flight += n

    def settle_spooled_dropped(self, reason: str, n: int) -> None:
        """``n`` spooled items will never be sent (expired or corrupt on disk)."""
        if n:
            with self.lock:
                if not self.abandoned:
                    self.spooled -= n
                    self.dropped[reason] += n

    def adopt_replayed(self, n: int) -> None:
        """``n`` items found in an earlier process's spool join this ledger: created, replayed, spooled."""
        if n:
            with self.lock:
                self.created += n
                self.replayed += n
                self.spooled += n

    def abandon_in_flight(self, reason: str) -> int:
        """Count every in-flight (and parked) item as dropped for ``reason`` and ignore later settles of them (a send
        that was cut off at shutdown may still finish on the loop; it must not be counted twice). Any thread."""
        with self.updating():
            n = self.in_flight + self.parked
            self.in_flight = 0
            self.parked = 0
            self.dropped[reason] += n
            self.abandoned = True
            return n

    def drop_untracked(self, reason: str, n: int = 1) -> None:
        """Count an item that was refused before it entered the ledger (created and dropped at once)."""
        with self.updating():
            self.created += n
            self.dropped[reason] += n
            self.refused += n

    def accepted_and_settled(self) -> tuple[int, int]:
        """(items that entered the queue, how many of those are settled). ``flush`` compares the two; items
        refused at the door are left out of both, so a refusal after a flush began cannot end it early (``reentrant``
        refusals are not in either count until a snapshot merges them)."""
        released = None
        with self.updating() as fresh:
            if fresh and self.merge is not None:
                released = self.merge()
            settled = self.delivered + sum(self.dropped.values()) - self.refused
            accepted = self.created - self.refused
        del released  # after the lock: a refused item's __del__ may trace
        return accepted, settled

    def snapshot(self) -> LedgerSnapshot:
        released = None
        with self.updating() as fresh:
            if fresh and self.merge is not None:
                released = self.merge()
            queued, oldest = self.oldest() if self.oldest is not None else (0, None)
            queued += self.parked
            reentrant = count_value(self.reentrant)
            dropped = {k: v for k, v in self.dropped.items() if v}
            if reentrant:
                dropped["reentrant"] = dropped.get("reentrant", 0) + reentrant
            snap = LedgerSnapshot(
                created=self.created + reentrant,
                delivered=self.delivered,
                dropped=dropped,
                queued=queued,
                in_flight=self.in_flight,
                capacity=self.capacity,
                oldest_queued_age=0.0 if oldest is None else max(0.0, time.monotonic() - oldest),
                spooled=self.spooled,
                replayed=self.replayed,
            )
        del released  # after the lock: a refused item's __del__ may trace
        return snap


# Latency buckets from 10 µs to 60 s: wide enough for both observe overhead and export durations.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Histogram:
    """A cumulative-bucket histogram that Prometheus reads at scrape time, plus a recent-sample window for
    percentiles in ``get_health_metrics()``.

    ``observe`` is on the caller's path: a value observed while this thread is already mid-update (re-entrance, see
    the module docstring) is set aside on a deque (one atomic append) and folded in by the next update or read.
    """

    __slots__ = ("_busy", "_late", "_lock", "bounds", "count", "counts", "recent", "sum")

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BUCKETS, window: int = 2048) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot is +Inf
        self.sum = 0.0
        self.count = 0
        self.recent: deque[float] = deque(maxlen=window)
        self._lock = new_lock()
        self._busy = False
        self._late: deque[float] = deque()

    def after_fork_in_child(self) -> None:
        """A lock copied from the parent may be held by a thread that does not exist here: replace it."""
        self._lock = new_lock()
        self._busy = False

    def observe(self, value: float) -> None:
        with self._lock:
            if self._busy:
                self._late.append(value)
                return
            try:
                self._busy = True
                self._add(value)
                while self._late:
                    self._add(self._late.popleft())
            finally:
                self._busy = False

    def _add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1
        self.recent.append(value)

    def cumulative(self) -> tuple[list[tuple[str, int]], float, int]:
        """Prometheus-style buckets (le label, cumulative count), sum, count."""
        with self._lock:
            busy, self._busy = self._busy, True
            try:
                while self._late and not busy:
                    self._add(self._late.popleft())
                counts, total, n = list(self.counts), self.sum, self.count
            finally:
                self._busy = busy
        out: list[tuple[str, int]] = []
        running = 0
        for bound, c in zip((*self.bounds, float("inf")), counts, strict=True):
            running += c
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out, total, n

    def quantile(self, q: float) -> float:
        """Quantile of the recent window (0.0 when empty)."""
        data = sorted(self.recent)
        if not data:
            return 0.0
        return data[min(len(data) - 1, int(q * len(data)))]


class _LabelledCounter:
    """A counter keyed by a label tuple, safe to bump from any thread (these events are rare: a lock is fine).

    An ``inc`` that re-enters this thread's own update (see the module docstring) is set aside on a deque (one atomic
    append) and folded in by the next update or read, so no count is lost.
    """

    __slots__ = ("_busy", "_late", "_lock", "values")

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], int] = {}
        self._lock = new_lock()
        self._busy = False
        self._late: deque[tuple[tuple[str, ...], int]] = deque()

    def after_fork_in_child(self) -> None:
        """A lock copied from the parent may be held by a thread that does not exist here: replace it."""
        self._lock = new_lock()
        self._busy = False

    def inc(self, *labels: str, n: int = 1) -> None:
        with self._lock:
            if self._busy:
                self._late.append((labels, n))
                return
            try:
                self._busy = True
                self.values[labels] = self.values.get(labels, 0) + n
                self._fold()
            finally:
                self._busy = False

    def _fold(self) -> None:
        late = self._late
        while late:
            labels, n = late.popleft()
            self.values[labels] = self.values.get(labels, 0) + n

    def _read(self) -> dict[tuple[str, ...], int]:
        with self._lock:
            busy, self._busy = self._busy, True
            try:
                if not busy:
                    self._fold()
                return dict(self.values)
            finally:
                self._busy = busy

    def items(self) -> list[tuple[tuple[str, ...], int]]:
        return list(self._read().items())

    def total(self) -> int:
        return sum(self._read().values())


@dataclass
class EndpointState:
    """What the transport reports per endpoint: in-flight requests, 429 pause, auth circuit."""

    in_flight: int = 0
    paused_until: float = 0.0  # monotonic
    circuit_open: bool = False
    bytes_sent: int = 0  # request bodies as sent on the wire (after gzip), retries included
    last_error: str = ""  # "HTTP 503", "ConnectError", "ReadTimeout", ...: never a message (it may hold a URL)
    last_error_unix: float = 0.0
    state: str = "up"  # the delivery pipeline's view: "up", "down" or "probing" (_delivery._endpoint)
    concurrency: int = 0  # the current AIMD limit (0 until the pipeline sends to this endpoint)


@dataclass
class Metrics:
    """Everything ``get_health_metrics()`` and the Prometheus collector read. One per Tracer."""

    spans: SignalLedger = field(default_factory=lambda: SignalLedger("spans"))
    evaluations: SignalLedger = field(default_factory=lambda: SignalLedger("evaluations"))
    tags: SignalLedger = field(default_factory=lambda: SignalLedger("tags"))
    api_errors: _LabelledCounter = field(default_factory=_LabelledCounter)  # (endpoint, status_code)
    retries: _LabelledCounter = field(default_factory=_LabelledCounter)  # (endpoint,)
    metadata_evictions: _LabelledCounter = field(default_factory=_LabelledCounter)  # (reason,)
    values_degraded: _LabelledCounter = field(default_factory=_LabelledCounter)  # (reason,)
    calls_ignored: _LabelledCounter = field(default_factory=_LabelledCounter)  # (call, reason)
    export_duration: Histogram = field(default_factory=Histogram)
    observe_overhead: Histogram = field(default_factory=Histogram)
    api_request_duration: dict[str, Histogram] = field(default_factory=dict)
    endpoints: dict[str, EndpointState] = field(default_factory=dict)
    # The delivery pipeline's memory backlog and spool, per signal (written on the loop, read anywhere).
    backlog_bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("spans", "evaluations", "tags"), 0))
    spool_bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("spans", "evaluations", "tags"), 0))
    backlog_max_bytes: int = 0
    spool_max_bytes: int = 0
    spool_available: bool = False
    span_batch_bytes_limit: int = 0  # the byte bound span batches are cut at now (a 413 lowers it)
    last_export_unix: float = 0.0
    loop_lag: float = 0.0
    loop_lag_max: float = 0.0
    started_monotonic: float = field(default_factory=time.monotonic)

    def after_fork_in_child(self) -> None:
        """Give every counter and histogram a fresh lock: the fork may have copied one held mid-update (the worst
        that leaves is one half-recorded sample). The ledgers' locks belong to their handoffs, which reset them."""
        for counter in (self.api_errors, self.retries, self.metadata_evictions, self.values_degraded):
            counter.after_fork_in_child()
        self.calls_ignored.after_fork_in_child()
        for histogram in (self.export_duration, self.observe_overhead, *self.api_request_duration.values()):
            histogram.after_fork_in_child()

    def endpoint(self, name: str) -> EndpointState:
        state = self.endpoints.get(name)
        if state is None:
            state = self.endpoints.setdefault(name, EndpointState())
        return state

    def request_duration(self, endpoint: str) -> Histogram:
        h = self.api_request_duration.get(endpoint)
        if h is None:
            h = self.api_request_duration.setdefault(endpoint, Histogram())
        return h
