"""Dask worker processes reducing one array in shared memory, beside the pickling way.

1. Start a ``distributed.LocalCluster`` of worker *processes*.
2. Put a NumPy array into a shared-memory namespace as a zarr array and reduce
   it with ``da.from_zarr("shm://<namespace>/data").mean()``: every task carries
   the namespace's name and a chunk index; each worker maps the chunks it reads.
3. Do the same job the usual way: scatter the NumPy array to the workers
   (pickled, one copy per worker) and reduce it there.
4. Print both results (they must agree) and both times, then destroy the
   namespace.

Run it with ``python examples/dask_processes.py --size-mib 256 --workers 2``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import dask.array as da
import numpy as np
import zarr
from distributed import Client, LocalCluster

import shmstore

COLUMNS = 1024  # float64 columns: one row is 8 KiB
CHUNK_ROWS = 512  # 4 MiB chunks


def partial_sum(array: np.ndarray, start: int, stop: int) -> float:
    """One task of the pickling way: the sum of a block of rows."""
    return float(array[start:stop].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="array size (default 256)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args()

    rows = max(1, args.size_mib * (1 << 20) // (COLUMNS * 8))
    data = np.random.default_rng(0).random((rows, COLUMNS))
    namespace = f"example-dask-{os.getpid()}"
    print(f"array: {data.nbytes / 2**20:.0f} MiB, {args.workers} worker processes")

    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        store = shmstore.open_store(f"shm://{namespace}")
        try:
            # The shared-memory way: write once, then every task opens it by name.
            t0 = time.perf_counter()
            z = zarr.create_array(
                store,
                name="data",
                shape=data.shape,
                chunks=(CHUNK_ROWS, COLUMNS),
                dtype=data.dtype,
                compressors=None,
            )
            z[:] = data
            t1 = time.perf_counter()
            shm_mean = float(da.from_zarr(f"shm://{namespace}/data").mean().compute())
            t2 = time.perf_counter()

            # The pickling way: one copy of the array per worker, then the same job.
            t3 = time.perf_counter()
            scattered = client.scatter(data, broadcast=True)
            bounds = range(0, rows, CHUNK_ROWS)
            parts = [client.submit(partial_sum, scattered, a, a + CHUNK_ROWS) for a in bounds]
            pickled_mean = sum(client.gather(parts)) / data.size
            t4 = time.perf_counter()
            client.cancel([scattered, *parts])
        finally:
            store.destroy()

    print(
        f"shm://{namespace}/data: mean {shm_mean:.12f} in {t2 - t1:.3f} s "
        f"(+ {t1 - t0:.3f} s to write it to shared memory)"
    )
    print(f"scattered (pickled) array: mean {pickled_mean:.12f} in {t4 - t3:.3f} s")
    print(f"results equal: {bool(np.isclose(shm_mean, pickled_mean, rtol=1e-12))}")
    print(f"speed-up end to end: {(t4 - t3) / (t2 - t0):.1f}x")


if __name__ == "__main__":
    main()
