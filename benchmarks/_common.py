"""Shared helpers for the benchmark scripts: arguments, percentiles, Markdown tables, result files, a server process.

Every script writes ``benchmarks/results/<name>.json`` (numbers, for machines) and ``benchmarks/results/<name>.md``
(the same tables, for people). Numbers are measurements, not assertions: a target prints PASS or MISS next to the
measured value and the script exits 0 either way.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "RESULTS_DIR",
    "ServerProcess",
    "machine_info",
    "markdown_table",
    "parse_args",
    "percentile",
    "ratio",
    "server_process",
    "summarize",
    "verdict",
    "write_results",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _private_spool_dir() -> None:
    """Point every SDK in this run (and in the processes it starts, which inherit the environment) at one temporary
    spool directory, removed at exit.

    Benchmarks talk to local servers on random ports. A subject that ends while holding data (backend down, an
    outage scenario) persists it under that URL's key, which no later process ever replays: in the default
    ``~/.cache/judgeval_async`` it piled up run after run (150 MB in a day of benchmarking). A directory the caller
    chose (``JUDGMENT_SPOOL_DIR`` already set) is left alone.
    """
    if os.environ.get("JUDGMENT_SPOOL_DIR"):
        return
    path = tempfile.mkdtemp(prefix="judgeval-async-bench-spool-")
    os.environ["JUDGMENT_SPOOL_DIR"] = path
    atexit.register(shutil.rmtree, path, True)


_private_spool_dir()


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The common command line: ``--quick`` (a few seconds, for the smoke test) or a full run."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a few seconds in total: checks the script runs")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help=f"where to write <name>.json and <name>.md (default {RESULTS_DIR})",
    )
    judgeval = parser.add_mutually_exclusive_group()
    judgeval.add_argument(
        "--with-judgeval",
        action="store_true",
        help="build .venv-judgeval (pip install judgeval) if absent and measure it (default: only if present)",
    )
    judgeval.add_argument("--without-judgeval", action="store_true", help="leave judgeval out even if its venv exists")
    return parser.parse_args(argv)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, by linear interpolation; NaN when empty."""
    n = len(sorted_values)
    if n == 0:
        return float("nan")
    if n == 1:
        return float(sorted_values[0])
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


def summarize(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """n, mean, p50, p95, p99 and max of ``values`` multiplied by ``scale`` (e.g. 1e-3 for ns -> µs)."""
    data = sorted(v * scale for v in values)
    if not data:
        return {"n": 0, "mean": float("nan"), "p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    return {
        "n": len(data),
        "mean": sum(data) / len(data),
        "p50": percentile(data, 50),
        "p95": percentile(data, 95),
        "p99": percentile(data, 99),
        "max": data[-1],
    }


def ratio(a: float, b: float) -> float:
    """a / b, or NaN when b is not positive (a ratio to nothing means nothing)."""
    return a / b if b > 0 else float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: floats with ``digits`` decimals, everything else as str."""
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """A GitHub-flavoured Markdown table; numeric cells right-aligned."""
    cells = [[fmt(c, digits) for c in row] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows)
        for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric, strict=True))
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def machine_info() -> dict[str, Any]:
    """Where and when the numbers were taken (they only mean something next to each other)."""
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv[1:],
    }


def write_results(name: str, data: dict[str, Any], markdown: str, results_dir: Path | None = None) -> tuple[Path, Path]:
    """Write ``<name>.json`` (``data`` plus machine info) and ``<name>.md`` into ``results_dir`` (default
    ``benchmarks/results``); return both paths."""
    out = RESULTS_DIR if results_dir is None else results_dir
    out.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "machine": machine_info(), **data}
    json_path = out / f"{name}.json"
    md_path = out / f"{name}.md"
    json_path.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    info = doc["machine"]
    header = f"# {name}\n\n{info['date']} · Python {info['python']} · {info['cpu_count']} CPUs · {info['platform']}\n\n"
    md_path.write_text(header + markdown.rstrip() + "\n", encoding="utf-8")
    return json_path, md_path


class ServerProcess:
    """A `LocalJudgmentServer` in its own process, driven over its ``/_control/`` endpoints.

    A separate process keeps the server's protobuf decoding off the benchmark's GIL and out of its
    ``time.process_time()``, so what is measured is the client alone.
    """

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url
        self.api_key = "test-key"
        self.org_id = "test-org"
        self._control = httpx.Client(base_url=url, timeout=10.0)

    def set_fault(self, endpoint: str | None = None, **fault: Any) -> None:
        """``kind=...`` plus the fault's fields (see ``judgeval_async.testing.Fault``)."""
        body = dict(fault, endpoint=endpoint) if endpoint else dict(fault)
        self._control.post("/_control/fault", json=body).raise_for_status()

    def clear_faults(self) -> None:
        self._control.post("/_control/clear", json={}).raise_for_status()

    def reset_records(self) -> None:
        self._control.post("/_control/reset", json={}).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """Request counts by endpoint and outcome, and record counts (``spans`` = distinct spans)."""
        resp = self._control.get("/_control/stats")
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def wait_for_spans(self, n: int, timeout: float) -> int:
        """Poll until the server holds ``n`` distinct spans or ``timeout`` passes; the count reached."""
        deadline = time.monotonic() + timeout
        count = self.stats()["spans"]
        while count < n and time.monotonic() < deadline:
            time.sleep(0.1)
            count = self.stats()["spans"]
        return int(count)

    def close(self) -> None:
        self._control.close()


@contextmanager
def server_process(startup_timeout: float = 20.0) -> Iterator[ServerProcess]:
    """Start ``python -m judgeval_async.testing.server --port 0``, yield it once it listens, then stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "judgeval_async.testing.server", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + startup_timeout
        url = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if "listening on " in line:
                url = line.rsplit("listening on ", 1)[1].strip()
                break
        if not url:
            raise RuntimeError("the local server did not start")
        server = ServerProcess(proc, url)
        try:
            yield server
        finally:
            server.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
