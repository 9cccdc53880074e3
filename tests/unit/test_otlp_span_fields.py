"""The engine span encoder's shortcuts (cached attribute fields, a value shared by two keys, constant status and
flags fields) write the very bytes the OpenTelemetry SDK's encoder writes for the same spans."""

from __future__ import annotations

import random

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from judgeval_async import _otlp
from judgeval_async import _provider as provider_module
from judgeval_async._otlp import ScopeCache, encode_request, encode_spans_each
from judgeval_async._provider import EngineTracerProvider
from judgeval_async._span import EngineSpan

RESOURCE = Resource.create({"service.name": "svc"})


class _Ids(RandomIdGenerator):
    """A deterministic id sequence."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1


def _attributes(i: int) -> dict[str, object]:
    text = f'{{"i":{i}}}'
    long_text = "é" * (60 + i % 90)  # around the 64-character cache limit and the 128-byte length boundary
    return {
        "judgment.span_kind": "span",  # the same on every span: cached
        "judgment.input": text,
        "input.value": text,  # the same object under a second key: encoded once
        "mime": "application/json",
        "long": long_text,
        "n": i,
        "flag": i % 2 == 0,
        "empty": "",
    }


def _drive(tracer: object, n: int) -> None:
    kinds = list(SpanKind)
    for i in range(n):
        with tracer.start_as_current_span(f"op{i % 3}", kind=kinds[i % len(kinds)]) as span:  # type: ignore[attr-defined]
            span.set_attributes(_attributes(i))
            if i % 4 == 1:
                span.set_status(Status(StatusCode.ERROR, "boom"))
            elif i % 4 == 2:
                span.set_status(Status(StatusCode.OK))


@pytest.mark.parametrize("n", [5, 700])
def test_cached_fields_encode_to_the_sdks_bytes(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Spans repeating (key, value) pairs, sharing a value between keys, with long and multi-byte values, statuses
    and every kind (700: more distinct pairs than the cache holds, so it empties and refills) match the SDK."""
    monkeypatch.setattr(_otlp, "_PAIRS", {})
    ids = _Ids(7)
    monkeypatch.setattr(provider_module, "new_trace_id", ids.generate_trace_id)
    monkeypatch.setattr(provider_module, "new_span_id", ids.generate_span_id)
    ended: list[EngineSpan] = []
    _drive(EngineTracerProvider(resource=RESOURCE, on_end=ended.append).get_tracer("lib"), n)
    exporter = InMemorySpanExporter()
    sdk = TracerProvider(resource=RESOURCE, id_generator=_Ids(7), shutdown_on_exit=False)
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    _drive(sdk.get_tracer("lib"), n)
    theirs = list(exporter.get_finished_spans())
    for a, b in zip(ended, theirs, strict=True):  # the same content: only the times differ; take the SDK's
        a._start, a._end = b.start_time, b.end_time
    bodies = encode_spans_each(ended)
    ours = encode_request(ended, bodies, ScopeCache())  # type: ignore[arg-type]
    assert ours == encode_spans(theirs).SerializeToString()
    assert encode_spans_each(ended) == bodies  # a second pass, from the cache, gives the same bytes
    assert 0 < len(_otlp._PAIRS) <= _otlp._PAIRS_MAX


def test_cache_holds_only_short_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value longer than the limit is never cached (the cache stays small whatever the inputs)."""
    monkeypatch.setattr(_otlp, "_PAIRS", {})
    ended: list[EngineSpan] = []
    tracer = EngineTracerProvider(resource=RESOURCE, on_end=ended.append).get_tracer("lib")
    with tracer.start_as_current_span("op") as span:
        span.set_attribute("big", "x" * (_otlp._PAIR_VALUE_MAX + 1))
        span.set_attribute("small", "x")
    encode_spans_each(ended)  # a key's first sighting takes the generic path (and learns the key)
    first = encode_spans_each(ended)
    assert list(_otlp._PAIRS) == [("small", "x")]
    assert encode_spans_each(ended) == first


def test_grouped_request_matches_the_sdk() -> None:
    """A batch of two resources and three scopes, with spans small, medium (>= 128 B) and large (>= 16 kB), each
    framed as it is encoded and joined once from precomputed lengths, is the SDK's request byte for byte."""
    providers = []
    for r in range(2):
        exporter = InMemorySpanExporter()
        sdk = TracerProvider(resource=Resource.create({"service.name": f"svc{r}"}), shutdown_on_exit=False)
        sdk.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append((sdk, exporter))
    tracers = [providers[0][0].get_tracer("a"), providers[0][0].get_tracer("b", "1.0"), providers[1][0].get_tracer("c")]
    for i in range(30):
        with tracers[i % 3].start_as_current_span(f"op{i}") as span:
            span.set_attribute("payload", "x" * (10, 300, 20_000)[i % 3])
    spans = [s for _, exporter in providers for s in exporter.get_finished_spans()]
    bodies = encode_spans_each(spans)
    groups: dict[tuple[int, int], tuple[object, object, list[bytes]]] = {}
    for span, body in zip(spans, bodies, strict=True):
        key = (id(span.resource), id(span.instrumentation_scope))
        framed = _otlp.frame_span(body)  # type: ignore[arg-type]
        groups.setdefault(key, (span.resource, span.instrumentation_scope, []))[2].append(framed)
    ours = _otlp.encode_grouped(list(groups.values()), ScopeCache())
    assert ours == encode_spans(spans).SerializeToString()


