"""Flagship demo: one zarr array in shared memory, reduced by unrelated worker processes.

1. Build a few-hundred-MiB zarr array in a shared-memory namespace.
2. Start 4 *unrelated* worker processes (plain ``subprocess``, not forks). Each
   is told the namespace's name and a slice of rows, opens the array by name
   and reduces its slice: no bytes of the array travel to the workers.
3. Do the same job the usual way: a process pool, each slice pickled to it.
4. Print both results (they must agree) and both times, then clean up.

Worker start-up (an interpreter importing numpy and zarr) is timed apart from
the job, for both routes: it costs the same whichever way the data travels.

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
    flat = np.asarray(block, dtype=np.float64).reshape(-1)
    return float(flat.sum()), float(flat @ flat), int(flat.size)


def worker() -> None:
    """An unrelated worker process: say ready, then reduce ``NS START STOP`` jobs."""
    print("ready", flush=True)
    for line in sys.stdin:
        namespace, start, stop = line.split()
        store = shmstore.SharedMemoryStore(namespace, read_only=True)
        z = zarr.open_array(store, path="data", mode="r")
        print(json.dumps(reduce_block(z[int(start) : int(stop)])), flush=True)


def combine(parts: list[tuple[float, float, int]]) -> tuple[float, float]:
    total = sum(p[0] for p in parts)
    squares = sum(p[1] for p in parts)
    n = sum(p[2] for p in parts)
    mean = total / n
    return mean, float(np.sqrt(squares / n - mean * mean))


def start_workers(n: int) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"worker {proc.pid} did not start")
    return procs


def run_shared(
    procs: list[subprocess.Popen[str]], namespace: str, bounds: list[tuple[int, int]]
) -> list[tuple[float, float, int]]:
    for proc, (a, b) in zip(procs, bounds, strict=True):
        proc.stdin.write(f"{namespace} {a} {b}\n")
        proc.stdin.flush()
    return [tuple(json.loads(proc.stdout.readline())) for proc in procs]


def stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.stdin.close()
    for proc in procs:
        if proc.wait(timeout=60) != 0:
            raise SystemExit(f"worker {proc.pid} failed with exit code {proc.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="array size (default 256)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
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
        procs = start_workers(args.workers)
        up_shared = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            shared = combine(run_shared(procs, namespace, bounds))
            t_shared = time.perf_counter() - t0
        finally:
            stop_workers(procs)

        ctx = multiprocessing.get_context("spawn")
        t0 = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
            list(pool.map(reduce_block, [np.zeros(1)] * args.workers))  # start the workers
            up_pickled = time.perf_counter() - t0
            t0 = time.perf_counter()
            pickled = combine(list(pool.map(reduce_block, [data[a:b] for a, b in bounds])))
            t_pickled = time.perf_counter() - t0

    sent_shared = len(f"{namespace} {bounds[0][0]} {bounds[0][1]}\n")
    sent_pickled = len(pickle.dumps(data[bounds[0][0] : bounds[0][1]], protocol=5))
    print(f"\n{args.workers} workers, mean and std of a {rows} x {COLUMNS} float64 array:")
    print(
        f"  shared memory, opened by name : mean={shared[0]:+.6f} std={shared[1]:.6f} "
        f"in {t_shared:.3f} s  ({sent_shared} B sent per worker)"
    )
    print(
        f"  pickled to a process pool    : mean={pickled[0]:+.6f} std={pickled[1]:.6f} "
        f"in {t_pickled:.3f} s  ({sent_pickled / (1 << 20):.0f} MiB sent per worker)"
    )
    print(
        f"  worker start-up (not in the times above): {up_shared:.2f} s unrelated processes, "
        f"{up_pickled:.2f} s process pool"
    )
    if not np.allclose(shared, pickled, rtol=1e-9, atol=1e-12):
        raise SystemExit("results differ between the two routes")
    gone = not os.path.exists(os.path.join(store.root, namespace))
    print(f"  speed-up of the job: {t_pickled / t_shared:.1f}x; namespace destroyed: {gone}")


if __name__ == "__main__":
    main()
