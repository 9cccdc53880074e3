"""The Tracer against the local server over real sockets: spans, tags, evaluations, metadata bounds, bad input."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from judgeval_async import JudgmentSpanProcessor, Tracer
from judgeval_async.testing import LocalJudgmentServer


def _by_name(server: LocalJudgmentServer) -> dict[str, list]:  # type: ignore[type-arg]
    out: dict[str, list] = {}  # type: ignore[type-arg]
    for rec in server.spans.values():
        out.setdefault(rec.name, []).append(rec)
    return out


def test_nested_spans_arrive_with_correct_parentage(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """observe-in-observe-in-span arrives as a three-level tree in one trace, with inputs and outputs."""
    tracer = make_tracer()

    @tracer.observe(span_type="tool")
    def leaf(x: int) -> int:
        return x + 1

    @tracer.observe
    async def middle(x: int) -> int:
        return leaf(x) * 2

    async def main() -> int:
        with tracer.span("root"):
            return await middle(3)

    assert asyncio.run(main()) == 8
    assert tracer.force_flush(timeout=10.0)
    spans = _by_name(local_server)
    root, mid, lf = spans["root"][0], spans[middle.__name__][0], spans[leaf.__name__][0]
    assert root.parent_span_id is None
    assert mid.parent_span_id == root.span_id and lf.parent_span_id == mid.span_id
    assert root.trace_id == mid.trace_id == lf.trace_id
    assert lf.attributes["judgment.span_kind"] == "tool"
    assert lf.attributes["judgment.input"] == '{"x":3}'
    assert lf.attributes["judgment.output"] == "4"
    assert root.project_id is not None


def test_observe_preserves_function_nature() -> None:
    """Wrapped functions keep their signature, docstring and inspect nature (no I/O: tracer never started)."""
    tracer = Tracer(project_name="p", api_key="k", api_url="http://127.0.0.1:9")

    def f(a: int, b: str = "x") -> str:
        """Doc of f."""
        return b * a

    async def g(a: int) -> int:
        return a

    def gen() -> Iterator[int]:
        yield 1

    async def agen() -> AsyncIterator[int]:
        yield 1

    wf, wg, wgen, wagen = (tracer.observe(fn) for fn in (f, g, gen, agen))
    assert inspect.signature(wf) == inspect.signature(f) and wf.__doc__ == "Doc of f." and wf.__name__ == "f"
    assert inspect.iscoroutinefunction(wg)
    assert inspect.isgeneratorfunction(wgen)
    assert inspect.isasyncgenfunction(wagen)
    assert not inspect.iscoroutinefunction(wf)
    tracer.shutdown(timeout=2.0)


def test_exceptions_propagate_unchanged_and_mark_the_span(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """An exception from the wrapped function reaches the caller as itself and the span has status ERROR."""
    tracer = make_tracer()

    class Boom(Exception):
        pass

    err = Boom("bad")

    @tracer.observe
    def fails() -> None:
        raise err

    with pytest.raises(Boom) as caught:
        fails()
    assert caught.value is err
    assert tracer.force_flush(timeout=10.0)
    (rec,) = local_server.spans.values()
    assert rec.status_code == 2  # STATUS_CODE_ERROR


def test_generators_are_traced(local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]) -> None:
    """Sync and async generators produce one span each covering the iteration, with yielded items as output."""
    tracer = make_tracer()

    @tracer.observe
    def count(n: int) -> Iterator[int]:
        for i in range(n):
            with tracer.span("inside-gen"):
                pass
            yield i

    @tracer.observe
    async def acount(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def consume() -> list[int]:
        return [i async for i in acount(3)]

    assert list(count(2)) == [0, 1]
    assert asyncio.run(consume()) == [0, 1, 2]
    assert tracer.force_flush(timeout=10.0)
    spans = _by_name(local_server)
    gen_span = spans[count.__name__][0]
    assert gen_span.attributes["judgment.output"] == "[0,1]"
    assert all(s.parent_span_id == gen_span.span_id for s in spans["inside-gen"])
    assert spans[acount.__name__][0].attributes["judgment.output"] == "[0,1,2]"


def test_context_propagates_across_tasks_and_threads(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """Children created in create_task and in copy_context threads join the trace; a plain thread starts a root."""
    tracer = make_tracer()

    async def main() -> None:
        with tracer.span("parent"):

            async def child() -> None:
                with tracer.span("task-child"):
                    await asyncio.sleep(0)

            await asyncio.create_task(child())
            ctx = contextvars.copy_context()
            t = threading.Thread(target=ctx.run, args=(lambda: tracer.span("ctx-thread-child").__enter__().end(),))
            t.start()
            t.join()

            def plain() -> None:
                with tracer.span("plain-thread"):
                    pass

            t2 = threading.Thread(target=plain)
            t2.start()
            t2.join()

    asyncio.run(main())
    assert tracer.force_flush(timeout=10.0)
    spans = _by_name(local_server)
    parent = spans["parent"][0]
    assert spans["task-child"][0].parent_span_id == parent.span_id
    assert spans["ctx-thread-child"][0].trace_id == parent.trace_id
    plain = spans["plain-thread"][0]
    assert plain.parent_span_id is None and plain.trace_id != parent.trace_id


def test_tags_from_1000_traces_arrive_deduplicated_in_few_batches(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """1 000 traces tagged twice each arrive deduplicated in at most 11 batch calls."""
    tracer = make_tracer(tag_flush_interval=30.0)
    for i in range(1000):
        with tracer.span(f"t{i}"):
            tracer.tag(["beta", "eu"])
            tracer.tag("beta")
    assert tracer.force_flush(timeout=20.0)
    assert len(local_server.tags) == 1000
    assert all(tags == {"beta", "eu"} for tags in local_server.tags.values())
    assert 1 <= local_server.request_count("tags_batch") <= 11
    assert local_server.request_count("tags") == 0
    health = tracer.get_health_metrics()
    assert health["tags_buffered"] == health["tags_flushed"] == 2000


def test_per_trace_fallback_when_batch_endpoint_404s(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """With the batch endpoint gone, the same tags arrive through the per-trace endpoint, remembered afterwards."""
    local_server.set_batch_tags_enabled(False)
    tracer = make_tracer()
    for i in range(30):
        with tracer.span(f"t{i}"):
            tracer.tag(["a", "b"])
    assert tracer.force_flush(timeout=20.0)
    assert len(local_server.tags) == 30 and all(t == {"a", "b"} for t in local_server.tags.values())
    batch_calls = local_server.request_count("tags_batch")
    with tracer.span("later"):
        tracer.tag("c")
    assert tracer.force_flush(timeout=20.0)
    assert local_server.request_count("tags_batch") == batch_calls  # not tried again this session
    assert tracer.get_health_metrics()["tags_flushed"] == 31


def test_evals_carry_the_ids_of_their_span(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """An evaluation arrives with the trace id and span id of the span it was created in."""
    tracer = make_tracer()
    with tracer.span("judged") as span:
        tracer.async_evaluate("answer_relevancy", {"input": "q", "actual_output": "a"}, model="gpt-x")
        ctx = span.get_span_context()
    assert tracer.force_flush(timeout=10.0)
    (ev,) = local_server.evals
    assert ev.trace_id == format(ctx.trace_id, "032x")
    assert ev.trace_span_id == format(ctx.span_id, "016x")
    assert ev.payload["examples"] == [{"input": "q", "actual_output": "a"}]
    assert ev.payload["judgment_scorers"][0]["score_type"] == "answer_relevancy"


def test_evaluate_and_tag_outside_a_span_are_counted_no_ops(make_tracer: Callable[..., Tracer]) -> None:
    """async_evaluate() and tag() outside any span do nothing but count, and never raise."""
    tracer = make_tracer()
    tracer.async_evaluate("faithfulness", {"input": "x"})
    tracer.tag("x")
    health = tracer.get_health_metrics()
    assert health["calls_ignored"] == {"async_evaluate:no_active_span": 1, "tag:no_active_span": 1}
    assert health["evaluations_enqueued"] == 0


def test_413_on_a_full_batch_still_delivers_every_span(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """A 413 on a full 512-span batch splits it and resends the halves: every span arrives."""
    local_server.set_fault("traces", kind="status", status=413, recover_after_requests=1)
    tracer = make_tracer(schedule_delay=30.0, max_export_batch_size=512)
    for i in range(512):
        with tracer.span(f"s{i}"):
            pass
    assert tracer.force_flush(timeout=20.0)
    assert len(local_server.spans) == 512
    assert local_server.request_count("traces", 413) == 1
    assert tracer.get_health_metrics()["spans_exported"] == 512


def test_single_span_too_large_becomes_a_marker(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """A single span the backend keeps refusing with 413 is dropped as payload_too_large, not silently."""
    local_server.set_fault("traces", kind="status", status=413)
    tracer = make_tracer()
    with tracer.span("huge"):
        pass
    assert tracer.force_flush(timeout=10.0)
    health = tracer.get_health_metrics()
    assert health["spans_dropped_by_reason"] == {"payload_too_large": 1}
    assert health["ledger_balanced"]


def test_spans_that_never_end_leave_bounded_metadata(make_tracer: Callable[..., Tracer]) -> None:
    """20 000 SDK spans that never end, each with internal metadata, leave at most 10 000 entries; evictions counted.

    (On the span engine's own spans the metadata lives in the span itself: no store entry at all, checked last.)"""
    tracer = make_tracer(tracer_provider=TracerProvider())
    for i in range(20_000):
        assert tracer.processor.set_internal_attribute(tracer.otel_tracer.start_span("hung"), "judgment.step", i)
    health = tracer.get_health_metrics()
    assert health["metadata_entries"] <= 10_000
    assert health["metadata_evictions"] == {"lru": 10_000}
    engine = make_tracer()
    for i in range(100):
        assert engine.processor.set_internal_attribute(engine.otel_tracer.start_span("hung"), "judgment.step", i)
    assert engine.get_health_metrics()["metadata_entries"] == 0


def test_bad_input_degrades_gracefully(local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]) -> None:
    """Huge, cyclic, unserializable and surrogate-laden inputs never raise; the span still arrives, bounded."""
    tracer = make_tracer(max_value_length=1000)
    cyclic: list[object] = []
    cyclic.append(cyclic)

    @tracer.observe
    def take(big: str, cyc: list[object], obj: object, sur: str, raw: bytes) -> str:
        return big[:10]

    assert take("x" * 100_000_000, cyclic, object(), "bad\ud800", b"\x00" * 10) == "x" * 10
    assert tracer.force_flush(timeout=10.0)
    (rec,) = local_server.spans.values()
    text = rec.attributes["judgment.input"]
    assert len(text) < 2000 and "truncated" in text and "<cycle>" in text and "<object>" in text
    degraded = tracer.get_health_metrics()["values_degraded"]
    assert degraded["truncated"] == 1 and degraded["cyclic"] == 1 and degraded["unserializable"] == 1


