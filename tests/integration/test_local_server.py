"""The local Judgment API server: wire protocol, auth, validation, records, control, lifecycle."""

from __future__ import annotations

import ast
import gzip
import json
import pathlib
import threading

import httpx
import pytest

import judgeval_async.testing
from judgeval_async.testing import ENDPOINTS, LocalJudgmentServer, project_id_for

pytestmark = pytest.mark.timeout(30)

TRACE_A = "0af7651916cd43dd8448eb211c80319c"
TRACE_B = "4bf92f3577b34da6a3ce929d0e0e4736"


def client(srv: LocalJudgmentServer, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers=srv.auth_headers(), timeout=5.0, **kwargs)


def eval_run(**overrides) -> dict:
    run = {
        "project_name": "demo",
        "eval_name": "helpfulness",
        "trace_id": TRACE_A,
        "trace_span_id": "00f067aa0ba902b7",
        "examples": [{"input": "q", "actual_output": "a"}],
        "judgment_scorers": [{"score_type": "faithfulness", "threshold": 0.5}],
        "custom_scorers": [],
        "created_at": "2024-01-01T00:00:00Z",
    }
    run.update(overrides)
    return run


def test_resolve_returns_deterministic_project_id(local_server):
    """resolve maps a project name to the same derived id every time."""
    with client(local_server) as c:
        first = c.post("/v1/projects/resolve/", json={"project_name": "demo"})
        second = c.post("/v1/projects/resolve/", json={"project_name": "demo"})
    assert first.status_code == 200
    assert first.json() == second.json() == {"project_id": project_id_for("demo")}
    assert project_id_for("demo").startswith("proj-")
    assert local_server.request_count("resolve", 200) == 2


def test_tags_endpoint_records_tags(local_server):
    """The per-trace tags endpoint answers success and records the tags under the trace."""
    with client(local_server) as c:
        r = c.post(f"/v1/projects/p1/traces/{TRACE_A}/tags", json={"tags": ["a", "b"]})
    assert r.json() == {"success": True}
    assert local_server.tags == {TRACE_A: {"a", "b"}}
    (call,) = local_server.tag_calls
    assert (call.endpoint, call.project, call.tags_by_trace) == ("tags", "p1", {TRACE_A: ("a", "b")})


def test_tags_batch_merges_with_per_trace_tags(local_server):
    """Batch and per-trace tag calls merge into one trace -> tags view; the raw view keeps both."""
    with client(local_server) as c:
        c.post(f"/v1/projects/p1/traces/{TRACE_A}/tags", json={"tags": ["a"]})
        r = c.post(
            "/traces/tags/add_batch",
            json={"project_name": "demo", "tags_by_trace": {TRACE_A: ["b"], TRACE_B: ["c"]}},
        )
    assert r.status_code == 200 and r.json() == {"success": True}
    assert local_server.tags == {TRACE_A: {"a", "b"}, TRACE_B: {"c"}}
    assert [call.endpoint for call in local_server.tag_calls] == ["tags", "tags_batch"]
    assert local_server.tag_calls[1].project == "demo"


def test_evals_endpoint_queues_and_records(local_server):
    """An eval run is acknowledged as queued and recorded with its ids and payload."""
    with client(local_server) as c:
        r = c.post("/v1/projects/p1/eval-queue/examples", json=eval_run())
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and body["status"] == "queued" and body["message"]
    (record,) = local_server.evals
    assert (record.project_id, record.eval_name, record.trace_id) == ("p1", "helpfulness", TRACE_A)
    assert record.payload == eval_run()


