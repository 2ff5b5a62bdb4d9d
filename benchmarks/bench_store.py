"""Read and write throughput of ``SharedMemoryStore`` against zarr's own stores.

Compares, for an uncompressed float64 array (``compressors=None``,
``filters=None``) at 1 MiB and 64 KiB chunks:

- ``shmstore``: :class:`shmstore.SharedMemoryStore` in a private root under ``/dev/shm``;
- ``memory``: ``zarr.storage.MemoryStore`` (in-process, not shareable);
- ``local-shm``: ``zarr.storage.LocalStore`` on a private directory under ``/dev/shm``;
- ``local-disk``: ``zarr.storage.LocalStore`` on a temporary directory on disk;
- ``memcpy``: ``np.copyto`` of the whole array, the machine's limit.

under zarr's default codec pipeline and, where the installed zarr has it
(3.4), the fused synchronous one. Read is ``z.get_basic_selection(...,
out=...)`` into one preallocated array (the same for every store, so no store
pays page faults the others do not); write is ``z[:] = data``.

Stores are measured in alternating rounds: every round runs each store once,
in an order rotated by one per round, so that drift of a noisy machine hits all
of them alike. The table shows each store's best round and the spread
(min/median/max) of its rounds; all writes run before the reads, and the first
read after the writes is reported apart (``1st read``: for shmstore it maps
every chunk; later reads find the mappings cached).

Usage::

    PYTHONPATH=. python benchmarks/bench_store.py               # 256 MiB, 5 rounds
    PYTHONPATH=. python benchmarks/bench_store.py --quick       # smoke test

Writes ``benchmarks/results/bench_store-<python>-<zarr>.json``. Everything the
benchmark creates in shared memory or on disk is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
from _harness import (
    GIB,
    Reader,
    alternate,
    create_array,
    human,
    met,
    min_med_max,
    parse_size,
    pipeline_config,
    pipelines_available,
    print_header,
    private_root,
    scratch_dir,
    stamp,
    target_mark,
    throughput,
    timed,
    versions,
    write_results,
)

STORES = ("shmstore", "memory", "local-shm", "local-disk", "memcpy")

#: Targets of issue 2 (zarr 3.4): (pipeline, chunk bytes, op, baseline) -> ratio.
TARGETS: dict[tuple[str, int, str, str], float] = {
    ("default", 1 << 20, "read", "memory"): 0.9,
    ("default", 1 << 20, "read", "local-shm"): 2.0,
    ("default", 64 << 10, "read", "memory"): 0.7,
    ("default", 64 << 10, "read", "local-shm"): 3.0,
    ("fused", 1 << 20, "read", "memory"): 0.9,
    ("fused", 64 << 10, "read", "memory"): 0.9,
    ("default", 1 << 20, "write", "memory"): 0.9,
    ("default", 64 << 10, "write", "memory"): 0.9,
    ("fused", 1 << 20, "write", "memory"): 0.9,
    ("fused", 64 << 10, "write", "memory"): 0.9,
}


def fs_type(path: str) -> str:
    """Filesystem type of *path* from ``/proc/mounts`` (``"?"`` where unknown)."""
    best, kind = "", "?"
    real = os.path.realpath(path)
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            mnt = parts[1]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, kind = mnt, parts[2]
    return kind


class Bench:
    """The stores of one (pipeline, chunk size) configuration and their timed operations."""

    def __init__(
        self, stores: list[str], n: int, chunk: int, shm_base: str, disk_base: str, tag: str
    ) -> None:
        from zarr.storage import LocalStore, MemoryStore

        import shmstore

        self.data = np.random.default_rng(42).random(n)
        self._reader = Reader(self.data)  # one buffer, faulted in outside any timing
        self.out, self._out_nd = self._reader.out, self._reader.nd
        self.arrays: dict[str, Any] = {}
        self._cleanup: list[Callable[[], None]] = []
        for name in stores:
            if name == "memcpy":
                continue
            if name == "shmstore":
                store = shmstore.SharedMemoryStore(f"bench-{tag}", root=shm_base)
                self._cleanup.append(store.destroy)
            elif name == "memory":
                store = MemoryStore()
            else:
                base = shm_base if name == "local-shm" else disk_base
                path = tempfile.mkdtemp(prefix=f"local-{tag}-", dir=base)
                store = LocalStore(path)
                self._cleanup.append(lambda p=path: shutil.rmtree(p, ignore_errors=True))
            self.arrays[name] = create_array(store, self.data, chunk)

    def write(self, name: str) -> None:
        if name == "memcpy":
            np.copyto(self.out, self.data)
        else:
            self.arrays[name][:] = self.data

    def read(self, name: str) -> None:
        if name == "memcpy":
            np.copyto(self.out, self.data)
        else:
            self.arrays[name].get_basic_selection(Ellipsis, out=self._out_nd)

    def check(self, name: str) -> None:
        """Fail loudly if a store read back something else than was written."""
        self._reader.check(name, lambda: self.read(name))

    def close(self) -> None:
        self.arrays.clear()
        for fn in self._cleanup:
            fn()
        self._cleanup.clear()


def run_config(
    pipeline: str,
    chunk: int,
    args: argparse.Namespace,
    shm_base: str,
    disk_base: str,
) -> list[dict[str, Any]]:
    n = args.size_mib * (1 << 20) // 8
    nbytes = n * 8
    stores = list(args.stores)
    tag = f"{pipeline}-{chunk}"
    with pipeline_config(pipeline):
        bench = Bench(stores, n, chunk, shm_base, disk_base, tag)
        try:
            writes = alternate(stores, lambda s: timed(lambda: bench.write(s)), args.rounds)
            # The first round's reads are reported apart ("1st read").
            reads = alternate(stores, lambda s: timed(lambda: bench.read(s)), args.rounds)
            for s in stores:
                bench.check(s)
        finally:
            bench.close()
    rows = []
    for s in stores:
        for op, times in (("write", writes[s]), ("read", reads[s])):
            row = {"pipeline": pipeline, "chunk_bytes": chunk, "store": s, "op": op}
            row.update(throughput(nbytes, times))
            if op == "read":
                row["first_read"] = nbytes / times[0] / GIB
            rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """shmstore over each baseline, per (pipeline, chunk, op).

    ``ratio`` is best over best; ``paired`` the median over rounds of the two
    stores' ratio within one round (both measured moments apart), which a
    burst of load on the shared machine skews less.
    """
    best = {(r["pipeline"], r["chunk_bytes"], r["op"], r["store"]): r["best"] for r in rows}
    samples = {(r["pipeline"], r["chunk_bytes"], r["op"], r["store"]): r["samples"] for r in rows}
    out = []
    for (pipeline, chunk, op, store), value in sorted(
        best.items(), key=lambda kv: (kv[0][0] != "default", -kv[0][1], kv[0][2] != "read")
    ):
        if store != "shmstore":
            continue
        for base in ("memory", "local-shm", "local-disk", "memcpy"):
            other = best.get((pipeline, chunk, op, base))
            if other is None:
                continue
            target = TARGETS.get((pipeline, chunk, op, base))
            mine, theirs = (
                samples[(pipeline, chunk, op, store)],
                samples[(pipeline, chunk, op, base)],
            )
            out.append(
                {
                    "pipeline": pipeline,
                    "chunk_bytes": chunk,
                    "op": op,
                    "vs": base,
                    "ratio": value / other,
                    "paired": statistics.median(a / b for a, b in zip(mine, theirs, strict=True)),
                    "target": target,
                    "met": met(value / other, target),
                }
            )
    return out


def print_table(rows: list[dict[str, Any]], rats: list[dict[str, Any]]) -> None:
    head = (
        f"{'pipeline':<8} {'chunk':>7} {'store':<10} "
        f"{'write':>6} {'(min/med/max)':>17}  {'read':>6} {'(min/med/max)':>17} {'1st read':>8}"
    )
    print("GiB/s, best of rounds")
    print_header(head)
    by = {(r["pipeline"], r["chunk_bytes"], r["store"], r["op"]): r for r in rows}
    keys = sorted({(r["pipeline"], r["chunk_bytes"], r["store"]) for r in rows}, key=_order)
    for pipeline, chunk, store in keys:
        w = by[(pipeline, chunk, store, "write")]
        rd = by[(pipeline, chunk, store, "read")]
        print(
            f"{pipeline:<8} {human(chunk):>7} {store:<10} "
            f"{w['best']:6.2f} {min_med_max(w):>17}  {rd['best']:6.2f} {min_med_max(rd):>17} "
            f"{rd['first_read']:8.2f}"
        )
    print()
    print(
        "shmstore / baseline: best vs best (median of same-round ratios); "
        "target from issue 2 where one is set"
    )
    for r in rats:
        if r["vs"] == "memcpy":
            continue
        print(
            f"  {r['pipeline']:<8} {human(r['chunk_bytes']):>7} {r['op']:<5} "
            f"vs {r['vs']:<10} {r['ratio']:5.2f}x ({r['paired']:4.2f}x)"
            f"{target_mark(r['target'], r['met'])}"
        )


def _order(key: tuple[str, int, str]) -> tuple[int, int, int]:
    pipeline, chunk, store = key
    return (0 if pipeline == "default" else 1, -chunk, STORES.index(store))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=256, help="array size (default 256)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument(
        "--chunks",
        default="1MiB,64KiB",
        help="comma-separated chunk sizes in bytes (default 1MiB,64KiB)",
    )
    p.add_argument(
        "--pipelines",
        default=None,
        help="comma-separated subset of default,fused (default: all this zarr has)",
    )
    p.add_argument("--stores", default=",".join(STORES), help=f"comma-separated subset of {STORES}")
    p.add_argument("--disk-dir", default=None, help="directory for local-disk (default: $TMPDIR)")
    p.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/...)")
    p.add_argument("--quick", action="store_true", help="smoke test: 8 MiB, 2 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.size_mib = min(args.size_mib, 8)
        args.rounds = min(args.rounds, 2)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = set(args.stores) - set(STORES)
    if unknown:
        p.error(f"unknown store(s) {sorted(unknown)}; choose from {STORES}")
    chunks = [parse_size(c) for c in args.chunks.split(",") if c.strip()]
    have = pipelines_available()
    pipelines = have if args.pipelines is None else args.pipelines.split(",")
    for pl in pipelines:
        if pl not in ("default", "fused"):
            p.error(f"unknown pipeline {pl!r}; choose default or fused")
    skipped = [pl for pl in pipelines if pl not in have]
    pipelines = [pl for pl in pipelines if pl in have]

    # The store and everything it opens by name use the private root.
    with (
        private_root("shmstore-bench-") as shm_base,
        scratch_dir("shmstore-bench-disk-", args.disk_dir) as disk_base,
    ):
        meta = {
            **versions("zarr", "numpy"),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "size_mib": args.size_mib,
            "rounds": args.rounds,
            "chunks": chunks,
            "pipelines": pipelines,
            "pipelines_unavailable": skipped,
            "shm_dir": shm_base,
            "disk_dir": disk_base,
            "shm_fs": fs_type(shm_base),
            "disk_fs": fs_type(disk_base),
            **stamp(argv),
        }
        if meta["disk_fs"] in ("tmpfs", "ramfs"):
            print(
                f"warning: local-disk directory {disk_base} is on {meta['disk_fs']}; "
                "pass --disk-dir on a real disk",
                file=sys.stderr,
            )
        rows: list[dict[str, Any]] = []
        for pipeline in pipelines:
            for chunk in chunks:
                rows += run_config(pipeline, chunk, args, shm_base, disk_base)
    rats = ratios(rows)
    print(
        f"bench_store: Python {meta['python']}, zarr {meta['zarr']}, numpy {meta['numpy']}, "
        f"{args.size_mib} MiB float64, {args.rounds} rounds, {meta['cpus']} CPUs, "
        f"disk={meta['disk_fs']}"
    )
    if skipped:
        print(f"(pipelines not in this zarr: {', '.join(skipped)})")
    print_table(rows, rats)
    pyver = ".".join(platform.python_version_tuple()[:2])
    write_results(
        {"meta": meta, "rows": rows, "ratios": rats},
        f"bench_store-{pyver}-{meta['zarr']}.json",
        args.output,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
