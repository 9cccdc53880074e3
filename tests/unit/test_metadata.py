"""Unit tests for judgeval_async._metadata: the bounded per-span metadata store (count and age limits)."""

from __future__ import annotations

import threading
from collections import Counter

from judgeval_async._metadata import SpanMetadataStore


class FakeClock:
    """A settable monotonic clock: the store's injected ``clock`` seam."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class EvictionLog:
    """Collects on_evict callbacks."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.calls = 0

    def __call__(self, reason: str, n: int) -> None:
        self.counts[reason] += n
        self.calls += 1


def test_open_set_pop_round_trip() -> None:
    """Attributes set on an open span are returned once by pop, which removes the entry."""
    store = SpanMetadataStore(max_entries=10, ttl=60.0, clock=FakeClock())
    store.open((1, 1))
    assert store.set((1, 1), "judgment.span_kind", "llm")
    assert store.set((1, 1), "judgment.cost", 0.25)
    assert store.set((1, 1), "judgment.cost", 0.5)  # last write wins
    assert store.pop((1, 1)) == {"judgment.span_kind": "llm", "judgment.cost": 0.5}
    assert store.pop((1, 1)) is None
    assert len(store) == 0


def test_set_on_unknown_span_is_refused() -> None:
    """set() on a span that was never opened, or already popped, returns False."""
    store = SpanMetadataStore(max_entries=10, ttl=60.0, clock=FakeClock())
    assert store.set((9, 9), "k", "v", create=False) is False
    store.open((1, 2))
    store.pop((1, 2))
    assert store.set((1, 2), "k", "v", create=False) is False


def test_pop_of_span_without_attributes_is_none() -> None:
    """A span opened but never given attributes pops as None (and its entry is gone)."""
    store = SpanMetadataStore(max_entries=10, ttl=60.0, clock=FakeClock())
    store.open((1, 1))
    assert len(store) == 1
    assert store.pop((1, 1)) is None
    assert len(store) == 0


def test_keys_distinguish_trace_and_span() -> None:
    """(trace, span) pairs that share one component are distinct entries."""
    store = SpanMetadataStore(max_entries=10, ttl=60.0, clock=FakeClock())
    for key in [(1, 2), (2, 1), (1, 1)]:
        store.open(key)
        store.set(key, "k", key)
    assert store.pop((2, 1)) == {"k": (2, 1)}
    assert store.pop((1, 2)) == {"k": (1, 2)}


def test_twenty_thousand_unended_spans_are_bounded() -> None:
    """20 000 spans opened and never ended leave 10 000 entries and exactly 10 000 lru evictions."""
    evictions = EvictionLog()
    store = SpanMetadataStore(max_entries=10_000, ttl=3600.0, on_evict=evictions, clock=FakeClock())
    for i in range(20_000):
        store.open((i, i))
        store.set((i, i), "n", i)
    assert len(store) == 10_000
    assert evictions.counts == {"lru": 10_000}
    # The oldest half went; the newest half is intact.
    assert store.pop((0, 0)) is None
    assert store.pop((9_999, 9_999)) is None
    assert store.pop((10_000, 10_000)) == {"n": 10_000}
    assert store.pop((19_999, 19_999)) == {"n": 19_999}


def test_lru_eviction_is_by_insertion_order() -> None:
    """Setting attributes does not refresh an entry: eviction follows insertion order."""
    evictions = EvictionLog()
    store = SpanMetadataStore(max_entries=2, ttl=3600.0, on_evict=evictions, clock=FakeClock())
    store.open((1, 1))
    store.open((2, 2))
    store.set((1, 1), "touched", True)
    store.open((3, 3))
    assert store.set((1, 1), "k", 1, create=False) is False
    assert store.set((2, 2), "k", 2)
    assert evictions.counts == {"lru": 1}


def test_ttl_evicts_old_entries_on_insert() -> None:
    """Entries older than ttl are evicted by the next open, counted under ttl."""
    clock = FakeClock()
    evictions = EvictionLog()
    store = SpanMetadataStore(max_entries=100, ttl=60.0, on_evict=evictions, clock=clock)
    for i in range(5):
        store.open((i, 0))
    clock.now += 30
    store.open((100, 0))
    assert evictions.counts == {}
    clock.now += 31  # the first five are now 61 s old, the sixth 31 s
    store.open((200, 0))
    assert evictions.counts == {"ttl": 5}
    assert len(store) == 2
    assert store.set((100, 0), "k", 1)
    assert not store.set((0, 0), "k", 1, create=False)


def test_ttl_boundary_is_exclusive() -> None:
    """An entry exactly ttl seconds old is kept; a hair older is evicted."""
    clock = FakeClock()
    evictions = EvictionLog()
    store = SpanMetadataStore(max_entries=100, ttl=60.0, on_evict=evictions, clock=clock)
    store.open((1, 1))
    clock.now += 60.0
    store.open((2, 2))
    assert len(store) == 2
    clock.now += 0.001
    store.open((3, 3))
    assert evictions.counts == {"ttl": 1}


