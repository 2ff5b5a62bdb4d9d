"""A shared counter incremented by several processes under an inter-process lock.

The standard library way is ``multiprocessing.Array("q", 1, lock=True)``: a 1-D
typed array with a lock, but only for children of the process that made it
(both are handed down at process start). Here the counter is a named array and
its lock is a ``flock`` on the array's file, so any process of the host can
attach both by name: these workers are unrelated programs started with
``subprocess``, not children sharing a parent's objects. If a worker died
holding the lock, the kernel would release it.

Run: ``python examples/lock_counter.py [--processes 4] [--increments 1000]``
(honours ``$SHMSTORE_ROOT``; deletes the counter when done).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import shmstore


def worker(name: str, increments: int) -> None:
    """Attach the counter by name and increment it under its lock."""
    counter = shmstore.attach(name)
    for _ in range(increments):
        with counter.lock:  # the same lock in every process
            counter[0] += 1  # a read-modify-write: racy without the lock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--increments", type=int, default=1000)
    parser.add_argument("--worker", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.increments)
        return 0

    name = f"example-counter-{os.getpid()}"
    # scoped_array deletes the counter when the block exits, whatever happens.
    with shmstore.scoped_array(name, 1, "i8") as counter:
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", name, "--increments", str(args.increments)]
            )
            for _ in range(args.processes)
        ]
        failed = sum(p.wait() != 0 for p in procs)
        total = int(counter[0])
        expected = args.processes * args.increments
        print(
            f"{args.processes} processes x {args.increments} increments = {total} "
            f"(expected {expected})"
        )
    left = [r.name for r in shmstore.list()]
    print(f"counter deleted: {name not in left}")
    return 0 if total == expected and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
