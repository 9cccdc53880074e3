"""Static and live checks of monitoring/: metrics contract, alert rules, dashboard, stack configs.

The YAML files are read with small regexes rather than a YAML library (the project has no YAML
dependency); promtool/amtool validate them properly, and the smoke test cross-checks the regex
parse against what a real Prometheus loaded.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
CONTRACT_PATH = MONITORING / "metrics_contract.json"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
ALERTS = MONITORING / "prometheus" / "alerts.yml"
ALERTS_TEST = MONITORING / "prometheus" / "alerts_test.yml"
ALERTMANAGER_CONFIG = MONITORING / "alertmanager" / "config.yml"
DATASOURCE = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER = MONITORING / "grafana" / "provisioning" / "dashboards" / "provider.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "judgeval_sdk.json"
GENERATOR = MONITORING / "grafana" / "generate_dashboard.py"
COMPOSE = MONITORING / "docker-compose.yml"
RUN_LOCAL = MONITORING / "run-local.sh"
DOCS = ROOT / "docs" / "monitoring.md"

METRIC = re.compile(r"\bjudgeval_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
TARGET_LABELS = {"instance", "job"}
WAIT_SECONDS = 30.0


# --- helpers ---------------------------------------------------------------------------------


def contract() -> dict[str, dict[str, Any]]:
    return json.loads(CONTRACT_PATH.read_text())


# The delivery pipeline's metrics (issue 10), which the spool/backlog/endpoint panels and the spool alerts use.
DELIVERY_METRICS: dict[str, dict[str, Any]] = {
    "judgeval_backlog_bytes": {"type": "gauge", "labels": ["signal"]},
    "judgeval_backlog_max_bytes": {"type": "gauge", "labels": []},
    "judgeval_spool_bytes": {"type": "gauge", "labels": ["signal"]},
    "judgeval_spool_max_bytes": {"type": "gauge", "labels": []},
    "judgeval_spool_available": {"type": "gauge", "labels": []},
    "judgeval_spooled_items": {"type": "gauge", "labels": ["signal"]},
    "judgeval_replayed_total": {"type": "counter", "labels": ["signal"]},
    "judgeval_endpoint_up": {"type": "gauge", "labels": ["endpoint"]},
    "judgeval_endpoint_concurrency": {"type": "gauge", "labels": ["endpoint"]},
}


def emitted_metric_names() -> set[str]:
    """Names the library's collector exposes (counters with their _total), read from a tracer that never sends."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from judgeval_async import Tracer
    from judgeval_async._prometheus import JudgevalCollector

    tracer = Tracer("monitoring-assets", api_key="k", organization_id="o", api_url="http://127.0.0.1:9")
    try:
        registry = CollectorRegistry()
        registry.register(JudgevalCollector(tracer, multiprocess_dir=None))
        families = text_string_to_metric_families(generate_latest(registry).decode())
        return {f.name + ("_total" if f.type == "counter" else "") for f in families}
    finally:
        tracer.shutdown(timeout=5)


def known_metrics() -> dict[str, dict[str, Any]]:
    """The contract: every metric a panel or an alert may use."""
    return contract()


