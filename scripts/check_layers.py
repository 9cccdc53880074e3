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
    {"_retry", "_semconv", "_http11", "_gcguard"},
    {"_config", "_introspection", "_span"},
    {"_delivery", "_routes"},
    {"_metrics", "_serialize", "_metadata", "_otlp"},
    {"_handoff", "_health", "_provider", "_span_evals"},
    {"_runtime", "_transport", "_signals"},
    {"_sender"},
    {"_pipeline", "_project", "_multiprocess"},
    {"_spans", "_tags", "_evals", "_observe", "_prometheus"},
    {"_tracer"},
    {"__init__", "demo", "__main__", "asgi"},
]
# Inside the _delivery package: the same rule, among its own modules (it may import the package rows below it).
DELIVERY_ROWS: list[set[str]] = [
    {"_envelope"},
    {"_format", "_aimd", "_backlog", "_counters"},
    {"_segment", "_endpoint"},
    {"_writer"},
    {"_spool"},
    {"__init__"},
]
# Third-party homes: library -> modules allowed to import it.
HOMES = {
    "httpx": {"_transport", "_tracer", "_http11"},
    "prometheus_client": {"_prometheus", "_multiprocess"},
    "opentelemetry": {"_spans", "_tracer", "_observe", "_otlp", "_span", "_provider"},
    "aiometer": {"_spans", "_tags", "_evals"},
}


def row_of(name: str) -> int | None:
    for i, row in enumerate(ROWS):
        if name in row:
            return i
    return None


def _targets(node: ast.AST, in_package: bool) -> tuple[list[str], list[str]]:
    """(package-level module names, sibling names inside _delivery) that one import statement reaches."""
    top_level: list[str] = []
    siblings: list[str] = []
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level == 0:
            if module.startswith("judgeval_async."):
                top_level.append(module.split(".")[1])
            elif module == "judgeval_async":
                top_level.extend(a.name for a in node.names)
            else:
                top_level.append(module)
        elif node.level == 1 and not in_package:
            top_level.append(module.split(".")[0] if module else "")
        elif node.level == 1:  # from . import x / from ._x import y, inside _delivery
            siblings.extend([module.split(".")[0]] if module else [a.name for a in node.names])
        elif node.level == 2 and in_package:
            top_level.append(module.split(".")[0] if module else "")
    elif isinstance(node, ast.Import):
        for a in node.names:
            parts = a.name.split(".")
            top_level.append(parts[1] if parts[0] == "judgeval_async" and len(parts) > 1 else a.name)
    return top_level, siblings


def main() -> int:
    errors: list[str] = []
    paths = sorted(ROOT.glob("*.py")) + sorted((ROOT / "_delivery").glob("*.py"))
    for path in paths:
        in_package = path.parent.name == "_delivery"
        mod = "_delivery" if in_package else path.stem
        name = f"_delivery/{path.name}" if in_package else path.name
        mine = row_of(mod)
        if mine is None:
            errors.append(f"{path.name}: not placed in a layer (add it to scripts/check_layers.py)")
            continue
        inner = next((i for i, row in enumerate(DELIVERY_ROWS) if path.stem in row), None)
        if in_package and inner is None:
            errors.append(f"{name}: not placed in a _delivery layer (add it to scripts/check_layers.py)")
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            targets, siblings = _targets(node, in_package)
            for sib in siblings:
                other_inner = next((i for i, row in enumerate(DELIVERY_ROWS) if sib in row), None)
                if inner is not None and other_inner is not None and other_inner >= inner:
                    errors.append(f"{name}:{node.lineno}: imports _delivery.{sib} (same or higher layer)")
            for t in targets:
                top = t.split(".")[0]
                if t.startswith("judgeval_async.testing") or top == "testing":
                    if mod not in {"demo", "__main__"}:
                        errors.append(f"{name}: imports the testing package")
                    continue
                if top.startswith("_"):
                    other = row_of(top)
                    if other is None:
                        continue
                    if other >= mine:
                        errors.append(f"{name}:{node.lineno}: imports {top} (same or higher layer)")
                home = HOMES.get(top)
                if home is not None and mod not in home:
                    errors.append(f"{name}:{node.lineno}: imports {top}, whose home is {sorted(home)}")
    for e in errors:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
