"""Metric samples as plain data: read from one tracer, written to a per-process file, merged across processes.

``_prometheus`` renders these samples for a scrape. They live here, free of ``prometheus_client``, because a worker
process that only writes its file (gunicorn/uvicorn workers behind one ``/metrics``) never needs that library.

Multi-process mode (``JUDGEVAL_METRICS_DIR`` or ``PROMETHEUS_MULTIPROC_DIR`` set): every process writes its samples
to ``<dir>/judgeval_<pid>.json`` (temp file + ``os.replace``, so a reader never sees half a file), from the SDK
loop every second (:class:`SnapshotWriter`) and at each of its own scrapes. The process serving ``/metrics`` merges
every file with its own fresh samples (:func:`aggregate`):

* counters and histograms are summed over every file, including processes that have exited, so a restarted worker
  never makes a rate go backwards (prometheus_client's multiprocess "all" semantics);
* gauges come only from live processes (``os.kill(pid, 0)``) and are summed (sizes, capacities, in-flight counts)
  or max'ed (ages, lag, utilization, timestamps, circuit and pause flags): see each spec's ``merge``.

One tracer per process writes to a directory; the directory must be emptied when the deployment starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any, Literal, Protocol

from ._health import HealthSnapshot
from ._metrics import DROP_REASONS, Histogram, Metrics
from ._runtime import BaseService
from ._serialize import DEGRADE_REASONS
from ._transport import ENDPOINTS

__all__ = [
    "CATALOGUE",
    "EVICTION_REASONS",
    "IGNORED_CALLS",
    "METRICS_DIR_ENV",
    "QUEUES",
    "STATUS_CODES_SEEDED",
    "MetricSpec",
    "MetricsSource",
    "SnapshotWriter",
    "Values",
    "aggregate",
    "collect_values",
    "metrics_dir",
    "read_snapshots",
    "write_snapshot",
    "write_values",
]

logger = logging.getLogger(__name__)

# Checked in this order; the first non-empty one wins.
METRICS_DIR_ENV: tuple[str, ...] = ("JUDGEVAL_METRICS_DIR", "PROMETHEUS_MULTIPROC_DIR")
_FILE_PREFIX = "judgeval_"
_FORMAT = 1

Labels = tuple[str, ...]
Kind = Literal["counter", "gauge", "histogram"]
Merge = Literal["sum", "max"]

_EXPORT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_OVERHEAD_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
# Label values emitted with 0 before any event. A series that appears only at its first event makes rate() and
# increase() miss that event, and leaves dashboards and alerts blank until then, so every known value is pre-seeded.
STATUS_CODES_SEEDED = ("network", "timeout", "401", "403", "408", "413", "429", "500", "502", "503", "504")
EVICTION_REASONS = ("lru", "ttl")
IGNORED_CALLS = ("set_attribute", "tag", "async_evaluate")
QUEUES = ("spans", "evaluations", "tags")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric. ``merge`` says how a gauge combines across processes (counters always sum)."""

    name: str
    kind: Kind
    help: str
    labels: Labels = ()
    merge: Merge = "sum"
    buckets: tuple[float, ...] = ()


def _c(name: str, help_: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "counter", help_, labels)


def _g(name: str, help_: str, *labels: str, merge: Merge = "sum") -> MetricSpec:
    return MetricSpec(name, "gauge", help_, labels, merge)


def _h(name: str, help_: str, buckets: tuple[float, ...], *labels: str) -> MetricSpec:
    return MetricSpec(name, "histogram", help_, labels, buckets=buckets)


