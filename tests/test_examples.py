"""The flagship example runs end to end and cleans up after itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_flagship_demo(shm_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "flagship.py"), "--size-mib", "16"],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "shared memory, opened by name" in proc.stdout
    assert "namespace destroyed: True" in proc.stdout
    assert list(shm_root.iterdir()) == []


def test_store_dask_spill_example(shm_root: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "store_dask_spill.py"),
            "--size-mib",
            "16",
            "--capacity-mib",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "spilled to" in proc.stdout and " 0 spilled" not in proc.stdout
    assert list(shm_root.iterdir()) == []
