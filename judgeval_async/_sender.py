"""The sending half of the delivery pipeline, shared by spans, evaluation runs and tag batches.

handoff -> batcher (``_spans`` / ``_evals`` / ``_tags``: encode a batch to an ``Envelope``) -> ``Lane.submit`` ->
memory ``Backlog`` (bytes and age bounded) or disk ``Spool`` -> ``Lane`` sends with ``EndpointHealth`` admission ->
``Exporter.send`` (the per-signal seam: one request for one envelope) -> one settle path, here.

- Endpoint health, not attempt counting: a failure (connection error, timeout, 5xx, 408, 429) keeps the payload;
  an endpoint that fails everything is *down* (one probe at a time, backoff with jitter), and its backlog waits
  (and spills to the spool). A payload that fails while others succeed is *poison*: ``retry_attempts`` strikes,
  then dropped with its last failure's reason. On recovery the backlog drains oldest first under AIMD concurrency
  (1 .. ``max_concurrent_exports``).
- The spool (``spool=True``): payloads spill to disk as they arrive while the endpoint is unwell (from its first
  failed request on, or a failure on another lane to the same host: ``Lane.unwell``) or the backlog holds more than
  half its budget, and the batchers cut partial batches every ``UNWELL_CUT`` s then (a kill -9 loses ~0.2 s); one
  ``spool_max_bytes`` budget is shared by a tracer's signals; at shutdown whatever is left in memory is persisted;
  at start (and every ``_ADOPT_EVERY`` seconds) the spools of dead processes for the same API URL + project +
  signal are adopted and replayed.
  Spill I/O runs on the loop thread: an append is one ``writev`` into the page cache (tens of microseconds, see
  ``benchmarks/spool.py``), an fsync at most once a second.
- The ledger moves only through ``SignalLedger`` methods: in flight while in memory, ``spooled`` while on disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import urllib.parse
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ._config import Config
from ._delivery._backlog import Backlog
from ._delivery._endpoint import EndpointHealth, EndpointState, Permit, Verdict
from ._delivery._endpoint import SendResult as Health
from ._delivery._envelope import Envelope
from ._delivery._spool import Spool, SpoolBudget, SpoolRecord, default_spool_dir, spool_key
from ._metrics import Metrics, SignalLedger
from ._serialize import RateLimitedLog
from ._transport import SendResult, SendStatus

__all__ = ["UNWELL_CUT", "Exporter", "Lane"]

logger = logging.getLogger(__name__)

_ADOPT_EVERY = 30.0  # seconds between looks for spools of processes that died since
_HOUSEKEEP_EVERY = 1.0  # seconds between expiry / spool-counter checks
_PROBE_CHECK = 0.25  # longest sleep while waiting for admission (a probe that is due is found this soon)
# While the endpoint is unwell (``Lane.unwell``) the batchers cut partial batches this often and the lane spills
# each payload as it arrives: what a kill -9 can lose is the last ~UNWELL_CUT s (+ the handoff's take interval).
UNWELL_CUT = 0.1

# Live lanes by host (scheme-less netloc of the URL they send to): see ``Lane.unwell``. ``_LANES_ADDED`` counts
# additions, so a lane rebuilds its snapshot of its host's lanes only when one was added (iterating a WeakSet
# takes an iteration guard and a weak reference per item: ~3 µs, and ``unwell`` is asked many times a second).
_LANES: dict[str, weakref.WeakSet[Lane]] = {}
_LANES_ADDED = [0]  # one counter, mutated in place

# One spool budget per spool root and size: a tracer's three signals (and any other tracer of this process on the
# same root) share ``spool_max_bytes``. Kept while a spool uses it.
_BUDGETS: weakref.WeakValueDictionary[tuple[str, int], SpoolBudget] = weakref.WeakValueDictionary()


def _budget(root: Path, max_bytes: int) -> SpoolBudget:
    key = (os.fspath(root), max_bytes)
    budget = _BUDGETS.get(key)
    if budget is None:
        budget = _BUDGETS[key] = SpoolBudget(max_bytes)
    return budget


_HEALTH = {
    SendStatus.DELIVERED: Health.SUCCESS,
    SendStatus.EXHAUSTED: Health.FAILED,
    SendStatus.UNACKNOWLEDGED: Health.FAILED,
    SendStatus.REJECTED: Health.REJECTED,
    SendStatus.AUTH: Health.REJECTED,
    SendStatus.TOO_LARGE: Health.REJECTED,
}


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Wake:
    """The lane's wake-up flag: an ``asyncio.Event`` for its one waiter, with a timed wait that creates no task.

    ``asyncio.wait_for(event.wait(), t)`` wraps the wait in a new Task (scheduled, run, cancelled or finished) and a
    timer each time; the lane waits a few times per payload it sends, and that was ~6 % of the loop thread's CPU in
    the web benchmark. Here a wait is one future and one timer. Loop thread only."""

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    async def wait(self, timeout: float) -> None:
        """Until ``set()`` or ``timeout`` seconds, whichever first (returns either way)."""
        if self._flag:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if self._waiter is waiter:
                self._waiter = None


class Exporter(Protocol):
    """The per-signal seam: how one envelope is sent, and what a 413 turns it into."""

    endpoint: str  # metric label of the endpoint it sends to

    async def send(self, envelope: Envelope) -> SendResult:
        """One request for ``envelope`` (no retry: the lane decides); never raises but CancelledError."""
        ...

    async def split(self, envelope: Envelope) -> list[Envelope] | None:
        """After a 413: smaller envelopes carrying the same items, or None to drop it ``payload_too_large``."""
        ...

    async def unpack(self, envelope: Envelope) -> list[Envelope] | None:
        """Before a send: the envelopes a packed one (several payloads held as one while they could not be sent)
        becomes now that they can be, or None to send ``envelope`` as it is."""
        ...


class Lane:
    """Backlog + spool + endpoint health + sends for one signal (see the module docstring). Lives on the loop."""

    def __init__(self, signal: str, exporter: Exporter, ledger: SignalLedger, metrics: Metrics, config: Config):
        self.signal = signal  # "spans" | "evaluations" | "tags": the ledger's and the metrics' label
        self._exporter = exporter
        self._ledger = ledger
        self._metrics = metrics
        self._config = config
        self._log = RateLimitedLog(logger)
        self.backlog = Backlog(
            max_bytes=config.backlog_max_bytes, max_item_age=config.max_item_age, on_expired=self._expired
        )
        self.health = self._new_health()
        self._spool: Spool | None = None
        self._spool_tried = False
        self._spool_seen = (0, 0)  # (expired, corrupt) items already settled in the ledger
        self._running: set[asyncio.Task[None]] = set()
        # Sends created but not started yet: a task cancelled before its first step never runs its body, so its
        # payload would be lost (shutdown cancels sends); _sent puts such a payload back.
        self._unstarted: dict[asyncio.Task[None], tuple[Permit, Envelope, SpoolRecord | None]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._wake: _Wake | None = None
        self._next_housekeeping = 0.0
        self._next_adopt = 0.0
        self._failed_probe = ""  # Idempotency-Key of the payload whose probe failed last
        self.on_progress: Callable[[], None] | None = None  # wakes flush() waiters after a settle
        url = config.traces_url if signal == "spans" else config.api_url
        self._origin = urllib.parse.urlsplit(url).netloc.lower()
        self._closed = False
        _LANES.setdefault(self._origin, weakref.WeakSet()).add(self)
        _LANES_ADDED[0] += 1
        self._siblings: tuple[weakref.ref[Lane], ...] = ()  # weak: a snapshot must not keep a dead tracer's lanes
        self._siblings_at = -1  # the _LANES_ADDED value the snapshot was taken at
        metrics.backlog_max_bytes = config.backlog_max_bytes
        metrics.spool_max_bytes = config.spool_max_bytes if config.spool else 0
        self._publish()

    def _new_health(self) -> EndpointHealth:
        c = self._config
        # The retry knobs pace the probes of a down endpoint (retry_testing: near zero, for tests).
        first = 0.02 if c.retry_testing else max(0.05, c.retry_wait_initial)
        cap = 0.1 if c.retry_testing else max(first, c.retry_wait_max)
        return EndpointHealth(
            max_concurrent=c.max_concurrent_exports,
            initial_concurrency=min(2, c.max_concurrent_exports),
            max_payload_strikes=c.retry_attempts,
            probe_wait_initial=first,
            probe_wait_max=cap,
            probe_timeout=c.export_timeout + 1.0,
            max_retry_after=c.max_retry_after,
        )

    # ------------------------------------------------------------------ lifecycle (on the loop)
    def start(self) -> None:
        self._closed = False
        self._wake = _Wake()
        if not self._spool_tried:
            self._spool_tried = True
            self._open_spool()
        self._runner = asyncio.get_running_loop().create_task(self._run())

    def _spool_directory(self) -> Path:
        c = self._config
        root = Path(c.spool_dir) if c.spool_dir else default_spool_dir()
        url = c.traces_url if self.signal == "spans" else c.api_url
        return root / spool_key(url, c.project_id or c.project_name) / self.signal

    def has_leftovers(self) -> bool:
        """Whether the spool directory holds segments (of an earlier process): one directory listing."""
        if not self._config.spool:
            return False
        try:
            return any(name.endswith(".seg") for name in os.listdir(self._spool_directory()))
        except OSError:
            return False

    def _open_spool(self) -> None:
        c = self._config
        if not c.spool:
            return
        try:
            directory = self._spool_directory()
            self._spool = Spool(
                directory, max_item_age=c.max_item_age, budget=_budget(directory.parent.parent, c.spool_max_bytes)
            )
        except Exception:
            logger.warning("judgeval_async: the %s spool could not be opened; memory only", self.signal, exc_info=True)
            self._spool = None
            return
        self._ledger.adopt_replayed(self._spool.stats().adopted)
        self._next_adopt = time.monotonic() + _ADOPT_EVERY

    @property
    def unwell(self) -> bool:
        """This lane's endpoint, or another live lane's on the same host, is down, probing, or failed since its
        last success: payloads spill to the spool as they arrive (when there is one), and the batchers cut partial
        batches every ``UNWELL_CUT`` seconds. The host's other lanes count because a lane that sends rarely (tags:
        every ``tag_flush_interval``) would otherwise learn of an outage seconds late and hold that much in memory.
        """
        if self.health.unwell:
            return True
        if self._siblings_at != _LANES_ADDED[0]:
            self._siblings_at = _LANES_ADDED[0]
            self._siblings = tuple(weakref.ref(lane) for lane in _LANES.get(self._origin, ()) if lane is not self)
        for ref in self._siblings:
            lane = ref()
            if lane is not None and not lane._closed and lane.health.unwell:
                return True
        return False

    def idle(self) -> bool:
        """Nothing in memory and no send running (spooled payloads are safe on disk)."""
        return not len(self.backlog) and not self._running

    async def drain(self, stop: Callable[[], bool]) -> None:
        """At shutdown: send what memory holds while the endpoint is up; return when memory is empty, the endpoint
        is not up (the rest is persisted by ``aclose``) or ``stop()``."""
        while not self.idle() and self.health.state is EndpointState.UP and not stop():
            self.kick()
            await asyncio.sleep(0.01)

    async def aclose(self, timeout: float) -> None:
        """Cut the sends (their payloads go back to the backlog), persist the backlog to the spool, close it."""
        self._closed = True
        tasks = [t for t in (self._runner, *self._running) if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = None
        spool = self._spool
        if spool is not None:
            envs = self.backlog.drain()
            left = spool.persist_all(envs, timeout) if envs else []
            left_ids = {id(e) for e in left}
            self._ledger.spill(sum(e.items for e in envs if id(e) not in left_ids))
            for env in left:  # still in flight in the ledger: the caller's abandon counts them
                self.backlog.offer(env)
            spool.close()
        self._publish()

    def after_fork_in_child(self) -> None:
        """The parent's payloads are the parent's (counted ``fork_discard`` by the caller with the in-flight)."""
        self.backlog.drain()
        self.backlog = Backlog(
            max_bytes=self._config.backlog_max_bytes, max_item_age=self._config.max_item_age, on_expired=self._expired
        )
        self.health = self._new_health()
        self._spool = None  # inert in the child: a fresh one (own writer id) is opened at the next start
        self._spool_tried = False
        self._spool_seen = (0, 0)
        self._running = set()
        self._unstarted = {}
        self._runner = None
        self._wake = None

    # ------------------------------------------------------------------ intake (on the loop)
    def submit(self, env: Envelope) -> None:
        """Take an encoded payload whose items are in flight in the ledger; never raises."""
        spool = self._spool
        # Also while older payloads wait on disk (a drain after an outage): this one is sent after them anyway
        # (oldest first), so it waits on disk too, not in memory (where a kill -9 or a short exit would lose it).
        if spool is not None and (self._spill_wanted() or spool.oldest_created() is not None) and self._to_spool(env):
            self.kick()
            return
        if self.backlog.offer(env):
            self._metrics.backlog_bytes[self.signal] = self.backlog.bytes
            self.kick()
            return
        if spool is not None and self._to_spool(env):
            return
        self._ledger.settle_dropped("backlog_full", env.items)
        self._log.warning("full", "judgeval_async: %s backlog full (and no spool); dropped a payload", self.signal)

    def _spill_wanted(self) -> bool:
        # From the first failure on, not only once the endpoint is declared down: a kill -9 then loses nothing
        # the lane holds but the sends in flight (whose payloads, if replayed from the spool, are still on disk).
        return self.health.unwell or self.backlog.bytes > self.backlog.max_bytes // 2

    def _to_spool(self, env: Envelope) -> bool:
        assert self._spool is not None
        if self._spool.append(env):
            self._ledger.spill(env.items)
            self.health.forget(env.idempotency_key)
            return True
        return False

    def _spill_backlog(self) -> None:
        """The endpoint is down: move the newest queued payloads to disk (the oldest stay: they are sent first)."""
        if self._spool is not None:
            self.backlog.spill(self._to_spool)
            self._metrics.backlog_bytes[self.signal] = self.backlog.bytes

    def _expired(self, env: Envelope) -> None:
        self._ledger.settle_dropped("expired", env.items)
        self.health.forget(env.idempotency_key)

    # ------------------------------------------------------------------ the sender
    def kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("judgeval_async %s sender failed; restarting it", self.signal)
                await asyncio.sleep(0.5)

    async def _step(self) -> None:
        wake = self._wake
        assert wake is not None
        self._housekeeping()
        if not self._has_work():
            wake.clear()
            await wake.wait(_HOUSEKEEP_EVERY)
            return
        permit = self.health.admit()
        if permit is None:
            wait = self.health.wait_time()
            wake.clear()
            await wake.wait(_PROBE_CHECK if wait is None else min(max(wait, 0.001), 1.0))
            return
        taken = self._take()
        if taken is not None and permit.probe and taken[0].idempotency_key == self._failed_probe:
            # Probe with another payload than the one that failed the last probe: a poison payload alone at the
            # front must not hold the endpoint down for everyone behind it.
            other = self._take()
            if other is not None:  # else it is the only payload there is: probe with it
                self._hold(*taken)
                taken = other
        if taken is None:
            self.health.cancel(permit)
            await asyncio.sleep(0.05)  # nothing sendable after all (skipped records): never spin
            return
        env, record = taken
        task = asyncio.get_running_loop().create_task(self._send(permit, env, record))
        self._unstarted[task] = (permit, env, record)
        self._running.add(task)
        task.add_done_callback(self._sent)

    def _has_work(self) -> bool:
        if len(self.backlog):
            return True
        spool = self._spool
        return spool is not None and spool.oldest_created() is not None

    def _take(self) -> tuple[Envelope, SpoolRecord | None] | None:
        """The oldest payload, from memory or the spool (oldest first across both)."""
        spool = self._spool
        mem = self.backlog.oldest_created()
        disk = spool.oldest_created() if spool is not None else None
        if disk is not None and (mem is None or disk < mem):
            assert spool is not None
            record = spool.next_record()
            if record is not None:
                self._ledger.unspill(record.envelope.items)
                return record.envelope, record
            self._settle_spool_counters()
        env = self.backlog.take()
        return None if env is None else (env, None)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        unstarted = self._unstarted.pop(task, None)
        if unstarted is not None:  # cancelled before it ran: its payload goes back, not away
            permit, env, record = unstarted
            self.health.cancel(permit)
            self._hold(env, record)
        if not task.cancelled() and task.exception() is not None:
            logger.error("judgeval_async %s send failed", self.signal, exc_info=task.exception())
        self._publish()
        self.kick()
        if self.on_progress is not None:
            self.on_progress()

    async def _send(self, permit: Permit, env: Envelope, record: SpoolRecord | None) -> None:
        current = asyncio.current_task()
        if current is not None:
            self._unstarted.pop(current, None)  # from here on every path holds or settles the payload
        t0 = time.perf_counter()
        try:
            parts = await self._exporter.unpack(env)
            if parts is None:
                result = await self._exporter.send(env)
        except BaseException:
            self.health.cancel(permit)
            self._hold(env, record)
            raise
        if parts is not None:  # nothing was sent: its items go on in the parts, each sent on its own
            self.health.cancel(permit)
            self._settle(env, record, "")
            for part in parts:
                self.submit(part)
            return
        if result.status is SendStatus.SHUTDOWN:
            self.health.cancel(permit)
            self._hold(env, record)
            return
        kind = _HEALTH.get(result.status, Health.FAILED)
        if permit.probe:
            self._failed_probe = env.idempotency_key if kind is Health.FAILED else ""
        verdict = self.health.on_result(permit, kind, payload_key=env.idempotency_key, retry_after=result.retry_after)
        if verdict is Verdict.DELIVERED:
            if self.signal == "spans":
                self._metrics.export_duration.observe(time.perf_counter() - t0)
                self._metrics.last_export_unix = time.time()
            self._settle(env, record, None)
        elif verdict is Verdict.RETRY:
            self._metrics.retries.inc(self._exporter.endpoint)
            self._hold(env, record)
            if self.health.unwell:
                self._spill_backlog()
        elif result.status is SendStatus.TOO_LARGE:
            parts = await self._exporter.split(env)
            if parts:
                self._settle(env, record, "")  # its items now travel in the parts (still in flight)
                for part in parts:
                    self.submit(part)
            else:
                self._settle(env, record, "payload_too_large")
        else:  # REJECTED or POISON: dropped with the status's reason
            self._settle(env, record, result.status.value)
            self._log.warning(
                "send:" + result.status.value,
                "judgeval_async: dropped %d %s (%s, HTTP %s)",
                env.items,
                self.signal,
                result.status.value,
                result.http_status,
            )

    def _hold(self, env: Envelope, record: SpoolRecord | None) -> None:
        """Keep a payload whose send failed for the endpoint's reasons: back to the front of where it came from."""
        if record is None:
            self.backlog.requeue(env)
        elif self._spool is not None:
            self._spool.requeue(record)
            self._ledger.spill(env.items)

    def _settle(self, env: Envelope, record: SpoolRecord | None, drop_reason: str | None) -> None:
        """The one settle path. ``drop_reason`` None: delivered; "": replaced by smaller payloads (not settled)."""
        if record is None:
            self.backlog.done(env)
        elif self._spool is not None:
            if drop_reason is None:
                self._spool.ack(record)
            else:
                self._spool.drop(record)
        if drop_reason is None:
            self._ledger.settle_delivered(env.items)
        elif drop_reason:
            self._ledger.settle_dropped(drop_reason, env.items)

    # ------------------------------------------------------------------ housekeeping
    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + _HOUSEKEEP_EVERY
        self.backlog.expire()
        spool = self._spool
        if spool is not None:
            spool.expire()
            if now >= self._next_adopt:
                self._next_adopt = now + _ADOPT_EVERY
                self._ledger.adopt_replayed(spool.adopt_orphans())
            self._settle_spool_counters()
            if self.health.unwell:
                self._spill_backlog()
        self._publish()

    def _settle_spool_counters(self) -> None:
        """Items the spool itself dropped (expired on disk, corrupt records) leave ``spooled`` here."""
        if self._spool is None:
            return
        stats = self._spool.stats()
        seen_expired, seen_corrupt = self._spool_seen
        self._ledger.settle_spooled_dropped("expired", stats.expired - seen_expired)
        self._ledger.settle_spooled_dropped("spool_corrupt", stats.corrupt - seen_corrupt)
        self._spool_seen = (stats.expired, stats.corrupt)

    def _publish(self) -> None:
        """Copy the lane's state into ``Metrics`` for ``get_health_metrics()`` and Prometheus."""
        m = self._metrics
        m.backlog_bytes[self.signal] = self.backlog.bytes
        spool = self._spool
        if spool is not None:
            stats = spool.stats()
            m.spool_bytes[self.signal] = stats.disk_bytes
            m.spool_available = stats.available
        snap = self.health.snapshot()
        ep = m.endpoint(self._exporter.endpoint)
        ep.state = snap.state.value
        ep.concurrency = snap.limit
        if snap.paused_for_seconds > 0:  # a Retry-After the endpoint's health honours
            ep.paused_until = max(ep.paused_until, time.monotonic() + snap.paused_for_seconds)
