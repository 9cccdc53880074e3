"""``python -m judgeval_async.testing.server`` tells its user which credentials it expects."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest

import judgeval_async.testing

REPO_ROOT = pathlib.Path(judgeval_async.testing.__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.Popen[str]:
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
def test_help_names_the_default_key_and_org():
    """--help shows the default API key and organization id and the environment to point a Tracer at it."""
    with cli("--help") as proc:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "test-key" in out and "test-org" in out
    assert "JUDGMENT_API_KEY=test-key" in out and "JUDGMENT_ORG_ID=test-org" in out


@pytest.mark.timeout(60)
def test_startup_prints_the_expected_credentials():
    """The line after the URL says which key/org the server expects, with the variables a Tracer reads."""
    with cli("--port", "0", "--api-key", "k-1", "--org-id", "o-1") as proc:
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
