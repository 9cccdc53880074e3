"""Unit tests for the attribute conventions (judgeval_async._semconv), span names, tag.tags and the resource.

Spans are read back from an in-memory exporter on the user's own provider (``tracer_provider=`` mode) or from our own
provider's resource; nothing is sent over the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from judgeval_async import Tracer
from judgeval_async._config import Config, resource_from_env
from judgeval_async._semconv import OPENINFERENCE_KINDS, Semconv, openinference_kind
from judgeval_async._tracer import build_resource

OFFLINE = {"api_url": "http://127.0.0.1:9", "project_id": "p", "install_signal_handlers": False}


@pytest.fixture
def traced() -> Iterator[Any]:
    """A factory: (tracer, exporter) on a provider with an in-memory exporter; tracers are shut down afterwards."""
    made: list[Tracer] = []

    def make(**kwargs: Any) -> tuple[Tracer, InMemorySpanExporter]:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = Tracer(project_name="conv", tracer_provider=provider, **{**OFFLINE, **kwargs})
        made.append(tracer)
        return tracer, exporter

    yield make
    for tracer in made:
        tracer.shutdown(timeout=0.5)


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_default_writes_judgment_and_openinference_from_one_serialization(traced: Any) -> None:
    """By default input/output go under judgment.* and input.value/output.value, as one shared JSON string."""
    tracer, exporter = traced()

    @tracer.observe(span_type="tool")
    def search(query: str) -> list[str]:
        return [query]

    assert search("paris") == ["paris"]
    attrs = _by_name(exporter)["search"].attributes
    assert attrs is not None
    assert attrs["judgment.span_kind"] == "tool"
    assert attrs["openinference.span.kind"] == "TOOL"
    assert attrs["judgment.input"] == attrs["input.value"] == '{"query":"paris"}'
    assert attrs["judgment.output"] == attrs["output.value"] == '["paris"]'
    assert attrs["input.mime_type"] == attrs["output.mime_type"] == "application/json"
    assert not any(key.startswith("gen_ai.") for key in attrs)


def test_serializer_runs_once_per_value(traced: Any) -> None:
    """Writing two conventions does not serialize twice: one call per input and one per output."""
    tracer, _ = traced()
    calls: list[Any] = []
    original = tracer.serialize

    def counting(value: Any) -> str:
        calls.append(value)
        return original(value)

    tracer.serialize = counting  # type: ignore[method-assign]

    @tracer.observe
    def f(x: list[int]) -> list[int]:  # lists in and out: the general path (a str or int is written directly)
        return [len(x)]

    f([1])
    assert len(calls) == 2


@pytest.mark.parametrize(("span_type", "kind"), sorted(OPENINFERENCE_KINDS.items()))
def test_every_span_type_maps_to_its_openinference_kind(traced: Any, span_type: str, kind: str) -> None:
    """Each of our span types gets its OpenInference kind; the bare-observe default "span" is CHAIN."""
    tracer, exporter = traced()

    @tracer.observe(span_type=span_type)
    def step() -> None:
        return None

    step()
    attrs = _by_name(exporter)["step"].attributes
    assert attrs is not None and attrs["openinference.span.kind"] == kind


def test_unknown_and_mixed_case_types() -> None:
    """A type of the user's own is a CHAIN; matching is case-insensitive."""
    assert openinference_kind("http") == "CHAIN"
    assert openinference_kind("LLM") == "LLM"


def test_bare_observe_and_span_context_manager_are_chain(traced: Any) -> None:
    """A bare @observe and tracer.span() default to kind CHAIN, so Phoenix does not show them as UNKNOWN."""
    tracer, exporter = traced()

    @tracer.observe
    def plain() -> int:
        return 1

    plain()
    with tracer.span("block"):
        pass
    spans = _by_name(exporter)
    assert spans["plain"].attributes["openinference.span.kind"] == "CHAIN"  # type: ignore[index]
    assert spans["block"].attributes["openinference.span.kind"] == "CHAIN"  # type: ignore[index]


def test_span_names_are_the_function_name_or_explicit(traced: Any) -> None:
    """A nested function's span is named by __name__, not __qualname__ ("outer.<locals>.inner"); name= wins."""
    tracer, exporter = traced()

    def outer() -> Any:
        @tracer.observe
        def inner() -> int:
            return 1

        @tracer.observe(name="explicit")
        def other() -> int:
            return 2

        return inner, other

    inner, other = outer()
    inner()
    other()

    class Agent:
        @tracer.observe(span_type="agent")
        def run(self) -> int:
            return 3

    Agent().run()
    assert set(_by_name(exporter)) == {"inner", "explicit", "run"}


