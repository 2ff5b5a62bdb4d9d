"""Flagship demo: one zarr array in shared memory, reduced by unrelated worker processes.

1. Build a few-hundred-MiB zarr array in a shared-memory namespace.
2. Start 4 *unrelated* worker processes (plain ``subprocess``, not forks). Each
   opens the array by its namespace name and reduces its slice of rows: no
   bytes of the array travel to the workers.
3. Do the same job the usual way, pickling each slice to a process pool.
4. Print both results (they must agree) and both times, then clean up.

Run it with ``make demo`` (or ``python examples/flagship.py --size-mib 64``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import zarr

import shmstore

COLUMNS = 4096  # float64 columns: one row is 32 KiB


def reduce_block(block: np.ndarray) -> tuple[float, float, int]:
    """The workers' job: sum, sum of squares and count of a block of rows."""
    block = np.asarray(block, dtype=np.float64)
    return float(block.sum()), float(np.square(block).sum()), int(block.size)


def worker(namespace: str, start: int, stop: int) -> None:
    """Entry point of an unrelated worker process: open by name, reduce, print."""
    store = shmstore.SharedMemoryStore(namespace, read_only=True)
    z = zarr.open_array(store, path="data", mode="r")
    print(json.dumps(reduce_block(z[start:stop])))


def combine(parts: list[tuple[float, float, int]]) -> tuple[float, float]:
    total = sum(p[0] for p in parts)
    squares = sum(p[1] for p in parts)
    n = sum(p[2] for p in parts)
    mean = total / n
    return mean, float(np.sqrt(squares / n - mean * mean))


def run_shared(namespace: str, bounds: list[tuple[int, int]]) -> list[tuple[float, float, int]]:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", namespace, str(a), str(b)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for a, b in bounds
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"worker {proc.args} failed with exit code {proc.returncode}")
        results.append(tuple(json.loads(out)))
    return results


def run_pickled(data: np.ndarray, bounds: list[tuple[int, int]]) -> list[tuple[float, float, int]]:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(len(bounds), mp_context=ctx) as pool:
        return list(pool.map(reduce_block, [data[a:b] for a, b in bounds]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="array size (default 256)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument(
        "--worker", nargs=3, metavar=("NS", "START", "STOP"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))
        return

    rows = max(args.workers, args.size_mib * (1 << 20) // (COLUMNS * 8))
    rows -= rows % args.workers
    chunk_rows = max(1, rows // (args.workers * 8))
    step = rows // args.workers
    bounds = [(i * step, (i + 1) * step) for i in range(args.workers)]
    namespace = f"flagship-{os.getpid()}"
    data = np.random.default_rng(42).standard_normal((rows, COLUMNS))
    size = data.nbytes / (1 << 20)

    # scoped: the namespace is destroyed when the block exits, even on error
    with shmstore.scoped(namespace) as store:
        t0 = time.perf_counter()
        z = zarr.create_array(
            store,
            name="data",
            shape=data.shape,
            chunks=(chunk_rows, COLUMNS),
            dtype="f8",
            compressors=None,
        )
        z[:] = data
        t_write = time.perf_counter() - t0
        print(
            f"wrote {size:.0f} MiB to shm://{namespace}/data "
            f"({z.nchunks} chunks) in {t_write:.2f} s"
        )

        t0 = time.perf_counter()
        shared = combine(run_shared(namespace, bounds))
        t_shared = time.perf_counter() - t0

        t0 = time.perf_counter()
        pickled = combine(run_pickled(data, bounds))
        t_pickled = time.perf_counter() - t0

    sent_shared = len(pickle.dumps((namespace, "data", bounds[0])))
    sent_pickled = len(pickle.dumps(data[bounds[0][0] : bounds[0][1]], protocol=5))
    print(f"\n{args.workers} workers, mean and std of a {rows} x {COLUMNS} float64 array:")
    print(
        f"  shared memory, opened by name : mean={shared[0]:+.6f} std={shared[1]:.6f} "
        f"in {t_shared:.2f} s  ({sent_shared} B sent per worker)"
    )
    print(
        f"  pickled to a process pool    : mean={pickled[0]:+.6f} std={pickled[1]:.6f} "
        f"in {t_pickled:.2f} s  ({sent_pickled / (1 << 20):.0f} MiB sent per worker)"
    )
    if not np.allclose(shared, pickled, rtol=1e-9, atol=1e-12):
        raise SystemExit("results differ between the two routes")
    print(
        f"  speed-up: {t_pickled / t_shared:.1f}x; namespace destroyed: "
        f"{not os.path.exists(os.path.join(store.root, namespace))}"
    )


if __name__ == "__main__":
    main()
