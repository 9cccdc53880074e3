"""What an ended span record keeps alive while it waits in a deep queue (issue 12): ``compact()`` turns its attributes
into a tuple with shared keys, read back unchanged; the processor compacts only records that will wait; a write
racing with ``end()`` raises nothing."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, StatusCode

from judgeval_async import Tracer
from judgeval_async import _spans as spans_module
from judgeval_async._otlp import encode_spans_each
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


def _tracer_plain() -> tuple[Any, list[EngineSpan]]:
    """A tracer whose ended spans are kept as they end (the test compacts them)."""
    ended: list[EngineSpan] = []
    provider = EngineTracerProvider(resource=Resource.create({"service.name": "svc"}), on_end=ended.append)
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


def test_compacted_span_record_ids_and_times_cost_under_240_bytes() -> None:
    """An ended, compacted span without attributes holds < 240 B: an 11-slot record (120 B), its ids and times packed
    into one int (68 B), its slot in the test's list and allocator slack (a fresh CI run measured 211 B). Was 360 B:
    22 slots (208 B) and four ints (152 B)."""
    held = _held_per_span({})
    assert held < 240, held


def test_a_plain_span_makes_no_extras() -> None:
    """A span with only attributes (what observe makes) never allocates the extras object; events, a status, a
    non-INTERNAL kind or a remote parent do, and read back."""
    tracer, ended = _tracer()
    tracer.start_span("plain", attributes={"a": "1"}).end()
    assert ended[0]._extra is None
    assert (ended[0].kind, ended[0].status.status_code, ended[0].events, ended[0].dropped_attributes) == (
        SpanKind.INTERNAL,
        StatusCode.UNSET,
        (),
        0,
    )
    span = tracer.start_span("rich", kind=SpanKind.SERVER)
    span.add_event("e", {"k": 1})
    span.set_status(StatusCode.ERROR, "bad")
    span.end()
    assert ended[1]._extra is not None
    assert ended[1].kind is SpanKind.SERVER and [e.name for e in ended[1].events] == ["e"]
    assert (ended[1].status.status_code, ended[1].status.description) == (StatusCode.ERROR, "bad")


def test_compacted_ids_and_times_read_back_and_parent_children() -> None:
    """After compact() the packed ids and times read back exactly (context, parent, times, repr), a child started
    under the ended, compacted span joins its trace, and the OTLP bytes are those of the span before compacting."""
    tracer, ended = _tracer_plain()
    with tracer.start_as_current_span("root") as root:
        child = tracer.start_span("child", start_time=2**64 - 1)
        child.end(end_time=2**64 - 1)  # the largest time a fixed64 field holds
    plain = [encode_spans_each([s])[0] for s in ended]
    expected = [(s.get_span_context(), s.parent, s.start_time, s.end_time, repr(s)) for s in ended]
    for span in ended:
        span._extra = None  # forget the cached contexts: read from the packed int below
        span.compact()
        assert span._tid is None  # packed
    assert [(s.get_span_context(), s.parent, s.start_time, s.end_time, repr(s)) for s in ended] == expected
    assert [encode_spans_each([s])[0] for s in ended] == plain
    with trace.use_span(root, end_on_exit=False):
        late = tracer.start_span("late")
    assert late.get_span_context().trace_id == root.get_span_context().trace_id
    assert late.parent is not None and late.parent.span_id == root.get_span_context().span_id
    assert child.parent is not None and child.parent.span_id == root.get_span_context().span_id


def test_times_that_do_not_fit_stay_unpacked() -> None:
    """A time outside 0..2**64-1 (the caller's to give) keeps the ids and times plain: compact() never raises and
    every field reads back as given."""
    tracer, ended = _tracer_plain()
    for start, end in ((-5, 10), (1, 2**64), (0, 0)):
        span = tracer.start_span("s", start_time=start)
        span.end(end_time=end)
        span.compact()
    assert [(s.start_time, s.end_time) for s in ended] == [(-5, 10), (1, 2**64), (0, 0)]
    assert [s._tid is None for s in ended] == [False, False, True]


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


def test_processor_compacts_only_records_that_will_wait(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """With the loop held back, the first _COMPACT_AT ended spans stay dicts and those queued behind them are
    compacted; every one is delivered with its attributes once the loop runs."""
    tracer = make_tracer()
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