def test_duplicate_eval_delivery_shows_only_in_raw_view(local_server):
    """The same run delivered twice is one distinct eval but two raw ones."""
    with client(local_server) as c:
        for _ in range(2):
            c.post("/v1/projects/p1/eval-queue/examples", json=eval_run())
        c.post("/v1/projects/p1/eval-queue/examples", json=eval_run(eval_name="other"))
    assert len(local_server.evals) == 2
    assert len(local_server.raw_evals) == 3


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong", "X-Organization-Id": "test-org"},
        {"Authorization": "test-key", "X-Organization-Id": "test-org"},
        {"Authorization": "Bearer test-key", "X-Organization-Id": "other-org"},
        {"Authorization": "Bearer test-key"},
    ],
    ids=["none", "wrong-key", "no-bearer", "wrong-org", "no-org"],
)
@pytest.mark.parametrize("path", ["/v1/projects/resolve/", "/traces/tags/add_batch"])
def test_bad_credentials_are_401(local_server, headers, path):
    """Missing or wrong credentials get a JSON 401 and nothing is recorded."""
    with httpx.Client(base_url=local_server.url, timeout=5.0) as c:
        r = c.post(path, json={"project_name": "demo", "tags_by_trace": {}}, headers=headers)
    assert r.status_code == 401
    assert "detail" in r.json()
    assert local_server.tag_calls == []


@pytest.mark.parametrize(
    "path", ["/v1/projects/resolve/", "/v1/projects/p/eval-queue/examples", "/traces/tags/add_batch"]
)
def test_unparseable_json_is_400(local_server, path):
    """A body that is not JSON at all is a 400."""
    with client(local_server) as c:
        r = c.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/projects/resolve/", {"project_name": 3}),
        ("/v1/projects/resolve/", []),
        (f"/v1/projects/p/traces/{TRACE_A}/tags", {"tags": "a"}),
        (f"/v1/projects/p/traces/{TRACE_A}/tags", {"tags": [1]}),
        ("/traces/tags/add_batch", {"project_name": "demo", "tags_by_trace": []}),
        ("/traces/tags/add_batch", {"project_name": "demo", "tags_by_trace": {TRACE_A: [2]}}),
        ("/v1/projects/p/eval-queue/examples", eval_run(eval_name=None)),
        ("/v1/projects/p/eval-queue/examples", eval_run(examples="x")),
        ("/v1/projects/p/eval-queue/examples", eval_run(trace_span_id=7)),
        ("/v1/projects/p/eval-queue/examples", {k: v for k, v in eval_run().items() if k != "examples"}),
    ],
)
def test_wrong_shape_is_422(local_server, path, body):
    """Valid JSON of the wrong shape is a 422 and is not recorded."""
    with client(local_server) as c:
        r = c.post(path, json=body)
    assert r.status_code == 422, r.text
    assert local_server.tag_calls == [] and local_server.raw_evals == []


def test_unknown_path_is_404_and_wrong_method_is_405(local_server):
    """Unknown paths are 404 (counted as "unknown"); GET on an API path is 405."""
    with client(local_server) as c:
        assert c.post("/v1/nothing").status_code == 404
        assert c.get("/v1/projects/resolve/").status_code == 405
    assert local_server.request_count("unknown", 404) == 1
    assert local_server.request_count("resolve", 405) == 1


def test_paths_under_a_prefix_are_routed(local_server):
    """An api_url with a path prefix still reaches every endpoint."""
    with httpx.Client(base_url=f"{local_server.url}/api", headers=local_server.auth_headers(), timeout=5.0) as c:
        assert c.post("/v1/projects/resolve/", json={"project_name": "x"}).status_code == 200
        assert c.post("/traces/tags/add_batch", json={"project_name": "x", "tags_by_trace": {}}).status_code == 200
    assert local_server.request_count("resolve", 200) == 1
    assert local_server.request_count("tags_batch", 200) == 1


def test_batch_tags_switched_off_at_construction_is_404(local_server_factory):
    """A server built without batch tags answers 404 there, like an older backend."""
    srv = local_server_factory(batch_tags_enabled=False)
    with client(srv) as c:
        r = c.post("/traces/tags/add_batch", json={"project_name": "x", "tags_by_trace": {}})
        assert r.status_code == 404
        srv.set_batch_tags_enabled(True)
        r = c.post("/traces/tags/add_batch", json={"project_name": "x", "tags_by_trace": {}})
        assert r.status_code == 200
    assert srv.request_count("tags_batch", 404) == 1


