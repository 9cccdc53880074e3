"""Unit tests for judgeval_async._metrics: the loss ledger, its snapshots, the histogram and the drop reasons."""

from __future__ import annotations

import dataclasses
import threading

import pytest

import judgeval_async
from judgeval_async._handoff import Handoff
from judgeval_async._metrics import DEFAULT_BUCKETS, DROP_REASONS, Histogram, Metrics, SignalLedger


def test_drop_reasons_are_the_documented_fixed_set() -> None:
    """DROP_REASONS is exactly the documented set, in its documented order, and re-exported publicly."""
    assert DROP_REASONS == (
        "queue_full",
        "buffer_full",
        "retries_exhausted",
        "unacknowledged",
        "non_retryable_status",
        "auth_error",
        "payload_too_large",
        "serialization_error",
        "shutdown_deadline",
        "shutdown",
        "fork_discard",
        "reentrant",
        "expired",
        "backlog_full",
        "spool_corrupt",
    )
    assert isinstance(DROP_REASONS, tuple)
    assert judgeval_async.DROP_REASONS is DROP_REASONS


def test_new_ledger_is_empty_and_balanced() -> None:
    """A fresh ledger has every counter at zero, no drops reported, and balances."""
    snap = SignalLedger("spans", capacity=8).snapshot()
    assert (snap.created, snap.delivered, snap.queued, snap.in_flight, snap.capacity) == (0, 0, 0, 0, 8)
    assert snap.dropped == {}
    assert snap.dropped_total == 0
    assert snap.oldest_queued_age == 0.0
    assert snap.balanced


def test_every_reason_has_a_zeroed_slot() -> None:
    """The live ledger pre-creates a counter for every reason (so Prometheus exports zeros)."""
    assert SignalLedger("tags").dropped == dict.fromkeys(DROP_REASONS, 0)


def test_transitions_keep_the_invariant() -> None:
    """created == delivered + dropped + queued + in_flight holds through every transition."""
    ledger = SignalLedger("evaluations")
    h: Handoff[int] = Handoff(ledger, capacity=4)
    for i in range(6):  # 4 queued, 2 dropped queue_full
        h.offer(i)
    assert ledger.snapshot().balanced
    batch = h.take_nowait(3)  # 3 in flight, 1 queued
    snap = ledger.snapshot()
    assert (snap.created, snap.queued, snap.in_flight, snap.dropped) == (6, 1, 3, {"queue_full": 2})
    assert snap.balanced
    ledger.settle_delivered(2)
    ledger.settle_dropped("retries_exhausted", 1)
    ledger.drop_untracked("serialization_error", 2)
    snap = ledger.snapshot()
    assert snap.balanced
    assert (snap.created, snap.delivered, snap.in_flight, snap.queued) == (8, 2, 0, 1)
    assert snap.dropped == {"queue_full": 2, "retries_exhausted": 1, "serialization_error": 2}
    assert snap.dropped_total == 5
    assert len(batch) == 3


def test_zero_settles_are_noops() -> None:
    """Settling zero items changes nothing."""
    ledger = SignalLedger("spans")
    ledger.settle_delivered(0)
    ledger.settle_dropped("auth_error", 0)
    snap = ledger.snapshot()
    assert (snap.delivered, snap.dropped, snap.in_flight) == (0, {}, 0)


def test_unbalanced_is_detected() -> None:
    """A ledger mutated outside the rules reports balanced == False."""
    ledger = SignalLedger("spans")
    with ledger.lock:
        ledger.created += 1
    assert not ledger.snapshot().balanced


