"""The span engine (``_span``/``_provider``) behaves as the OpenTelemetry SDK does, through the OpenTelemetry API, and
its spans encode to the very bytes the SDK's encoder produces for the same content."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import os
import random
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
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

from judgeval_async import Tracer
from judgeval_async import _provider as provider_module
from judgeval_async._otlp import ScopeCache, encode_request, encode_spans_each
from judgeval_async._provider import EngineTracerProvider
from judgeval_async._span import EngineSpan
from judgeval_async.testing import LocalJudgmentServer

RESOURCE = Resource.create({"service.name": "svc", "n": 3})


class _Ids(RandomIdGenerator):
    """A deterministic id sequence (the SDK's random-trace-id flag kept)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1


def _engine(
    monkeypatch: pytest.MonkeyPatch, seed: int = 0, **kwargs: Any
) -> tuple[EngineTracerProvider, list[EngineSpan]]:
    ids = _Ids(seed)
    monkeypatch.setattr(provider_module, "new_trace_id", ids.generate_trace_id)
    monkeypatch.setattr(provider_module, "new_span_id", ids.generate_span_id)
    ended: list[EngineSpan] = []
    return EngineTracerProvider(resource=RESOURCE, on_end=ended.append, **kwargs), ended


def _sdk(seed: int = 0, **kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE, id_generator=_Ids(seed), shutdown_on_exit=False, **kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _ours(spans: list[EngineSpan]) -> bytes:
    bodies = encode_spans_each(spans)
    assert all(isinstance(b, bytes) for b in bodies), bodies
    return encode_request(spans, bodies, ScopeCache())  # type: ignore[arg-type]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[trace.Tracer, list[EngineSpan]]]:
    provider, ended = _engine(monkeypatch)
    yield provider.get_tracer("test"), ended


# ---------------------------------------------------------------------------------------------- OTLP equality
def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 2 else 6)
    if kind == 0:
        return "".join(rng.choice("ab é☃\n\"'") for _ in range(rng.randrange(0, 40)))
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randrange(-(2**63), 2**63)
    if kind == 3:
        return rng.uniform(-1e9, 1e9)
    if kind == 4:
        return rng.randbytes(rng.randrange(5))
    if kind == 5:
        return None
    if kind in (6, 7):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 8:
        return {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randrange(3))}
    return rng.choice([(1, 2), ("x",), [], {}])


def _random_attrs(rng: random.Random) -> dict[Any, Any] | None:
    if rng.random() < 0.2:
        return None
    attrs: dict[Any, Any] = {f"a{rng.randrange(8)}": _random_value(rng) for _ in range(rng.randrange(6))}
    if rng.random() < 0.1:
        attrs[""] = "empty key"  # dropped and counted
    if rng.random() < 0.1:
        attrs[7] = "int key"  # made a string inside a mapping
    return attrs


def _drive(tracer: trace.Tracer, seed: int, remote: SpanContext) -> None:
    """One random trace: nested spans, every API call, fixed times; identical calls whichever provider is behind."""
    rng = random.Random(seed)
    clock = itertools.count(1_700_000_000_000_000_000, 1_000)
    error = ValueError("boom é")
    try:
        raise error
    except ValueError:
        pass

    def build(depth: int, context: otel_context.Context | None) -> None:
        links = [Link(remote, _random_attrs(rng)) for _ in range(rng.randrange(3))]
        if rng.random() < 0.2:
            links.append(Link(trace.INVALID_SPAN_CONTEXT))  # invalid, no attributes: skipped
        span = tracer.start_span(
            rng.choice(["root", "child", "é-name", ""]),
            context=context,
            kind=rng.choice(list(SpanKind)),
            attributes=_random_attrs(rng),
            links=links,
            start_time=next(clock),
        )
        for _ in range(rng.randrange(12)):
            op = rng.randrange(9)
            if op == 0:
                span.set_attribute(f"a{rng.randrange(8)}", _random_value(rng))
            elif op == 1:
                span.set_attributes(_random_attrs(rng) or {})
            elif op == 2:
                span.add_event(rng.choice(["ev", "é"]), _random_attrs(rng), timestamp=next(clock))
            elif op == 3:
                span.add_link(remote, _random_attrs(rng))
            elif op == 4:
                code = rng.choice(list(StatusCode))
                if rng.random() < 0.5:
                    span.set_status(Status(code, rng.choice([None, "why"])))
                else:
                    span.set_status(code, rng.choice([None, "why"]))
            elif op == 5:
                span.update_name(rng.choice(["renamed", "r2"]))
            elif op == 6:
                span.record_exception(error, _random_attrs(rng), timestamp=next(clock), escaped=rng.random() < 0.5)
            elif op == 7 and depth < 3:
                build(depth + 1, set_span_in_context(span))
            elif op == 8:
                span.set_attribute("", 1)  # an empty key: dropped, counted
        span.end(end_time=next(clock))
        span.set_attribute("late", 1)  # ignored after end, as the SDK does

    build(0, None)
    build(0, set_span_in_context(NonRecordingSpan(remote)))