def test_explicit_project_id_skips_resolve(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """A tracer built with project_id never calls the resolve endpoint."""
    tracer = make_tracer(project_id="proj-explicit")
    with tracer.span("s"):
        pass
    assert tracer.force_flush(timeout=10.0)
    assert local_server.request_count("resolve") == 0
    assert next(iter(local_server.spans.values())).project_id == "proj-explicit"


def test_failed_resolve_is_retried_later(local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]) -> None:
    """A resolve that fails is not cached: the batch is held, and delivered once a later resolve succeeds."""
    local_server.set_fault("resolve", kind="status", status=500)
    tracer = make_tracer(retry_attempts=1, project_resolve_wait=5.0)
    with tracer.span("first"):
        pass
    assert not tracer.force_flush(timeout=2.0)
    assert tracer.get_health_metrics()["spans_dropped_by_reason"] == {}
    local_server.clear_faults()
    with tracer.span("second"):
        pass
    assert tracer.force_flush(timeout=10.0)
    assert sorted(r.name for r in local_server.spans.values()) == ["first", "second"]


def test_processor_on_an_existing_provider(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """Our processor added to a user's own TracerProvider exports that provider's spans."""
    provider = TracerProvider()
    tracer = make_tracer(tracer_provider=provider)
    assert isinstance(tracer.processor, JudgmentSpanProcessor)
    with provider.get_tracer("user-code").start_as_current_span("user-span"):
        pass
    assert tracer.force_flush(timeout=10.0)
    assert [r.name for r in local_server.spans.values()] == ["user-span"]
    provider.shutdown()


def test_isolated_by_default_global_on_request(make_tracer: Callable[..., Tracer]) -> None:
    """A tracer does not touch the global provider unless set_global=True."""
    before = trace.get_tracer_provider()
    tracer = make_tracer()
    assert trace.get_tracer_provider() is before
    assert tracer.provider is not before


def test_sdk_loop_suppresses_instrumentation(make_tracer: Callable[..., Tracer]) -> None:
    """Code running on the SDK loop sees OpenTelemetry's suppress-instrumentation flags, so our sends are not traced."""
    tracer = make_tracer()

    async def flags() -> tuple[object, object]:
        return (
            otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY),
            otel_context.get_value(otel_context._SUPPRESS_HTTP_INSTRUMENTATION_KEY),
        )

    assert tracer._runtime.ensure_started(wait=10.0)
    assert tracer._runtime.run(flags(), timeout=10.0) == (True, True)


