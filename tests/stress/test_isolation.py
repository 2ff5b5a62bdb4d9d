"""Another user (uid 65534) on the same shared-memory root as root."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
soak = importlib.import_module("soak")


def test_another_user_can_neither_read_nor_break_roots_data(shm_root: Path, tmp_path: Path) -> None:
    """Uid 65534 tries to read, write and delete root's namespace and named array,
    and plants symlinks, a FIFO, corrupt entries and a scoped namespace whose
    process died; root's data stays, and root's ls, du and gc still work."""
    report = soak.run_isolation(str(shm_root), str(tmp_path))
    if "skipped" in report:
        pytest.skip(report["skipped"])
    breaches = [a for a in report["attempts"] if not a["refused"] and not a["plant"]]
    assert breaches == [], json.dumps(breaches, indent=1)
    assert report["problems"] == [], "\n".join(report["problems"])
    assert all(c["returncode"] == 0 for c in report["cli"]), report["cli"]
    assert report["refused_plants"] == [], report["refused_plants"]
