"""Tests adapted from CPython's ``Lib/test/test_queue.py`` (3.13), rewritten for the Handoff contract.

Source: https://github.com/python/cpython/blob/3.13/Lib/test/test_queue.py (PSF licence). Written from that file,
not copied; each test names the CPython test it adapts.

How the contracts map:
- ``put``/``put_nowait`` -> ``offer``: it never blocks and never raises, so "raises Full" becomes "returns False and
  counts ``queue_full``", and "raises ShutDown" becomes "returns False and counts ``shutdown``".
- ``get``/``get_nowait`` -> ``take_batch(1, timeout)`` / ``take_nowait(1)``: "raises Empty" becomes "returns []".
- ``shutdown()`` -> ``close()``; ``shutdown(immediate=True)`` -> ``discard_all(reason)`` + ``close()``.
- ``qsize``/``empty``/``full`` -> ``len(h)``, ``len(h) == 0``, ``len(h) == h.capacity``.

Omitted, and why:
- ``task_done``/``join`` tests: the handoff settles items through its ledger, not a task counter; the ledger
  invariant is asserted instead.
- Blocking ``put`` and ``put(timeout=...)`` tests: ``offer`` never blocks by design.
- ``LifoQueue``/``PriorityQueue`` ordering: the handoff is FIFO only.
- ``test_shrinking_queue``: capacity is fixed at construction.
- ``maxsize <= 0`` meaning "unbounded": the handoff is always bounded and rejects it instead.
- ``FailingQueue`` overrides ``_put``/``_get``; the handoff has no such hooks, so those tests become "a failure
  in the consumer (an exception after taking, or cancellation while waiting) does not corrupt the queue".
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from judgeval_async._handoff import Handoff
from judgeval_async._metrics import SignalLedger

QUEUE_SIZE = 5  # the same small size CPython uses
WAIT = 10.0


def make(capacity: int = QUEUE_SIZE, policy: str = "drop_newest") -> tuple[Handoff[object], SignalLedger]:
    ledger = SignalLedger("evaluations")
    return Handoff(ledger, capacity, policy), ledger


def full(h: Handoff[object]) -> bool:
    return len(h) == h.capacity


def in_thread(fn: object) -> None:
    t = threading.Thread(target=fn)  # type: ignore[arg-type]
    t.start()
    t.join(WAIT)
    assert not t.is_alive()


async def simple_queue_test(h: Handoff[object], ledger: SignalLedger) -> None:
    """Port of BaseQueueTestMixin.simple_queue_test for the FIFO queue."""
    assert len(h) == 0
    assert not full(h)
    for v in (111, 333, 222):
        assert h.offer(v)
    actual = [h.take_nowait(1)[0] for _ in range(3)]
    assert actual == [111, 333, 222], "Didn't seem to queue the correct data!"
    for i in range(QUEUE_SIZE - 1):
        assert h.offer(i)
        assert len(h), "Queue should not be empty"
    assert not full(h), "Queue should not be full"
    last = 2 * QUEUE_SIZE
    assert h.offer(last)
    assert full(h), "Queue should be full"
    assert len(h) != 0
    # put(block=0) / put(timeout=0.01) raising Full -> offer returns False at once, and the drop is counted.
    before = ledger.snapshot().dropped.get("queue_full", 0)
    assert h.offer(3 * 2 * QUEUE_SIZE) is False
    assert ledger.snapshot().dropped["queue_full"] == before + 1
    # Empty it.
    assert h.take_nowait(QUEUE_SIZE) == [*range(QUEUE_SIZE - 1), last]
    assert len(h) == 0, "Queue should be empty"
    # get(block=0) / get(timeout=0.01) raising Empty -> an empty batch.
    assert h.take_nowait(1) == []
    assert await asyncio.wait_for(h.take_batch(1, timeout=0.01), WAIT) == []
    # do_blocking_test(q.get, (), q.put, ('empty',)): a parked get is released by a put from another thread.
    task = asyncio.ensure_future(h.take_batch(1, timeout=3600))
    await asyncio.sleep(0)
    assert not task.done()
    in_thread(lambda: h.offer("empty"))
    assert await asyncio.wait_for(task, WAIT) == ["empty"]
    ledger.settle_delivered(ledger.snapshot().in_flight)
    assert ledger.snapshot().balanced


@pytest.mark.asyncio
async def test_basic() -> None:
    """test_basic: the simple queue test passes twice on the same queue (state fully resets between runs)."""
    h, ledger = make()
    await simple_queue_test(h, ledger)
    await simple_queue_test(h, ledger)


@pytest.mark.asyncio
async def test_negative_timeout_returns_at_once() -> None:
    """test_negative_timeout_raises_exception: a negative timeout is not an error here; it means "don't wait"."""
    h, _ = make()
    assert await asyncio.wait_for(h.take_batch(1, timeout=-1), WAIT) == []
    h.offer(1)
    assert await asyncio.wait_for(h.take_batch(1, timeout=-1), WAIT) == [1]


@pytest.mark.parametrize("size", [0, -1])
def test_non_positive_maxsize_is_rejected(size: int) -> None:
    """CPython treats maxsize <= 0 as unbounded; the handoff must be bounded, so it refuses instead."""
    with pytest.raises(ValueError):
        Handoff(SignalLedger("spans"), size)


def test_nowait() -> None:
    """test_nowait: QUEUE_SIZE offers succeed, the next fails; QUEUE_SIZE takes succeed, the next is empty."""
    h, ledger = make()
    for i in range(QUEUE_SIZE):
        assert h.offer(i)
    assert h.offer(QUEUE_SIZE) is False
    for i in range(QUEUE_SIZE):
        assert h.take_nowait(1) == [i]
    assert h.take_nowait(1) == []
    ledger.settle_delivered(QUEUE_SIZE)
    assert ledger.snapshot().balanced


@pytest.mark.asyncio
async def test_many_threads() -> None:
    """test_many_threads / queue_join_test: the consumer's total equals the sum of what many threads offered."""
    n_threads, per_thread = 4, 2000
    h, ledger = make(capacity=n_threads * per_thread)
    threads = [
        threading.Thread(target=lambda b=b: [h.offer(x) for x in range(b, b + per_thread)])
        for b in range(0, n_threads * per_thread, per_thread)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    h.close()
    total = 0
    while batch := await asyncio.wait_for(h.take_batch(500, timeout=3600), WAIT):
        total += sum(batch)  # type: ignore[arg-type]
        ledger.settle_delivered(len(batch))
    assert total == sum(range(n_threads * per_thread))
    assert ledger.snapshot().balanced


# ------------------------------------------------------------------ FailingQueue, adapted
@pytest.mark.asyncio
async def test_failing_consumer_does_not_corrupt_queue() -> None:
    """failing_queue_test: after a consumer fails mid-batch, the queue keeps the rest and keeps working."""
    h, ledger = make()
    for i in range(QUEUE_SIZE):
        h.offer(i)

    async def failing_consumer() -> None:
        batch = await h.take_batch(2, timeout=3600)
        assert batch == [0, 1]
        raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        await asyncio.wait_for(failing_consumer(), WAIT)
    ledger.settle_dropped("serialization_error", 2)  # what the real consumer does with a batch it failed on
    assert len(h) == QUEUE_SIZE - 2
    assert h.offer("new")
    assert h.take_nowait(10) == [2, 3, 4, "new"]
    ledger.settle_delivered(4)
    assert ledger.snapshot().balanced


@pytest.mark.asyncio
async def test_get_failing_after_item_arrived_leaves_item_queued() -> None:
    """failing_queue_test's failing blocking get: a take cancelled after its wake-up still leaves the item queued."""
    h, ledger = make()
    task = asyncio.ensure_future(h.take_batch(1, timeout=3600))
    await asyncio.sleep(0)
    h.offer("first")  # schedules the wake-up; the task has not resumed yet when it is cancelled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(h) == 1, "Queue should not be empty"
    assert await asyncio.wait_for(h.take_batch(1, timeout=3600), WAIT) == ["first"]
    ledger.settle_delivered(1)
    assert ledger.snapshot().balanced


def test_items_are_opaque() -> None:
    """The queue never compares, hashes or truth-tests its items, so hostile items cannot break it."""

    class Hostile:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("eq")

        def __hash__(self) -> int:
            raise RuntimeError("hash")

        def __bool__(self) -> bool:
            raise RuntimeError("bool")

        def __len__(self) -> int:
            raise RuntimeError("len")

    h, ledger = make(policy="drop_oldest")
    items = [Hostile() for _ in range(QUEUE_SIZE + 2)]
    assert all([h.offer(x) for x in items])
    taken = h.take_nowait(QUEUE_SIZE)
    assert [id(x) for x in taken] == [id(x) for x in items[2:]]
    ledger.settle_delivered(QUEUE_SIZE)
    assert ledger.snapshot().balanced


def test_reentrancy_from_del() -> None:
    """C SimpleQueue test_reentrancy: an evicted item's __del__ that offers again must not deadlock."""
    h, _ = make(capacity=2, policy="drop_oldest")

    class OffersOnDelete:
        def __del__(self) -> None:
            h.offer("from __del__")

    finished = threading.Event()

    def run() -> None:
        h.offer(OffersOnDelete())
        h.offer(1)
        h.offer(2)  # evicts the OffersOnDelete, dropping its last reference
        finished.set()

    # A daemon thread, so a deadlock fails this test instead of hanging the suite.
    threading.Thread(target=run, daemon=True).start()
    assert finished.wait(3.0), "offer deadlocked re-entering from __del__"


# ------------------------------------------------------------------ shutdown (3.13), adapted to close()
@pytest.mark.asyncio
async def test_shutdown_empty() -> None:
    """test_shutdown_empty: after close, an offer is refused (counted shutdown) and a take returns nothing."""
    h, ledger = make()
    h.close()
    assert h.offer("data") is False
    assert await asyncio.wait_for(h.take_batch(1, timeout=3600), WAIT) == []
    assert ledger.snapshot().dropped == {"shutdown": 1}
    assert ledger.snapshot().balanced


@pytest.mark.asyncio
async def test_shutdown_nonempty() -> None:
    """test_shutdown_nonempty: items queued before close are still taken; then takes return nothing."""
    h, ledger = make()
    h.offer("data")
    h.close()
    assert await asyncio.wait_for(h.take_batch(1, timeout=3600), WAIT) == ["data"]
    assert await asyncio.wait_for(h.take_batch(1, timeout=3600), WAIT) == []
    ledger.settle_delivered(1)
    assert ledger.snapshot().balanced


@pytest.mark.asyncio
async def test_shutdown_immediate() -> None:
    """test_shutdown_immediate: discarding then closing leaves nothing to take, and the loss is counted."""
    h, ledger = make()
    h.offer("data")
    h.offer("more")
    assert h.discard_all("shutdown_deadline") == 2
    h.close()
    assert await asyncio.wait_for(h.take_batch(1, timeout=3600), WAIT) == []
    snap = ledger.snapshot()
    assert snap.dropped == {"shutdown_deadline": 2}
    assert snap.balanced


def test_shutdown_allowed_transitions() -> None:
    """test_shutdown_allowed_transitions / test_shutdown_repeat: close is idempotent and closed stays True."""
    h, _ = make()
    assert not h.closed
    h.close()
    assert h.closed
    h.close()
    h.discard_all("shutdown_deadline")
    h.close()
    assert h.closed


@pytest.mark.parametrize("immediate", [False, True])
@pytest.mark.asyncio
async def test_shutdown_all_methods_in_one_thread(immediate: bool) -> None:
    """test_shutdown_[immediate_]all_methods_in_one_thread: every method behaves after close, in one thread."""
    h, ledger = make(capacity=2)
    h.offer("L")
    h.offer("O")
    if immediate:
        h.discard_all("shutdown_deadline")
    h.close()
    assert h.offer("E") is False
    assert h.offer("W") is False
    if immediate:
        assert h.take_nowait(1) == []
        assert await asyncio.wait_for(h.take_batch(1, timeout=3600), WAIT) == []
    else:
        assert h.take_nowait(1) == ["L"]
        assert await asyncio.wait_for(h.take_batch(1, timeout=3600), WAIT) == ["O"]
        assert await asyncio.wait_for(h.take_batch(1, timeout=3600), WAIT) == []
        ledger.settle_delivered(2)
    snap = ledger.snapshot()
    assert snap.dropped.get("shutdown") == 2
    assert snap.balanced


def test_shutdown_put_on_full_queue_counts_shutdown() -> None:
    """test_shutdown_put: an offer to a full, closed queue is a shutdown drop, not a queue_full drop."""
    h, ledger = make(capacity=2)
    h.offer(1)
    h.offer(2)
    h.close()
    assert h.offer(3) is False
    assert ledger.snapshot().dropped == {"shutdown": 1}


@pytest.mark.parametrize("immediate", [False, True])
@pytest.mark.asyncio
async def test_shutdown_get_wakes_parked_consumer(immediate: bool) -> None:
    """test_shutdown_get: a consumer blocked waiting is released by close from another thread."""
    h, ledger = make()
    h.offer("x")
    task = asyncio.ensure_future(h.take_batch(QUEUE_SIZE, timeout=3600))
    await asyncio.sleep(0)
    assert not task.done()

    def shut() -> None:
        if immediate:
            h.discard_all("shutdown_deadline")
        h.close()

    in_thread(shut)
    assert await asyncio.wait_for(task, WAIT) == ([] if immediate else ["x"])
    ledger.settle_delivered(ledger.snapshot().in_flight)
    assert ledger.snapshot().balanced


def test_shutdown_all_methods_in_many_threads() -> None:
    """test_shutdown_all_methods_in_many_threads: producers racing close lose nothing unaccounted."""
    h, ledger = make(capacity=100_000)
    go = threading.Barrier(5)
    accepted: list[int] = []
    lock = threading.Lock()

    def producer(base: int) -> None:
        go.wait(WAIT)
        mine = [i for i in range(base, base + 5000) if h.offer(i)]
        with lock:
            accepted.extend(mine)

    threads = [threading.Thread(target=producer, args=(b,)) for b in range(0, 20_000, 5000)]
    for t in threads:
        t.start()
    go.wait(WAIT)
    h.close()  # races the producers on purpose
    for t in threads:
        t.join(WAIT)
    taken = h.take_nowait(100_000)
    assert sorted(taken) == sorted(accepted)  # type: ignore[type-var]
    ledger.settle_delivered(len(taken))
    snap = ledger.snapshot()
    assert snap.created == 20_000
    assert snap.dropped.get("shutdown", 0) == 20_000 - len(accepted)
    assert snap.balanced
