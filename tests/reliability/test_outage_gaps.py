"""Outage gaps of issue 10: evaluations held while the project is unresolved; one spool budget for all signals."""

from __future__ import annotations

import os
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
    # Wait for the evaluations' fate while the project cannot be resolved: held by their lane (in memory or in the
    # spool) now; the old code dropped them before they reached the lane. Several resolve attempts fail first.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = tracer.get_health_metrics()
        held = health["backlog_bytes"].get("evaluations", 0) + health["spool_bytes"].get("evaluations", 0)
        if (held and health["api_errors"] >= 3) or health["evaluations_dropped"]:
            break
        time.sleep(0.05)
    assert health["evaluations_dropped"] == 0, health["evaluations_dropped_by_reason"]
    assert held > 0, health
    local_server.clear_faults()
    assert tracer.force_flush(timeout=60.0)
    health = tracer.get_health_metrics()
    assert health["evaluations_dropped"] == 0, health["evaluations_dropped_by_reason"]
    assert health["evaluations_delivered"] == 5
    assert health["ledger_balanced"]
    runs = local_server.raw_evals
    assert len(runs) == 5
    assert all(r.project_id and r.payload["project_id"] == r.project_id for r in runs)


@pytest.mark.timeout(120)
def test_spool_max_bytes_bounds_all_signals_together(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], tmp_path: Path
) -> None:
    """With the backend down, spans fill the spool to ``spool_max_bytes``; evaluations and tags then stay in
    memory instead of adding their own budget on top (the sum on disk stays within the one limit), and everything
    is still delivered after recovery."""
    budget = 48 << 10
    local_server.set_fault(None, kind="refuse")
    tracer = make_tracer(
        project_id="proj-budget", spool_dir=str(tmp_path), spool_max_bytes=budget, max_export_batch_size=20
    )
    for i in range(2000):
        with tracer.span(f"s{i}") as span:
            span.set_attribute("pad", os.urandom(48).hex())  # incompressible: the spool fills
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and tracer.get_health_metrics()["spool_bytes"]["spans"] < budget - (4 << 10):
        time.sleep(0.05)
    for i in range(40):
        with tracer.span(f"e{i}"):
            tracer.tag(f"t{i}")
            tracer.async_evaluate("faithfulness", {"input": "q" * 512, "actual_output": "a"})
    assert tracer.force_flush(timeout=1.0) is False  # the backend is down: nothing settles
    # The tag lane has its payload (in memory when the spool refuses it, on disk if it took it past the budget).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = tracer.get_health_metrics()
        if health["backlog_bytes"]["tags"] + health["spool_bytes"]["tags"] > 0:
            break
        time.sleep(0.05)
    health = tracer.get_health_metrics()
    on_disk = sum(health["spool_bytes"].values())
    assert health["spool_bytes"]["spans"] >= budget - (4 << 10), health["spool_bytes"]
    assert on_disk <= budget, health["spool_bytes"]
    local_server.clear_faults()
    assert tracer.force_flush(timeout=60.0)
    health = tracer.get_health_metrics()
    assert health["ledger_balanced"]
    assert health["spans_dropped"] == 0 and health["evaluations_dropped"] == 0 and health["tags_dropped"] == 0
    assert health["evaluations_delivered"] == 40 and health["tags_flushed"] == 40


@pytest.mark.timeout(120)
def test_evaluations_behind_an_unresolved_project_are_packed_then_sent_one_by_one(
    make_tracer: Callable[..., Tracer], tmp_path: Path
) -> None:
    """Backend down from start: the runs of one look are held as one packed payload (a fraction of the backlog
    entries and spool records), and once the project resolves each run is posted alone, exactly once, with the
    resolved id and a key derived from its packed payload's."""
    with LocalJudgmentServer(headers_kept=1000) as server:
        server.set_fault(None, kind="refuse")
        tracer = make_tracer(
            server, project_name="packed", project_resolve_wait=0.2, eval_batch_size=50, spool_dir=str(tmp_path)
        )
        with tracer.span("root"):
            for i in range(100):
                tracer.async_evaluate("faithfulness", {"input": f"q{i}", "actual_output": "a"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # every run taken off the queue, the project still unresolved
            health = tracer.get_health_metrics()
            if health["evaluations_queued"] == 0 and health["api_errors"] >= 3:
                break
            time.sleep(0.05)
        assert health["evaluations_queued"] == 0 and health["evaluations_dropped"] == 0, health
        server.clear_faults()
        assert tracer.force_flush(timeout=60.0)
        health = tracer.get_health_metrics()
        assert health["evaluations_delivered"] == 100 and health["evaluations_dropped"] == 0
        assert health["ledger_balanced"]
        runs = server.raw_evals
        assert sorted(r.payload["examples"][0]["input"] for r in runs) == sorted(f"q{i}" for i in range(100))
        assert all(r.project_id and r.payload["project_id"] == r.project_id for r in runs)
        keys = [h["idempotency-key"] for h in server.headers_seen("evals")]
        assert len(set(keys)) == 100
        packed = {k.rsplit("-", 1)[0] for k in keys}
        # One packed payload per look (0.05 s each, 50 runs at most): 100 calls a few ms apart take a handful.
        assert len(packed) <= 20, len(packed)


@pytest.mark.timeout(120)
def test_packed_evaluations_persisted_at_exit_are_replayed_by_the_next_tracer(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], tmp_path: Path
) -> None:
    """A packed payload survives exit in the spool (backend down, project never resolved); the next tracer on that
    spool, with the backend up, unpacks it and delivers every run once."""
    options = {"project_name": "packed-exit", "project_resolve_wait": 0.2, "spool_dir": str(tmp_path)}
    local_server.set_fault(None, kind="refuse")
    first = make_tracer(**options)
    with first.span("root"):
        for i in range(30):
            first.async_evaluate("faithfulness", {"input": f"q{i}", "actual_output": "a"})
    first.shutdown(timeout=3.0)
    before = first.get_health_metrics()
    assert before["evaluations_spooled"] == 30 and before["evaluations_dropped"] == 0, before
    local_server.clear_faults()
    second = make_tracer(**options)
    assert second.force_flush(timeout=60.0)
    after = second.get_health_metrics()
    assert after["evaluations_replayed"] == 30 and after["evaluations_delivered"] == 30, after
    assert after["ledger_balanced"]
    assert sorted(r.payload["examples"][0]["input"] for r in local_server.raw_evals) == sorted(
        f"q{i}" for i in range(30)
    )
