"""Every ```python block of README.md runs as written, in its own interpreter, against a local Judgment API.

A block may opt out only with a marker comment on the line right before its fence, which must say why:

    <!-- readme-test: skip: <reason> -->          never run (say why it cannot run here)
    <!-- readme-test: requires: fastapi, uvicorn -->  skipped when one of these modules is not installed

Blocks get ``JUDGMENT_API_URL`` / ``JUDGMENT_API_KEY`` / ``JUDGMENT_ORG_ID`` pointing at a ``LocalJudgmentServer``, as
a user's shell would point them at the Judgment API.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from judgeval_async.testing import LocalJudgmentServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"^<!--\s*readme-test:\s*(skip|requires)\s*:\s*(\S.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    heading: str
    code: str
    skip: str = ""  # the reason, when marked skip
    requires: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"L{self.line}-" + re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")


def readme_blocks(text: str) -> list[Block]:
    """The ```python blocks of ``text`` with their section heading and marker, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.strip() == "```python":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            before = lines[i - 1].strip() if i else ""
            marker = MARKER.match(before)
            skip, requires = "", ()
            if marker and marker[1] == "skip":
                skip = marker[2]
            elif marker:
                requires = tuple(m.strip() for m in marker[2].split(",") if m.strip())
            blocks.append(Block(i + 1, heading, "\n".join(lines[i + 1 : end]) + "\n", skip, requires))
            i = end
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def backend() -> Iterator[LocalJudgmentServer]:
    with LocalJudgmentServer() as server:
        yield server


def run_block(block: Block, server: LocalJudgmentServer, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "readme_block.py"
    script.write_text(block.code, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "JUDGMENT_API_URL": server.url,
        "JUDGMENT_API_KEY": server.api_key,
        "JUDGMENT_ORG_ID": server.org_id,
    }
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90, check=False
    )


def test_the_readme_has_code_blocks_and_markers_are_rare_and_justified():
    """The extraction finds the Quick start, and at most a third of the blocks never run, each saying why."""
    assert any(b.heading == "Quick start" for b in BLOCKS)
    skipped = [b for b in BLOCKS if b.skip]  # "requires" blocks run wherever their modules are installed
    assert len(skipped) * 3 <= len(BLOCKS), [b.id for b in skipped]
    assert all(len(b.skip) >= 10 for b in BLOCKS if b.skip), "a skip marker must say why"
    # A marker that does not parse would silently run the block: catch typos.
    for line in README.read_text(encoding="utf-8").splitlines():
        if "readme-test" in line:
            assert MARKER.match(line.strip()), f"malformed marker: {line!r}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs(block: Block, backend: LocalJudgmentServer, tmp_path: Path):
    """The block exits 0 with nothing on stderr that looks like an error."""
    if block.skip:
        pytest.skip(f"README marks this block skip: {block.skip}")
    for module in block.requires:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"README block needs {module}, which is not installed")
    proc = run_block(block, backend, tmp_path)
    assert proc.returncode == 0, f"README.md line {block.line}:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.timeout(120)
def test_quick_start_traces_handle_for_real(backend: LocalJudgmentServer, tmp_path: Path):
    """The Quick start calls handle(): the backend receives its three spans, its tags and its evaluation."""
    (block,) = [b for b in BLOCKS if b.heading == "Quick start"]
    before_evals = len(backend.evals)
    proc = run_block(block, backend, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "1 document(s) about what is the capital of France?"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", out[1]), out
    names = {span.name for span in backend.spans.values()}
    assert {"handle", "search", "plan"} <= names, names
    assert any({"beta", "eu"} <= tags for tags in backend.tags.values())
    assert len(backend.evals) == before_evals + 1


def test_markers_are_read_from_the_line_before_the_fence():
    """A skip marker carries its reason, a requires marker its modules; an unmarked block runs."""
    text = "\n".join(
        [
            "## A",
            "<!-- readme-test: skip: starts a server that never returns -->",
            "```python",
            "serve()",
            "```",
            "## B",
            "<!-- readme-test: requires: fastapi, uvicorn -->",
            "```python",
            "import fastapi",
            "```",
            "```python",
            "print(1)",
            "```",
        ]
    )
    a, b, c = readme_blocks(text)
    assert (a.heading, a.skip, a.code) == ("A", "starts a server that never returns", "serve()\n")
    assert (b.heading, b.requires, b.skip) == ("B", ("fastapi", "uvicorn"), "")
    assert (c.skip, c.requires, c.code) == ("", (), "print(1)\n")
