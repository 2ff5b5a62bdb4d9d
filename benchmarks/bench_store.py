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
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

STORES = ("shmstore", "memory", "local-shm", "local-disk", "memcpy")
FUSED_PATH = "zarr.core.codec_pipeline.FusedCodecPipeline"
RESULTS = Path(__file__).resolve().parent / "results"
GIB = float(1 << 30)

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


def parse_size(text: str) -> int:
    """Parse ``"1MiB"``, ``"64KiB"``, ``"64k"`` or a plain byte count."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    for suffix, mult in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)):
        if t.endswith(suffix):
            return int(float(t[:-1]) * mult)
    return int(t)


def human(n: int) -> str:
    """``1048576`` -> ``"1 MiB"``."""
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= mult and n % mult == 0:
            return f"{n // mult} {unit}"
    return f"{n} B"


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


def pipelines_available() -> list[str]:
    """``["default"]`` plus ``"fused"`` where the installed zarr has it."""
    import zarr.core.codec_pipeline as cp

    return ["default", "fused"] if hasattr(cp, "FusedCodecPipeline") else ["default"]


@contextlib.contextmanager
def pipeline_config(pipeline: str) -> Iterator[None]:
    import zarr

    if pipeline == "fused":
        with zarr.config.set({"codec_pipeline.path": FUSED_PATH}):
            yield
    else:
        yield


class Bench:
    """The stores of one (pipeline, chunk size) configuration and their timed operations."""

    def __init__(
        self, stores: list[str], n: int, chunk: int, shm_base: str, disk_base: str, tag: str
    ) -> None:
        import zarr
        from zarr.core.buffer.cpu import NDBuffer
        from zarr.storage import LocalStore, MemoryStore

        import shmstore

        self.data = np.random.default_rng(42).random(n)
        self.out = np.empty_like(self.data)
        self.out.fill(0.0)  # fault the pages in once, outside any timing
        self._out_nd = NDBuffer.from_numpy_array(self.out)
        self.arrays: dict[str, Any] = {}
        self._cleanup: list[Callable[[], None]] = []
        items = chunk // self.data.itemsize
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
            self.arrays[name] = zarr.create_array(
                store,
                name="a",
                shape=self.data.shape,
                chunks=(items,),
                dtype="f8",
                compressors=None,
                filters=None,
                fill_value=0.0,
                overwrite=True,
            )

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
        self.out.fill(-1.0)
        self.read(name)
        if not np.array_equal(self.out, self.data):
            raise AssertionError(f"{name}: read back differs from what was written")

    def close(self) -> None:
        self.arrays.clear()
        for fn in self._cleanup:
            fn()
        self._cleanup.clear()


def timed(fn: Callable[[], None]) -> float:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        gc.enable()


def spread(nbytes: int, times: list[float]) -> dict[str, Any]:
    rates = sorted(nbytes / t / GIB for t in times)
    return {
        "best": rates[-1],
        "min": rates[0],
        "median": statistics.median(rates),
        "max": rates[-1],
        "samples": [nbytes / t / GIB for t in times],
    }


def rotated(items: list[str], r: int) -> list[str]:
    k = r % len(items)
    return items[k:] + items[:k]


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
            writes: dict[str, list[float]] = {s: [] for s in stores}
            reads: dict[str, list[float]] = {s: [] for s in stores}
            first: dict[str, float] = {}
            for r in range(args.rounds):
                for s in rotated(stores, r):
                    writes[s].append(timed(lambda s=s: bench.write(s)))
            for r in range(args.rounds):
                for s in rotated(stores, r):
                    t = timed(lambda s=s: bench.read(s))
                    if r == 0:
                        first[s] = t
                    reads[s].append(t)
            for s in stores:
                bench.check(s)
        finally:
            bench.close()
    rows = []
    for s in stores:
        for op, times in (("write", writes[s]), ("read", reads[s])):
            row = {"pipeline": pipeline, "chunk_bytes": chunk, "store": s, "op": op}
            row.update(spread(nbytes, times))
            if op == "read":
                row["first_read"] = nbytes / first[s] / GIB
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
                    "met": None if target is None else value / other >= target,
                }
            )
    return out


def print_table(rows: list[dict[str, Any]], rats: list[dict[str, Any]]) -> None:
    head = (
        f"{'pipeline':<8} {'chunk':>7} {'store':<10} "
        f"{'write':>6} {'(min/med/max)':>17}  {'read':>6} {'(min/med/max)':>17} {'1st read':>8}"
    )
    print("GiB/s, best of rounds")
    print(head)
    print("-" * len(head))
    by = {(r["pipeline"], r["chunk_bytes"], r["store"], r["op"]): r for r in rows}
    keys = sorted({(r["pipeline"], r["chunk_bytes"], r["store"]) for r in rows}, key=_order)
    for pipeline, chunk, store in keys:
        w = by[(pipeline, chunk, store, "write")]
        rd = by[(pipeline, chunk, store, "read")]
        print(
            f"{pipeline:<8} {human(chunk):>7} {store:<10} "
            f"{w['best']:6.2f} {_mmm(w):>17}  {rd['best']:6.2f} {_mmm(rd):>17} "
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
        mark = "" if r["target"] is None else f"  target >= {r['target']:.1f}x: "
        if r["target"] is not None:
            mark += "met" if r["met"] else "NOT met"
        print(
            f"  {r['pipeline']:<8} {human(r['chunk_bytes']):>7} {r['op']:<5} "
            f"vs {r['vs']:<10} {r['ratio']:5.2f}x ({r['paired']:4.2f}x){mark}"
        )


def _order(key: tuple[str, int, str]) -> tuple[int, int, int]:
    pipeline, chunk, store = key
    return (0 if pipeline == "default" else 1, -chunk, STORES.index(store))


def _mmm(r: dict[str, Any]) -> str:
    return f"{r['min']:.2f}/{r['median']:.2f}/{r['max']:.2f}"


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

    import zarr

    shm_parent = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    shm_base = tempfile.mkdtemp(prefix="shmstore-bench-", dir=shm_parent)
    disk_base = tempfile.mkdtemp(prefix="shmstore-bench-disk-", dir=args.disk_dir)
    # The store and everything it opens by name use the private root.
    old_root = os.environ.get("SHMSTORE_ROOT")
    os.environ["SHMSTORE_ROOT"] = shm_base
    meta = {
        "python": platform.python_version(),
        "zarr": zarr.__version__,
        "numpy": np.__version__,
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
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv[1:] if argv is None else argv,
    }
    if meta["disk_fs"] in ("tmpfs", "ramfs"):
        print(
            f"warning: local-disk directory {disk_base} is on {meta['disk_fs']}; "
            "pass --disk-dir on a real disk",
            file=sys.stderr,
        )
    rows: list[dict[str, Any]] = []
    try:
        for pipeline in pipelines:
            for chunk in chunks:
                rows += run_config(pipeline, chunk, args, shm_base, disk_base)
    finally:
        shutil.rmtree(shm_base, ignore_errors=True)
        shutil.rmtree(disk_base, ignore_errors=True)
        if old_root is None:
            os.environ.pop("SHMSTORE_ROOT", None)
        else:
            os.environ["SHMSTORE_ROOT"] = old_root
    rats = ratios(rows)
    print(
        f"bench_store: Python {meta['python']}, zarr {meta['zarr']}, numpy {meta['numpy']}, "
        f"{args.size_mib} MiB float64, {args.rounds} rounds, {meta['cpus']} CPUs, "
        f"disk={meta['disk_fs']}"
    )
    if skipped:
        print(f"(pipelines not in this zarr: {', '.join(skipped)})")
    print_table(rows, rats)
    if args.output:
        out = Path(args.output)
    else:
        pyver = ".".join(platform.python_version_tuple()[:2])
        out = RESULTS / f"bench_store-{pyver}-{zarr.__version__}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows, "ratios": rats}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
