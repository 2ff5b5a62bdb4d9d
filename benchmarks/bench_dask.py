"""Dask worker processes over one array: shared memory vs scattering it vs zarr on disk.

The job: the mean of a float64 array (1 GiB by default) that starts as a NumPy
array in the client, on a ``distributed.LocalCluster`` of 2 and of 4 worker
processes (one thread each). Four routes:

- ``shm``: write the array into a shared-memory namespace (uncompressed zarr,
  through :func:`shmstore.open_store`), then ``da.from_zarr("shm://ns/x").mean()``:
  tasks carry the namespace's name, each worker maps the chunks it reads and
  zarr copies each into a new array;
- ``persist``: ``shmstore.persist(array, "shm://ns/x").mean()``: the same
  write, but tasks take each chunk as a read-only view of its segment (no
  zarr, no copy);
- ``scatter``: ``client.scatter(array, broadcast=True)`` (pickled, one copy per
  worker), then one task per block of rows sums its block;
- ``disk``: write it as uncompressed zarr with ``LocalStore`` on disk, then
  ``da.from_zarr(...).mean()`` (reads hit the page cache: it was just written).

For each route: ``place`` (putting the data where the workers can reach it),
``compute`` (the reduction) and ``total`` wall time, and the total PSS of the
worker processes right after the compute (psutil; shared pages are split among
the processes that map them, so N copies cost N times). Routes alternate
within each round (order rotated per round); each keeps its best round and the
spread is shown. Targets (issue 3): ``shm`` >= 10x faster end to end than
``scatter``; worker PSS <= 1.3x the data size.

Usage::

    PYTHONPATH=. python benchmarks/bench_dask.py                  # 1 GiB, 2 and 4 workers
    PYTHONPATH=. python benchmarks/bench_dask.py --quick          # smoke test

Writes ``benchmarks/results/bench_dask-<python>-<zarr>.json``; everything it
creates in shared memory or on disk is removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import time
from typing import Any

import numpy as np
from _harness import (
    met,
    min_med_max,
    print_header,
    private_root,
    rotated,
    scratch_dir,
    spread,
    stamp,
    target_mark,
    versions,
    write_results,
)

ROUTES = ("shm", "persist", "scatter", "disk")
COLUMNS = 1024  # float64 columns: one row is 8 KiB
MIB = float(1 << 20)


def partial_sum(array: np.ndarray, start: int, stop: int) -> float:
    """A task of the scatter route: the sum of a block of rows of the scattered copy."""
    return float(array[start:stop].sum())


def drop_shm_handles() -> None:
    """Run in each worker: forget cached namespace handles so their mappings go.

    A worker keeps the chunks it read mapped (that is what makes re-reads free);
    the benchmark destroys the namespace after each round, and without this the
    unlinked pages would stay pinned and count in the next route's PSS.
    """
    from shmstore import _namespace

    _namespace.release_handles()
    gc.collect()


def held_keys(dask_worker: Any) -> int:
    return len(dask_worker.data)


def worker_pss(pids: list[int]) -> int:
    import psutil

    return sum(psutil.Process(pid).memory_full_info().pss for pid in pids)


class Routes:
    """The three ways of handing the array to the cluster, each timed as place + compute."""

    def __init__(self, client: Any, data: np.ndarray, chunk_rows: int, shm_root: str, disk: str):
        self.client = client
        self.data = data
        self.chunk_rows = chunk_rows
        self.shm_root = shm_root
        self.disk = disk

    def run(self, route: str) -> tuple[float, float, float]:
        """Return (place seconds, compute seconds, mean) of one run of *route*."""
        return getattr(self, f"_{route}")()

    def _write_zarr(self, store: Any, **name: str) -> None:
        """Write the array into *store* as uncompressed zarr, in chunks of *chunk_rows* rows."""
        import zarr

        z = zarr.create_array(
            store,
            **name,
            shape=self.data.shape,
            chunks=(self.chunk_rows, COLUMNS),
            dtype="f8",
            compressors=None,
            overwrite=True,
        )
        z[:] = self.data

    def _shm(self) -> tuple[float, float, float]:
        import dask.array as da

        import shmstore

        t0 = time.perf_counter()
        store = shmstore.open_store("shm://bench-dask", root=self.shm_root)
        self._write_zarr(store, name="x")
        t1 = time.perf_counter()
        x = da.from_zarr("shm://bench-dask/x", storage_options={"root": self.shm_root})
        mean = float(x.mean().compute())
        t2 = time.perf_counter()
        self._after = lambda: (store.destroy(), self.client.run(drop_shm_handles))
        return t1 - t0, t2 - t1, mean

    def _persist(self) -> tuple[float, float, float]:
        import shmstore

        t0 = time.perf_counter()
        chunks = (self.chunk_rows, COLUMNS)
        x = shmstore.persist(
            self.data, "shm://bench-dask/y", chunks=chunks, overwrite=True, root=self.shm_root
        )
        t1 = time.perf_counter()
        mean = float(x.mean().compute())
        t2 = time.perf_counter()
        store = shmstore.open_store("shm://bench-dask", root=self.shm_root)
        self._after = lambda: (store.destroy(), self.client.run(drop_shm_handles))
        return t1 - t0, t2 - t1, mean

    def _scatter(self) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        fut = self.client.scatter(self.data, broadcast=True)
        t1 = time.perf_counter()
        rows = self.data.shape[0]
        parts = [
            self.client.submit(partial_sum, fut, a, a + self.chunk_rows, pure=False)
            for a in range(0, rows, self.chunk_rows)
        ]
        mean = sum(self.client.gather(parts)) / self.data.size
        t2 = time.perf_counter()

        def release() -> None:
            self.client.cancel([fut, *parts])
            # Wait until the workers dropped their copies before the next route.
            while any(self.client.run(held_keys).values()):
                time.sleep(0.05)
            self.client.run(gc.collect)

        self._after = release
        return t1 - t0, t2 - t1, mean

    def _disk(self) -> tuple[float, float, float]:
        import dask.array as da
        from zarr.storage import LocalStore

        path = os.path.join(self.disk, "x.zarr")
        t0 = time.perf_counter()
        self._write_zarr(LocalStore(path))
        t1 = time.perf_counter()
        mean = float(da.from_zarr(path).mean().compute())
        t2 = time.perf_counter()
        self._after = lambda: shutil.rmtree(path, ignore_errors=True)
        return t1 - t0, t2 - t1, mean

    def release(self) -> None:
        after = getattr(self, "_after", None)
        if after is not None:
            after()
            self._after = None


def run_cluster(n_workers: int, data: np.ndarray, args: argparse.Namespace, roots: dict[str, str]):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            memory_limit=0,  # no spilling or pausing: measure the routes, not the limits
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = list(client.run(os.getpid).values())
        chunk_rows = max(1, args.chunk_mib * (1 << 20) // (COLUMNS * 8))
        # Warm-up on a small array: imports and first connections in every worker.
        warm = Routes(client, data[: 4 * chunk_rows], chunk_rows, roots["shm"], roots["disk"])
        for route in ROUTES:
            warm.run(route)
            warm.release()
        idle = worker_pss(pids)
        routes = Routes(client, data, chunk_rows, roots["shm"], roots["disk"])
        res: dict[str, dict[str, list[float]]] = {
            r: {"place": [], "compute": [], "total": [], "pss": []} for r in ROUTES
        }
        means: dict[str, float] = {}
        for r in range(args.rounds):
            for route in rotated(ROUTES, r):
                place, compute, mean = routes.run(route)
                res[route]["place"].append(place)
                res[route]["compute"].append(compute)
                res[route]["total"].append(place + compute)
                res[route]["pss"].append(worker_pss(pids))
                means[route] = mean
                routes.release()
    expected = float(data.mean())
    for route, mean in means.items():
        if not np.isclose(mean, expected, rtol=1e-9):
            raise AssertionError(f"{route}: mean {mean} differs from NumPy's {expected}")
    rows = []
    for route in ROUTES:
        row: dict[str, Any] = {"workers": n_workers, "route": route}
        for key in ("place", "compute", "total"):
            row[key] = spread(res[route][key], lower_is_better=True)
        pss = res[route]["pss"]
        row["pss"] = {"min": min(pss), "max": max(pss), "samples": pss}
        row["idle_pss"] = idle
        rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]], nbytes: int) -> list[dict[str, Any]]:
    out = []
    for n in sorted({r["workers"] for r in rows}):
        by = {r["route"]: r for r in rows if r["workers"] == n}
        for mine in ("shm", "persist"):
            for other in ("scatter", "disk"):
                for key in ("total", "compute"):
                    out.append(
                        {
                            "workers": n,
                            "what": f"{other} / {mine} {key} time",
                            "ratio": by[other][key]["best"] / by[mine][key]["best"],
                            "target": 10.0 if (other, key) == ("scatter", "total") else None,
                        }
                    )
        for route in ROUTES:
            pss = by[route]["pss"]["min"]
            out.append(
                {
                    "workers": n,
                    "what": f"{route} worker PSS / data",
                    "ratio": pss / nbytes,
                    "ratio_over_idle": (pss - by[route]["idle_pss"]) / nbytes,
                    "target": 1.3 if route in ("shm", "persist") else None,
                }
            )
    for r in out:
        r["met"] = met(r["ratio"], r["target"], at_most="PSS" in r["what"])
    return out


def print_table(meta: dict[str, Any], rows: list[dict[str, Any]], rats: list[dict[str, Any]]):
    print(
        f"python {meta['python']}, zarr {meta['zarr']}, dask {meta['dask']}, "
        f"{meta['cpus']} cpus: mean of {meta['size_mib']} MiB float64 "
        f"({meta['chunk_mib']} MiB chunks), {meta['rounds']} alternating rounds"
    )
    head = (
        f"{'workers':>7} {'route':<8} {'place s':>8} {'compute s':>10} {'total s':>8} "
        f"{'total min/med/max':>20} {'PSS MiB':>8} {'idle MiB':>8}"
    )
    print_header(head)
    for r in rows:
        t = r["total"]
        print(
            f"{r['workers']:>7} {r['route']:<8} {r['place']['best']:8.3f} "
            f"{r['compute']['best']:10.3f} {t['best']:8.3f} {min_med_max(t):>20} "
            f"{r['pss']['min'] / MIB:8.0f} {r['idle_pss'] / MIB:8.0f}"
        )
    print()
    print("ratios (best vs best; PSS: lowest of rounds, total and over idle workers)")
    for r in rats:
        extra = ""
        if "ratio_over_idle" in r:
            extra = f" ({r['ratio_over_idle']:.2f}x over idle)"
        mark = target_mark(r["target"], r["met"], "<=" if "PSS" in r["what"] else ">=")
        print(f"  {r['workers']} workers: {r['what']:<32} {r['ratio']:6.2f}x{extra}{mark}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024, help="array size (default 1024)")
    p.add_argument("--workers", default="2,4", help="worker counts (default 2,4)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--chunk-mib", type=int, default=8, help="chunk size (default 8 MiB)")
    p.add_argument("--disk-dir", default=None, help="directory on disk (default: $TMPDIR)")
    p.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/...)")
    p.add_argument("--quick", action="store_true", help="smoke test: 64 MiB, 2 workers, 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.size_mib, args.rounds, args.workers = min(args.size_mib, 64), 1, "2"
    workers = [int(w) for w in args.workers.split(",") if w.strip()]

    # SHMSTORE_ROOT, set to the private root, is inherited by the worker processes.
    with (
        private_root("shmstore-bench-dask-") as shm,
        scratch_dir("shmstore-bench-dask-disk-", args.disk_dir) as disk,
    ):
        roots = {"shm": shm, "disk": disk}
        rows = max(1, args.size_mib * (1 << 20) // (COLUMNS * 8))
        data = np.random.default_rng(0).random((rows, COLUMNS))
        meta = {
            **versions("zarr", "dask", "distributed", "numpy"),
            "cpus": os.cpu_count(),
            "size_mib": args.size_mib,
            "chunk_mib": args.chunk_mib,
            "rounds": args.rounds,
            "workers": workers,
            **stamp(argv),
        }
        results: list[dict[str, Any]] = []
        for n in workers:
            results += run_cluster(n, data, args, roots)
    rats = ratios(results, data.nbytes)
    print_table(meta, results, rats)
    write_results(
        {"meta": meta, "rows": results, "ratios": rats},
        f"bench_dask-py{meta['python']}-zarr{meta['zarr']}.json",
        args.output,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