CATALOGUE: tuple[MetricSpec, ...] = (
    _c("judgeval_spans_created_total", "Spans that entered the SDK."),
    _c("judgeval_spans_exported_total", "Spans accepted by the backend."),
    _c("judgeval_spans_dropped_total", "Spans lost, by reason.", "reason"),
    _c("judgeval_api_errors_total", "Failed Judgment API requests, by endpoint and status.", "endpoint", "status_code"),
    _c("judgeval_api_retries_total", "Judgment API requests retried, by endpoint.", "endpoint"),
    _c(
        "judgeval_api_sent_bytes_total",
        "Request body bytes sent to the Judgment API (after gzip), by endpoint.",
        "endpoint",
    ),
    _c("judgeval_evaluations_enqueued_total", "Evaluation runs accepted into the evaluation queue."),
    _c("judgeval_evaluations_delivered_total", "Evaluation runs accepted by the backend."),
    _c("judgeval_evaluations_dropped_total", "Evaluation runs lost, by reason.", "reason"),
    _c("judgeval_tags_buffered_total", "Tag calls accepted into the tag buffer."),
    _c("judgeval_tags_flushed_total", "Tag calls delivered to the backend."),
    _c("judgeval_tags_dropped_total", "Tag calls lost, by reason.", "reason"),
    _c("judgeval_metadata_evictions_total", "Span metadata entries evicted, by reason.", "reason"),
    _c("judgeval_values_degraded_total", "Traced values truncated or replaced, by reason.", "reason"),
    _c("judgeval_calls_ignored_total", "API calls that were counted no-ops, by call and reason.", "call", "reason"),
    _g("judgeval_queue_size", "Items waiting in a queue (spans, evaluations, tags).", "queue"),
    _g("judgeval_queue_capacity", "Capacity of a queue (spans, evaluations, tags).", "queue"),
    _g("judgeval_queue_utilization_percent", "Queue fill level, 0-100 (max over processes).", "queue", merge="max"),
    _g("judgeval_tag_buffer_size", "Traces with tags buffered, not yet flushed."),
    _g("judgeval_metadata_entries", "Entries in the span metadata store."),
    _g("judgeval_spans_in_flight", "Spans taken by the SDK loop and not settled yet."),
    _g("judgeval_oldest_queued_age_seconds", "Age of the oldest item waiting in a queue.", "queue", merge="max"),
    _g(
        "judgeval_last_export_timestamp_seconds",
        "Unix time of the last successful span export (0 before the first).",
        merge="max",
    ),
    _g("judgeval_circuit_open", "1 while the auth circuit for an endpoint is open, else 0.", "endpoint", merge="max"),
    _g("judgeval_endpoint_paused", "1 while an endpoint is paused by a 429 Retry-After.", "endpoint", merge="max"),
    _g("judgeval_in_flight_requests", "Judgment API requests currently in flight, by endpoint.", "endpoint"),
    _g("judgeval_backlog_bytes", "Encoded payload bytes held in memory waiting for a send, by signal.", "signal"),
    _g("judgeval_backlog_max_bytes", "The memory backlog budget per signal (backlog_max_bytes).", merge="max"),
    _g("judgeval_spool_bytes", "Bytes on disk in this process's spool, by signal.", "signal"),
    _g("judgeval_spool_max_bytes", "The disk spool budget (spool_max_bytes; 0 when the spool is off).", merge="max"),
    _g("judgeval_spool_available", "1 when the spool can write, 0 when disabled or unavailable.", merge="max"),
    _g("judgeval_spooled_items", "Items on disk in the spool now (ledger state spooled), by signal.", "signal"),
    _c("judgeval_replayed_total", "Items adopted from an earlier or dead process's spool, by signal.", "signal"),
    _g("judgeval_endpoint_up", "1 while an endpoint is up, 0 while down or probing.", "endpoint", merge="max"),
    _g("judgeval_endpoint_concurrency", "Current adaptive (AIMD) concurrency limit, by endpoint.", "endpoint"),
    _g("judgeval_loop_lag_seconds", "How late the SDK loop runs a timer (max over processes).", merge="max"),
    _g("judgeval_info", "Always 1; the version label says which judgeval_async is running.", "version", merge="max"),
    _h(
        "judgeval_export_duration_seconds",
        "Time to export one batch of spans the backend accepted, retries included.",
        _EXPORT_BUCKETS,
    ),
    _h("judgeval_observe_overhead_seconds", "Time @observe adds to the caller's thread (sampled).", _OVERHEAD_BUCKETS),
    _h(
        "judgeval_api_request_duration_seconds",
        "Duration of one Judgment API request attempt, by endpoint.",
        _EXPORT_BUCKETS,
        "endpoint",
    ),
)
_SPECS = {spec.name: spec for spec in CATALOGUE}


