"""The typed health snapshot behind ``tracer.get_health_metrics()``.

Cheap enough to call per request: it copies counters under each signal's lock (no loop round-trip) and sorts a
window of at most 2 048 overhead samples.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from ._metrics import LedgerSnapshot, Metrics

__all__ = ["HealthSnapshot", "take_snapshot"]

# Drops caused by the backend or the network (the seed's "spans_failed"), as opposed to local limits.
_FAILURE_REASONS = ("retries_exhausted", "unacknowledged", "non_retryable_status", "auth_error", "payload_too_large")


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    circuit_open: bool
    paused_for_seconds: float
    in_flight_requests: int
    retries: int
    errors: int
    bytes_sent: int
    last_error: str
    last_error_age_seconds: float | None
    state: str  # "up", "down" or "probing" (the delivery pipeline's endpoint health)
    concurrency: int  # the current AIMD limit


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """Everything judgeval_async knows about its own health at one moment. ``as_dict()`` is the public form."""

    spans: LedgerSnapshot
    evaluations: LedgerSnapshot
    tags: LedgerSnapshot
    api_errors: dict[str, dict[str, int]]  # endpoint -> status_code -> count
    endpoints: dict[str, EndpointHealth]
    metadata_entries: int
    metadata_evictions: dict[str, int]
    tag_buffer_size: int
    backlog_bytes: dict[str, int]
    spool_bytes: dict[str, int]
    spool_available: bool
    span_batch_bytes_limit: int
    values_degraded: dict[str, int]
    calls_ignored: dict[str, int]
    last_export_unix: float
    loop_lag_seconds: float
    loop_lag_max_seconds: float
    observe_overhead_p50_seconds: float
    observe_overhead_p95_seconds: float
    observe_overhead_samples: int
    uptime_seconds: float

    @property
    def ledger_balanced(self) -> bool:
        return self.spans.balanced and self.evaluations.balanced and self.tags.balanced

    def as_dict(self) -> dict[str, Any]:
        s, e, t = self.spans, self.evaluations, self.tags
        created = s.created
        return {
            # --- the seed's keys
            "spans_created": created,
            "spans_exported": s.delivered,
            "spans_dropped": s.dropped_total,
            "spans_failed": sum(s.dropped.get(r, 0) for r in _FAILURE_REASONS),
            "drop_rate": (s.dropped_total / created) if created else 0.0,
            "queue_utilization": (s.queued / s.capacity) if s.capacity else 0.0,
            "last_export_age_seconds": (
                max(0.0, time.time() - self.last_export_unix) if self.last_export_unix else None
            ),
            "evaluations_dropped": e.dropped_total,
            "api_errors": sum(sum(v.values()) for v in self.api_errors.values()),
            # --- the ledger, per signal
            "spans_dropped_by_reason": dict(s.dropped),
            "spans_queued": s.queued,
            "spans_in_flight": s.in_flight,
            "queue_size": s.queued,
            "queue_capacity": s.capacity,
            "oldest_queued_age_seconds": {
                "spans": s.oldest_queued_age,
                "evaluations": e.oldest_queued_age,
                "tags": t.oldest_queued_age,
            },
            "evaluations_enqueued": e.created,
            "evaluations_delivered": e.delivered,
            "evaluations_dropped_by_reason": dict(e.dropped),
            "evaluations_queued": e.queued,
            "evaluations_in_flight": e.in_flight,
            "eval_queue_size": e.queued,
            "eval_queue_capacity": e.capacity,
            "tags_buffered": t.created,
            "tags_flushed": t.delivered,
            "tags_dropped": t.dropped_total,
            "tags_dropped_by_reason": dict(t.dropped),
            "tags_queued": t.queued,
            "tags_in_flight": t.in_flight,
            "tag_buffer_size": self.tag_buffer_size,
            # --- delivery: memory backlog, disk spool (docs/reliability.md, "The delivery pipeline")
            "spans_spooled": s.spooled,
            "spans_replayed": s.replayed,
            "evaluations_spooled": e.spooled,
            "evaluations_replayed": e.replayed,
            "tags_spooled": t.spooled,
            "tags_replayed": t.replayed,
            "backlog_bytes": dict(self.backlog_bytes),
            "spool_bytes": dict(self.spool_bytes),
            "spool_available": self.spool_available,
            "span_batch_bytes_limit": self.span_batch_bytes_limit,
            # --- transport
            "api_errors_by_endpoint": {k: dict(v) for k, v in self.api_errors.items()},
            "retries": sum(ep.retries for ep in self.endpoints.values()),
            "in_flight_requests": sum(ep.in_flight_requests for ep in self.endpoints.values()),
            "endpoints": {k: asdict(v) for k, v in self.endpoints.items()},
            # --- memory, input quality, loop and caller cost
            "metadata_entries": self.metadata_entries,
            "metadata_evictions": dict(self.metadata_evictions),
            "values_degraded": dict(self.values_degraded),
            "calls_ignored": dict(self.calls_ignored),
            "loop_lag_seconds": self.loop_lag_seconds,
            "loop_lag_max_seconds": self.loop_lag_max_seconds,
            "observe_overhead_p50_seconds": self.observe_overhead_p50_seconds,
            "observe_overhead_p95_seconds": self.observe_overhead_p95_seconds,
            "observe_overhead_samples": self.observe_overhead_samples,
            "uptime_seconds": self.uptime_seconds,
            "ledger_balanced": self.ledger_balanced,
        }


def take_snapshot(metrics: Metrics, *, metadata_entries: int, tag_buffer_size: int) -> HealthSnapshot:
    api_errors: dict[str, dict[str, int]] = {}
    for (endpoint, status), n in metrics.api_errors.items():
        api_errors.setdefault(endpoint, {})[status] = n
    retries = {labels[0]: n for labels, n in metrics.retries.items()}
    now = time.monotonic()
    endpoints = {
        name: EndpointHealth(
            circuit_open=st.circuit_open,
            paused_for_seconds=max(0.0, st.paused_until - now),
            in_flight_requests=st.in_flight,
            retries=retries.get(name, 0),
            errors=sum(api_errors.get(name, {}).values()),
            bytes_sent=st.bytes_sent,
            last_error=st.last_error,
            last_error_age_seconds=max(0.0, time.time() - st.last_error_unix) if st.last_error_unix else None,
            state=st.state,
            concurrency=st.concurrency,
        )
        for name, st in list(metrics.endpoints.items())
    }
    oh = metrics.observe_overhead
    return HealthSnapshot(
        spans=metrics.spans.snapshot(),
        evaluations=metrics.evaluations.snapshot(),
        tags=metrics.tags.snapshot(),
        api_errors=api_errors,
        endpoints=endpoints,
        metadata_entries=metadata_entries,
        metadata_evictions={labels[0]: n for labels, n in metrics.metadata_evictions.items()},
        tag_buffer_size=tag_buffer_size,
        backlog_bytes=dict(metrics.backlog_bytes),
        spool_bytes=dict(metrics.spool_bytes),
        spool_available=metrics.spool_available,
        span_batch_bytes_limit=metrics.span_batch_bytes_limit,
        values_degraded={labels[0]: n for labels, n in metrics.values_degraded.items()},
        calls_ignored={":".join(labels): n for labels, n in metrics.calls_ignored.items()},
        last_export_unix=metrics.last_export_unix,
        loop_lag_seconds=metrics.loop_lag,
        loop_lag_max_seconds=metrics.loop_lag_max,
        observe_overhead_p50_seconds=oh.quantile(0.5),
        observe_overhead_p95_seconds=oh.quantile(0.95),
        observe_overhead_samples=oh.count,
        uptime_seconds=now - metrics.started_monotonic,
    )