def test_internal_attributes_are_exported_with_their_span(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """An internal attribute set on a live span arrives with it; one set after the span ended is refused."""
    tracer = make_tracer()
    with tracer.span("with-meta") as span:
        assert tracer.processor.set_internal_attribute(span, "judgment.update_id", 7)
    assert not tracer.processor.set_internal_attribute(span, "judgment.late", 1)
    assert tracer.force_flush(timeout=10.0)
    (rec,) = local_server.spans.values()
    assert rec.attributes["judgment.update_id"] == 7 and "judgment.late" not in rec.attributes
    assert tracer.get_health_metrics()["metadata_entries"] == 0


def test_set_attribute_input_and_output(local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]) -> None:
    """Primitives stay primitives, other values and inputs/outputs become bounded JSON, once (never re-encoded)."""
    tracer = make_tracer(max_value_length=100)
    with tracer.span("s"):
        tracer.set_attribute("n", 3)
        tracer.set_attribute("d", {"a": [1, 2]})
        tracer.set_attribute("long", "y" * 500)
        tracer.set_input({"q": "x" * 500})
        tracer.set_output("done")
    assert tracer.force_flush(timeout=10.0)
    (rec,) = local_server.spans.values()
    a = rec.attributes
    assert a["n"] == 3 and a["d"] == '{"a":[1,2]}' and a["judgment.output"] == '"done"'
    assert a["long"].startswith('"yyy') and "truncated" in a["long"] and len(a["long"]) < 200
    assert a["judgment.input"].startswith('{"q":"xxx') and "truncated" in a["judgment.input"]


