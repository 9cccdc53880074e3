"""eval_transport="span" against the local server: evaluations ride on their spans and arrive with them."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer

pytestmark = pytest.mark.timeout(120)


def _warm(tracer: Tracer) -> None:
    # The span transport needs the project id: one flushed span resolves it (until then the API is used).
    with tracer.span("warm-up"):
        pass
    assert tracer.force_flush(timeout=30)


@pytest.mark.slow
def test_500_evaluations_behind_2s_latency_arrive_on_their_spans(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """500 evaluations behind a 2 s-latency backend all arrive on their spans; no eval POST is made."""
    tracer = make_tracer(eval_transport="span")
    _warm(tracer)
    local_server.set_fault(kind="latency", seconds=2.0)
    for i in range(500):
        with tracer.span(f"answer-{i}"):
            tracer.async_evaluate("faithfulness", {"input": f"q{i}", "actual_output": f"a{i}"})
    assert tracer.force_flush(timeout=60)
    carried = local_server.span_evals
    assert len(carried) == 500
    assert {e["examples"][0]["input"] for e in carried} == {f"q{i}" for i in range(500)}
    # Each evaluation is on the span it names.
    for (trace_id, span_id), span in local_server.spans.items():
        if span.name.startswith("answer-"):
            (entry,) = json.loads(span.attributes["judgment.pending_trace_eval"])
            assert (entry["examples"][0]["trace_id"], entry["examples"][0]["span_id"]) == (trace_id, span_id)
    assert local_server.request_count("evals") == 0
    health = tracer.get_health_metrics()
    assert health["evaluations_delivered"] == 500 and health["evaluations_dropped"] == 0


def test_several_evaluations_in_one_span_and_the_api_transport(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """Two calls in one span give one two-entry list; eval_transport="api" still POSTs and sets no attribute."""
    tracer = make_tracer(eval_transport="span")
    _warm(tracer)
    with tracer.span("two"):
        tracer.async_evaluate("a", {"input": "1"})
        tracer.async_evaluate("b", {"input": "2"}, eval_name="named")
    assert tracer.force_flush(timeout=30)
    entries = local_server.span_evals
    assert [e["eval_name"] for e in entries] == ["async_evaluate_a_0", "named"]
    assert all(e["project_id"] == entries[0]["project_id"] and e["project_id"] for e in entries)

    api = make_tracer(eval_transport="api")
    with api.span("api"):
        api.async_evaluate("a", {"input": "3"})
    assert api.force_flush(timeout=30)
    assert len(local_server.evals) == 1
    assert len(local_server.span_evals) == 2


def test_by_default_evaluations_ride_on_their_spans_to_judgment(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """The default ("auto") with spans going to the Judgment API carries evaluations on their spans: no eval POST."""
    tracer = make_tracer()
    _warm(tracer)
    for i in range(5):
        with tracer.span(f"answer-{i}"):
            tracer.async_evaluate("faithfulness", {"input": f"q{i}"})
    assert tracer.force_flush(timeout=30)
    assert sorted(e["examples"][0]["input"] for e in local_server.span_evals) == [f"q{i}" for i in range(5)]
    assert local_server.request_count("evals") == 0
    assert tracer.get_health_metrics()["evaluations_delivered"] == 5


def test_by_default_a_third_party_otlp_endpoint_sends_evaluations_by_the_api(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """The default with spans going to a third party (which would ignore a carried evaluation) POSTs each one."""
    third_party = LocalJudgmentServer(require_project_id=False).start()
    try:
        tracer = make_tracer(
            otlp_endpoint=f"{third_party.url}/otel/v1/traces",
            otlp_headers={"authorization": f"Bearer {third_party.api_key}", "x-organization-id": third_party.org_id},
        )
        for i in range(3):
            with tracer.span(f"answer-{i}"):
                tracer.async_evaluate("faithfulness", {"input": f"q{i}"})
        assert tracer.force_flush(timeout=30)
        assert len(local_server.evals) == 3
        assert len(third_party.spans) == 3
        assert third_party.span_evals == [] and local_server.span_evals == []
        assert tracer.get_health_metrics()["evaluations_delivered"] == 3
    finally:
        third_party.stop()


def test_before_the_project_is_resolved_the_api_carries_it(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """The very first evaluation (project id unknown yet) falls back to the API transport: delivered, not lost."""
    tracer = make_tracer(eval_transport="span")
    with tracer.span("first"):
        tracer.async_evaluate("a", {"input": "1"})
    assert tracer.force_flush(timeout=30)
    assert len(local_server.evals) + len(local_server.span_evals) == 1
    health = tracer.get_health_metrics()
    assert health["evaluations_delivered"] == 1


def test_past_the_per_span_cap_the_api_carries_the_rest(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """101 evaluations in one span: 100 ride on the span, the 101st is POSTed; all 101 counted delivered."""
    tracer = make_tracer(eval_transport="span")
    _warm(tracer)
    with tracer.span("busy"):
        for i in range(101):
            tracer.async_evaluate("a", {"input": str(i)})
    assert tracer.force_flush(timeout=30)
    assert len(local_server.span_evals) == 100
    assert len(local_server.evals) == 1
    assert tracer.get_health_metrics()["evaluations_delivered"] == 101
