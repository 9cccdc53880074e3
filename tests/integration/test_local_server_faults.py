"""Fault injection on the local server, observed from a real httpx client."""

from __future__ import annotations

import json
import random
import socket
import threading
import time

import httpx
import pytest

from judgeval_async.testing import Fault, LocalJudgmentServer
from judgeval_async.testing._faults import FaultTable

pytestmark = pytest.mark.timeout(60)

RESOLVE = "/v1/projects/resolve/"
BODY = {"project_name": "demo"}
TRACE = "0af7651916cd43dd8448eb211c80319c"


def client(srv: LocalJudgmentServer, timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers=srv.auth_headers(), timeout=timeout)


def resolve(c: httpx.Client, **kwargs) -> httpx.Response:
    return c.post(RESOLVE, json=BODY, **kwargs)


def tag(c: httpx.Client) -> httpx.Response:
    return c.post(f"/v1/projects/p/traces/{TRACE}/tags", json={"tags": ["t"]})


def test_fixed_latency_delays_the_answer(local_server):
    """A 0.3 s latency fault makes the request take at least 0.3 s and still succeed."""
    local_server.set_fault("resolve", kind="latency", seconds=0.3)
    with client(local_server) as c:
        start = time.monotonic()
        r = resolve(c)
        elapsed = time.monotonic() - start
    assert r.status_code == 200
    assert elapsed >= 0.3


def test_latency_range_stays_within_its_bounds(local_server_factory):
    """A latency range delays each request by at least its lower bound."""
    srv = local_server_factory(seed=7)
    srv.set_fault(kind="latency", range=(0.1, 0.2))
    with client(srv) as c:
        for _ in range(3):
            start = time.monotonic()
            assert resolve(c).status_code == 200
            assert time.monotonic() - start >= 0.1


@pytest.mark.parametrize(("status", "retry_after"), [(429, "3"), (503, "1.5"), (500, None), (413, None)])
def test_status_fault_answers_status_and_retry_after(local_server, status, retry_after):
    """A status fault answers that status, with Retry-After when given, and records nothing."""
    local_server.set_fault("tags", kind="status", status=status, retry_after=retry_after)
    with client(local_server) as c:
        r = tag(c)
    assert r.status_code == status
    assert r.headers.get("retry-after") == retry_after
    assert "injected" in r.json()["detail"]
    assert local_server.tag_calls == []
    assert local_server.request_count("tags", status) == 1


def test_status_fault_with_numeric_retry_after_and_custom_body(local_server):
    """A float Retry-After is rendered as seconds and a custom body is served verbatim."""
    local_server.set_fault(kind="status", status=503, retry_after=2.0, body='{"oops": 1}')
    with client(local_server) as c:
        r = resolve(c)
    assert (r.status_code, r.headers["retry-after"], r.json()) == (503, "2", {"oops": 1})


def test_seeded_ratio_fault_is_deterministic(local_server_factory):
    """With a seed, a 0.2 ratio fails exactly the requests random.Random(seed) picks."""
    seed, ratio, n = 1234, 0.2, 200
    srv = local_server_factory(seed=seed)
    srv.set_fault("resolve", kind="ratio", ratio=ratio, retry_after=1)
    rng = random.Random(seed)
    expected = [rng.random() < ratio for _ in range(n)]
    with client(srv) as c:
        failed = [resolve(c).status_code == 503 for _ in range(n)]
    assert failed == expected
    assert 0.10 * n <= sum(failed) <= 0.35 * n
    assert srv.request_count("resolve", 503) == sum(failed)
    assert srv.request_count("resolve", 200) == n - sum(failed)


def test_ratio_fault_in_timeout_mode_black_holes(local_server_factory):
    """A ratio fault with mode="timeout" makes exactly the picked requests time out."""
    srv = local_server_factory(seed=3)
    srv.set_fault(kind="ratio", ratio=0.5, mode="timeout")
    rng = random.Random(3)
    expected = [rng.random() < 0.5 for _ in range(4)]
    assert True in expected and False in expected  # the seed exercises both outcomes
    outcomes = []
    with httpx.Client(base_url=srv.url, headers=srv.auth_headers(), timeout=httpx.Timeout(10.0, read=1.0)) as c:
        for _ in range(4):
            try:
                resolve(c)
                outcomes.append(False)
            except httpx.ReadTimeout:
                outcomes.append(True)
    assert outcomes == expected
    assert srv.request_count("resolve", "blackhole") == sum(expected)


def test_reset_fault_breaks_the_connection(local_server):
    """A reset fault aborts the connection after reading the request."""
    local_server.set_fault("resolve", kind="reset")
    with client(local_server) as c:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            resolve(c)
        # Other endpoints keep working on a fresh connection.
        assert tag(c).status_code == 200
    assert local_server.request_count("resolve", "reset") == 1


def test_blackhole_times_out_at_the_client_read_timeout(local_server):
    """A black-holed request never gets an answer; the client's 0.5 s read timeout fires."""
    local_server.set_fault(kind="blackhole")
    with client(local_server, timeout=0.5) as c:
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            resolve(c)
        assert time.monotonic() - start >= 0.5
    assert local_server.request_count("resolve", "blackhole") == 1


