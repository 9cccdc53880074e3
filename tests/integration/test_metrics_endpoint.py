"""/metrics over real HTTP: the contract, values equal to get_health_metrics(), no secret leaks, port errors."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.parser import text_string_to_metric_families

from judgeval_async import MetricsServerError, Tracer

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-SECRET-0123456789"
CONTRACT = Path(__file__).resolve().parents[2] / "monitoring" / "metrics_contract.json"
Handler = Callable[[httpx.Request], httpx.Response]


def answering(status: int) -> Handler:
    """A backend that resolves the project and answers ``status`` to everything else."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/projects/resolve/"):
            return httpx.Response(200, json={"project_id": "p1"})
        return httpx.Response(status, json={} if status < 400 else {"detail": "no"})

    return handle


@pytest.fixture(autouse=True)
def single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about one process: ignore any multi-process directory set in the environment."""
    monkeypatch.delenv("JUDGEVAL_METRICS_DIR", raising=False)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


@pytest.fixture
def make_tracer() -> Iterator[Callable[..., Tracer]]:
    """Tracers on an in-memory backend, zero-backoff retries; all shut down afterwards."""
    tracers: list[Tracer] = []

    def make(handler: Handler | None = None, **kwargs: Any) -> Tracer:
        options: dict[str, Any] = {
            "api_key": SECRET,
            "organization_id": "org-1",
            "api_url": "http://judgment.test",
            "retry_testing": True,
            "retry_attempts": 2,
        }
        options.update(kwargs)
        t = Tracer("metrics-test", http_transport=httpx.MockTransport(handler or answering(200)), **options)
        tracers.append(t)
        return t

    yield make
    for t in tracers:
        t.shutdown(timeout=5)


def drive(tracer: Tracer, n: int = 4) -> None:
    """Create ``n`` spans, each with a tag and an evaluation, then flush."""

    @tracer.observe
    def work(i: int) -> int:
        tracer.tag(f"t{i}")
        tracer.async_evaluate("faithfulness", {"input": "x"})
        return i

    for i in range(n):
        work(i)
    tracer.force_flush(timeout=5)


def fetch(url: str) -> str:
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    return response.text


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], name: str, **labels: str) -> float:
    matches = [s.value for fam in fams.values() for s in fam.samples if s.name == name and s.labels == labels]
    assert len(matches) == 1, (name, labels)
    return float(matches[0])


def by_label(fams: dict[str, Any], name: str, label: str) -> dict[str, float]:
    fam = fams[name[: -len("_total")]]
    return {s.labels[label]: s.value for s in fam.samples if s.value}


def family_name(name: str, kind: str) -> str:
    """prometheus_client's parser names a counter family without its ``_total``."""
    return name[: -len("_total")] if kind == "counter" else name


def exported_label_values(fam: Any) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for sample in fam.samples:
        for label, v in sample.labels.items():
            if label != "le":
                out.setdefault(label, set()).add(v)
    return out


def test_metrics_endpoint_serves_exactly_the_contract(make_tracer):
    """/metrics serves exactly the contract's metrics: same names, types, help, labels, label values and buckets."""
    contract = json.loads(CONTRACT.read_text())
    tracer = make_tracer()
    server = tracer.start_metrics_server(port=0)
    fams = families(fetch(server.url))  # a fresh tracer: only the pre-seeded label values
    served = {fam.name for fam in fams.values()}
    expected = {family_name(name, spec["type"]) for name, spec in contract.items()}
    assert served == expected, f"served but not in the contract: {served - expected}; missing: {expected - served}"
    for name, spec in contract.items():
        fam = fams[family_name(name, spec["type"])]
        assert fam.type == spec["type"], name
        assert fam.documentation == spec["help"], name
        assert fam.samples, name
        assert all(set(s.labels) - {"le"} == set(spec["labels"]) for s in fam.samples), name
        exported = exported_label_values(fam)
        open_labels = {"version"}  # judgeval_info's value is the package version
        assert set(spec.get("label_values", {})) == set(spec["labels"]) - open_labels, f"{name}: label_values"
        for label, values in spec.get("label_values", {}).items():
            assert exported[label] == set(values), f"{name}{{{label}}}: exported {sorted(exported[label])}"
        if spec["type"] == "histogram":
            les = {float(s.labels["le"]) for s in fam.samples if s.name.endswith("_bucket")}
            assert les == {*map(float, spec["buckets"]), float("inf")}, name