class _ExtremeIds(_Ids):
    """Ids with every bit set first (the 16-byte trace id's high half, the span id's top bit), then random ones."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self._first_trace, self._spans_left = True, 2

    def generate_trace_id(self) -> int:
        if self._first_trace:
            self._first_trace = False
            return (1 << 128) - 1
        return super().generate_trace_id()

    def generate_span_id(self) -> int:
        if self._spans_left:
            self._spans_left -= 1
            return (1 << 64) - 1 - self._spans_left
        return super().generate_span_id()


def _drive_tuples(tracer: object, n: int) -> None:
    for i in range(n):
        with tracer.start_as_current_span(f"outer{i % 2}") as outer:  # type: ignore[attr-defined]
            outer.set_attribute("tag.tags", ("web",))  # repeats: cached
            outer.set_attribute("tags2", ("a", "b" * (i % 3)))
            # Equal as tuples, not as values: must never share a cache entry (1 == True).
            outer.set_attribute("mixed", (1,) if i % 2 else (True,))
            outer.set_attribute("nums", (1.5, 2))
            outer.set_attribute("many", tuple(str(k) for k in range(i % 12)))  # past the looked-up length too
            with tracer.start_as_current_span("inner", kind=SpanKind.CLIENT) as inner:  # type: ignore[attr-defined]
                inner.set_attribute("tag.tags", ("web", "é" * 70))  # a long tuple field: not cached


def test_cached_tuples_names_and_ids_encode_to_the_sdks_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tuples of strings (cached whole), tuples of numbers and bools equal to each other (never confused through the
    cache), repeated span names (cached fields) and ids with their top bits set match the SDK's bytes."""
    monkeypatch.setattr(_otlp, "_PAIRS", {})
    monkeypatch.setattr(_otlp, "_NAMES", {})
    monkeypatch.setattr(provider_module, "new_trace_id", (ids := _ExtremeIds(3)).generate_trace_id)
    monkeypatch.setattr(provider_module, "new_span_id", ids.generate_span_id)
    ended: list[EngineSpan] = []
    _drive_tuples(EngineTracerProvider(resource=RESOURCE, on_end=ended.append).get_tracer("lib"), 40)
    exporter = InMemorySpanExporter()
    sdk = TracerProvider(resource=RESOURCE, id_generator=_ExtremeIds(3), shutdown_on_exit=False)
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    _drive_tuples(sdk.get_tracer("lib"), 40)
    theirs = list(exporter.get_finished_spans())
    assert theirs[0].context is not None and theirs[0].context.trace_id == (1 << 128) - 1
    for a, b in zip(ended, theirs, strict=True):
        a._start, a._end = b.start_time, b.end_time
    for _ in range(2):  # the second pass is served from the caches
        bodies = encode_spans_each(ended)
        assert encode_request(ended, bodies, ScopeCache()) == encode_spans(theirs).SerializeToString()  # type: ignore[arg-type]
    assert ("tag.tags", ("web",)) in _otlp._PAIRS
    assert not any(key == "mixed" or key == "nums" for key, _ in _otlp._PAIRS)
    assert set(_otlp._NAMES) == {"outer0", "outer1", "inner"}


def test_span_without_end_time_encodes_like_the_sdk() -> None:
    """A span record read before its end (no end time) writes its start alone, as the SDK's encoder does."""
    ended: list[EngineSpan] = []
    tracer = EngineTracerProvider(resource=RESOURCE, on_end=ended.append).get_tracer("lib")
    span = tracer.start_span("open")
    assert isinstance(span, EngineSpan)
    (body,) = encode_spans_each([span])
    span.end()
    (closed,) = encode_spans_each([span])
    assert isinstance(body, bytes) and isinstance(closed, bytes) and span._end is not None
    end_field = b"\x41" + span._end.to_bytes(8, "little")
    assert end_field not in body
    assert closed.replace(end_field, b"") == body
