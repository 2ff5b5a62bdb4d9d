"""Smoke test of benchmarks/bench_store.py: it runs, cleans up and writes the expected JSON.

No timing is asserted: speed is reported by the benchmark, not tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zarr.core.codec_pipeline

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_store.py"
STORES = {"shmstore", "memory", "local-shm", "local-disk", "memcpy"}


def test_bench_store_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--size-mib",
            "1",
            "--chunks",
            "256KiB,64KiB",
            "--disk-dir",
            str(tmp_path),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "shmstore / baseline" in proc.stdout
    doc = json.loads(out.read_text())

    fused = hasattr(zarr.core.codec_pipeline, "FusedCodecPipeline")
    pipelines = {"default", "fused"} if fused else {"default"}
    assert set(doc["meta"]["pipelines"]) == pipelines
    assert doc["meta"]["size_mib"] == 1 and doc["meta"]["rounds"] == 2
    got = {(r["pipeline"], r["chunk_bytes"], r["store"], r["op"]) for r in doc["rows"]}
    want = {
        (p, c, s, op)
        for p in pipelines
        for c in (256 << 10, 64 << 10)
        for s in STORES
        for op in ("read", "write")
    }
    assert got == want
    for row in doc["rows"]:
        assert len(row["samples"]) == 2
        assert row["min"] <= row["median"] <= row["max"] == row["best"]
        if row["op"] == "read":
            assert row["first_read"] > 0
    vs = {(r["pipeline"], r["chunk_bytes"], r["op"], r["vs"]) for r in doc["ratios"]}
    assert {(p, c, op, b) for (p, c, _, op) in want for b in STORES - {"shmstore"}} == vs

    # Everything it made is gone: its private root in /dev/shm and its disk directory.
    assert not os.path.exists(doc["meta"]["shm_dir"])
    assert not os.path.exists(doc["meta"]["disk_dir"])
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]


def test_bench_scaleout_quick(tmp_path: Path) -> None:
    pytest.importorskip("aiohttp", reason="the HTTP source needs fsspec's HTTP filesystem")
    out = tmp_path / "scaleout.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = ROOT / "benchmarks" / "bench_scaleout.py"
    args = ["--quick", "--size-mib", "1", "--sources", "http", "--output", str(out)]
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "shmcache" in proc.stdout and "simplecache" in proc.stdout
    doc = json.loads(out.read_text())
    rows = {r["route"]: r for r in doc["rows"]}
    assert set(rows) == {"direct", "simplecache", "shmcache"}
    chunks = (1 << 20) // doc["meta"]["chunk_bytes"]
    # two hosts fetch each chunk once each; direct readers fetch it per worker and read
    assert rows["shmcache"]["requests"] == 2 * chunks
    assert rows["direct"]["requests"] == 2 * 2 * 2 * chunks