def test_judgment_only_and_openinference_only(traced: Any) -> None:
    """semconv=("judgment",) writes no OpenInference keys; ("openinference",) writes no judgment.* keys."""
    tracer, exporter = traced(semconv=("judgment",))

    @tracer.observe
    def f(x: int) -> int:
        return x

    f(1)
    attrs = dict(_by_name(exporter)["f"].attributes or {})
    assert set(attrs) == {"judgment.span_kind", "judgment.input", "judgment.output"}

    tracer2, exporter2 = traced(semconv=("openinference",))

    @tracer2.observe
    def g(x: int) -> int:
        return x

    g(1)
    attrs2 = dict(_by_name(exporter2)["g"].attributes or {})
    assert set(attrs2) == {
        "openinference.span.kind",
        "input.value",
        "input.mime_type",
        "output.value",
        "output.mime_type",
    }


def test_gen_ai_attributes_only_where_true(traced: Any) -> None:
    """With gen_ai: an operation for llm/tool/agent, tool and agent names, the model argument; nothing for a chain."""
    tracer, exporter = traced(semconv=("judgment", "openinference", "gen_ai"))

    @tracer.observe(span_type="llm")
    def complete(prompt: str, model: str = "default") -> str:
        return "ok"

    @tracer.observe(span_type="tool")
    def lookup(key: str) -> str:
        return key

    @tracer.observe(span_type="agent")
    def planner() -> None:
        return None

    @tracer.observe(span_type="chain")
    def pipeline() -> None:
        return None

    complete("hi", model="gpt-4o")
    complete("hi", "claude")
    lookup("k")
    planner()
    pipeline()
    spans = exporter.get_finished_spans()
    llm = [s.attributes for s in spans if s.name == "complete"]
    assert [a["gen_ai.request.model"] for a in llm] == ["gpt-4o", "claude"]  # type: ignore[index]
    assert all(a["llm.model_name"] == a["gen_ai.request.model"] for a in llm)  # type: ignore[index]
    assert all(a["gen_ai.operation.name"] == "chat" for a in llm)  # type: ignore[index]
    by_name = _by_name(exporter)
    assert by_name["lookup"].attributes["gen_ai.operation.name"] == "execute_tool"  # type: ignore[index]
    assert by_name["lookup"].attributes["gen_ai.tool.name"] == "lookup"  # type: ignore[index]
    assert by_name["planner"].attributes["gen_ai.operation.name"] == "invoke_agent"  # type: ignore[index]
    assert by_name["planner"].attributes["gen_ai.agent.name"] == "planner"  # type: ignore[index]
    assert not any(k.startswith("gen_ai.") for k in by_name["pipeline"].attributes or {})


def test_model_is_not_read_from_non_llm_or_non_strings(traced: Any) -> None:
    """A ``model`` argument is read only on llm spans and only when it is a str."""
    tracer, exporter = traced(semconv=("openinference", "gen_ai"))

    @tracer.observe(span_type="llm")
    def complete(model: Any = None) -> None:
        return None

    @tracer.observe(span_type="tool")
    def tool(model: str) -> None:
        return None

    complete(model=object())
    tool("gpt")
    for span in exporter.get_finished_spans():
        assert "gen_ai.request.model" not in (span.attributes or {})
        assert "llm.model_name" not in (span.attributes or {})


def test_set_input_and_set_output_follow_the_setting(traced: Any) -> None:
    """tracer.set_input/set_output write under every configured key."""
    tracer, exporter = traced()
    with tracer.span("manual"):
        tracer.set_input({"q": 1})
        tracer.set_output("done")
    attrs = _by_name(exporter)["manual"].attributes
    assert attrs is not None
    assert attrs["judgment.input"] == attrs["input.value"] == '{"q":1}'
    assert attrs["judgment.output"] == attrs["output.value"] == '"done"'
    assert attrs["output.mime_type"] == "application/json"


def test_tags_land_on_the_current_span_merged_and_capped(traced: Any) -> None:
    """tag() writes tag.tags on the current span; later calls add (no duplicates), at most tag_max_per_trace."""
    tracer, exporter = traced(tag_max_per_trace=3)
    with tracer.span("tagged"):
        tracer.tag(["a", "b"])
        tracer.tag(["b", "c", "d", "e"])
    attrs = _by_name(exporter)["tagged"].attributes
    assert attrs is not None and list(attrs["tag.tags"]) == ["a", "b", "c"]  # type: ignore[arg-type]


def test_tags_on_span_only_with_openinference(traced: Any) -> None:
    """With semconv=("judgment",) tag() goes only to the tag pipeline, not onto the span."""
    tracer, exporter = traced(semconv=("judgment",))
    with tracer.span("tagged"):
        tracer.tag("x")
    assert "tag.tags" not in (_by_name(exporter)["tagged"].attributes or {})


