"""Write the Grafana dashboard for judgeval_async: ``dashboards/judgeval_sdk.json``.

The JSON is generated so that a change to a panel is a small, reviewable diff here rather than in
hundreds of lines of Grafana JSON. Output is deterministic (sorted keys, fixed ids), and
``tests/monitoring`` fails when the committed JSON differs from what this script writes.

Usage: ``python monitoring/grafana/generate_dashboard.py`` (from any directory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "judgeval_sdk.json"

# Must match the uid in provisioning/datasources/prometheus.yml.
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

# Every query is narrowed by the dashboard's job/instance variables.
SEL = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"

Panel = dict[str, Any]


def _steps(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def _panel(
    kind: str,
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    thresholds: dict[str, Any] | None = None,
    minimum: float | None = 0,
    maximum: float | None = None,
    stack: bool = False,
    overrides: list[dict[str, Any]] | None = None,
) -> Panel:
    """One panel without id/gridPos (the layout assigns those)."""
    defaults: dict[str, Any] = {
        "unit": unit,
        "thresholds": thresholds or _steps(("green", None)),
        "color": {"mode": "thresholds" if kind == "gauge" else "palette-classic"},
    }
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            # Draw the thresholds as dashed lines so the alert levels are visible on the graph.
            "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
        }
    options: dict[str, Any]
    if kind == "gauge":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showThresholdLabels": False,
            "showThresholdMarkers": True,
        }
    elif kind == "state-timeline":
        options = {"mergeValues": True, "showValue": "never", "rowHeight": 0.9}
        defaults["custom"] = {"fillOpacity": 70, "lineWidth": 0}
        defaults["color"] = {"mode": "thresholds"}
    else:
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    refs = "ABCDEFGH"
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options,
        "targets": [_target(e, legend, refs[i]) for i, (e, legend) in enumerate(targets)],
    }


def _row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def _panels() -> list[tuple[Panel, int, int]]:
    """Panels in reading order, each with its (width, height) on the 24-column grid."""
    created = f"rate(judgeval_spans_created_total{{{SEL}}}[{RATE}])"
    dropped = f"rate(judgeval_spans_dropped_total{{{SEL}}}[5m])"
    created_5m = f"sum(rate(judgeval_spans_created_total{{{SEL}}}[5m]))"

    def quantile(q: float, metric: str, by: str = "le", scale: str = "", sel: str = "") -> str:
        return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{SEL}{sel}}}[{RATE}]))){scale}"

    export = "judgeval_export_duration_seconds"
    return [
        (_row("Spans"), 24, 1),
        (
            _panel(
                "timeseries",
                "Span throughput",
                "Spans handed to the export pipeline vs accepted by the backend, per second.",
                [
                    (f"sum({created})", "created"),
                    (
                        f"sum(rate(judgeval_spans_exported_total{{{SEL}}}[{RATE}]))",
                        "exported",
                    ),
                ],
                unit="reqps",
                thresholds=_steps(("green", None), ("yellow", 5000), ("red", 10000)),
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "Span drop rate",
                "Dropped / created spans over 5m, all reasons. Empty while no spans are "
                "created (no division by zero). Alert JudgevalHighDropRate: > 5% for 2m.",
                [
                    (
                        f"(sum({dropped}) or vector(0)) / {created_5m} and {created_5m} > 0",
                        "drop rate",
                    )
                ],
                unit="percentunit",
                thresholds=_steps(("green", None), ("yellow", 0.01), ("red", 0.05)),
            ),
            12,
            8,
        ),
        (
            _panel(
                "gauge",
                "Span queue utilisation",
                "Fill level of the span queue (highest instance). At 100% new spans are "
                "dropped with reason queue_full. Alert JudgevalQueueSaturated: median of 2m > 90% for 1m.",
                [(f'max(judgeval_queue_utilization_percent{{{SEL}, queue="spans"}})', "utilisation")],
                unit="percent",
                maximum=100,
                thresholds=_steps(("green", None), ("yellow", 80), ("red", 90)),
            ),
            6,
            8,
        ),
        (
            _panel(
                "gauge",
                "Evaluation queue utilisation",
                "Evaluation runs waiting as a share of the evaluation queue's capacity, both summed over "
                "instances (and worker processes), so any capacity works. At 100% evaluations are dropped. "
                "Alert JudgevalEvaluationQueueFull: median of 2m > 90% for 2m (per instance).",
                [
                    (
                        f'100 * sum(judgeval_queue_size{{{SEL}, queue="evaluations"}})'
                        f' / sum(judgeval_queue_capacity{{{SEL}, queue="evaluations"}} > 0)',
                        "utilisation",
                    )
                ],
                unit="percent",
                maximum=100,
                thresholds=_steps(("green", None), ("yellow", 80), ("red", 90)),
            ),
            6,
            8,
        ),
        (
            _panel(
                "timeseries",
                "Export latency",
                "batch: time to export one batch of spans the backend accepted, retries included; it "
                "measures successes only, so it goes empty during an outage. attempt: one request to the "
                "traces endpoint, failures and timeouts included; it keeps reporting through an outage.",
                [
                    (quantile(0.5, export), "batch p50 (accepted only)"),
                    (quantile(0.95, export), "batch p95 (accepted only)"),
                    (quantile(0.99, export), "batch p99 (accepted only)"),
                    (
                        quantile(0.95, "judgeval_api_request_duration_seconds", sel=', endpoint="traces"'),
                        "attempt p95 (incl. failures)",
                    ),
                ],
                unit="s",
                thresholds=_steps(("green", None), ("red", 10)),
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "Drops by reason",
                "Spans dropped per second, by reason. queue_full means load; auth_error, "
                "non_retryable_status, payload_too_large and serialization_error mean a "
                "misconfiguration or a bug.",
                [
                    (
                        f"sum by (reason) (rate(judgeval_spans_dropped_total{{{SEL}}}[{RATE}]))",
                        "{{reason}}",
                    )
                ],
                unit="reqps",
                stack=True,
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "Observe overhead (p95)",
                "Time @observe adds to the caller's thread, 95th percentile. "
                "Alert JudgevalHighObserveOverhead: > 1ms for 5m.",
                [
                    (
                        quantile(0.95, "judgeval_observe_overhead_seconds", scale=" * 1000"),
                        "p95",
                    )
                ],
                unit="ms",
                thresholds=_steps(("green", None), ("red", 1)),
            ),
            12,
            8,
        ),
        (_row("Judgment API"), 24, 1),
        (
            _panel(
                "timeseries",
                "API error rate",
                "Failed requests per minute by endpoint. "
                "Alert JudgevalHighAPIErrorRate: > 10/min on one endpoint for 5m.",
                [
                    (
                        f"sum by (endpoint) (rate(judgeval_api_errors_total{{{SEL}}}[{RATE}])) * 60",
                        "{{endpoint}}",
                    )
                ],
                unit="short",
                thresholds=_steps(("green", None), ("red", 10)),
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "API errors by status code",
                "Failed requests per minute by endpoint and status code (timeout and network are transport failures).",
                [
                    (
                        f"sum by (endpoint, status_code) (rate(judgeval_api_errors_total{{{SEL}}}[{RATE}])) * 60",
                        "{{endpoint}} {{status_code}}",
                    )
                ],
                unit="short",
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "Retries by endpoint",
                "Requests retried per second, by endpoint.",
                [
                    (
                        f"sum by (endpoint) (rate(judgeval_api_retries_total{{{SEL}}}[{RATE}]))",
                        "{{endpoint}}",
                    )
                ],
                unit="reqps",
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "API request latency (p95)",
                "Duration of one request attempt, 95th percentile, by endpoint.",
                [
                    (
                        quantile(0.95, "judgeval_api_request_duration_seconds", by="endpoint, le"),
                        "{{endpoint}}",
                    )
                ],
                unit="s",
            ),
            12,
            8,
        ),
        (
            _panel(
                "state-timeline",
                "Auth circuit open / paused by 429",
                "Red: the auth circuit is open (401/403, nothing is sent). Orange: paused by a "
                "429 Retry-After. Highest value over instances.",
                [
                    (
                        f"max by (endpoint) (judgeval_circuit_open{{{SEL}}})",
                        "circuit open {{endpoint}}",
                    ),
                    (
                        f"max by (endpoint) (judgeval_endpoint_paused{{{SEL}}})",
                        "paused {{endpoint}}",
                    ),
                ],
                maximum=1,
                thresholds=_steps(("green", None), ("red", 1)),
                overrides=[
                    {
                        "matcher": {"id": "byRegexp", "options": "paused.*"},
                        "properties": [{"id": "thresholds", "value": _steps(("green", None), ("orange", 1))}],
                    }
                ],
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "In-flight requests",
                "Judgment API requests currently in flight, by endpoint.",
                [
                    (
                        f"sum by (endpoint) (judgeval_in_flight_requests{{{SEL}}})",
                        "{{endpoint}}",
                    )
                ],
            ),
            12,
            8,
        ),
        (_row("Memory, evaluations and the SDK loop"), 24, 1),
        (
            _panel(
                "timeseries",
                "Memory pressure",
                "Span metadata entries held in memory, per instance. "
                "Alert JudgevalMemoryPressure: median of 5m > 9000 for 5m.",
                [(f"judgeval_metadata_entries{{{SEL}}}", "{{instance}}")],
                thresholds=_steps(("green", None), ("yellow", 8000), ("red", 9000)),
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "Oldest queued item age",
                "Age of the oldest item waiting in each queue (highest instance). "
                "Growing steadily means the consumer is stuck.",
                [
                    (
                        f"max by (queue) (judgeval_oldest_queued_age_seconds{{{SEL}}})",
                        "{{queue}}",
                    )
                ],
                unit="s",
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "SDK loop lag",
                "How late the SDK's loop thread runs its timers, per instance. "
                "Alert JudgevalLoopLagHigh: median of 5m > 500ms for 5m.",
                [(f"judgeval_loop_lag_seconds{{{SEL}}}", "{{instance}}")],
                unit="s",
                thresholds=_steps(("green", None), ("red", 0.5)),
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "Evaluations and tags",
                "Evaluation runs and tags per second: accepted, delivered, dropped.",
                [
                    (
                        f"sum(rate(judgeval_evaluations_enqueued_total{{{SEL}}}[{RATE}]))",
                        "evaluations enqueued",
                    ),
                    (
                        f"sum(rate(judgeval_evaluations_delivered_total{{{SEL}}}[{RATE}]))",
                        "evaluations delivered",
                    ),
                    (
                        f"sum(rate(judgeval_evaluations_dropped_total{{{SEL}}}[{RATE}]))",
                        "evaluations dropped",
                    ),
                    (
                        f"sum(rate(judgeval_tags_buffered_total{{{SEL}}}[{RATE}]))",
                        "tags buffered",
                    ),
                    (
                        f"sum(rate(judgeval_tags_flushed_total{{{SEL}}}[{RATE}]))",
                        "tags flushed",
                    ),
                    (
                        f"sum(rate(judgeval_tags_dropped_total{{{SEL}}}[{RATE}]))",
                        "tags dropped",
                    ),
                ],
                unit="reqps",
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "Queues and buffers",
                "Items currently held: span queue, spans being exported, evaluation queue, tag-call "
                "queue, traces with buffered tags (summed over instances).",
                [
                    (f'sum(judgeval_queue_size{{{SEL}, queue="spans"}})', "span queue"),
                    (f"sum(judgeval_spans_in_flight{{{SEL}}})", "spans in flight"),
                    (f'sum(judgeval_queue_size{{{SEL}, queue="evaluations"}})', "evaluation queue"),
                    (f'sum(judgeval_queue_size{{{SEL}, queue="tags"}})', "tag-call queue"),
                    (f"sum(judgeval_tag_buffer_size{{{SEL}}})", "tag buffer"),
                ],
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "Degraded values and metadata evictions",
                "Recorded values degraded before export, and span metadata evicted, per second by reason.",
                [
                    (
                        f"sum by (reason) (rate(judgeval_values_degraded_total{{{SEL}}}[{RATE}]))",
                        "degraded {{reason}}",
                    ),
                    (
                        f"sum by (reason) (rate(judgeval_metadata_evictions_total{{{SEL}}}[{RATE}]))",
                        "evicted {{reason}}",
                    ),
                ],
                unit="reqps",
            ),
            12,
            8,
        ),
        (_row("Outages: backlog, spool and endpoints"), 24, 1),
        (
            _panel(
                "timeseries",
                "Backlog bytes vs budget",
                "Encoded payloads held in memory waiting for a send, by signal (stacked), against the memory "
                "budget backlog_max_bytes (highest instance). Past the budget, payloads spill to the spool, or are "
                "dropped backlog_full when it cannot take them.",
                [
                    (f"sum by (signal) (judgeval_backlog_bytes{{{SEL}}})", "{{signal}}"),
                    (f"max(judgeval_backlog_max_bytes{{{SEL}}})", "budget"),
                ],
                unit="bytes",
                overrides=[_unstacked("budget")],
                stack=True,
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "Spool bytes vs max",
                "Bytes in the durable spool on disk, by signal (stacked), against spool_max_bytes (highest "
                "instance); the dashed line is 80% of it. Alert JudgevalSpoolFilling: > 80% for 10m.",
                [
                    (f"sum by (signal) (judgeval_spool_bytes{{{SEL}}})", "{{signal}}"),
                    (f"max(judgeval_spool_max_bytes{{{SEL}}})", "max"),
                    (f"0.8 * max(judgeval_spool_max_bytes{{{SEL}}})", "80% (alert)"),
                ],
                unit="bytes",
                overrides=[_unstacked("max"), _unstacked("80% (alert)")],
                stack=True,
            ),
            12,
            8,
        ),
        (
            _panel(
                "state-timeline",
                "Endpoint up / spool available",
                "Green: the endpoint answers (up) / the spool can write. Red: the endpoint is down or probing "
                "(data is held in the backlog and spool, not sent) / the spool is unavailable (disk full, "
                "read-only, or spool=False). Lowest value over instances. Alert JudgevalSpoolUnavailableWhileDown.",
                [
                    (f"min by (endpoint) (judgeval_endpoint_up{{{SEL}}})", "up {{endpoint}}"),
                    (f"min(judgeval_spool_available{{{SEL}}})", "spool available"),
                ],
                maximum=1,
                thresholds=_steps(("red", None), ("green", 1)),
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "Endpoint concurrency (AIMD limit)",
                "Requests allowed in flight per endpoint: grows by one on success, halves on failure, between "
                "1 and max_concurrent_exports (highest instance). 1 while an endpoint is probed after an outage.",
                [(f"max by (endpoint) (judgeval_endpoint_concurrency{{{SEL}}})", "{{endpoint}}")],
            ),
            12,
            8,
        ),
        (
            _panel(
                "timeseries",
                "Replayed and spooled items",
                "Items replayed per second from a spool (this process's earlier runs or an adopted dead "
                "process's), and items on disk now, by signal.",
                [
                    (
                        f"sum by (signal) (rate(judgeval_replayed_total{{{SEL}}}[{RATE}]))",
                        "replayed/s {{signal}}",
                    ),
                    (f"sum by (signal) (judgeval_spooled_items{{{SEL}}})", "on disk {{signal}}"),
                ],
                overrides=[
                    {
                        "matcher": {"id": "byRegexp", "options": "on disk.*"},
                        "properties": [{"id": "custom.axisPlacement", "value": "right"}],
                    }
                ],
            ),
            24,
            8,
        ),
    ]


def _unstacked(name: str) -> dict[str, Any]:
    """A series drawn as a dashed, unstacked line (a limit over a stacked area)."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
        ],
    }


