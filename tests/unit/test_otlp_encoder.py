"""The lean OTLP encoder produces exactly the message OpenTelemetry's own encoder produces."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from judgeval_async._otlp import ScopeCache, encode_request, encode_spans_each


def _decode(data: bytes) -> ExportTraceServiceRequest:
    msg = ExportTraceServiceRequest()
    msg.ParseFromString(data)
    return msg


def _lean(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    bodies = encode_spans_each(spans)
    assert all(isinstance(b, bytes) for b in bodies)
    return _decode(encode_request(spans, bodies, ScopeCache()))  # type: ignore[arg-type]


@pytest.fixture
def recorded() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc", "n": 3}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_rich_spans_encode_identically(recorded: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Kinds, every attribute type, events, links, statuses, trace state, remote parents and two scopes."""
    provider, exporter = recorded
    tracer = provider.get_tracer("lib", "1.2", schema_url="https://schema")
    other = provider.get_tracer("other")
    remote = SpanContext(0x1234, 0x99, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("a", "b")]))
    attrs = {"s": "é\u2603", "i": -5, "f": 1.5, "b": False, "l": ["a", "b"], "li": [1, 2], "big": 2**62, "e": ""}
    with tracer.start_as_current_span(
        "root", kind=SpanKind.SERVER, attributes=attrs, links=[Link(remote, {"k": 1})]
    ) as sp:
        sp.add_event("ev", {"x": 1})
        sp.add_event("ev2")
        with other.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))
        with tracer.start_as_current_span("ok", kind=SpanKind.CONSUMER) as ok:
            ok.set_status(Status(StatusCode.OK))
    with tracer.start_as_current_span("remote-child", context=set_span_in_context(NonRecordingSpan(remote))):
        pass
    spans = list(exporter.get_finished_spans())
    assert _lean(spans) == encode_spans(spans)


def test_random_attributes_encode_identically(recorded: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Seeded random spans with random attribute values decode to the same message as OpenTelemetry's encoding."""
    provider, exporter = recorded
    tracer = provider.get_tracer("fuzz")
    rng = random.Random(1234)

    def value() -> object:
        choice = rng.randrange(6)
        if choice == 0:
            return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(0, 40)))
        if choice == 1:
            return rng.randrange(-(2**63), 2**63)
        if choice == 2:
            return rng.uniform(-1e300, 1e300)
        if choice == 3:
            return rng.random() < 0.5
        if choice == 4:
            return [rng.randrange(-100, 100) for _ in range(rng.randrange(0, 5))]
        return [str(rng.random()) for _ in range(rng.randrange(0, 5))]

    for i in range(200):
        with tracer.start_as_current_span(f"s{i}" * rng.randrange(0, 3)) as span:
            for k in range(rng.randrange(0, 8)):
                span.set_attribute(f"k{k}", value())  # type: ignore[arg-type]
    spans = list(exporter.get_finished_spans())
    assert _lean(spans) == encode_spans(spans)


def test_unsupported_value_fails_only_its_span() -> None:
    """A span carrying a value OTLP cannot represent raises for itself; its neighbours still encode."""
    good = ReadableSpan("good", context=SpanContext(1, 2, is_remote=False))
    bad = ReadableSpan("bad", context=SpanContext(1, 3, is_remote=False), attributes={"o": object()})  # type: ignore[dict-item]
    out = encode_spans_each([good, bad, good])
    assert isinstance(out[0], bytes) and isinstance(out[2], bytes)
    assert isinstance(out[1], TypeError)


def test_scope_cache_reuses_headers() -> None:
    """Encoding twice with one cache gives the same bytes (the cached resource and scope headers are reused)."""
    span = ReadableSpan("x", context=SpanContext(1, 2, is_remote=False), resource=Resource.create({"a": "b"}))
    cache = ScopeCache()
    (body,) = encode_spans_each([span])
    assert isinstance(body, bytes)
    first = encode_request([span], [body], cache)
    assert encode_request([span], [body], cache) == first
    assert _decode(first) == encode_spans([span])


def _with_strings(text: str, scope_text: str = "scope") -> ReadableSpan:
    """A span carrying ``text`` in every string slot: name, attribute key and values, event, link, status."""
    ctx = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))
    return ReadableSpan(
        name=f"name {text}",
        context=ctx,
        resource=Resource.create({"service.name": f"svc {scope_text}"}),
        attributes={f"key {text}": f"value {text}", "list": ["ok", text], "n": 1},
        events=[Event(f"event {text}", {"exception.message": text}, timestamp=5)],
        links=[Link(SpanContext(0x1, 0x2, is_remote=True), {"why": text})],
        status=Status(StatusCode.ERROR, f"failed {text}"),
        start_time=1,
        end_time=2,
        instrumentation_scope=InstrumentationScope(scope_text, "1.0"),
    )


def test_lone_surrogates_are_replaced_not_fatal() -> None:
    """Lone surrogates anywhere in a span are written as "?" (reported once); the span equals OTel's encoding of
    the same span with "?" in their place."""
    reasons: list[str] = []
    out = encode_spans_each([_with_strings("a\ud800b\udfff")], reasons.append)
    assert isinstance(out[0], bytes)
    assert reasons == ["replaced"]
    clean = _with_strings("a?b?")
    assert _decode(encode_request([clean], out, ScopeCache())) == encode_spans([clean])  # type: ignore[arg-type]


def test_lone_surrogates_in_resource_and_scope_are_replaced() -> None:
    """A surrogate in a resource attribute or scope name cannot fail every request of its spans."""
    span = _with_strings("fine", scope_text="sc\ud800ope")
    (body,) = encode_spans_each([span])
    assert isinstance(body, bytes)
    clean = _with_strings("fine", scope_text="sc?ope")
    assert _decode(encode_request([span], [body], ScopeCache())) == encode_spans([clean])


def test_clean_spans_never_report_a_replacement() -> None:
    """The fallback runs only on a UnicodeEncodeError: clean strings, astral characters included, report nothing."""
    reasons: list[str] = []
    span = _with_strings("é \U0001f600")
    out = encode_spans_each([span], reasons.append)
    assert reasons == []
    assert _decode(encode_request([span], out, ScopeCache())) == encode_spans([span])  # type: ignore[arg-type]
