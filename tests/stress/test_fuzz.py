"""Hostile namespace names and keys through every route that takes them."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import fsspec
import pytest
from zarr.core.buffer import default_buffer_prototype

import shmstore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
soak = importlib.import_module("soak")


def test_names_and_keys_round_trip_or_raise_and_stay_inside(shm_root: Path) -> None:
    """Hypothesis: through SharedMemoryStore, shmstore.create and fsspec, each input
    round-trips or raises ValueError/TypeError; nothing appears outside the
    namespace directory (the root and the root's parent are compared)."""
    report = soak.run_fuzz(soak.SHORT, str(shm_root))
    assert report["problems"] == [], "\n\n".join(report["problems"])
    for route, counts in report["counts"].items():
        assert counts.get("round trip", 0) > 0, (route, counts)


# 20 components of 250 bytes: each one is allowed, the path is past PATH_MAX (4096).
OVER_LONG = "/".join(["k" * 250] * 20)


def test_an_over_long_key_is_a_value_error(shm_root: Path) -> None:
    """Keys over PATH_MAX are invalid names: ValueError naming them, as the spec says,
    not the OSError(ENAMETOOLONG) of the system call they reach."""
    store = shmstore.SharedMemoryStore("n", root=shm_root)
    value = default_buffer_prototype().buffer.from_bytes(b"x")
    with pytest.raises(ValueError, match="kkkk"):
        store.set_sync(OVER_LONG, value)
    with pytest.raises(ValueError, match="kkkk"):
        store.get_sync(OVER_LONG)
    fs = fsspec.filesystem("shm", root=str(shm_root))
    with pytest.raises(ValueError, match="kkkk"):
        fs.pipe_file(f"shm://n/{OVER_LONG}", b"x")
