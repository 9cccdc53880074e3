"""This process's side of the spool directory: its lock file, the segment being written, fsync, availability.

A record is appended with one ``writev`` on an ``O_APPEND`` descriptor. A short write (a disk filling up) is
finished or cut off with ``ftruncate``, so a segment is always a sequence of whole records; any ``OSError`` while
writing, creating a segment or fsyncing makes the writer *unavailable* until ``retry_unavailable_after`` has passed,
when it tries again in a new segment (the old one's state after a failed write or fsync is unknown).

Not thread-safe on its own: ``Spool`` calls it under its lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Callable

from ._segment import FileOps, Segment, close_fd

__all__ = ["SegmentWriter"]

logger = logging.getLogger("judgeval_async._delivery._spool")


class SegmentWriter:
    """Appends records to this process's own segments (``<wid>-<seq>.seg``) and holds ``<wid>.lock``."""

    def __init__(
        self,
        directory: str,
        *,
        segment_max_bytes: int,
        fsync_interval: float | None,
        retry_unavailable_after: float,
        clock: Callable[[], float],
        ops: FileOps,
        log_once: Callable[..., None],
    ) -> None:
        self.directory = directory
        self.wid = f"{int(time.time() * 1000):013d}-{os.getpid()}-{secrets.token_hex(4)}"
        self.active: Segment | None = None
        self.available = False
        self.unavailable_reason = "not started"
        self.write_errors = 0
        self._segment_max = segment_max_bytes
        self._fsync_interval = fsync_interval
        self._retry_after = retry_unavailable_after
        self._clock = clock
        self._ops = ops
        self._log_once = log_once
        self._lock_fd = -1
        self._seq = 0
        self._dirty = False
        self._last_fsync = time.monotonic()
        self._unavailable_since = time.monotonic()

    @property
    def lock_path(self) -> str:
        return os.path.join(self.directory, f"{self.wid}.lock")

    def start(self) -> None:
        """Create the directory and take this process's lock; on any error the writer stays unavailable."""
        try:
            self._ops.makedirs(self.directory)
            fd = self._ops.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except OSError as exc:
            self._fail(exc)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            info = json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": time.time()})
            self._ops.writev(fd, [info.encode()])  # for people reading the directory; never parsed
        except OSError as exc:
            close_fd(fd)
            with contextlib.suppress(OSError):
                self._ops.unlink(self.lock_path)
            self._fail(exc)
            return
        self._lock_fd = fd
        about = os.path.join(self.directory, "about.json")
        if not os.path.exists(about):
            with contextlib.suppress(OSError):
                afd = self._ops.open(about, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                try:
                    self._ops.writev(afd, [json.dumps({"layout": 1, "format": "JSP1"}).encode()])
                finally:
                    close_fd(afd)
        self.available = True
        self.unavailable_reason = ""

    def ensure_available(self) -> bool:
        """True when a write may be tried now: available, or unavailable for longer than the retry interval."""
        if self.available:
            return True
        if time.monotonic() - self._unavailable_since < self._retry_after:
            return False
        self.seal_active()
        if self._lock_fd < 0:
            self.start()
        else:
            self.available = True
        if self.available:
            self._log_once("recovered", "judgeval_async spool %s is available again", self.directory)
        return self.available

    def write(
        self, encoded: tuple[bytes, bytes, bytes], size: int, *, on_new: Callable[[Segment], None]
    ) -> Segment | None:
        """Append one encoded record of ``size`` bytes; the segment it went to, or None (the writer is then
        unavailable). A new segment is announced through ``on_new`` before the record is written to it."""
        seg = self.active
        if seg is None or not seg.writable or (seg.end > 0 and seg.end + size > self._segment_max):
            seg = self._new_segment(on_new)
            if seg is None:
                return None
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
            self._fail(exc)
            return None
        seg.end = start + size
        seg.charged += size
        self._dirty = True
        return seg

    def sync_if_due(self) -> None:
        if self._fsync_interval is not None and time.monotonic() - self._last_fsync >= self._fsync_interval:
            self.sync()

    def sync(self) -> None:
        """fsync the segment being written, if anything was written to it since the last fsync."""
        seg = self.active
        self._last_fsync = time.monotonic()
        if seg is None or not self._dirty:
            return
        self._dirty = False
        try:
            self._ops.fsync(seg.fd)
        except OSError as exc:
            # After a failed fsync the page cache state is unknown (the kernel may have dropped the dirty pages):
            # stop writing here rather than retry the fsync, which would prove nothing.
            self.seal_active()
            self._fail(exc)

    def seal_active(self) -> None:
        """Stop writing the current segment (it stays in the spool's queue until settled)."""
        if self.active is not None:
            self.active.writable = False
            self.active = None

    def close(self, *, remove_lock: bool) -> None:
        """Release the lock (closing it releases the flock); remove the lock file when nothing of ours is left."""
        if self._lock_fd >= 0:
            if remove_lock:
                with contextlib.suppress(OSError):
                    self._ops.unlink(self.lock_path)
            close_fd(self._lock_fd)
            self._lock_fd = -1
        self.active = None
        self.available = False

    def forget_in_child(self) -> None:
        """After fork: close the inherited lock descriptor without unlocking (the lock is the parent's)."""
        close_fd(self._lock_fd)
        self._lock_fd = -1
        self.active = None
        self.available = False
        self.unavailable_reason = "forked"

    # ------------------------------------------------------------------ internals
    def _new_segment(self, on_new: Callable[[Segment], None]) -> Segment | None:
        if self.active is not None:
            self.sync()  # what was written to the segment being sealed is on disk before the next one starts
            if not self.available:
                return None
            self.seal_active()
        self._seq += 1
        path = os.path.join(self.directory, f"{self.wid}-{self._seq:06d}.seg")
        try:
            fd = self._ops.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        except OSError as exc:
            self._fail(exc)
            return None
        if self._fsync_interval is not None:
            self._fsync_dir()
        seg = Segment(path, fd, writable=True, claim=None, created=self._clock())
        self.active = seg
        on_new(seg)
        return seg

    def _undo_torn_write(self, seg: Segment, start: int) -> None:
        """Cut a partial record off; if even that fails, stop writing this segment (its torn tail is counted as one
        corrupt record by whoever scans it)."""
        try:
            self._ops.truncate(seg.fd, start)
        except OSError:
            if self.active is seg:
                self.seal_active()

    def _fsync_dir(self) -> None:
        try:
            dfd = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            self._ops.fsync(dfd)
        except OSError:
            pass
        finally:
            close_fd(dfd)

    def _fail(self, exc: OSError) -> None:
        reason = errno.errorcode.get(exc.errno or 0, "") or type(exc).__name__
        self.write_errors += 1
        self.available = False
        self.unavailable_reason = reason
        self._unavailable_since = time.monotonic()
        self._log_once(
            "unavailable:" + reason,
            "judgeval_async spool %s is unavailable (%s): payloads stay in memory only until it recovers",
            self.directory,
            exc,
        )
