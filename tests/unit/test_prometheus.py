"""The Prometheus collector and the multi-process sample files, without HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from judgeval_async import DROP_REASONS, Tracer
from judgeval_async._metrics import Histogram
from judgeval_async._multiprocess import (
    CATALOGUE,
    SnapshotWriter,
    Values,
    _rebucket,
    aggregate,
    collect_values,
    merge,
    metrics_dir,
    read_snapshots,
    write_values,
)
from judgeval_async._prometheus import JudgevalCollector, start_metrics_server
from judgeval_async._transport import ENDPOINTS

pytestmark = pytest.mark.timeout(30)

CONTRACT = Path(__file__).resolve().parents[2] / "monitoring" / "metrics_contract.json"


@pytest.fixture
def tracer():
    t = Tracer("unit", api_key="k", organization_id="o", api_url="http://127.0.0.1:9")
    yield t
    t.shutdown(timeout=5)


def scrape(collector) -> dict:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def family_name(name: str, kind: str) -> str:
    return name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_every_contract_metric_is_collected_with_its_type_and_labels(tracer):
    """Each metric in monitoring/metrics_contract.json is exposed with the contract's type and label names."""
    contract = json.loads(CONTRACT.read_text())
    families = scrape(JudgevalCollector(tracer, multiprocess_dir=None))
    for name, spec in contract.items():
        fam = families[family_name(name, spec["type"])]
        assert fam.type == spec["type"], name
        for sample in fam.samples:
            assert set(sample.labels) - {"le"} == set(spec["labels"]), name
        for label, wanted in spec.get("label_values", {}).items():
            assert set(wanted) <= {s.labels[label] for s in fam.samples}, (name, label)
        if "buckets" in spec:
            les = {float(s.labels["le"]) for s in fam.samples if s.name.endswith("_bucket")}
            assert les == {*map(float, spec["buckets"]), float("inf")}, name


def test_every_reason_and_endpoint_is_seeded_with_zero(tracer):
    """Before any event, every drop reason and endpoint already has a 0 series (so rate() sees the first event)."""
    families = scrape(JudgevalCollector(tracer, multiprocess_dir=None))
    for signal in ("spans", "evaluations", "tags"):
        samples = {s.labels["reason"]: s.value for s in families[f"judgeval_{signal}_dropped"].samples}
        assert samples == dict.fromkeys(DROP_REASONS, 0.0)
    retries = {s.labels["endpoint"]: s.value for s in families["judgeval_api_retries"].samples}
    assert retries == dict.fromkeys(ENDPOINTS, 0.0)


def test_ledger_values_are_read_at_scrape_time_not_copied(tracer):
    """A count recorded after the collector was built shows up at the next scrape, exactly once."""
    collector = JudgevalCollector(tracer, multiprocess_dir=None)
    tracer.metrics.spans.drop_untracked("queue_full", 3)
    tracer.metrics.api_errors.inc("traces", "500")
    families = scrape(collector)
    dropped = {s.labels["reason"]: s.value for s in families["judgeval_spans_dropped"].samples}
    assert dropped["queue_full"] == 3
    assert families["judgeval_spans_created"].samples[0].value == 3
    errors = {(s.labels["endpoint"], s.labels["status_code"]): s.value for s in families["judgeval_api_errors"].samples}
    assert errors[("traces", "500")] == 1
    assert sum(errors.values()) == 1


def test_rebucket_keeps_cumulative_counts_exact():
    """Re-expressing a ledger histogram on a subset of its bounds keeps every cumulative count and the sum."""
    h = Histogram()
    for v in (0.003, 0.004, 0.02, 0.7, 100.0):
        h.observe(v)
    buckets, total = _rebucket(h, (0.005, 0.05, 1.0, 60.0))
    assert buckets == [2, 3, 4, 4, 5]
    assert total == pytest.approx(100.727)


def test_collector_describe_guards_against_duplicate_registration(tracer):
    """Registering two collectors on one registry fails loudly instead of serving duplicate series."""
    registry = CollectorRegistry()
    registry.register(tracer.metrics_collector())
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(JudgevalCollector(tracer))


def test_nothing_is_registered_on_the_global_registry(tracer):
    """Neither the collector nor the server touches prometheus_client's global REGISTRY."""
    with start_metrics_server(tracer, port=0):
        pass
    JudgevalCollector(tracer)
    names = {f.name for f in REGISTRY.collect()}
    assert not any(n.startswith("judgeval_") for n in names)


@pytest.mark.parametrize("port", [-1, 65536, "9464", True])
def test_start_metrics_server_rejects_impossible_ports(tracer, port):
    """An impossible port is a ValueError at the call, before any socket is opened."""
    with pytest.raises(ValueError, match="port"):
        start_metrics_server(tracer, port=port)


def test_metrics_dir_prefers_judgeval_variable(tmp_path):
    """JUDGEVAL_METRICS_DIR wins over PROMETHEUS_MULTIPROC_DIR; neither set means single-process."""
    assert metrics_dir({}) is None
    assert metrics_dir({"PROMETHEUS_MULTIPROC_DIR": "/a"}) == Path("/a")
    assert metrics_dir({"PROMETHEUS_MULTIPROC_DIR": "/a", "JUDGEVAL_METRICS_DIR": "/b"}) == Path("/b")


