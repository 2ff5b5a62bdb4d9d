"""Another user (uid 65534) on the same shared-memory root as root."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
soak = importlib.import_module("soak")

KILLED_IN_SCOPE = r"""
import os, signal, shmstore
with shmstore.SharedMemoryStore("theirs", scoped=True):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_another_user_can_neither_read_nor_break_roots_data(shm_root: Path, tmp_path: Path) -> None:
    report = soak.run_isolation(str(shm_root), str(tmp_path))
    if "skipped" in report:
        pytest.skip(report["skipped"])
    breaches = [a for a in report["attempts"] if not a["refused"] and not a["plant"]]
    assert breaches == [], json.dumps(breaches, indent=1)
    assert report["problems"] == [], "\n".join(report["problems"])
    assert all(c["returncode"] == 0 for c in report["cli"]), report["cli"]


def test_gc_goes_on_past_another_users_dead_scoped_namespace(shm_root: Path) -> None:
    """A process of uid 65534 dies inside a scoped store; root's gc still works and
    leaves that namespace alone (it is not root's to reclaim by opening it)."""
    env = soak._child_env(str(shm_root))
    why = soak.nobody_unavailable(env)
    if why is not None:
        pytest.skip(why)
    os.chmod(shm_root, 0o1777)
    died = soak.as_nobody([sys.executable, "-c", KILLED_IN_SCOPE], env)
    assert died.returncode == -9, died.stderr
    gc = soak.gc_cli(str(shm_root))
    assert gc["returncode"] == 0, gc
    ls = soak._cli(str(shm_root), "ls", "--json")
    assert ls.returncode == 0, ls.stderr