def test_snapshot_is_a_frozen_copy() -> None:
    """A snapshot does not change when the ledger does, and cannot be mutated."""
    ledger = SignalLedger("spans")
    ledger.drop_untracked("shutdown")
    snap = ledger.snapshot()
    ledger.drop_untracked("shutdown", 4)
    assert snap.dropped == {"shutdown": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.created = 0  # type: ignore[misc]


def test_oldest_queued_age_tracks_the_head() -> None:
    """oldest_queued_age is non-negative while items wait and returns to 0 when the queue empties."""
    ledger = SignalLedger("spans")
    h: Handoff[int] = Handoff(ledger, capacity=4)
    h.offer(1)
    assert ledger.snapshot().oldest_queued_age >= 0.0
    h.take_nowait(1)
    assert ledger.snapshot().oldest_queued_age == 0.0


def test_snapshots_are_consistent_under_concurrency() -> None:
    """Snapshots taken while producers and a settling consumer run always balance."""
    ledger = SignalLedger("spans")
    h: Handoff[int] = Handoff(ledger, capacity=256)
    stop = threading.Event()
    unbalanced: list[object] = []

    def produce() -> None:
        for i in range(20_000):
            h.offer(i)

    def consume() -> None:
        while not stop.is_set() or len(h):
            batch = h.take_nowait(64)
            half = len(batch) // 2
            ledger.settle_delivered(half)
            ledger.settle_dropped("retries_exhausted", len(batch) - half)

    def observe() -> None:
        while not stop.is_set():
            snap = ledger.snapshot()
            if not snap.balanced:
                unbalanced.append(snap)

    producers = [threading.Thread(target=produce) for _ in range(3)]
    others = [threading.Thread(target=consume), threading.Thread(target=observe)]
    for t in producers + others:
        t.start()
    for t in producers:
        t.join(30)
    stop.set()
    for t in others:
        t.join(30)
    assert not unbalanced
    snap = ledger.snapshot()
    assert snap.created == 60_000
    assert (snap.queued, snap.in_flight) == (0, 0)
    assert snap.balanced


# ------------------------------------------------------------------ Histogram
def test_histogram_cumulative_buckets() -> None:
    """Buckets are cumulative, a value equal to a bound counts in that bucket (le), and +Inf equals count."""
    h = Histogram(bounds=(1.0, 2.0, 5.0))
    for v in (0.5, 1.0, 1.5, 2.0, 4.0, 100.0):
        h.observe(v)
    buckets, total, count = h.cumulative()
    assert buckets == [("1.0", 2), ("2.0", 4), ("5.0", 5), ("+Inf", 6)]
    assert total == pytest.approx(109.0)
    assert count == 6


def test_empty_histogram() -> None:
    """An empty histogram has zero buckets, sum and count, and a 0.0 quantile."""
    h = Histogram()
    buckets, total, count = h.cumulative()
    assert len(buckets) == len(DEFAULT_BUCKETS) + 1
    assert all(c == 0 for _, c in buckets)
    assert (total, count) == (0.0, 0)
    assert h.quantile(0.99) == 0.0


def test_default_buckets_are_sorted() -> None:
    """Default bounds are strictly increasing, from microseconds to a minute."""
    assert list(DEFAULT_BUCKETS) == sorted(set(DEFAULT_BUCKETS))
    assert DEFAULT_BUCKETS[0] <= 1e-5
    assert DEFAULT_BUCKETS[-1] >= 60.0


def test_histogram_quantiles() -> None:
    """Quantiles of the recent window pick the expected order statistic."""
    h = Histogram()
    for v in range(1, 101):
        h.observe(float(v))
    assert h.quantile(0.0) == 1.0
    assert h.quantile(0.5) == 51.0
    assert h.quantile(0.99) == 100.0
    assert h.quantile(1.0) == 100.0


def test_histogram_window_keeps_only_recent_samples() -> None:
    """Quantiles use only the last ``window`` samples, while the buckets count everything."""
    h = Histogram(bounds=(10.0,), window=10)
    for _ in range(100):
        h.observe(1000.0)
    for _ in range(10):
        h.observe(1.0)
    assert h.quantile(0.99) == 1.0
    buckets, _, count = h.cumulative()
    assert count == 110
    assert buckets == [("10.0", 10), ("+Inf", 110)]


def test_histogram_concurrent_observe_counts_everything() -> None:
    """Observations from several threads are all counted."""
    h = Histogram()
    threads = [threading.Thread(target=lambda: [h.observe(0.001) for _ in range(5000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert h.cumulative()[2] == 20_000


# ------------------------------------------------------------------ Metrics
def test_metrics_endpoint_state_is_created_once() -> None:
    """Metrics.endpoint and request_duration return the same object for the same name."""
    m = Metrics()
    assert m.endpoint("traces") is m.endpoint("traces")
    assert m.endpoint("traces") is not m.endpoint("tags")
    assert m.request_duration("traces") is m.request_duration("traces")
    state = m.endpoint("evals")
    assert (state.in_flight, state.paused_until, state.circuit_open) == (0, 0.0, False)


def test_labelled_counters() -> None:
    """Labelled counters add per label tuple and total across labels."""
    m = Metrics()
    m.api_errors.inc("traces", "503")
    m.api_errors.inc("traces", "503", n=2)
    m.api_errors.inc("tags", "network")
    assert dict(m.api_errors.items()) == {("traces", "503"): 3, ("tags", "network"): 1}
    assert m.api_errors.total() == 4


def test_each_metrics_has_its_own_ledgers() -> None:
    """Two Metrics objects share no ledger (one per tracer)."""
    a, b = Metrics(), Metrics()
    a.spans.drop_untracked("shutdown")
    assert b.spans.snapshot().dropped == {}
    assert (a.spans.name, a.evaluations.name, a.tags.name) == ("spans", "evaluations", "tags")


def test_abandoned_in_flight_items_are_counted_once() -> None:
    """Items cut off at the shutdown deadline are counted once, even if their send finishes afterwards."""
    ledger = SignalLedger("spans")
    h: Handoff[int] = Handoff(ledger, capacity=8)
    for i in range(5):
        h.offer(i)
    h.take_nowait(3)
    assert ledger.abandon_in_flight("shutdown_deadline") == 3
    ledger.settle_delivered(3)  # the cut-off send completed late on the loop
    h.discard_all("shutdown_deadline")
    snap = ledger.snapshot()
    assert snap.balanced
    assert (snap.delivered, snap.dropped) == (0, {"shutdown_deadline": 5})


def test_refusals_after_a_flush_began_do_not_end_it_early() -> None:
    """An item refused at a full queue after a flush started is not mistaken for an earlier item settling."""
    ledger = SignalLedger("spans")
    h: Handoff[int] = Handoff(ledger, capacity=1)  # drop_newest
    h.offer(1)
    h.take_nowait(1)  # item 1 in flight
    target, settled = ledger.accepted_and_settled()
    assert (target, settled) == (1, 0)
    h.offer(2)  # enters the queue (capacity 1)
    h.offer(3)  # refused: queue full
    assert ledger.accepted_and_settled()[1] == 0  # item 1 is still in flight: the flush must keep waiting
    ledger.settle_delivered(1)
    assert ledger.accepted_and_settled()[1] >= target


def test_histogram_observe_reentered_mid_update_keeps_the_sample() -> None:
    """An observe() re-entering another observe()'s locked update (a signal handler, a __del__) does not deadlock;
    its sample is set aside and counted at the next read."""
    h = Histogram()
    inner: list[int] = []

    class Reentering(float):
        # bisect compares inside the locked region (bound < value: Python asks the subclass's __gt__ first)
        def __lt__(self, other: object) -> bool:
            reenter()
            return float(self) < other  # type: ignore[operator]

        def __gt__(self, other: object) -> bool:
            reenter()
            return float(self) > other  # type: ignore[operator]

    def reenter() -> None:
        if not inner:
            inner.append(1)
            h.observe(0.5)

    t = threading.Thread(target=lambda: h.observe(Reentering(0.001)), daemon=True)
    t.start()
    t.join(10.0)
    assert not t.is_alive(), "deadlocked on re-entrance"
    _, total, count = h.cumulative()
    assert count == 2
    assert total == pytest.approx(0.501)


def test_labelled_counter_inc_reentered_mid_update_loses_no_count() -> None:
    """A counter inc() re-entering another inc()'s locked update is folded in later: no deadlock, no lost count."""
    m = Metrics()
    fired: list[int] = []

    class Reentering(str):
        __slots__ = ()

        def __hash__(self) -> int:  # the dict lookup hashes inside the locked region
            if not fired:
                fired.append(1)
                m.values_degraded.inc("truncated")
            return str.__hash__(self)

    t = threading.Thread(target=lambda: m.values_degraded.inc(Reentering("cycle")), daemon=True)
    t.start()
    t.join(10.0)
    assert not t.is_alive(), "deadlocked on re-entrance"
    assert dict(m.values_degraded.items()) == {("cycle",): 1, ("truncated",): 1}
    assert m.values_degraded.total() == 2


def test_an_interrupt_entering_a_region_leaves_the_lock_free() -> None:
    """A KeyboardInterrupt raised inside updating()'s entry (after the lock is taken) releases the lock: another
    thread can take it at once, and the next region enters normally."""

    class Interrupted(SignalLedger):
        raised = False

        @property  # type: ignore[override]
        def busy(self) -> bool:
            if not Interrupted.raised:
                Interrupted.raised = True
                raise KeyboardInterrupt
            return False

        @busy.setter
        def busy(self, value: bool) -> None:
            pass

    led = Interrupted("spans")
    with pytest.raises(KeyboardInterrupt), led.updating():
        pass
    taken: list[bool] = []

    def try_lock() -> None:
        got = led.lock.acquire(blocking=False)
        taken.append(got)
        if got:
            led.lock.release()

    other = threading.Thread(target=try_lock)
    other.start()
    other.join()
    assert taken == [True]
    with led.updating() as fresh:
        assert fresh
