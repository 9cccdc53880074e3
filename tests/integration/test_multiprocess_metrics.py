"""Multi-process metrics: one scrape of the serving process shows every worker process's counts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from judgeval_async import Tracer

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

# A worker: its own Tracer on an in-memory backend, n spans, then its snapshot file. With "hold" it writes the file
# while still running, says "ready", and waits for stdin to close (the parent's signal to finish).
WORKER = """
import sys
import httpx
from judgeval_async import Tracer
from judgeval_async._multiprocess import write_snapshot

directory, n, status, queue, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def handle(request):
    if request.url.path.endswith("/projects/resolve/"):
        return httpx.Response(200, json={"project_id": "p1"})
    return httpx.Response(status, json={})

tracer = Tracer("mp", api_key="k", organization_id="o", api_url="http://judgment.test",
                http_transport=httpx.MockTransport(handle), retry_testing=True, retry_attempts=1,
                max_queue_size=queue)

@tracer.observe
def work(i):
    return i

for i in range(n):
    work(i)
tracer.force_flush(timeout=10)
if hold == "hold":
    write_snapshot(tracer, directory)
    print("ready", flush=True)
    sys.stdin.read()
tracer.shutdown(timeout=5)
write_snapshot(tracer, directory)
"""


def worker(directory: Path, n: int, status: int, queue: int, hold: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(directory), str(n), str(status), str(queue), "hold" if hold else "run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    proc.stdout.close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Tracer, Any, Path]]:
    """The serving process: its own tracer (no spans) and a /metrics server in multi-process mode."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("JUDGEVAL_METRICS_DIR", str(tmp_path))
    tracer = Tracer("mp", api_key="k", organization_id="o", api_url="http://127.0.0.1:9", max_queue_size=600)
    server = tracer.start_metrics_server(port=0)
    yield tracer, server, tmp_path
    tracer.shutdown(timeout=5)


def test_one_scrape_sums_two_worker_processes(served):
    """Counters from two exited workers add up in one scrape; their gauges are gone with them."""
    _, server, directory = served
    ok = worker(directory, n=3, status=200, queue=1000, hold=False)
    failing = worker(directory, n=5, status=500, queue=2000, hold=False)
    finish(ok)
    finish(failing)
    samples = scrape(server.url)
    assert samples[("judgeval_spans_created_total", ())] == 8
    assert samples[("judgeval_spans_exported_total", ())] == 3
    # The failing worker's 5 spans were held, then persisted to its spool at exit (not dropped).
    assert sum(v for (name, _), v in samples.items() if name == "judgeval_spans_dropped_total") == 0
    assert samples[("judgeval_api_errors_total", (("endpoint", "traces"), ("status_code", "500")))] >= 1
    assert samples[("judgeval_export_duration_seconds_count", ())] >= 1  # only the worker whose export succeeded
    assert samples[("judgeval_api_request_duration_seconds_count", (("endpoint", "traces"),))] >= 2
    # Both workers have exited: only the serving process's own gauge remains.
    assert samples[("judgeval_queue_capacity", (("queue", "spans"),))] == 600


def test_live_worker_gauges_count_until_it_exits(served):
    """A running worker's gauges are summed in; after it exits its counters stay and its gauges go."""
    _, server, directory = served
    proc = worker(directory, n=4, status=200, queue=1000, hold=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        live = scrape(server.url)
    finally:
        finish(proc)
    assert live[("judgeval_queue_capacity", (("queue", "spans"),))] == 1600
    assert live[("judgeval_spans_exported_total", ())] == 4
    after = scrape(server.url)
    assert after[("judgeval_queue_capacity", (("queue", "spans"),))] == 600
    assert after[("judgeval_spans_exported_total", ())] == 4
    # A live process rewrites its file through a hidden temporary (".judgeval_<pid>.json.tmp", then a rename): one
    # may exist at the moment of listing; it is not a worker's file.
    files = sorted(p.name for p in directory.iterdir() if not p.name.endswith(".tmp"))
    assert files == sorted(f"judgeval_{pid}.json" for pid in (proc.pid, os.getpid()))
