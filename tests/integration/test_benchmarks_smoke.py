"""The benchmark scripts run in ``--quick`` mode and write their result files (no assertions on the numbers)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT_TIMEOUT = 120


def run_quick(script: str, results_dir: pathlib.Path) -> dict:
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{script}.py", "--quick", "--results-dir", str(results_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (results_dir / f"{script}.md").is_file()
    return json.loads((results_dir / f"{script}.json").read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.timeout(SCRIPT_TIMEOUT + 30)
def test_handoff_benchmark_quick_run_writes_results(tmp_path):
    """benchmarks/handoff.py --quick exits 0 and writes JSON with every mechanism at 1 and 4 producers."""
    doc = run_quick("handoff", tmp_path)
    assert {"benchmark", "machine", "quick", "results", "targets"} <= doc.keys()
    assert doc["quick"] is True
    for mechanism in ("Handoff.offer", "Queue.put_nowait", "call_soon_threadsafe", "deque.append"):
        for threads in (1, 4):
            assert {"p50", "p99", "calls_per_s"} <= doc["results"][f"{mechanism}|{threads}"].keys()
    assert {"offer_p50_le_put_nowait_1t", "offer_p50_le_put_nowait_4t"} <= doc["targets"].keys()


@pytest.mark.slow
@pytest.mark.timeout(SCRIPT_TIMEOUT + 30)
def test_overhead_benchmark_quick_run_writes_results(tmp_path):
    """benchmarks/overhead.py --quick exits 0 and writes JSON with latency, load, caller-latency and shutdown."""
    doc = run_quick("overhead", tmp_path)
    expected = {"latency_us", "overhead_us", "load", "load_summary", "caller_latency_us", "shutdown", "targets"}
    assert expected <= doc.keys()
    assert {"observe", "observe (no I/O)", "otel"} <= doc["load_summary"].keys()
    assert {"healthy", "slow (10 s latency)", "down (black-hole)", "down (refusing)"} <= doc["caller_latency_us"].keys()
    assert {"sync_observe_p95_under_1ms", "tag_p99_under_50us_all_states"} <= doc["targets"].keys()


@pytest.mark.slow
@pytest.mark.timeout(SCRIPT_TIMEOUT + 30)
def test_load_benchmark_quick_run_writes_results(tmp_path):
    """benchmarks/load.py --quick exits 0 and writes JSON with every variant, backend state and producer count."""
    doc = run_quick("load", tmp_path)
    assert {"params", "runs", "summary", "targets"} <= doc.keys()
    assert doc["quick"] is True
    for variant in ("baseline", "observe", "observe (no I/O)", "otel"):
        for state in ("healthy", "slow (200 ms)"):
            for threads in (1, 4):
                row = doc["summary"][f"{variant}|{state}|{threads}"]
                assert {"achieved_rate", "loss", "host_p50_us", "host_p99_us", "host_p99_ratio"} <= row.keys()
    assert {"healthy_loss_zero|observe", "loss_le_otel|observe|healthy"} <= doc["targets"].keys()
    assert "host_p99_ratio_le_1.5|observe|healthy" in doc["targets"]
