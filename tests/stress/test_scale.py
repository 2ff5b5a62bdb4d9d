"""Many chunks in one namespace, and many namespaces read in turn by one process."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
soak = importlib.import_module("soak")


def test_twenty_thousand_chunks_in_one_namespace(shm_root: Path) -> None:
    report = soak.run_scale(soak.SHORT, str(shm_root))
    child = report["child"]
    assert not soak.failed(report), json.dumps(report, indent=1)
    assert child["listed"] == child["chunks"] == soak.SHORT.scale_chunks
    # one mapping per cached chunk at most, within the bound and far from the kernel's limit
    assert child["maps_max"] - child["maps_baseline"] <= child["mapping_bound"] + 512
    assert child["maps_max"] < child["max_map_count"] // 2


def test_namespaces_read_in_turn_stay_under_the_mapping_bound(shm_root: Path) -> None:
    report = soak.run_namespaces(soak.SHORT, str(shm_root))
    child = report["child"]
    assert not soak.failed(report), json.dumps(report, indent=1)
    assert child["mapping_bound"] == soak.SHORT.max_mappings
    assert child["namespaces"] * child["chunks_each"] > 4 * child["mapping_bound"]
    assert child["cached_mappings"] <= child["mapping_bound"]
    assert child["fds_max"] < child["nofile"] // 2
