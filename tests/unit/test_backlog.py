"""Unit tests for judgeval_async._delivery._backlog: byte budget, age bound, spill and drain, with a fake clock."""

from __future__ import annotations

import pytest

from judgeval_async._delivery._backlog import DEFAULT_BACKLOG_MAX_BYTES, Backlog
from judgeval_async._delivery._envelope import Envelope, new_envelope
from judgeval_async._errors import ConfigError

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def env(i: int, size: int = 100, *, created: float = T0, items: int = 1) -> Envelope:
    return new_envelope(bytes(size), signal="spans", items=items, route="r", extra={"i": str(i)}, created=created)


def ids(envs: list[Envelope]) -> list[int]:
    return [int(e.extra["i"]) for e in envs]


def test_defaults() -> None:
    """64 MiB and one hour by default."""
    assert DEFAULT_BACKLOG_MAX_BYTES == 64 * 1024 * 1024
    assert Backlog().max_bytes == DEFAULT_BACKLOG_MAX_BYTES


def test_bad_configuration_names_the_field() -> None:
    """Invalid budgets raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match="backlog_max_bytes"):
        Backlog(max_bytes=0)
    with pytest.raises(ConfigError, match="max_item_age"):
        Backlog(max_item_age=0)


def test_fifo_order() -> None:
    """take() returns envelopes oldest first."""
    b = Backlog(max_bytes=10_000)
    for i in range(5):
        assert b.offer(env(i))
    assert ids([b.take() for _ in range(5)]) == list(range(5))  # type: ignore[misc]
    assert b.take() is None


def test_offer_refuses_beyond_the_byte_budget_without_dropping_queued_data() -> None:
    """A payload that does not fit is refused (returned False, counted); what is queued stays."""
    b = Backlog(max_bytes=1000)
    assert all(b.offer(env(i, 300)) for i in range(3))
    assert not b.offer(env(3, 300, items=7))
    assert b.refused_items == 7
    assert b.bytes == 900 and len(b) == 3
    assert b.offer(env(4, 100))  # a smaller one still fits
    assert not b.offer(env(5, 5000))  # larger than the whole budget


def test_in_flight_bytes_stay_charged_until_settled() -> None:
    """Bytes of a handed-out envelope count until done(); requeue puts it back first without re-charging."""
    b = Backlog(max_bytes=1000)
    b.offer(env(0, 600))
    b.offer(env(1, 300))
    first = b.take()
    assert first is not None
    assert b.bytes == 900 and b.queued_bytes == 300
    assert not b.offer(env(2, 200))
    b.requeue(first)
    assert b.bytes == 900 and ids([b.take(), b.take()]) == [0, 1]  # type: ignore[list-item]
    b.done(first)
    assert b.bytes == 300
    b.done(first)  # twice: ignored
    b.requeue(first)  # not handed out any more: ignored
    assert b.bytes == 300 and len(b) == 0


def test_old_items_are_expired_and_reported() -> None:
    """Envelopes older than max_item_age are dropped on take, each passed to on_expired and counted."""
    clock = Clock()
    expired: list[Envelope] = []
    b = Backlog(max_item_age=60, clock=clock, on_expired=expired.append)
    b.offer(env(0, created=T0 - 30, items=2))
    b.offer(env(1, created=T0 - 10, items=3))
    b.offer(env(2, created=T0, items=4))
    clock.now = T0 + 45
    got = b.take()
    assert got is not None and ids([got]) == [1]
    assert ids(expired) == [0] and b.expired_items == 2
    clock.now = T0 + 1000
    assert b.take() is None
    assert ids(expired) == [0, 2] and b.expired_items == 6
    assert b.bytes == 100  # only the one handed out


def test_offer_makes_room_by_expiring_first() -> None:
    """When full, expired envelopes are dropped to make room before a new payload is refused."""
    clock = Clock()
    b = Backlog(max_bytes=1000, max_item_age=60, clock=clock)
    b.offer(env(0, 900, created=T0))
    clock.now = T0 + 61
    assert b.offer(env(1, 900, created=clock.now))
    assert b.expired_items == 1 and b.refused_items == 0


def test_spill_moves_the_newest_to_the_sink_until_the_target() -> None:
    """spill() moves newest-first into the sink (the spool) until keep_bytes remain; a refusal stops it."""
    b = Backlog(max_bytes=10_000)
    for i in range(6):
        b.offer(env(i, 100, items=2))
    sunk: list[Envelope] = []
    moved = b.spill(lambda e: sunk.append(e) or True, keep_bytes=200)
    assert moved == 8 and ids(sunk) == [5, 4, 3, 2]
    assert b.spilled_items == 8 and b.queued_bytes == 200
    assert b.spill(lambda e: False) == 0 and len(b) == 2  # refused: stays queued
    assert ids(b.drain()) == [0, 1]
    assert b.bytes == 0 and b.queued_items == 0


def test_drain_leaves_in_flight_alone() -> None:
    """drain() returns queued envelopes oldest first; handed-out ones are not included."""
    b = Backlog()
    for i in range(3):
        b.offer(env(i))
    taken = b.take()
    assert ids(b.drain()) == [1, 2]
    assert taken is not None and b.in_flight_items == 1
    b.requeue(taken)
    assert ids(b.drain()) == [0]


def test_oldest_created_and_fits() -> None:
    """oldest_created() is the next take's created time; fits() answers for a size."""
    b = Backlog(max_bytes=500)
    assert b.oldest_created() is None
    b.offer(env(0, 100, created=T0 - 5))
    b.offer(env(1, 100, created=T0))
    assert b.oldest_created() == T0 - 5
    assert b.fits(300) and not b.fits(301)
