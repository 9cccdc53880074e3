"""Spans: the OpenTelemetry processor (caller side: one offer) and the OTLP export service (loop side).

Caller side, in ``on_end``: pop the span's internal metadata and offer the span to the bounded handoff. That is all.
Loop side: take batches (512 spans or 5 s, whichever first; at once on flush), encode them to OTLP protobuf with
the lean encoder of ``_otlp`` (yielding to the loop between chunks so the GIL is shared), gzip, and send with
retry. A 413 splits the batch in half and resends each half; a single span still too large is replaced by a small
marker span and counted ``payload_too_large``. A span that fails to encode is dropped alone
(``serialization_error``), never its batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiometer
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ._config import Config
from ._metadata import SpanMetadataStore
from ._metrics import Metrics
from ._otlp import ScopeCache, encode_request, encode_spans_each
from ._pipeline import QueueService
from ._project import ProjectResolver
from ._serialize import RateLimitedLog
from ._transport import AsyncTransport, SendStatus

__all__ = ["JudgmentSpanProcessor", "SpanExportService"]

logger = logging.getLogger(__name__)
_ENCODE_CHUNK = 32  # spans encoded between two yields: each yield polls the selector, which releases the GIL
_PROTOBUF = "application/x-protobuf"


class _WithExtras:
    """A finished span plus internal attributes to merge at encode time (only when it has any)."""

    __slots__ = ("extras", "span")

    def __init__(self, span: ReadableSpan, extras: dict[str, Any]) -> None:
        self.span = span
        self.extras = extras


SpanItem = ReadableSpan | _WithExtras


class SpanExportService(QueueService[SpanItem]):
    """Batches, encodes and sends spans on the loop; settles each one in the ``spans`` ledger exactly once."""

    def __init__(self, config: Config, metrics: Metrics, transport: AsyncTransport, resolver: ProjectResolver) -> None:
        super().__init__(metrics.spans, config.max_queue_size, config.span_overflow)
        self._config = config
        self._metrics = metrics
        self._transport = transport
        self._resolver = resolver
        self._url = config.traces_url
        self._log = RateLimitedLog(logger)
        self._scopes = ScopeCache()

    async def _consume(self) -> None:
        h = self.handoff
        size = self._config.max_export_batch_size
        fan_out = self._config.max_concurrent_exports
        while True:
            batch = await h.take_batch(size, self._config.schedule_delay)
            if batch:
                # Up to max_concurrent_exports batches in flight: encoding one overlaps the network wait of another.
                await self._spawn(self._export(batch), fan_out)
            elif h.closed and not len(h):
                await self._join_spawned()
                return

    async def _export(self, batch: Sequence[SpanItem]) -> None:
        led = self.ledger
        project_id = await self._resolver.get(self._config.project_resolve_wait)
        if project_id is None:
            led.settle_dropped("retries_exhausted", len(batch))
            self._log.warning("resolve", "judgeval_async: dropping %d spans: project id unresolved", len(batch))
            self._notify()
            return
        spans, bodies = await self._encode_batch(batch)
        if spans:
            await self._send(spans, bodies, project_id)
        self._notify()

    async def _send(self, spans: list[ReadableSpan], bodies: list[bytes], project_id: str) -> None:
        body = encode_request(spans, bodies, self._scopes)
        t0 = time.perf_counter()
        result = await self._transport.send(
            "traces",
            self._url,
            body,
            content_type=_PROTOBUF,
            headers={"x-project-id": project_id},
            compress=self._config.gzip,
        )
        led = self.ledger
        if result.ok:
            self._metrics.export_duration.observe(time.perf_counter() - t0)
            self._metrics.last_export_unix = time.time()
            led.settle_delivered(len(spans))
        elif result.status is SendStatus.TOO_LARGE:
            if len(spans) == 1:
                await self._send_marker(spans[0], project_id)
                led.settle_dropped("payload_too_large", 1)
            else:
                # Spans are encoded one by one, so halving a batch re-groups bytes; nothing is encoded again.
                mid = len(spans) // 2
                halves = [(spans[:mid], bodies[:mid]), (spans[mid:], bodies[mid:])]
                await aiometer.run_on_each(lambda half: self._send(half[0], half[1], project_id), halves, max_at_once=2)
        else:
            led.settle_dropped(result.status.value, len(spans))
            self._log.warning(
                "send:" + result.status.value,
                "judgeval_async: dropped %d spans (%s, HTTP %s)",
                len(spans),
                result.status.value,
                result.http_status,
            )

    async def _send_marker(self, span: ReadableSpan, project_id: str) -> None:
        # Keep the trace's shape visible in the UI: same ids and timing, no payload. Best effort, not counted as
        # delivered: the span's content is lost and the ledger says so (payload_too_large).
        marker = ReadableSpan(
            name=span.name[:256],
            context=span.get_span_context(),
            parent=span.parent,
            resource=span.resource,
            attributes={"judgeval.dropped": "payload_too_large"},
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
        (encoded,) = encode_spans_each([marker])
        if isinstance(encoded, Exception):  # pragma: no cover - a marker has only safe fields
            return
        await self._transport.send(
            "traces",
            self._url,
            encode_request([marker], [encoded], self._scopes),
            content_type=_PROTOBUF,
            headers={"x-project-id": project_id},
            retry=False,
        )

    async def _encode_batch(self, batch: Sequence[SpanItem]) -> tuple[list[ReadableSpan], list[bytes]]:
        """Encode span by span, yielding to the loop between chunks; a span that cannot be encoded is dropped
        alone (and counted), never its batch."""
        spans: list[ReadableSpan] = []
        bodies: list[bytes] = []
        for i in range(0, len(batch), _ENCODE_CHUNK):
            chunk = []
            for item in batch[i : i + _ENCODE_CHUNK]:
                try:
                    chunk.append(_materialise(item))
                except Exception as exc:
                    self._drop_unencodable(exc)
            for span, encoded in zip(chunk, encode_spans_each(chunk), strict=True):
                if isinstance(encoded, Exception):
                    self._drop_unencodable(encoded)
                else:
                    spans.append(span)
                    bodies.append(encoded)
            if i + _ENCODE_CHUNK < len(batch):
                await asyncio.sleep(0)
        return spans, bodies

    def _drop_unencodable(self, exc: Exception) -> None:
        self.ledger.settle_dropped("serialization_error", 1)
        self._log.warning("encode", "judgeval_async: dropped a span that cannot be encoded: %r", exc)


def _materialise(item: SpanItem) -> ReadableSpan:
    if isinstance(item, _WithExtras):
        span = item.span
        attrs = dict(span.attributes or {})
        attrs.update(item.extras)
        return ReadableSpan(
            name=span.name,
            context=span.get_span_context(),
            parent=span.parent,
            resource=span.resource,
            attributes=attrs,
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
    return item


class JudgmentSpanProcessor(SpanProcessor):
    """An OpenTelemetry ``SpanProcessor`` that hands finished spans to judgeval_async's loop. Add it to any
    ``TracerProvider``; ``on_end`` is a bounded append and never blocks or raises."""

    def __init__(
        self,
        service: SpanExportService,
        metadata: SpanMetadataStore,
        *,
        flush: Callable[[float], bool],
        shutdown: Callable[[float], object],
        ensure_started: Callable[[], object],
    ) -> None:
        self._service = service
        self._metadata = metadata
        self._flush = flush
        self._shutdown = shutdown
        self._ensure_started = ensure_started

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # Nothing to do: metadata entries are created lazily by set_internal_attribute().
        return None

    def on_end(self, span: ReadableSpan) -> None:
        try:
            ctx = span.get_span_context()
            if ctx is None or not ctx.trace_flags.sampled:
                return
            extras = self._metadata.pop((ctx.trace_id, ctx.span_id))
            self._service.offer(span if extras is None else _WithExtras(span, extras))
            self._ensure_started()
        except Exception:  # pragma: no cover - never break the caller
            logger.debug("judgeval_async on_end failed", exc_info=True)

    def set_internal_attribute(self, span: Span, key: str, value: Any) -> bool:
        """Attach an internal attribute to a live span, exported with it (bounded: see ``_metadata``).

        False (and nothing stored) if the span has already ended: its entry would never be collected by on_end.
        """
        try:
            if not span.is_recording():
                return False
            ctx = span.get_span_context()
            return self._metadata.set((ctx.trace_id, ctx.span_id), key, value)
        except Exception:  # pragma: no cover - never break the caller
            logger.debug("judgeval_async set_internal_attribute failed", exc_info=True)
            return False

    def shutdown(self) -> None:
        self._shutdown(5.0)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._flush(timeout_millis / 1000.0)