def test_contract_label_values_are_the_codes_fixed_sets():
    """The contract's reasons, endpoints and queues are the package's own constants (a new one needs the contract)."""
    from judgeval_async import DROP_REASONS
    from judgeval_async._multiprocess import QUEUES
    from judgeval_async._serialize import DEGRADE_REASONS
    from judgeval_async._transport import ENDPOINTS

    contract = json.loads(CONTRACT.read_text())
    for signal in ("spans", "evaluations", "tags"):
        assert set(contract[f"judgeval_{signal}_dropped_total"]["label_values"]["reason"]) == set(DROP_REASONS)
    assert set(contract["judgeval_values_degraded_total"]["label_values"]["reason"]) == set(DEGRADE_REASONS)
    for name, spec in contract.items():
        values = spec.get("label_values", {})
        if "endpoint" in values:
            assert set(values["endpoint"]) == set(ENDPOINTS), name
        if "queue" in values:
            assert set(values["queue"]) == set(QUEUES), name


def test_error_status_codes_beyond_the_seeded_ones_are_the_only_open_values(make_tracer):
    """A 404 adds status_code="404" (open by contract); every other label stays inside the contract's values."""
    contract = json.loads(CONTRACT.read_text())
    tracer = make_tracer(answering(404))
    drive(tracer, n=2)
    server = tracer.start_metrics_server(port=0)
    fams = families(fetch(server.url))
    for name, spec in contract.items():
        exported = exported_label_values(fams[family_name(name, spec["type"])])
        for label, values in spec.get("label_values", {}).items():
            extra = exported[label] - set(values)
            if label in spec.get("open_label_values", []):
                assert extra <= {"404"}, name
            else:
                assert not extra, f"{name}{{{label}}}: {extra} not in the contract"
    errors = exported_label_values(fams["judgeval_api_errors"])
    assert "404" in errors["status_code"]


def test_values_match_get_health_metrics_after_flush(make_tracer):
    """After a flush, every ledger count on /metrics equals the same count in get_health_metrics()."""
    tracer = make_tracer()
    drive(tracer, n=6)
    server = tracer.start_metrics_server(port=0)
    fams = families(fetch(server.url))
    health = tracer.get_health_metrics()
    assert health["spans_created"] == 6
    assert value(fams, "judgeval_spans_created_total") == health["spans_created"]
    assert value(fams, "judgeval_spans_exported_total") == health["spans_exported"] == 6
    assert by_label(fams, "judgeval_spans_dropped_total", "reason") == health["spans_dropped_by_reason"] == {}
    assert value(fams, "judgeval_evaluations_enqueued_total") == health["evaluations_enqueued"] == 6
    assert value(fams, "judgeval_evaluations_delivered_total") == health["evaluations_delivered"] == 6
    assert value(fams, "judgeval_tags_buffered_total") == health["tags_buffered"] == 6
    assert value(fams, "judgeval_tags_flushed_total") == health["tags_flushed"] == 6
    assert value(fams, "judgeval_queue_capacity", queue="spans") == health["queue_capacity"]
    assert value(fams, "judgeval_queue_capacity", queue="evaluations") == health["eval_queue_capacity"]
    assert value(fams, "judgeval_queue_size", queue="spans") == health["queue_size"] == 0
    assert value(fams, "judgeval_metadata_entries") == health["metadata_entries"]
    assert value(fams, "judgeval_tag_buffer_size") == health["tag_buffer_size"]
    assert value(fams, "judgeval_spans_in_flight") == health["spans_in_flight"] == 0
    assert value(fams, "judgeval_last_export_timestamp_seconds") > 0
    assert value(fams, "judgeval_export_duration_seconds_count") >= 1
    assert value(fams, "judgeval_api_request_duration_seconds_count", endpoint="traces") >= 1


