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
import os
from typing import Any

import numpy as np
from _harness import (
    Reader,
    create_array,
    human,
    met,
    min_med_max,
    parse_size,
    pipeline_config,
    pipelines_available,
    print_header,
    private_root,
    stamp,
    target_mark,
    throughput,
    time_sides,
    versions,
    write_results,
)

ROUTES = ("direct", "url")
TARGET = {("read", 1 << 20): 0.8}


def run_config(pipeline: str, chunk: int, size_mib: int, rounds: int) -> list[dict[str, Any]]:
    import zarr

    import shmstore

    n = size_mib * (1 << 20) // 8
    data = np.random.default_rng(42).random(n)
    reader = Reader(data)
    namespace = f"bench-urls-{pipeline}-{chunk}"
    store = shmstore.open_store(f"shm://{namespace}")
    try:
        with pipeline_config(pipeline):
            create_array(store, data, chunk, overwrite=False)
            arrays = {
                "direct": zarr.open_array(store, path="a", mode="r+"),
                "url": zarr.open_array(f"shm://{namespace}/a", mode="r+"),
            }
            writes = time_sides(
                {route: lambda z=z: z.__setitem__(Ellipsis, data) for route, z in arrays.items()},
                rounds,
            )
            reads = time_sides({route: reader.read(z) for route, z in arrays.items()}, rounds)
            for route, z in arrays.items():
                reader.check(route, reader.read(z))
    finally:
        store.destroy()
    rows = []
    for route in ROUTES:
        for name, times in (("write", writes), ("read", reads)):
            row = {"pipeline": pipeline, "chunk_bytes": chunk, "route": route, "op": name}
            row.update(throughput(data.nbytes, times[route]))
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
                "met": met(ratio, target),
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
    print_header(head)
    for r in rows:
        print(
            f"{r['pipeline']:<8} {human(r['chunk_bytes']):>7} {r['route']:<7} {r['op']:<5} "
            f"{r['best']:6.2f} {min_med_max(r):>17}"
        )
    print()
    print("url / direct (best vs best; median vs median)")
    for r in rats:
        print(
            f"  {r['pipeline']:<8} {human(r['chunk_bytes']):>7} {r['op']:<5} "
            f"{r['ratio']:5.2f}x ({r['ratio_median']:.2f}x){target_mark(r['target'], r['met'])}"
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

    # The URL route resolves its root from SHMSTORE_ROOT, set to the private root here.
    with private_root("shmstore-bench-urls-"):
        meta = {
            **versions("zarr", "fsspec", "numpy"),
            "cpus": os.cpu_count(),
            "size_mib": args.size_mib,
            "rounds": args.rounds,
            "chunks": chunks,
            "pipelines": pipelines,
            **stamp(argv),
        }
        rows: list[dict[str, Any]] = []
        for pipeline in pipelines:
            for chunk in chunks:
                rows += run_config(pipeline, chunk, args.size_mib, args.rounds)
    rats = ratios(rows)
    print_table(meta, rows, rats)
    write_results(
        {"meta": meta, "rows": rows, "ratios": rats},
        f"bench_urls-py{meta['python']}-zarr{meta['zarr']}.json",
        args.output,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
