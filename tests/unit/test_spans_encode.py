"""The span service's loop side: ended spans are encoded in slices of work (not of a fixed count), each record let go
once its bytes exist, and a batch's gzip payload is the same bytes every time."""

from __future__ import annotations

import asyncio
import gc
import gzip
import threading
import weakref
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from judgeval_async import Config
from judgeval_async import _spans as spans_module
from judgeval_async._metrics import Metrics
from judgeval_async._project import ProjectResolver
from judgeval_async._provider import EngineTracerProvider
from judgeval_async._span import EngineSpan
from judgeval_async._spans import SpanExportService
from judgeval_async._transport import AsyncTransport

RESOURCE = Resource.create({"service.name": "svc"})


def _service() -> SpanExportService:
    config = Config(api_key="k", organization_id="o", api_url="http://127.0.0.1:9", retry_testing=True, spool=False)
    metrics = Metrics()
    transport = AsyncTransport(config, metrics)
    return SpanExportService(config, metrics, transport, ProjectResolver(config, transport))


def _engine_spans(n: int) -> list[EngineSpan]:
    ended: list[EngineSpan] = []
    tracer = EngineTracerProvider(resource=RESOURCE, on_end=ended.append).get_tracer("lib")
    for i in range(n):
        with tracer.start_as_current_span("op") as span:
            span.set_attribute("judgment.input", f'{{"i": {i}}}')
    return ended


def _taken(service: SpanExportService, spans: list[Any]) -> list[Any]:
    for span in spans:
        assert service.offer(span)
    return service.handoff.take_nowait(len(spans))


def _capture_payloads(service: SpanExportService) -> list[bytes]:
    """Replace the service's lane with one that keeps each submitted payload (in the returned list)."""
    payloads: list[bytes] = []

    class Lane:
        def submit(self, envelope: Any) -> None:
            payloads.append(envelope.payload)

    service.lane = Lane()  # type: ignore[assignment]
    return payloads


def _count_yields(monkeypatch: pytest.MonkeyPatch, on_yield: Any = None) -> list[int]:
    yields: list[int] = []
    real_sleep = asyncio.sleep
    # asyncio.sleep is patched process-wide: count only this thread's calls, not those of other tests' SDK loops.
    me = threading.get_ident()

    async def counting_sleep(delay: float, result: Any = None) -> Any:
        if threading.get_ident() == me:
            yields.append(1)
            if on_yield is not None:
                on_yield()
        return await real_sleep(delay, result)

    monkeypatch.setattr(spans_module.asyncio, "sleep", counting_sleep)
    return yields


def test_a_batch_is_encoded_without_yielding_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """512 spans within the CPU budget are encoded in one go: a yield per 32 spans let a busy application thread
    take the GIL for a whole switch interval each time, starving the encoder."""
    monkeypatch.setattr(spans_module, "_ENCODE_BUDGET", 60.0, raising=False)
    service = _service()
    yields = _count_yields(monkeypatch)
    items = _taken(service, _engine_spans(512))
    asyncio.run(service._encode_into_pending(items))
    assert yields == []
    led = service.ledger
    assert (len(service._pending), led.parked, led.in_flight) == (512, 512, 0)


def test_the_slice_is_short_while_keeping_up_and_long_behind_a_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeping up, the encoder yields at the short budget (an application thread waits for the GIL at most that
    long); with a take's worth of spans still in the handoff, at the long one (throughput first)."""
    monkeypatch.setattr(spans_module, "_ENCODE_BUDGET", 0.0)
    monkeypatch.setattr(spans_module, "_ENCODE_BUDGET_BEHIND", 60.0)
    chunks = 4
    n = chunks * spans_module._ENCODE_CHUNK

    keeping_up = _service()
    yields = _count_yields(monkeypatch)
    asyncio.run(keeping_up._encode_into_pending(_taken(keeping_up, _engine_spans(n))))
    assert len(yields) == chunks  # one yield per slice of _ENCODE_CHUNK spans

    behind = _service()
    items = _taken(behind, _engine_spans(n))
    for span in _engine_spans(spans_module._TAKE):  # a take's worth still waiting behind these
        assert behind.offer(span)
    yields.clear()
    asyncio.run(behind._encode_into_pending(items))
    assert yields == []
    assert len(behind._pending) == n


