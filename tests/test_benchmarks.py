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


def run_script(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run benchmarks/<name> with the checkout first on the path; fail with its stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def mounts() -> str:
    return Path("/proc/self/mountinfo").read_text() if Path("/proc/self/mountinfo").exists() else ""


def test_bench_pipeline_smoke(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    before = mounts()
    proc = run_script(
        "bench_pipeline.py",
        "--size",
        "2MiB",
        "--chunk",
        "512KiB",
        "--consumers",
        "2",
        "--rounds",
        "1",
        "--disk-dir",
        str(tmp_path),
        "--output",
        str(out),
    )
    assert "shmstore over each baseline" in proc.stdout
    doc = json.loads(out.read_text())
    meta = doc["meta"]
    assert meta["size"] == 2 << 20 and meta["consumers"] == [2] and meta["rounds"] == 1
    kinds = set(meta["roots"])
    assert kinds and kinds | set(meta["roots_skipped"]) == {"small", "huge"}
    assert meta["root_pages"] == {k: k for k in kinds}  # each root gives the pages it says
    rooted = {"shmstore", "shm-zarr", "local-shm"}
    want = {(r, k) for r in rooted for k in kinds}
    want |= {(r, None) for r in ("scatter", "pickle", "local-disk")}
    assert {(r["route"], r["root"]) for r in doc["rows"]} == want
    for row in doc["rows"]:
        assert row["consumers"] == 2
        for key in ("total", "first", "place", "pss"):
            assert len(row[key]["samples"]) == 1
            assert row[key]["best"] > 0
        assert row["first"]["best"] <= row["total"]["best"]
        assert row["pss"]["best"] >= row["idle_pss"] > 0
    for r in doc["ratios"]:
        assert {
            "consumers",
            "root",
            "vs",
            "speedup",
            "paired",
            "first_speedup",
            "pss_ratio",
        } <= set(r)
    if kinds == {"small", "huge"}:
        assert {g["route"] for g in doc["root_gains"]} == rooted
        assert [g["what"] for g in doc["huge_gain"]] == [
            "persist + 2 consumer(s) end to end, speed-up over pickling"
        ]
    # Everything it made is gone: its roots (and their mounts) and its disk directory.
    for root in meta["roots"].values():
        assert not os.path.exists(root)
    assert mounts().count("shmstore-bench-") == before.count("shmstore-bench-")
    assert not os.path.exists(meta["disk_dir"])
    assert [p.name for p in tmp_path.iterdir()] == ["pipeline.json"]


def test_bench_rewrite_smoke(tmp_path: Path) -> None:
    out = tmp_path / "rewrite.json"
    before = mounts()
    proc = run_script(
        "bench_rewrite.py",
        "--size",
        "1MiB",
        "--chunks",
        "256KiB",
        "--pipelines",
        "default",
        "--rounds",
        "1",
        "--output",
        str(out),
    )
    assert "rewrite over first write" in proc.stdout
    doc = json.loads(out.read_text())
    meta = doc["meta"]
    kinds = set(meta["roots"])
    assert kinds and kinds | set(meta["roots_skipped"]) == {"small", "huge"}
    assert meta["root_pages"] == {k: k for k in kinds}
    sides = {f"shmstore@{k}" for k in kinds} | {"memory"}
    ops = {"write", "first rewrite", "rewrite", "fresh read"}
    assert {(r["side"], r["op"]) for r in doc["rows"]} == {(s, op) for s in sides for op in ops}
    for row in doc["rows"]:
        assert row["chunk_bytes"] == 256 << 10 and row["pipeline"] == "default"
        assert len(row["samples"]) == 1 and row["best"] > 0
    vs_memory = {(r["root"], r["op"]) for r in doc["ratios"] if r["vs"] == "memory"}
    assert vs_memory == {(k, op) for k in kinds for op in ops}
    assert {r["side"] for r in doc["ratios"] if r["vs"] == "write"} == sides
    if kinds == {"small", "huge"}:
        assert [g["what"] for g in doc["huge_gain"]] == [
            f"{op} vs zarr MemoryStore, 256 KiB chunks"
            for op in ("write", "first rewrite", "rewrite", "fresh read")
        ]
    for root in meta["roots"].values():
        assert not os.path.exists(root)
    assert mounts().count("shmstore-bench-") == before.count("shmstore-bench-")


def test_bench_arrays_refill_smoke(tmp_path: Path) -> None:
    out = tmp_path / "arrays.json"
    before = mounts()
    proc = run_script("bench_arrays.py", "--quick", "--sections", "refill", "--output", str(out))
    assert "6. new data into shared memory" in proc.stdout
    doc = json.loads(out.read_text())
    rf = doc["refill"]
    kinds = set(rf["roots"])
    assert kinds and kinds | set(rf["roots_skipped"]) == {"small", "huge"}
    assert rf["root_pages"] == {k: k for k in kinds}
    base = ["ray.put"] if rf["baseline"] == "ray.put" else ["pickle.dumps", "memcpy"]
    sides = {f"{what} @{k}" for k in kinds for what in ("delete + create(fill=)", "create(fill=)")}
    sides |= {f"copy into a live array @{k}" for k in kinds} | set(base)
    assert set(rf["gib_s"]) == sides
    for s in rf["gib_s"].values():
        assert s["min"] <= s["median"] <= s["max"] == s["best"] and s["best"] > 0
    for k in kinds:
        assert f"delete + create(fill=) vs copy into a live array @{k}" in doc["ratios"]
        for b in base:
            assert f"create(fill=) vs {b} @{k}" in doc["ratios"]
    if kinds == {"small", "huge"}:
        assert {g["what"] for g in doc["huge_gain"]} == {
            "delete + create(fill=) vs copy into a live array",
            *(f"create(fill=) vs {b}" for b in base),
        }
    for root in rf["roots"].values():
        assert not os.path.exists(root)
    assert mounts().count("shmstore-bench-") == before.count("shmstore-bench-")


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