def _layout(panels: list[tuple[Panel, int, int]]) -> list[Panel]:
    """Flow panels left to right, top to bottom, assigning ids and gridPos."""
    out: list[Panel] = []
    x = y = row_height = 0
    for panel_id, (panel, width, height) in enumerate(panels, start=1):
        if x + width > 24:
            x, y, row_height = 0, y + row_height, 0
        out.append({**panel, "id": panel_id, "gridPos": {"h": height, "w": width, "x": x, "y": y}})
        x += width
        row_height = max(row_height, height)
    return out


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": "StandardVariableQuery"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def build_dashboard() -> dict[str, Any]:
    """The dashboard as a JSON-ready dict."""
    return {
        "uid": "judgeval-sdk",
        "title": "Judgeval SDK health",
        "description": "Health of services instrumented with judgeval_async. "
        "Generated by monitoring/grafana/generate_dashboard.py; edit that, not this JSON.",
        "tags": ["judgeval"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                _variable("job", "Job", "label_values(judgeval_spans_created_total, job)"),
                _variable(
                    "instance",
                    "Instance",
                    'label_values(judgeval_spans_created_total{job=~"$job"}, instance)',
                ),
            ]
        },
        "panels": _layout(_panels()),
    }


def render() -> str:
    """The dashboard exactly as committed: sorted keys, two-space indent, trailing newline."""
    return json.dumps(build_dashboard(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
