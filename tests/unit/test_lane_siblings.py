"""``Lane.unwell`` sees the other live lanes of its host (a tag lane learns of an outage from the span lane) from a
snapshot of weak references, rebuilt only when a lane is added."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

from judgeval_async import Config
from judgeval_async import _sender as sender_module
from judgeval_async._metrics import Metrics
from judgeval_async._sender import Lane


@pytest.fixture(autouse=True)
def _own_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only its own lanes (other tests' lanes on the same host may not be collected yet)."""
    monkeypatch.setattr(sender_module, "_LANES", {})


class _Exporter:
    endpoint = "traces"


def _lane(signal: str, url: str = "http://127.0.0.1:9") -> Lane:
    config = Config(api_key="k", organization_id="o", api_url=url, spool=False, retry_testing=True)
    metrics = Metrics()
    return Lane(signal, _Exporter(), metrics.spans, metrics, config)  # type: ignore[arg-type]


def _fail(lane: Lane) -> None:
    permit = lane.health.admit()
    assert permit is not None
    lane.health.on_result(permit, sender_module.Health.FAILED, payload_key="p")


def test_a_sibling_on_the_same_host_makes_a_lane_unwell() -> None:
    """A failure on one lane makes every live lane of that host unwell; another host's lanes stay well."""
    spans, tags = _lane("spans"), _lane("tags")
    other = _lane("tags", url="http://127.0.0.2:9")
    assert not spans.unwell and not tags.unwell
    _fail(spans)
    assert spans.unwell and tags.unwell
    assert not other.unwell


def test_a_lane_added_later_is_seen_and_a_closed_one_is_not() -> None:
    """The snapshot is rebuilt when a lane is added; a closed lane no longer counts."""
    tags = _lane("tags")
    assert not tags.unwell  # snapshot taken
    spans = _lane("spans")
    _fail(spans)
    assert tags.unwell
    spans._closed = True
    assert not tags.unwell


def test_a_collected_lane_is_not_kept_alive_nor_counted() -> None:
    """The snapshot holds weak references: a lane dropped by its tracer is collected and ignored."""
    tags = _lane("tags")
    spans = _lane("spans")
    _fail(spans)
    assert tags.unwell
    ref = weakref.ref(spans)
    del spans
    gc.collect()
    assert ref() is None
    assert not tags.unwell


def test_unwell_does_not_walk_the_hosts_weakset_when_nothing_was_added(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked many times with no lane added in between, ``unwell`` iterates the host's WeakSet once at most."""
    walks: list[int] = []

    class CountingSet(weakref.WeakSet):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            walks.append(1)
            return super().__iter__()

    first = _lane("tags")
    second = _lane("spans")
    lanes = CountingSet(sender_module._LANES[first._origin])
    sender_module._LANES[first._origin] = lanes
    for _ in range(100):
        assert not first.unwell
        assert not second.unwell
    assert len(walks) <= 2


# ------------------------------------------------------------------ the lane's wake-up flag
def test_wake_set_before_or_during_a_wait_ends_it_and_a_timeout_ends_it_too() -> None:
    """A set flag returns at once; ``set()`` during a wait ends it; an unset flag waits out its timeout."""
    from judgeval_async._sender import _Wake

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        wake = _Wake()
        seen = []
        wake.set()
        await asyncio.wait_for(wake.wait(60.0), 5.0)  # set: returns at once
        seen.append("already set")
        wake.clear()
        loop.call_later(0.01, wake.set)
        await asyncio.wait_for(wake.wait(60.0), 5.0)  # woken by set(), not the 60 s timeout
        seen.append("woken")
        wake.clear()
        await asyncio.wait_for(wake.wait(0.01), 5.0)  # nobody sets it: the timeout ends the wait
        seen.append("timed out")
        assert not wake.is_set()
        return seen

    assert asyncio.run(scenario()) == ["already set", "woken", "timed out"]


def test_wake_wait_creates_no_task_and_cancels_cleanly() -> None:
    """A wait makes no extra Task (``wait_for`` did, per wait); cancelling the waiter leaves no timer or future."""
    from judgeval_async._sender import _Wake

    async def scenario() -> None:
        wake = _Wake()
        before = len(asyncio.all_tasks())
        waiting = asyncio.get_running_loop().create_task(wake.wait(60.0))
        await asyncio.sleep(0.01)
        assert len(asyncio.all_tasks()) == before + 1  # only the waiting task itself
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert wake._waiter is None
        wake.set()  # nobody waits: only the flag
        assert wake.is_set()

    asyncio.run(scenario())