def test_stop_releases_a_black_holed_client(local_server_factory):
    """Stopping the server ends a connection held by a black-hole fault."""
    srv = local_server_factory()
    srv.set_fault(kind="blackhole")
    errors: list[BaseException] = []

    def call() -> None:
        with client(srv, timeout=30) as c:
            try:
                resolve(c)
            except httpx.HTTPError as exc:
                errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert srv.wait_for(requests={"resolve": 1}, timeout=10)
    srv.stop()
    caller.join(10)
    assert not caller.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], httpx.RemoteProtocolError | httpx.ReadError)


def test_refuse_fault_refuses_connects_until_cleared(local_server):
    """A refuse fault closes the port (even for pooled connections); clearing reopens it."""
    port = local_server.port
    with client(local_server) as c:
        assert resolve(c).status_code == 200
        local_server.set_fault(kind="refuse")
        with pytest.raises(httpx.ConnectError):
            resolve(c)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        local_server.clear_faults()
        assert local_server.port == port
        assert resolve(c).status_code == 200


def test_refuse_recovers_after_seconds(local_server):
    """A refuse fault with recover_after_seconds reopens the port by itself, not before its time."""
    with client(local_server) as c:
        before = time.monotonic()
        local_server.set_fault(kind="refuse", recover_after_seconds=1.0)
        with pytest.raises(httpx.ConnectError):
            resolve(c)
        while True:  # a client retrying connects: the behaviour under test is the time
            try:
                r = resolve(c)
                break
            except httpx.ConnectError:
                assert time.monotonic() < before + 20
                time.sleep(0.02)
        reopened_after = time.monotonic() - before
    assert r.status_code == 200
    assert reopened_after >= 1.0


def test_refuse_is_global_only(local_server):
    """Refusing connects cannot be scoped to one endpoint, nor recover by request count."""
    with pytest.raises(ValueError, match="global"):
        local_server.set_fault("traces", kind="refuse")
    with pytest.raises(ValueError, match="recover_after_requests"):
        local_server.set_fault(kind="refuse", recover_after_requests=1)


def test_slow_body_paces_the_body_read(local_server):
    """A slow_body fault reads 8 KiB in 1 KiB chunks 0.05 s apart, and the body arrives intact."""
    local_server.set_fault("evals", kind="slow_body", chunk_delay=0.05, chunk_size=1024)
    payload = {
        "eval_name": "e",
        "trace_id": TRACE,
        "trace_span_id": "00f067aa0ba902b7",
        "examples": [{"input": "x" * 8000}],
    }
    with client(local_server) as c:
        start = time.monotonic()
        r = c.post("/v1/projects/p/eval-queue/examples", json=payload)
        elapsed = time.monotonic() - start
    assert r.status_code == 200
    assert elapsed >= 0.05 * 8
    assert local_server.evals[0].payload == payload


def test_body_limit_refuses_only_bodies_over_its_size(local_server):
    """A body_limit fault answers 413 to a body over max_bytes (counted, not recorded), passes a body at the limit
    or under it, keeps the connection usable, and recovers like any fault."""
    local_server.set_fault("evals", kind="body_limit", max_bytes=2000, recover_after_requests=3)

    def post(c: httpx.Client, size: int) -> httpx.Response:
        payload = {"eval_name": "e", "trace_id": TRACE, "trace_span_id": "00f067aa0ba902b7", "examples": []}
        body = json.dumps({**payload, "pad": "x" * (size - len(json.dumps({**payload, "pad": ""})))}).encode()
        assert len(body) == size
        return c.post("/v1/projects/p/eval-queue/examples", content=body, headers={"content-type": "application/json"})

    with client(local_server) as c:
        over = post(c, 2001)
        at = post(c, 2000)
        over_again = post(c, 5000)
        recovered = post(c, 5000)  # the fault served its three requests
        assert resolve(c).status_code == 200  # other endpoints never saw it
    assert (over.status_code, at.status_code, over_again.status_code, recovered.status_code) == (413, 200, 413, 200)
    assert "over 2000 bytes" in over.json()["detail"]
    assert local_server.request_count("evals", 413) == 2
    assert len(local_server.evals) == 2
    assert local_server.active_faults() == {}


def test_body_limit_is_decided_per_request_and_stacks_with_other_kinds():
    """FaultTable.decide carries a body_limit's size alongside a status fault's answer (and alone, with no action)."""
    table = FaultTable()
    table.set("traces", Fault(kind="body_limit", max_bytes=1234))
    alone = table.decide("traces")
    assert (alone.max_body_bytes, alone.action) == (1234, "pass")
    table.set(None, Fault(kind="status", status=503))
    both = table.decide("traces")
    assert (both.max_body_bytes, both.action, both.status) == (1234, "status", 503)
    assert table.decide("evals").max_body_bytes == 0
    assert Fault.from_mapping({"kind": "body_limit", "max_bytes": 99}).to_dict() == {
        "kind": "body_limit",
        "max_bytes": 99,
    }


