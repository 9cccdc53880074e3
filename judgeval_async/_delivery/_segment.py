"""The spool's files: where they live, the write seam, one segment's state, claiming a dead writer, scanning.

Everything here is the file-level half of ``_spool``: no counters, no policy. ``Spool`` owns the segments and
applies what a scan found to its counters.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import _format as fmt

__all__ = [
    "Claim",
    "FileOps",
    "Scan",
    "Segment",
    "claim_writer",
    "close_fd",
    "default_spool_dir",
    "scan_segment",
    "spool_key",
    "writer_of",
]


def default_spool_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/judgeval_async``, else ``~/.cache/judgeval_async`` (a per-user cache directory)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "judgeval_async"


def spool_key(api_url: str, project: str) -> str:
    """The directory name for one API URL + project: a hash, so neither needs to be a valid file name."""
    digest = hashlib.sha256(f"{api_url.rstrip('/')}\n{project}".encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:32]


def writer_of(name: str) -> str | None:
    """The writer id a spool file name belongs to (``<wid>.lock``, ``<wid>-<seq>.seg``), or None."""
    if name.endswith(".lock"):
        return name[: -len(".lock")]
    if name.endswith(".seg"):
        return name[: -len(".seg")].rsplit("-", 1)[0]
    return None


class FileOps:
    """The file-system calls that write, in one object: tests subclass it to inject ENOSPC/EROFS/EIO.

    Reads (``os.pread``) and ``flock`` are not routed through it; they do not fail on a full or read-only disk.
    """

    def makedirs(self, path: str) -> None:
        os.makedirs(path, mode=0o700, exist_ok=True)

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        return os.open(path, flags | os.O_CLOEXEC, mode)

    def writev(self, fd: int, buffers: Sequence[bytes]) -> int:
        return os.writev(fd, buffers)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def unlink(self, path: str) -> None:
        os.unlink(path)


def close_fd(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


class Claim:
    """A dead writer's lock, held while its segments are replayed; released when the last one is gone."""

    __slots__ = ("fd", "lock_path", "remaining")

    def __init__(self, fd: int, lock_path: str) -> None:
        self.fd = fd
        self.lock_path = lock_path
        self.remaining = 0


def claim_writer(directory: str, wid: str, ops: FileOps) -> Claim | None:
    """Lock writer ``wid``'s lock file without waiting; None if its owner is alive (or another process adopted it).

    ``flock`` locks die with their process, so a lock we can take belongs to a dead writer. Segments whose lock file
    is missing (deleted by hand) get a new one, created exclusively, so adopters still exclude each other.
    """
    path = os.path.join(directory, f"{wid}.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            fd = ops.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except OSError:
            return None
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The previous adopter may have unlinked the path between our open and our lock: then it is done.
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise FileNotFoundError(path)
    except OSError:
        close_fd(fd)
        return None
    return Claim(fd, path)


class Segment:
    """One segment file and what this process knows about it (mutated by ``Spool`` under its lock)."""

    __slots__ = (
        "ack_bytes",
        "ack_fd",
        "ack_path",
        "acked",
        "charged",
        "claim",
        "end",
        "fd",
        "first_created",
        "headers_counted",
        "newest_created",
        "outstanding",
        "path",
        "read_at",
        "sort_key",
        "unresolved",
        "writable",
    )

    def __init__(self, path: str, fd: int, *, writable: bool, claim: Claim | None, created: float) -> None:
        self.path = path
        self.ack_path = path[: -len(".seg")] + ".ack"
        self.fd = fd
        self.ack_fd = -1
        self.ack_bytes = 0
        self.acked: set[int] = set()  # offsets settled by an earlier process (from the ack file)
        self.claim = claim  # the dead writer's lock when adopted, None for our own segments
        self.end = 0  # valid data ends here; anything after is a torn write to ignore
        self.charged = 0  # segment bytes counted in the spool's disk_bytes (the file's size, torn tail included)
        self.read_at = 0
        self.unresolved = 0  # valid records not yet settled (includes outstanding ones)
        self.outstanding = 0  # handed out by next_record, not yet settled or requeued
        self.writable = writable
        self.headers_counted = False  # a scan already counted this segment's unreadable headers
        self.first_created = created
        self.newest_created = created
        self.sort_key = (created, os.path.basename(path))


@dataclass
class Scan:
    """What scanning an adopted segment found (items per signal), for the spool's counters."""

    adopted: Counter[str] = field(default_factory=Counter)  # items now pending, per signal
    torn: Counter[str] = field(default_factory=Counter)  # items of a torn last record (adopted and corrupt)
    payload_bytes: int = 0
    records: int = 0
    bad_headers: int = 0


def scan_segment(path: str, claim: Claim) -> tuple[Segment | None, Scan]:
    """Open a dead writer's segment read-only and read every header (not the payloads: their CRC is checked when
    replayed), skipping records its ack file settled. None when the file cannot be opened."""
    scan = Scan()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        end = os.fstat(fd).st_size
    except OSError:
        return None, scan
    seg = Segment(path, fd, writable=False, claim=claim, created=0.0)
    seg.end = seg.charged = end
    try:
        with open(seg.ack_path, "rb") as f:
            data = f.read()
        seg.acked = fmt.decode_acks(data)
        seg.ack_bytes = len(data)
    except OSError:
        pass
    first: float | None = None
    at = 0
    while at < end:
        status, header = fmt.read_header(fd, at, end)
        if header is None:
            scan.bad_headers += 1
            at = fmt.resync(fd, at, end)
            continue
        if status is fmt.Status.TRUNCATED:
            # A torn last append (the writer was killed in the middle of it): items known, payload gone.
            scan.torn[header.signal] += header.items
            seg.end = at
            break
        at = header.next_at
        if header.offset in seg.acked:
            continue
        first = header.created if first is None else min(first, header.created)
        seg.newest_created = max(seg.newest_created, header.created)
        seg.unresolved += 1
        scan.adopted[header.signal] += header.items
        scan.payload_bytes += header.payload_len
        scan.records += 1
    seg.headers_counted = True
    seg.first_created = first if first is not None else 0.0
    seg.sort_key = (seg.first_created, os.path.basename(path))
    return seg, scan
