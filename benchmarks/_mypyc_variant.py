"""Build a copy of ``judgeval_async`` with its hot modules compiled by mypyc, for ``web.py`` A/B runs (issue 12).

    python benchmarks/_mypyc_variant.py DEST [MODULE ...]
    BENCH_WEB_VARIANTS="mypyc:PYTHONPATH=DEST" python benchmarks/web.py ...

The question it answers: is the caller's tracing cost in a web service the interpreter's (then compiling the same
source would cut it), or the memory the code and its objects touch between requests (then it would not)? mypyc
ships with mypy (a dev dependency) and compiles our type-annotated modules to C extensions; an extension next to
its ``.py`` is imported instead of it, so ``PYTHONPATH=DEST`` makes an app use the compiled copy.

An experiment, not a build of the library: the copy is edited where mypyc refuses our source, and loses behaviour.
- ``EngineSpan`` is a plain class (mypyc treats ``TYPE_CHECKING`` as true, and a compiled class cannot inherit the
  API's ``Span``); it is still registered as a virtual subclass, as in the library.
- ``observe`` loses its generator wrappers (mypyc does not compile async generators): an observed generator function
  is wrapped as a plain function (its span ends when the generator is created). ``web.py``'s app has none.
- ``_tracer``'s flush gathers through an untyped ``asyncio.gather`` (mypyc checks the declared tuple at run time;
  ``gather`` returns a list).
- Code that monkeypatches a compiled module's globals (many unit tests) has no effect on it.

Default modules: the caller's path (observe, the span engine, serialization, metrics, tag and evaluation
hand-offs) and the loop's encoder and span pipeline. Needs a C compiler and the Python headers.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "judgeval_async"

MODULES = (
    "_span",
    "_serialize",
    "_handoff",
    "_spans",
    "_otlp",
    "_observe",
    "_provider",
    "_tracer",
    "_metrics",
    "_tags",
    "_evals",
    "_gcguard",
    "_semconv",
)

# (file, pattern, replacement): each pattern must match once, or the source moved on and the edit must be redone.
_EDITS = (
    (
        "_span.py",
        r"if TYPE_CHECKING:\n    _SpanBase = trace\.Span\nelse:\n    _SpanBase = object\n"
        r"\n\nclass EngineSpan\(_SpanBase\):",
        "class EngineSpan:",
    ),
    ("_span.py", r"\nif not TYPE_CHECKING:\n", "\nif True:\n"),
    (
        "_observe.py",
        r"    if inspect\.isasyncgenfunction\(func\):\n.*?(?=    if inspect\.iscoroutinefunction\(func\):)",
        "",
    ),
    (
        "_tracer.py",
        r"        results = await asyncio\.gather\(",
        "        gather: Any = asyncio.gather\n        results: Any = await gather(",
    ),
)

# EngineSpan, no longer declared a Span, is returned and compared where a Span is declared: fine at run time (it is
# registered as one), refused by mypy, whose errors stop mypyc. No pyproject.toml in DEST: mypy's defaults, not strict.
_MYPY_FLAGS = ("--disable-error-code=return-value", "--disable-error-code=comparison-overlap")


def copy_package(dest: Path) -> Path:
    """A fresh copy of the package under ``dest``, with the edits mypyc needs; returns the copy's package dir."""
    target = dest / "judgeval_async"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for name, pattern, replacement in _EDITS:
        path = target / name
        text, n = re.subn(pattern, replacement, path.read_text(), flags=re.DOTALL)
        if n != 1:
            raise SystemExit(f"_mypyc_variant: {name}: expected one match of {pattern!r}, found {n}; redo this edit")
        path.write_text(text)
    return target


def build(dest: Path, modules: tuple[str, ...] = MODULES) -> list[Path]:
    """Copy, edit and compile ``modules`` in place under ``dest``; returns the extension files built."""
    unknown = [m for m in modules if not (PACKAGE / f"{m}.py").is_file()]
    if unknown:
        raise SystemExit(f"_mypyc_variant: no such module in judgeval_async: {', '.join(unknown)}")
    dest.mkdir(parents=True, exist_ok=True)
    copy_package(dest)
    paths = [f"judgeval_async/{m}.py" for m in modules]
    # In a child: setuptools' setup() parses and keeps global state; --inplace puts each extension next to its .py.
    script = (
        "import sys\n"
        "from setuptools import setup\n"
        "from mypyc.build import mypycify\n"
        "setup(name='judgeval-async-mypyc-variant', packages=[], py_modules=[],\n"
        "      ext_modules=mypycify(sys.argv[1:], opt_level='3'), script_args=['build_ext', '--inplace'])\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, *_MYPY_FLAGS, *paths], cwd=dest, check=True, stdout=subprocess.DEVNULL
    )
    built = [next((dest / "judgeval_async").glob(f"{m}.*.so"), None) for m in modules]
    missing = [m for m, so in zip(modules, built, strict=True) if so is None]
    if missing:
        raise SystemExit(f"_mypyc_variant: no extension was built for {', '.join(missing)}")
    return [so for so in built if so is not None]


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    dest = Path(argv[0]).resolve()
    modules = tuple(argv[1:]) or MODULES
    if importlib.util.find_spec("mypyc") is None:  # it ships with mypy
        raise SystemExit("_mypyc_variant: mypyc is not installed (pip install mypy)")
    built = build(dest, modules)
    print(f"built {len(built)} extension(s) in {dest / 'judgeval_async'}")
    print(f'use: BENCH_WEB_VARIANTS="mypyc:PYTHONPATH={dest}"')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
