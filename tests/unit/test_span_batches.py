"""Span batches are bounded by bytes as well as by count; the bytes waiting are tracked in O(1) and stay exact through
every change to the encoded backlog; a 413's split lowers the byte bound for the batches after it."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource

from judgeval_async import Config
from judgeval_async._delivery._envelope import Envelope
from judgeval_async._metrics import Metrics
from judgeval_async._project import ProjectResolver
from judgeval_async._provider import EngineTracerProvider
from judgeval_async._span import EngineSpan
from judgeval_async._spans import SpanExporter, SpanExportService
from judgeval_async._transport import AsyncTransport

pytestmark = pytest.mark.timeout(60)

RESOURCE = Resource.create({"service.name": "svc"})
_EXPORTERS: dict[int, SpanExporter] = {}


def _service(**knobs: Any) -> SpanExportService:
    options: dict[str, Any] = {
        "api_key": "k",
        "organization_id": "o",
        "api_url": "http://127.0.0.1:9",
        "retry_testing": True,
        "spool": False,
        "gzip": False,  # payloads are the uncompressed request the byte bound is about
        "schedule_delay": 60.0,
    }
    options.update(knobs)
    config = Config(**options)
    metrics = Metrics()
    transport = AsyncTransport(config, metrics)
    service = SpanExportService(config, metrics, transport, ProjectResolver(config, transport))
    assert service.lane is not None
    _EXPORTERS[id(service)] = service.lane._exporter  # type: ignore[assignment]
    return service


def _spans(sizes: list[int], scope: str = "lib") -> list[EngineSpan]:
    """One ended engine span per size, carrying an input of that many bytes."""
    ended: list[EngineSpan] = []
    tracer = EngineTracerProvider(resource=RESOURCE, on_end=ended.append).get_tracer(scope)
    for i, size in enumerate(sizes):
        with tracer.start_as_current_span(f"op{i}") as span:
            span.set_attribute("judgment.input", "x" * size)
    return ended


def _park(service: SpanExportService, spans: list[Any]) -> None:
    """Offer, take and encode ``spans`` into the service's encoded backlog (what the consumer does)."""
    for span in spans:
        assert service.offer(span)
    asyncio.run(service._encode_into_pending(service.handoff.take_nowait(len(spans))))


def _capture(service: SpanExportService) -> list[Envelope]:
    """Replace the service's lane with one that keeps each submitted envelope (in the returned list)."""
    envelopes: list[Envelope] = []

    class Lane:
        def submit(self, envelope: Envelope) -> None:
            envelopes.append(envelope)

        def idle(self) -> bool:
            return False

        unwell = False

    service.lane = Lane()  # type: ignore[assignment]
    return envelopes


def _send_all(service: SpanExportService) -> None:
    while service._pending:
        service._submit(service._cut(service._config.max_export_batch_size))