def test_expired_entries_are_evicted_lazily() -> None:
    """Without a new open, nothing is evicted even past the ttl (no background thread)."""
    clock = FakeClock()
    store = SpanMetadataStore(max_entries=100, ttl=1.0, clock=clock)
    store.open((1, 1))
    clock.now += 1000
    assert len(store) == 1
    assert store.set((1, 1), "k", "v")
    assert store.pop((1, 1)) == {"k": "v"}


def test_ttl_and_lru_in_one_insert_report_both() -> None:
    """One open can evict for age and for count; each reason is reported with its own count."""
    clock = FakeClock()
    evictions = EvictionLog()
    store = SpanMetadataStore(max_entries=3, ttl=10.0, on_evict=evictions, clock=clock)
    store.open((1, 0))
    clock.now += 20
    store.open((2, 0))
    store.open((3, 0))
    store.open((4, 0))  # (1, 0) is expired; after it goes there are 3 entries: nothing else to evict
    assert evictions.counts == {"ttl": 1}
    store.open((5, 0))
    assert evictions.counts == {"ttl": 1, "lru": 1}
    assert len(store) == 3


def test_no_callback_is_fine() -> None:
    """Without on_evict, evictions still happen silently."""
    store = SpanMetadataStore(max_entries=1, ttl=60.0, clock=FakeClock())
    store.open((1, 1))
    store.open((2, 2))
    assert len(store) == 1


def test_clear_drops_everything() -> None:
    """clear() removes every entry."""
    store = SpanMetadataStore(max_entries=10, ttl=60.0, clock=FakeClock())
    for i in range(5):
        store.open((i, i))
    store.clear()
    assert len(store) == 0


def test_reopened_key_does_not_shield_older_entries_from_ttl() -> None:
    """Re-opening a key moves it to the back, so entries older than it still expire."""
    clock = FakeClock()
    evictions = EvictionLog()
    store = SpanMetadataStore(max_entries=100, ttl=10.0, on_evict=evictions, clock=clock)
    store.open((1, 1))  # t=0
    clock.now += 1
    store.open((2, 2))  # t=1
    clock.now += 4
    store.open((1, 1))  # t=5: the same key again (e.g. a reused id), now the newest entry
    clock.now += 6.5  # t=11.5: (2, 2) is 10.5 s old (expired), (1, 1) only 6.5 s
    store.open((3, 3))
    assert evictions.counts == {"ttl": 1}
    assert store.set((1, 1), "k", 1)


def test_thread_safety_smoke() -> None:
    """Four threads opening, setting and popping concurrently keep the store consistent and bounded."""
    evictions = EvictionLog()
    lock = threading.Lock()
    store = SpanMetadataStore(max_entries=500, ttl=3600.0, on_evict=evictions)
    popped: Counter[str] = Counter()
    start = threading.Barrier(4)

    def worker(t: int) -> None:
        start.wait(10)
        local: Counter[str] = Counter()
        for i in range(5000):
            key = (t, i)
            store.open(key)
            store.set(key, "i", i, create=False)
            if i % 2 == 0:
                local["popped" if store.pop(key) == {"i": i} else "lost"] += 1
        with lock:
            popped.update(local)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert len(store) <= 500
    # Every opened entry is either still there, popped by its owner, or evicted by count.
    assert len(store) + popped["popped"] + popped["lost"] + evictions.counts["lru"] >= 20_000
    assert len(store) + popped["popped"] + evictions.counts["lru"] == 20_000
    assert set(evictions.counts) <= {"lru"}


def test_store_reentered_mid_update_is_refused_and_counted() -> None:
    """A call that re-enters the store from inside its locked update (a signal handler or __del__ landing there;
    here a key whose hash calls back) does not deadlock: it is refused and counted ``reentrant``, the outer call
    completes."""
    log = EvictionLog()
    store = SpanMetadataStore(max_entries=10, ttl=60.0, on_evict=log, clock=FakeClock())
    store.set((2, 2), "k", "v")
    inner: list[object] = []

    class ReenteringId(int):
        def __hash__(self) -> int:
            if not inner:
                inner.append(store.set((3, 3), "k", 1))
                inner.append(store.pop((2, 2)))
            return int.__hash__(self)

    t = threading.Thread(target=lambda: store.set((ReenteringId(1), 1), "k", "outer"), daemon=True)
    t.start()
    t.join(10.0)
    assert not t.is_alive(), "deadlocked on re-entrance"
    assert inner == [False, None]
    assert log.counts["reentrant"] == 2
    assert store.pop((1, 1)) == {"k": "outer"}
    assert store.pop((2, 2)) == {"k": "v"}  # the refused pop left it in place


def test_evicted_values_are_released_outside_the_lock() -> None:
    """An evicted value's __del__ may use the store: eviction releases it after the lock, so the call succeeds."""
    log = EvictionLog()
    store = SpanMetadataStore(max_entries=1, ttl=60.0, on_evict=log, clock=FakeClock())
    results: list[bool] = []

    class Finalized:
        def __del__(self) -> None:
            results.append(store.set((7, 7), "from_del", 1))

    def run() -> None:
        store.set((1, 1), "k", Finalized())
        store.set((2, 2), "k", 2)  # evicts (1, 1): lru

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10.0)
    assert not t.is_alive(), "deadlocked on re-entrance"
    assert results == [True]
    assert log.counts["reentrant"] == 0