def test_api_errors_and_drop_reasons_match_health(make_tracer):
    """A backend answering 500 shows up as api_errors{endpoint,status_code}; its spans are held, not dropped."""
    tracer = make_tracer(answering(500))
    drive(tracer, n=3)
    server = tracer.start_metrics_server(port=0)
    fams = families(fetch(server.url))
    health = tracer.get_health_metrics()
    for endpoint, by_status in health["api_errors_by_endpoint"].items():
        for status, n in by_status.items():
            # Probes of the down endpoints go on between the scrape and the health read: never fewer in health.
            assert value(fams, "judgeval_api_errors_total", endpoint=endpoint, status_code=status) <= n
    assert value(fams, "judgeval_api_errors_total", endpoint="traces", status_code="500") >= 1
    assert by_label(fams, "judgeval_spans_dropped_total", "reason") == health["spans_dropped_by_reason"]
    assert health["spans_dropped_by_reason"] == {}  # an endpoint failing everything is down: spans wait
    assert health["spans_queued"] + health["spans_in_flight"] + health["spans_spooled"] == 3
    assert value(fams, "judgeval_endpoint_up", endpoint="traces") == 0
    assert value(fams, "judgeval_api_retries_total", endpoint="traces") <= health["endpoints"]["traces"]["retries"]
    assert by_label(fams, "judgeval_evaluations_dropped_total", "reason") == health["evaluations_dropped_by_reason"]


def test_api_key_appears_nowhere(make_tracer, caplog):
    """The API key is absent from /metrics, health, reprs and DEBUG logs while requests fail with 401 and 500."""
    caplog.set_level(logging.DEBUG)
    texts = []
    reasons = {}
    for status in (401, 500):
        tracer = make_tracer(answering(status))
        drive(tracer, n=2)
        with tracer.start_metrics_server(port=0) as server:
            texts.append(fetch(server.url))
        health = tracer.get_health_metrics()
        reasons[status] = set(health["spans_dropped_by_reason"])
        texts += [str(health), repr(tracer), repr(tracer.config)]
    texts.append(caplog.text)
    assert reasons == {401: {"auth_error"}, 500: set()}  # 500 everywhere: held, not dropped
    assert caplog.records
    for text in texts:
        assert SECRET not in text
        assert "0123456789" not in text


def test_port_taken_raises_and_tracer_keeps_working(make_tracer):
    """A taken port raises MetricsServerError (an OSError) to the caller only; tracing goes on."""
    tracer = make_tracer()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(MetricsServerError, match=str(port)) as info:
            tracer.start_metrics_server(port=port)
    assert isinstance(info.value, OSError)
    drive(tracer, n=2)
    assert tracer.get_health_metrics()["spans_exported"] == 2


def test_server_reports_its_port_and_closes(make_tracer):
    """port=0 gets a free port, .url points at /metrics on loopback, and close() is idempotent and final."""
    tracer = make_tracer()
    server = tracer.start_metrics_server(port=0)
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"
    assert "judgeval_spans_created_total" in fetch(server.url)
    server.close()
    server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=2)


def test_shutdown_closes_the_server(make_tracer):
    """tracer.shutdown() stops the metrics server it started."""
    tracer = make_tracer()
    server = tracer.start_metrics_server(port=0)
    tracer.shutdown(timeout=5)
    assert server.closed


def test_users_own_registry_gets_the_same_metrics(make_tracer):
    """tracer.metrics_collector() registered on a user's registry serves the same counts."""
    tracer = make_tracer()
    drive(tracer, n=2)
    registry = CollectorRegistry()
    registry.register(tracer.metrics_collector())
    fams = families(generate_latest(registry).decode())
    assert value(fams, "judgeval_spans_exported_total") == 2


@pytest.mark.asyncio
async def test_asgi_mount_serves_metrics(make_tracer):
    """prometheus_client.make_asgi_app on a registry holding the collector serves /metrics to an ASGI client."""
    tracer = make_tracer()
    registry = CollectorRegistry()
    registry.register(tracer.metrics_collector())
    app = make_asgi_app(registry=registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert value(families(response.text), "judgeval_spans_created_total") == 0


def test_shutdown_closes_the_metrics_server_within_its_deadline(make_tracer):
    """tracer.shutdown() stops /metrics too, within the shutdown's own deadline (no 0.5 s poll wait)."""

    tracer = make_tracer()
    server = tracer.start_metrics_server(port=0)
    assert httpx.get(server.url, timeout=5.0).status_code == 200
    started = time.monotonic()
    tracer.shutdown(timeout=2.0)
    assert time.monotonic() - started < 2.5
    assert server.closed
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(2.0)
        s.connect(("127.0.0.1", server.port))
