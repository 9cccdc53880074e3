"""``Lane.unwell`` sees the other live lanes of its host (a tag lane learns of an outage from the span lane) from a
snapshot of weak references, rebuilt only when a lane is added."""

from __future__ import annotations

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
