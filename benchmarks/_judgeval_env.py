"""The judgeval SDK from PyPI as a benchmark subject, in its own venv (``.venv-judgeval``, git-ignored).

Its dependencies may conflict with ours, so it never shares our interpreter: the scripts run its side in a
subprocess of that venv (``benchmarks/_judgeval_worker.py`` or ``benchmarks/_web_app.py judgeval``) and read back
JSON. ``make bench-judgeval`` (or ``--with-judgeval`` on a script) builds the venv; when it is absent the table row
says `SKIPPED` and nothing fails.

judgeval 1.x reads ``JUDGMENT_API_URL``, ``JUDGMENT_API_KEY`` and ``JUDGMENT_ORG_ID`` at import (its default URL is
the public API): `judgeval_env` always sets all three to the local server on 127.0.0.1, so no traffic leaves the
machine. What it calls there (checked in judgeval 1.6.0's source): ``POST /v1/projects/resolve/`` at ``Tracer.init``,
``POST /otel/v1/traces`` (OTLP/HTTP, BatchSpanProcessor), ``POST /v1/projects/{id}/traces/{trace}/tags`` per
``tag()``, and ``POST /v1/projects/{id}/eval-queue/examples`` for ``async_evaluate()`` once its span ends: all four
are endpoints of the local server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-judgeval"
PYTHON = VENV / "bin" / "python"
WORKER = Path(__file__).resolve().parent / "_worker.py"
PACKAGES = ("judgeval", "starlette", "uvicorn")
SKIP_REASON = "skipped: judgeval venv not present (make bench-judgeval)"


def available() -> bool:
    """True when ``.venv-judgeval`` exists and imports judgeval."""
    if not PYTHON.exists():
        return False
    probe = subprocess.run([str(PYTHON), "-c", "import judgeval"], capture_output=True, timeout=120, check=False)
    return probe.returncode == 0


def ensure(create: bool) -> bool:
    """The venv is usable; with ``create`` build it first (``pip install judgeval starlette uvicorn``)."""
    if available():
        return True
    if not create:
        return False
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
    return available()


def version() -> str:
    out = subprocess.run(
        [str(PYTHON), "-c", "import importlib.metadata as m; print(m.version('judgeval'))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return out.stdout.strip() or "?"


def judgeval_env(url: str, api_key: str, org_id: str) -> dict[str, str]:
    """The environment for a judgeval subprocess: pointed at the local server, no ``.env`` surprises."""
    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise ValueError(f"judgeval must only talk to the local server, got {url!r}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUDGMENT_") and k != "PYTHONPATH"}
    env.update(
        JUDGMENT_API_URL=url,
        JUDGMENT_API_KEY=api_key,
        JUDGMENT_ORG_ID=org_id,
        JUDGMENT_NO_COLOR="1",
        PYTHONPATH=str(Path(__file__).resolve().parent),
    )
    return env


def worker_env_ours(url: str, api_key: str, org_id: str) -> dict[str, str]:
    """The environment for a ``_worker.py`` of ours or stock OTel: this interpreter's, plus the local server."""
    env = dict(os.environ)
    env.update(JUDGMENT_API_URL=url, JUDGMENT_API_KEY=api_key, JUDGMENT_ORG_ID=org_id)
    return env


def run_worker(
    subject: str,
    mode: str,
    url: str,
    api_key: str,
    org_id: str,
    params: dict[str, Any],
    timeout: float,
    on_ready: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Run ``_worker.py MODE SUBJECT`` in a fresh process (judgeval's venv for ``judgeval``, else ours); its JSON
    result, or ``{"error": ...}`` (never raises). ``on_ready`` runs when the worker says ``READY_FOR_LOAD``."""
    if subject == "judgeval":
        python, env = str(PYTHON), judgeval_env(url, api_key, org_id)
    else:
        python, env = sys.executable, worker_env_ours(url, api_key, org_id)
    # stderr to a file, not a pipe: a chatty SDK cannot fill it and stall the worker (closed in the finally below).
    errors = tempfile.TemporaryFile("w+")  # noqa: SIM115
    proc = subprocess.Popen(
        [python, str(WORKER), mode, subject, json.dumps(params)],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None and proc.stdin is not None
        for line in proc.stdout:
            if line.startswith("READY_FOR_LOAD"):
                if on_ready is not None:
                    on_ready()
                proc.stdin.write("go\n")
                proc.stdin.flush()
            elif line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line[len("RESULT ") :])
                proc.wait()
                return result
        proc.wait()
        errors.seek(0)
        err = errors.read()
        return {"error": f"worker {mode} {subject} exited {proc.returncode}: {err[-800:]}"}
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        errors.close()