def test_batch_tags_switched_off_at_run_time_is_404(local_server):
    """Switching batch tags off while running turns the next call into a 404."""
    body = {"project_name": "x", "tags_by_trace": {TRACE_A: ["t"]}}
    with client(local_server) as c:
        assert c.post("/traces/tags/add_batch", json=body).status_code == 200
        local_server.set_batch_tags_enabled(False)
        assert not local_server.batch_tags_enabled
        assert c.post("/traces/tags/add_batch", json=body).status_code == 404
    assert len(local_server.tag_calls) == 1


def test_headers_seen_redacts_the_api_key(local_server):
    """Recorded headers keep the auth scheme and org but never the key itself."""
    with client(local_server) as c:
        c.post("/v1/projects/resolve/", json={"project_name": "x"}, headers={"X-Extra": "1"})
    (headers,) = local_server.headers_seen("resolve")
    assert headers["authorization"] == "Bearer <redacted>"
    assert headers["x-organization-id"] == "test-org"
    assert headers["x-extra"] == "1"
    assert local_server.api_key not in json.dumps(local_server.headers_seen("resolve"))


def test_gzip_json_body_is_decoded_and_bytes_are_counted(local_server):
    """A gzip-encoded JSON body is accepted; wire bytes are the compressed size."""
    raw = json.dumps(eval_run(examples=[{"input": "x" * 5000}])).encode()
    packed = gzip.compress(raw)
    with client(local_server) as c:
        r = c.post(
            "/v1/projects/p/eval-queue/examples",
            content=packed,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
    assert r.status_code == 200
    assert local_server.bytes_received("evals") == (len(packed), len(raw))
    assert local_server.stats()["bytes"]["evals"] == {"wire": len(packed), "decoded": len(raw)}


def test_bad_gzip_is_400(local_server):
    """A body claiming gzip that is not gzip is a 400."""
    with client(local_server) as c:
        r = c.post(
            "/v1/projects/resolve/",
            content=b"plain",
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
    assert r.status_code == 400


def test_keep_alive_reuses_one_connection(local_server):
    """Sequential requests from one httpx client travel on one TCP connection."""
    with client(local_server) as c:
        for _ in range(5):
            assert c.post("/v1/projects/resolve/", json={"project_name": "x"}).status_code == 200
    assert local_server.stats()["connections"] == 1


def test_body_over_the_limit_is_413(local_server_factory):
    """A body larger than max_body_bytes is answered 413."""
    srv = local_server_factory(max_body_bytes=100)
    with client(srv) as c:
        r = c.post("/v1/projects/resolve/", json={"project_name": "x" * 200})
    assert r.status_code == 413
    assert srv.request_count("resolve", 413) == 1


def test_wait_for_wakes_when_records_arrive_from_another_thread(local_server):
    """wait_for returns True as soon as another thread's requests reach the thresholds."""

    def send() -> None:
        with client(local_server) as c:
            c.post(f"/v1/projects/p/traces/{TRACE_A}/tags", json={"tags": ["a"]})
            c.post("/v1/projects/p/eval-queue/examples", json=eval_run())

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert local_server.wait_for(tag_traces=1, evals=1, requests={"tags": 1}, timeout=10)
    finally:
        sender.join()


def test_wait_for_returns_false_on_timeout(local_server):
    """wait_for gives up after its timeout when nothing arrives."""
    assert local_server.wait_for(spans=1, timeout=0.05) is False


def test_reset_records_forgets_everything(local_server):
    """reset_records clears counts and records."""
    with client(local_server) as c:
        c.post(f"/v1/projects/p/traces/{TRACE_A}/tags", json={"tags": ["a"]})
    local_server.reset_records()
    assert local_server.tags == {} and local_server.tag_calls == []
    assert local_server.request_count("tags") == 0


def test_control_endpoint_drives_faults_stats_and_records(local_server):
    """/_control/ sets and clears faults, reports stats, resets records and toggles batch tags."""
    with client(local_server) as c, httpx.Client(base_url=local_server.url, timeout=5.0) as ctl:
        r = ctl.post(
            "/_control/fault",
            json={"endpoint": "resolve", "kind": "status", "status": 429, "retry_after": 2},
        )
        assert r.status_code == 200 and r.json()["fault"]["status"] == 429
        r = c.post("/v1/projects/resolve/", json={"project_name": "x"})
        assert (r.status_code, r.headers["retry-after"]) == (429, "2")
        stats = ctl.get("/_control/stats").json()
        assert stats["requests"]["resolve"] == {"429": 1}
        assert stats["faults"] == {"resolve": [{"kind": "status", "status": 429, "retry_after": "2"}]}
        assert ctl.post("/_control/clear", json={"endpoint": "resolve"}).status_code == 200
        assert c.post("/v1/projects/resolve/", json={"project_name": "x"}).status_code == 200
        assert ctl.post("/_control/reset").status_code == 200
        assert ctl.get("/_control/stats").json()["requests"] == {}
        assert ctl.post("/_control/batch_tags", json={"enabled": False}).status_code == 200
        assert not local_server.batch_tags_enabled
    assert "control" not in local_server.stats()["requests"]


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "nope"},
        {"kind": "latency"},
        {"kind": "status", "status": 42},
        {"kind": "ratio", "ratio": 2},
        {"kind": "status", "colour": "red"},
        {"endpoint": "nowhere", "kind": "blackhole"},
        {"kind": "refuse"},
        {"endpoint": "traces", "kind": "refuse", "recover_after_seconds": 1},
        {"kind": "latency", "range": [1]},
        {},
    ],
)
def test_control_rejects_bad_faults_with_422(local_server, body):
    """Invalid fault requests over HTTP are 422 and install nothing."""
    with httpx.Client(base_url=local_server.url, timeout=5.0) as ctl:
        r = ctl.post("/_control/fault", json=body)
    assert r.status_code == 422, r.text
    assert local_server.active_faults() == {}


