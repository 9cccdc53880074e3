"""The durable spool: encoded payloads on local disk, replayed oldest-first, by this process or the next one.

Layout, one directory per (API URL, project) under ``spool_dir`` (``spool_key``)::

    <spool_dir>/<key>/about.json              layout and format version, for people (never read back)
    <spool_dir>/<key>/<wid>.lock              held with fcntl.flock(LOCK_EX) by the live process <wid>
    <spool_dir>/<key>/<wid>-<seq>.seg         append-only records (``_format``), rolled at ``segment_max_bytes``
    <spool_dir>/<key>/<wid>-<seq>.ack         one 12-byte entry per record settled (replayed, dropped, expired)

``wid`` = start time in ms, pid, random: every process writes only its own files (``_writer``), so appends never
contend across processes. A process whose ``.lock`` can be flocked is dead (the kernel drops a dead process's
locks): its segments are *adopted* - the adopter holds that lock while it replays them, so two live processes never
replay one file.

Durability: a record is one ``writev`` into the page cache, so once ``append`` returns it survives the process
being killed (``kill -9``); only an append still in progress is lost (and detected: a torn tail fails its CRC). A
power cut or OS crash can lose what was appended since the last ``fsync``: at most ``fsync_interval`` seconds
(default 1 s); ``persist_all`` and ``close`` fsync before returning, and so does rolling to a new segment.

Failures never raise out of the public methods: ENOSPC, EROFS, EACCES or EIO while writing makes the spool
*unavailable* (appends refused, counted, logged once; ``retry_unavailable_after`` later it tries again with a new
segment); a damaged record is skipped and counted. Not a Windows target (``fcntl``).

Thread-safety: every public method takes one internal lock; an append costs one ``writev`` (plus an ``fsync`` when
one is due), see ``benchmarks/spool.py``. After ``fork()`` the child's copy is inert (refuses everything) and has
closed its inherited descriptors without unlocking the parent's lock: the child builds its own spool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from judgeval_async._errors import ConfigError

from . import _format as fmt
from ._counters import SpoolCounters, SpoolStats
from ._envelope import Envelope
from ._segment import (
    Claim,
    FileOps,
    Segment,
    claim_writer,
    close_fd,
    default_spool_dir,
    scan_segment,
    spool_key,
    writer_of,
)
from ._writer import SegmentWriter

# FileOps, default_spool_dir and spool_key live in _segment, SpoolStats in _counters: re-exported as the spool's API.
__all__ = [
    "DEFAULT_MAX_ITEM_AGE",
    "DEFAULT_SPOOL_MAX_BYTES",
    "FileOps",
    "Spool",
    "SpoolBudget",
    "SpoolRecord",
    "SpoolStats",
    "default_spool_dir",
    "spool_key",
]

logger = logging.getLogger(__name__)

DEFAULT_SPOOL_MAX_BYTES = 1 << 30
DEFAULT_MAX_ITEM_AGE = 3600.0
DEFAULT_SEGMENT_MAX_BYTES = 8 << 20


class SpoolRecord:
    """One record handed out by ``Spool.next_record``: settle it with ``ack``, ``drop`` or ``requeue``."""

    __slots__ = ("_segment", "done", "envelope", "offset")

    def __init__(self, envelope: Envelope, segment: Segment, offset: int) -> None:
        self.envelope = envelope
        self._segment = segment
        self.offset = offset
        self.done = False

    def __repr__(self) -> str:
        env = self.envelope
        return f"SpoolRecord({env.signal}, items={env.items}, bytes={env.size}, key={env.idempotency_key})"


_LIVE: weakref.WeakSet[Spool] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for spool in list(_LIVE):
        spool._forget_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class SpoolBudget:
    """One ``max_bytes`` shared by several spools (a tracer's spans, evaluations and tags: ``spool_max_bytes``
    bounds them together). Each spool refuses an append that would take the sum of their disk bytes past it."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ConfigError("spool_max_bytes", "must be > 0")
        self.max_bytes = max_bytes
        self._spools: weakref.WeakSet[Spool] = weakref.WeakSet()

    def join(self, spool: Spool) -> None:
        self._spools.add(spool)

    def used(self) -> int:
        """Disk bytes of every open member (read without their locks: the members share the SDK loop thread)."""
        return sum(s._counters.disk_bytes for s in list(self._spools) if not (s._closed or s._forked))