def parse_alerts() -> list[dict[str, str]]:
    """Alert rules of alerts.yml as {key: value}; block scalars (``|``) are joined lines."""
    keys = "expr|for|severity|summary|description|runbook_url"
    rules: list[dict[str, str]] = []
    lines = ALERTS.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := re.match(r"^\s*- alert: (\S+)\s*$", line):
            rules.append({"alert": m[1]})
        elif rules and (m := re.match(rf"^(\s*)({keys}):\s*(.*)$", line)):
            indent, key, value = len(m[1]), m[2], m[3]
            if value == "|":
                block = []
                while i + 1 < len(lines) and (
                    not lines[i + 1].strip() or len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent
                ):
                    i += 1
                    block.append(lines[i].strip())
                value = "\n".join(block).strip()
            value = value.strip()
            if value.startswith('"'):  # YAML double-quoted escapes are JSON's
                value = json.loads(value)
            rules[-1][key] = value
        i += 1
    return rules


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def data_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in data_panels() for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard()["templating"]["list"]]
    return exprs


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced, as Grafana would send it."""
    return expr.replace("$__rate_interval", "1m").replace("$job", ".*").replace("$instance", ".*")


def all_exprs() -> list[str]:
    return [r["expr"] for r in parse_alerts()] + [e for e in dashboard_exprs() if not e.startswith("label_values")]


def base_metric(name: str, known: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(contract name, suffix) for a referenced series name; suffix is '' or a histogram suffix."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in known:
            return name.removesuffix(suffix), suffix
    return name, ""


def render_dashboard() -> str:
    """What generate_dashboard.py would write (run without leaving bytecode in monitoring/)."""
    return str(runpy.run_path(str(GENERATOR))["render"]())


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the Markdown headings."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


# --- the contract ----------------------------------------------------------------------------


def test_contract_is_well_formed() -> None:
    """Every contract entry has a valid type, Prometheus naming, and consistent label metadata."""
    for name, spec in contract().items():
        assert re.fullmatch(r"judgeval_[a-z_]+", name), name
        assert spec["type"] in {"counter", "gauge", "histogram"}, name
        assert spec["help"], name
        assert name.endswith("_total") == (spec["type"] == "counter"), name
        assert not name.endswith(HISTOGRAM_SUFFIXES), name
        assert spec["labels"] == sorted(set(spec["labels"])), name
        assert not TARGET_LABELS & set(spec["labels"]), f"{name} must not set target labels"
        assert set(spec.get("label_values", {})) <= set(spec["labels"]), name
        assert set(spec.get("open_label_values", [])) <= set(spec.get("label_values", {})), name
        if "buckets" in spec:
            assert spec["type"] == "histogram", name
            assert spec["buckets"] == sorted(set(spec["buckets"])), name


def test_histogram_buckets_have_the_alert_thresholds_as_boundaries() -> None:
    """The p95 > 1ms and p99 > 10s thresholds sit on bucket boundaries, so quantiles are exact there."""
    spec = contract()
    assert 0.001 in spec["judgeval_observe_overhead_seconds"]["buckets"]
    assert 10 in spec["judgeval_export_duration_seconds"]["buckets"]


def test_referenced_metrics_exist_in_contract_with_compatible_types() -> None:
    """Every judgeval_* series in alerts and dashboard is in the contract (or pending); suffixes fit the type."""
    known = known_metrics()
    for expr in all_exprs():
        for name in METRIC.findall(expr):
            base, suffix = base_metric(name, known)
            assert base in known, f"{name} (in {expr!r}) is not in metrics_contract.json"
            is_histogram = known[base]["type"] == "histogram"
            assert bool(suffix) == is_histogram, f"{name}: histograms need _bucket/_sum/_count"


def test_delivery_metrics_are_emitted_and_in_the_contract() -> None:
    """The delivery pipeline's metrics, used by the spool panels and alerts, are emitted by the library and listed in
    metrics_contract.json with their type and labels."""
    known = contract()
    emitted = emitted_metric_names()
    assert "judgeval_spans_created_total" in emitted  # the name mapping works, so this test can see new metrics
    for name, spec in DELIVERY_METRICS.items():
        assert name in emitted, name
        assert name in known, f"{name} is emitted by the library but missing from metrics_contract.json"
        assert known[name]["type"] == spec["type"], name
        assert sorted(known[name]["labels"]) == sorted(spec["labels"]), name


def test_rate_functions_only_apply_to_counters_and_histograms() -> None:
    """rate/irate/increase are never applied to a gauge."""
    known = known_metrics()
    for expr in all_exprs():
        for name in re.findall(r"\b(?:rate|irate|increase)\(\s*(judgeval_[a-z_]+)", expr):
            base, _ = base_metric(name, known)
            assert known[base]["type"] in {"counter", "histogram"}, f"{name} in {expr!r}"


def test_grouping_and_matcher_labels_exist_in_contract() -> None:
    """Labels in by()/without() and in selectors are contract labels or target labels."""
    known = known_metrics()
    allowed = TARGET_LABELS | {"le"} | {label for s in known.values() for label in s["labels"]}
    for expr in all_exprs():
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (part.strip() for part in group.split(","))):
                assert label in allowed, f"unknown label {label!r} in {expr!r}"
        for name, selector in re.findall(r"\b(judgeval_[a-z_]+)\{([^}]*)\}", expr):
            base, _ = base_metric(name, known)
            spec_labels = set(known[base]["labels"]) | TARGET_LABELS | {"le"}
            for label, value in re.findall(r'(\w+)\s*=~?\s*"([^"]*)"', selector):
                assert label in spec_labels, f"{name} has no label {label!r}"
                values = known[base].get("label_values", {}).get(label)
                if values and not value.startswith("$"):
                    assert set(value.split("|")) <= set(values), f"{name}{{{selector}}}"


# --- alert rules -----------------------------------------------------------------------------


def test_alerts_are_complete_and_unique() -> None:
    """Every alert has a for:, a known severity, summary, description and runbook_url."""
    rules = parse_alerts()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    seed = {
        "JudgevalHighDropRate",
        "JudgevalQueueSaturated",
        "JudgevalExportStalled",
        "JudgevalHighAPIErrorRate",
        "JudgevalHighObserveOverhead",
        "JudgevalMemoryPressure",
        "JudgevalEvaluationQueueFull",
    }
    assert seed <= set(names)
    for rule in rules:
        missing = {"expr", "for", "severity", "summary", "description", "runbook_url"} - set(rule)
        assert not missing, f"{rule['alert']} lacks {missing}"
        assert rule["severity"] in {"critical", "warning"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_runbook_urls_point_at_headings_in_docs() -> None:
    """Each runbook_url ends in an anchor that docs/monitoring.md defines for that alert."""
    anchors = github_anchors(DOCS.read_text())
    for rule in parse_alerts():
        url = rule["runbook_url"]
        assert url.endswith("/docs/monitoring.md#" + rule["alert"].lower()), url
        assert rule["alert"].lower() in anchors, f"docs/monitoring.md lacks ### {rule['alert']}"


def test_every_alert_has_firing_and_silent_unit_tests() -> None:
    """alerts_test.yml expects every alert to fire in some case and to stay silent in another."""
    text = ALERTS_TEST.read_text()
    silent = set(re.findall(r"alertname: (\w+)\n\s*exp_alerts: \[\]", text))
    firing = set(re.findall(r"alertname: (\w+)\n\s*exp_alerts:\n\s*- exp_labels:", text))
    names = {r["alert"] for r in parse_alerts()}
    assert names - firing == set(), "alerts never expected to fire"
    assert names - silent == set(), "alerts never expected to stay silent"


@pytest.mark.prometheus
def test_promtool_check_config(promtool: str) -> None:
    """promtool accepts prometheus.yml, including its relative rule_files entry."""
    result = run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


@pytest.mark.prometheus
def test_promtool_check_rules(promtool: str) -> None:
    """promtool accepts alerts.yml."""
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
def test_promtool_rule_unit_tests_pass(promtool: str) -> None:
    """The promtool unit tests in alerts_test.yml pass."""
    result = run(promtool, "test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
def test_amtool_check_config(amtool: str) -> None:
    """amtool accepts the Alertmanager config."""
    result = run(amtool, "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_inhibition_rules_name_existing_alerts() -> None:
    """Alert names in the Alertmanager inhibit rules exist in alerts.yml."""
    names = {r["alert"] for r in parse_alerts()}
    referenced = re.findall(r'alertname=~?"([^"]+)"', ALERTMANAGER_CONFIG.read_text())
    assert referenced
    for pattern in referenced:
        assert set(pattern.split("|")) <= names, pattern


# --- dashboard -------------------------------------------------------------------------------


def test_committed_dashboard_equals_generated() -> None:
    """The committed dashboard JSON is exactly what generate_dashboard.py writes."""
    assert DASHBOARD.read_text() == render_dashboard(), "run: python monitoring/grafana/generate_dashboard.py"


def test_dashboard_has_seed_panels_and_schema() -> None:
    """The dashboard carries the seed's eight panels plus the ledger panels, at schema 39."""
    board = dashboard()
    assert board["schemaVersion"] == 39
    assert board["uid"]
    titles = {p["title"] for p in data_panels()}
    expected = {
        "Span throughput",
        "Span drop rate",
        "Span queue utilisation",
        "Export latency",
        "API error rate",
        "Memory pressure",
        "Evaluation queue utilisation",
        "Observe overhead (p95)",
        "Drops by reason",
        "Retries by endpoint",
        "Auth circuit open / paused by 429",
        "SDK loop lag",
        "In-flight requests",
        "Oldest queued item age",
    }
    assert expected <= titles


