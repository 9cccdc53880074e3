"""Delivery semantics over real sockets: the local server dedupes by Idempotency-Key, the client counts a batch
sent but never answered as ``unacknowledged``, and a huge Retry-After is capped by ``max_retry_after``."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer

pytestmark = pytest.mark.timeout(60)

EVALS = "/v1/projects/p1/eval-queue/examples"


def _run(name: str = "helpfulness") -> dict[str, object]:
    return {
        "eval_name": name,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "trace_span_id": "00f067aa0ba902b7",
        "examples": [{"input": "q", "actual_output": "a"}],
    }


def _post(srv: LocalJudgmentServer, key: str | None, run: dict[str, object] | None = None) -> httpx.Response:
    headers = dict(srv.auth_headers())
    if key is not None:
        headers["Idempotency-Key"] = key
    with httpx.Client(base_url=srv.url, timeout=5.0) as c:
        return c.post(EVALS, json=run or _run(), headers=headers)


# ------------------------------------------------------------------ the server's side
def test_repeated_idempotency_key_is_acknowledged_but_recorded_once(local_server: LocalJudgmentServer) -> None:
    """A redelivery under the same key gets the same 200 answer, is not recorded again, and is counted."""
    first = _post(local_server, "k-1")
    again = _post(local_server, "k-1")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert len(local_server.raw_evals) == 1
    assert local_server.duplicates("evals") == 1
    assert local_server.duplicates() == 1
    assert local_server.stats()["duplicates"] == {"evals": 1}
    assert local_server.request_count("evals", 200) == 2


def test_distinct_or_missing_keys_are_all_recorded(local_server: LocalJudgmentServer) -> None:
    """Different keys, or no key at all, are separate deliveries: every one is recorded."""
    _post(local_server, "k-1")
    _post(local_server, "k-2")
    _post(local_server, None)
    _post(local_server, None)
    assert len(local_server.raw_evals) == 4
    assert local_server.duplicates() == 0


def test_a_refused_request_is_not_remembered(local_server: LocalJudgmentServer) -> None:
    """Only accepted requests are remembered: a key first refused (422) is judged afresh when resent."""
    assert _post(local_server, "k-1", {"eval_name": ""}).status_code == 422
    assert _post(local_server, "k-1").status_code == 200
    assert len(local_server.raw_evals) == 1
    assert local_server.duplicates() == 0


def test_reset_forgets_keys_and_dedupe_can_be_disabled(local_server_factory) -> None:
    """reset_records forgets the keys; a server built with idempotency=False records every delivery."""
    srv = local_server_factory()
    _post(srv, "k-1")
    srv.reset_records()
    _post(srv, "k-1")
    assert len(srv.raw_evals) == 1 and srv.duplicates() == 0
    plain = local_server_factory(idempotency=False)
    _post(plain, "k-1")
    _post(plain, "k-1")
    assert len(plain.raw_evals) == 2 and plain.duplicates() == 0


def test_control_stats_report_duplicates(local_server: LocalJudgmentServer) -> None:
    """GET /_control/stats carries the duplicate counts, for a server in another process."""
    _post(local_server, "k-1")
    _post(local_server, "k-1")
    with httpx.Client(base_url=local_server.url, timeout=5.0) as c:
        assert c.get("/_control/stats").json()["duplicates"] == {"evals": 1}


# ------------------------------------------------------------------ the client's side
@pytest.mark.slow
def test_batch_answered_after_the_read_timeout_is_recorded_once_and_held_until_acknowledged(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """A backend that records each attempt but answers after the read timeout keeps one copy (every attempt carries
    the payload's one key); the client holds the batch, not dropping it, until an answer arrives in time."""
    spans = 5
    # Every attempt is read in full, then answered 2 s later, long after the client's 0.3 s read timeout.
    local_server.set_fault("traces", kind="latency", seconds=2.0)
    tracer = make_tracer(project_id="p1", read_timeout=0.3, retry_attempts=3, schedule_delay=30.0)
    for i in range(spans):
        with tracer.span(f"s{i}"):
            pass
    assert not tracer.force_flush(timeout=3.0)  # every attempt times out: held, not dropped
    health = tracer.get_health_metrics()
    assert health["spans_dropped_by_reason"] == {}
    assert health["spans_exported"] == 0
    assert health["ledger_balanced"]
    # The server processes the late requests: the first is recorded, the redeliveries (same key) are not.
    assert local_server.wait_for(requests={"traces": 3}, timeout=20.0)
    assert len(local_server.raw_spans) == spans
    assert local_server.duplicates("traces") >= 2
    local_server.clear_faults()
    assert tracer.force_flush(timeout=20.0)
    assert tracer.get_health_metrics()["spans_exported"] == spans
    assert len(local_server.raw_spans) == spans  # the acknowledged resend was a duplicate too


@pytest.mark.slow
def test_an_hour_long_retry_after_is_capped_and_items_are_delivered(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], caplog: pytest.LogCaptureFixture
) -> None:
    """Retry-After: 3600 pauses each endpoint for max_retry_after only; once healthy, items are delivered."""
    for endpoint in ("traces", "evals"):
        local_server.set_fault(endpoint, kind="status", status=429, retry_after=3600, recover_after_requests=2)
    # The evaluation by the API transport: the evals endpoint's own 429s are half of what is checked.
    tracer = make_tracer(project_id="p1", max_retry_after=0.5, export_timeout=15.0, eval_transport="api")
    with caplog.at_level(logging.WARNING, logger="judgeval_async"):
        with tracer.span("during-429"):
            tracer.async_evaluate("faithfulness", {"input": "q", "actual_output": "a"})
        assert tracer.force_flush(timeout=20.0)
        with tracer.span("after"):
            pass
        assert tracer.force_flush(timeout=20.0)
    health = tracer.get_health_metrics()
    assert health["spans_exported"] == 2 and health["spans_dropped_by_reason"] == {}
    assert health["evaluations_delivered"] == 1 and health["evaluations_dropped_by_reason"] == {}
    assert health["ledger_balanced"]
    assert {s.name for s in local_server.spans.values()} == {"during-429", "after"}
    capped = [r.getMessage() for r in caplog.records if "max_retry_after" in r.getMessage()]
    assert len(capped) == 2  # once per endpoint, not once per 429
