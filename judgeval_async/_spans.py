"""Spans: the OpenTelemetry processor (caller side: one offer) and the OTLP export service (loop side).

Caller side, in ``on_end``: pop the span's internal metadata and offer the span to the bounded handoff. That is all.
Loop side: encode spans to OTLP protobuf with the lean encoder of ``_otlp`` as they are taken (64 at a time; yielding
to the loop once per 0.5 ms of the loop thread's CPU, 2 ms behind a backlog, see ``_encode_into_pending``); send
batches (512 spans, 1 MB of encoded OTLP or 5 s, whichever first; at once on flush; after 0.2 s when no send is in
flight and spans arrive slower than 512 a second, so a quiet healthy service holds spans briefly), gzipped, with
retry. A 413 splits the batch in half and resends each half, and lowers the batch byte bound to half the refused size
for the rest of the process (the next batches are cut under it, not refused and split again); a single span still
too large is replaced by a small marker span and counted ``payload_too_large``. A span that fails to encode is
dropped alone (``serialization_error``), never its batch.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from itertools import accumulate, islice
from operator import itemgetter
from typing import Any, cast

from opentelemetry.context import Context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ._config import Config
from ._delivery._envelope import Envelope, new_envelope
from ._metadata import SpanMetadataStore
from ._metrics import Metrics
from ._otlp import ScopeCache, encode_grouped, encode_spans_each, frame_span
from ._pipeline import QueueService
from ._project import ProjectResolver
from ._routes import route_url, traces_to_judgment
from ._sender import UNWELL_CUT, Lane
from ._serialize import RateLimitedLog
from ._span import EngineSpan
from ._transport import AsyncTransport, SendResult, SendStatus

__all__ = ["POLL_INTERVAL", "JudgmentSpanProcessor", "SpanExportService"]

logger = logging.getLogger(__name__)
_TAKE = 64  # spans taken off the handoff per look: finished spans turn into bytes soon
_TAKE_WAIT = 0.1  # at most this long between looks at the handoff
# While spans keep arriving, the consumer looks at the handoff on its own timer, every POLL_INTERVAL, and an
# application thread's span end wakes it only at _WAKE_AT queued spans (a burst; at most a quarter of max_queue_size,
# so a burst is taken well before the queue fills). Why: a wake-up sent from a span's end comes while that thread is
# mid-request by definition; the loop thread then takes the GIL at the request's next system call and holds it for a
# whole take's encoding, so each such wake-up stalled one request. A timer fires at a random moment for the
# application (idle most of the time at a web service's load) and finds fewer spans, so each GIL stretch is shorter.
# Measured on the web service (benchmarks/web.py's shape at 500 req/s, A/Bs in one run each): p99 over untraced
# 1.59-1.79x -> 1.34-1.47x, for ~10-14 µs more loop-thread CPU per request (more, smaller looks); 5 and 20 ms were
# within noise of 10. A look that finds nothing ends the polling (back to _TAKE_WAIT). docs/performance.md, "Who
# wakes the loop". (The tag consumer is left as it was: it looks at least every UNWELL_CUT, 0.1 s, so at web rates
# its 500-call wake-up threshold is never reached.)
POLL_INTERVAL = 0.01
_WAKE_AT = 512
_ENCODE_CHUNK = 32  # spans encoded between two looks at the clock
# Seconds of the loop thread's CPU between two yields to the loop while encoding (see _encode_into_pending). Short
# while the encoder keeps up: an application thread back from a system call waits for the GIL until our next yield
# (benchmarks/gil.py). Longer while a take's worth of spans waits in the handoff: each yield may hand the GIL to a
# busy producer for a whole switch interval (5 ms), and short slices would then starve the encoder.
_ENCODE_BUDGET = 0.0005
_ENCODE_BUDGET_BEHIND = 0.002
# With no send in flight (a healthy backend) and spans arriving slower than _IDLE_RATE a second (or a batch a second,
# if smaller), a partial batch goes out once its oldest span waited this long (or schedule_delay, if shorter), not a
# whole schedule_delay: a quiet service holds a span ~0.3 s, not 5 s. Faster arrivals go out in full batches (or after
# schedule_delay), as under load, where a send is nearly always in flight.
_IDLE_DELAY = 0.2
# The idle rule's rate is not the batch size itself: with max_export_batch_size=2048, every rate below 2 048 spans/s
# (a web service's 500 requests/s of three spans) would go out every ~0.25 s, more requests than 512-span batches
# made, where a larger batch was asked for to make fewer. 512 (the default batch) keeps the rule where it was.
_IDLE_RATE = 512
# An ended span record is compacted (EngineSpan.compact) when at least this many wait ahead of it: at the queue's
# bound (8 192) that is 7/8 of the records, ~240 B each less. Compacting costs the caller ~1 µs on a loaded box, so
# a record the loop will take soon (a shallower queue: back-to-back calls keep it under ~1 000 here) is left as is.
_COMPACT_AT = 1024
_PROTOBUF = "application/x-protobuf"
_body = itemgetter(1)  # an encoded span's bytes, from its (group id, bytes, time taken) entry
_GZIP_MIN_BYTES = 1024  # below this, compression costs more CPU than it saves bytes


class _WithExtras:
    """A finished span plus internal attributes to merge at encode time (only when it has any)."""

    __slots__ = ("extras", "span")

    def __init__(self, span: ReadableSpan, extras: dict[str, Any]) -> None:
        self.span = span
        self.extras = extras


SpanItem = ReadableSpan | _WithExtras | EngineSpan  # an engine span is encoded as it is (_otlp reads its slots)


class SpanExportService(QueueService[SpanItem]):
    """Encodes finished spans as soon as they arrive, batches the bytes, and sends them; settles each span in the
    ``spans`` ledger exactly once.

    Spans leave the handoff in small slices (``_TAKE``) and are encoded right away, so what waits for the network
    is compact bytes, not live span objects: a backlog behind a slow backend then costs the application's garbage
    collector nothing (bytes are not GC-tracked), where thousands of queued spans would be walked by every full
    collection. The whole backlog (the handoff plus the encoded bytes) is bounded by one ``max_queue_size``, and its
    overflow follows ``span_overflow``: ``queue_utilization`` never exceeds 1.0.
    """

    def __init__(self, config: Config, metrics: Metrics, transport: AsyncTransport, resolver: ProjectResolver) -> None:
        super().__init__(metrics.spans, config.max_queue_size, config.span_overflow)
        self._config = config
        self._metrics = metrics
        self._transport = transport
        self._resolver = resolver
        self._log = RateLimitedLog(logger)
        exporter = SpanExporter(config, transport, resolver, on_split=self._learn_from_413)
        self.lane = Lane("spans", exporter, metrics.spans, metrics, config)
        self._scopes = ScopeCache()
        # Encoded spans waiting for a send: (group id, Span message bytes, monotonic time taken). Tuples of atoms,
        # so the collector untracks them.
        self._pending: deque[tuple[int, bytes, float]] = deque()
        # sum(len(body) for _, body, _ in _pending), kept in step wherever _pending changes (under the ledger lock),
        # so "is a batch's worth of bytes waiting" is O(1).
        self._pending_bytes = 0
        # The byte bound a batch is cut at: max_export_batch_bytes, lowered (never raised) by a 413 (_learn_from_413).
        self.batch_bytes_limit = config.max_export_batch_bytes
        metrics.span_batch_bytes_limit = self.batch_bytes_limit
        self._groups = _Groups(self._scopes)
        self._flush_wanted = False
        self._slice_started = 0.0  # the loop thread's CPU time at the consumer's last yield (_encode_into_pending)
        ledger = metrics.spans
        handoff_view = ledger.oldest

        def view() -> tuple[int, float | None]:
            # The handoff's depth and oldest item, extended by the encoded backlog's oldest (lock held by caller).
            depth, oldest = handoff_view() if handoff_view is not None else (0, None)
            pending = self._pending
            if pending:
                first = pending[0][2]
                oldest = first if oldest is None else min(oldest, first)
            return depth, oldest

        ledger.oldest = view
        self.handoff.evict_parked = self._evict_oldest_pending

    def _evict_oldest_pending(self) -> bool:
        # Called by offer() under the ledger lock (drop_oldest, backlog full, nothing older in the handoff).
        if not self._pending:
            return False
        self._pending_bytes -= len(self._pending.popleft()[1])
        self.ledger.parked -= 1
        return True

    # ------------------------------------------------------------------ the consumer
    async def _consume(self) -> None:
        h = self.handoff
        cfg = self._config
        size, delay = cfg.max_export_batch_size, cfg.schedule_delay
        self._slice_started = time.thread_time()
        arriving = False  # the last look found spans: look again after POLL_INTERVAL
        wake_at = max(1, min(_WAKE_AT, h.capacity // 4))
        while True:
            # 1. Send what is due (a full batch, the oldest waited schedule_delay, a flush, shutdown) while slots last.
            while self._pending and self._send_due(size, delay):
                batch = self._cut(size)
                if batch:
                    self._submit(batch)
                    # A batch is ~0.5 ms of joining and the lane's bookkeeping around its gzip: yield before more
                    # work, so that stretch and the next encoding slice do not hold the GIL as one.
                    await self._yield_now()
            if h.closed and not len(h) and not self._pending:
                return
            if not self._pending and not len(h):
                self._flush_wanted = False
            # 2. Wait for spans. A finished send wakes us too (_spawned_done) when a due batch waits for a slot.
            if not self._pending:
                wait = _TAKE_WAIT
            elif self._send_due(size, delay):
                wait = delay
            else:
                oldest, now = self._pending[0][2], time.monotonic()
                due = oldest + delay
                if self._lane_idle() and now - oldest < _IDLE_DELAY:
                    due = min(due, oldest + _IDLE_DELAY)  # re-checked then by _send_due's idle rule
                if self._lane_unwell():
                    due = min(due, oldest + UNWELL_CUT)
                wait = min(_TAKE_WAIT, max(0.0, due - now))
            if arriving:
                wait = min(wait, POLL_INTERVAL)
            # Take up to _TAKE spans: a record leaves the handoff only to be encoded at once, so the records alive
            # never exceed the queue's bound by more than _TAKE (a consumer behind takes again at once: it yields per
            # CPU budget, not per take).
            items = await h.take_batch(_TAKE, wait, wake_at=wake_at)
            arriving = bool(items)
            if items:
                await self._encode_into_pending(items)

    def _send_due(self, size: int, delay: float) -> bool:
        pending = self._pending
        waited = time.monotonic() - pending[0][2]
        limit = self.batch_bytes_limit
        return (
            len(pending) >= size
            or self._pending_bytes >= limit  # a full batch by bytes (a lone larger span included)
            or waited >= delay
            # Idle: nothing held or in flight and arrivals slower than _IDLE_RATE (or a batch) a second, and than a
            # batch's bytes a second: no reason to hold these spans.
            or (
                self._lane_idle()
                and waited >= _IDLE_DELAY
                and len(pending) < min(size, _IDLE_RATE) * waited
                and self._pending_bytes < limit * waited
            )
            # The endpoint is unwell: the lane spills each payload to disk, so small batches bound a kill -9's loss.
            or (waited >= UNWELL_CUT and self._lane_unwell())
            or (self._flush_wanted and not len(self.handoff))  # partial batches only once the queue is empty
            or (self.handoff.closed and not len(self.handoff))
        )

    def _lane_idle(self) -> bool:
        return self.lane is None or self.lane.idle()

    def _lane_unwell(self) -> bool:
        return self.lane is not None and self.lane.unwell

    def _on_flush_requested(self) -> None:
        self._flush_wanted = True

    async def _encode_into_pending(self, items: list[SpanItem]) -> None:
        """Encode span by span; park the bytes; drop (counted) what cannot be encoded, and what overflows the backlog.
        ``items`` is emptied as it goes, so each record is released as soon as its bytes exist.

        Yields to the loop once per ``_ENCODE_BUDGET`` of the loop thread's CPU time, across calls; once per
        ``_ENCODE_BUDGET_BEHIND`` while a take's worth of spans waits in the handoff. Each yield polls the selector,
        which releases the GIL: an application thread waiting for it gets it there (the short budget bounds that
        wait), and a busy one may keep it for a whole switch interval (5 ms), so under a producer running flat out
        yielding per few spans starved this loop of the GIL (the longer budget)."""
        items.reverse()  # popped from the end: oldest first
        handoff = self.handoff
        while items:
            encoded = self._encode_chunk([items.pop() for _ in range(min(_ENCODE_CHUNK, len(items)))])
            if not self._park(encoded):
                return  # shutdown's deadline passed and counted these already (shutdown_deadline)
            budget = _ENCODE_BUDGET_BEHIND if len(handoff) >= _TAKE else _ENCODE_BUDGET
            if time.thread_time() - self._slice_started >= budget:
                await self._yield_now()
        self._notify()

    async def _yield_now(self) -> None:
        """Let the loop (and, through its selector poll, the GIL) go once; the next slice's budget starts here."""
        await asyncio.sleep(0)
        self._slice_started = time.thread_time()

    def _encode_chunk(self, taken: list[SpanItem]) -> list[tuple[int, bytes, float]]:
        """Encoded and framed (group id, bytes, time taken) per span; what fails is dropped alone (counted). The
        records are released on return."""
        chunk: list[ReadableSpan | EngineSpan] = []
        for item in taken:
            if type(item) is EngineSpan:  # the engine's record is encoded as it is
                chunk.append(item)
                continue
            try:
                chunk.append(_materialise(item))
            except Exception as exc:
                self._drop_unencodable(exc)
        now = time.monotonic()
        encoded = []
        id_of = self._groups.id_of
        for span, body in zip(chunk, encode_spans_each(chunk, self._metrics.values_degraded.inc), strict=True):
            if type(body) is bytes:
                encoded.append((id_of(span), frame_span(body), now))
            else:
                self._drop_unencodable(cast(Exception, body))
        return encoded

    def _park(self, encoded: list[tuple[int, bytes, float]]) -> bool:
        """Move encoded spans from in flight to parked, enforcing the backlog bound; False once abandoned."""
        led = self.ledger
        with led.updating():
            if led.abandoned:
                return False
            led.in_flight -= len(encoded)
            led.parked += len(encoded)
            self._pending.extend(encoded)
            self._pending_bytes += sum([len(body) for _, body, _ in encoded])
            # One bound for the whole backlog (the handoff and these bytes), as offer() enforces it: the queue's
            # capacity and overflow policy. drop_newest keeps what waited longest.
            overflow = min(len(self._pending), len(self.handoff) + len(self._pending) - self.handoff.capacity)
            if overflow > 0:
                drop = self._pending.popleft if self._drop_oldest else self._pending.pop
                for _ in range(overflow):
                    self._pending_bytes -= len(drop()[1])
                led.parked -= overflow
                led.dropped["queue_full"] += overflow
        return True

    def _cut(self, size: int) -> list[tuple[int, bytes, float]]:
        """The oldest spans, up to ``size`` of them and ``batch_bytes_limit`` of request (their bytes plus the
        (resource, scope) groups' framing); at least one span, so a lone span over the limit goes alone.

        Under the ledger lock (offer() may evict from the front), so sums and the search run in C (no Python step
        per span beyond the pop itself: one held the lock ~1 ms per 2 048 spans)."""
        led = self.ledger
        with led.updating():
            pending = self._pending
            if led.abandoned:
                pending.clear()
                self._pending_bytes = 0
                return []
            n, cut_bytes = self._fitting(min(size, len(pending)), self.batch_bytes_limit)
            if n == len(pending):
                batch = list(pending)  # all of it (the usual partial batch)
                pending.clear()
            else:
                batch = [pending.popleft() for _ in range(n)]
            self._pending_bytes -= cut_bytes
            led.parked -= n
            led.in_flight += n
        return batch

    def _fitting(self, most: int, limit: int) -> tuple[int, int]:
        """How many of the oldest ``most`` pending spans make a request within ``limit`` bytes (at least one), and
        their bytes. Caller holds the ledger lock."""
        pending = self._pending
        groups = self._groups
        if groups.overhead_total <= limit // 16:
            # A few groups (the usual case): charge every group's framing, whichever appear; exact enough.
            room = limit - groups.overhead_total
            # The first `most` spans' bytes: the total less the few beyond them (counted from the right).
            first = self._pending_bytes - sum(map(len, map(_body, islice(reversed(pending), len(pending) - most))))
            if first <= room:
                return most, first  # a full batch by count, or everything pending
            ends = list(accumulate(map(len, map(_body, islice(pending, most)))))
            n = max(1, bisect_right(ends, room))
            return n, ends[n - 1]
        n = total = framing = 0  # many groups: charge each group's framing once it appears (a step per span, rare)
        seen: set[int] = set()
        for gid, body, _ in islice(pending, most):
            extra = 0 if gid in seen else groups.overhead[gid]
            if n and total + framing + extra + len(body) > limit:
                break
            seen.add(gid)
            total += len(body)
            framing += extra
            n += 1
        return n, total

    def _learn_from_413(self, refused_bytes: int) -> None:
        """A batch of ``refused_bytes`` (uncompressed) was refused with 413 and is being halved: cut the next ones at
        half that size, so the receiver's limit costs one split, not one per batch. It never grows back here."""
        learned = max(1, refused_bytes // 2)  # _cut still takes one span when that alone is larger
        if learned >= self.batch_bytes_limit:
            return
        self.batch_bytes_limit = learned
        self._metrics.span_batch_bytes_limit = learned
        self._log.warning(
            "batch_bytes",
            "judgeval_async: the span endpoint refused a %d-byte batch (HTTP 413); batches are now cut at %d bytes "
            "(was max_export_batch_bytes=%d); lower max_export_batch_bytes to avoid the split",
            refused_bytes,
            learned,
            self._config.max_export_batch_bytes,
        )

    # ------------------------------------------------------------------ handing batches to the lane
    def _submit(self, batch: list[tuple[int, bytes, float]]) -> None:
        """Encode one batch to an envelope (gzip once, here) and hand it to the lane, which settles its spans."""
        body = encode_grouped(self._groups.group(batch), self._scopes)
        extra: dict[str, str] = {}
        if self._config.gzip and len(body) >= _GZIP_MIN_BYTES:
            # Level 1: within a few percent of level 6 on OTLP batches, at ~40 % of the CPU (docs/performance.md).
            # mtime=0: one zlib call writes header, stream and trailer (otherwise a separate CRC pass and two copies).
            body = gzip.compress(body, compresslevel=1, mtime=0)
            extra["Content-Encoding"] = "gzip"
        assert self.lane is not None
        self.lane.submit(new_envelope(body, signal="spans", items=len(batch), route="traces", extra=extra))

    def _drop_unencodable(self, exc: Exception) -> None:
        self.ledger.settle_dropped("serialization_error", 1)
        self._log.warning("encode", "judgeval_async: dropped a span that cannot be encoded: %r", exc)

    # ------------------------------------------------------------------ shutdown and fork
    def abandon(self) -> None:
        with self.ledger.updating():
            self._pending.clear()  # counted below with everything else still held (parked)
            self._pending_bytes = 0
        super().abandon()

    def _forget_after_fork(self) -> None:
        self._pending = deque()  # counted as fork_discard by the base class (parked)
        self._pending_bytes = 0
        self._flush_wanted = False

    @property
    def _drop_oldest(self) -> bool:
        return self._config.span_overflow == "drop_oldest"


class SpanExporter:
    """The spans' exporter seam: one OTLP/HTTP protobuf request per envelope; a 413 halves the batch (and tells
    ``on_split`` the refused batch's uncompressed size)."""

    endpoint = "traces"

    def __init__(
        self,
        config: Config,
        transport: AsyncTransport,
        resolver: ProjectResolver,
        *,
        on_split: Callable[[int], None] | None = None,
    ) -> None:
        self._config = config
        self._on_split = on_split
        self._transport = transport
        self._resolver = resolver
        # Judgment the target: the resolved project and Judgment's credentials go with every request. Otherwise a
        # third party: no resolve (nothing waits on api_url), no Judgment header, only the backend's otlp_headers.
        self._judgment = traces_to_judgment(config)
        reserved = _RESERVED | (_JUDGMENT_HEADERS if self._judgment else frozenset())
        self._otlp_headers = {k: v for k, v in config.otlp_headers.items() if k.lower() not in reserved}

    async def send(self, envelope: Envelope) -> SendResult:
        headers = dict(self._otlp_headers)
        if self._judgment:
            project_id = await self._resolver.get(self._config.project_resolve_wait)
            if project_id is None:
                # The backend unreachable: held like any failure; a final answer (auth, 4xx): dropped with it.
                reason = self._resolver.failure_reason
                return SendResult(SendStatus(reason) if reason in _STATUSES else SendStatus.EXHAUSTED)
            headers["x-project-id"] = project_id
        headers.update(envelope.extra)
        return await self._transport.send(
            "traces",
            route_url(self._config, envelope.route),
            envelope.payload,
            content_type=_PROTOBUF,
            headers=headers,
            retry=False,
            idempotency_key=envelope.idempotency_key,
            judgment=self._judgment,
        )

    async def unpack(self, envelope: Envelope) -> list[Envelope] | None:
        return None  # a span batch is one request already

    async def split(self, envelope: Envelope) -> list[Envelope] | None:
        """Halve the batch (decoded from the payload, so a replayed payload splits too); one span: a marker."""
        body = envelope.payload
        if envelope.extra.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        spans = [
            (ri, si, span)
            for ri, rs in enumerate(request.resource_spans)
            for si, ss in enumerate(rs.scope_spans)
            for span in ss.spans
        ]
        if len(spans) <= 1:
            if spans:
                await self._send_marker(request, spans[0])
            return None
        if self._on_split is not None:
            self._on_split(len(body))
        mid = len(spans) // 2
        return [self._envelope(request, part, envelope) for part in (spans[:mid], spans[mid:])]

    def _envelope(
        self, request: ExportTraceServiceRequest, part: list[tuple[int, int, PbSpan]], env: Envelope
    ) -> Envelope:
        out = ExportTraceServiceRequest()
        by_group: dict[tuple[int, int], list[PbSpan]] = {}
        for ri, si, span in part:
            by_group.setdefault((ri, si), []).append(span)
        for (ri, si), spans in by_group.items():
            rs = request.resource_spans[ri]
            ss = rs.scope_spans[si]
            new_rs = out.resource_spans.add(resource=rs.resource, schema_url=rs.schema_url)
            new_rs.scope_spans.add(scope=ss.scope, schema_url=ss.schema_url, spans=spans)
        body = out.SerializeToString()
        extra: dict[str, str] = {}
        if env.extra.get("Content-Encoding") == "gzip":
            body = gzip.compress(body, compresslevel=1, mtime=0)
            extra["Content-Encoding"] = "gzip"
        return new_envelope(body, signal="spans", items=len(part), route=env.route, extra=extra, created=env.created)

    async def _send_marker(self, request: ExportTraceServiceRequest, item: tuple[int, int, PbSpan]) -> None:
        # Keep the trace's shape visible in the UI: same ids, name and timing, no payload. Best effort, not counted
        # as delivered: the span's content is lost and the ledger says so (payload_too_large).
        ri, si, span = item
        try:
            marker = PbSpan.FromString(_marker(span.SerializeToString()))
        except Exception:  # pragma: no cover - our own bytes always decode
            return
        headers = dict(self._otlp_headers)
        if self._judgment:
            project_id = await self._resolver.get(self._config.project_resolve_wait)
            if project_id is None:
                return
            headers["x-project-id"] = project_id
        env = self._envelope(request, [(ri, si, marker)], new_envelope(b"", signal="spans", items=1, route="traces"))
        await self._transport.send(
            "traces",
            route_url(self._config, "traces"),
            env.payload,
            content_type=_PROTOBUF,
            headers=headers,
            retry=False,
            judgment=self._judgment,
        )


_STATUSES = frozenset(s.value for s in SendStatus)
# otlp_headers never replace what the request itself needs; to Judgment, never its credentials or project either.
_RESERVED = frozenset({"content-type", "content-encoding", "content-length", "idempotency-key", "host"})
_JUDGMENT_HEADERS = frozenset({"authorization", "x-organization-id", "x-project-id"})


class _Groups:
    """Small ids for (resource, scope) pairs, so a queued span is (int, bytes) rather than a tuple of objects.

    Looked up by identity first (free), by equality on a miss (hashing a Resource serializes its attributes, so it
    is done once per new object); the equality table grows only with distinct pairs, which a process has few of.
    """

    def __init__(self, scopes: ScopeCache) -> None:
        self._scopes = scopes
        self._by_identity: dict[tuple[int, int], tuple[Any, Any, int]] = {}
        self._by_value: dict[tuple[Any, Any], int] = {}
        self._pairs: list[tuple[Any, Any]] = []
        # Per group id: the bytes its ResourceSpans and ScopeSpans wrapping adds to a request (_cut's byte bound).
        self.overhead: list[int] = []
        self.overhead_total = 0
        # The last engine span's owner and its group: a tracer's spans share one owner (its resource and scope), so
        # a run of them costs one identity check each, not two property reads and a lookup.
        self._last_owner: Any = None
        self._last_gid = 0

    def id_of(self, span: ReadableSpan | EngineSpan) -> int:
        if type(span) is EngineSpan:
            owner = span._owner
            if owner is self._last_owner:
                return self._last_gid
            gid = self._lookup(owner.resource, owner.instrumentation_scope)
            self._last_owner, self._last_gid = owner, gid
            return gid
        return self._lookup(span.resource, span.instrumentation_scope)

    def _lookup(self, resource: Any, scope: Any) -> int:
        key = (id(resource), id(scope))
        hit = self._by_identity.get(key)
        if hit is not None and hit[0] is resource and hit[1] is scope:
            return hit[2]
        gid = self._by_value.get((resource, scope))
        if gid is None:
            gid = len(self._pairs)
            self._pairs.append((resource, scope))
            self._by_value[(resource, scope)] = gid
            self.overhead.append(self._overhead(resource, scope))
            self.overhead_total += self.overhead[-1]
        if len(self._by_identity) >= 1024:  # a tracer per request would create a scope object per request
            self._by_identity.clear()
        self._by_identity[key] = (resource, scope, gid)
        return gid

    def _overhead(self, resource: Any, scope: Any) -> int:
        # Both messages' encoded heads, plus a tag and a length of up to 4 bytes (< 256 MB) in front of each.
        try:
            res_head, res_url = self._scopes.resource(resource)
            head, url = self._scopes.scope(scope)
        except Exception:  # pragma: no cover - attributes are replaced, not refused; a guess beats a stuck consumer
            return 1024
        return len(res_head) + len(res_url) + len(head) + len(url) + 10

    def group(self, batch: Sequence[tuple[int, bytes, float]]) -> list[tuple[Any, Any, list[bytes]]]:
        if len(self._pairs) == 1:  # one tracer, one scope: every span is in group 0
            return [(*self._pairs[0], [body for _, body, _ in batch])]
        by_gid: dict[int, list[bytes]] = {}
        for gid, body, _ in batch:
            by_gid.setdefault(gid, []).append(body)
        return [(*self._pairs[gid], bodies) for gid, bodies in by_gid.items()]


def _marker(body: bytes) -> bytes:
    """The same span with its payload replaced by ``judgeval.dropped = payload_too_large``."""
    span = PbSpan.FromString(body)
    marker = PbSpan(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        name=span.name[:256],
        kind=span.kind,
        start_time_unix_nano=span.start_time_unix_nano,
        end_time_unix_nano=span.end_time_unix_nano,
        status=span.status,
        flags=span.flags,
        attributes=[KeyValue(key="judgeval.dropped", value=AnyValue(string_value="payload_too_large"))],
    )
    return marker.SerializeToString()


def _materialise(item: SpanItem) -> ReadableSpan | EngineSpan:
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
        shutdown: Callable[[], object],
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

    def on_engine_end(self, span: EngineSpan) -> None:
        """The span engine's end-of-span seam (its provider's ``on_end``): one offer of the record itself."""
        try:
            service = self._service
            if len(service.handoff) >= _COMPACT_AT:
                span.compact()  # it will wait behind hundreds of others: keep it small (~160 B less for observe's)
            service.offer(span)
            self._ensure_started()
        except Exception:  # pragma: no cover - never break the caller
            logger.debug("judgeval_async on_engine_end failed", exc_info=True)

    def set_internal_attribute(self, span: Span | EngineSpan, key: str, value: Any) -> bool:
        """Attach an internal attribute to a live span, exported with it (bounded: see ``_metadata``).

        False (and nothing stored) if the span has already ended: its entry would never be collected by on_end.
        An engine span keeps it in its own attributes (no store needed: it ends in our hands).
        """
        try:
            if type(span) is EngineSpan:
                return span.set_internal(key, value)
            if not span.is_recording():
                return False
            ctx = span.get_span_context()
            return self._metadata.set((ctx.trace_id, ctx.span_id), key, value)
        except Exception:  # pragma: no cover - never break the caller
            logger.debug("judgeval_async set_internal_attribute failed", exc_info=True)
            return False

    def shutdown(self) -> None:
        self._shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._flush(timeout_millis / 1000.0)