def test_aflush_from_the_application_loop(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """await tracer.aflush() delivers what the application's own event loop produced."""
    tracer = make_tracer(schedule_delay=30.0)

    @tracer.observe
    async def handler(i: int) -> int:
        return i

    async def main() -> bool:
        await asyncio.gather(*(handler(i) for i in range(50)))
        return await tracer.aflush(timeout=10.0)

    assert asyncio.run(main())
    assert len(local_server.spans) == 50


def test_global_provider_when_asked(local_server: LocalJudgmentServer) -> None:
    """set_global=True installs our provider globally: plain OpenTelemetry code is then exported by us.

    Runs in a subprocess: OpenTelemetry lets a process set its global provider only once.
    """
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        from opentelemetry import trace
        from judgeval_async import Tracer
        t = Tracer(project_name="p", api_key="{local_server.api_key}", organization_id="{local_server.org_id}",
                   api_url="{local_server.url}", set_global=True)
        assert trace.get_tracer_provider() is t.provider
        with trace.get_tracer("plain-otel").start_as_current_span("via-global"):
            pass
        assert t.force_flush(timeout=10.0)
        t.shutdown(timeout=2.0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert [r.name for r in local_server.spans.values()] == ["via-global"]


def test_sdk_requests_do_not_spam_the_application_logs(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], caplog: pytest.LogCaptureFixture
) -> None:
    """httpx's per-request INFO lines from the SDK's own sends stay out of the application's logs; the
    application's own httpx requests still log."""
    import httpx

    tracer = make_tracer()
    with caplog.at_level("DEBUG", logger="httpx"):
        with tracer.span("s"):
            tracer.tag("t")
        assert tracer.force_flush(timeout=10.0)
        assert local_server.request_count("traces") >= 1
        assert not [r for r in caplog.records if r.name.startswith(("httpx", "httpcore"))]
        httpx.get(f"{local_server.url}/_control/stats", timeout=5.0)
    assert [r for r in caplog.records if r.name == "httpx"]
