"""What one hand-off from an application thread to the SDK costs, next to the obvious alternatives.

Per-call cost in ns of:

- ``Handoff.offer`` with its real consumer: an asyncio loop in another thread awaiting ``take_batch(512, 0.05)``,
  so coalesced wake-ups happen exactly as in production;
- ``queue.Queue.put_nowait`` with a consumer thread blocked in ``get()``;
- ``loop.call_soon_threadsafe(callback)`` onto a running loop in another thread;
- ``collections.deque.append``: the floor (no lock, no consumer).

From 1 and from 4 producer threads, interleaved in rounds (the order rotates each round) so machine noise hits all of
them alike. A per-call ``perf_counter_ns`` costs as much as the call, so each sample is a block of 64 calls timed
together and divided by 64; percentiles are over blocks. Consumers drain between runs, outside the timing.

Target: ``offer`` p50 no slower than ``put_nowait`` p50.

    python benchmarks/handoff.py [--quick]
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from _common import markdown_table, parse_args, ratio, summarize, verdict, write_results

from judgeval_async._handoff import Handoff
from judgeval_async._metrics import SignalLedger

BLOCK = 64  # calls per timed block
ITEM = object()  # one preallocated item: we measure the hand-off, not allocation
MECHANISMS = ("Handoff.offer", "Queue.put_nowait", "call_soon_threadsafe", "deque.append")
THREADS = (1, 4)


class LoopThread:
    """An asyncio loop running in a daemon thread; ``start`` returns once it runs."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> LoopThread:
        self._thread.start()
        self._ready.wait()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)


