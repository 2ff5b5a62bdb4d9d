"""A small private tmpfs filled several times over, with and without a spill tier.

Every write lands, spills or raises ``SharedMemoryFullError``; nothing is
half-written; nobody dies of SIGBUS (the workload runs in a child process, so
a SIGBUS would show as its exit signal, not kill the test run).
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
soak = importlib.import_module("soak")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[str]:
    """An 8 MiB tmpfs of this test's own (unmounted afterwards)."""
    try:
        with soak.private_tmpfs(str(tmp_path), soak.SHORT.tmpfs_bytes) as mnt:
            yield mnt
    except PermissionError as e:
        pytest.skip(f"a private tmpfs is needed for this test: {e}")


def test_a_full_tmpfs_without_spill_raises_full_and_keeps_every_value(
    tmpfs: str, tmp_path: Path
) -> None:
    report = soak.run_fill(soak.SHORT, tmpfs, str(tmp_path / "spill"), mode="plain")
    child = report["child"]
    assert not soak.failed(report), json.dumps(report, indent=1)
    assert child["counts"]["full"] > 0 and child["counts"]["landed"] > 0
    assert child["landed_bytes"] >= soak.SHORT.fill_rounds * child["tmpfs_bytes"]
    # named arrays reserve their pages: they run out with an error, and every one
    # created could be written whole
    assert child["named_arrays"]["full_errors"] == 1 and child["named_arrays"]["created"] > 0


def test_a_full_tmpfs_with_spill_spills_and_keeps_every_value(tmpfs: str, tmp_path: Path) -> None:
    report = soak.run_fill(soak.SHORT, tmpfs, str(tmp_path / "spill"), mode="spill")
    child = report["child"]
    assert not soak.failed(report), json.dumps(report, indent=1)
    assert child["counts"]["spilled"] > 0 and child["counts"]["landed"] > 0
    assert child["landed_bytes"] >= soak.SHORT.fill_rounds * child["tmpfs_bytes"]
    assert child["capacity"]["leaked"] == 0
