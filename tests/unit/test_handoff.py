"""Unit tests for judgeval_async._handoff: bounded offer, overflow policies, close, batching and wake-up coalescing."""

from __future__ import annotations

import asyncio
import threading
import time
import types
from collections import Counter
from collections.abc import Callable

import pytest

from judgeval_async import _handoff
from judgeval_async._handoff import Handoff
from judgeval_async._metrics import LedgerSnapshot, SignalLedger

WAIT = 10.0  # generous bound for "this should happen promptly" on a noisy 2-core box


def make(capacity: int = 100, policy: str = "drop_newest") -> tuple[Handoff[int], SignalLedger]:
    ledger = SignalLedger("spans")
    return Handoff(ledger, capacity, policy), ledger


def offer_from_thread(h: Handoff[int], items: range | list[int]) -> list[bool]:
    """Offer ``items`` from a fresh thread and wait for it; returns offer()'s results."""
    results: list[bool] = []
    t = threading.Thread(target=lambda: results.extend(h.offer(i) for i in items))
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    return results


async def park(h: Handoff[int], max_items: int, timeout: float = 60.0) -> asyncio.Task[list[int]]:
    """Start take_batch as a task and let it run until it parks on its future (one loop iteration)."""
    task = asyncio.ensure_future(h.take_batch(max_items, timeout))
    await asyncio.sleep(0)
    assert not task.done()
    return task


def assert_balanced(ledger: SignalLedger) -> None:
    snap = ledger.snapshot()
    assert snap.balanced, snap


# ------------------------------------------------------------------ construction and capacity
@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity: int) -> None:
    """A non-positive capacity is refused at construction."""
    with pytest.raises(ValueError, match="capacity"):
        Handoff(SignalLedger("spans"), capacity)


def test_policy_must_be_known() -> None:
    """An unknown overflow policy is refused at construction."""
    with pytest.raises(ValueError, match="policy"):
        Handoff(SignalLedger("spans"), 10, "block")


def test_ledger_reports_capacity_and_queue() -> None:
    """The ledger snapshot reports the handoff's capacity and queued count."""
    h, ledger = make(capacity=7)
    h.offer(1)
    h.offer(2)
    snap = ledger.snapshot()
    assert (snap.capacity, snap.queued, snap.created, len(h), h.capacity) == (7, 2, 2, 2, 7)
    assert snap.oldest_queued_age >= 0.0
    assert_balanced(ledger)


def test_drop_newest_keeps_old_items() -> None:
    """Under drop_newest a full queue refuses the new item, keeps the old ones and counts queue_full."""
    h, ledger = make(capacity=3)
    assert [h.offer(i) for i in range(5)] == [True, True, True, False, False]
    assert h.take_nowait(10) == [0, 1, 2]
    snap = ledger.snapshot()
    assert snap.dropped == {"queue_full": 2}
    assert (snap.created, snap.in_flight, snap.queued) == (5, 3, 0)
    assert_balanced(ledger)
    ledger.settle_delivered(3)
    assert_balanced(ledger)


def test_drop_oldest_evicts_the_oldest() -> None:
    """Under drop_oldest a full queue accepts the new item, evicts the oldest and counts queue_full."""
    h, ledger = make(capacity=3, policy="drop_oldest")
    assert all(h.offer(i) for i in range(5))
    assert len(h) == 3
    assert h.take_nowait(10) == [2, 3, 4]
    assert ledger.snapshot().dropped == {"queue_full": 2}
    ledger.settle_delivered(3)
    assert_balanced(ledger)


def test_discard_all_counts_under_reason() -> None:
    """discard_all empties the queue and counts each item under the given reason."""
    h, ledger = make()
    for i in range(4):
        h.offer(i)
    assert h.discard_all("fork_discard") == 4
    assert len(h) == 0
    assert ledger.snapshot().dropped == {"fork_discard": 4}
    assert_balanced(ledger)


def test_take_nowait_respects_max_items_and_fifo() -> None:
    """take_nowait takes at most max_items, oldest first, and moves them to in_flight."""
    h, ledger = make()
    for i in range(10):
        h.offer(i)
    assert h.take_nowait(4) == [0, 1, 2, 3]
    assert h.take_nowait(4) == [4, 5, 6, 7]
    assert h.take_nowait(4) == [8, 9]
    assert h.take_nowait(4) == []
    assert ledger.snapshot().in_flight == 10
    ledger.settle_dropped("non_retryable_status", 10)
    assert_balanced(ledger)