def test_collector_reads_the_directory_from_the_environment(tracer, tmp_path, monkeypatch):
    """With JUDGEVAL_METRICS_DIR set, a scrape writes this process's file there."""
    monkeypatch.setenv("JUDGEVAL_METRICS_DIR", str(tmp_path))
    scrape(tracer.metrics_collector())
    assert [p.name for p in tmp_path.iterdir()] == [f"judgeval_{os.getpid()}.json"]


def test_write_is_atomic_and_round_trips(tracer, tmp_path):
    """The file is written via a temp file and reads back to the same samples."""
    tracer.metrics.spans.drop_untracked("shutdown", 2)
    tracer.metrics.export_duration.observe(0.02)
    values = collect_values(tracer)
    path = write_values(values, tmp_path, pid=4242)
    assert [p.name for p in tmp_path.iterdir()] == [path.name] == ["judgeval_4242.json"]
    ((pid, back),) = read_snapshots(tmp_path)
    assert pid == 4242
    assert back == values


def test_unreadable_files_are_skipped(tracer, tmp_path):
    """A corrupt file or a file of another format is ignored, not fatal to the scrape."""
    (tmp_path / "judgeval_1.json").write_text("{not json")
    (tmp_path / "judgeval_2.json").write_text(json.dumps({"format": 99}))
    (tmp_path / "judgeval_x.json").write_text("{}")
    assert read_snapshots(tmp_path) == []
    families = scrape(JudgevalCollector(tracer, multiprocess_dir=tmp_path))
    assert families["judgeval_spans_created"].samples[0].value == 0


def _values(created: float, queue: float, lag: float, hist: list[float]) -> Values:
    return Values(
        scalars={
            "judgeval_spans_created_total": {(): created},
            "judgeval_queue_size": {("spans",): queue},
            "judgeval_loop_lag_seconds": {(): lag},
        },
        histograms={"judgeval_export_duration_seconds": {(): (hist, 1.5)}},
    )


def test_merge_sums_counters_and_histograms_sums_or_maxes_gauges():
    """Counters and histograms add up; size gauges add up; lag-like gauges take the max."""
    n = len(next(s for s in CATALOGUE if s.name == "judgeval_export_duration_seconds").buckets) + 1
    a = _values(3, 10, 0.2, [1.0] * n)
    b = _values(5, 7, 0.5, [2.0] * n)
    out = merge([(a, True), (b, True)])
    assert out.scalars["judgeval_spans_created_total"] == {(): 8}
    assert out.scalars["judgeval_queue_size"] == {("spans",): 17}
    assert out.scalars["judgeval_loop_lag_seconds"] == {(): 0.5}
    assert out.histograms["judgeval_export_duration_seconds"] == {(): ([3.0] * n, 3.0)}


def test_merge_drops_gauges_of_dead_processes_but_keeps_their_counters():
    """A dead process still contributes its counters (rates never go backwards) but none of its gauges."""
    n = 14
    out = merge([(_values(3, 10, 0.2, [1.0] * n), True), (_values(5, 7, 0.9, [1.0] * n), False)])
    assert out.scalars["judgeval_spans_created_total"] == {(): 8}
    assert out.scalars["judgeval_queue_size"] == {("spans",): 10}
    assert out.scalars["judgeval_loop_lag_seconds"] == {(): 0.2}


def test_merge_skips_histograms_with_foreign_bounds():
    """A histogram written with another bucket layout is skipped rather than misaligned."""
    out = merge([(_values(1, 1, 0, [1.0, 1.0]), True)])
    assert out.histograms["judgeval_export_duration_seconds"] == {}


def test_aggregate_uses_own_fresh_values_and_checks_liveness(tracer, tmp_path):
    """aggregate() replaces this process's file by its fresh samples and drops dead processes' gauges."""
    stale = collect_values(tracer)
    write_values(stale, tmp_path)  # this process's older file: must not be counted twice
    other = collect_values(tracer)
    other.scalars["judgeval_spans_created_total"] = {(): 5}
    write_values(other, tmp_path, pid=dead_pid())
    live = collect_values(tracer)
    live.scalars["judgeval_spans_created_total"] = {(): 7}
    write_values(live, tmp_path, pid=os.getppid())  # the test runner's parent: alive
    tracer.metrics.spans.drop_untracked("shutdown", 1)
    out = aggregate(tmp_path, own=collect_values(tracer))
    assert out.scalars["judgeval_spans_created_total"] == {(): 13}
    capacity = tracer.health_snapshot().spans.capacity
    assert out.scalars["judgeval_queue_capacity"][("spans",)] == 2 * capacity


def test_snapshot_writer_writes_periodically_and_at_close(tracer, tmp_path):
    """The loop service writes the file when started and again, with final counts, when closed."""
    path = tmp_path / f"judgeval_{os.getpid()}.json"

    async def run() -> None:
        writer = SnapshotWriter(tracer, tmp_path, interval=0.01)
        await writer.start()
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert path.exists()
        tracer.metrics.spans.drop_untracked("shutdown", 4)
        await writer.drain()
        await writer.aclose()

    asyncio.run(run())
    ((_, values),) = read_snapshots(tmp_path)
    assert values.scalars["judgeval_spans_created_total"] == {(): 4}


def test_snapshot_writer_failure_is_logged_not_raised(tracer, tmp_path, caplog):
    """A directory that cannot be written logs one warning and never raises."""
    writer = SnapshotWriter(tracer, tmp_path / "missing")
    writer.write()
    writer.write()
    assert sum("cannot write metrics" in r.getMessage() for r in caplog.records) == 1
