"""Real web servers, SIGTERM, nothing lost: uvicorn, gunicorn + UvicornWorker (with and without --preload, with
--max-requests), hypercorn and a plain asyncio.run service serve traffic against the local server; after SIGTERM
the backend holds exactly what the application created, and every worker exited within exit_timeout (+ slack).

The zero-config app creates its Tracer at import and has no shutdown code at all. Intervals are long (60 s), so
everything the requests produced is still in memory when the signal arrives: only the exit path can deliver it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from judgeval_async.testing import LocalJudgmentServer

pytest.importorskip("uvicorn")
pytest.importorskip("gunicorn")
pytest.importorskip("hypercorn")
pytest.importorskip("starlette")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path("/proc").is_dir() or sys.platform != "linux", reason="needs Linux /proc"),
]

EXIT_TIMEOUT = 5.0
# Interpreter teardown and a loaded 2-core CI box: generous, but far below the 60 s the data would wait otherwise.
EXIT_SLACK = 10.0
REQUESTS = 160
CONNECTIONS = 4

# Three spans, one tagged trace and one evaluation per request; /ready is not traced.
ZERO_CONFIG_APP = """
import os
from judgeval_async import Tracer

tracer = Tracer(project_name="web")


@tracer.observe(name="handle")
async def handle(path):
    with tracer.span("child-a"):
        pass
    async with tracer.span("child-b"):
        pass
    tracer.tag("served")
    tracer.async_evaluate("faithfulness", {"input": path, "actual_output": "ok"})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] != "/ready":
        await handle(scope["path"])
    body = str(os.getpid()).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
"""

# The explicit integration: Starlette routes, TracingMiddleware (request span named after the route + two spans).
MIDDLEWARE_APP = """
import os
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from judgeval_async import Tracer
from judgeval_async.asgi import TracingMiddleware

tracer = Tracer(project_name="web")


async def item(request):
    if request.url.path != "/ready":
        with tracer.span("child-a"):
            tracer.tag("served")
            tracer.async_evaluate("faithfulness", {"input": "q", "actual_output": "ok"})
        with tracer.span("child-b"):
            pass
    return PlainTextResponse(str(os.getpid()))


app = Starlette(routes=[Route("/items/{item_id}", item), Route("/ready", item)])
app.add_middleware(TracingMiddleware, tracer=tracer)
"""

# A plain asyncio service: produces while "serving", prints ready, then runs until a signal ends it.
ASYNCIO_SERVICE = """
import asyncio, os, signal, sys
from judgeval_async import Tracer

tracer = Tracer(project_name="svc")
N = int(sys.argv[1])
graceful = sys.argv[2] == "graceful"


@tracer.observe(name="handle")
async def handle(i):
    with tracer.span("child-a"):
        pass
    with tracer.span("child-b"):
        pass
    tracer.tag("served")
    tracer.async_evaluate("faithfulness", {"input": str(i), "actual_output": "ok"})


async def main():
    stop = asyncio.Event()
    if graceful:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    for i in range(N):
        await handle(i)
    print(os.getpid(), flush=True)
    await stop.wait()


asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exited(pid: int) -> bool:
    """True once ``pid`` is gone or a zombie (its parent, the server's master, reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def _workers_of(master: int) -> set[int]:
    """Every live descendant process of ``master`` that runs the app (not multiprocessing's resource tracker)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue  # a process that exited while we read
    found: set[int] = set()
    frontier = {master}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    live = set()
    for pid in found:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline and not _exited(pid):
            live.add(pid)
    return live


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "zeroapp.py").write_text(ZERO_CONFIG_APP)
    (tmp_path / "mwapp.py").write_text(MIDDLEWARE_APP)
    (tmp_path / "service.py").write_text(ASYNCIO_SERVICE)
    return tmp_path


def _env(server: LocalJudgmentServer, app_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        JUDGMENT_API_URL=server.url,
        JUDGMENT_API_KEY=server.api_key,
        JUDGMENT_ORG_ID=server.org_id,
        JUDGMENT_SCHEDULE_DELAY="60",
        JUDGMENT_TAG_FLUSH_INTERVAL="60",
        JUDGMENT_EXIT_TIMEOUT=str(EXIT_TIMEOUT),
        PYTHONPATH=os.pathsep.join(p for p in (str(app_dir), env.get("PYTHONPATH", "")) if p),
        PYTHONWARNINGS="ignore::DeprecationWarning",  # uvicorn.workers announces its own deprecation
    )
    env.update(extra)
    return env


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every server process the test starts; killed (whole process group) in teardown, whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)