def test_tag_after_span_ended_is_ignored_not_raised(traced: Any) -> None:
    """A tag() outside any recording span is a counted no-op, as before."""
    tracer, _ = traced()
    tracer.tag("nothing")
    assert tracer.get_health_metrics()["calls_ignored"] == {"tag:no_active_span": 1}


def test_evaluations_disabled_is_a_counted_no_op(traced: Any) -> None:
    """evaluations_enabled=False: async_evaluate() queues nothing and is counted as ignored (disabled)."""
    tracer, _ = traced(evaluations_enabled=False)
    with tracer.span("s"):
        tracer.async_evaluate("faithfulness", {"input": "q"})
    health = tracer.get_health_metrics()
    assert health["calls_ignored"] == {"async_evaluate:disabled": 1}
    assert tracer.metrics.evaluations.created == 0


# ---------------------------------------------------------------- resource


def _resource(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    for var in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    tracer = Tracer(project_name="proj", **{**OFFLINE, **kwargs})
    try:
        return dict(tracer.provider.resource.attributes)
    finally:
        tracer.shutdown(timeout=0.5)


def test_resource_defaults_to_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without OTEL_* variables, service.name is the project name; the project is also in judgment.project_name."""
    attrs = _resource(monkeypatch, {})
    assert attrs["service.name"] == "proj"
    assert attrs["judgment.project_name"] == "proj"
    assert attrs["judgment.project_id"] == "p"
    assert attrs["openinference.project.name"] == "proj"
    assert attrs["telemetry.sdk.language"] == "python"


def test_otel_service_name_wins_over_project_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SERVICE_NAME sets service.name (over OTEL_RESOURCE_ATTRIBUTES' too); the project stays in judgment.*."""
    attrs = _resource(
        monkeypatch,
        {
            "OTEL_SERVICE_NAME": "checkout",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment=prod",
        },
    )
    assert attrs["service.name"] == "checkout"
    assert attrs["deployment.environment"] == "prod"
    assert attrs["judgment.project_name"] == "proj"


def test_resource_attributes_keyword_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """resource_attributes= beats OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (code over environment)."""
    attrs = _resource(
        monkeypatch,
        {"OTEL_SERVICE_NAME": "env-svc", "OTEL_RESOURCE_ATTRIBUTES": "team=env,region=eu"},
        resource_attributes={"service.name": "code-svc", "team": "code", "replicas": 3},
    )
    assert (attrs["service.name"], attrs["team"], attrs["region"], attrs["replicas"]) == ("code-svc", "code", "eu", 3)


def test_otel_resource_attributes_parsing(caplog: pytest.LogCaptureFixture) -> None:
    """Percent-decoding of keys and values, trimming, empty members skipped, a bad entry skipped and logged once."""
    raw = " a = x%2Cy , b%3Dc=%E2%9C%93,,bad-entry, =novalue,c=%FF,d=ok "
    with caplog.at_level("WARNING"):
        first = resource_from_env({"OTEL_RESOURCE_ATTRIBUTES": raw})
        second = resource_from_env({"OTEL_RESOURCE_ATTRIBUTES": raw})
    assert first == second == {"a": "x,y", "b=c": "\u2713", "d": "ok"}
    assert sum("OTEL_RESOURCE_ATTRIBUTES" in r.getMessage() for r in caplog.records) <= 1


def test_build_resource_with_openinference_off() -> None:
    """Without the openinference convention no openinference.project.name is added to the resource."""
    config = Config(project_name="x", semconv=("judgment",))
    attrs = build_resource(config, environ={}).attributes
    assert "openinference.project.name" not in attrs
    assert attrs["service.name"] == "x"


def test_semconv_object_precomputes_keys() -> None:
    """Semconv lists the input/output keys once; an empty selection of openinference has no mime keys."""
    sc = Semconv(("judgment",))
    assert (sc.input_keys, sc.output_keys, sc.input_mime_key) == (("judgment.input",), ("judgment.output",), "")


def test_model_keyword_only_and_after_varargs(traced: Any) -> None:
    """A keyword-only ``model`` is read from keywords only, never from a positional argument at its index."""
    tracer, exporter = traced(semconv=("openinference",))

    @tracer.observe(span_type="llm")
    def varargs(*parts: str, model: str = "m") -> None:
        return None

    varargs("not-a-model", "x")
    varargs("p", model="real")
    models = [s.attributes.get("llm.model_name") for s in exporter.get_finished_spans()]  # type: ignore[union-attr]
    assert models == [None, "real"]
