"""The request thread's share of tracing: the direct paths of observe, tag and async_evaluate (issue 12, web p99).

Each direct path must write exactly what the general path writes, and fall back to it for anything else. The cost
itself is pinned without a clock: the number of Python and C calls one traced call makes (a profiler hook counts
them), which a loaded machine cannot change.
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry.context.context import Context, _RuntimeContext
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

from judgeval_async import Tracer, _provider, _tracer
from judgeval_async._serialize import SerializeLimits, args_json, json_text, safe_json
from judgeval_async._span import random_uuid
from judgeval_async.testing import LocalJudgmentServer

LIMITS = SerializeLimits()


def _calls(fn: Callable[[], object]) -> int:
    """How many Python functions and C functions ``fn()`` calls, its own call included."""
    count = 0

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


@pytest.fixture
def warm_tracer(make_tracer: Callable[..., Tracer]) -> Tracer:
    """A tracer whose project id is resolved (evaluations ride on spans) and whose loop thread runs."""
    tracer = make_tracer(schedule_delay=5.0, tag_flush_interval=5.0)  # the defaults: the caller's path as shipped
    with tracer.span("warm-up"):
        tracer.async_evaluate("faithfulness", {"input": "q"})
    assert tracer.force_flush(timeout=30)
    return tracer


def test_observe_tag_and_evaluate_stay_within_their_call_budgets(warm_tracer: Tracer) -> None:
    """A sync observed call with a str argument, tag(["web"]) and async_evaluate on a small example each make at most
    a fixed number of calls (before this work: 82, 44 and 99)."""
    tracer = warm_tracer

    @tracer.observe
    def retrieve(q: str) -> int:
        return 7

    example = {"input": "what is the capital of France?", "actual_output": "Paris"}
    retrieve("warm")  # the first call may create per-function state
    observe = min(_calls(lambda: retrieve("q")) for _ in range(3))
    with tracer.span("h"):
        tag = _calls(lambda: tracer.tag(["web"]))
    with tracer.span("h"):
        evaluate = _calls(lambda: tracer.async_evaluate("faithfulness", example))
    assert observe <= 72, observe
    assert tag <= 36, tag
    assert evaluate <= 70, evaluate
    assert tracer.force_flush(timeout=30)
    assert tracer.get_health_metrics()["evaluations_dropped"] == 0


def _random_value(rng: random.Random) -> object:
    return rng.choice(
        [
            "abc",
            'quo"te\\',
            "",
            "é",
            "\ud800",
            "x" * rng.choice([10, 16_000, 20_000, 40_000]),
            0,
            -3,
            2**63 - 1,
            -(2**63),
            2**63,
            1.5,
            float("nan"),
            float("inf"),
            None,
            True,
            False,
            [1],
            {"a": 1},
            b"b",
        ]
    )


def test_args_json_writes_what_safe_json_writes_for_the_bound_arguments() -> None:
    """For random positional arguments (with and without a skipped ``self``), args_json is either None (the general
    path) or exactly safe_json of the dict observe would have bound."""
    rng = random.Random(12)
    names = ("self", "query", "n", "x")
    keys = tuple(json_text(name) + ":" for name in names)
    direct = 0
    for _ in range(5000):
        args = tuple(_random_value(rng) for _ in range(rng.randint(0, len(names))))
        start = rng.randint(0, 1)
        bound = dict(zip(names, args, strict=False))
        if start and bound:
            bound.pop(names[0])
        text = args_json(keys, args, start, LIMITS.max_length)
        if text is not None:
            direct += 1
            assert text == safe_json(bound, LIMITS), (args, start)
    assert direct > 500  # the direct path is really exercised


def test_observed_input_and_output_are_unchanged_by_the_direct_path(
    warm_tracer: Tracer, local_server: LocalJudgmentServer
) -> None:
    """A call with str/int arguments and a str result records the same JSON as the general path would."""
    tracer = warm_tracer

    @tracer.observe
    def answer(self_like: object, query: str, n: int, flag: bool = False) -> str:
        return 'Paris "city"'

    # "self_like" is not named self: nothing is skipped. A keyword argument takes the general path; both compared.
    with tracer.span("outer"):
        answer("a", "what?", 3)
        answer("a", "what?", 3, flag=True)
    assert tracer.force_flush(timeout=30)
    server_spans = [s for s in local_server.spans.values() if s.name == "answer"]
    inputs = sorted(s.attributes["judgment.input"] for s in server_spans)
    assert inputs == sorted(
        [
            safe_json({"self_like": "a", "query": "what?", "n": 3}, LIMITS),
            safe_json({"self_like": "a", "query": "what?", "n": 3, "flag": True}, LIMITS),
        ]
    )
    for span in server_spans:
        assert span.attributes["judgment.output"] == span.attributes["output.value"] == json.dumps('Paris "city"')
        assert span.attributes["input.value"] == span.attributes["judgment.input"]


def test_a_plain_scorer_is_built_once_and_a_degraded_one_every_time(
    warm_tracer: Tracer, local_server: LocalJudgmentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """async_evaluate("faithfulness", ...) builds its scorer configs once per score type; a name that had to be cut
    is rebuilt (and counted) on every call; every evaluation still arrives with judgeval's judges."""
    tracer = warm_tracer
    built: list[object] = []
    real = _tracer.scorer_configs

    def counting(scorer: Any, *args: Any) -> Any:
        built.append(scorer)
        return real(scorer, *args)

    monkeypatch.setattr(_tracer, "scorer_configs", counting)
    long_name = "s" * 300  # past the 256-character cap: degraded ("truncated")
    for _ in range(3):
        with tracer.span("e"):
            tracer.async_evaluate("relevance", {"input": "q"})
            tracer.async_evaluate(long_name, {"input": "q"})
    assert built.count("relevance") == 1
    assert built.count(long_name) == 3
    assert tracer.get_health_metrics()["values_degraded"].get("truncated", 0) >= 3
    assert tracer.force_flush(timeout=30)
    entries = local_server.span_evals
    judges = [e["judges"] for e in entries if e["examples"][0]["input"] == "q"]
    assert judges.count([{"name": "relevance"}]) == 3
    assert judges.count([{"name": "s" * 256}]) == 3


