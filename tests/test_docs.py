"""Every ```python block of the documentation and the README runs as a reader runs it.

Each page runs in a fresh interpreter (``python -c``, like an interactive
session: ``__name__ == "__main__"`` and no ``__file__``), its blocks in order in
one namespace, in a private ``$SHMSTORE_ROOT`` and a private working directory.
Tracebacks point at the page's own line numbers. Afterwards every namespace and
named array the page left is destroyed, and nothing may have appeared in the
host's ``/dev/shm``.

A block that needs something the suite does not start (object storage, a
cluster of several hosts) begins with the visible comment ``# Not run by the
docs tests: <why>`` and is the only kind skipped. A new page needs nothing
here: every ``*.md`` under ``docs/`` is collected.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import shmstore

REPO = Path(__file__).resolve().parent.parent
PAGES = [*sorted((REPO / "docs").rglob("*.md")), REPO / "README.md"]
SKIP = re.compile(r"# Not run by the docs tests: \S")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")

# Runs in the page's interpreter; reads [[first_line, source], ...] on stdin.
RUNNER = """
import json, sys, traceback
page, blocks = sys.argv[1], json.load(sys.stdin)
ns = sys.modules["__main__"].__dict__
for number, (line, source) in enumerate(blocks, 1):
    code = compile("\\n" * (line - 1) + source, page, "exec")
    try:
        exec(code, ns)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"block {number} of {page} (line {line}) failed")
"""


def python_blocks(path: Path) -> list[tuple[int, str, bool]]:
    """``(first line of code, code, skipped)`` for each ```python block of *path*."""
    blocks: list[tuple[int, str, bool]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        lang = m["info"].strip().split(" ")[0].lower() if m["info"].strip() else ""
        start, body = i + 1, []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        if lang in ("python", "py"):
            code = "\n".join(body) + "\n"
            first = next((ln for ln in body if ln.strip()), "")
            blocks.append((start + 1, code, bool(SKIP.match(first.strip()))))
    return blocks


def _entries(root: str) -> set[str]:
    return {n.name for n in shmstore.namespaces(root=root)} | {
        a.name for a in shmstore.list(root=root)
    }


def _clean(root: Path) -> None:
    for ns in shmstore.namespaces(root=str(root)):
        shmstore.destroy(ns.name, root=str(root))
    for a in shmstore.list(root=str(root)):
        shmstore.delete(a.name, root=str(root))


def test_every_page_is_collected() -> None:
    names = {p.name for p in PAGES}
    assert {"index.md", "README.md"} <= names
    counts = {p.relative_to(REPO).as_posix(): len(python_blocks(p)) for p in PAGES}
    assert sum(counts.values()) > 0, counts


def test_a_skipped_block_says_why() -> None:
    for page in PAGES:
        for line, code, skipped in python_blocks(page):
            if "not run by the docs tests" in code.lower() and not skipped:
                pytest.fail(f"{page}:{line}: the skip comment must be the block's first line")


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if python_blocks(p)],
    ids=lambda p: p.relative_to(REPO).as_posix(),
)
def test_page_runs(page: Path, shm_root: Path, tmp_path: Path) -> None:
    blocks = [(line, code) for line, code, skipped in python_blocks(page) if not skipped]
    if not blocks:
        pytest.skip("every python block of the page needs a service the suite does not start")
    host = "/dev/shm" if os.path.isdir("/dev/shm") else None
    before = _entries(host) if host else set()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "SHMSTORE_ROOT": str(shm_root), "PYTHONPATH": str(REPO)}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", RUNNER, str(page)],
            input=json.dumps(blocks),
            capture_output=True,
            text=True,
            timeout=240,
            cwd=cwd,
            env=env,
        )
        assert proc.returncode == 0, f"{proc.stderr}\n--- stdout ---\n{proc.stdout}"
        # A coroutine called without await (zarr's Store.clear, say) does nothing
        # and only warns; an error in a __del__ is only printed.
        for sign in ("was never awaited", "Exception ignored"):
            assert sign not in proc.stderr, proc.stderr
    finally:
        _clean(shm_root)
    assert _entries(str(shm_root)) == set()
    if host:
        leaked = _entries(host) - before
        assert not leaked, f"the page left {sorted(leaked)} in {host}"
