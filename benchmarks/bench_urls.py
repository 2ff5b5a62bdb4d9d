"""Reads and writes through a ``shm://`` URL against the same array through the direct store.

Two routes to the same segments, for an uncompressed float64 array
(``compressors=None``, ``filters=None``):

- ``direct``: ``zarr.open_array(shmstore.open_store("shm://ns"), path="a")``, zarr
  talking to :class:`shmstore.SharedMemoryStore`;
- ``url``: ``zarr.open_array("shm://ns/a")``, zarr's ``FsspecStore`` over
  :class:`shmstore.SharedMemoryFileSystem` (what every ``shm://`` URL given to
  zarr, Dask or xarray becomes).

Read is ``z.get_basic_selection(..., out=...)`` into one preallocated array;
write is ``z[:] = data``. Routes alternate within each round (order rotated per
round); each keeps its best round and the table shows the spread. Where the
installed zarr has the fused synchronous codec pipeline (3.4) it is measured
too. Target (issue 3): the URL route reads at >= 0.8x the direct store at
1 MiB chunks.

Usage::

    PYTHONPATH=. python benchmarks/bench_urls.py            # 256 MiB, 5 rounds
    PYTHONPATH=. python benchmarks/bench_urls.py --quick    # smoke test

Writes ``benchmarks/results/bench_urls-<python>-<zarr>.json``; everything it
creates in shared memory is removed at the end.
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

ROUTES = ("direct", "url")
FUSED_PATH = "zarr.core.codec_pipeline.FusedCodecPipeline"
RESULTS = Path(__file__).resolve().parent / "results"
GIB = float(1 << 30)
TARGET = {("read", 1 << 20): 0.8}


def parse_size(text: str) -> int:
    """Parse ``"1MiB"``, ``"64KiB"`` or a plain byte count."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    for suffix, mult in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)):
        if t.endswith(suffix):
            return int(float(t[:-1]) * mult)
    return int(t)


def human(n: int) -> str:
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= mult and n % mult == 0:
            return f"{n // mult} {unit}"
    return f"{n} B"


def pipelines_available() -> list[str]:
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


