"""``python -m judgeval_async.testing.server``: a separate-process smoke test, parsers, printed credentials."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import httpx
import pytest

import judgeval_async.testing
from judgeval_async.testing.server import parse_duration, parse_latency

REPO_ROOT = pathlib.Path(judgeval_async.testing.__file__).resolve().parents[2]


def start_cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "judgeval_async.testing.server", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.timeout(60)
def test_cli_serves_until_sigint_and_prints_a_summary():
    """The CLI prints its URL, serves requests with its faults, and exits 0 on SIGINT."""
    with start_cli("--port", "0", "--latency", "50ms", "--api-key", "k", "--org-id", "o") as proc:
        try:
            first = proc.stdout.readline()  # blocks until the socket listens (or the process dies)
            assert first.startswith("judgeval local server listening on http://127.0.0.1:"), first + proc.stderr.read()
            url = first.rsplit(" ", 1)[1].strip()
            headers = {"Authorization": "Bearer k", "X-Organization-Id": "o"}
            with httpx.Client(base_url=url, headers=headers, timeout=10) as c:
                r = c.post("/v1/projects/resolve/", json={"project_name": "demo"})
                assert r.status_code == 200
                stats = c.get("/_control/stats").json()
            assert stats["requests"]["resolve"] == {"200": 1}
            assert stats["faults"] == {"*": [{"kind": "latency", "seconds": 0.05}]}
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert "resolve" in out and "200: 1" in out


@pytest.mark.timeout(60)
def test_cli_refuses_non_loopback_host():
    """Asking the CLI to bind a public address is a usage error (exit 2)."""
    with start_cli("--host", "0.0.0.0", "--port", "0") as proc:
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "loopback" in err


@pytest.mark.parametrize(
    ("text", "seconds"), [("2s", 2.0), ("250ms", 0.25), ("0.5", 0.5), (" 1.5s ", 1.5), (".5s", 0.5)]
)
def test_parse_duration(text, seconds):
    """Durations accept s, ms or bare seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2 minutes", "-1s", "1h"])
def test_parse_duration_rejects_garbage(text):
    """Anything but a non-negative number with s/ms is rejected."""
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_latency_fixed_and_range():
    """Latency is one duration or a low-high range."""
    assert parse_latency("2s") == (2.0, 2.0)
    assert parse_latency("100ms-500ms") == pytest.approx((0.1, 0.5))
    with pytest.raises(ValueError):
        parse_latency("500ms-100ms")


@pytest.mark.timeout(60)
def test_help_names_the_default_key_and_org():
    """--help shows the default API key and organization id and the environment to point a Tracer at it."""
    with start_cli("--help") as proc:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "test-key" in out and "test-org" in out
    assert "JUDGMENT_API_KEY=test-key" in out and "JUDGMENT_ORG_ID=test-org" in out


@pytest.mark.timeout(60)
def test_startup_prints_the_expected_credentials():
    """The line after the URL says which key/org the server expects, with the variables a Tracer reads."""
    with start_cli("--port", "0", "--api-key", "k-1", "--org-id", "o-1") as proc:
        try:
            first = proc.stdout.readline()
            second = proc.stdout.readline()
            url = first.rsplit(" ", 1)[1].strip()
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert first.startswith("judgeval local server listening on http://127.0.0.1:")
    assert "'k-1'" in second and "'o-1'" in second
    assert f"JUDGMENT_API_URL={url} JUDGMENT_API_KEY=k-1 JUDGMENT_ORG_ID=o-1" in second
