"""Writers SIGKILLed at random under readers, on a plain and a tiered namespace, then gc.

One short run of ``benchmarks/soak.py``'s fault engine (made by the first test
that needs it) and one test per promise it checks, so that a failure names
the promise that broke.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
soak = importlib.import_module("soak")

_RUN: dict[str, dict[str, Any]] = {}


@pytest.fixture
def faults(shm_root: Path, tmp_path: Path) -> dict[str, Any]:
    """The report of the short run; the first test that asks runs it in its own root."""
    if "report" not in _RUN:
        _RUN["report"] = soak.run_faults(soak.SHORT, str(shm_root), str(tmp_path))
    return _RUN["report"]


def _why(report: dict[str, Any], *parts: str) -> str:
    shown = {k: report[k] for k in ("seed", "kills", "operations", *parts) if k in report}
    return json.dumps({**shown, "examples": report["examples"]}, indent=1, default=str)


def test_only_the_writers_we_killed_die(faults: dict[str, Any]) -> None:
    f = faults["failures"]
    assert faults["kills"] >= soak.SHORT.kills, _why(faults)
    assert f["signals"] == 0, _why(faults)  # SIGBUS, SIGSEGV: a reader or writer crashed
    assert f["errors"] == 0, _why(faults)


@pytest.mark.parametrize("namespace", [soak.NS_PLAIN, soak.NS_TIERED])
def test_reads_are_whole_and_never_lose_a_committed_write(
    faults: dict[str, Any], namespace: str
) -> None:
    ns = faults["per_namespace"][namespace]
    assert ns["writes"] > 0 and ns["reads"] > 0, _why(faults, "per_namespace")
    assert ns["torn"] == 0, _why(faults, "per_namespace")
    assert ns["lost"] == 0, _why(faults, "per_namespace")
    assert ns["read_errors"] == 0, _why(faults, "per_namespace")


def test_gc_reclaims_everything_the_killed_writers_left(faults: dict[str, Any]) -> None:
    assert faults["gc"]["returncode"] == 0, faults["gc"]
    assert faults["leftovers_after_gc"] == [], _why(faults, "gc", "leftovers_after_gc")


def test_tiered_capacity_matches_its_files_after_gc(faults: dict[str, Any]) -> None:
    cap = faults["capacity"][soak.NS_TIERED]
    assert cap["leaked"] == 0, _why(faults, "capacity")