def test_recover_after_requests(local_server):
    """recover_after_requests=2 fails exactly the next two requests."""
    local_server.set_fault("resolve", kind="status", status=503, recover_after_requests=2)
    with client(local_server) as c:
        codes = [resolve(c).status_code for _ in range(4)]
    assert codes == [503, 503, 200, 200]
    assert local_server.active_faults() == {}


def test_recover_after_seconds(local_server):
    """recover_after_seconds removes a fault once its time has passed (same monotonic clock)."""
    with client(local_server) as c:
        local_server.set_fault("resolve", kind="status", status=500, recover_after_seconds=1.0)
        set_by = time.monotonic()
        assert resolve(c).status_code == 500
        # The fault expires at most 1 s after set_fault returned, on this process's clock.
        time.sleep(max(0.0, set_by + 1.05 - time.monotonic()))
        assert resolve(c).status_code == 200
    assert local_server.active_faults() == {}


def test_endpoint_fault_leaves_other_endpoints_alone(local_server):
    """A fault on one endpoint does not touch the others."""
    local_server.set_fault("tags", kind="status", status=503)
    with client(local_server) as c:
        assert tag(c).status_code == 503
        assert resolve(c).status_code == 200


def test_endpoint_fault_overrides_global_fault_of_same_kind(local_server):
    """For one kind, the endpoint's fault wins over the global one."""
    local_server.set_fault(kind="status", status=500)
    local_server.set_fault("tags", kind="status", status=429)
    with client(local_server) as c:
        assert tag(c).status_code == 429
        assert resolve(c).status_code == 500


def test_global_latency_stacks_with_endpoint_status(local_server):
    """Faults of different kinds stack: a global delay plus an endpoint status."""
    local_server.set_fault(kind="latency", seconds=0.2)
    local_server.set_fault("tags", kind="status", status=503)
    with client(local_server) as c:
        start = time.monotonic()
        assert tag(c).status_code == 503
        assert time.monotonic() - start >= 0.2


def test_clear_one_endpoint_keeps_the_rest(local_server):
    """clear_faults(endpoint) removes only that endpoint's faults."""
    local_server.set_fault("tags", kind="status", status=503)
    local_server.set_fault(kind="status", status=500)
    local_server.clear_faults("tags")
    with client(local_server) as c:
        assert tag(c).status_code == 500
    local_server.clear_faults()
    with client(local_server) as c:
        assert tag(c).status_code == 200


def test_faults_never_touch_the_control_endpoint(local_server):
    """The control endpoint keeps answering under a global black-hole, so it can clear it."""
    local_server.set_fault(kind="blackhole")
    with httpx.Client(base_url=local_server.url, timeout=5.0) as ctl:
        assert ctl.get("/_control/stats").status_code == 200
        assert ctl.post("/_control/clear").status_code == 200
    with client(local_server) as c:
        assert resolve(c).status_code == 200


def test_refuse_over_http_recovers_by_itself(local_server):
    """A refuse set through the control endpoint holds once acknowledged, then lifts by itself."""
    with httpx.Client(base_url=local_server.url, timeout=5.0) as ctl:
        before = time.monotonic()
        r = ctl.post("/_control/fault", json={"kind": "refuse", "recover_after_seconds": 1.0})
    assert r.status_code == 200
    with client(local_server) as c:
        with pytest.raises(httpx.ConnectError):
            resolve(c)
        while True:  # a client retrying connects: the behaviour under test is the time
            try:
                r = resolve(c)
                break
            except httpx.ConnectError:
                assert time.monotonic() < before + 20
                time.sleep(0.02)
    assert r.status_code == 200
    assert time.monotonic() - before >= 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "latency"},
        {"kind": "latency", "range": (0.5, 0.1)},
        {"kind": "status", "status": 99},
        {"kind": "ratio", "ratio": 1.5},
        {"kind": "ratio", "ratio": 0.5, "mode": "explode"},
        {"kind": "slow_body"},
        {"kind": "body_limit"},
        {"kind": "body_limit", "max_bytes": 0},
        {"kind": "blackhole", "recover_after_requests": 0},
        {"kind": "blackhole", "recover_after_seconds": -1},
        {"kind": "teleport"},
    ],
)
def test_invalid_faults_raise_value_error(local_server, kwargs):
    """Bad fault arguments fail loudly at set_fault time."""
    with pytest.raises(ValueError):
        local_server.set_fault(**kwargs)
    assert local_server.active_faults() == {}


def test_unknown_endpoint_is_a_value_error(local_server):
    """Faults can only target the five known endpoints."""
    with pytest.raises(ValueError, match="endpoint"):
        local_server.set_fault("nowhere", kind="blackhole")


def test_fault_round_trips_through_its_dict():
    """Fault.to_dict lists non-default fields and from_mapping rebuilds the same fault."""
    fault = Fault(kind="latency", range=(0.1, 0.2), recover_after_requests=3)
    assert fault.to_dict() == {"kind": "latency", "range": [0.1, 0.2], "recover_after_requests": 3}
    assert Fault.from_mapping(fault.to_dict()) == fault
