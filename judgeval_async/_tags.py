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
from ._delivery._envelope import Envelope, new_envelope
from ._metrics import Metrics
from ._pipeline import QueueService
from ._project import ProjectResolver
from ._routes import route_url
from ._sender import UNWELL_CUT, Lane
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
        self._flush_now = False
        self.lane = Lane("tags", TagExporter(config, transport, resolver), metrics.tags, metrics, config)
        self._log = RateLimitedLog(logger)

    @property
    def buffered_traces(self) -> int:
        return len(self._buffer)

    async def _consume(self) -> None:
        h = self.handoff
        loop = asyncio.get_running_loop()
        interval = self._config.tag_flush_interval
        next_flush = loop.time() + interval
        lane = self.lane
        assert lane is not None
        last_flush = loop.time()
        while True:
            # At most UNWELL_CUT between looks: an endpoint that turns unwell shortens the interval at once.
            wait = min(UNWELL_CUT, max(0.0, next_flush - loop.time()))
            items = await h.take_batch(self._config.tag_flush_traces, wait)
            self._merge(items)
            # Fill the buffer from what is already queued before deciding to send: fuller, fewer batch calls.
            while len(h) and len(self._buffer) < self._config.tag_flush_traces:
                self._merge(h.take_nowait(self._config.tag_flush_traces))
            done = h.closed and not len(h)
            # A partial batch goes only when asked to (flush once the queue is empty, shutdown, the interval; while
            # the endpoint is unwell, every UNWELL_CUT: the lane spills it to disk, bounding a kill -9's loss).
            now = loop.time()
            due = now >= next_flush or (bool(self._buffer) and lane.unwell and now - last_flush >= UNWELL_CUT)
            partial = done or due or (self._flush_now and not len(h))
            if partial or len(self._buffer) >= self._config.tag_flush_traces:
                await self._flush(partial=partial)
                last_flush = loop.time()
                if not len(h) and not self._buffer:
                    # Everything offered before the flush request has reached a send: the request is served.
                    self._flush_now = False
                if due:
                    next_flush = loop.time() + interval
            self._notify()
            if done and not self._buffer:
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

    async def _flush(self, *, partial: bool) -> None:
        """Hand the buffer to the lane in chunks of ``tag_flush_traces`` traces, one envelope each."""
        size = self._config.tag_flush_traces
        while self._buffer and (partial or len(self._buffer) >= size):
            chunk = dict(list(self._buffer.items())[:size])
            for trace_id in chunk:
                del self._buffer[trace_id]
            body = json.dumps(
                {
                    "project_name": self._config.project_name,
                    "tags_by_trace": {t: list(e.tags) for t, e in chunk.items()},
                }
            ).encode()
            calls = sum(e.calls for e in chunk.values())
            assert self.lane is not None
            self.lane.submit(new_envelope(body, signal="tags", items=calls, route="tags_batch"))

    async def _on_close(self) -> None:
        # Buffered calls are already in_flight in the ledger; the base class counts them as shutdown_deadline.
        self._buffer.clear()

    def _forget_after_fork(self) -> None:
        self._buffer.clear()


class TagExporter:
    """The tags' exporter seam: one ``add_batch`` call per envelope; if the backend has no batch endpoint (404/405),
    per-trace calls for the rest of the session (an envelope is delivered when every trace in it is)."""

    endpoint = "tags_batch"

    def __init__(self, config: Config, transport: AsyncTransport, resolver: ProjectResolver) -> None:
        self._config = config
        self._transport = transport
        self._resolver = resolver
        self._batch_supported = True

    async def send(self, envelope: Envelope) -> SendResult:
        if self._batch_supported:
            result = await self._transport.send(
                "tags_batch",
                route_url(self._config, "tags_batch"),
                envelope.payload,
                retry=False,
                idempotency_key=envelope.idempotency_key,
            )
            if not _batch_unsupported(result):
                return result
            # Remembered for the session: this backend has no batch endpoint.
            self._batch_supported = False
            logger.info("judgeval_async: batch tag endpoint unavailable; sending tags per trace")
        project_id = await self._resolver.get(self._config.project_resolve_wait)
        if project_id is None:
            reason = self._resolver.failure_reason
            known = {s.value for s in SendStatus}
            return SendResult(SendStatus(reason) if reason in known else SendStatus.EXHAUSTED)
        by_trace: dict[str, list[str]] = json.loads(envelope.payload)["tags_by_trace"]
        results: list[SendResult] = []

        async def one(item: tuple[str, list[str]]) -> None:
            trace_id, tags = item
            url = route_url(self._config, "tags", project_id=project_id, trace_id=trace_id)
            # Tags are a set: a trace re-sent when its envelope is retried adds nothing twice.
            key = f"{envelope.idempotency_key}-{trace_id}"
            body = json.dumps({"tags": tags}).encode()
            results.append(await self._transport.send("tags", url, body, retry=False, idempotency_key=key))

        await aiometer.run_on_each(one, list(by_trace.items()), max_at_once=self._config.max_concurrent_requests)
        return next((r for r in results if not r.ok), SendResult(SendStatus.DELIVERED))

    async def split(self, envelope: Envelope) -> list[Envelope] | None:
        return None

    async def unpack(self, envelope: Envelope) -> list[Envelope] | None:
        return None  # tag batches are never packed


def _batch_unsupported(result: SendResult) -> bool:
    return result.status is SendStatus.REJECTED and result.http_status in (404, 405)