class Spool:
    """Durable storage of encoded payloads for one API URL + project directory (see the module docstring).

    Never raises from ``append``/``persist_all``/``next_record``/``ack``/``drop``/``requeue``/``adopt_orphans``/
    ``expire``/``stats``/``close``; a bad argument to the constructor raises ``ConfigError``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        max_item_age: float = DEFAULT_MAX_ITEM_AGE,
        segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES,
        fsync_interval: float | None = 1.0,
        retry_unavailable_after: float = 60.0,
        adopt: bool = True,
        clock: Callable[[], float] = time.time,
        ops: FileOps | None = None,
        budget: SpoolBudget | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ConfigError("spool_max_bytes", "must be > 0")
        if not max_item_age > 0:
            raise ConfigError("max_item_age", "must be > 0")
        if segment_max_bytes <= 0:
            raise ConfigError("segment_max_bytes", "must be > 0")
        if fsync_interval is not None and not fsync_interval >= 0:
            raise ConfigError("fsync_interval", "must be >= 0 or None")
        self._dir = os.fspath(directory)
        self._max_bytes = max_bytes
        self._max_age = max_item_age
        self._clock = clock
        self._ops = ops or FileOps()
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self._writer = SegmentWriter(
            self._dir,
            segment_max_bytes=segment_max_bytes,
            fsync_interval=fsync_interval,
            retry_unavailable_after=retry_unavailable_after,
            clock=clock,
            ops=self._ops,
            log_once=self._log_once,
        )
        self._segments: list[Segment] = []  # replay order: oldest data first
        self._returned: deque[SpoolRecord] = deque()  # requeued records, handed out again first
        self._claims: dict[str, Claim] = {}  # dead writers whose segments we replay
        self._counters = SpoolCounters()
        self._closed = False
        self._forked = False
        self._budget = budget
        if budget is not None:
            self._max_bytes = budget.max_bytes
            budget.join(self)
        _LIVE.add(self)
        with self._lock:
            self._writer.start()
        if adopt and self._writer.available:
            self.adopt_orphans()

    @classmethod
    def for_project(
        cls, api_url: str, project: str, spool_dir: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> Spool:
        """The spool of one API URL + project under ``spool_dir`` (default ``default_spool_dir()``)."""
        root = Path(spool_dir) if spool_dir is not None else default_spool_dir()
        return cls(root / spool_key(api_url, project), **kwargs)

    @property
    def directory(self) -> str:
        return self._dir

    @property
    def available(self) -> bool:
        """False while appends are refused (disk full, read-only, closed, forked)."""
        return self._writer.available and not self._closed and not self._forked

    # ------------------------------------------------------------------ writing
    def append(self, envelope: Envelope) -> bool:
        """Store one payload; True once it is in the page cache (it then survives ``kill -9``), False if refused.

        Refused (counted ``refused``) when the spool is unavailable, closed, or storing it would pass ``max_bytes``:
        the *new* payload is refused, what is already on disk stays (it is older and closer to being replayed;
        dropping whole old segments would lose many payloads to store one). The caller still holds a refused
        payload and counts it.
        """
        with self._lock:
            stored = self._append_guarded(envelope)
            if stored:
                self._writer.sync_if_due()
            return stored

    def persist_all(self, envelopes: Iterable[Envelope], timeout: float) -> list[Envelope]:
        """Append every envelope, then fsync once; stops at ``timeout`` seconds. Returns those NOT persisted.

        For exit and shutdown: what the caller could not deliver goes to disk instead of being dropped, and the
        caller counts the returned ones as dropped. Envelopes not reached before the deadline are not counted
        ``refused`` here (they were never offered).
        """
        deadline = time.monotonic() + timeout
        left: list[Envelope] = []
        with self._lock:
            pending = list(envelopes)
            for i, env in enumerate(pending):
                if time.monotonic() > deadline:
                    left.extend(pending[i:])
                    break
                if not self._append_guarded(env):
                    left.append(env)
            if not self._forked:
                self._writer.sync()
        return left

    def sync(self) -> None:
        """fsync the segment being written now (``close`` and ``persist_all`` do it too)."""
        with self._lock:
            if not self._forked:
                self._writer.sync()

    # ------------------------------------------------------------------ replay
    def next_record(self) -> SpoolRecord | None:
        """The oldest unsettled record not already handed out, or None. Expired and corrupt ones are skipped and
        counted on the way. The caller must settle each record with ``ack``, ``drop`` or ``requeue``; one that is
        never settled is replayed by the next process."""
        with self._lock:
            if self._closed or self._forked:
                return None
            try:
                return self._next_record()
            except Exception:
                logger.exception("judgeval_async spool: reading a record failed")
                return None

    def ack(self, record: SpoolRecord) -> None:
        """The record was delivered: count it ``replayed`` and forget it (on disk too)."""
        self._settle(record, "replayed")

    def drop(self, record: SpoolRecord) -> None:
        """The record will never be delivered (rejected, poison): count it ``dropped`` and forget it."""
        self._settle(record, "dropped")

    def requeue(self, record: SpoolRecord) -> None:
        """Sending failed for a reason that is not the record's (endpoint down): hand it out again first."""
        with self._lock:
            if record.done or self._closed or self._forked:
                return
            self._returned.appendleft(record)

    def oldest_created(self) -> float | None:
        """``created`` of the oldest record not yet handed out (for merging replay with the memory backlog)."""
        with self._lock:
            return self._oldest_created()

    def adopt_orphans(self) -> int:
        """Adopt the spools of dead processes in this directory (their lock is free); returns the items adopted.

        Called at construction; call it again now and then to adopt processes that died since."""
        with self._lock:
            if self._closed or self._forked or not self._writer.available:
                return 0
            try:
                return self._adopt_orphans()
            except Exception:
                logger.exception("judgeval_async spool: adopting orphaned spools failed")
                return 0

    def expire(self) -> int:
        """Delete whole segments whose every unsettled record is older than ``max_item_age``; returns items."""
        with self._lock:
            if self._closed or self._forked:
                return 0
            try:
                return self._expire_segments()
            except Exception:
                logger.exception("judgeval_async spool: expiring segments failed")
                return 0

    def stats(self) -> SpoolStats:
        """A consistent snapshot of every counter."""
        with self._lock:
            available = self.available
            reason = "closed" if self._closed else self._writer.unavailable_reason
            return self._counters.snapshot(
                available=available,
                unavailable_reason="" if available else reason,
                write_errors=self._writer.write_errors,
                oldest_created=None if self._closed or self._forked else self._oldest_created(),
            )

    def close(self) -> None:
        """fsync, close every file and release the locks; unsettled records stay for the next process. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _LIVE.discard(self)
            if self._forked:
                return
            self._writer.sync()
            self._writer.seal_active()
            own_left = False
            for seg in list(self._segments):
                if seg.unresolved == 0 and seg.outstanding == 0:
                    self._reclaim(seg)
                    continue
                own_left = own_left or seg.claim is None
                close_fd(seg.fd)
                close_fd(seg.ack_fd)
            self._segments.clear()
            for claim in self._claims.values():
                close_fd(claim.fd)  # releases the flock: the next process adopts what is left
            self._claims.clear()
            self._writer.close(remove_lock=not own_left)

    # ------------------------------------------------------------------ internals: writing
    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(msg, *args)

    def _append_guarded(self, env: Envelope) -> bool:
        try:
            return self._append(env)
        except Exception:  # never let a bug in the spool reach the SDK loop
            logger.exception("judgeval_async spool: append failed")
            self._counters.event(env.signal, env.items, "refused")
            return False

    def _append(self, env: Envelope) -> bool:
        if self._closed or self._forked or not self._writer.ensure_available():
            self._counters.event(env.signal, env.items, "refused")
            return False
        encoded = fmt.encode_record(env)
        size = fmt.record_size(env, encoded)
        if self._used() + size > self._max_bytes:
            self._expire_segments()
            self._reuse_active_if_settled()
            if self._used() + size > self._max_bytes:
                self._log_once(
                    "full",
                    "judgeval_async spool %s is full (spool_max_bytes=%d): new payloads are refused",
                    self._dir,
                    self._max_bytes,
                )
                self._counters.event(env.signal, env.items, "refused")
                return False
        seg = self._writer.write(encoded, size, on_new=self._on_new_segment)
        if seg is None:
            self._counters.event(env.signal, env.items, "refused")
            return False
        seg.unresolved += 1
        seg.newest_created = max(seg.newest_created, env.created)
        self._counters.disk_bytes += size
        self._counters.stored(env.signal, env.items, env.size, 1, "appended")
        return True

    def _used(self) -> int:
        return self._counters.disk_bytes if self._budget is None else self._budget.used()

    def _on_new_segment(self, seg: Segment) -> None:
        # Segments the writer sealed and that are already settled go now, not at close.
        for old in list(self._segments):
            if old.claim is None and not old.writable and old.unresolved == 0 and old.outstanding == 0:
                self._reclaim(old)
        self._segments.append(seg)  # the newest data: always last

    # ------------------------------------------------------------------ internals: reading and settling
    def _oldest_created(self) -> float | None:
        if self._returned:
            return self._returned[0].envelope.created
        for seg in self._segments:
            if seg.read_at < seg.end:
                _, header = fmt.read_header(seg.fd, seg.read_at, seg.end)
                return header.created if header is not None else seg.first_created
        return None

    def _next_record(self) -> SpoolRecord | None:
        cutoff = self._clock() - self._max_age
        while self._returned:
            record = self._returned.popleft()
            if record.done:
                continue
            if record.envelope.created < cutoff:
                record.done = True
                record._segment.outstanding -= 1
                env = record.envelope
                self._resolve(record._segment, record.offset, env.signal, env.items, env.size, "expired")
                continue
            return record
        for seg in list(self._segments):
            # fd < 0: settling a record just reclaimed the segment (only damaged bytes were left after it).
            while seg.fd >= 0 and seg.read_at < seg.end:
                at = seg.read_at
                status, header = fmt.read_header(seg.fd, at, seg.end)
                if header is None:
                    if not seg.headers_counted:
                        self._counters.corrupt_records += 1
                    seg.read_at = fmt.resync(seg.fd, at, seg.end)
                    continue
                if status is fmt.Status.TRUNCATED:  # only in a segment damaged after it was scanned
                    seg.read_at = seg.end
                    self._counters.corrupt_records += 1
                    self._resolve(seg, at, header.signal, header.items, header.payload_len, "corrupt")
                    break
                seg.read_at = header.next_at
                if at in seg.acked:
                    continue
                if header.created < cutoff:
                    self._resolve(seg, at, header.signal, header.items, header.payload_len, "expired")
                    continue
                payload = fmt.read_payload(seg.fd, header)
                if payload is None:
                    self._counters.corrupt_records += 1
                    self._resolve(seg, at, header.signal, header.items, header.payload_len, "corrupt")
                    continue
                env = Envelope(
                    payload=payload,
                    signal=header.signal,
                    items=header.items,
                    idempotency_key=header.idempotency_key,
                    route=header.route,
                    created=header.created,
                    extra=header.extra,
                )
                seg.outstanding += 1
                return SpoolRecord(env, seg, at)
        return None

    def _settle(self, record: SpoolRecord, event: str) -> None:
        with self._lock:
            if record.done:
                return
            record.done = True
            if self._closed or self._forked:
                return  # not persisted: the next process replays it again (at-least-once)
            try:
                record._segment.outstanding -= 1
                env = record.envelope
                self._resolve(record._segment, record.offset, env.signal, env.items, env.size, event)
            except Exception:
                logger.exception("judgeval_async spool: settling a record failed")

    def _resolve(self, seg: Segment, offset: int, signal: str, items: int, nbytes: int, event: str) -> None:
        """Settle one record: count it, persist an ack entry, reclaim the segment once nothing in it is left."""
        self._counters.settled(signal, items, nbytes, event)
        seg.unresolved -= 1
        if seg.unresolved > 0 or seg.outstanding > 0:
            self._write_ack(seg, offset)
        elif seg is self._writer.active:
            self._reuse_active_if_settled()
        else:
            self._reclaim(seg)

    def _write_ack(self, seg: Segment, offset: int) -> None:
        try:
            if seg.ack_fd < 0:
                seg.ack_fd = self._ops.open(seg.ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            self._ops.writev(seg.ack_fd, [fmt.encode_ack(offset)])
        except OSError as exc:
            # The record stays settled in this process; a later adopter would resend it (at-least-once).
            self._log_once("ack", "judgeval_async spool %s cannot record acks (%s): replays may repeat", self._dir, exc)
            return
        seg.ack_bytes += fmt.ACK.size
        self._counters.disk_bytes += fmt.ACK.size
        seg.acked.add(offset)

    def _reuse_active_if_settled(self) -> None:
        """Empty the segment being written when every record in it is settled, instead of creating a new file."""
        seg = self._writer.active
        if seg is None or seg.unresolved > 0 or seg.outstanding > 0 or seg.end == 0:
            return
        try:
            # Acks first: a crash between the two truncations leaves records without acks (resent), never acks
            # pointing at new records (lost).
            if seg.ack_fd >= 0:
                self._ops.truncate(seg.ack_fd, 0)
            self._ops.truncate(seg.fd, 0)
        except OSError:
            self._writer.seal_active()
            self._reclaim(seg)
            return
        self._counters.disk_bytes -= seg.charged + seg.ack_bytes
        seg.end = seg.read_at = seg.ack_bytes = seg.charged = 0
        seg.acked.clear()

    def _reclaim(self, seg: Segment) -> None:
        """Delete a fully settled segment and its ack file (the ack file last: see ``_reuse_active_if_settled``)."""
        if seg in self._segments:
            self._segments.remove(seg)
        if self._writer.active is seg:
            self._writer.seal_active()
        close_fd(seg.fd)
        close_fd(seg.ack_fd)
        seg.fd = seg.ack_fd = -1
        for path in (seg.path, seg.ack_path):
            try:
                self._ops.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._log_once("unlink", "judgeval_async spool %s cannot delete files (%s)", self._dir, exc)
        self._counters.disk_bytes -= seg.charged + seg.ack_bytes
        seg.charged = seg.ack_bytes = 0
        claim = seg.claim
        if claim is not None:
            claim.remaining -= 1
            if claim.remaining <= 0:
                self._release_claim(claim)

    def _release_claim(self, claim: Claim) -> None:
        # Unlink while still holding the lock: whoever opened the path before the unlink gets the lock only after
        # we close, and then finds no segments left.
        with contextlib.suppress(OSError):
            self._ops.unlink(claim.lock_path)
        close_fd(claim.fd)
        self._claims = {k: c for k, c in self._claims.items() if c is not claim}

    def _expire_segments(self) -> int:
        """Whole segments whose newest record is too old and none handed out: count every unsettled record in
        them ``expired`` (reading headers only) and delete them."""
        cutoff = self._clock() - self._max_age
        expired = 0
        for seg in list(self._segments):
            if seg.newest_created >= cutoff or seg.outstanding > 0 or seg is self._writer.active:
                continue
            at = seg.read_at
            while at < seg.end:
                status, header = fmt.read_header(seg.fd, at, seg.end)
                if header is None:
                    if not seg.headers_counted:
                        self._counters.corrupt_records += 1
                    at = fmt.resync(seg.fd, at, seg.end)
                    continue
                at = header.next_at if status is fmt.Status.OK else seg.end
                if header.offset in seg.acked or status is not fmt.Status.OK:
                    continue
                self._counters.settled(header.signal, header.items, header.payload_len, "expired")
                expired += header.items
            seg.unresolved = 0
            self._reclaim(seg)
        return expired

    # ------------------------------------------------------------------ internals: adoption
    def _adopt_orphans(self) -> int:
        try:
            names = os.listdir(self._dir)
        except OSError:
            return 0
        by_writer: dict[str, list[str]] = {}
        for name in names:
            wid = writer_of(name)
            if wid is not None:
                segs = by_writer.setdefault(wid, [])
                if name.endswith(".seg"):
                    segs.append(name)
        by_writer.pop(self._writer.wid, None)
        adopted = 0
        for wid in sorted(set(by_writer) - set(self._claims)):
            claim = claim_writer(self._dir, wid, self._ops)
            if claim is None:
                continue
            self._claims[wid] = claim
            self._counters.adopted_processes += 1
            claim.remaining = len(by_writer[wid])
            for name in sorted(by_writer[wid]):
                adopted += self._adopt_segment(os.path.join(self._dir, name), claim)
            if claim.remaining <= 0:
                self._release_claim(claim)
        self._segments.sort(key=lambda s: s.sort_key)
        return adopted

    def _adopt_segment(self, path: str, claim: Claim) -> int:
        seg, scan = scan_segment(path, claim)
        self._counters.corrupt_records += scan.bad_headers + (1 if scan.torn else 0)
        for signal, items in scan.torn.items():
            self._counters.event(signal, items, "adopted")
            self._counters.event(signal, items, "corrupt")
        if seg is None:
            claim.remaining -= 1
            return 0
        self._segments.append(seg)
        self._counters.disk_bytes += seg.charged + seg.ack_bytes
        for signal, items in scan.adopted.items():
            self._counters.stored(signal, items, 0, 0, "adopted")
        self._counters.bytes += scan.payload_bytes
        self._counters.records += scan.records
        if seg.unresolved == 0:
            self._reclaim(seg)
        return sum(scan.adopted.values())

    # ------------------------------------------------------------------ fork
    def _forget_in_child(self) -> None:
        """In a forked child: close inherited descriptors (without unlocking: the lock is the parent's) and refuse
        everything from now on."""
        self._forked = True
        self._lock = threading.Lock()  # the parent's may have been held by another thread at fork time
        for seg in self._segments:
            close_fd(seg.fd)
            close_fd(seg.ack_fd)
        for claim in self._claims.values():
            close_fd(claim.fd)
        self._writer.forget_in_child()
        self._segments = []
        self._claims = {}
        self._returned.clear()
