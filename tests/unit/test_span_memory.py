"""What an ended span record keeps alive while it waits in a deep queue (issue 12): ``compact()`` turns its attributes
into a tuple with shared keys, read back unchanged; the processor compacts only records that will wait; a write
racing with ``end()`` raises nothing."""

from __future__ import annotations

import threading
import tracemalloc
from typing import Any

from opentelemetry.sdk.resources import Resource

from judgeval_async import Tracer
from judgeval_async import _spans as spans_module
from judgeval_async._provider import EngineTracerProvider
from judgeval_async._span import EngineSpan
from judgeval_async.testing import LocalJudgmentServer

# observe's attributes on a traced call (values shared: only the attribute storage is measured)
OBSERVE_ATTRS = {
    "judgment.span_kind": "span",
    "openinference.span.kind": "CHAIN",
    "judgment.input": '{"x": 1}',
    "input.value": '{"x": 1}',
    "input.mime_type": "application/json",
    "judgment.output": "2",
    "output.value": "2",
    "output.mime_type": "application/json",
}


def _tracer() -> tuple[Any, list[EngineSpan]]:
    """A tracer whose ended spans are compacted, as the processor does when the queue is deep."""
    ended: list[EngineSpan] = []

    def on_end(span: EngineSpan) -> None:
        span.compact()
        ended.append(span)

    provider = EngineTracerProvider(resource=Resource.create({"service.name": "svc"}), on_end=on_end)
    return provider.get_tracer("test"), ended


def _held_per_span(attrs: dict[str, Any], n: int = 2_000) -> float:
    tracer, ended = _tracer()
    tracer.start_span("warm-up", attributes=attrs).end()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            span = tracer.start_span("s")
            span.set_attributes(attrs)
            span.end()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(ended) == n + 1
    return held / n


def test_compacted_span_attributes_cost_a_values_tuple() -> None:
    """Compacted spans with observe's 8 attributes hold < 160 B each more than attribute-less ones (a dict: 208 B)."""
    extra = _held_per_span(OBSERVE_ATTRS) - _held_per_span({})
    assert extra < 160, extra


def test_compacted_span_reads_back_its_attributes_in_order() -> None:
    """After compact() the attributes view has the same keys, values and order; an empty one stays empty; a second
    compact() changes nothing."""
    tracer, ended = _tracer()
    span = tracer.start_span("s", attributes={"a": 1, "b": "x"})
    span.set_attribute("c", (1, 2))
    span.set_attribute("a", 3)  # re-set: moves last, as in the SDK
    span.end()
    tracer.start_span("empty").end()
    assert list(ended[0].attributes.items()) == [("b", "x"), ("c", (1, 2)), ("a", 3)]
    assert list(ended[0].attr_items()) == [("b", "x"), ("c", (1, 2)), ("a", 3)]
    assert dict(ended[1].attributes) == {} and list(ended[1].attr_items()) == []
    frozen = ended[0]._attrs
    ended[0].compact()
    assert ended[0]._attrs is frozen


def test_a_recording_span_is_not_compacted() -> None:
    """compact() before end() leaves the span's dict in place (it is still being written)."""
    tracer, _ = _tracer()
    span = tracer.start_span("s", attributes={"a": 1})
    span.compact()
    span.set_attribute("b", 2)
    assert type(span._attrs) is dict and dict(span.attributes) == {"a": 1, "b": 2}


def test_spans_with_the_same_keys_share_one_keys_tuple() -> None:
    """Two ended spans with the same attribute keys keep one keys tuple between them."""
    tracer, ended = _tracer()
    for value in ("1", "2"):
        tracer.start_span("s", attributes={"k1": value, "k2": value}).end()
    assert ended[0]._attrs[-1] is ended[1]._attrs[-1]


class _EndsTheSpan:
    """A value whose ``str()`` (called while the attribute is cleaned) ends the span from inside the write."""

    def __init__(self) -> None:
        self.span: Any = None

    def __str__(self) -> str:
        self.span.end()
        return "v"


def test_a_write_racing_with_end_does_not_raise() -> None:
    """set_attribute / set_attributes that pass the ended check and then see the span end (as another thread could)
    complete without an exception, and the ended span keeps what it had at end."""
    tracer, ended = _tracer()
    for write in ("one", "many"):
        span = tracer.start_span("s", attributes={"a": 1})
        value = _EndsTheSpan()
        value.span = span
        if write == "one":
            span.set_attribute("b", value)
        else:
            span.set_attributes({"b": value, "c": 2})
        assert not span.is_recording()
    assert [dict(s.attributes) for s in ended] == [{"a": 1}, {"a": 1}]


def test_processor_compacts_only_records_that_will_wait(local_server: LocalJudgmentServer) -> None:
    """With the loop held back, the first _COMPACT_AT ended spans stay dicts and those queued behind them are
    compacted; every one is delivered with its attributes once the loop runs."""
    tracer = Tracer(
        project_name="p",
        api_key=local_server.api_key,
        organization_id=local_server.org_id,
        api_url=local_server.url,
        retry_testing=True,
    )
    blocked, release = threading.Event(), threading.Event()

    def hold() -> None:  # runs on the loop thread: nothing consumes the handoff until we say so
        blocked.set()
        release.wait(30.0)

    try:
        assert tracer._runtime.ensure_started(wait=10.0)
        loop = tracer._runtime.loop
        assert loop is not None
        loop.call_soon_threadsafe(hold)
        assert blocked.wait(10.0)
        otel = tracer.otel_tracer
        n = spans_module._COMPACT_AT + 20
        spans = []
        for i in range(n):
            span = otel.start_span("s", attributes={"i": i, "k": "v"})
            span.end()
            spans.append(span)
        kinds = [type(s._attrs) for s in spans]
        assert kinds == [dict] * spans_module._COMPACT_AT + [tuple] * 20
        release.set()
        assert tracer.force_flush(timeout=30.0)
        assert local_server.wait_for(spans=n, timeout=30.0)
        got = sorted((int(r.attributes["i"]), r.attributes["k"]) for r in local_server.spans.values())
        assert got == [(i, "v") for i in range(n)]
    finally:
        release.set()
        tracer.shutdown(timeout=5.0)
