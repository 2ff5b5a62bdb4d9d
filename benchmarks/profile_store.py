"""Run one store operation of ``bench_store.py`` in a loop, for a sampling profiler.

zarr runs the default codec pipeline on its own event-loop thread and the fused
one on a thread pool, so profile every thread, e.g.::

    PYTHONPATH=. py-spy record --threads --format raw -o /tmp/read.txt -- \\
        python benchmarks/profile_store.py --store shmstore --op read --chunk 64KiB

    PYTHONPATH=. python benchmarks/profile_store.py --store memory --op read --micro

``--micro`` times the store's own ``get``/``set`` per chunk (no codec pipeline)
instead, which isolates the store's share of a read or write.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_store import STORES, Bench, parse_size, pipeline_config


def micro(bench: Bench, name: str, op: str, seconds: float) -> None:
    """Per-call cost of the store's ``get``/``get_sync``/``set``/``set_sync``."""
    from zarr.core.buffer import default_buffer_prototype

    z = bench.arrays[name]
    store = z.store
    proto = default_buffer_prototype()
    keys = [f"a/c/{i}" for i in range(z.nchunks)]
    values = [
        store.get_sync(k, prototype=proto) if hasattr(store, "get_sync") else None for k in keys
    ]
    loop = asyncio.new_event_loop()

    def run(label: str, fn) -> None:  # type: ignore[no-untyped-def]
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for i, k in enumerate(keys):
                fn(i, k)
            n += len(keys)
        dt = (time.perf_counter() - t0) / n
        print(f"{name:<10} {label:<10} {dt * 1e6:8.2f} us/chunk")

    if op == "read":
        if hasattr(store, "get_sync"):
            run("get_sync", lambda i, k: store.get_sync(k, prototype=proto))
        run("get", lambda i, k: loop.run_until_complete(store.get(k, prototype=proto)))
    else:
        if hasattr(store, "set_sync"):
            run("set_sync", lambda i, k: store.set_sync(k, values[i]))
        run("set", lambda i, k: loop.run_until_complete(store.set(k, values[i])))
    loop.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default="shmstore", choices=STORES)
    p.add_argument("--op", default="read", choices=("read", "write"))
    p.add_argument("--chunk", default="64KiB")
    p.add_argument("--pipeline", default="default", choices=("default", "fused"))
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--micro", action="store_true", help="time the store's get/set alone")
    args = p.parse_args()
    n = args.size_mib * (1 << 20) // 8
    shm = tempfile.mkdtemp(prefix="shmstore-prof-", dir="/dev/shm")
    disk = tempfile.mkdtemp(prefix="shmstore-prof-disk-")
    os.environ["SHMSTORE_ROOT"] = shm
    try:
        with pipeline_config(args.pipeline):
            bench = Bench([args.store], n, parse_size(args.chunk), shm, disk, "prof")
            try:
                bench.write(args.store)
                bench.read(args.store)
                if args.micro:
                    micro(bench, args.store, args.op, args.seconds)
                    return 0
                fn = bench.read if args.op == "read" else bench.write
                k, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < args.seconds:
                    fn(args.store)
                    k += 1
                dt = (time.perf_counter() - t0) / k
                print(
                    f"{args.store} {args.op} {args.chunk} {args.pipeline}: "
                    f"{args.size_mib / 1024 / dt:.2f} GiB/s over {k} passes"
                )
            finally:
                bench.close()
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