@pytest.mark.parametrize("seed", range(40))
def test_random_spans_encode_to_the_sdks_bytes(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Random traces through the SDK and through the engine (same ids, times, limits) give identical OTLP bytes, and
    so do the engine's records once compacted."""
    rng = random.Random(seed)
    limits: dict[str, int | None] = {}
    if seed % 2:  # small limits: eviction, truncation and drop counters on every path
        limits = {
            "max_span_attributes": rng.randrange(0, 4),
            "max_events": rng.randrange(0, 3),
            "max_links": rng.randrange(0, 3),
            "max_event_attributes": rng.randrange(0, 3),
            "max_link_attributes": rng.randrange(0, 3),
            "max_attribute_length": rng.randrange(0, 6),
            "max_span_attribute_length": rng.randrange(0, 6),
        }
    state = TraceState([("vendor", "v1")]) if seed % 3 else TraceState()
    remote = SpanContext(rng.getrandbits(128), rng.getrandbits(64), True, TraceFlags(1), state)
    sdk_provider, exporter = _sdk(seed, span_limits=SpanLimits(**limits))  # type: ignore[arg-type]
    ours_provider, ended = _engine(monkeypatch, seed, span_limits=SpanLimits(**limits))  # type: ignore[arg-type]
    _drive(sdk_provider.get_tracer("lib", "1.2", "https://schema"), seed, remote)
    _drive(ours_provider.get_tracer("lib", "1.2", "https://schema"), seed, remote)
    theirs = list(exporter.get_finished_spans())
    assert len(ended) == len(theirs) > 0
    assert _ours(ended) == encode_spans(theirs).SerializeToString()
    for a, b in zip(ended, theirs, strict=True):
        assert a.get_span_context() == b.get_span_context()
        assert a.get_span_context().trace_flags == b.get_span_context().trace_flags
        assert a.parent == b.parent
    # Compacted, as records waiting in a deep queue are (attributes as a tuple, ids and times packed): the same bytes.
    for span in ended:
        span.compact()
    assert _ours(ended) == encode_spans(theirs).SerializeToString()
    for a, b in zip(ended, theirs, strict=True):
        assert (a.get_span_context(), a.parent, a.start_time, a.end_time) == (
            b.get_span_context(),
            b.parent,
            b.start_time,
            b.end_time,
        )


def test_surrogates_are_replaced_like_sdk_spans(engine: tuple[trace.Tracer, list[EngineSpan]]) -> None:
    """A lone surrogate in an engine span is replaced, counted once, and the span still encodes."""
    tracer, ended = engine
    with tracer.start_as_current_span("bad\ud800", attributes={"k": "v\udc00"}) as span:
        span.add_event("e\ud800", {"x": "\ud800"})
    seen: list[str] = []
    (body,) = encode_spans_each(ended, seen.append)
    assert isinstance(body, bytes) and b"bad?" in body and seen == ["replaced"]


# ---------------------------------------------------------------------------------------------- API behaviours
def test_context_propagation(engine: tuple[trace.Tracer, list[EngineSpan]]) -> None:
    """get_current_span, use_span and start_as_current_span nest spans; the outer span is current again after."""
    tracer, ended = engine
    with tracer.start_as_current_span("outer") as outer:
        assert trace.get_current_span() is outer
        assert isinstance(outer, trace.Span) and isinstance(outer, EngineSpan)
        inner = tracer.start_span("inner")
        with trace.use_span(inner, end_on_exit=True):
            assert trace.get_current_span() is inner
            with tracer.start_as_current_span("leaf"):
                pass
        assert trace.get_current_span() is outer
    assert trace.get_current_span() is trace.INVALID_SPAN
    leaf, inner_, outer_ = ended
    assert leaf.parent is not None and leaf.parent.span_id == inner_.get_span_context().span_id
    assert inner_.parent is not None and inner_.parent.span_id == outer_.get_span_context().span_id
    assert outer_.parent is None
    assert len({s.get_span_context().trace_id for s in ended}) == 1


def test_context_crosses_tasks_and_threads(engine: tuple[trace.Tracer, list[EngineSpan]]) -> None:
    """A span current in a task or in a copied context (a thread) is the parent of the spans made there."""
    tracer, ended = engine

    async def child(i: int) -> None:
        await asyncio.sleep(0)
        with tracer.start_as_current_span(f"task{i}"):
            await asyncio.sleep(0)

    async def main() -> None:
        with tracer.start_as_current_span("parent"):
            await asyncio.gather(*(child(i) for i in range(5)))
            ctx = contextvars.copy_context()
            t = threading.Thread(target=ctx.run, args=(lambda: tracer.start_span("thread").end(),))
            t.start()
            t.join()

    asyncio.run(main())
    parent = next(s for s in ended if s.name == "parent")
    children = [s for s in ended if s is not parent]
    assert len(children) == 6
    assert all(s.parent is not None and s.parent.span_id == parent.get_span_context().span_id for s in children)


def test_exception_status_and_name(engine: tuple[trace.Tracer, list[EngineSpan]]) -> None:
    """An escaping exception is recorded and sets ERROR; OK wins over ERROR; descriptions only for ERROR."""
    tracer, ended = engine
    with pytest.raises(KeyError), tracer.start_as_current_span("fails"):
        raise KeyError("k")
    with tracer.start_as_current_span("ok") as span:
        span.set_status(Status(StatusCode.OK))
        span.set_status(Status(StatusCode.ERROR, "late"))
        span.update_name("ok2")
    with tracer.start_as_current_span("desc") as span:
        span.set_status(StatusCode.OK, "ignored for OK")
    fails, ok, desc = ended
    assert fails.status.status_code is StatusCode.ERROR and fails.status.description == "KeyError: 'k'"
    (event,) = fails.events
    assert event.name == "exception" and event.attributes["exception.type"] == "KeyError"
    assert event.attributes["exception.escaped"] == "False"  # use_span records it as the SDK does
    assert ok.status.status_code is StatusCode.OK and ok.name == "ok2"
    assert desc.status.description is None


def test_ended_span_is_frozen(engine: tuple[trace.Tracer, list[EngineSpan]]) -> None:
    """After end: not recording, every mutation ignored, a second end hands nothing over again."""
    tracer, ended = engine
    span = tracer.start_span("s")
    assert span.is_recording()
    span.end()
    span.end()
    span.set_attribute("a", 1)
    span.add_event("e")
    span.update_name("x")
    span.set_status(Status(StatusCode.ERROR))
    assert not span.is_recording() and len(ended) == 1
    assert ended[0].name == "s" and not ended[0].attributes and not ended[0].events
    assert ended[0].status.status_code is StatusCode.UNSET


def test_limits_bound_a_span(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attribute count (oldest evicted), value length, events and links are bounded and the drops counted."""
    provider, ended = _engine(
        monkeypatch,
        span_limits=SpanLimits(max_span_attributes=2, max_span_attribute_length=3, max_events=1, max_links=1),
    )
    remote = SpanContext(1, 2, True, TraceFlags(1))
    span = provider.get_tracer("t").start_span("s", links=[Link(remote), Link(remote)])
    for i in range(5):
        span.set_attribute(f"k{i}", "abcdef")
        span.add_event(f"e{i}")
    span.end()
    (s,) = ended
    assert dict(s.attributes) == {"k3": "abc", "k4": "abc"} and s.dropped_attributes == 3
    assert [e.name for e in s.events] == ["e4"] and s.dropped_events == 4
    assert len(s.links) == 1 and s.dropped_links == 1


@pytest.mark.parametrize(
    "limits",
    [{}, {"max_span_attributes": 2}, {"max_span_attribute_length": 3}, {"max_span_attributes": 0}],
    ids=["none", "count", "length", "zero"],
)
def test_clean_attributes_are_bounded_like_set_attributes(
    monkeypatch: pytest.MonkeyPatch, limits: dict[str, int]
) -> None:
    """observe's output fast path (set_clean_attributes) keeps, cuts, evicts and counts exactly as set_attributes."""
    provider, ended = _engine(monkeypatch, span_limits=SpanLimits(**limits))
    tracer = provider.get_tracer("t")
    for setter in ("set_attributes", "set_clean_attributes"):
        span = tracer.start_span("s", attributes={"a": "1", "b": "2"})
        getattr(span, setter)({"b": "bbbbbb", "c": "cccccc", "d": "d"})
        span.end()
        getattr(span, setter)({"late": "x"})  # ignored once ended
    plain, fast = ended
    assert dict(fast.attributes) == dict(plain.attributes) and list(fast.attributes) == list(plain.attributes)
    assert fast.dropped_attributes == plain.dropped_attributes


@pytest.mark.parametrize(
    "limits",
    [{}, {"max_span_attributes": 2}, {"max_span_attribute_length": 3}, {"max_span_attributes": 0}],
    ids=["none", "count", "length", "zero"],
)
def test_clean_attribute_is_bounded_like_set_attribute(monkeypatch: pytest.MonkeyPatch, limits: dict[str, int]) -> None:
    """tag()'s fast path (set_clean_attribute, get_attribute) keeps, cuts, evicts and counts as set_attribute."""
    provider, ended = _engine(monkeypatch, span_limits=SpanLimits(**limits))
    tracer = provider.get_tracer("t")
    for setter in ("set_attribute", "set_clean_attribute"):
        span = tracer.start_span("s", attributes={"a": "1", "b": "2"})
        for key, value in (("b", ("web", "tagged")), ("c", "cccccc"), ("d", ("d",))):
            getattr(span, setter)(key, value)
        assert span.get_attribute("d") == span.attributes.get("d")  # type: ignore[attr-defined]
        assert span.get_attribute("missing") is None  # type: ignore[attr-defined]
        span.end()
        getattr(span, setter)("late", "x")  # ignored once ended
    plain, fast = ended
    assert dict(fast.attributes) == dict(plain.attributes) and list(fast.attributes) == list(plain.attributes)
    assert fast.dropped_attributes == plain.dropped_attributes


def test_sampler_ratio_zero_gives_non_recording_spans_with_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sampled out: a NonRecordingSpan with a valid context and unsampled flags, its children too; nothing ends."""
    provider, ended = _engine(monkeypatch, sampler_ratio=0.0)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        assert isinstance(root, NonRecordingSpan) and not root.is_recording()
        ctx = root.get_span_context()
        assert ctx.is_valid and not ctx.trace_flags.sampled and ctx.trace_flags.random_trace_id
        with tracer.start_as_current_span("child") as child:
            assert isinstance(child, NonRecordingSpan)
            assert child.get_span_context().trace_id == ctx.trace_id
            assert child.get_span_context().span_id != ctx.span_id
    assert ended == []


def test_sampler_is_parent_based(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sampled remote parent is followed even at ratio 0; an unsampled one even at ratio 1 (trace state kept)."""
    state = TraceState([("k", "v")])
    sampled = set_span_in_context(NonRecordingSpan(SpanContext(5, 6, True, TraceFlags(1), state)))
    unsampled = set_span_in_context(NonRecordingSpan(SpanContext(5, 6, True, TraceFlags(0), state)))
    never, _ = _engine(monkeypatch, sampler_ratio=0.0)
    span = never.get_tracer("t").start_span("s", context=sampled)
    assert isinstance(span, EngineSpan) and span.get_span_context().trace_state == state
    always, _ = _engine(monkeypatch, sampler_ratio=1.0)
    dropped = always.get_tracer("t").start_span("s", context=unsampled)
    assert not dropped.is_recording() and dropped.get_span_context().trace_state == state


def test_sampler_ratio_decides_like_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """At ratio 0.3 each root span is sampled exactly when the SDK's TraceIdRatioBased samples its trace id."""
    provider, _ = _engine(monkeypatch, seed=7, sampler_ratio=0.3)
    tracer = provider.get_tracer("t")
    sdk = TraceIdRatioBased(0.3)
    decisions = []
    for _ in range(400):
        span = tracer.start_span("s")
        ctx = span.get_span_context()
        expected = sdk.should_sample(None, ctx.trace_id, "s").decision.is_sampled()
        assert span.is_recording() is expected is ctx.trace_flags.sampled
        decisions.append(expected)
    assert 60 < sum(decisions) < 180


def test_sampler_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_TRACES_SAMPLER/OTEL_TRACES_SAMPLER_ARG are read as the SDK reads them."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert provider_module.sampler_ratio_from_env() == (0.25, True)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert provider_module.sampler_ratio_from_env() == (0.0, False)
    with pytest.raises(ValueError, match="sampler_ratio"):
        EngineTracerProvider(resource=RESOURCE, on_end=lambda s: None, sampler_ratio=1.5)


def test_scope_and_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each tracer carries its instrumentation scope (cached per name/version/schema); spans carry the resource."""
    provider, ended = _engine(monkeypatch)
    a = provider.get_tracer("lib", "1.0", "https://s")
    assert provider.get_tracer("lib", "1.0", "https://s") is a
    a.start_span("x").end()
    (span,) = ended
    assert span.resource is RESOURCE
    scope = span.instrumentation_scope
    assert (scope.name, scope.version, scope.schema_url) == ("lib", "1.0", "https://s")


def test_ids_differ_in_forked_children(engine: tuple[trace.Tracer, list[EngineSpan]]) -> None:
    """A forked child reseeds the id generator: its ids differ from the parent's next ones and a sibling's."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    code = textwrap.dedent(
        """
        import os, sys
        from judgeval_async._span import new_trace_id
        new_trace_id()
        ids = []
        for _ in range(2):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.write(w, str(new_trace_id()).encode()); os._exit(0)
            os.close(w); os.waitpid(pid, 0); ids.append(int(os.read(r, 100)))
        ids.append(new_trace_id())
        sys.exit(0 if len(set(ids)) == 3 else 1)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------- in the Tracer
def _server_tracer(server: LocalJudgmentServer, **kwargs: Any) -> Tracer:
    return Tracer(
        project_name="p",
        api_key=server.api_key,
        organization_id=server.org_id,
        api_url=server.url,
        retry_testing=True,
        schedule_delay=0.05,
        **kwargs,
    )


def test_tracer_uses_the_engine_and_starts_its_loop(local_server: LocalJudgmentServer) -> None:
    """Tracer() builds the engine provider, starts the loop thread at once, and its spans arrive intact."""
    tracer = _server_tracer(local_server)
    try:
        assert isinstance(tracer.provider, EngineTracerProvider)
        assert tracer._runtime.ensure_started(wait=10.0)

        @tracer.observe
        def add(a: int, b: int) -> int:
            with tracer.span("inner"):
                tracer.set_attribute("extra", 3)
            return a + b

        assert add(1, 2) == 3
        assert tracer.force_flush(timeout=10.0)
        by_name = {r.name: r for r in local_server.spans.values()}
        assert set(by_name) == {"add", "inner"}
        outer = by_name["add"]
        assert by_name["inner"].parent_span_id == outer.span_id
        assert outer.attributes["judgment.output"] == "3" and by_name["inner"].attributes["extra"] == 3
        assert tracer.get_health_metrics()["ledger_balanced"]
    finally:
        tracer.shutdown(timeout=5.0)


def test_instrumented_library_spans_nest_under_ours(local_server: LocalJudgmentServer) -> None:
    """With set_global=True, a library tracing through the global provider nests under observe's span, and back.

    Runs in a subprocess: OpenTelemetry lets a process set its global provider only once.
    """
    code = textwrap.dedent(
        f"""
        from opentelemetry import trace
        from judgeval_async import Tracer
        t = Tracer(project_name="p", api_key="{local_server.api_key}", organization_id="{local_server.org_id}",
                   api_url="{local_server.url}", set_global=True)
        lib = trace.get_tracer("some.instrumentation", "0.1")

        @t.observe(name="ours")
        def ours():
            with lib.start_as_current_span("library"):
                with t.span("ours-again"):
                    pass

        ours()
        assert t.force_flush(timeout=10.0)
        t.shutdown(timeout=2.0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    by_name = {r.name: r for r in local_server.spans.values()}
    assert set(by_name) == {"ours", "library", "ours-again"}
    assert by_name["library"].parent_span_id == by_name["ours"].span_id
    assert by_name["ours-again"].parent_span_id == by_name["library"].span_id
    assert len({r.trace_id for r in by_name.values()}) == 1


def _noop(_: object) -> None:
    return None


def test_first_traced_call_pays_no_thread_start(local_server: LocalJudgmentServer) -> None:
    """The loop thread exists right after Tracer(): the first span end finds it running, starts nothing."""
    tracer = _server_tracer(local_server)
    try:
        assert tracer._runtime.ensure_started(wait=10.0)
        before = threading.active_count()
        started: list[Callable[..., Any]] = []
        monkey = tracer._runtime.ensure_started
        tracer._runtime.ensure_started = lambda **kw: started.append(monkey) or monkey(**kw)  # type: ignore[method-assign]
        with tracer.span("first"):
            pass
        assert started == [] and threading.active_count() == before
    finally:
        tracer.shutdown(timeout=5.0)
