"""A real Prometheus scraping a real tracer: every dashboard query and alert expression evaluates, the main panels
have data, and the API-error rate rises when the backend starts answering 500."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "judgeval_sdk.json"
ALERTS = REPO / "monitoring" / "prometheus" / "alerts.yml"

pytestmark = [pytest.mark.prometheus, pytest.mark.slow, pytest.mark.timeout(300)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` (a query against a live server: there is no event to wait on) until truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _panel_queries() -> list[tuple[str, str]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    doc = json.loads(DASHBOARD.read_text())
    out = []
    for panel in walk(doc["panels"]):
        for target in panel.get("targets", []):
            # Grafana's template variables, as Grafana would expand them for "All" and a 1 s scrape interval.
            expr = (
                target["expr"]
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "15s")
                .replace("$job", ".*")
                .replace("$instance", ".*")
            )
            out.append((panel["title"], expr))
    return out


@pytest.fixture
def traced_process(local_server: LocalJudgmentServer) -> Iterator[tuple[Tracer, int]]:
    """This process, tracing continuously against the local server and serving /metrics on a free port."""
    tracer = Tracer(
        project_name="live",
        api_key=local_server.api_key,
        organization_id=local_server.org_id,
        api_url=local_server.url,
        schedule_delay=0.2,
        tag_flush_interval=0.2,
        retry_testing=True,
        retry_attempts=2,
    )
    server = tracer.start_metrics_server(port=0)
    stop = threading.Event()

    @tracer.observe
    def work(i: int) -> int:
        tracer.tag("live")
        tracer.async_evaluate("faithfulness", {"input": i})
        return i

    def produce() -> None:
        i = 0
        while not stop.is_set():
            with tracer.span("request"):
                work(i)
            i += 1
            stop.wait(0.005)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        yield tracer, server.port
    finally:
        stop.set()
        producer.join(5.0)
        tracer.shutdown(timeout=2.0)


@pytest.fixture
def live_prometheus(traced_process: tuple[Tracer, int], prometheus_binary: str, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus (Debian's binary) on a free loopback port, scraping the traced process every second."""
    binary = prometheus_binary
    _, metrics_port = traced_process
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files:\n  - alerts.yml\n"
        "scrape_configs:\n  - job_name: judgeval-sdk\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _get(f"{url}/-/ready") == 200, 60.0, "Prometheus to be ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10.0)
        log.close()


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2.0).status_code
    except httpx.HTTPError:
        return 0


def _query(base: str, expr: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10.0)
    body: dict[str, Any] = response.json()
    assert body.get("status") == "success", (expr, body)
    return body


def _values(base: str, expr: str) -> list[float]:
    return [float(r["value"][1]) for r in _query(base, expr)["data"]["result"]]


def test_dashboard_and_alerts_evaluate_against_live_metrics(
    live_prometheus: str, local_server: LocalJudgmentServer
) -> None:
    """Every panel query and alert expression evaluates; throughput, queue and export panels have data; the API
    error rate rises above zero once the backend answers 500."""
    prometheus = live_prometheus
    # Enough scrapes for rate() over 1m windows to have two samples, and an export to have happened.
    _until(lambda: [v for v in _values(prometheus, "judgeval_spans_exported_total") if v > 0], 60.0, "exports")
    _until(lambda: _values(prometheus, "rate(judgeval_spans_created_total[1m]) > 0"), 60.0, "a span rate")

    for title, expr in _panel_queries():
        _query(prometheus, expr)  # raises on a PromQL error
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10.0).json()["data"]["groups"]
    alert_exprs = [(r["name"], r["query"]) for g in rules for r in g["rules"] if r["type"] == "alerting"]
    assert len(alert_exprs) >= 7
    for _name, expr in alert_exprs:
        _query(prometheus, expr)
    assert all(r.get("health") == "ok" for g in rules for r in g["rules"]), rules

    queries = dict(_panel_queries())
    for title in ("Span throughput", "Span queue utilisation", "Export latency"):
        assert _values(prometheus, queries[title]), f"panel {title!r} has no data"

    error_rate = queries["API error rate"]
    assert sum(_values(prometheus, error_rate)) == 0.0
    local_server.set_fault(None, kind="status", status=500)
    _until(lambda: sum(_values(prometheus, error_rate)) > 0, 60.0, "the API error rate to rise")