# ------------------------------------------------------------------ close
@pytest.mark.asyncio
async def test_close_returns_remaining_immediately() -> None:
    """After close, take_batch returns what is left without waiting for a full batch or the timeout."""
    h, ledger = make()
    for i in range(3):
        h.offer(i)
    h.close()
    assert h.closed
    batch = await asyncio.wait_for(h.take_batch(100, timeout=3600), WAIT)
    assert batch == [0, 1, 2]
    assert await asyncio.wait_for(h.take_batch(100, timeout=3600), WAIT) == []
    ledger.settle_delivered(3)
    assert_balanced(ledger)


def test_offer_after_close_is_refused_and_counted() -> None:
    """An offer after close returns False and counts reason shutdown; close is idempotent."""
    h, ledger = make()
    h.offer(1)
    h.close()
    h.close()
    assert h.offer(2) is False
    assert offer_from_thread(h, [3, 4]) == [False, False]
    snap = ledger.snapshot()
    assert snap.dropped == {"shutdown": 3}
    assert snap.queued == 1
    assert_balanced(ledger)


@pytest.mark.asyncio
async def test_close_wakes_a_parked_consumer() -> None:
    """close() from another thread wakes a consumer parked with a long timeout; it gets the partial batch."""
    h, ledger = make()
    h.offer(1)
    task = await park(h, 100)
    t = threading.Thread(target=h.close)
    t.start()
    t.join(WAIT)
    assert await asyncio.wait_for(task, WAIT) == [1]
    ledger.settle_delivered(1)
    assert_balanced(ledger)


# ------------------------------------------------------------------ take_batch
@pytest.mark.asyncio
async def test_take_batch_returns_when_full_batch_arrives_from_another_thread() -> None:
    """A consumer parked for 100 items returns the full batch as soon as another thread offers them."""
    h, ledger = make(capacity=1000)
    task = await park(h, 100, timeout=3600)
    assert offer_from_thread(h, range(100)) == [True] * 100
    batch = await asyncio.wait_for(task, WAIT)  # far below the 3600 s timeout: the offer woke it
    assert batch == list(range(100))
    ledger.settle_delivered(100)
    assert_balanced(ledger)


@pytest.mark.asyncio
async def test_take_batch_with_enough_items_returns_without_waiting() -> None:
    """If max_items are already queued, take_batch returns at once and leaves the rest queued."""
    h, ledger = make()
    for i in range(15):
        h.offer(i)
    assert await asyncio.wait_for(h.take_batch(10, timeout=3600), WAIT) == list(range(10))
    assert len(h) == 5
    assert_balanced(ledger)


@pytest.mark.asyncio
async def test_take_batch_returns_partial_batch_at_timeout() -> None:
    """When the timeout passes before a full batch, the partial batch is returned."""
    h, ledger = make()
    for i in range(3):
        h.offer(i)
    assert await asyncio.wait_for(h.take_batch(100, timeout=0.05), WAIT) == [0, 1, 2]
    assert await asyncio.wait_for(h.take_batch(100, timeout=0.01), WAIT) == []
    assert h.wakeups == 0
    ledger.settle_delivered(3)
    assert_balanced(ledger)


@pytest.mark.asyncio
async def test_non_positive_timeout_returns_immediately() -> None:
    """A zero or negative timeout means "take what is there now"."""
    h, _ = make()
    h.offer(1)
    assert await asyncio.wait_for(h.take_batch(100, timeout=0), WAIT) == [1]
    assert await asyncio.wait_for(h.take_batch(100, timeout=-1), WAIT) == []


@pytest.mark.asyncio
async def test_request_flush_wakes_a_parked_consumer() -> None:
    """request_flush from another thread makes a parked consumer return the partial batch promptly."""
    h, ledger = make()
    for i in range(5):
        h.offer(i)
    task = await park(h, 100, timeout=3600)
    t = threading.Thread(target=h.request_flush)
    t.start()
    t.join(WAIT)
    assert await asyncio.wait_for(task, WAIT) == [0, 1, 2, 3, 4]
    ledger.settle_delivered(5)
    assert_balanced(ledger)