def test_example_ids_are_version_4_uuids() -> None:
    """The carried example_id has str(uuid.uuid4())'s shape: version 4, RFC 4122 variant, distinct."""
    seen = set()
    for _ in range(2000):
        text = random_uuid()
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
        seen.add(text)
    assert len(seen) == 2000


class _ThreadLocalContext(_RuntimeContext):
    """A runtime context that is not the stock contextvars one (what OTEL_PYTHON_CONTEXT could select)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def attach(self, context: Context) -> object:
        previous = getattr(self._local, "current", Context())
        self._local.current = context
        return previous

    def get_current(self) -> Context:
        return getattr(self._local, "current", Context())  # type: ignore[no-any-return]

    def detach(self, token: object) -> None:
        self._local.current = token


def _nest_tag_and_check(tracer: Tracer, local_server: LocalJudgmentServer) -> None:
    """Two nested observed calls, the inner one tagging: they nest, the current span is restored, the tag lands."""

    @tracer.observe
    def inner(q: str) -> str:
        tracer.tag(["inner-tag"])
        return q

    @tracer.observe
    def outer(q: str) -> str:
        return inner(q)

    outer("x")
    assert _provider.current_span() is None  # restored
    assert tracer.force_flush(timeout=30)
    spans = {s.name: s for s in local_server.spans.values()}
    assert spans["inner"].parent_span_id == spans["outer"].span_id
    assert "inner-tag" in local_server.tags.get(spans["inner"].trace_id, set())
    assert tracer.get_health_metrics()["calls_ignored"] == {}


def test_another_runtime_context_still_nests_and_restores(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a runtime context other than contextvars, observe's spans nest, the current span is restored after each
    call, and tag()/async_evaluate find the current span (the direct context reads fall back to the API)."""
    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", _ThreadLocalContext())
    tracer = make_tracer()

    _nest_tag_and_check(tracer, local_server)


def test_a_token_from_another_context_is_still_logged_by_opentelemetry(caplog: pytest.LogCaptureFixture) -> None:
    """detach() of a token the contextvar refuses goes through OpenTelemetry's detach, which logs it, as before."""
    tokens: list[Any] = []
    contextvars.copy_context().run(lambda: tokens.append(otel_context.attach(Context())))
    with caplog.at_level(logging.ERROR, logger="opentelemetry.context"):
        _provider.detach(tokens[0])
    assert "Failed to detach context" in caplog.text


def test_the_direct_context_reads_are_in_use_and_can_be_turned_off(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """This OpenTelemetry has the private names the direct reads rely on (so they are in use); with them reported
    missing, every call takes the API's path and spans still nest, restore and carry tags."""
    assert _provider._STOCK_RUNTIME is ContextVarsRuntimeContext
    monkeypatch.setattr(_provider, "_STOCK_RUNTIME", _provider._NoRuntime)
    tracer = make_tracer()

    _nest_tag_and_check(tracer, local_server)