class Target:
    """One mechanism: ``call`` is what producers invoke; ``drained()`` says the consumer has caught up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.call: Callable[[Any], Any]
        self.item: Any = ITEM
        self.refused = 0

    def drained(self) -> bool:
        return True

    def close(self) -> None:
        return None


class HandoffTarget(Target):
    def __init__(self) -> None:
        super().__init__("Handoff.offer")
        self.ledger = SignalLedger("bench")
        self.handoff: Handoff[object] = Handoff(self.ledger, 1 << 20, "drop_newest")
        self.call = self.handoff.offer
        self.taken = 0
        self.loop = LoopThread("bench-handoff-consumer").start()
        self._task = asyncio.run_coroutine_threadsafe(self._consume(), self.loop.loop)

    async def _consume(self) -> None:
        h = self.handoff
        while True:
            batch = await h.take_batch(512, 0.05)
            if batch:
                self.ledger.settle_delivered(len(batch))
            self.taken += len(batch)
            if not batch and h.closed and not len(h):
                return

    def drained(self) -> bool:
        return len(self.handoff) == 0

    def close(self) -> None:
        self.handoff.close()
        self._task.result(5.0)
        self.loop.stop()
        self.refused = sum(self.ledger.dropped.values())


class QueueTarget(Target):
    def __init__(self) -> None:
        super().__init__("Queue.put_nowait")
        self.q: queue.Queue[object] = queue.Queue()
        self.call = self.q.put_nowait
        self._thread = threading.Thread(target=self._consume, name="bench-queue-consumer", daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        get = self.q.get
        while get() is not None:
            pass

    def drained(self) -> bool:
        return self.q.qsize() == 0

    def close(self) -> None:
        self.q.put(None)
        self._thread.join(5.0)


class CallSoonTarget(Target):
    def __init__(self) -> None:
        super().__init__("call_soon_threadsafe")
        self.loop = LoopThread("bench-callsoon-loop").start()
        self.sent = 0
        self.ran = 0
        # The "item" is the callback itself, so producers make exactly the call_soon_threadsafe(callback) call.
        self.call = self.loop.loop.call_soon_threadsafe
        self.item = self._callback

    def _callback(self) -> None:
        self.ran += 1

    def drained(self) -> bool:
        return self.ran >= self.sent

    def close(self) -> None:
        self.loop.stop()


class DequeTarget(Target):
    def __init__(self) -> None:
        super().__init__("deque.append")
        self.d: collections.deque[object] = collections.deque(maxlen=4096)  # bounded: no memory growth
        self.call = self.d.append


def run_producers(target: Target, threads: int, blocks: int) -> tuple[list[float], float]:
    """``threads`` producers each time ``blocks`` blocks of BLOCK calls; (ns per call of every block, total calls/s)."""
    results: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)
    call = target.call
    if isinstance(target, CallSoonTarget):
        target.sent += threads * blocks * BLOCK

    def produce(out: list[float]) -> None:
        block = range(BLOCK)
        clock = time.perf_counter_ns
        item = target.item
        barrier.wait()
        for _ in range(blocks):
            t0 = clock()
            for _ in block:
                call(item)
            out.append((clock() - t0) / BLOCK)

    workers = [threading.Thread(target=produce, args=(results[i],), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    # Let the consumer catch up outside the timing, so the next run starts from an empty queue.
    deadline = time.monotonic() + 30.0
    while not target.drained() and time.monotonic() < deadline:
        time.sleep(0.001)
    samples = [s for r in results for s in r]
    return samples, (threads * blocks * BLOCK) / wall


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    rounds, blocks = (3, 40) if args.quick else (25, 300)
    targets: dict[str, Target] = {
        "Handoff.offer": HandoffTarget(),
        "Queue.put_nowait": QueueTarget(),
        "call_soon_threadsafe": CallSoonTarget(),
        "deque.append": DequeTarget(),
    }
    samples: dict[tuple[str, int], list[float]] = {(m, t): [] for m in MECHANISMS for t in THREADS}
    rates: dict[tuple[str, int], list[float]] = {(m, t): [] for m in MECHANISMS for t in THREADS}
    wall0 = time.perf_counter()
    for r in range(rounds):
        order = MECHANISMS[r % len(MECHANISMS) :] + MECHANISMS[: r % len(MECHANISMS)]
        for threads in THREADS if r % 2 == 0 else THREADS[::-1]:
            for name in order:
                got, rate = run_producers(targets[name], threads, blocks)
                samples[name, threads].extend(got)
                rates[name, threads].append(rate)
    elapsed = time.perf_counter() - wall0
    handoff = targets["Handoff.offer"]
    assert isinstance(handoff, HandoffTarget)
    wakeups, offered = handoff.handoff.wakeups, handoff.ledger.created
    for t in targets.values():
        t.close()

    stats = {key: summarize(v) for key, v in samples.items()}
    for key, v in rates.items():
        stats[key]["calls_per_s"] = sorted(v)[len(v) // 2]

    rows = []
    for threads in THREADS:
        base = stats["Queue.put_nowait", threads]["p50"]
        floor = stats["deque.append", threads]["p50"]
        for name in MECHANISMS:
            s = stats[name, threads]
            rows.append(
                [
                    name,
                    threads,
                    s["p50"],
                    s["p99"],
                    s["calls_per_s"] / 1e6,
                    ratio(s["p50"], base),
                    ratio(s["p50"], floor),
                ]
            )
    table = markdown_table(
        ["mechanism", "producers", "p50 ns/call", "p99 ns/call", "M calls/s", "p50 / put_nowait", "p50 / deque"],
        rows,
    )
    targets_rows = []
    target_results = {}
    for threads in THREADS:
        offer = stats["Handoff.offer", threads]["p50"]
        put = stats["Queue.put_nowait", threads]["p50"]
        ok = offer <= put
        target_results[f"offer_p50_le_put_nowait_{threads}t"] = {"offer_ns": offer, "put_nowait_ns": put, "pass": ok}
        targets_rows.append([f"offer p50 ≤ put_nowait p50, {threads} producer(s)", offer, put, verdict(ok)])
    target_table = markdown_table(["target", "offer ns", "put_nowait ns", "result"], targets_rows)
    notes = (
        f"{rounds} rounds x {blocks} blocks x {BLOCK} calls per producer per run; percentiles over blocks "
        f"(per-call mean of each block). {elapsed:.1f} s. Handoff: {offered:,} offers, {wakeups:,} cross-thread "
        f"wake-ups ({ratio(offered, wakeups):,.0f} offers per wake-up), {handoff.refused:,} refused."
    )
    md = f"## Hand-off cost per call\n\n{table}\n\n{target_table}\n\n{notes}\n"
    print(md)
    write_results(
        "handoff",
        {
            "quick": args.quick,
            "block": BLOCK,
            "rounds": rounds,
            "blocks_per_run": blocks,
            "results": {f"{name}|{threads}": stats[name, threads] for name in MECHANISMS for threads in THREADS},
            "targets": target_results,
            "handoff_offers": offered,
            "handoff_wakeups": wakeups,
            "handoff_refused": handoff.refused,
            "elapsed_s": elapsed,
        },
        md,
        args.results_dir,
    )


if __name__ == "__main__":
    main()
