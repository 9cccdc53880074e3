"""The durable spool: encoded payloads on local disk, replayed oldest-first, by this process or the next one.

Layout, one directory per (API URL, project) under ``spool_dir`` (``spool_key``)::

    <spool_dir>/<key>/about.json              layout and format version, for people (never read back)
    <spool_dir>/<key>/<wid>.lock              held with fcntl.flock(LOCK_EX) by the live process <wid>
    <spool_dir>/<key>/<wid>-<seq>.seg         append-only records (``_format``), rolled at ``segment_max_bytes``
    <spool_dir>/<key>/<wid>-<seq>.ack         one 12-byte entry per record settled (replayed, dropped, expired)

``wid`` = start time in ms, pid, random: every process writes only its own files, so appends never contend across
processes. A process whose ``.lock`` can be flocked is dead (the kernel drops a dead process's locks): its segments
are *adopted* - the adopter holds that lock while it replays them, so two live processes never replay one file.

Durability: a record is one ``writev`` into the page cache, so once ``append`` returns it survives the process
being killed (``kill -9``); only an append still in progress is lost (and detected: a torn tail fails its CRC). A
power cut or OS crash can lose what was appended since the last ``fsync``: at most ``fsync_interval`` seconds
(default 1 s); ``persist_all`` and ``close`` fsync before returning.

Failures never raise out of the public methods: ENOSPC, EROFS, EACCES or EIO while writing makes the spool
*unavailable* (appends refused, counted, logged once; ``retry_unavailable_after`` later it tries again with a new
segment); a damaged record is skipped and counted. Not a Windows target (``fcntl``).

Thread-safety: every public method takes one internal lock; an append costs one ``writev`` (plus an ``fsync`` when
one is due), see ``benchmarks/spool.py``. After ``fork()`` the child's copy is inert (refuses everything) and has
closed its inherited descriptors without unlocking the parent's lock: the child builds its own spool.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judgeval_async._errors import ConfigError

from . import _format as fmt
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

__all__ = [
    "DEFAULT_MAX_ITEM_AGE",
    "DEFAULT_SPOOL_MAX_BYTES",
    "FileOps",
    "Spool",
    "SpoolRecord",
    "SpoolStats",
    "default_spool_dir",
    "spool_key",
]  # FileOps, default_spool_dir and spool_key live in _segment; re-exported as the spool's API

logger = logging.getLogger(__name__)

DEFAULT_SPOOL_MAX_BYTES = 1 << 30
DEFAULT_MAX_ITEM_AGE = 3600.0
DEFAULT_SEGMENT_MAX_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of the spool's counters. Item counts are ledger items (spans, tag entries, evaluation runs).

    On disk now: ``items`` / ``bytes`` (payload bytes) / ``records`` not yet settled, ``disk_bytes`` (every spool
    file of this process and of the spools it adopted, including settled records not yet reclaimed). Since start:
    ``appended`` + ``adopted`` = ``items`` + ``replayed`` + ``dropped`` + ``expired`` + ``corrupt`` exactly;
    ``refused`` items were never stored (the caller still holds them). ``corrupt_records`` counts damaged records
    including those whose header was unreadable (their items are unknown, so not in ``corrupt``).
    """

    available: bool
    unavailable_reason: str
    items: int
    bytes: int
    records: int
    disk_bytes: int
    appended: int
    adopted: int
    replayed: int
    dropped: int
    expired: int
    corrupt: int
    refused: int
    corrupt_records: int
    write_errors: int
    adopted_processes: int
    oldest_created: float | None
    by_signal: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


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
        self._segment_max = segment_max_bytes
        self._fsync_interval = fsync_interval
        self._retry_after = retry_unavailable_after
        self._clock = clock
        self._ops = ops or FileOps()
        self._lock = threading.Lock()
        self._wid = f"{int(time.time() * 1000):013d}-{os.getpid()}-{secrets.token_hex(4)}"
        self._lock_fd = -1
        self._segments: list[Segment] = []
        self._active: Segment | None = None
        self._seq = 0
        self._returned: deque[SpoolRecord] = deque()
        self._claims: dict[str, Claim] = {}
        self._closed = False
        self._forked = False
        self._available = False
        self._unavailable_reason = "not started"
        self._unavailable_since = time.monotonic()
        self._last_fsync = time.monotonic()
        self._dirty = False
        self._logged: set[str] = set()
        # Counters.
        self._items = 0
        self._bytes = 0
        self._records = 0
        self._disk_bytes = 0
        self._counts: Counter[tuple[str, str]] = Counter()
        self._pending_by_signal: Counter[str] = Counter()
        self._corrupt_records = 0
        self._write_errors = 0
        self._adopted_processes = 0
        _LIVE.add(self)
        with self._lock:
            self._start()
        if adopt and self._available:
            self.adopt_orphans()

    @classmethod
    def for_project(
        cls, api_url: str, project: str, spool_dir: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> Spool:
        """The spool of one API URL + project under ``spool_dir`` (default ``default_spool_dir()``)."""
        root = Path(spool_dir) if spool_dir is not None else default_spool_dir()
        return cls(root / spool_key(api_url, project), **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def directory(self) -> str:
        return self._dir

    @property
    def available(self) -> bool:
        """False while appends are refused (disk full, read-only, closed, forked)."""
        return self._available and not self._closed and not self._forked

    # ------------------------------------------------------------------ writing
    def append(self, envelope: Envelope) -> bool:
        """Store one payload; True once it is in the page cache (it then survives ``kill -9``), False if refused.

        Refused (counted ``refused``) when the spool is unavailable, closed, or storing it would pass ``max_bytes``:
        the *new* payload is refused, what is already on disk stays (it is older and closer to being replayed;
        dropping whole old segments would lose many payloads to store one). The caller still holds a refused
        payload and counts it.
        """
        with self._lock:
            try:
                return self._append(envelope, fsync=True)
            except Exception:  # never let a bug in the spool reach the SDK loop
                logger.exception("judgeval_async spool: append failed")
                self._refuse(envelope)
                return False

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
                try:
                    stored = self._append(env, fsync=False)
                except Exception:
                    logger.exception("judgeval_async spool: append failed")
                    self._refuse(env)
                    stored = False
                if not stored:
                    left.append(env)
            self._sync()
        return left

    def sync(self) -> None:
        """fsync the segment being written now (``close`` and ``persist_all`` do it too)."""
        with self._lock:
            self._sync()

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
        """Adopt the spools of dead processes in this directory (their lock is free); returns the items adopted."""
        with self._lock:
            if self._closed or self._forked or not self._available:
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
            by_signal: dict[str, dict[str, int]] = {}
            for (signal, event), n in self._counts.items():
                by_signal.setdefault(signal, {})[event] = n
            for signal, n in self._pending_by_signal.items():
                by_signal.setdefault(signal, {})["spooled"] = n

            def total(event: str) -> int:
                return sum(n for (_, e), n in self._counts.items() if e == event)

            return SpoolStats(
                available=self.available,
                unavailable_reason="" if self.available else self._unavailable_reason,
                items=self._items,
                bytes=self._bytes,
                records=self._records,
                disk_bytes=self._disk_bytes,
                appended=total("appended"),
                adopted=total("adopted"),
                replayed=total("replayed"),
                dropped=total("dropped"),
                expired=total("expired"),
                corrupt=total("corrupt"),
                refused=total("refused"),
                corrupt_records=self._corrupt_records,
                write_errors=self._write_errors,
                adopted_processes=self._adopted_processes,
                oldest_created=self._oldest_created(),
                by_signal=by_signal,
            )

    def close(self) -> None:
        """fsync, close every file and release the locks; unsettled records stay for the next process. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._forked:
                return
            with contextlib.suppress(OSError):
                self._sync()
            own_left = False
            for seg in list(self._segments):
                if seg.claim is None and seg.unresolved > 0:
                    own_left = True
                if seg.unresolved == 0:
                    seg.writable = False
                    self._reclaim(seg)
                else:
                    close_fd(seg.fd)
                    close_fd(seg.ack_fd)
            self._segments.clear()
            self._active = None
            for claim in self._claims.values():
                close_fd(claim.fd)  # releases the flock; the next process adopts what is left
            self._claims.clear()
            if self._lock_fd >= 0:
                if not own_left:
                    with contextlib.suppress(OSError):
                        self._ops.unlink(self._lock_path())
                close_fd(self._lock_fd)
                self._lock_fd = -1
            _LIVE.discard(self)

    # ------------------------------------------------------------------ internals: start, availability
    def _lock_path(self) -> str:
        return os.path.join(self._dir, f"{self._wid}.lock")

    def _start(self) -> None:
        try:
            self._ops.makedirs(self._dir)
            fd = self._ops.open(self._lock_path(), os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except OSError as exc:
            self._set_unavailable(exc)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            info = json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": time.time()})
            self._ops.writev(fd, [info.encode()])
        except OSError as exc:
            close_fd(fd)
            with contextlib.suppress(OSError):
                self._ops.unlink(self._lock_path())
            self._set_unavailable(exc)
            return
        self._lock_fd = fd
        about = os.path.join(self._dir, "about.json")
        if not os.path.exists(about):
            with contextlib.suppress(OSError):
                afd = self._ops.open(about, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                try:
                    self._ops.writev(afd, [json.dumps({"layout": 1, "format": "JSP1"}).encode()])
                finally:
                    close_fd(afd)
        self._available = True
        self._unavailable_reason = ""

    def _set_unavailable(self, exc: OSError | str) -> None:
        reason = exc if isinstance(exc, str) else (errno.errorcode.get(exc.errno or 0, "") or type(exc).__name__)
        if isinstance(exc, OSError):
            self._write_errors += 1
        self._available = False
        self._unavailable_reason = reason
        self._unavailable_since = time.monotonic()
        self._log_once(
            "unavailable:" + reason,
            "judgeval_async spool %s is unavailable (%s): payloads stay in memory only until it recovers",
            self._dir,
            exc,
        )

    def _ensure_available(self) -> bool:
        if self._closed or self._forked:
            return False
        if self._available:
            return True
        if time.monotonic() - self._unavailable_since < self._retry_after:
            return False
        # Try again: a new segment (the old active one's state after a failed write or fsync is unknown).
        if self._active is not None:
            self._active.writable = False
            self._active = None
        if self._lock_fd < 0:
            self._start()
        else:
            self._available = True
        if self._available:
            self._log_once(
                "recovered:" + self._unavailable_reason, "judgeval_async spool %s is available again", self._dir
            )
        return self._available

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key in self._logged:
            return
        self._logged.add(key)
        logger.warning(msg, *args)

    def _refuse(self, env: Envelope) -> None:
        self._counts[env.signal, "refused"] += env.items

    # ------------------------------------------------------------------ internals: writing
    def _append(self, env: Envelope, *, fsync: bool) -> bool:
        if not self._ensure_available():
            self._refuse(env)
            return False
        encoded = fmt.encode_record(env)
        size = fmt.record_size(env, encoded)
        if self._disk_bytes + size > self._max_bytes:
            self._expire_segments()
            self._reuse_active_if_settled()
        if self._disk_bytes + size > self._max_bytes:
            self._log_once(
                "full",
                "judgeval_async spool %s is full (spool_max_bytes=%d): new payloads are refused",
                self._dir,
                self._max_bytes,
            )
            self._refuse(env)
            return False
        seg = self._active
        if seg is None or not seg.writable or (seg.end > 0 and seg.end + size > self._segment_max):
            seg = self._new_segment()
            if seg is None:
                self._refuse(env)
                return False
        start = seg.end
        try:
            written = self._ops.writev(seg.fd, encoded)
            if written < size:  # only on a full disk or a signal: finish it or fail
                rest = b"".join(encoded)[written:]
                while rest:
                    n = self._ops.writev(seg.fd, [rest])
                    if n <= 0:
                        raise OSError(errno.ENOSPC, "short write")
                    rest = rest[n:]
        except OSError as exc:
            self._undo_torn_write(seg, start)
            self._set_unavailable(exc)
            self._refuse(env)
            return False
        seg.end = start + size
        seg.charged += size
        seg.unresolved += 1
        seg.newest_created = max(seg.newest_created, env.created)
        self._add_pending(env.signal, env.items, env.size, size)
        self._counts[env.signal, "appended"] += env.items
        self._dirty = True
        if fsync and self._fsync_interval is not None and time.monotonic() - self._last_fsync >= self._fsync_interval:
            self._sync()
        return True

    def _undo_torn_write(self, seg: Segment, start: int) -> None:
        """Cut a partial record off, so the segment stays a sequence of whole records; if even that fails, stop
        writing this segment (its torn tail will be counted as one corrupt record by whoever scans it)."""
        try:
            self._ops.truncate(seg.fd, start)
        except OSError:
            seg.writable = False
            if self._active is seg:
                self._active = None

    def _new_segment(self) -> Segment | None:
        if self._active is not None:
            self._sync()  # what was written to the segment being sealed is on disk before the next one starts
            if not self._available:
                return None
        if self._active is not None:
            self._active.writable = False
            if self._active.unresolved == 0 and self._active.outstanding == 0:
                self._reclaim(self._active)
            self._active = None
        self._seq += 1
        path = os.path.join(self._dir, f"{self._wid}-{self._seq:06d}.seg")
        try:
            fd = self._ops.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        except OSError as exc:
            self._set_unavailable(exc)
            return None
        if self._fsync_interval is not None:
            self._fsync_dir()
        seg = Segment(path, fd, writable=True, claim=None, created=self._clock())
        self._segments.append(seg)  # the newest data: always last
        self._active = seg
        return seg

    def _fsync_dir(self) -> None:
        try:
            dfd = os.open(self._dir, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            self._ops.fsync(dfd)
        except OSError:
            pass
        finally:
            close_fd(dfd)

    def _sync(self) -> None:
        seg = self._active
        self._last_fsync = time.monotonic()
        if seg is None or not self._dirty or self._forked:
            return
        self._dirty = False
        try:
            self._ops.fsync(seg.fd)
        except OSError as exc:
            # After a failed fsync the page cache state is unknown (the kernel may have dropped the dirty pages):
            # stop writing here rather than retry the fsync, which would prove nothing.
            seg.writable = False
            self._active = None
            self._set_unavailable(exc)

    def _add_pending(self, signal: str, items: int, payload_bytes: int, disk_bytes: int) -> None:
        self._items += items
        self._bytes += payload_bytes
        self._records += 1
        self._disk_bytes += disk_bytes
        self._pending_by_signal[signal] += items

    def _count_settled(self, signal: str, items: int, nbytes: int, event: str) -> None:
        self._counts[signal, event] += items
        self._items -= items
        self._bytes -= nbytes
        self._records -= 1
        self._pending_by_signal[signal] -= items
        if self._pending_by_signal[signal] <= 0:
            del self._pending_by_signal[signal]

    # ------------------------------------------------------------------ internals: reading and settling
    def _oldest_created(self) -> float | None:
        if self._returned:
            return self._returned[0].envelope.created
        for seg in self._segments:
            if seg.read_at < seg.end:
                _, header = fmt.read_header(seg.fd, seg.read_at, seg.end)
                if header is not None:
                    return header.created
                return seg.first_created
        return None

    def _next_record(self) -> SpoolRecord | None:
        cutoff = self._clock() - self._max_age
        while self._returned:
            record = self._returned.popleft()
            if record.done:
                continue
            if record.envelope.created < cutoff:
                record._segment.outstanding -= 1
                record.done = True
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
                        self._corrupt_records += 1
                    seg.read_at = fmt.resync(seg.fd, at, seg.end)
                    continue
                if status is fmt.Status.TRUNCATED:  # only in a segment damaged after it was scanned
                    seg.read_at = seg.end
                    self._corrupt_records += 1
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
                    self._corrupt_records += 1
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
        self._count_settled(signal, items, nbytes, event)
        seg.unresolved -= 1
        if seg.unresolved <= 0 and seg.outstanding <= 0 and not seg.writable:
            self._reclaim(seg)
            return
        if seg is self._active and seg.unresolved <= 0 and seg.outstanding <= 0:
            self._reuse_active_if_settled()
            return
        self._write_ack(seg, offset)

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
        self._disk_bytes += fmt.ACK.size
        seg.acked.add(offset)

    def _reuse_active_if_settled(self) -> None:
        """Empty the segment being written when every record in it is settled, instead of creating a new file."""
        seg = self._active
        if seg is None or seg.unresolved > 0 or seg.outstanding > 0 or seg.end == 0:
            return
        try:
            # Acks first: a crash between the two truncations leaves records without acks (resent), never acks
            # pointing at new records (lost).
            if seg.ack_fd >= 0:
                self._ops.truncate(seg.ack_fd, 0)
            self._ops.truncate(seg.fd, 0)
        except OSError:
            seg.writable = False
            self._active = None
            self._reclaim(seg)
            return
        self._disk_bytes -= seg.charged + seg.ack_bytes
        seg.end = seg.read_at = seg.ack_bytes = seg.charged = 0
        seg.acked.clear()

    def _reclaim(self, seg: Segment) -> None:
        """Delete a fully settled segment and its ack file (the ack file last: see ``_reuse_active_if_settled``)."""
        if seg in self._segments:
            self._segments.remove(seg)
        if self._active is seg:
            self._active = None
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
        self._disk_bytes -= seg.charged + seg.ack_bytes
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
            if seg.newest_created >= cutoff or seg.outstanding > 0 or seg is self._active:
                continue
            at = seg.read_at
            while at < seg.end:
                status, header = fmt.read_header(seg.fd, at, seg.end)
                if header is None:
                    if not seg.headers_counted:
                        self._corrupt_records += 1
                    at = fmt.resync(seg.fd, at, seg.end)
                    continue
                at = header.next_at if status is fmt.Status.OK else seg.end
                if header.offset in seg.acked or status is not fmt.Status.OK:
                    continue
                self._count_settled(header.signal, header.items, header.payload_len, "expired")
                expired += header.items
            seg.unresolved = 0
            seg.writable = False
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
        by_writer.pop(self._wid, None)
        adopted = 0
        for wid in sorted(set(by_writer) - set(self._claims)):
            claim = claim_writer(self._dir, wid, self._ops)
            if claim is None:
                continue
            self._claims[wid] = claim
            self._adopted_processes += 1
            claim.remaining = len(by_writer[wid])
            for name in sorted(by_writer[wid]):
                adopted += self._adopt_segment(os.path.join(self._dir, name), claim)
            if claim.remaining <= 0:
                self._release_claim(claim)
        self._segments.sort(key=lambda s: s.sort_key)
        return adopted

    def _adopt_segment(self, path: str, claim: Claim) -> int:
        seg, scan = scan_segment(path, claim)
        self._corrupt_records += scan.bad_headers + (1 if scan.torn else 0)
        for signal, items in scan.torn.items():
            self._counts[signal, "adopted"] += items
            self._counts[signal, "corrupt"] += items
        if seg is None:
            claim.remaining -= 1
            return 0
        self._segments.append(seg)
        self._disk_bytes += seg.charged + seg.ack_bytes
        for signal, items in scan.adopted.items():
            self._counts[signal, "adopted"] += items
            self._pending_by_signal[signal] += items
            self._items += items
        self._bytes += scan.payload_bytes
        self._records += scan.records
        if seg.unresolved == 0:
            self._reclaim(seg)
        return sum(scan.adopted.values())

    # ------------------------------------------------------------------ fork
    def _forget_in_child(self) -> None:
        """In a forked child: close inherited descriptors (without unlocking: the lock is the parent's) and refuse
        everything from now on."""
        self._forked = True
        self._available = False
        self._unavailable_reason = "forked"
        self._lock = threading.Lock()  # the parent's may have been held by another thread at fork time
        for seg in self._segments:
            close_fd(seg.fd)
            close_fd(seg.ack_fd)
        for claim in self._claims.values():
            close_fd(claim.fd)
        close_fd(self._lock_fd)
        self._segments = []
        self._claims = {}
        self._active = None
        self._returned.clear()
        self._lock_fd = -1
