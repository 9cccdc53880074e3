"""Enforce the dependency direction of STYLE.md: a module imports only from lower rows; siblings don't import each
other; nothing imports ``testing``; each third-party library has one home."""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "judgeval_async"

# Lower index = lower row. A module may import modules on strictly lower rows.
ROWS: list[set[str]] = [
    {"_errors"},
    {"_retry"},
    {"_config"},
    {"_metrics", "_serialize", "_metadata", "_otlp"},
    {"_handoff", "_health"},
    {"_runtime", "_transport", "_signals"},
    {"_pipeline", "_project", "_multiprocess"},
    {"_spans", "_tags", "_evals", "_observe", "_prometheus"},
    {"_tracer"},
    {"__init__", "demo", "__main__", "asgi"},
]
# Third-party homes: library -> modules allowed to import it.
HOMES = {
    "httpx": {"_transport", "_tracer"},
    "prometheus_client": {"_prometheus", "_multiprocess"},
    "opentelemetry": {"_spans", "_tracer", "_observe", "_otlp"},
    "aiometer": {"_spans", "_tags", "_evals"},
}


def row_of(name: str) -> int | None:
    for i, row in enumerate(ROWS):
        if name in row:
            return i
    return None


def main() -> int:
    errors: list[str] = []
    for path in sorted(ROOT.glob("*.py")):
        mod = path.stem
        mine = row_of(mod)
        if mine is None:
            errors.append(f"{path.name}: not placed in a layer (add it to scripts/check_layers.py)")
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    targets = [node.module.split(".")[0]]
                elif node.level == 0 and node.module:
                    targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                top = t.split(".")[0]
                if t.startswith("judgeval_async.testing") or top == "testing":
                    if mod not in {"demo", "__main__"}:
                        errors.append(f"{path.name}: imports the testing package")
                    continue
                if top.startswith("_"):
                    other = row_of(top)
                    if other is None:
                        continue
                    if other >= mine:
                        errors.append(f"{path.name}:{node.lineno}: imports {top} (same or higher layer)")
                home = HOMES.get(top)
                if home is not None and mod not in home:
                    errors.append(f"{path.name}:{node.lineno}: imports {top}, whose home is {sorted(home)}")
    for e in errors:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
