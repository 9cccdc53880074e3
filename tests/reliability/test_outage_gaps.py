"""Outage gaps of issue 10: evaluations held while the project is unresolved; one spool budget for all signals."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer


@pytest.mark.timeout(120)
def test_evaluations_wait_for_a_project_that_cannot_be_resolved_yet(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """Backend down at start (restart during an outage): the project name cannot be resolved, yet no evaluation
    is dropped; they are delivered with the resolved id once the backend is back."""
    local_server.set_fault(None, kind="refuse")
    tracer = make_tracer(project_resolve_wait=0.2)
    for i in range(5):
        with tracer.span(f"e{i}"):
            tracer.async_evaluate("faithfulness", {"input": f"q{i}", "actual_output": "a"})
    deadline = time.monotonic() + 30
    # Several resolve attempts fail (each gives up after project_resolve_wait) before the backend comes back.
    while time.monotonic() < deadline and tracer.get_health_metrics()["api_errors"] < 3:
        time.sleep(0.05)
    time.sleep(0.5)
    health = tracer.get_health_metrics()
    assert health["evaluations_dropped"] == 0, health["evaluations_dropped_by_reason"]
    local_server.clear_faults()
    assert tracer.force_flush(timeout=60.0)
    health = tracer.get_health_metrics()
    assert health["evaluations_dropped"] == 0, health["evaluations_dropped_by_reason"]
    assert health["evaluations_delivered"] == 5
    assert health["ledger_balanced"]
    runs = local_server.raw_evals
    assert len(runs) == 5
    assert all(r.project_id and r.payload["project_id"] == r.project_id for r in runs)