@pytest.mark.asyncio
async def test_request_flush_before_take_is_remembered_once() -> None:
    """A flush requested while the consumer is busy makes the next take_batch return at once, only once."""
    h, _ = make()
    h.offer(1)
    h.request_flush()
    assert await asyncio.wait_for(h.take_batch(100, timeout=3600), WAIT) == [1]
    h.offer(2)
    # The request was consumed: the next call parks instead of returning early.
    task = await park(h, 100, timeout=3600)
    assert not task.done()
    h.close()
    assert await asyncio.wait_for(task, WAIT) == [2]


@pytest.mark.asyncio
async def test_request_flush_larger_than_batch_drains_in_several_batches() -> None:
    """A flush with more than max_items queued stays in effect until the backlog is taken."""
    h, _ = make()
    for i in range(25):
        h.offer(i)
    h.request_flush()
    b1 = await asyncio.wait_for(h.take_batch(10, timeout=3600), WAIT)
    b2 = await asyncio.wait_for(h.take_batch(10, timeout=3600), WAIT)
    b3 = await asyncio.wait_for(h.take_batch(10, timeout=3600), WAIT)
    assert (len(b1), len(b2), b3) == (10, 10, [20, 21, 22, 23, 24])


@pytest.mark.asyncio
async def test_cancelled_take_batch_leaves_items_and_state_intact() -> None:
    """Cancelling a parked take_batch loses nothing, and later offers schedule no wake-up to the dead waiter."""
    h, ledger = make()
    h.offer(1)
    task = await park(h, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for i in range(2, 30):
        h.offer(i)
    assert h.wakeups == 0
    assert await asyncio.wait_for(h.take_batch(100, timeout=0), WAIT) == list(range(1, 30))
    ledger.settle_delivered(29)
    assert_balanced(ledger)


# ------------------------------------------------------------------ wake-up coalescing
@pytest.mark.asyncio
async def test_wakeups_are_coalesced_to_the_threshold() -> None:
    """While the consumer waits for 100 items, 99 offers schedule no wake-up and the 100th schedules one."""
    h, ledger = make(capacity=1000)
    task = await park(h, 100)
    for i in range(99):
        h.offer(i)
    assert h.wakeups == 0
    h.offer(99)
    assert h.wakeups == 1
    for i in range(100, 150):  # more offers before the consumer runs: still one pending wake-up
        h.offer(i)
    assert h.wakeups == 1
    assert await asyncio.wait_for(task, WAIT) == list(range(100))
    assert h.wakeups == 1
    ledger.settle_delivered(100)
    assert_balanced(ledger)


@pytest.mark.asyncio
async def test_wakeups_coalesced_across_threads() -> None:
    """Offers from another thread obey the same threshold: 99 then 1 gives exactly one wake-up."""
    h, _ = make(capacity=1000)
    task = await park(h, 100)
    offer_from_thread(h, range(99))
    assert h.wakeups == 0
    offer_from_thread(h, [99])
    assert h.wakeups == 1
    assert len(await asyncio.wait_for(task, WAIT)) == 100


def test_busy_consumer_gets_no_wakeups() -> None:
    """While no consumer is parked, offers schedule no wake-ups at all."""
    h, _ = make(capacity=10_000)
    offer_from_thread(h, range(5000))
    assert h.wakeups == 0


@pytest.mark.asyncio
async def test_no_wakeups_after_consumer_returned() -> None:
    """Once take_batch has returned (consumer busy), further offers schedule nothing."""
    h, _ = make(capacity=1000)
    task = await park(h, 10)
    offer_from_thread(h, range(10))
    await asyncio.wait_for(task, WAIT)
    assert h.wakeups == 1
    offer_from_thread(h, range(500))
    assert h.wakeups == 1


@pytest.mark.asyncio
async def test_each_parking_gets_its_own_wakeup() -> None:
    """Every time the consumer parks again, the next threshold crossing wakes it once more."""
    h, _ = make(capacity=1000)
    for round_ in range(1, 4):
        task = await park(h, 10)
        offer_from_thread(h, range(10))
        assert len(await asyncio.wait_for(task, WAIT)) == 10
        assert h.wakeups == round_


# ------------------------------------------------------------------ producer inside a foreign event loop
@pytest.mark.asyncio
async def test_offer_from_inside_another_running_loop() -> None:
    """The application's own event loop (in another thread) can offer synchronously, without awaiting."""
    h, ledger = make(capacity=1000)
    task = await park(h, 50)
    results: list[bool] = []

    async def app() -> None:
        asyncio.get_running_loop()  # we really are inside a running loop
        results.extend(h.offer(i) for i in range(50))

    t = threading.Thread(target=lambda: asyncio.run(app()))
    t.start()
    t.join(WAIT)
    assert results == [True] * 50
    assert await asyncio.wait_for(task, WAIT) == list(range(50))
    ledger.settle_delivered(50)
    assert_balanced(ledger)


# ------------------------------------------------------------------ many producer threads
N_PRODUCERS = 8
N_PER_PRODUCER = 20_000


def _run_mixed(capacity: int, policy: str) -> tuple[list[int], list[list[int]], SignalLedger]:
    """8 producer threads offer unique ids while a consumer on its own loop thread takes batches until closed."""
    ledger = SignalLedger("spans")
    h: Handoff[int] = Handoff(ledger, capacity, policy)
    taken: list[int] = []
    refused: list[list[int]] = [[] for _ in range(N_PRODUCERS)]
    consumer_ready = threading.Event()
    start = threading.Barrier(N_PRODUCERS)
    errors: list[BaseException] = []

    async def consume() -> None:
        consumer_ready.set()
        while True:
            batch = await h.take_batch(512, timeout=0.02)
            taken.extend(batch)
            ledger.settle_delivered(len(batch))
            if not batch and h.closed and len(h) == 0:
                return

    def consumer() -> None:
        try:
            asyncio.run(consume())
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def producer(p: int) -> None:
        start.wait(WAIT)
        base = p * N_PER_PRODUCER
        for i in range(base, base + N_PER_PRODUCER):
            if not h.offer(i):
                refused[p].append(i)

    c = threading.Thread(target=consumer, name="test-consumer")
    c.start()
    assert consumer_ready.wait(WAIT)
    producers = [threading.Thread(target=producer, args=(p,)) for p in range(N_PRODUCERS)]
    for t in producers:
        t.start()
    for t in producers:
        t.join(60)
        assert not t.is_alive()
    h.close()
    c.join(60)
    assert not c.is_alive()
    assert not errors, errors
    return taken, refused, ledger


def test_many_producers_drop_newest_lose_nothing_silently() -> None:
    """Under drop_newest every id is either taken exactly once or refused (and counted), never both."""
    taken, refused, ledger = _run_mixed(capacity=2048, policy="drop_newest")
    total = N_PRODUCERS * N_PER_PRODUCER
    counts = Counter(taken)
    assert not [i for i, n in counts.items() if n > 1], "duplicated ids"
    refused_ids = {i for r in refused for i in r}
    assert not refused_ids & counts.keys()
    assert counts.keys() | refused_ids == set(range(total))
    snap = ledger.snapshot()
    assert snap.created == total
    assert snap.dropped == ({"queue_full": len(refused_ids)} if refused_ids else {})
    assert (snap.delivered, snap.queued, snap.in_flight) == (len(taken), 0, 0)
    assert snap.balanced
    # FIFO per producer: each producer's ids come out in the order it offered them.
    for p in range(N_PRODUCERS):
        mine = [i for i in taken if i // N_PER_PRODUCER == p]
        assert mine == sorted(mine)


def test_many_producers_drop_oldest_account_for_every_item() -> None:
    """Under drop_oldest ids are taken at most once, in per-producer order, and evictions account for the rest."""
    taken, refused, ledger = _run_mixed(capacity=1024, policy="drop_oldest")
    total = N_PRODUCERS * N_PER_PRODUCER
    assert refused == [[] for _ in range(N_PRODUCERS)]  # drop_oldest never refuses the new item
    assert len(set(taken)) == len(taken)
    snap = ledger.snapshot()
    assert snap.created == total
    assert len(taken) + snap.dropped.get("queue_full", 0) == total
    assert snap.balanced
    for p in range(N_PRODUCERS):
        mine = [i for i in taken if i // N_PER_PRODUCER == p]
        assert mine == sorted(mine)


def test_many_producers_large_capacity_take_everything() -> None:
    """With room for everything, all 160 000 ids are taken exactly once and nothing is dropped."""
    total = N_PRODUCERS * N_PER_PRODUCER
    taken, refused, ledger = _run_mixed(capacity=total, policy="drop_newest")
    assert sorted(taken) == list(range(total))
    assert refused == [[] for _ in range(N_PRODUCERS)]
    snap = ledger.snapshot()
    assert (snap.created, snap.delivered, snap.dropped_total) == (total, total, 0)
    assert snap.balanced


@pytest.mark.asyncio
async def test_wake_at_wakes_early_but_takes_up_to_max() -> None:
    """With wake_at, the consumer wakes at that many items and takes everything there, up to max_items."""
    h, ledger = make(capacity=1000)
    task = asyncio.ensure_future(h.take_batch(500, 60.0, wake_at=10))
    await asyncio.sleep(0)
    assert not task.done()
    offer_from_thread(h, range(9))
    assert h.wakeups == 0  # below the wake threshold: no cross-thread wake-up
    offer_from_thread(h, range(9, 300))  # crosses it: one wake-up, and the consumer takes all 300
    batch = await asyncio.wait_for(task, WAIT)
    assert batch == list(range(300)) and h.wakeups == 1
    ledger.settle_delivered(len(batch))
    assert_balanced(ledger)


@pytest.mark.asyncio
async def test_wake_at_above_max_items_wakes_only_for_a_burst() -> None:
    """wake_at above max_items (a consumer that polls): a full take is taken at once, a parked take is woken only at
    wake_at items, and then takes max_items."""
    h, ledger = make(capacity=1000)
    offer_from_thread(h, range(64))
    assert await asyncio.wait_for(h.take_batch(64, 60.0, wake_at=512), WAIT) == list(range(64))
    task = asyncio.ensure_future(h.take_batch(64, 60.0, wake_at=512))
    await asyncio.sleep(0)
    offer_from_thread(h, range(64, 575))  # 511 queued: past max_items, below wake_at
    assert h.wakeups == 0  # offer() schedules a wake-up synchronously, or not at all
    await asyncio.sleep(0)
    assert not task.done()
    offer_from_thread(h, [575])  # the 512th: one wake-up
    assert await asyncio.wait_for(task, WAIT) == list(range(64, 128))
    assert h.wakeups == 1
    ledger.settle_delivered(128)
    h.discard_all("shutdown")
    assert_balanced(ledger)


@pytest.mark.asyncio
async def test_wake_consumer_resolves_a_parked_take() -> None:
    """wake_consumer() (on the loop) ends a parked take_batch early, with whatever is there."""
    h, _ = make()
    task = await park(h, 50)
    h.wake_consumer()
    assert await asyncio.wait_for(task, WAIT) == []


# ---------------------------------------------------------------------- re-entrance (a signal handler, a __del__)
def _in_thread(fn: Callable[[], object]) -> object:
    """Run ``fn`` on a daemon thread; fail (instead of hanging the session) if it does not return promptly."""
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(WAIT)
    assert not t.is_alive(), "deadlocked on re-entrance"
    return out[0]


def test_offer_reentered_mid_update_is_set_aside_then_admitted(monkeypatch: pytest.MonkeyPatch) -> None:
    """An offer re-entering from inside another offer's locked update (as a signal handler or __del__ can, on the
    same thread) returns at once without touching the interrupted update; the item is admitted by the next read or
    take, and the ledger balances."""
    h, ledger = make(8)
    inner: list[bool] = []
    real = time.monotonic

    def reentering_clock() -> float:  # called inside offer's locked region
        if not inner:
            inner.append(h.offer(99))
        return real()

    monkeypatch.setattr(_handoff, "time", types.SimpleNamespace(monotonic=reentering_clock))
    assert _in_thread(lambda: h.offer(1)) is True
    assert inner == [True]
    assert len(h) == 1  # the interrupted offer's item only: the re-entrant one is set aside, not interleaved
    snap = ledger.snapshot()  # a read admits what was set aside
    assert (snap.created, snap.queued, snap.dropped) == (2, 2, {})
    assert snap.balanced
    assert h.take_nowait(10) == [1, 99]


def test_offer_reentered_from_a_snapshot_and_a_take_never_deadlocks() -> None:
    """Offers re-entering a snapshot (via the queue view) or a take are set aside, never deadlock, never corrupt
    what the interrupted call reads or takes, and are admitted by the next update."""
    h, ledger = make(8)
    h.offer(1)
    view = ledger.oldest
    assert view is not None
    results: list[bool] = []

    def reentering_view() -> tuple[int, float | None]:
        results.append(h.offer(2))
        return view()

    ledger.oldest = reentering_view
    snap = _in_thread(ledger.snapshot)
    assert isinstance(snap, LedgerSnapshot)
    assert results == [True]
    assert (snap.created, snap.queued) == (1, 1)  # read before the set-aside item was admitted: still consistent
    assert snap.balanced
    ledger.oldest = view
    assert _in_thread(lambda: h.take_nowait(10)) == [1, 2]
    final = ledger.snapshot()
    assert (final.created, final.in_flight, final.dropped) == (2, 2, {})
    assert final.balanced


def test_reentrant_offers_beyond_the_capacity_are_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """What re-entrant offers set aside is bounded by the capacity; beyond it an item is dropped ``reentrant``,
    counted on its own counter, and created == delivered + dropped + queued + in_flight still holds."""
    h, ledger = make(4)
    inner: list[bool] = []
    real = time.monotonic

    def reentering_clock() -> float:
        if not inner:
            inner.extend(h.offer(100 + k) for k in range(6))
        return real()

    monkeypatch.setattr(_handoff, "time", types.SimpleNamespace(monotonic=reentering_clock))
    assert _in_thread(lambda: h.offer(1)) is True
    assert inner == [True] * 4 + [False] * 2
    snap = ledger.snapshot()
    # 1 + 4 admitted in order against a capacity of 4 (drop_newest): 4 queued, 1 queue_full; 2 refused re-entrant.
    assert (snap.created, snap.queued, snap.dropped) == (7, 4, {"queue_full": 1, "reentrant": 2})
    assert snap.balanced


def test_reentrant_counts_start_afresh_in_a_forked_child() -> None:
    """reset_after_fork forgets the parent's re-entrant refusals and counts what the parent set aside as
    fork_discard (the child's ledger starts from its own counts)."""
    h, ledger = make(8)
    next(ledger.reentrant)
    h._deferred.append(5)  # set aside in the parent, never admitted
    h.reset_after_fork()
    assert ledger.snapshot().dropped == {"fork_discard": 1}
    assert ledger.snapshot().balanced
    assert ledger.busy is False


# ------------------------------------------------------------------ memory per queued item
def test_queued_items_share_enqueue_times_within_the_grain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Items offered within _TIME_GRAIN of the previous one share one float (a deque slot each, no float); the oldest
    queued age still reads the first item's time, and a later item past the grain gets a time of its own."""
    clock = iter([100.0, 100.0004, 100.0008, 100.5, 100.5])
    monkeypatch.setattr(_handoff.time, "monotonic", lambda: next(clock))
    h, ledger = make(capacity=10)
    assert all(h.offer(i) for i in range(4))
    times = list(h._times)
    assert times == [100.0, 100.0, 100.0, 100.5]
    assert times[0] is times[1] is times[2]
    assert ledger.oldest is not None
    assert ledger.oldest() == (4, 100.0)


def test_queued_items_cost_a_deque_slot_each() -> None:
    """10 000 items offered in a tight loop add < 24 B of handoff memory each: a slot in the item deque and one in the
    time deque, ~16.5 B (a float per item was 24 B more)."""
    import tracemalloc

    items = list(range(100_000, 110_000))  # allocated before the measurement: only the queue's own cost counts
    h, _ = make(capacity=20_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for item in items:
            h.offer(item)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(h) == len(items)
    assert grown / len(items) < 24, grown / len(items)