def alert_threshold(name: str) -> float:
    """The number an alert's expression compares against (its first ``> N``; later ones are guards)."""
    (rule,) = [r for r in parse_alerts() if r["alert"] == name]
    return float(re.findall(r">\s*([0-9.]+)", rule["expr"])[0])


def red_step(title: str) -> float:
    (panel,) = [p for p in data_panels() if p["title"] == title]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return float(next(s["value"] for s in steps if s["color"] == "red"))


@pytest.mark.parametrize(
    ("title", "alert", "scale"),
    [
        ("Span drop rate", "JudgevalHighDropRate", 1.0),
        ("Span queue utilisation", "JudgevalQueueSaturated", 1.0),
        ("Evaluation queue utilisation", "JudgevalEvaluationQueueFull", 1.0),
        ("Memory pressure", "JudgevalMemoryPressure", 1.0),
        ("SDK loop lag", "JudgevalLoopLagHigh", 1.0),
        ("API error rate", "JudgevalHighAPIErrorRate", 1.0),
        ("Observe overhead (p95)", "JudgevalHighObserveOverhead", 1000.0),  # the panel shows ms
    ],
)
def test_panel_red_threshold_is_the_alert_threshold(title: str, alert: str, scale: float) -> None:
    """A panel turns red exactly where its alert's expression fires (in the panel's unit)."""
    assert red_step(title) == pytest.approx(alert_threshold(alert) * scale)
    (panel,) = [p for p in data_panels() if p["title"] == title]
    assert alert in panel["description"]


