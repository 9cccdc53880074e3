"""A real OTLP consumer: Arize Phoenix on 127.0.0.1 receives an agent-like workload and reports it through its own API.

Phoenix is started as ``phoenix serve`` in a subprocess (``pip install -e '.[phoenix]'``, Python >= 3.11), with a
temporary working dir, an in-memory database and free ports. Every listener it opens is loopback-only:
``PHOENIX_HOST`` covers the HTTP server, but Phoenix 20.x binds its OTLP/gRPC listener to ``[::]`` unconditionally,
so the launcher below rewrites that bind address to 127.0.0.1 before Phoenix starts (and the fixture checks every
listening socket of the process). Without Phoenix the tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from judgeval_async import Tracer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

# Phoenix's gRPC server calls add_insecure_port("[::]:<port>") whatever PHOENIX_HOST says: bind it to loopback.
_LAUNCHER = """
import sys
import grpc.aio._server as grpc_server

_add_insecure_port = grpc_server.Server.add_insecure_port


def _loopback_only(self, address):
    return _add_insecure_port(self, "127.0.0.1:" + address.rpartition(":")[2])


grpc_server.Server.add_insecure_port = _loopback_only
from phoenix.server.main import main

sys.argv = ["phoenix", "serve"]
sys.exit(main())
"""
STARTUP_TIMEOUT = 240.0  # Phoenix imports a lot (pandas, grpc, sqlalchemy): 20-90 s on a busy 2-core machine
INGEST_TIMEOUT = 30.0


def _phoenix_python() -> str | None:
    """An interpreter that has Phoenix: JUDGEVAL_PHOENIX_PYTHON, else this one if it has the package."""
    explicit = os.environ.get("JUDGEVAL_PHOENIX_PYTHON")
    if explicit:
        return explicit
    # Located, not imported: importing phoenix here would run its imports (and their warnings) in the test process.
    spec = importlib.util.find_spec("phoenix")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if any((Path(loc) / "server" / "main.py").is_file() for loc in locations):
        return sys.executable
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening_addresses(pid: int) -> list[str]:
    """Local addresses of every TCP socket in LISTEN state of ``pid`` and its children (via psutil)."""
    import psutil  # a dependency of Phoenix itself

    proc = psutil.Process(pid)
    found = []
    for p in [proc, *proc.children(recursive=True)]:
        for conn in p.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                found.append(conn.laddr.ip)
    return found


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.partition("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


class Phoenix:
    """A running ``phoenix serve``: ``url`` (HTTP: UI, REST, OTLP/HTTP at ``/v1/traces``)."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    def spans(self, project: str) -> list[dict[str, Any]]:
        """Every span of ``project`` as Phoenix's REST API reports it (``GET /v1/projects/{p}/spans``), all pages."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while True:
                params: dict[str, Any] = {"limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                r = client.get(f"/v1/projects/{project}/spans", params=params)
                if r.status_code == 404:  # the project appears with its first span
                    return []
                r.raise_for_status()
                body = r.json()
                out.extend(body["data"])
                cursor = body.get("next_cursor")
                if not cursor:
                    return out

    def wait_for_spans(self, project: str, count: int) -> list[dict[str, Any]]:
        """Poll until Phoenix has ingested ``count`` spans of ``project`` (it inserts in the background)."""
        deadline = time.monotonic() + INGEST_TIMEOUT
        spans = self.spans(project)
        while len(spans) < count and time.monotonic() < deadline:
            time.sleep(0.25)
            spans = self.spans(project)
        time.sleep(0.5)  # and nothing more arrives after that
        return self.spans(project)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """Phoenix on 127.0.0.1 (free ports, temporary working dir), torn down after the module."""
    python = _phoenix_python()
    if python is None:
        if sys.version_info < (3, 11):
            pytest.skip("Arize Phoenix needs Python >= 3.11")
        message = "Arize Phoenix is not installed (pip install -e '.[phoenix]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("phoenix")
    http_port, grpc_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        # In memory: Phoenix 20.26's separate read-only SQLite reader did not see spans written after it opened.
        "PHOENIX_SQL_DATABASE_URL": "sqlite:///:memory:",
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = workdir / "phoenix.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([python, "-c", _LAUNCHER], env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Phoenix(proc, f"http://127.0.0.1:{http_port}", log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"phoenix serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"phoenix serve not ready in {STARTUP_TIMEOUT} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# ---------------------------------------------------------------- the workload

EXPECTED_KIND = {
    "run_agent": "AGENT",
    "plan": "LLM",
    "search": "TOOL",
    "fetch": "TOOL",
    "retrieve": "RETRIEVER",
    "stream_answer": "CHAIN",
    "summarize": "CHAIN",
    "background_job": "CHAIN",
    "review": "GUARDRAIL",
    "finalize": "CHAIN",
}
FAILING_FETCH = 3  # every third task's fetch raises


def _run_workload(tracer: Tracer, tasks: int) -> None:
    """An agent per task, concurrently: an LLM call, tools in gather (one failing), a retriever generator, an async
    generator, a tool in to_thread, a copied-context thread, a plain thread (its own trace) and a context-manager
    span that raises."""

    @tracer.observe(span_type="llm")
    async def plan(question: str, model: str = "gpt-4o-mini") -> list[str]:
        await asyncio.sleep(0)
        return [f"search {question}", f"fetch {question}"]

    @tracer.observe(span_type="tool")
    async def search(query: str) -> list[str]:
        await asyncio.sleep(0.001)
        return [query, query.upper()]

    @tracer.observe(span_type="tool")
    def fetch(url: str, attempt: int) -> str:
        if attempt % FAILING_FETCH == 0:
            raise ConnectionError(f"fetch {url} failed")
        return f"<html>{url}</html>"

    @tracer.observe(span_type="retriever")
    def retrieve(query: str, k: int) -> Any:
        for i in range(k):
            yield {"id": i, "text": f"{query}-{i}"}

    @tracer.observe
    async def stream_answer(parts: int) -> Any:
        for i in range(parts):
            await asyncio.sleep(0)
            yield f"part {i}"

    @tracer.observe(span_type="chain")
    def summarize(docs: list[dict[str, Any]]) -> str:
        return " ".join(d["text"] for d in docs)

    @tracer.observe
    def background_job(n: int) -> int:
        return n * 2

    @tracer.observe(span_type="guardrail")
    def review(text: str) -> bool:
        return len(text) > 0

    @tracer.observe(span_type="agent")
    async def run_agent(n: int) -> str:
        tracer.tag(["agent", f"task-{n % 3}"])
        steps = await plan(f"q{n}", model="gpt-4o-mini")
        results = await asyncio.gather(
            search(steps[0]), asyncio.to_thread(fetch, f"https://example.invalid/{n}", n), return_exceptions=True
        )
        docs = list(retrieve(f"q{n}", 3))
        text = summarize(docs)
        chunks = [c async for c in stream_answer(2)]
        ctx = contextvars.copy_context()
        child = threading.Thread(target=ctx.run, args=(review, text))
        child.start()
        child.join()
        orphan = threading.Thread(target=background_job, args=(n,))  # no context: a trace of its own
        orphan.start()
        orphan.join()
        try:
            with tracer.span("finalize"):
                if n % 4 == 0:
                    raise RuntimeError("finalize failed")
        except RuntimeError:
            pass
        return f"{text} {chunks} {len([r for r in results if not isinstance(r, BaseException)])}"

    async def main() -> None:
        await asyncio.gather(*(run_agent(n) for n in range(tasks)))

    asyncio.run(main())


def _check_in_phoenix(tracer: Tracer, phoenix: Phoenix, project: str, tasks: int) -> None:
    health = tracer.get_health_metrics()
    created, delivered = health["spans_created"], health["spans_exported"]
    assert created == tasks * len(EXPECTED_KIND), health
    assert delivered == created, health["spans_dropped_by_reason"]
    spans = phoenix.wait_for_spans(project, created)
    assert len(spans) == delivered
    ids = {s["context"]["span_id"] for s in spans}
    assert len(ids) == len(spans)
    for span in spans:
        assert span["parent_id"] is None or span["parent_id"] in ids, span["name"]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    assert {name: len(v) for name, v in by_name.items()} == dict.fromkeys(EXPECTED_KIND, tasks)
    # Parentage across tasks, to_thread, generators and copied contexts; the plain thread starts its own trace.
    agent_ids = {s["context"]["span_id"] for s in by_name["run_agent"]}
    for name in ("plan", "search", "fetch", "retrieve", "stream_answer", "summarize", "review", "finalize"):
        assert all(s["parent_id"] in agent_ids for s in by_name[name]), name
    assert all(s["parent_id"] is None for s in by_name["background_job"] + by_name["run_agent"])
    for span in spans:
        attrs = span["attributes"]
        assert span["span_kind"] == EXPECTED_KIND[span["name"]], span["name"]
        if span["name"] == "finalize":  # a context-manager span: no recorded input/output
            continue
        assert attrs["input.mime_type"] == "application/json"
        assert attrs["input.value"] == attrs["judgment.input"]
        if span["status_code"] != "ERROR":
            assert attrs["output.value"] == attrs["judgment.output"], span["name"]
    plans = by_name["plan"]
    assert all(s["attributes"]["llm.model_name"] == "gpt-4o-mini" for s in plans)
    for span in by_name["run_agent"]:
        tags = span["attributes"]["tag.tags"]
        assert tags[0] == "agent" and tags[1].startswith("task-"), tags
    # Errors: status ERROR with an exception event, exactly where the workload raised.
    errors = [s for s in spans if s["status_code"] == "ERROR"]
    expected_errors = sum(1 for n in range(tasks) if n % FAILING_FETCH == 0) + sum(
        1 for n in range(tasks) if n % 4 == 0
    )
    assert len(errors) == expected_errors
    for span in errors:
        events = [e for e in span["events"] if e["name"] == "exception"]
        assert events, span["name"]
        assert events[0]["attributes"]["exception.type"] in ("ConnectionError", "RuntimeError")
        assert "failed" in events[0]["attributes"]["exception.message"]


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{_free_port()}"  # nothing listens there: no Judgment API


def test_phoenix_listens_on_loopback_only(phoenix: Phoenix) -> None:
    """Every socket phoenix serve listens on (HTTP and OTLP/gRPC) is bound to a loopback address."""
    addresses = _listening_addresses(phoenix.proc.pid)
    assert len(addresses) >= 2, addresses  # the HTTP server and the gRPC server
    assert all(_is_loopback(ip) for ip in addresses), addresses


def test_agent_workload_arrives_in_phoenix(phoenix: Phoenix) -> None:
    """Spans of an agent workload across tasks, threads and generators (with errors) arrive in Phoenix complete:
    count == the ledger's delivered count, every parent exists, errors carry exception events, and Phoenix shows
    each span's kind, input, output and tags (OpenInference attributes)."""
    tasks = 12
    tracer = Tracer(
        project_name="judgeval-e2e",
        otlp_endpoint=f"{phoenix.url}/v1/traces",
        project_id="anything",  # skips the project resolve against api_url (no Judgment API here)
        api_url=_closed_port_url(),
        evaluations_enabled=False,
        retry_testing=True,
        install_signal_handlers=False,
    )
    try:
        _run_workload(tracer, tasks)
        tracer.force_flush(timeout=20.0)
        _check_in_phoenix(tracer, phoenix, "judgeval-e2e", tasks)
    finally:
        tracer.shutdown(timeout=5.0)


def test_agent_workload_with_only_otlp_endpoint(phoenix: Phoenix) -> None:
    """The same workload with only otlp_endpoint set (no project_id, no reachable api_url) arrives complete."""
    tasks = 4
    tracer = Tracer(
        project_name="judgeval-otlp-only",
        otlp_endpoint=f"{phoenix.url}/v1/traces",
        api_url=_closed_port_url(),
        evaluations_enabled=False,
        retry_testing=True,
        project_resolve_wait=2.0,
        install_signal_handlers=False,
    )
    try:
        _run_workload(tracer, tasks)
        tracer.force_flush(timeout=10.0)
        _check_in_phoenix(tracer, phoenix, "judgeval-otlp-only", tasks)
    finally:
        tracer.shutdown(timeout=5.0)
