"""Tiering, the read-through cache and save/load, against the plain ways.

Three comparisons, each in alternating rounds (every round runs each side
once, in an order rotated by one per round, so a noisy machine's drift hits
all sides alike); each side keeps its best round and the table shows the
spread (min/median/max) of its rounds:

- **spill read**: a tiered ``SharedMemoryStore`` with ``capacity=0`` (every
  chunk in its spill tier, a directory on disk) against zarr's ``LocalStore``
  on disk holding the same array. Tiering should cost nothing here (~1x): a
  read misses the shared-memory tier (one ``stat``) and reads the spill store.
  ``shm-tier`` (the same array in a plain namespace) is shown for scale. Both
  disk sides read through the page cache (the data was just written).
- **cache read**: ``CachingStore`` over a ``LocalStore`` on disk, warm (every
  chunk already in shared memory), against reading that ``LocalStore``
  directly. The first (cold, filling) read is reported apart.
- **save/load**: ``shmstore.save`` of a namespace to a fresh directory on disk
  and ``shmstore.load`` back into a fresh namespace (verification included),
  against ``shutil.copytree`` of the same files each way.

Reads are ``z.get_basic_selection(..., out=...)`` into one preallocated array;
arrays are uncompressed float64 (``compressors=None``).

Usage::

    PYTHONPATH=. python benchmarks/bench_tiering.py            # 128 MiB, 5 rounds
    PYTHONPATH=. python benchmarks/bench_tiering.py --quick    # smoke test

Writes ``benchmarks/results/bench_tiering-<python>-<zarr>.json``. Everything
it creates in shared memory or on disk is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _harness import (
    Reader,
    create_array,
    human,
    min_med_max,
    parse_size,
    pipeline_config,
    pipelines_available,
    print_header,
    private_root,
    scratch_dir,
    stamp,
    throughput,
    time_sides,
    timed,
    versions,
    write_results,
)

#: (section, side, baseline) pairs reported as ratios, with the ratio hoped for.
RATIOS = [
    ("spill read", "spill-tier", "local-disk", 0.9),
    ("spill read", "shm-tier", "local-disk", None),
    ("cache read", "cache-warm", "source", 1.0),
    ("save/load", "save", "copytree-save", None),
    ("save/load", "load", "copytree-load", None),
]


def fs_type(path: str) -> str:
    from shmstore._names import filesystem_type

    return filesystem_type(path) or "?"


def new_array(store: Any, data: np.ndarray, chunk: int) -> Any:
    z = create_array(store, data, chunk)
    z[:] = data
    return z


def rows_from(
    section: str, pipeline: str, chunk: int, nbytes: int, times: dict[str, list[float]]
) -> list[dict[str, Any]]:
    return [
        {"section": section, "pipeline": pipeline, "chunk_bytes": chunk, "side": side}
        | throughput(nbytes, t)
        for side, t in times.items()
    ]


def bench_spill(
    pipeline: str, chunk: int, data: np.ndarray, rounds: int, shm: str, disk: str
) -> list[dict[str, Any]]:
    import zarr
    from zarr.storage import LocalStore

    import shmstore

    tag = f"{pipeline}-{chunk}"
    spill_dir = tempfile.mkdtemp(prefix=f"spill-{tag}-", dir=disk)
    local_dir = tempfile.mkdtemp(prefix=f"local-{tag}-", dir=disk)
    tiered = shmstore.SharedMemoryStore(f"spill-{tag}", root=shm, capacity=0, spill=spill_dir)
    plain = shmstore.SharedMemoryStore(f"shm-{tag}", root=shm)
    try:
        with pipeline_config(pipeline):
            arrays = {
                "spill-tier": new_array(tiered, data, chunk),
                "local-disk": new_array(LocalStore(local_dir), data, chunk),
                "shm-tier": new_array(plain, data, chunk),
            }
            in_shm = sum(1 for _ in Path(tiered.path, "a").rglob("*") if _.is_file())
            if in_shm:
                raise AssertionError(f"{in_shm} values of the capacity=0 store stayed in shm")
            arrays["spill-tier"] = zarr.open_array(tiered, path="a", mode="r")
            reader = Reader(data)
            times = time_sides({k: reader.read(z) for k, z in arrays.items()}, rounds)
            for k, z in arrays.items():
                reader.check(k, reader.read(z))
    finally:
        tiered.destroy()
        plain.destroy()
        shutil.rmtree(spill_dir, ignore_errors=True)
        shutil.rmtree(local_dir, ignore_errors=True)
    return rows_from("spill read", pipeline, chunk, data.nbytes, times)


def bench_cache(
    pipeline: str, chunk: int, data: np.ndarray, rounds: int, shm: str, disk: str
) -> list[dict[str, Any]]:
    import zarr
    from zarr.storage import LocalStore

    import shmstore

    tag = f"{pipeline}-{chunk}"
    src_dir = tempfile.mkdtemp(prefix=f"source-{tag}-", dir=disk)
    new_array(LocalStore(src_dir), data, chunk)
    cache = shmstore.CachingStore(
        LocalStore(src_dir, read_only=True), namespace=f"cache-{tag}", root=shm
    )
    try:
        with pipeline_config(pipeline):
            reader = Reader(data)
            cached = zarr.open_array(cache, path="a", mode="r")
            source = zarr.open_array(LocalStore(src_dir, read_only=True), path="a", mode="r")
            cold = timed(reader.read(cached))
            times = time_sides(
                {"cache-warm": reader.read(cached), "source": reader.read(source)}, rounds
            )
            reader.check("cache-warm", reader.read(cached))
    finally:
        cache.destroy()
        shutil.rmtree(src_dir, ignore_errors=True)
    rows = rows_from("cache read", pipeline, chunk, data.nbytes, times)
    rows.append(
        {"section": "cache read", "pipeline": pipeline, "chunk_bytes": chunk, "side": "cache-cold"}
        | throughput(data.nbytes, [cold])
    )
    return rows


def bench_transfer(data: np.ndarray, chunk: int, rounds: int, shm: str, disk: str) -> list[dict]:
    import shmstore

    src = shmstore.SharedMemoryStore("transfer-src", root=shm)
    new_array(src, data, chunk)
    saved = tempfile.mkdtemp(prefix="saved-", dir=disk)
    shmstore.save(src, saved, overwrite=True, progress=False)
    made: list[Callable[[], None]] = []
    count = [0]

    def fresh_disk() -> str:
        count[0] += 1
        path = os.path.join(disk, f"out-{count[0]}")
        made.append(lambda: shutil.rmtree(path, ignore_errors=True))
        return path

    def fresh_ns() -> str:
        count[0] += 1
        name = f"transfer-{count[0]}"
        made.append(lambda: shmstore.SharedMemoryStore(name, root=shm).destroy())
        return name

    def cleanup() -> None:
        while made:
            made.pop()()

    sides: dict[str, Callable[[], Any]] = {}
    # Each side gets a fresh destination prepared outside the timing.
    targets: dict[str, Any] = {}

    def prepare() -> None:
        cleanup()
        targets["save"] = fresh_disk()
        targets["copytree-save"] = fresh_disk()
        targets["load"] = shmstore.SharedMemoryStore(fresh_ns(), root=shm)
        count[0] += 1
        plain = os.path.join(shm, f"copy-{count[0]}")
        made.append(lambda: shutil.rmtree(plain, ignore_errors=True))
        targets["copytree-load"] = plain

    sides["save"] = lambda: shmstore.save(src, targets["save"], progress=False)
    sides["copytree-save"] = lambda: shutil.copytree(src.path, targets["copytree-save"])
    sides["load"] = lambda: shmstore.load(saved, targets["load"], progress=False)
    sides["copytree-load"] = lambda: shutil.copytree(saved, targets["copytree-load"])
    try:
        times = time_sides(sides, rounds, before_round=prepare)
        loaded = shmstore.SharedMemoryStore(targets["load"].namespace, root=shm)
        import zarr

        if not np.array_equal(zarr.open_array(loaded, path="a", mode="r")[:], data):
            raise AssertionError("load: read back differs from what was saved")
    finally:
        cleanup()
        src.destroy()
        shutil.rmtree(saved, ignore_errors=True)
    return rows_from("save/load", "-", chunk, data.nbytes, times)


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best = {(r["section"], r["pipeline"], r["chunk_bytes"], r["side"]): r["best"] for r in rows}
    out = []
    for section, side, base, hoped in RATIOS:
        for (sec, pipeline, chunk, s), value in best.items():
            if sec != section or s != side:
                continue
            other = best.get((sec, pipeline, chunk, base))
            if other:
                out.append(
                    {
                        "section": section,
                        "pipeline": pipeline,
                        "chunk_bytes": chunk,
                        "side": side,
                        "vs": base,
                        "ratio": value / other,
                        "hoped": hoped,
                    }
                )
    return out


def print_table(rows: list[dict[str, Any]], rats: list[dict[str, Any]]) -> None:
    head = f"{'section':<11} {'pipeline':<8} {'chunk':>7} {'side':<14} {'GiB/s':>6}  (min/med/max)"
    print("GiB/s, best of rounds")
    print_header(head)
    for r in rows:
        print(
            f"{r['section']:<11} {r['pipeline']:<8} {human(r['chunk_bytes']):>7} "
            f"{r['side']:<14} {r['best']:6.2f}  {min_med_max(r)}"
        )
    print()
    print("ratios (best vs best)")
    for r in rats:
        hoped = "" if r["hoped"] is None else f"   (about {r['hoped']:.1f}x or more hoped)"
        print(
            f"  {r['section']:<11} {r['pipeline']:<8} {human(r['chunk_bytes']):>7} "
            f"{r['side']:<11} vs {r['vs']:<14} {r['ratio']:5.2f}x{hoped}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=128, help="array size (default 128)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--chunks", default="1MiB,64KiB", help="chunk sizes (default 1MiB,64KiB)")
    p.add_argument("--pipelines", default=None, help="subset of default,fused (default: all)")
    p.add_argument("--disk-dir", default=None, help="directory on disk (default: $TMPDIR)")
    p.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/...)")
    p.add_argument("--quick", action="store_true", help="smoke test: 8 MiB, 2 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.size_mib = min(args.size_mib, 8)
        args.rounds = min(args.rounds, 2)
    chunks = [parse_size(c) for c in args.chunks.split(",") if c.strip()]
    have = pipelines_available()
    pipelines = have if args.pipelines is None else args.pipelines.split(",")
    pipelines = [pl for pl in pipelines if pl in have]

    with (
        private_root("shmstore-bench-tiering-") as shm,
        scratch_dir("shmstore-bench-tiering-disk-", args.disk_dir) as disk,
    ):
        data = np.random.default_rng(42).random(args.size_mib * (1 << 20) // 8)
        meta = {
            **versions("zarr", "numpy"),
            "cpus": os.cpu_count(),
            "size_mib": args.size_mib,
            "rounds": args.rounds,
            "chunks": chunks,
            "pipelines": pipelines,
            "shm_fs": fs_type(shm),
            "disk_fs": fs_type(disk),
            **stamp(argv),
        }
        if meta["disk_fs"] in ("tmpfs", "ramfs"):
            print(
                f"warning: {disk} is on {meta['disk_fs']}; pass --disk-dir on a disk",
                file=sys.stderr,
            )
        rows: list[dict[str, Any]] = []
        for pipeline in pipelines:
            for chunk in chunks:
                rows += bench_spill(pipeline, chunk, data, args.rounds, shm, disk)
        for pipeline in pipelines:
            for chunk in chunks:
                rows += bench_cache(pipeline, chunk, data, args.rounds, shm, disk)
        rows += bench_transfer(data, max(chunks), args.rounds, shm, disk)
    rats = ratios(rows)
    print(
        f"bench_tiering: Python {meta['python']}, zarr {meta['zarr']}, {args.size_mib} MiB "
        f"float64, {args.rounds} rounds, {meta['cpus']} CPUs, shm={meta['shm_fs']}, "
        f"disk={meta['disk_fs']}"
    )
    print_table(rows, rats)
    pyver = ".".join(platform.python_version_tuple()[:2])
    write_results(
        {"meta": meta, "rows": rows, "ratios": rats},
        f"bench_tiering-{pyver}-{meta['zarr']}.json",
        args.output,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
