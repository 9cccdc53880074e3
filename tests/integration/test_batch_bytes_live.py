"""Over the local server: a receiver with a request size limit costs one 413 split, not one per batch; every span
still arrives and the ledger balances."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer

pytestmark = pytest.mark.timeout(120)

RECEIVER_LIMIT = 150_000  # the receiver's body limit (as nginx's client_max_body_size)
CONFIGURED = 250_000  # max_export_batch_bytes: too large for this receiver
INPUT = "x" * 1000  # ~1.1 KB of encoded span each


def _produce(tracer: Tracer, first: int, n: int) -> None:
    for i in range(first, first + n):
        with tracer.span(f"s{i}") as span:
            span.set_attribute("judgment.input", INPUT)


def test_a_receiver_limit_is_learned_from_the_first_413(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], caplog: pytest.LogCaptureFixture
) -> None:
    """The first batch over the receiver's limit is refused and split; the bytes bound drops to half of it, so every
    later batch (five more waves of ~440 KB, which 250 KB batches would cut into two refused requests each) is cut
    under the limit: one 413 in all (two if a second old-size batch was cut before the first 413 came back), every
    span delivered, one warning naming the knob."""
    local_server.set_fault("traces", kind="body_limit", max_bytes=RECEIVER_LIMIT)
    tracer = make_tracer(
        gzip=False,  # the receiver limits wire bytes: uncompressed, they are the bytes the SDK bounds
        max_export_batch_bytes=CONFIGURED,
        schedule_delay=30.0,
        project_id="p",
    )
    total = 0
    with caplog.at_level(logging.WARNING, logger="judgeval_async._spans"):
        # ~330 KB: one batch cut at 250 KB (refused, halved, both halves accepted), the rest (~80 KB) at the flush.
        for wave in (300, 400, 400, 400, 400, 400):
            _produce(tracer, total, wave)
            total += wave
            assert tracer.force_flush(timeout=30.0)
    health = tracer.get_health_metrics()
    assert 1 <= local_server.request_count("traces", 413) <= 2
    assert health["span_batch_bytes_limit"] < RECEIVER_LIMIT
    assert local_server.request_count("traces", 200) >= 5 * 3  # later waves went out in several batches each
    assert len(local_server.spans) == total
    assert health["spans_exported"] == total
    assert health["spans_dropped"] == 0
    assert health["ledger_balanced"]
    warnings = [r.getMessage() for r in caplog.records if "max_export_batch_bytes" in r.getMessage()]
    assert len(warnings) == 1 and "HTTP 413" in warnings[0]


def test_without_a_limit_the_default_batch_carries_512_spans(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """Small spans on a healthy backend go out 512 to a request by default (the count bound, not the bytes)."""
    tracer = make_tracer(schedule_delay=30.0, project_id="p")
    for i in range(4096):
        with tracer.span(f"s{i}"):
            pass
    assert tracer.force_flush(timeout=30.0)
    assert len(local_server.spans) == 4096
    # 8 requests; <= 12: each stall of the producer past the idle rule's 0.2 s on a very loaded machine may send the
    # spans taken so far as one partial batch early.
    assert 8 <= local_server.request_count("traces") <= 12
    assert tracer.get_health_metrics()["span_batch_bytes_limit"] == 1_000_000
