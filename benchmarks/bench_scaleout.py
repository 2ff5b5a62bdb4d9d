"""Two simulated hosts x two workers reading one remote Zarr: ``shmcache::`` and the others.

Each host is a private shared-memory root (``$SHMSTORE_ROOT``); each worker
is a spawned process that reads the whole array twice (cold, then warm) once
all workers are ready. Sources are real servers on 127.0.0.1
(``tests/sources.py``): the standard library's HTTP server and, where moto
and s3fs are installed, moto's S3 server; both count what they serve. Routes:

- ``direct``: ``zarr.open_array("http://...")``: every worker fetches every chunk;
- ``simplecache``: fsspec's ``simplecache::`` (a private cache per process, its
  default): every worker fetches every chunk once;
- ``shmcache``: ``shmcache::``: each host fetches each chunk once, its workers
  share it in shared memory.

Per route: source requests (chunk GETs) and bytes served, wall time of the cold
read (all four workers, from the common start to the last one done) and of the
warm one, and the workers' total PSS after reading. Routes alternate within
each round (order rotated per round); caches start cold each round; each route
keeps its best round and the table shows the spread.

Usage::

    PYTHONPATH=. python benchmarks/bench_scaleout.py            # 64 MiB, 3 rounds
    PYTHONPATH=. python benchmarks/bench_scaleout.py --quick    # smoke test

Writes ``benchmarks/results/bench_scaleout-<python>-<zarr>.json``; everything
it creates in shared memory and on disk is removed at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _harness import (
    human,
    min_med_max,
    parse_size,
    print_header,
    private_root,
    spread,
    stamp,
    versions,
    write_results,
)

# The tests' source servers (real HTTP and S3 servers on 127.0.0.1 that count requests).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sources import HTTPSource, S3Source

ROUTES = ("direct", "simplecache", "shmcache")
HOSTS = ("a", "b")
WORKERS_PER_HOST = 2


def open_route(route: str, base: str, options: dict[str, Any]) -> Any:
    """The zarr array ``a`` of the source at *base* through *route*."""
    import fsspec
    import zarr

    if route == "simplecache":
        # fsspec's simplecache is synchronous over an async target: zarr's loop cannot
        # await it, so it gets it through a thread, as zarr itself wraps sync filesystems.
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
        from zarr.storage import FsspecStore

        fs, path = fsspec.url_to_fs(f"simplecache::{base}", **options)
        store = FsspecStore(AsyncFileSystemWrapper(fs, asynchronous=True), path=path)
        return zarr.open_array(store, path="a", mode="r")
    url = f"shmcache::{base}" if route == "shmcache" else base
    return zarr.open_array(url, path="a", mode="r", storage_options=options)


def _worker(
    root: str,
    route: str,
    base: str,
    options: dict[str, Any],
    ready: Any,
    start: Any,
    out: Any,
) -> None:
    """One worker of a host: read the array cold, then warm; report times and PSS."""
    os.environ["SHMSTORE_ROOT"] = root
    try:
        import psutil

        z = open_route(route, base, options)
        ready.wait()
        start.wait()
        cold = z[:]
        t1 = time.time()
        warm = z[:]
        t2 = time.time()
        pss = psutil.Process().memory_full_info().pss
        out.put((t1, t2 - t1, pss, float(cold.sum()), float(warm.sum())))
    except BaseException as e:
        ready.abort()  # the parent and the other workers stop waiting
        out.put(e)
        raise


def run_round(
    route: str, base: str, options: dict[str, Any], roots: dict[str, str], expected: float
) -> dict[str, float]:
    """Start every worker, release them at once; cold wall, warm wall, total PSS."""
    ctx = mp.get_context("spawn")
    n = len(HOSTS) * WORKERS_PER_HOST
    ready, start, out = ctx.Barrier(n + 1), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(roots[h], route, base, options, ready, start, out))
        for h in HOSTS
        for _ in range(WORKERS_PER_HOST)
    ]
    for p in procs:
        p.start()
    url = f"{route} of {base}"
    try:
        ready.wait(timeout=300)
    except threading.BrokenBarrierError:
        raise RuntimeError(f"a worker of {url} failed: {out.get(timeout=10)!r}") from None
    t0 = time.time()
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise RuntimeError(f"a worker of {url} failed: {failed[0]!r}")
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise RuntimeError(f"a worker of {url} failed (exit code {p.exitcode})")
    if any(r[3] != expected or r[4] != expected for r in results):
        raise RuntimeError(f"a worker of {url} read wrong data: sums {results}, not {expected}")
    return {
        "cold_s": max(r[0] for r in results) - t0,
        "warm_s": max(r[1] for r in results),
        "pss_bytes": sum(r[2] for r in results),
    }


def make_data(size_mib: int) -> np.ndarray:
    cols = 512
    return np.arange(size_mib * (1 << 20) // 8, dtype="f8").reshape(-1, cols)


def measure(
    source: str,
    server: Any,
    base: str,
    options: dict[str, Any],
    roots: dict[str, str],
    rounds: int,
    expected: float,
) -> list[dict[str, Any]]:
    samples: dict[str, list[dict[str, Any]]] = {r: [] for r in ROUTES}
    for rnd in range(rounds):
        for route in ROUTES[rnd % len(ROUTES) :] + ROUTES[: rnd % len(ROUTES)]:
            for root in roots.values():  # caches start cold
                for entry in os.listdir(root):
                    shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
            server.reset()
            got = run_round(route, base, options, roots, expected)
            gets = server.gets()
            got["requests"] = sum(n for k, n in gets.items() if "/a/c/" in k)
            got["bytes_served"] = server.bytes_served
            samples[route].append(got)
    rows = []
    for route, runs in samples.items():
        cold = spread([r["cold_s"] for r in runs], lower_is_better=True)
        warm = spread([r["warm_s"] for r in runs], lower_is_better=True)
        rows.append(
            {
                "source": source,
                "route": route,
                "requests": min(r["requests"] for r in runs),
                "bytes_served": min(r["bytes_served"] for r in runs),
                "cold_s": cold,
                "warm_s": warm,
                "pss_bytes": min(r["pss_bytes"] for r in runs),
            }
        )
    return rows


def print_table(meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print(
        f"python {meta['python']}, zarr {meta['zarr']}, fsspec {meta['fsspec']}: "
        f"{meta['size_mib']} MiB float64 in {human(meta['chunk_bytes'])} chunks, "
        f"{len(HOSTS)} hosts x {WORKERS_PER_HOST} workers, {meta['rounds']} alternating rounds"
    )
    head = (
        f"{'source':<6} {'route':<11} {'requests':>8} {'MiB served':>10} {'cold s':>7} "
        f"{'min/med/max':>17} {'warm s':>7} {'PSS MiB':>8}"
    )
    print_header(head)
    for r in rows:
        print(
            f"{r['source']:<6} {r['route']:<11} {r['requests']:>8} "
            f"{r['bytes_served'] / (1 << 20):>10.1f} {r['cold_s']['best']:>7.3f} "
            f"{min_med_max(r['cold_s']):>17} {r['warm_s']['best']:>7.3f} "
            f"{r['pss_bytes'] / (1 << 20):>8.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=64, help="array size (default 64)")
    p.add_argument("--chunk", default="1MiB", help="chunk size (default 1MiB)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--sources", default="http,s3", help="subset of http,s3 (default: both)")
    p.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/...)")
    p.add_argument("--quick", action="store_true", help="smoke test: 4 MiB, 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.size_mib, args.rounds = min(args.size_mib, 4), 1
        args.chunk = "256KiB"
    import zarr

    chunk = parse_size(args.chunk)
    data = make_data(args.size_mib)
    chunks = (max(1, chunk // (8 * data.shape[1])), data.shape[1])
    expected = float(data.sum())
    sources = [s for s in args.sources.split(",") if s]
    meta = {
        **versions("zarr", "fsspec", "numpy"),
        "cpus": os.cpu_count(),
        "size_mib": args.size_mib,
        "chunk_bytes": chunks[0] * chunks[1] * 8,
        "rounds": args.rounds,
        "hosts": len(HOSTS),
        "workers_per_host": WORKERS_PER_HOST,
        **stamp(argv),
    }
    rows: list[dict[str, Any]] = []
    with private_root("shmstore-bench-scaleout-") as base:
        roots = {h: tempfile.mkdtemp(prefix=f"host-{h}-", dir=base) for h in HOSTS}
        directory = tempfile.mkdtemp(prefix="shmstore-bench-scaleout-src-")
        try:
            if "http" in sources:
                zarr.create_array(
                    f"{directory}/data.zarr", name="a", data=data, chunks=chunks, compressors=None
                )
                with HTTPSource(directory) as server:
                    url = f"{server.url}/data.zarr"
                    rows += measure("http", server, url, {}, roots, args.rounds, expected)
            if "s3" in sources:
                try:
                    import moto.server  # noqa: F401
                    import s3fs
                except ImportError as e:
                    print(f"skipping the S3 source: {e} (pip install 'moto[server]' s3fs)")
                else:
                    with S3Source() as server:
                        opts = server.storage_options
                        s3fs.S3FileSystem(**opts).call_s3("create_bucket", Bucket="bench")
                        zarr.create_array(
                            "s3://bench/data.zarr/a",
                            data=data,
                            chunks=chunks,
                            compressors=None,
                            storage_options=opts,
                        )
                        url, options = "s3://bench/data.zarr", {"s3": opts}
                        rows += measure("s3", server, url, options, roots, args.rounds, expected)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    print_table(meta, rows)
    write_results(
        {"meta": meta, "rows": rows},
        f"bench_scaleout-py{meta['python']}-zarr{meta['zarr']}.json",
        args.output,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
