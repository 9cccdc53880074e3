"""Unit tests for judgeval_async._delivery._spool: real files in tmp_path, real processes for locks and kill -9."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from judgeval_async._delivery import _format as fmt
from judgeval_async._delivery._envelope import Envelope, new_envelope
from judgeval_async._delivery._spool import (
    FileOps,
    Spool,
    SpoolBudget,
    SpoolRecord,
    SpoolStats,
    default_spool_dir,
    spool_key,
)
from judgeval_async._errors import ConfigError


class Clock:
    """A settable wall clock."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def env(i: int, size: int = 1000, *, signal: str = "spans", items: int = 10, created: float | None = None) -> Envelope:
    payload = (f"{i:08d}".encode() * (size // 8 + 1))[:size]
    return new_envelope(payload, signal=signal, items=items, route="otlp_traces", extra={"i": str(i)}, created=created)


def drain(spool: Spool, *, ack: bool = True) -> list[SpoolRecord]:
    out = []
    while (rec := spool.next_record()) is not None:
        out.append(rec)
        if ack:
            spool.ack(rec)
    return out


def balanced(s: SpoolStats) -> bool:
    return s.appended + s.adopted == s.items + s.replayed + s.dropped + s.expired + s.corrupt


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


@pytest.fixture
def spools() -> Iterator[list[Spool]]:
    made: list[Spool] = []
    yield made
    for s in made:
        s.close()


@pytest.fixture
def make(tmp_path: Path, spools: list[Spool]):  # type: ignore[no-untyped-def]
    def make(directory: Path | None = None, **kwargs: object) -> Spool:
        s = Spool(directory or tmp_path / "spool", **kwargs)  # type: ignore[arg-type]
        spools.append(s)
        return s

    return make


# ------------------------------------------------------------------ basics
def test_append_then_replay_returns_the_same_envelope(make) -> None:  # type: ignore[no-untyped-def]
    """A spooled envelope comes back byte-identical with every metadata field, then ack settles it."""
    spool = make()
    original = new_envelope(b"\x00\xffpayload", signal="evals", items=3, route="evals_add", extra={"ce": "gzip"})
    assert spool.append(original)
    rec = spool.next_record()
    assert rec is not None
    assert rec.envelope == original
    assert spool.next_record() is None  # handed out once
    spool.ack(rec)
    s = spool.stats()
    assert (s.items, s.records, s.bytes, s.replayed, s.appended) == (0, 0, 0, 3, 3)
    assert balanced(s)


def test_replay_is_oldest_first_across_segments(make) -> None:  # type: ignore[no-untyped-def]
    """Records come back in append order across many rolled segments."""
    spool = make(segment_max_bytes=5000)
    for i in range(40):
        assert spool.append(env(i, 1500))
    assert len(segments(Path(spool.directory))) > 5
    got = [int(r.envelope.extra["i"]) for r in drain(spool)]
    assert got == list(range(40))


def test_settled_segments_are_deleted_and_a_clean_close_leaves_nothing(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Once every record is acked, segment and ack files are reclaimed; close removes the lock file too."""
    spool = make(segment_max_bytes=5000)
    for i in range(20):
        spool.append(env(i, 1500))
    drain(spool)
    assert spool.stats().disk_bytes == 0
    spool.close()
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["about.json"]


def test_requeue_hands_the_record_out_again_first(make) -> None:  # type: ignore[no-untyped-def]
    """A requeued record is the next one handed out, and its settlement still counts once."""
    spool = make()
    for i in range(3):
        spool.append(env(i))
    first = spool.next_record()
    assert first is not None
    spool.requeue(first)
    again = spool.next_record()
    assert again is first
    spool.ack(again)
    spool.ack(again)  # idempotent
    assert [int(r.envelope.extra["i"]) for r in drain(spool)] == [1, 2]
    s = spool.stats()
    assert s.replayed == 30 and balanced(s)


def test_drop_counts_dropped_not_replayed(make) -> None:  # type: ignore[no-untyped-def]
    """drop() settles a record as dropped (a poison payload), per signal."""
    spool = make()
    spool.append(env(0, signal="tags", items=4))
    rec = spool.next_record()
    assert rec is not None
    spool.drop(rec)
    s = spool.stats()
    assert (s.dropped, s.replayed) == (4, 0)
    assert s.by_signal["tags"]["dropped"] == 4
    assert balanced(s)


def test_bad_configuration_names_the_field(tmp_path: Path) -> None:
    """Invalid sizes and ages raise ConfigError naming the field."""
    for kwargs, name in [
        ({"max_bytes": 0}, "spool_max_bytes"),
        ({"max_item_age": 0}, "max_item_age"),
        ({"segment_max_bytes": -1}, "segment_max_bytes"),
        ({"fsync_interval": -1.0}, "fsync_interval"),
    ]:
        with pytest.raises(ConfigError) as info:
            Spool(tmp_path, **kwargs)  # type: ignore[arg-type]
        assert info.value.field == name


def test_default_directory_and_key() -> None:
    """The spool lives under $XDG_CACHE_HOME (absolute only) or ~/.cache, one directory per API URL + project."""
    assert default_spool_dir({"XDG_CACHE_HOME": "/x/cache"}) == Path("/x/cache/judgeval_async")
    assert default_spool_dir({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "judgeval_async"
    assert default_spool_dir({}) == Path.home() / ".cache" / "judgeval_async"
    assert spool_key("https://api/", "p") == spool_key("https://api", "p")
    assert spool_key("https://api", "p") != spool_key("https://api", "q")
    assert spool_key("https://api", "p") != spool_key("https://other", "p")


def test_for_project_uses_the_keyed_directory(tmp_path: Path, spools: list[Spool]) -> None:
    """for_project() puts the spool in <spool_dir>/<spool_key(api_url, project)>."""
    spool = Spool.for_project("https://api.example", "proj", spool_dir=tmp_path)
    spools.append(spool)
    assert Path(spool.directory) == tmp_path / spool_key("https://api.example", "proj")


def test_files_are_private_to_the_user(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Payloads may hold user data: the directory is 0700 and the files 0600."""
    spool = make()
    spool.append(env(0))
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    for path in (tmp_path / "spool").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


# ------------------------------------------------------------------ next process, adoption, locks
def test_next_process_replays_what_was_not_acked(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Acked records are not replayed by the next spool on the directory; the rest are, in order, once."""
    first = make(segment_max_bytes=4000)
    for i in range(10):
        first.append(env(i, 1500))
    for rec in drain(first, ack=False)[:4]:
        first.ack(rec)
    first.close()
    second = make()
    s = second.stats()
    assert (s.adopted, s.items, s.adopted_processes) == (60, 60, 1)
    assert [int(r.envelope.extra["i"]) for r in drain(second)] == list(range(4, 10))
    assert balanced(second.stats())
    second.close()
    third = make()
    assert third.stats().adopted == 0
    third.close()
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["about.json"]


def test_replay_merges_own_and_adopted_records_oldest_first(make) -> None:  # type: ignore[no-untyped-def]
    """An adopted (older) spool replays before the adopter's own newer records."""
    clock = Clock()
    old = make(clock=clock)
    for i in range(3):
        old.append(env(i, created=clock.now + i))
    old.close()
    clock.now += 100
    new = make(clock=clock, adopt=False)
    for i in range(3, 6):
        new.append(env(i, created=clock.now + i))
    assert new.adopt_orphans() == 30
    assert [int(r.envelope.extra["i"]) for r in drain(new)] == list(range(6))


def _spawn(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _wait_line(proc: subprocess.Popen[str], expected: str, timeout: float = 30.0) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line:
            break
    raise AssertionError(f"child did not print {expected!r}")


def test_a_live_process_spool_is_never_adopted_and_a_dead_ones_is(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Another live process holds its lock: we do not adopt; after it is killed (-9) its records are adopted once."""
    directory = tmp_path / "spool"
    child = _spawn(
        f"""
        import sys, time
        from judgeval_async._delivery._spool import Spool
        from judgeval_async._delivery._envelope import new_envelope
        s = Spool({str(directory)!r})
        for i in range(5):
            assert s.append(new_envelope(b"x" * 100, signal="spans", items=1, route="r", extra={{"i": str(i)}}))
        print("ready", flush=True)
        sys.stdin.readline()
        """
    )
    try:
        _wait_line(child, "ready")
        mine = make(directory)
        assert mine.stats().adopted == 0
        assert mine.adopt_orphans() == 0
        assert mine.next_record() is None
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert mine.adopt_orphans() == 5
        assert mine.adopt_orphans() == 0  # already ours
        assert sorted(int(r.envelope.extra["i"]) for r in drain(mine)) == list(range(5))
    finally:
        child.kill()
        child.wait(timeout=30)
        assert child.stdout is not None
        child.stdout.close()
        assert child.stdin is not None
        child.stdin.close()


def test_two_adopters_never_replay_the_same_dead_spool(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """While one process replays a dead spool (holding its lock), a second process cannot adopt it."""
    directory = tmp_path / "spool"
    dead = make(directory)
    for i in range(5):
        dead.append(env(i))
    dead.close()  # records left, lock released: an orphan
    adopter = _spawn(
        f"""
        import sys
        from judgeval_async._delivery._spool import Spool
        s = Spool({str(directory)!r})
        print("adopted", s.stats().adopted, flush=True)
        sys.stdin.readline()
        """
    )
    try:
        assert adopter.stdout is not None
        assert adopter.stdout.readline().split() == ["adopted", "50"]
        second = make(directory)
        assert second.stats().adopted == 0  # the live adopter holds the dead writer's lock
        adopter.send_signal(signal.SIGKILL)
        adopter.wait(timeout=30)
        assert second.adopt_orphans() == 50  # the adopter died without acking: it is ours now, once
        assert len(drain(second)) == 5
    finally:
        adopter.kill()
        adopter.wait(timeout=30)
        assert adopter.stdout is not None
        adopter.stdout.close()
        assert adopter.stdin is not None
        adopter.stdin.close()


def test_fork_child_does_not_keep_the_parents_lock(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A forked child's copy refuses appends and does not hold the parent's flock once the parent closes."""
    directory = tmp_path / "spool"
    parent = make(directory)
    parent.append(env(0))
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork in a threaded pytest process (3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = not parent.append(env(1)) and parent.next_record() is None
        os.write(write_fd, b"1" if ok else b"0")
        time.sleep(3)
        os._exit(0)
    os.close(write_fd)
    try:
        assert os.read(read_fd, 1) == b"1"
        parent.close()
        other = make(directory)  # the child is still alive and sleeping
        assert other.stats().adopted == 10
    finally:
        os.close(read_fd)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# ------------------------------------------------------------------ crash: kill -9 of a writer mid-append
@pytest.mark.slow
def test_kill_9_mid_append_loses_nothing_acknowledged(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A writer killed with SIGKILL while appending: every append that returned True is replayed (the window is
    the append in progress), and a torn tail costs at most one corrupt record."""
    directory = tmp_path / "spool"
    writer = _spawn(
        f"""
        import os, sys
        from judgeval_async._delivery._spool import Spool
        from judgeval_async._delivery._envelope import new_envelope
        s = Spool({str(directory)!r}, fsync_interval=None, segment_max_bytes=2_000_000)
        i = 0
        while True:
            e = new_envelope(os.urandom(100_000), signal="spans", items=100, route="otlp")
            if s.append(e):
                sys.stdout.write(e.idempotency_key + "\\n")
                sys.stdout.flush()
            i += 1
        """
    )
    assert writer.stdout is not None
    acknowledged: list[str] = []
    try:
        while len(acknowledged) < 150:
            line = writer.stdout.readline()
            assert line, "writer exited early"
            acknowledged.append(line.strip())
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        acknowledged.extend(line.strip() for line in writer.stdout.read().splitlines())
    finally:
        writer.kill()
        writer.wait(timeout=30)
        writer.stdout.close()
        assert writer.stdin is not None
        writer.stdin.close()
    replayer = make(directory)
    keys = {r.envelope.idempotency_key for r in drain(replayer)}
    survived = sum(1 for k in acknowledged if k in keys)
    s = replayer.stats()
    assert survived >= 0.99 * len(acknowledged)
    assert survived == len(acknowledged)  # page cache: a returned append survives the process
    assert s.corrupt_records <= 1  # only the append in progress can be torn
    assert len(keys) <= len(acknowledged) + 1  # at most the one in progress, completed but not yet reported
    assert balanced(s)


# ------------------------------------------------------------------ damage
def _fill(make, n: int = 6, size: int = 2000) -> tuple[Path, list[Envelope]]:  # type: ignore[no-untyped-def]
    spool = make(segment_max_bytes=1 << 20)
    envs = [env(i, size) for i in range(n)]
    for e in envs:
        spool.append(e)
    spool.close()
    return Path(spool.directory), envs


def _record_offsets(path: Path) -> list[int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        end, at, out = os.fstat(fd).st_size, 0, []
        while at < end:
            _, header = fmt.read_header(fd, at, end)
            assert header is not None
            out.append(at)
            at = header.next_at
        return out
    finally:
        os.close(fd)


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_a_corrupt_payload_skips_only_that_record(make) -> None:  # type: ignore[no-untyped-def]
    """A flipped payload byte fails its CRC: that record is counted corrupt (with its items), the others replay."""
    directory, _ = _fill(make)
    seg = segments(directory)[0]
    offsets = _record_offsets(seg)
    _flip(seg, offsets[2] + 500)
    spool = make(directory)
    got = [int(r.envelope.extra["i"]) for r in drain(spool)]
    assert got == [0, 1, 3, 4, 5]
    s = spool.stats()
    assert (s.corrupt, s.corrupt_records) == (10, 1)
    assert balanced(s)
    assert s.disk_bytes == 0  # settled segments are reclaimed, damaged ones included


def test_a_corrupt_header_resyncs_to_the_next_record(make) -> None:  # type: ignore[no-untyped-def]
    """A flipped header byte loses that record only: the reader finds the next record by its magic and CRC."""
    directory, _ = _fill(make)
    seg = segments(directory)[0]
    offsets = _record_offsets(seg)
    _flip(seg, offsets[3] + 10)  # inside the fixed header (payload length)
    spool = make(directory)
    assert [int(r.envelope.extra["i"]) for r in drain(spool)] == [0, 1, 2, 4, 5]
    s = spool.stats()
    assert s.corrupt_records == 1
    assert s.corrupt == 0  # its item count was unreadable
    assert balanced(s)


def test_a_truncated_segment_replays_every_whole_record(make) -> None:  # type: ignore[no-untyped-def]
    """A segment cut in the middle of a record (a torn write): the whole records replay, the torn one is counted."""
    directory, _ = _fill(make)
    seg = segments(directory)[0]
    offsets = _record_offsets(seg)
    os.truncate(seg, offsets[4] + 1000)
    spool = make(directory)
    assert [int(r.envelope.extra["i"]) for r in drain(spool)] == [0, 1, 2, 3]
    s = spool.stats()
    assert (s.corrupt, s.corrupt_records) == (10, 1)
    assert balanced(s)
    assert s.disk_bytes == 0  # settled segments are reclaimed, damaged ones included


@pytest.mark.parametrize("garbage", [b"", b"J", b"JSP1", os.urandom(5000), b"JSP1" * 2000])
def test_garbage_files_never_crash(make, tmp_path: Path, garbage: bytes) -> None:  # type: ignore[no-untyped-def]
    """Garbage segment and ack files are counted and deleted, never raised."""
    directory = tmp_path / "spool"
    directory.mkdir()
    (directory / "1-1-aa-000001.seg").write_bytes(garbage)
    (directory / "1-1-aa-000001.ack").write_bytes(garbage[:37])
    (directory / "2-2-bb.lock").write_bytes(b"")
    spool = make(directory)
    assert drain(spool) == []
    assert spool.stats().items == 0
    spool.close()
    assert sorted(p.name for p in directory.iterdir()) == ["about.json"]


def test_a_damaged_ack_entry_resends_rather_than_loses(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A flipped ack entry is ignored: the record it settled is sent again (at-least-once), nothing else changes."""
    d = tmp_path / "spool"
    writer = make(d)
    for i in range(4):
        writer.append(env(i))
    recs = drain(writer, ack=False)
    writer.ack(recs[0])
    writer.ack(recs[1])
    writer.close()
    ack = next(d.glob("*.ack"))
    _flip(ack, 2)
    reader = make(d)
    assert [int(r.envelope.extra["i"]) for r in drain(reader)] == [0, 2, 3]


# ------------------------------------------------------------------ bounds: bytes and age
def test_beyond_max_bytes_the_new_payload_is_refused_and_counted(make, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """At spool_max_bytes new payloads are refused (counted per signal, logged once); what is on disk stays."""
    spool = make(max_bytes=10_000)
    with caplog.at_level(logging.WARNING):
        accepted = [spool.append(env(i, 2000)) for i in range(8)]
    assert accepted[:4] == [True] * 4 and not any(accepted[5:])
    s = spool.stats()
    assert s.disk_bytes <= 10_000
    assert s.refused == 10 * accepted.count(False)
    assert s.by_signal["spans"]["refused"] == s.refused
    assert sum("is full" in r.getMessage() for r in caplog.records) == 1
    assert [int(r.envelope.extra["i"]) for r in drain(spool)] == [i for i, ok in enumerate(accepted) if ok]
    assert spool.append(env(99, 2000))  # acking freed the space


def test_a_shared_budget_bounds_several_spools_together(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Spools sharing a SpoolBudget (a tracer's signals) refuse once their sum would pass it; a closed member's
    bytes no longer count."""
    budget = SpoolBudget(10_000)
    spans = make(tmp_path / "spans", budget=budget)
    tags = make(tmp_path / "tags", budget=budget)
    assert [spans.append(env(i, 2000)) for i in range(3)] == [True] * 3
    accepted = [tags.append(env(i, 2000, signal="tags")) for i in range(3)]
    assert accepted[0] and not accepted[-1]
    assert spans.stats().disk_bytes + tags.stats().disk_bytes <= 10_000
    spans.close()
    assert tags.append(env(9, 2000, signal="tags"))


def test_records_older_than_max_item_age_are_expired_on_replay(make) -> None:  # type: ignore[no-untyped-def]
    """Records past max_item_age are skipped and counted expired, by signal; younger ones replay."""
    clock = Clock()
    spool = make(max_item_age=60.0, clock=clock)
    spool.append(env(0, created=clock.now - 120))
    spool.append(env(1, signal="evals", items=2, created=clock.now - 61))
    spool.append(env(2, created=clock.now - 10))
    assert [int(r.envelope.extra["i"]) for r in drain(spool)] == [2]
    s = spool.stats()
    assert s.expired == 12 and s.by_signal["evals"]["expired"] == 2
    assert balanced(s)


def test_a_requeued_record_can_expire(make) -> None:  # type: ignore[no-untyped-def]
    """A record requeued during a long outage expires when it passes max_item_age."""
    clock = Clock()
    spool = make(max_item_age=60.0, clock=clock)
    spool.append(env(0, created=clock.now))
    rec = spool.next_record()
    assert rec is not None
    spool.requeue(rec)
    clock.now += 61
    assert spool.next_record() is None
    assert spool.stats().expired == 10


def test_expire_deletes_whole_old_segments_and_makes_room(make) -> None:  # type: ignore[no-untyped-def]
    """When full, old segments are expired whole (headers only) so a new payload fits; counted expired."""
    clock = Clock()
    spool = make(max_bytes=12_000, max_item_age=60.0, segment_max_bytes=4500, clock=clock)
    for i in range(4):
        assert spool.append(env(i, 2000, created=clock.now))
    clock.now += 30
    for i in range(4, 5):
        assert spool.append(env(i, 2000, created=clock.now))
    clock.now += 40  # the first four are now 70 s old
    assert spool.append(env(5, 2000, created=clock.now))
    s = spool.stats()
    assert s.expired == 40 and s.refused == 0
    assert [int(r.envelope.extra["i"]) for r in drain(spool)] == [4, 5]
    assert balanced(spool.stats())


# ------------------------------------------------------------------ exit: persist_all
def test_persist_all_stores_everything_and_fsyncs_once(tmp_path: Path, spools: list[Spool]) -> None:
    """persist_all appends every envelope and fsyncs before returning; none left over."""
    ops = CountingOps()
    spool = Spool(tmp_path / "s", fsync_interval=None, ops=ops)
    spools.append(spool)
    left = spool.persist_all([env(i) for i in range(50)], timeout=10.0)
    assert left == [] and spool.stats().records == 50
    assert ops.fsyncs == 1


def test_persist_all_returns_what_it_could_not_store(make) -> None:  # type: ignore[no-untyped-def]
    """Past its deadline or over the byte budget, persist_all returns the envelopes left (the caller counts them)."""
    spool = make(max_bytes=5000)
    envs = [env(i, 2000) for i in range(4)]
    left = spool.persist_all(envs, timeout=10.0)
    assert left == envs[2:]
    assert spool.persist_all(envs, timeout=-1.0) == envs


# ------------------------------------------------------------------ disk full / read-only
class CountingOps(FileOps):
    def __init__(self) -> None:
        self.fsyncs = 0

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        super().fsync(fd)


class FailingOps(FileOps):
    """Real file operations, except that writes (and optionally opens) fail with a chosen errno while armed."""

    def __init__(self, err: int = errno.ENOSPC, *, partial: bool = False, fail_open: bool = False) -> None:
        self.err = err
        self.partial = partial
        self.fail_open = fail_open
        self.armed = False

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        if self.armed and self.fail_open and flags & os.O_CREAT:
            raise OSError(self.err, os.strerror(self.err), path)
        return super().open(path, flags, mode)

    def writev(self, fd: int, buffers: Sequence[bytes]) -> int:
        if self.armed:
            if self.partial:  # a short write first, like a disk filling up mid-record
                self.partial = False
                return os.write(fd, b"".join(buffers)[:100])
            raise OSError(self.err, os.strerror(self.err))
        return super().writev(fd, buffers)


def test_enospc_makes_the_spool_unavailable_counted_logged_once(
    tmp_path: Path, spools: list[Spool], caplog: pytest.LogCaptureFixture
) -> None:
    """Injected ENOSPC after a short write: the torn record is cut off, the spool refuses (counted, one log line),
    and what was stored before still replays."""
    ops = FailingOps(errno.ENOSPC, partial=True)
    spool = Spool(tmp_path / "s", ops=ops, retry_unavailable_after=3600)
    spools.append(spool)
    assert spool.append(env(0))
    ops.armed = True
    with caplog.at_level(logging.WARNING):
        results = [spool.append(env(i)) for i in range(1, 6)]
    assert results == [False] * 5
    s = spool.stats()
    assert not s.available and s.unavailable_reason == "ENOSPC"
    assert s.refused == 50 and s.write_errors == 1
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
    assert [int(r.envelope.extra["i"]) for r in drain(spool)] == [0]
    assert spool.stats().corrupt_records == 0  # the short write was truncated away


def test_the_spool_recovers_after_retry_unavailable_after(tmp_path: Path, spools: list[Spool]) -> None:
    """Once the disk has room again, the next append after retry_unavailable_after stores into a new segment."""
    ops = FailingOps(errno.ENOSPC)
    spool = Spool(tmp_path / "s", ops=ops, retry_unavailable_after=0.0)
    spools.append(spool)
    ops.armed = True
    assert not spool.append(env(0))
    ops.armed = False
    assert spool.append(env(1))
    assert spool.available
    assert [int(r.envelope.extra["i"]) for r in drain(spool)] == [1]


def test_a_failed_fsync_stops_writing_that_segment(tmp_path: Path, spools: list[Spool]) -> None:
    """After EIO from fsync the spool goes unavailable (retrying an fsync proves nothing); appended data replays."""

    class FsyncFails(FileOps):
        def fsync(self, fd: int) -> None:
            raise OSError(errno.EIO, "I/O error")

    spool = Spool(tmp_path / "s", ops=FsyncFails(), fsync_interval=0.0, retry_unavailable_after=3600)
    spools.append(spool)
    spool.append(env(0))  # stored in the page cache, then the fsync fails
    assert not spool.available
    assert spool.stats().unavailable_reason == "EIO"
    assert not spool.append(env(1))
    assert [int(r.envelope.extra["i"]) for r in drain(spool)] == [0]


def test_read_only_directory_injected(tmp_path: Path, spools: list[Spool]) -> None:
    """EROFS on every create (injected through FileOps.open): the spool starts unavailable and refuses, no raise."""
    ops = FailingOps(errno.EROFS, fail_open=True)
    ops.armed = True
    spool = Spool(tmp_path / "s", ops=ops)
    spools.append(spool)
    assert not spool.available
    assert not spool.append(env(0))
    s = spool.stats()
    assert s.unavailable_reason == "EROFS" and s.refused == 10
    assert spool.next_record() is None


def test_a_spool_dir_under_a_regular_file_is_unavailable(tmp_path: Path, spools: list[Spool]) -> None:
    """A directory that cannot be created (its parent is a file: ENOTDIR, even as root) makes the spool unavailable."""
    (tmp_path / "file").write_text("x")
    spool = Spool(tmp_path / "file" / "spool")
    spools.append(spool)
    assert not spool.available
    assert not spool.append(env(0))
    assert spool.stats().unavailable_reason == "ENOTDIR"


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=False, capture_output=True)
    return done.returncode == 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "size=256k,mode=0700"):
        pytest.skip("needs root and a permitted mount (real tmpfs disk-full / read-only tests)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def test_real_disk_full_on_a_tiny_tmpfs(tmpfs: Path, spools: list[Spool]) -> None:
    """A real ENOSPC (256 KiB tmpfs): appends are refused once the disk is full, and every accepted one replays."""
    spool = Spool(tmpfs / "spool", retry_unavailable_after=3600)
    spools.append(spool)
    accepted = [i for i in range(40) if spool.append(env(i, 20_000))]
    s = spool.stats()
    assert 0 < len(accepted) < 40
    assert not s.available and s.unavailable_reason == "ENOSPC"
    assert s.refused == 10 * (40 - len(accepted))
    assert [int(r.envelope.extra["i"]) for r in drain(spool)] == accepted


def test_real_read_only_mount(tmpfs: Path, spools: list[Spool]) -> None:
    """A real read-only file system (tmpfs remounted ro, which binds root too): unavailable with EROFS, no raise."""
    (tmpfs / "spool").mkdir()
    done = subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=False, capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot remount read-only here")
    spool = Spool(tmpfs / "spool")
    spools.append(spool)
    assert not spool.available
    assert not spool.append(env(0))
    assert spool.stats().unavailable_reason == "EROFS"


# ------------------------------------------------------------------ append cost
def test_one_append_blocks_for_about_a_millisecond(make) -> None:  # type: ignore[no-untyped-def]
    """A 100 KB append with the default fsync policy blocks its caller for milliseconds, not tens of them (median
    of many, with a generous bound: the number itself is in benchmarks/spool.py)."""
    spool = make(max_bytes=1 << 30)
    payload_envs = [env(i, 100_000) for i in range(200)]
    times = []
    for e in payload_envs:
        t0 = time.perf_counter()
        assert spool.append(e)
        times.append(time.perf_counter() - t0)
    times.sort()
    assert times[len(times) // 2] < 0.010


# ------------------------------------------------------------------ reuse, chains of adopters, threads, a random walk
def test_a_reused_segment_never_hides_new_records_behind_old_acks(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """When the segment being written is fully acked it is emptied (acks first); records appended after that are
    replayed by the next process, not mistaken for the old acked ones at the same offsets."""
    d = tmp_path / "spool"
    spool = make(d)
    for i in range(3):
        spool.append(env(i))
    drain(spool)
    assert spool.stats().disk_bytes == 0 and len(segments(d)) == 1  # emptied in place
    for i in range(3, 5):
        spool.append(env(i))
    spool.close()
    assert [int(r.envelope.extra["i"]) for r in drain(make(d))] == [3, 4]


def test_acks_written_by_an_adopter_hold_for_the_next_adopter(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A dead spool adopted, partly replayed, then released: the next adopter gets exactly the rest."""
    d = tmp_path / "spool"
    writer = make(d, segment_max_bytes=4000)
    for i in range(10):
        writer.append(env(i, 1500))
    writer.close()
    first = make(d)
    for rec in drain(first, ack=False)[:4]:
        first.ack(rec)
    first.close()
    second = make(d)
    assert second.stats().adopted == 60
    assert [int(r.envelope.extra["i"]) for r in drain(second)] == list(range(4, 10))


def test_threads_appending_while_another_replays(make) -> None:  # type: ignore[no-untyped-def]
    """Four threads append while the main thread replays and acks: every record is replayed once, counts balance."""
    import threading

    spool = make(segment_max_bytes=20_000)
    per_thread = 200
    keys: set[str] = set()

    def produce(t: int) -> None:
        for i in range(per_thread):
            assert spool.append(env(t * 1000 + i, 500, items=1))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    replayed = 0
    while any(t.is_alive() for t in threads) or spool.stats().items:
        rec = spool.next_record()
        if rec is None:
            time.sleep(0.001)
            continue
        keys.add(rec.envelope.idempotency_key)
        spool.ack(rec)
        replayed += 1
    for t in threads:
        t.join()
    s = spool.stats()
    assert replayed == len(keys) == 4 * per_thread
    assert (s.appended, s.replayed, s.items) == (4 * per_thread, 4 * per_thread, 0)
    assert balanced(s)


@pytest.mark.parametrize("seed", range(6))
def test_random_walk_keeps_every_item_accounted(make, tmp_path: Path, seed: int) -> None:  # type: ignore[no-untyped-def]
    """A seeded random mix of appends, replays, acks, drops, requeues, clock jumps and restarts: the counters
    balance after every step and every appended item ends replayed, dropped, expired or on disk - exactly once."""
    import random

    rng = random.Random(seed)
    clock = Clock()
    d = tmp_path / "spool"
    opts = {"segment_max_bytes": 6000, "max_bytes": 40_000, "max_item_age": 50.0, "clock": clock}
    spool = make(d, **opts)
    appended: dict[str, int] = {}
    outcome: dict[str, str] = {}
    held: list[SpoolRecord] = []
    totals = {"replayed": 0, "dropped": 0, "expired": 0, "refused": 0}
    processes = [spool]
    for _ in range(400):
        op = rng.random()
        if op < 0.4:
            e = env(rng.randrange(10**6), rng.randrange(100, 2500), items=rng.randrange(1, 5), created=clock.now)
            if spool.append(e):
                appended[e.idempotency_key] = e.items
        elif op < 0.65:
            rec = spool.next_record()
            if rec is not None:
                held.append(rec)
        elif op < 0.85 and held:
            rec = held.pop(rng.randrange(len(held)))
            choice = rng.random()
            if choice < 0.7:
                spool.ack(rec)
                outcome[rec.envelope.idempotency_key] = "replayed"
            elif choice < 0.85:
                spool.drop(rec)
                outcome[rec.envelope.idempotency_key] = "dropped"
            else:
                spool.requeue(rec)
        elif op < 0.93:
            clock.now += rng.choice([1.0, 5.0, 30.0])
        else:  # restart: unsettled held records are replayed by the next process
            stats = spool.stats()
            for k in ("replayed", "dropped", "expired", "refused"):
                totals[k] += getattr(stats, k)
            spool.close()
            held.clear()
            spool = make(d, **opts)
            processes.append(spool)
        assert balanced(spool.stats())
    for rec in held:
        spool.requeue(rec)
    for rec in drain(spool, ack=False):
        spool.ack(rec)
        outcome[rec.envelope.idempotency_key] = "replayed"
    stats = spool.stats()
    for k in ("replayed", "dropped", "expired"):
        totals[k] += getattr(stats, k)
    assert stats.items == 0 and stats.corrupt == 0
    expired_keys = set(appended) - set(outcome)
    # Every appended item was settled once: replayed or dropped by someone, or expired (the counts match exactly).
    assert totals["replayed"] == sum(appended[k] for k, v in outcome.items() if v == "replayed")
    assert totals["dropped"] == sum(appended[k] for k, v in outcome.items() if v == "dropped")
    assert totals["expired"] == sum(appended[k] for k in expired_keys)