def test_evaluation_queue_gauge_reads_the_capacity_metric() -> None:
    """The evaluation-queue gauge divides by the exported capacity (summed), not a hard-coded 1000."""
    (panel,) = [p for p in data_panels() if p["title"] == "Evaluation queue utilisation"]
    (target,) = panel["targets"]
    assert 'sum(judgeval_queue_capacity{job=~"$job", instance=~"$instance", queue="evaluations"}' in target["expr"]
    assert panel["fieldConfig"]["defaults"]["max"] == 100
    assert "1000" not in json.dumps(panel)


def test_export_latency_panel_shows_attempts_including_failures() -> None:
    """Export latency also plots the traces attempt histogram, which observes failed attempts too."""
    (panel,) = [p for p in data_panels() if p["title"] == "Export latency"]
    exprs = [t["expr"] for t in panel["targets"]]
    assert any("judgeval_api_request_duration_seconds_bucket" in e and 'endpoint="traces"' in e for e in exprs)
    assert "failures" in panel["description"]


def test_dashboard_uses_the_provisioned_datasource() -> None:
    """Every panel, target and variable uses the datasource uid provisioned for Grafana."""
    uid = re.search(r"^\s*uid:\s*(\S+)", DATASOURCE.read_text(), flags=re.MULTILINE)
    assert uid is not None
    for panel in data_panels():
        assert panel["datasource"]["uid"] == uid[1], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid[1], panel["title"]
    for variable in dashboard()["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid[1]
    assert "${DS_" not in DASHBOARD.read_text()


def test_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    """Panel ids are unique and gridPos rectangles fit 24 columns without overlapping."""
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[(x, y)] = panel["title"]


def test_dashboard_targets_are_well_formed() -> None:
    """Every target has an expr, a legendFormat and a refId unique within its panel."""
    for panel in data_panels():
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["legendFormat"], panel["title"]


@pytest.mark.prometheus
def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses every dashboard query (as recording rules, variables substituted)."""
    exprs = [as_promql(e) for e in dashboard_exprs() if not e.startswith("label_values")]
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        rules += [f"      - record: dashboard:query{i}", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text("\n".join(rules) + "\n")
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


# --- stack wiring ----------------------------------------------------------------------------


def test_dashboard_provider_path_matches_compose_mount() -> None:
    """Grafana's provider reads the folder that docker-compose mounts the dashboards into."""
    provider_path = re.search(r"^\s*path:\s*(\S+)", PROVIDER.read_text(), flags=re.MULTILINE)
    mount = re.search(r"- \./grafana/dashboards:(/[^:\s]+)", COMPOSE.read_text())
    assert provider_path is not None and mount is not None
    assert provider_path[1] == mount[1]
    assert "./grafana/provisioning:/etc/grafana/provisioning" in COMPOSE.read_text()


def test_compose_wiring_matches_configs() -> None:
    """Service names, mounts and host mapping in compose agree with the config files."""
    compose = COMPOSE.read_text()
    prometheus_config = PROMETHEUS_CONFIG.read_text()
    # rule_files is relative, so the whole folder must be mounted next to prometheus.yml.
    assert "- ./prometheus:/etc/prometheus" in compose
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose
    assert re.search(r"rule_files:\n\s+- alerts\.yml", prometheus_config)
    assert "host.docker.internal:host-gateway" in compose
    assert "host.docker.internal:9464" in prometheus_config
    assert "alertmanager:9093" in prometheus_config and "\n  alertmanager:\n" in compose
    assert "url: http://prometheus:9090" in DATASOURCE.read_text()
    assert "\n  prometheus:\n" in compose and "\n  grafana:\n" in compose


# --- run-local.sh ----------------------------------------------------------------------------


def test_run_local_script_is_valid_bash(require_binary: Callable[..., str]) -> None:
    """run-local.sh parses with bash -n and is executable."""
    result = run(require_binary("bash"), "-n", str(RUN_LOCAL))
    assert result.returncode == 0, result.stderr
    assert os.access(RUN_LOCAL, os.X_OK)


def test_require_binary_fails_under_ci_and_skips_otherwise(
    monkeypatch: pytest.MonkeyPatch, require_binary: Callable[..., str]
) -> None:
    """A missing binary fails the test when CI=true and skips it otherwise."""
    missing = "judgeval-no-such-binary"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_binary(missing)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_binary(missing)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for(what: str, check: Any, proc: subprocess.Popen[str], log: Path) -> Any:
    """Poll check() until it returns a truthy value, the script dies, or WAIT_SECONDS pass."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"run-local.sh exited early:\n{log.read_text()}"
        try:
            if result := check():
                return result
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.prometheus
@pytest.mark.slow
def test_run_local_starts_both_servers_and_stops_them_on_ctrl_c(
    prometheus_binary: str, alertmanager_binary: str, tmp_path: Path
) -> None:
    """run-local.sh serves all rules with the local targets, and Ctrl-C stops both servers."""
    prom_port, am_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "PROMETHEUS_PORT": str(prom_port),
        "ALERTMANAGER_PORT": str(am_port),
        "JUDGEVAL_METRICS_PORT": str(metrics_port),
        "PROMETHEUS_BIN": prometheus_binary,
        "ALERTMANAGER_BIN": alertmanager_binary,
        "TMPDIR": str(tmp_path),
    }
    log = tmp_path / "run-local.log"
    workdir = tmp_path / "cwd"  # any cwd works: the script locates its configs itself
    workdir.mkdir()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(RUN_LOCAL)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # own process group, like a terminal's foreground job
        )
    prom, am = f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"
    try:
        for url in (f"{prom}/-/ready", f"{am}/-/ready"):
            wait_for(url, lambda url=url: urllib.request.urlopen(url, timeout=5).status == 200, proc, log)

        groups = get_json(f"{prom}/api/v1/rules")["data"]["groups"]
        loaded = {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}
        parsed = {r["alert"]: r for r in parse_alerts()}
        assert set(loaded) == set(parsed)
        for name, rule in parsed.items():
            assert loaded[name]["labels"]["severity"] == rule["severity"]
            assert loaded[name]["annotations"]["runbook_url"] == rule["runbook_url"]

        scrape_urls = wait_for(
            "Prometheus to load its scrape target",
            lambda: [t["scrapeUrl"] for t in get_json(f"{prom}/api/v1/targets")["data"]["activeTargets"]],
            proc,
            log,
        )
        assert scrape_urls == [f"http://127.0.0.1:{metrics_port}/metrics"]
        wait_for(
            "Prometheus to discover Alertmanager",
            lambda: [
                a
                for a in get_json(f"{prom}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
                if f"127.0.0.1:{am_port}" in a["url"]
            ],
            proc,
            log,
        )
        for expr in dashboard_exprs():
            if expr.startswith("label_values"):
                continue
            query = urllib.parse.urlencode({"query": as_promql(expr)})
            assert get_json(f"{prom}/api/v1/query?{query}")["status"] == "success", expr

        # Ctrl-C signals the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=WAIT_SECONDS)
        deadline = time.monotonic() + WAIT_SECONDS
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(proc.pid), "a server outlived run-local.sh"
        assert not list(tmp_path.glob("judgeval-monitoring.*")), "temp storage left behind"
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT_SECONDS)