class MetricsSource(Protocol):
    """What the collector reads: a :class:`~judgeval_async.Tracer` satisfies it."""

    @property
    def metrics(self) -> Metrics: ...

    def health_snapshot(self) -> HealthSnapshot: ...


@dataclass
class Values:
    """Samples of every catalogue metric: scalars (counters, gauges) and histograms (cumulative counts, sum)."""

    scalars: dict[str, dict[Labels, float]] = field(default_factory=dict)
    # Histogram buckets are cumulative counts for each of the spec's bounds, then +Inf (== the count).
    histograms: dict[str, dict[Labels, tuple[list[float], float]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "scalars": {name: [[list(k), v] for k, v in series.items()] for name, series in self.scalars.items()},
            "histograms": {
                name: [[list(k), b, s] for k, (b, s) in series.items()] for name, series in self.histograms.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Values:
        scalars = {
            str(name): {tuple(str(x) for x in k): float(v) for k, v in rows}
            for name, rows in data.get("scalars", {}).items()
        }
        histograms = {
            str(name): {tuple(str(x) for x in k): ([float(c) for c in b], float(s)) for k, b, s in rows}
            for name, rows in data.get("histograms", {}).items()
        }
        return cls(scalars, histograms)


_version_cache: list[str] = []


def _version() -> str:
    if not _version_cache:
        try:
            _version_cache.append(_importlib_metadata.version("judgeval-async"))
        except _importlib_metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
            _version_cache.append("unknown")
    return _version_cache[0]


def _seeded(known: Iterable[str], seen: Mapping[str, int]) -> dict[Labels, float]:
    out: dict[Labels, float] = {(k,): 0.0 for k in known}
    for k, n in seen.items():
        out[(k,)] = float(n)
    return out


def _rebucket(h: Histogram, bounds: tuple[float, ...]) -> tuple[list[float], float]:
    """Re-express a ledger histogram on ``bounds`` (a subset of its own bounds, so every count stays exact)."""
    cumulative, total, count = h.cumulative()
    pairs = [(float(le), n) for le, n in cumulative]
    out: list[float] = []
    i, running = 0, 0
    for bound in bounds:
        while i < len(pairs) and pairs[i][0] <= bound:
            running = pairs[i][1]
            i += 1
        out.append(float(running))
    out.append(float(count))
    return out, total


def collect_values(source: MetricsSource) -> Values:
    """Read every catalogue metric from ``source`` now. Cheap: copies counters under the ledger locks."""
    snap = source.health_snapshot()
    m = source.metrics
    s, e, t = snap.spans, snap.evaluations, snap.tags
    c: dict[str, dict[Labels, float]] = {}
    c["judgeval_spans_created_total"] = {(): float(s.created)}
    c["judgeval_spans_exported_total"] = {(): float(s.delivered)}
    c["judgeval_spans_dropped_total"] = _seeded(DROP_REASONS, s.dropped)
    errors: dict[Labels, float] = {(ep, code): 0.0 for ep in ENDPOINTS for code in STATUS_CODES_SEEDED}
    for endpoint, by_status in snap.api_errors.items():
        for status, n in by_status.items():
            errors[(endpoint, status)] = float(n)
    c["judgeval_api_errors_total"] = errors
    c["judgeval_api_retries_total"] = _seeded(ENDPOINTS, {k[0]: n for k, n in m.retries.items()})
    c["judgeval_api_sent_bytes_total"] = _seeded(ENDPOINTS, {k: st.bytes_sent for k, st in list(m.endpoints.items())})
    c["judgeval_evaluations_enqueued_total"] = {(): float(e.created)}
    c["judgeval_evaluations_delivered_total"] = {(): float(e.delivered)}
    c["judgeval_evaluations_dropped_total"] = _seeded(DROP_REASONS, e.dropped)
    c["judgeval_tags_buffered_total"] = {(): float(t.created)}
    c["judgeval_tags_flushed_total"] = {(): float(t.delivered)}
    c["judgeval_tags_dropped_total"] = _seeded(DROP_REASONS, t.dropped)
    c["judgeval_metadata_evictions_total"] = _seeded(EVICTION_REASONS, snap.metadata_evictions)
    c["judgeval_values_degraded_total"] = _seeded(DEGRADE_REASONS, snap.values_degraded)
    ignored: dict[Labels, float] = {(call, "no_active_span"): 0.0 for call in IGNORED_CALLS}
    for labels, n in m.calls_ignored.items():
        ignored[labels] = float(n)
    c["judgeval_calls_ignored_total"] = ignored

    endpoints = snap.endpoints
    queues = {"spans": s, "evaluations": e, "tags": t}
    c["judgeval_queue_size"] = {(q,): float(queues[q].queued) for q in QUEUES}
    c["judgeval_queue_capacity"] = {(q,): float(queues[q].capacity) for q in QUEUES}
    c["judgeval_queue_utilization_percent"] = {
        (q,): 100.0 * queues[q].queued / queues[q].capacity if queues[q].capacity else 0.0 for q in QUEUES
    }
    c["judgeval_tag_buffer_size"] = {(): float(snap.tag_buffer_size)}
    c["judgeval_metadata_entries"] = {(): float(snap.metadata_entries)}
    c["judgeval_spans_in_flight"] = {(): float(s.in_flight)}
    ages = {"spans": s.oldest_queued_age, "evaluations": e.oldest_queued_age, "tags": t.oldest_queued_age}
    c["judgeval_oldest_queued_age_seconds"] = {(q,): ages[q] for q in QUEUES}
    c["judgeval_last_export_timestamp_seconds"] = {(): snap.last_export_unix}
    names = (*ENDPOINTS, *(k for k in endpoints if k not in ENDPOINTS))
    c["judgeval_circuit_open"] = {(n,): float(n in endpoints and endpoints[n].circuit_open) for n in names}
    c["judgeval_endpoint_paused"] = {(n,): float(n in endpoints and endpoints[n].paused_for_seconds > 0) for n in names}
    c["judgeval_in_flight_requests"] = {
        (n,): float(endpoints[n].in_flight_requests if n in endpoints else 0) for n in names
    }
    c["judgeval_backlog_bytes"] = {(q,): float(snap.backlog_bytes.get(q, 0)) for q in QUEUES}
    c["judgeval_backlog_max_bytes"] = {(): float(m.backlog_max_bytes)}
    c["judgeval_spool_bytes"] = {(q,): float(snap.spool_bytes.get(q, 0)) for q in QUEUES}
    c["judgeval_spool_max_bytes"] = {(): float(m.spool_max_bytes)}
    c["judgeval_spool_available"] = {(): float(snap.spool_available)}
    c["judgeval_spooled_items"] = {(q,): float(queues[q].spooled) for q in QUEUES}
    c["judgeval_replayed_total"] = {(q,): float(queues[q].replayed) for q in QUEUES}
    c["judgeval_endpoint_up"] = {(n,): float(n not in endpoints or endpoints[n].state == "up") for n in names}
    c["judgeval_endpoint_concurrency"] = {(n,): float(endpoints[n].concurrency if n in endpoints else 0) for n in names}
    c["judgeval_loop_lag_seconds"] = {(): snap.loop_lag_seconds}
    c["judgeval_info"] = {(_version(),): 1.0}

    h: dict[str, dict[Labels, tuple[list[float], float]]] = {
        "judgeval_export_duration_seconds": {(): _rebucket(m.export_duration, _EXPORT_BUCKETS)},
        "judgeval_observe_overhead_seconds": {(): _rebucket(m.observe_overhead, _OVERHEAD_BUCKETS)},
    }
    durations = dict(m.api_request_duration)
    h["judgeval_api_request_duration_seconds"] = {
        (n,): _rebucket(durations[n] if n in durations else Histogram(), _EXPORT_BUCKETS)
        for n in (*ENDPOINTS, *(k for k in durations if k not in ENDPOINTS))
    }
    return Values(c, h)


# ---------------------------------------------------------------------------------------------- files and merging
def metrics_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The multi-process directory from ``JUDGEVAL_METRICS_DIR`` or ``PROMETHEUS_MULTIPROC_DIR``, else None."""
    env = os.environ if environ is None else environ
    for name in METRICS_DIR_ENV:
        value = env.get(name)
        if value:
            return Path(value)
    return None


def write_values(values: Values, directory: str | os.PathLike[str], pid: int | None = None) -> Path:
    """Write ``values`` atomically to ``<directory>/judgeval_<pid>.json``. Raises ``OSError`` on failure."""
    pid = os.getpid() if pid is None else pid
    d = Path(directory)
    target = d / f"{_FILE_PREFIX}{pid}.json"
    tmp = d / f".{_FILE_PREFIX}{pid}.json.tmp"  # the leading dot keeps readers' glob away from it
    payload = {"format": _FORMAT, "pid": pid, "written_unix": time.time(), **values.to_json()}
    try:
        tmp.write_text(json.dumps(payload, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return target


def write_snapshot(source: MetricsSource, directory: str | os.PathLike[str]) -> Path:
    """Collect ``source``'s samples and write this process's file. Raises ``OSError`` on failure."""
    return write_values(collect_values(source), directory)


def read_snapshots(directory: str | os.PathLike[str]) -> list[tuple[int, Values]]:
    """Every readable ``judgeval_<pid>.json`` in ``directory`` (unreadable ones are skipped and logged)."""
    out: list[tuple[int, Values]] = []
    for path in sorted(Path(directory).glob(f"{_FILE_PREFIX}*.json")):
        try:
            pid = int(path.stem[len(_FILE_PREFIX) :])
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != _FORMAT:
                continue
            out.append((pid, Values.from_json(data)))
        except (OSError, ValueError, TypeError, AttributeError):
            logger.debug("judgeval_async skipped unreadable metrics file %s", path, exc_info=True)
    return out


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def merge(parts: Iterable[tuple[Values, bool]]) -> Values:
    """Combine per-process samples; each part comes with whether its process is alive. See the module docstring."""
    out = Values()
    for values, alive in parts:
        for name, series in values.scalars.items():
            spec = _SPECS.get(name)
            if spec is None or spec.kind == "histogram" or (spec.kind == "gauge" and not alive):
                continue
            target = out.scalars.setdefault(name, {})
            for labels, v in series.items():
                if labels not in target:
                    target[labels] = v
                elif spec.kind == "gauge" and spec.merge == "max":
                    target[labels] = max(target[labels], v)
                else:
                    target[labels] += v
        for name, hseries in values.histograms.items():
            spec = _SPECS.get(name)
            if spec is None or spec.kind != "histogram":
                continue
            htarget = out.histograms.setdefault(name, {})
            for labels, (buckets, total) in hseries.items():
                if len(buckets) != len(spec.buckets) + 1:
                    continue  # written by a version with other bounds: skip rather than misalign
                prev = htarget.get(labels)
                if prev is None:
                    htarget[labels] = (list(buckets), total)
                else:
                    htarget[labels] = ([a + b for a, b in zip(prev[0], buckets, strict=True)], prev[1] + total)
    return out


def aggregate(directory: str | os.PathLike[str], own: Values | None = None) -> Values:
    """Merge every process's file in ``directory``. ``own`` (this process's fresh samples) replaces its file."""
    me = os.getpid()
    parts: list[tuple[Values, bool]] = [] if own is None else [(own, True)]
    for pid, values in read_snapshots(directory):
        if pid == me:
            if own is None:
                parts.append((values, True))
            continue
        parts.append((values, _pid_alive(pid)))
    return merge(parts)


class SnapshotWriter(BaseService):
    """A runtime service: writes this process's file every ``interval`` seconds from the SDK loop, and at close.

    The write is a few kilobytes of JSON (well under a millisecond), so it runs on the loop directly. Failures
    are logged once per writer and never reach the application.
    """

    def __init__(self, source: MetricsSource, directory: str | os.PathLike[str], interval: float = 1.0) -> None:
        self._source = source
        self._directory = Path(directory)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.write()  # the final counts, after every pipeline has settled

    def after_fork_in_child(self) -> None:
        self._task = None  # belonged to the parent's loop; start() runs again on the child's, under the child's pid

    def write(self) -> None:
        try:
            write_snapshot(self._source, self._directory)
        except Exception:
            if not self._warned:
                self._warned = True
                logger.warning("judgeval_async cannot write metrics to %s", self._directory, exc_info=True)

    async def _run(self) -> None:
        while True:
            self.write()
            await asyncio.sleep(self._interval)
