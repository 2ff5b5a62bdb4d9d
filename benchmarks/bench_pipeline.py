"""The main job end to end: one producer, N fresh consumer processes, one array.

A producer computes a Dask array (1 GiB of float64 by default) and hands it to
N consumer processes (1, 2 and 4), each of which reads all of it and sums it.
This is the job shmstore is for, and this script is meant to be read: each
route is the plain way of doing it with that tool.

Routes (what the producer does, then what each consumer does):

- ``shmstore``: ``y = shmstore.persist(x, "shm://bench-pipeline/x")`` (chunks
  written raw into shared memory), then sends ``y`` itself: a dask array whose
  graph holds the namespace's name, so it pickles small. Each consumer computes
  its blocks with the synchronous scheduler: every block is a read-only view of
  a mapped segment (no copy), so N consumers share one copy of the pages.
- ``shm-zarr``: the same ``persist``; each consumer opens the array by name
  through shmstore's store, ``zarr.open_array(shmstore.open_store("shm://..."),
  path="x")[...]``: what a plain zarr user does (zarr copies every chunk into
  the consumer's own array).
- ``scatter``: ``x.compute()``, then ``client.scatter(a, broadcast=True)`` on a
  ``distributed.LocalCluster`` of N worker processes (one thread each); one task
  per worker sums the worker's replica.
- ``pickle``: ``x.compute()``, then the array is sent to each consumer through
  a ``multiprocessing`` pipe, pickled, as ``multiprocessing.Pool.map`` does
  with its arguments (one serialisation and one copy per consumer).
- ``local-shm`` / ``local-disk``: the array is written as uncompressed zarr with
  ``zarr.storage.LocalStore`` on a directory of the root's tmpfs / on disk; each
  consumer reads it whole with ``zarr.open_array(LocalStore(path))[...]``.

Every route starts from the same lazy array ``x`` and the producer computes
it with dask's threaded scheduler. The routes that live in shared memory
(``shmstore``, ``shm-zarr``, ``local-shm``) run on two roots: a tmpfs with 4 KiB
pages (``@small``) and one mounted ``huge=within_size`` (``@huge``; a private
tmpfs, mounted for the run when running as root, else skipped with a message).

For each route and N:

- ``total``: from the producer's start until the last consumer has its sum;
- ``first``: until the first consumer has its sum (time to first result);
- ``place``: the producer's share (persist, compute + scatter, write);
- ``pss``: the total PSS of the N consumers (psutil ``memory_full_info().pss``)
  sampled once every consumer has read everything and still holds it (so pages
  that several processes map are split among them, and N private copies count
  N times); ``idle_pss`` is the same before the run, with the libraries loaded.

Consumer processes are fresh for every run: spawned (``multiprocessing`` spawn,
or a new ``LocalCluster``) and warmed up (imports done) before the clock starts,
so no route benefits from what an earlier run left mapped or cached. Routes
alternate within each round, in an order rotated by one per round; each keeps
its best round and the spread of its rounds is shown. Ratios are shmstore's
speed-up over each baseline (their time over shmstore's) and the PSS ratio,
from the same run.

Usage::

    PYTHONPATH=. python benchmarks/bench_pipeline.py                      # 1 GiB; 1, 2, 4 consumers
    PYTHONPATH=. python benchmarks/bench_pipeline.py --size 4GiB --consumers 4
    PYTHONPATH=. python benchmarks/bench_pipeline.py --quick              # smoke test

Writes ``benchmarks/results/bench_pipeline-<python>-<zarr>.json``. Everything
it creates in shared memory, on disk or as a mount is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _harness import (
    PAGE_KINDS,
    human,
    min_med_max,
    page_kind,
    page_root,
    parse_size,
    print_header,
    rotated,
    scratch_dir,
    spread,
    stamp,
    versions,
    write_results,
)

ROUTES = ("shmstore", "shm-zarr", "scatter", "pickle", "local-shm", "local-disk")
#: Routes whose data lives in the shared-memory root: run once per kind of root.
ROOTED = frozenset({"shmstore", "shm-zarr", "local-shm"})
NAMESPACE = "bench-pipeline"
COLUMNS = 1024  # float64 columns: one row is 8 KiB
GIB = float(1 << 30)


# --------------------------------------------------------------- the data
def source(nbytes: int, chunk_bytes: int) -> Any:
    """The producer's lazy array: ``nbytes`` of float64, rows of 8 KiB, ``chunk_bytes`` chunks.

    ``arange`` is cheap to compute, so the routes' differences are not hidden
    behind the producer's own work; its sum is known in closed form.
    """
    import dask.array as da

    rows = max(1, nbytes // (COLUMNS * 8))
    chunk_rows = max(1, min(rows, chunk_bytes // (COLUMNS * 8)))
    flat = da.arange(rows * COLUMNS, dtype="f8", chunks=chunk_rows * COLUMNS)
    return flat.reshape((rows, COLUMNS)).rechunk((chunk_rows, COLUMNS))


def expected_sum(x: Any) -> float:
    n = x.size
    return n * (n - 1) / 2


# -------------------------------------------------------------- consumers
def consume(route: str, handle: Any) -> tuple[Any, float]:
    """Read all of the array that *handle* reaches and sum it; return (what is held, sum).

    Runs in a consumer process. What it returns first is kept alive until the
    parent has sampled the consumer's PSS.
    """
    if route == "shmstore":
        import dask

        # handle: the array persist returned; each block is a view of a segment.
        blocks = dask.compute(*handle.to_delayed().ravel(), scheduler="sync")
        return blocks, float(sum(b.sum() for b in blocks))
    if route == "shm-zarr":
        import zarr

        import shmstore

        namespace, root = handle
        store = shmstore.open_store(f"shm://{namespace}", root=root, read_only=True)
        a = zarr.open_array(store, path="x", mode="r")[...]
        return a, float(a.sum())
    if route == "pickle":
        return handle, float(handle.sum())  # handle: the unpickled array itself
    if route in ("local-shm", "local-disk"):
        import zarr
        from zarr.storage import LocalStore

        a = zarr.open_array(LocalStore(handle, read_only=True), mode="r")[...]
        return a, float(a.sum())
    raise ValueError(f"unknown route {route!r}; choose from {ROUTES}")


def warm_up() -> None:
    """First use of every library a consumer needs, before the clock starts.

    A long-running worker has paid these once (imports, zarr's event loop,
    dask's first graph); a fresh process would pay them inside the first
    timed read.
    """
    import dask
    import dask.array as da
    import numpy as np
    import zarr
    from zarr.storage import MemoryStore

    import shmstore._dask  # noqa: F401  (what unpickling persist's array imports)

    dask.compute(*da.ones(4, chunks=2).to_delayed().ravel(), scheduler="sync")
    z = zarr.create_array(MemoryStore(), shape=(4,), chunks=(2,), dtype="f8", compressors=None)
    z[...] = np.ones(4)
    z[...].sum()


def consumer_main(conn: Any) -> None:
    """A consumer process: load the libraries, take a handle, read, report, hold, exit."""
    warm_up()
    conn.send("ready")
    route, handle = conn.recv()
    held, total = consume(route, handle)
    conn.send((total, time.perf_counter()))  # CLOCK_MONOTONIC: one clock for the host
    conn.recv()  # "exit": hold the data until the parent has sampled PSS
    del held


def sum_scattered(a: Any) -> tuple[float, float]:
    """The scatter route's task: sum the worker's replica; when it was done."""
    return float(a.sum()), time.perf_counter()


def pss(pids: list[int]) -> int:
    """Total proportional set size of *pids*: shared pages split among their mappers."""
    import psutil

    return sum(psutil.Process(pid).memory_full_info().pss for pid in pids)


class Consumers:
    """N fresh consumer processes (spawned), ready with their libraries loaded."""

    def __init__(self, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=consumer_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            if conn.recv() != "ready":
                raise RuntimeError("a consumer process did not start; run it alone to see why")
        self.pids = [p.pid for p in self.procs]

    def run(self, route: str, handle: Any) -> list[tuple[float, float]]:
        """Send *handle* to every consumer (in turn, like a pool) and collect (sum, done)."""
        for conn in self.conns:
            conn.send((route, handle))
        return [conn.recv() for conn in self.conns]

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send("exit")
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()


# -------------------------------------------------------------- producers
def write_zarr(x: Any, store: Any) -> None:
    """Write *x* into *store* as an uncompressed zarr array with *x*'s chunks."""
    import dask.array as da
    import zarr

    z = zarr.create_array(
        store,
        shape=x.shape,
        chunks=tuple(c[0] for c in x.chunks),
        dtype=x.dtype,
        compressors=None,
        filters=None,
        overwrite=True,
    )
    da.store(x, z, lock=False, scheduler="threads")


def produce(route: str, x: Any, root: str | None, disk: str) -> tuple[Any, Callable[[], None]]:
    """Put *x* where the consumers of *route* reach it: (the handle to send, cleanup)."""
    import shmstore

    if route in ("shmstore", "shm-zarr"):
        y = shmstore.persist(
            x, f"shm://{NAMESPACE}/x", overwrite=True, root=root, scheduler="threads"
        )
        handle = y if route == "shmstore" else (NAMESPACE, root)
        return handle, lambda: shmstore.destroy(NAMESPACE, root=root)
    if route == "pickle":
        return x.compute(scheduler="threads"), lambda: None
    if route in ("local-shm", "local-disk"):
        from zarr.storage import LocalStore

        path = tempfile.mkdtemp(
            prefix="bench-pipeline-", dir=root if route == "local-shm" else disk
        )
        write_zarr(x, LocalStore(path))
        return path, lambda: shutil.rmtree(path, ignore_errors=True)
    raise ValueError(f"unknown route {route!r}; choose from {ROUTES}")


# ------------------------------------------------------------------- runs
def run_processes(route: str, n: int, x: Any, root: str | None, disk: str) -> dict[str, Any]:
    """One timed run of a route whose consumers are spawned processes."""
    consumers = Consumers(n)
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    try:
        idle = pss(consumers.pids)
        t0 = time.perf_counter()
        handle, cleanup = produce(route, x, root, disk)
        placed = time.perf_counter()
        results = consumers.run(route, handle)
        peak = pss(consumers.pids)  # every consumer done and still holding the data
        del handle
    finally:
        consumers.close()
        cleanup()
    return _measure(route, x, t0, placed, results, idle, peak)


def run_scatter(n: int, x: Any) -> dict[str, Any]:
    """One timed run of the scatter route, on a fresh LocalCluster of *n* workers."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            memory_limit=0,  # no spilling or pausing: measure the route, not the limits
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = list(client.run(os.getpid).values())  # also warms up every connection
        idle = pss(pids)
        t0 = time.perf_counter()
        # The threaded scheduler, as in every route: not the cluster the client makes default.
        a = x.compute(scheduler="threads")
        fut = client.scatter(a, broadcast=True)
        placed = time.perf_counter()
        tasks = [
            client.submit(sum_scattered, fut, workers=[addr], pure=False)
            for addr in client.scheduler_info()["workers"]
        ]
        results = client.gather(tasks)
        peak = pss(pids)  # the replicas are held while `fut` is
        client.cancel([fut, *tasks])
    return _measure("scatter", x, t0, placed, results, idle, peak)


def _measure(
    route: str,
    x: Any,
    t0: float,
    placed: float,
    results: list[tuple[float, float]],
    idle: int,
    peak: int,
) -> dict[str, Any]:
    want = expected_sum(x)
    for total, _ in results:
        if abs(total - want) > 1e-6 * abs(want):
            raise AssertionError(f"{route}: a consumer summed {total}, not {want}")
    done = [t for _, t in results]
    return {
        "total": max(done) - t0,
        "first": min(done) - t0,
        "place": placed - t0,
        "pss": peak,
        "idle_pss": idle,
    }


def sides(routes: list[str], kinds: dict[str, str]) -> list[tuple[str, str | None]]:
    """Every (route, kind of root) to run: rooted routes once per root, others once."""
    out: list[tuple[str, str | None]] = []
    for route in routes:
        if route in ROOTED:
            out += [(route, kind) for kind in kinds]
        else:
            out.append((route, None))
    return out


def label(route: str, kind: str | None) -> str:
    return route if kind is None else f"{route}@{kind}"


def warm_up_producer(routes: list[str], kinds: dict[str, str], disk: str) -> None:
    """Each producer once on a tiny array, untimed: first calls pay imports and setup."""
    tiny = source(4 * COLUMNS * 8, 2 * COLUMNS * 8)
    for route, kind in sides(routes, kinds):
        if route != "scatter":
            _, cleanup = produce(route, tiny, kinds.get(kind or ""), disk)
            cleanup()


def run_all(args: argparse.Namespace, kinds: dict[str, str], disk: str) -> list[dict[str, Any]]:
    warm_up_producer(args.routes, kinds, disk)
    x = source(args.size, args.chunk)
    rows = []
    for n in args.consumers:
        todo = sides(args.routes, kinds)
        runs: dict[tuple[str, str | None], list[dict[str, Any]]] = {s: [] for s in todo}
        for r in range(args.rounds):
            for route, kind in rotated(todo, r):
                print(f"  {n} consumer(s), round {r + 1}: {label(route, kind)}", file=sys.stderr)
                if route == "scatter":
                    res = run_scatter(n, x)
                else:
                    res = run_processes(route, n, x, kinds.get(kind or ""), disk)
                runs[(route, kind)].append(res)
        for (route, kind), got in runs.items():
            row: dict[str, Any] = {
                "consumers": n,
                "route": route,
                "root": kind,
                "label": label(route, kind),
            }
            for key in ("total", "first", "place"):
                row[key] = spread([g[key] for g in got], lower_is_better=True)
            row["pss"] = spread([float(g["pss"]) for g in got], lower_is_better=True)
            row["idle_pss"] = min(g["idle_pss"] for g in got)
            # What holding the data costs the consumers, in copies of it.
            row["copies"] = (row["pss"]["best"] - row["idle_pss"]) / args.size
            rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """shmstore (on each root) against every other side with the same N, from one run.

    ``speedup`` and ``first_speedup``: the baseline's best time over shmstore's
    (above 1: shmstore is faster); ``paired``: the median over rounds of the
    same-round speed-ups; ``pss_ratio``: shmstore's PSS over the baseline's.
    """
    out = []
    for n in sorted({r["consumers"] for r in rows}):
        here = [r for r in rows if r["consumers"] == n]
        for mine in (r for r in here if r["route"] == "shmstore"):
            for base in here:
                if base is mine or base["root"] not in (None, mine["root"]):
                    continue
                out.append(
                    {
                        "consumers": n,
                        "root": mine["root"],
                        "vs": base["label"],
                        "speedup": base["total"]["best"] / mine["total"]["best"],
                        "paired": statistics.median(
                            b / m
                            for b, m in zip(
                                base["total"]["samples"], mine["total"]["samples"], strict=True
                            )
                        ),
                        "first_speedup": base["first"]["best"] / mine["first"]["best"],
                        "pss_ratio": mine["pss"]["best"] / base["pss"]["best"],
                    }
                )
    return out


def huge_gains(rats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For ``shmstore doctor``: shmstore's speed-up over pickling, on each kind of root."""
    out = []
    for n in sorted({r["consumers"] for r in rats}):
        by = {r["root"]: r["speedup"] for r in rats if r["consumers"] == n and r["vs"] == "pickle"}
        if {"small", "huge"} <= set(by):
            out.append(
                {
                    "what": f"persist + {n} consumer(s) end to end, speed-up over pickling",
                    "small": by["small"],
                    "huge": by["huge"],
                }
            )
    return out


def root_gains(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each rooted route's huge-page root against its 4 KiB one: time small over time huge."""
    out = []
    by = {(r["consumers"], r["route"], r["root"]): r for r in rows}
    for (n, route, root), small in by.items():
        huge = by.get((n, route, "huge"))
        if root == "small" and huge is not None:
            out.append(
                {
                    "consumers": n,
                    "route": route,
                    "speedup": small["total"]["best"] / huge["total"]["best"],
                    "place_speedup": small["place"]["best"] / huge["place"]["best"],
                }
            )
    return out


def print_table(
    meta: dict[str, Any],
    rows: list[dict[str, Any]],
    rats: list[dict[str, Any]],
    gains: list[dict[str, Any]],
) -> None:
    print(
        f"bench_pipeline: Python {meta['python']}, zarr {meta['zarr']}, dask {meta['dask']}, "
        f"{human(meta['size'])} float64 in {human(meta['chunk'])} chunks, "
        f"{meta['rounds']} rounds, {meta['cpus']} CPUs; roots: "
        + ", ".join(f"{k}={v}" for k, v in meta["roots"].items())
    )
    print(
        "seconds, best of rounds (min/median/max); PSS of all consumers holding the data, "
        "best round; copies: (PSS - idle PSS) / data size\n"
    )
    print_header(
        f"{'N':>2} {'route':<17} {'total':>7} {'(min/med/max)':>17} {'first':>7} "
        f"{'place':>7} {'PSS GiB':>8} {'copies':>6}"
    )
    for r in rows:
        print(
            f"{r['consumers']:>2} {r['label']:<17} {r['total']['best']:7.3f} "
            f"{min_med_max(r['total']):>17} {r['first']['best']:7.3f} {r['place']['best']:7.3f} "
            f"{r['pss']['best'] / GIB:8.3f} {r['copies']:6.2f}"
        )
    print("\nshmstore over each baseline: speed-up end to end (median of same-round), to first")
    print("result, and PSS ratio (below 1: shmstore's consumers hold less memory)")
    for r in rats:
        print(
            f"  N={r['consumers']} shmstore@{r['root']:<6} vs {r['vs']:<17} "
            f"{r['speedup']:6.2f}x ({r['paired']:5.2f}x)  first {r['first_speedup']:6.2f}x  "
            f"PSS {r['pss_ratio']:5.2f}x"
        )
    if gains:
        print("\nhuge-page root over 4 KiB root, same route: speed-up end to end (of place)")
        for g in gains:
            print(
                f"  N={g['consumers']} {g['route']:<10} {g['speedup']:6.2f}x "
                f"({g['place_speedup']:5.2f}x)"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1GiB", help="array size (default 1GiB)")
    p.add_argument("--chunk", default="8MiB", help="chunk size (default 8MiB)")
    p.add_argument("--consumers", default="1,2,4", help="consumer counts (default 1,2,4)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--routes", default=",".join(ROUTES), help=f"subset of {','.join(ROUTES)}")
    p.add_argument("--roots", default="small,huge", help="kinds of root: small,huge (default both)")
    p.add_argument("--disk-dir", default=None, help="directory on disk (default: $TMPDIR)")
    p.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/...)")
    p.add_argument("--quick", action="store_true", help="smoke test: 8 MiB, 1 and 2 consumers")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.chunk, args.consumers, args.rounds = "8MiB", "1MiB", "1,2", 1
    args.size, args.chunk = parse_size(args.size), parse_size(args.chunk)
    args.consumers = [int(c) for c in args.consumers.split(",") if c.strip()]
    args.routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = set(args.routes) - set(ROUTES)
    if unknown:
        p.error(f"unknown route(s) {sorted(unknown)}; choose from {ROUTES}")
    wanted = [k.strip() for k in args.roots.split(",") if k.strip()]
    if set(wanted) - set(PAGE_KINDS):
        p.error(f"--roots {args.roots!r}: choose from {PAGE_KINDS}")

    # One route at a time holds data in a root: room for it and zarr's temp files.
    root_size = args.size + args.size // 4 + (64 << 20)
    with contextlib.ExitStack() as stack:
        kinds: dict[str, str] = {}
        for kind in wanted:
            root = stack.enter_context(page_root(kind, root_size, "shmstore-bench-pipeline-"))
            if root is not None:
                kinds[kind] = root
        if not kinds and ROOTED & set(args.routes):
            print(
                "no shared-memory root of the kinds asked; see the messages above", file=sys.stderr
            )
            return 1
        disk = stack.enter_context(scratch_dir("shmstore-bench-pipeline-disk-", args.disk_dir))
        meta = {
            **versions("zarr", "dask", "numpy", "distributed"),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "size": args.size,
            "chunk": args.chunk,
            "consumers": args.consumers,
            "rounds": args.rounds,
            "routes": args.routes,
            "roots": {k: v for k, v in kinds.items()},
            "root_pages": {k: page_kind(v) for k, v in kinds.items()},
            "roots_skipped": [k for k in wanted if k not in kinds],
            "disk_dir": disk,
            **stamp(argv),
        }
        rows = run_all(args, kinds, disk)
    rats, gains = ratios(rows), root_gains(rows)
    print_table(meta, rows, rats, gains)
    pyver = ".".join(platform.python_version_tuple()[:2])
    write_results(
        {
            "meta": meta,
            "rows": rows,
            "ratios": rats,
            "root_gains": gains,
            "huge_gain": huge_gains(rats),
        },
        f"bench_pipeline-{pyver}-{meta['zarr']}.json",
        args.output,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
