"""Run every benchmark script in this folder, one after another, each in its own process.

    python benchmarks/run_all.py [--quick]

Each script prints its tables and writes ``benchmarks/results/<name>.{json,md}``. Targets print PASS or MISS and
never change an exit code; this runner exits non-zero only if a script crashed or timed out.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS_DIR, markdown_table, parse_args

HERE = Path(__file__).resolve().parent
SKIP = {"run_all.py"}
TIMEOUT_S = 600.0  # a full run is meant to take ~2 minutes; this only catches a hang


def scripts() -> list[Path]:
    """Every ``benchmarks/*.py`` except this runner and the private helpers (``_*.py``), sorted by name."""
    return sorted(p for p in HERE.glob("*.py") if p.name not in SKIP and not p.name.startswith("_"))


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    extra = ["--quick"] if args.quick else []
    extra += ["--with-judgeval"] if args.with_judgeval else []  # scripts without a judgeval subject ignore it
    extra += ["--without-judgeval"] if args.without_judgeval else []
    if args.results_dir is not None:
        extra += ["--results-dir", str(args.results_dir.resolve())]
    rows = []
    failed = 0
    for script in scripts():
        print(f"\n===== {script.name} {' '.join(extra)}".rstrip(), flush=True)
        t0 = time.perf_counter()
        try:
            cmd = [sys.executable, str(script), *extra]
            rc = subprocess.run(cmd, check=False, cwd=HERE.parent, timeout=TIMEOUT_S).returncode
            status = "ok" if rc == 0 else f"exit {rc}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {TIMEOUT_S:.0f} s"
        failed += status != "ok"
        rows.append([script.name, status, time.perf_counter() - t0])
    print("\n" + markdown_table(["script", "status", "seconds"], rows, digits=1))
    print(f"\nResults: {args.results_dir or RESULTS_DIR}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
