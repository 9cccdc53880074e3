"""Tags (seed Problem 2): ``tag()`` offers (trace id, tags) to a bounded queue; the loop merges them into a buffer
deduplicated per trace and flushes every ``tag_flush_interval`` seconds or at ``tag_flush_traces`` traces.

Flushes use ``POST /traces/tags/add_batch`` with at most ``tag_flush_traces`` traces per call. If that endpoint
answers 404/405 the batcher falls back, for the rest of the session, to ``POST /v1/projects/{id}/traces/{trace}/tags``
with concurrency bounded by aiometer. The ledger unit is one ``tag()`` call: it is delivered when the flush carrying
its trace succeeds, or dropped with a reason. The buffer is bounded: beyond ``tag_buffer_max_traces`` traces, or
``tag_max_per_trace`` tags in one trace, the call is dropped (``buffer_full``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

import aiometer

from ._config import Config
from ._metrics import Metrics
from ._pipeline import QueueService
from ._project import ProjectResolver
from ._serialize import RateLimitedLog
from ._transport import AsyncTransport, SendResult, SendStatus

__all__ = ["TagBatcher"]

logger = logging.getLogger(__name__)

TagItem = tuple[str, tuple[str, ...]]  # (trace id as 32 hex chars, tags)


@dataclass
class _TraceTags:
    tags: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    calls: int = 0  # tag() calls merged here: the ledger unit


class TagBatcher(QueueService[TagItem]):
    """Merges, deduplicates and flushes tags on the loop."""

    def __init__(self, config: Config, metrics: Metrics, transport: AsyncTransport, resolver: ProjectResolver) -> None:
        # The queue in front of the buffer holds calls; the buffer holds traces. Both are bounded.
        super().__init__(metrics.tags, config.max_queue_size, "drop_newest")
        self._config = config
        self._transport = transport
        self._resolver = resolver
        self._buffer: dict[str, _TraceTags] = {}
        self._batch_supported = True
        self._flush_now = False
        self._log = RateLimitedLog(logger)

    @property
    def buffered_traces(self) -> int:
        return len(self._buffer)

    async def _consume(self) -> None:
        h = self.handoff
        loop = asyncio.get_running_loop()
        interval = self._config.tag_flush_interval
        next_flush = loop.time() + interval
        while True:
            wait = max(0.0, next_flush - loop.time())
            items = await h.take_batch(self._config.tag_flush_traces, wait)
            self._merge(items)
            # Fill the buffer from what is already queued before deciding to send: fuller, fewer batch calls.
            while len(h) and len(self._buffer) < self._config.tag_flush_traces:
                self._merge(h.take_nowait(self._config.tag_flush_traces))
            done = h.closed and not len(h)
            if (
                self._flush_now
                or done
                or loop.time() >= next_flush
                or len(self._buffer) >= self._config.tag_flush_traces
            ):
                await self._flush(wait_for_slot=done)
                if not len(h) and not self._buffer:
                    # Everything offered before the flush request has reached a send: the request is served.
                    self._flush_now = False
                next_flush = loop.time() + interval
            self._notify()
            if done and not self._buffer:
                await self._join_spawned()
                return

    def _on_flush_requested(self) -> None:
        self._flush_now = True

    def _merge(self, items: list[TagItem]) -> None:
        limit_traces = self._config.tag_buffer_max_traces
        limit_tags = self._config.tag_max_per_trace
        led = self.ledger
        dropped = 0
        for trace_id, tags in items:
            entry = self._buffer.get(trace_id)
            if entry is None:
                if len(self._buffer) >= limit_traces:
                    dropped += 1
                    continue
                entry = self._buffer[trace_id] = _TraceTags()
            new = [t for t in tags if t not in entry.tags]
            if len(entry.tags) + len(new) > limit_tags:
                dropped += 1
                continue
            for t in new:
                entry.tags[t] = None
            entry.calls += 1
        if dropped:
            led.settle_dropped("buffer_full", dropped)
            self._log.warning("full", "judgeval_async: tag buffer full; dropped %d tag() calls", dropped)

    async def _flush(self, *, wait_for_slot: bool) -> None:
        """Send the buffer in chunks of ``tag_flush_traces`` traces, each as a background send.

        Unless draining at shutdown, only as many chunks as there are free send slots go out; the rest stay
        buffered, and the consumer goes on merging (deduplication keeps the buffer bounded by traces) instead of
        letting raw tag() calls pile up in the queue behind a slow backend.
        """
        limit = self._config.max_concurrent_requests
        while self._buffer and (wait_for_slot or len(self._running) < limit):
            size = self._config.tag_flush_traces
            chunk = dict(list(self._buffer.items())[:size])
            for trace_id in chunk:
                del self._buffer[trace_id]
            await self._spawn(self._send_chunk(chunk), limit)

    def _spawned_done(self, task: asyncio.Task[None]) -> None:
        super()._spawned_done(task)
        # A slot came free: if a flush is owed, wake the consumer now rather than at the next interval.
        if self._buffer and (self._flush_now or len(self._buffer) >= self._config.tag_flush_traces):
            self.handoff.wake_consumer()

    async def _send_chunk(self, chunk: dict[str, _TraceTags]) -> None:
        led = self.ledger
        calls = sum(e.calls for e in chunk.values())
        if self._batch_supported:
            url = self._config.api_url.rstrip("/") + "/traces/tags/add_batch"
            body = json.dumps(
                {
                    "project_name": self._config.project_name,
                    "tags_by_trace": {t: list(e.tags) for t, e in chunk.items()},
                }
            ).encode()
            result = await self._transport.send("tags_batch", url, body)
            if result.ok:
                led.settle_delivered(calls)
                return
            if not _batch_unsupported(result):
                self._drop(result, calls)
                return
            # Remembered for the session: this backend has no batch endpoint.
            self._batch_supported = False
            logger.info("judgeval_async: batch tag endpoint unavailable; sending tags per trace")
        project_id = await self._resolver.get(self._config.project_resolve_wait)
        if project_id is None:
            led.settle_dropped(self._resolver.failure_reason, calls)
            return
        base = self._config.api_url.rstrip("/")

        async def one(item: tuple[str, _TraceTags]) -> None:
            trace_id, entry = item
            url = f"{base}/v1/projects/{project_id}/traces/{trace_id}/tags"
            result = await self._transport.send("tags", url, json.dumps({"tags": list(entry.tags)}).encode())
            if result.ok:
                led.settle_delivered(entry.calls)
            else:
                self._drop(result, entry.calls)

        await aiometer.run_on_each(one, list(chunk.items()), max_at_once=self._config.max_concurrent_requests)

    def _drop(self, result: SendResult, calls: int) -> None:
        self.ledger.settle_dropped(result.status.value, calls)
        self._log.warning(
            "send:" + result.status.value,
            "judgeval_async: dropped %d tag() calls (%s, HTTP %s)",
            calls,
            result.status.value,
            result.http_status,
        )

    async def _on_close(self) -> None:
        # Buffered calls are already in_flight in the ledger; the base class counts them as shutdown_deadline.
        self._buffer.clear()

    def _forget_after_fork(self) -> None:
        self._buffer.clear()


def _batch_unsupported(result: SendResult) -> bool:
    return result.status is SendStatus.REJECTED and result.http_status in (404, 405)