def test_control_unknown_action_and_wrong_method(local_server):
    """Unknown control actions are 404 and the wrong verb is 405."""
    with httpx.Client(base_url=local_server.url, timeout=5.0) as ctl:
        assert ctl.post("/_control/explode").status_code == 404
        assert ctl.post("/_control/stats").status_code == 405
        assert ctl.get("/_control/reset").status_code == 405


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "example.com", "::1"])
def test_non_loopback_hosts_are_refused(host):
    """The server refuses to bind anything but loopback IPv4."""
    with pytest.raises(ValueError, match="loopback"):
        LocalJudgmentServer(host=host)


def test_restart_reuses_the_port_and_keeps_records():
    """A stopped server can start again on the same port, keeping what it recorded."""
    srv = LocalJudgmentServer()
    with srv:
        port = srv.port
        with client(srv) as c:
            c.post(f"/v1/projects/p/traces/{TRACE_A}/tags", json={"tags": ["a"]})
    assert not srv.running
    with srv:
        assert srv.port == port
        with client(srv) as c:
            c.post(f"/v1/projects/p/traces/{TRACE_B}/tags", json={"tags": ["b"]})
    assert set(srv.tags) == {TRACE_A, TRACE_B}


def test_start_twice_raises_and_stop_twice_is_harmless(local_server):
    """start() on a running server raises; stop() is idempotent."""
    with pytest.raises(RuntimeError):
        local_server.start()
    local_server.stop()
    local_server.stop()


def test_port_before_start_raises():
    """The port of an unstarted port-0 server is unknown."""
    with pytest.raises(RuntimeError):
        _ = LocalJudgmentServer().url


def test_testing_exports_are_pinned():
    """The testing package's public surface is exactly this (ruff-sorted) list."""
    assert judgeval_async.testing.__all__ == [
        "ENDPOINTS",
        "FAULT_KINDS",
        "EvalRecord",
        "Fault",
        "FaultKind",
        "LocalJudgmentServer",
        "RatioMode",
        "SpanRecord",
        "TagCall",
        "project_id_for",
    ]


def test_testing_package_imports_nothing_else_from_judgeval_async():
    """The test double stays standalone: its modules import only judgeval_async.testing."""
    root = pathlib.Path(judgeval_async.testing.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "judgeval_async":
                    assert name.startswith("judgeval_async.testing"), (path.name, name)
            if path.name != "fixtures.py":
                assert "pytest" not in names, path.name


def test_endpoint_names_are_the_metric_labels():
    """The endpoint names are the fixed set the client uses as metric labels."""
    assert ENDPOINTS == ("resolve", "traces", "tags", "tags_batch", "evals")