def run_config(pipeline: str, chunk: int, size_mib: int, rounds: int) -> list[dict[str, Any]]:
    import zarr
    from zarr.core.buffer.cpu import NDBuffer

    import shmstore

    n = size_mib * (1 << 20) // 8
    data = np.random.default_rng(42).random(n)
    out = np.zeros_like(data)  # faulted in once, outside any timing
    out_nd = NDBuffer.from_numpy_array(out)
    namespace = f"bench-urls-{pipeline}-{chunk}"
    store = shmstore.open_store(f"shm://{namespace}")
    times: dict[tuple[str, str], list[float]] = {(r, op): [] for r in ROUTES for op in ("w", "r")}
    try:
        with pipeline_config(pipeline):
            zarr.create_array(
                store,
                name="a",
                shape=data.shape,
                chunks=(chunk // 8,),
                dtype="f8",
                compressors=None,
                filters=None,
                fill_value=0.0,
            )
            arrays = {
                "direct": zarr.open_array(store, path="a", mode="r+"),
                "url": zarr.open_array(f"shm://{namespace}/a", mode="r+"),
            }
            order = list(ROUTES)
            for op in ("w", "r"):
                for r in range(rounds):
                    k = r % len(order)
                    for route in order[k:] + order[:k]:
                        z = arrays[route]
                        if op == "w":
                            t = timed(lambda z=z: z.__setitem__(Ellipsis, data))
                        else:
                            t = timed(lambda z=z: z.get_basic_selection(Ellipsis, out=out_nd))
                        times[(route, op)].append(t)
            for route, z in arrays.items():
                out.fill(-1.0)
                z.get_basic_selection(Ellipsis, out=out_nd)
                if not np.array_equal(out, data):
                    raise AssertionError(f"{route}: read back differs from what was written")
    finally:
        store.destroy()
    rows = []
    for route in ROUTES:
        for op, name in (("w", "write"), ("r", "read")):
            row = {"pipeline": pipeline, "chunk_bytes": chunk, "route": route, "op": name}
            row.update(spread(data.nbytes, times[(route, op)]))
            rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best = {(r["pipeline"], r["chunk_bytes"], r["op"], r["route"]): r for r in rows}
    out = []
    for (pipeline, chunk, op, route), row in best.items():
        if route != "url":
            continue
        direct = best[(pipeline, chunk, op, "direct")]
        target = TARGET.get((op, chunk))
        ratio = row["best"] / direct["best"]
        out.append(
            {
                "pipeline": pipeline,
                "chunk_bytes": chunk,
                "op": op,
                "ratio": ratio,
                "ratio_median": row["median"] / direct["median"],
                "target": target,
                "met": None if target is None else ratio >= target,
            }
        )
    return out


def print_table(
    meta: dict[str, Any], rows: list[dict[str, Any]], rats: list[dict[str, Any]]
) -> None:
    print(
        f"python {meta['python']}, zarr {meta['zarr']}, fsspec {meta['fsspec']}: "
        f"{meta['size_mib']} MiB float64, {meta['rounds']} alternating rounds, GiB/s"
    )
    head = f"{'pipeline':<8} {'chunk':>7} {'route':<7} {'op':<5} {'best':>6} {'min/med/max':>17}"
    print(head)
    print("-" * len(head))
    for r in rows:
        mmm = f"{r['min']:.2f}/{r['median']:.2f}/{r['max']:.2f}"
        print(
            f"{r['pipeline']:<8} {human(r['chunk_bytes']):>7} {r['route']:<7} {r['op']:<5} "
            f"{r['best']:6.2f} {mmm:>17}"
        )
    print()
    print("url / direct (best vs best; median vs median)")
    for r in rats:
        mark = ""
        if r["target"] is not None:
            mark = f"  target >= {r['target']:.1f}x: " + ("met" if r["met"] else "NOT met")
        print(
            f"  {r['pipeline']:<8} {human(r['chunk_bytes']):>7} {r['op']:<5} "
            f"{r['ratio']:5.2f}x ({r['ratio_median']:.2f}x){mark}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=256, help="array size (default 256)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--chunks", default="1MiB,64KiB", help="chunk sizes (default 1MiB,64KiB)")
    p.add_argument("--pipelines", default=None, help="subset of default,fused (default: all)")
    p.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/...)")
    p.add_argument("--quick", action="store_true", help="smoke test: 8 MiB, 2 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.size_mib, args.rounds = min(args.size_mib, 8), min(args.rounds, 2)
    chunks = [parse_size(c) for c in args.chunks.split(",") if c.strip()]
    have = pipelines_available()
    pipelines = have if args.pipelines is None else [x for x in args.pipelines.split(",") if x]
    pipelines = [pl for pl in pipelines if pl in have]

    import fsspec
    import zarr

    shm_parent = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    root = tempfile.mkdtemp(prefix="shmstore-bench-urls-", dir=shm_parent)
    old_root = os.environ.get("SHMSTORE_ROOT")
    os.environ["SHMSTORE_ROOT"] = root  # the URL route resolves its root from here
    meta = {
        "python": platform.python_version(),
        "zarr": zarr.__version__,
        "fsspec": fsspec.__version__,
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "chunks": chunks,
        "pipelines": pipelines,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv[1:] if argv is None else argv,
    }
    rows: list[dict[str, Any]] = []
    try:
        for pipeline in pipelines:
            for chunk in chunks:
                rows += run_config(pipeline, chunk, args.size_mib, args.rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if old_root is None:
            os.environ.pop("SHMSTORE_ROOT", None)
        else:
            os.environ["SHMSTORE_ROOT"] = old_root
    rats = ratios(rows)
    print_table(meta, rows, rats)
    out = (
        Path(args.output)
        if args.output
        else (RESULTS / f"bench_urls-py{meta['python']}-zarr{meta['zarr']}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows, "ratios": rats}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
