"""The exit matrix: a short script traces spans, tags and evaluations, then exits normally, against a backend that is
healthy, down, black-holed or answering 429, reached by host name or by IP.

Each run is a fresh interpreter. It must exit within ``exit_timeout`` (plus generous slack for a loaded machine),
print no traceback, and either deliver everything or log one summary line whose counts are exactly what the
server did not receive.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from judgeval_async.testing import LocalJudgmentServer

N = 40
EXIT_TIMEOUT = 1.5
# A healthy backend must get everything: its budget is generous so that a loaded CI machine (two busy cores) is not
# mistaken for a loss; the exit is still expected to take a fraction of it.
HEALTHY_EXIT_TIMEOUT = 10.0
# Interpreter start-up is not timed (the script reports when its own code ended); this covers exiting only.
EXIT_SLACK = 2.5

_SCRIPT = """
import sys, time
from judgeval_async import Tracer

url, key, org, n, exit_timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
t = Tracer(project_name="exit-matrix", api_key=key, organization_id=org, api_url=url, exit_timeout=exit_timeout)
for i in range(n):
    with t.span(f"s{i}"):
        t.tag(f"tag{i}")
        t.async_evaluate("faithfulness", {"input": i})
print(time.monotonic(), flush=True)
"""

_SUMMARY = re.compile(r"shut down with items not delivered: (?P<parts>.*?) \(delivered: (?P<delivered>[^)]*)\)")


def _fault(server: LocalJudgmentServer, state: str) -> None:
    if state == "down":
        server.set_fault(None, kind="refuse")
    elif state == "blackhole":
        server.set_fault(None, kind="blackhole")
    elif state == "429":
        server.set_fault(None, kind="status", status=429, retry_after=30)
    elif state == "evals_blackhole":  # one signal lost, the others delivered: the counts are per signal
        server.set_fault("evals", kind="blackhole")
    else:
        assert state == "healthy"


def _run(
    server: LocalJudgmentServer, host: str, exit_timeout: float = EXIT_TIMEOUT
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the script; return the process and how long it took to exit after its own code ended."""
    url = server.url.replace("127.0.0.1", host)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT), url, server.api_key, server.org_id, str(N), str(exit_timeout)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    exited = time.monotonic()  # CLOCK_MONOTONIC is system-wide: comparable with the child's reading
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, exited - float(proc.stdout.strip().splitlines()[-1])


def _summary(stderr: str) -> tuple[dict[str, int], dict[str, int]]:
    """(not delivered per signal, delivered per signal) from the one summary line."""
    lines = [m for m in _SUMMARY.finditer(stderr)]
    assert len(lines) == 1, stderr[-3000:]
    line = lines[0]
    lost = {name: int(n) for name, n in re.findall(r"(\w+)=(\d+) \[", line["parts"])}
    delivered = {name: int(n) for name, n in re.findall(r"(\w+)=(\d+)", line["delivered"])}
    return lost, delivered


def _received(server: LocalJudgmentServer) -> dict[str, int]:
    return {"spans": len(server.spans), "evaluations": len(server.evals), "tags": len(server.tags)}


def _check_exit(
    proc: subprocess.CompletedProcess[str], exit_seconds: float, exit_timeout: float = EXIT_TIMEOUT
) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert exit_seconds < exit_timeout + EXIT_SLACK, (exit_seconds, proc.stderr[-2000:])


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_exit_healthy_delivers_everything(local_server: LocalJudgmentServer, host: str) -> None:
    """Healthy backend, by host name and by IP: everything queued at exit is delivered, and nothing is logged."""
    proc, exit_seconds = _run(local_server, host, HEALTHY_EXIT_TIMEOUT)
    _check_exit(proc, exit_seconds, HEALTHY_EXIT_TIMEOUT)
    assert local_server.wait_for(spans=N, evals=N, tag_traces=N, timeout=10.0), _received(local_server)
    assert "not delivered" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
@pytest.mark.parametrize("state", ["down", "blackhole", "429", "evals_blackhole"])
def test_exit_unhealthy_keeps_deadline_and_counts_the_loss(
    local_server: LocalJudgmentServer, state: str, host: str
) -> None:
    """Down, black-holed, 429 (or one endpoint black-holed): exit keeps its deadline and one summary line counts
    exactly what did not arrive."""
    _fault(local_server, state)
    proc, exit_seconds = _run(local_server, host)
    _check_exit(proc, exit_seconds)
    local_server.clear_faults()
    received = _received(local_server)
    lost, delivered = _summary(proc.stderr)
    expected: dict[str, Any] = {name: N - got for name, got in received.items() if N - got}
    assert lost == expected, (received, proc.stderr[-2000:])
    assert delivered == received