def _names(envelope: Envelope) -> list[str]:
    request = ExportTraceServiceRequest.FromString(envelope.payload)
    return [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _exact(service: SpanExportService) -> bool:
    return service._pending_bytes == sum(len(b) for _, b, _ in service._pending)


def test_batches_never_exceed_the_byte_limit_except_a_lone_oversized_span() -> None:
    """Spans of random sizes (some alone over the limit) are cut into requests of at most max_export_batch_bytes,
    the request's own framing included; only a single span larger than the limit makes a larger request."""
    limit = 4096
    service = _service(max_export_batch_bytes=limit)
    sent = _capture(service)
    rng = random.Random(7)
    sizes = [rng.choice([10, 200, 900, 1800, 5000]) for _ in range(300)]
    _park(service, _spans(sizes))
    _send_all(service)
    names = [name for env in sent for name in _names(env)]
    assert names == [f"op{i}" for i in range(len(sizes))]  # all of them, in order
    lone = 0
    for env in sent:
        if len(env.payload) > limit:
            assert env.items == 1
            lone += 1
    assert lone == sizes.count(5000)
    # Packed, not one span per request: the spans of each cut fill most of the bound.
    assert len(sent) < sum(sizes) / (limit / 2)
    assert service._pending_bytes == 0


@pytest.mark.parametrize("limit", [2048, 65_536])  # each group's framing counted exactly / all groups' charged
def test_the_byte_bound_counts_each_resource_and_scope_group(limit: int) -> None:
    """Spans of several scopes in one batch: the request, with each group's framing, still fits the limit."""
    service = _service(max_export_batch_bytes=limit)
    sent = _capture(service)
    mixed = [span for trio in zip(*(_spans([300] * 300, f"scope-{n}") for n in range(3)), strict=True) for span in trio]
    _park(service, mixed)
    _send_all(service)
    assert sum(env.items for env in sent) == 900
    assert len(sent) > 1
    assert all(len(env.payload) <= limit for env in sent)
    assert max(len(env.payload) for env in sent) > limit // 2  # packed (framing is over-, never under-counted)


def test_the_count_limit_still_applies() -> None:
    """Small spans under a large byte bound are still cut at max_export_batch_size."""
    service = _service(max_export_batch_size=10)
    sent = _capture(service)
    _park(service, _spans([20] * 35))
    _send_all(service)
    assert [env.items for env in sent] == [10, 10, 10, 5]


def test_a_full_batch_by_bytes_is_due_at_once() -> None:
    """A few spans holding a batch's worth of bytes are due now, not after schedule_delay (60 s here)."""
    service = _service(max_export_batch_bytes=8192)
    _capture(service)
    _park(service, _spans([3000, 3000]))
    assert not service._send_due(service._config.max_export_batch_size, service._config.schedule_delay)
    _park(service, _spans([3000]))
    assert service._send_due(service._config.max_export_batch_size, service._config.schedule_delay)


def test_the_default_batch_is_512_spans_or_a_megabyte() -> None:
    """By default a batch is cut at 512 spans, or at 1 000 000 bytes when the spans are large."""
    small = _service()
    sent = _capture(small)
    _park(small, _spans([10] * 1100))
    _send_all(small)
    assert [env.items for env in sent] == [512, 512, 76]

    large = _service()
    sent = _capture(large)
    _park(large, _spans([10_000] * 150))
    _send_all(large)
    assert sent[0].items == 99  # 99 spans of ~10 KB: under 1 MB; a hundredth would pass it
    assert all(len(env.payload) <= 1_000_000 for env in sent)


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
def test_the_running_byte_total_stays_exact_through_every_change(policy: str) -> None:
    """A random sequence of parks (with overflow), cuts, evictions by offer() and an abandon: after each step the
    running total equals the bytes held, and the ledger balances."""
    rng = random.Random(policy)
    service = _service(max_queue_size=64, max_export_batch_size=16, max_export_batch_bytes=3000, span_overflow=policy)
    _capture(service)
    led = service.ledger
    for _ in range(300):
        step = rng.choice(["park", "park", "cut", "offer", "take"])
        if step == "park":  # may overflow the backlog bound: _park drops by policy
            spans = _spans([rng.randrange(1, 800) for _ in range(rng.randrange(1, 40))])
            for span in spans:
                service.offer(span)
            taken = service.handoff.take_nowait(len(spans))
            asyncio.run(service._encode_into_pending(taken))
        elif step == "cut":
            batch = service._cut(service._config.max_export_batch_size)
            if batch:
                service._submit(batch)
                with led.updating():
                    led.in_flight -= len(batch)
                    led.delivered += len(batch)
        elif step == "offer":  # a full backlog under drop_oldest evicts encoded spans (_evict_oldest_pending)
            for span in _spans([rng.randrange(1, 400) for _ in range(rng.randrange(1, 30))]):
                service.offer(span)
        else:
            asyncio.run(service._encode_into_pending(service.handoff.take_nowait(rng.randrange(0, 20))))
        assert _exact(service), step
        assert led.snapshot().balanced, step
    assert led.dropped["queue_full"] > 0  # the overflow paths were exercised
    service.abandon()
    assert service._pending_bytes == 0 and not service._pending
    assert led.snapshot().balanced


def test_fork_forgets_the_byte_total() -> None:
    """After a fork the child starts with no encoded spans and a zero byte total."""
    service = _service()
    _park(service, _spans([500] * 10))
    assert service._pending_bytes > 0
    service.after_fork_in_child()
    assert service._pending_bytes == 0 and not service._pending


def _refused(service: SpanExportService, sizes: list[int]) -> Envelope:
    sent = _capture(service)
    _park(service, _spans(sizes))
    service._submit(service._cut(len(sizes)))
    return sent[-1]


def test_a_413_split_lowers_the_byte_bound_to_half_the_refused_size(caplog: pytest.LogCaptureFixture) -> None:
    """When a refused batch is halved, later batches are cut at half its uncompressed size (never raised again),
    and one warning says what was refused, the new bound, and which knob to lower."""
    service = _service()
    envelope = _refused(service, [2000] * 100)
    exporter = _exporter(service)
    with caplog.at_level(logging.WARNING, logger="judgeval_async._spans"):
        halves = asyncio.run(exporter.split(envelope))
    assert halves is not None and [h.items for h in halves] == [50, 50]
    learned = len(envelope.payload) // 2
    assert service.batch_bytes_limit == learned
    assert service._metrics.span_batch_bytes_limit == learned
    warnings = [r.getMessage() for r in caplog.records if r.name == "judgeval_async._spans"]
    assert len(warnings) == 1
    assert str(len(envelope.payload)) in warnings[0] and str(learned) in warnings[0]
    assert "lower max_export_batch_bytes" in warnings[0]

    # A larger refused batch (an old one, cut before) does not raise it; a smaller one lowers it further.
    bigger = _refused(_service(), [2000] * 200)
    asyncio.run(exporter.split(bigger))
    assert service.batch_bytes_limit == learned
    smaller = _refused(_service(), [2000] * 20)
    asyncio.run(exporter.split(smaller))
    assert service.batch_bytes_limit == len(smaller.payload) // 2

    # The next batches are cut under it.
    sent = _capture(service)
    _park(service, _spans([2000] * 100))
    _send_all(service)
    assert all(len(env.payload) <= service.batch_bytes_limit for env in sent)
    assert sum(env.items for env in sent) == 100


def test_a_gzipped_refused_batch_is_measured_uncompressed() -> None:
    """The learned bound is half the refused batch's uncompressed size, whatever gzip made of it on the wire."""
    service = _service(gzip=True)
    envelope = _refused(service, [2000] * 50)
    assert envelope.extra.get("Content-Encoding") == "gzip"
    plain = _refused(_service(gzip=False), [2000] * 50)
    asyncio.run(_exporter(service).split(envelope))
    assert service.batch_bytes_limit == len(plain.payload) // 2


def _exporter(service: SpanExportService) -> SpanExporter:
    """The SpanExporter wired to ``service`` (its lane's exporter, kept before ``_capture`` replaced the lane)."""
    return _EXPORTERS[id(service)]


def _aged(service: SpanExportService, seconds: float) -> None:
    """Make every encoded span look taken ``seconds`` ago."""
    then = time.monotonic() - seconds
    service._pending = deque((gid, body, then) for gid, body, _ in service._pending)


def test_the_idle_rule_keeps_its_512_spans_a_second_with_2048_span_batches() -> None:
    """With no send in flight, a partial batch goes out after 0.2 s only while spans arrive slower than 512 a second:
    1 000 spans in 0.6 s (~1 700/s) wait for a full 2 048-span batch instead of going out every ~0.6 s (more requests
    than 512-span batches made; this stays true until they have waited ~2 s, room for a slow machine); 50 in 0.25 s
    still go out."""
    service = _service(max_export_batch_size=2048)
    sent = _capture(service)
    service.lane.idle = lambda: True  # type: ignore[method-assign,union-attr]
    cfg = service._config
    _park(service, _spans([10] * 1000))
    _aged(service, 0.6)
    assert not service._send_due(cfg.max_export_batch_size, cfg.schedule_delay)
    service._pending.clear()
    service._pending_bytes = 0
    _park(service, _spans([10] * 50))
    _aged(service, 0.25)
    assert service._send_due(cfg.max_export_batch_size, cfg.schedule_delay)
    assert sent == []