def _start(started: list[subprocess.Popen[bytes]], argv: list[str], env: dict[str, str], cwd: Path) -> None:
    started.append(
        subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: teardown can kill workers too
        )
    )


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited early with {proc.returncode}"
        try:
            if httpx.get(url + "/ready", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # polling a starting server, not the code under test
    raise AssertionError("server did not become ready")


def _drive(url: str, n: int, path: str) -> set[int]:
    """``n`` requests over ``CONNECTIONS`` keep-alive connections; returns the pids that served them."""

    def run(share: int, first: int) -> list[int]:
        with httpx.Client(timeout=30.0) as client:
            pids = []
            for i in range(first, first + share):
                for _ in range(5):
                    try:
                        response = client.get(f"{url}{path}{i}")
                        break
                    except httpx.TransportError:
                        # A worker recycled by --max-requests closes its idle keep-alive connections; a request
                        # sent just then was never read (uvicorn finishes every request it has parsed): resend.
                        continue
                else:
                    raise AssertionError(f"request {i} failed 5 times")
                assert response.status_code == 200
                pids.append(int(response.text))
            return pids

    shares = [n // CONNECTIONS + (1 if k < n % CONNECTIONS else 0) for k in range(CONNECTIONS)]
    firsts = [sum(shares[:k]) for k in range(CONNECTIONS)]
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        results = list(pool.map(run, shares, firsts))
    return {pid for pids in results for pid in pids}


def _terminate(proc: subprocess.Popen[bytes], workers: set[int]) -> dict[int, float]:
    """SIGTERM the server's main process (what Kubernetes, Docker and systemd do); each worker's exit time."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    exits: dict[int, float] = {}
    deadline = sent + EXIT_TIMEOUT + EXIT_SLACK + 20.0
    while len(exits) < len(workers) and time.monotonic() < deadline:
        for pid in workers - set(exits):
            if _exited(pid):
                exits[pid] = time.monotonic() - sent
        time.sleep(0.02)  # polling other processes' exit
    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    return exits


def _assert_everything_received(server: LocalJudgmentServer, requests: int, spans_per_request: int) -> None:
    expected = requests * spans_per_request
    server.wait_for(spans=expected, tag_traces=requests, timeout=10.0)
    assert (len(server.spans), len(server.tags), _evaluations(server)) == (expected, requests, requests)


def _evaluations(server: LocalJudgmentServer) -> int:
    """Evaluations received either way: on their spans (the default with spans to Judgment) or POSTed (the
    fallback until the project id is resolved). Read once the apps have exited: nothing is in flight any more."""
    return len(server.evals) + len(server.span_evals)


def _assert_exit_times(exits: dict[int, float], workers: set[int]) -> None:
    assert set(exits) == workers, f"workers still alive: {workers - set(exits)}"
    slow = {pid: round(t, 2) for pid, t in exits.items() if t >= EXIT_TIMEOUT + EXIT_SLACK}
    assert not slow, f"workers exceeded exit_timeout + slack: {slow}"


SERVERS = {
    "uvicorn": ["-m", "uvicorn", "{app}:app", "--port", "{port}", "--no-access-log"],
    "uvicorn-workers-2": ["-m", "uvicorn", "{app}:app", "--port", "{port}", "--workers", "2", "--no-access-log"],
    "gunicorn": ["-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2", "-b", "127.0.0.1:{port}",
                 "{app}:app"],
    "gunicorn-preload": ["-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2", "--preload",
                         "-b", "127.0.0.1:{port}", "{app}:app"],
    "gunicorn-max-requests": ["-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2",
                              "--max-requests", "50", "-b", "127.0.0.1:{port}", "{app}:app"],
    "hypercorn": ["-m", "hypercorn", "-b", "127.0.0.1:{port}", "{app}:app"],
}  # fmt: skip


def _argv(kind: str, app: str, port: int) -> list[str]:
    return [sys.executable, *(a.format(app=app, port=port) for a in SERVERS[kind])]


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_zero_config_app_loses_nothing_on_sigterm(
    kind: str, local_server: LocalJudgmentServer, app_dir: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """A Tracer created at import and no shutdown code: after SIGTERM, received == created for spans, tags and
    evaluations, and every worker exited within exit_timeout (+ slack)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    _start(started, _argv(kind, "zeroapp", port), _env(local_server, app_dir), app_dir)
    proc = started[0]
    _wait_ready(proc, url)
    pids = _drive(url, REQUESTS, "/r")
    # Workers that served and are still alive (--max-requests recycles some on the way), and any idle one.
    alive = {pid for pid in pids if not _exited(pid)} | _workers_of(proc.pid)
    exits = _terminate(proc, alive)
    assert proc.returncode in (0, -signal.SIGTERM), proc.returncode
    _assert_everything_received(local_server, REQUESTS, 3)
    _assert_exit_times(exits, alive)


@pytest.mark.parametrize("mode", ["default-action", "graceful"])
def test_asyncio_run_service_loses_nothing_on_sigterm(
    mode: str, local_server: LocalJudgmentServer, app_dir: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """A plain asyncio.run service, killed by SIGTERM's default action or stopping on it gracefully, delivers all."""
    n = 120
    env = _env(local_server, app_dir)
    proc = subprocess.Popen(
        [sys.executable, str(app_dir / "service.py"), str(n), mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started.append(proc)
    assert proc.stdout is not None
    with proc.stdout:
        pid = int(proc.stdout.readline())
    exits = _terminate(proc, {pid})
    assert proc.returncode == (0 if mode == "graceful" else -signal.SIGTERM)
    _assert_everything_received(local_server, n, 3)
    _assert_exit_times(exits, {pid})


def test_middleware_flushes_on_lifespan_shutdown_and_names_spans_by_route(
    local_server: LocalJudgmentServer, app_dir: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """Starlette + TracingMiddleware under uvicorn with the signal guard turned off: the lifespan shutdown flush
    alone delivers everything, and each request span is named after its route template."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(local_server, app_dir, JUDGMENT_INSTALL_SIGNAL_HANDLERS="false")
    _start(started, _argv("uvicorn", "mwapp", port), env, app_dir)
    proc = started[0]
    _wait_ready(proc, url)
    n = 60
    pids = _drive(url, n, "/items/")
    exits = _terminate(proc, pids)
    # One request span per request (readiness probes included) and two handler spans per item request.
    local_server.wait_for(spans=3 * n, tag_traces=n, timeout=10.0)
    names = [r.name for r in local_server.spans.values()]
    probes = names.count("GET /ready")
    assert probes >= 1
    assert names.count("GET /items/{item_id}") == n
    assert (len(names), len(local_server.tags), _evaluations(local_server)) == (3 * n + probes, n, n)
    request_span = next(r for r in local_server.spans.values() if r.name == "GET /items/{item_id}")
    assert request_span.attributes["http.route"] == "/items/{item_id}"
    assert request_span.attributes["http.response.status_code"] == 200
    _assert_exit_times(exits, pids)
