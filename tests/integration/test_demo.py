"""The README's main command: the demo runs end to end against the embedded backend and exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_runs_end_to_end() -> None:
    """A short demo through healthy, slow, down and healthy phases exits 0 with a balanced ledger."""
    proc = subprocess.run(
        [sys.executable, "-m", "judgeval_async.demo", "--duration", "4"],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for phase in ("[healthy]", "[   slow]", "[   down]"):
        assert phase in out
    assert "ledger balanced (every item delivered or dropped with a reason): True" in out
    assert "Traceback" not in proc.stderr