def test_records_are_released_as_they_are_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the budget spent after every slice, the loop yields after each, and by then that slice's records are
    gone (only their bytes are held), not kept alive until the whole batch is encoded."""
    monkeypatch.setattr(spans_module, "_ENCODE_BUDGET", 0.0, raising=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("lib")
    chunk = spans_module._ENCODE_CHUNK
    for i in range(3 * chunk):
        with tracer.start_as_current_span("op", attributes={"i": i}):
            pass
    spans = list(exporter.get_finished_spans())
    exporter.clear()
    refs = [weakref.ref(s) for s in spans]
    alive_at_yields: list[int] = []
    yields = _count_yields(
        monkeypatch, lambda: (gc.collect(), alive_at_yields.append(sum(r() is not None for r in refs)))
    )
    service = _service()
    items = _taken(service, spans)
    del spans
    asyncio.run(service._encode_into_pending(items))
    assert len(yields) == 3  # one per slice: the budget is spent after each
    assert alive_at_yields == [2 * chunk, chunk, 0]
    assert items == [] and len(service._pending) == 3 * chunk


def test_batch_payload_is_deterministic() -> None:
    """The same batch gzips to the same bytes (no timestamp in the gzip header): a replay is byte-identical."""
    service = _service()
    payloads = _capture_payloads(service)
    asyncio.run(service._encode_into_pending(_taken(service, _engine_spans(200))))
    batch = list(service._pending)
    service._submit(batch)
    service._submit(batch)
    assert payloads[0] == payloads[1]
    assert payloads[0][4:8] == b"\x00\x00\x00\x00"  # gzip MTIME
    assert len(gzip.decompress(payloads[0])) > len(payloads[0])


def test_consumer_takes_records_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer behind takes _TAKE records at a time, not a whole batch: the records alive (queued or being
    encoded) never exceed the queue's bound by more than a slice, and every span still goes out."""
    service = _service()
    sizes: list[int] = []
    encode = service._encode_into_pending

    async def spy(items: list[Any]) -> None:
        sizes.append(len(items))
        await encode(items)

    submitted: list[int] = []

    class Lane:
        unwell = False  # a healthy endpoint: batches are cut by size, not every 0.1 s

        def submit(self, envelope: Any) -> None:
            submitted.append(envelope.items)

        def idle(self) -> bool:
            return True

    monkeypatch.setattr(service, "_encode_into_pending", spy)
    service.lane = Lane()  # type: ignore[assignment]
    for span in _engine_spans(600):
        assert service.offer(span)
    service.handoff.close()
    asyncio.run(asyncio.wait_for(service._consume(), 30))
    assert sum(sizes) == 600 and max(sizes) <= spans_module._TAKE
    assert sum(submitted) == 600


def test_interleaved_tracers_and_sdk_spans_are_grouped_by_resource_and_scope() -> None:
    """Engine spans of two tracers (two resources and scopes) interleaved with SDK spans, in one slice: each span
    lands under its own resource and scope, in order."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    service = _service()
    payloads = _capture_payloads(service)
    ended: list[Any] = []
    a = EngineTracerProvider(resource=RESOURCE, on_end=ended.append).get_tracer("a")
    b = EngineTracerProvider(resource=Resource.create({"service.name": "other"}), on_end=ended.append).get_tracer("b")
    exporter = InMemorySpanExporter()
    sdk = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    for i in range(30):
        tracer = (a, b, a, sdk.get_tracer("sdk"))[i % 4]
        with tracer.start_as_current_span(f"op{i}"):
            pass
        ended.extend(exporter.get_finished_spans())
        exporter.clear()
    asyncio.run(service._encode_into_pending(_taken(service, list(ended))))
    service._submit(list(service._pending))
    request = ExportTraceServiceRequest.FromString(gzip.decompress(payloads[0]))
    names = {
        (_service_name(rs.resource.attributes), ss.scope.name): [s.name for s in ss.spans]
        for rs in request.resource_spans
        for ss in rs.scope_spans
    }
    assert names == {
        ("svc", "a"): [f"op{i}" for i in range(30) if i % 4 in (0, 2)],
        ("other", "b"): [f"op{i}" for i in range(30) if i % 4 == 1],
        ("svc", "sdk"): [f"op{i}" for i in range(30) if i % 4 == 3],
    }


def _service_name(attributes: Any) -> str:
    return next(kv.value.string_value for kv in attributes if kv.key == "service.name")
