"""Named arrays and locks against the standard library (and SharedArray where installed).

Four measurements, each in alternating rounds (every round runs each contender
once, in an order rotated by one per round); the table shows each contender's
best round and the spread (min/median/max) of its rounds:

1. ``attach``: attach latency in a fresh process. Each round starts a new
   interpreter per contender, which imports what it needs, then times its
   first attach (``first``) and the median of 200 attach-and-drop cycles
   (``warm``):

   - ``shmstore``: ``shmstore.attach(name)`` (shape and dtype come with it);
   - ``shared_memory``: ``SharedMemory(name=...)`` + ``np.ndarray(shape, dtype,
     buffer=shm.buf)`` with shape and dtype passed by hand. On Python < 3.13 its
     first attach also starts the ``resource_tracker`` process; the script
     unregisters each attach (outside the timing) so that the tracker does not
     unlink the segment when the process exits (PITFALLS 1);
   - ``SharedArray``: ``SharedArray.attach("shm://name")``, if installed.

2. ``pool sum``: a ``multiprocessing`` pool of 2 workers (spawn) sums an array
   (default 1 GiB of float64), one half each: passed as two ``NamedArray``
   slices (pickled by name), as two plain ndarrays (pickled by value), or as
   the name of a raw ``SharedMemory`` block plus offsets. ``1 process`` is
   ``a.sum()`` in this process on already-mapped memory (one core's limit).

3. ``create+fill``: create a named array and fill it with the data of an
   existing array, GiB/s of data. Fresh tmpfs pages cost a page fault each when
   first touched through a mapping; the variants show what that costs:

   - ``shmstore fill=``: ``shmstore.create(..., fill=src)``, the kept method:
     ``pwrite`` from ``src`` into the file, so the kernel allocates each page as
     it copies into it (no faults, ``ENOSPC`` not SIGBUS);
   - ``create + copy``: ``shmstore.create()`` (``posix_fallocate``: zeroed and
     reserved) then ``a[...] = src`` through the mapping (one fault per page);
   - ``create(populate) + copy``: the same with ``populate=True``
     (``MADV_POPULATE_WRITE`` maps every page before the copy);
   - ``MAP_POPULATE + copy``: ``posix_fallocate`` + ``mmap(MAP_POPULATE)`` +
     copy, by hand;
   - ``shared_memory + copy``: the stdlib way, ``SharedMemory(create=True)``
     (a sparse ``ftruncate``: SIGBUS if the tmpfs fills up) then a copy;
   - ``memcpy``: ``np.copyto`` into memory already mapped and faulted, the limit.

4. ``lock``: uncontended acquire/release pairs per second in a ``with`` block:
   ``shmstore.Lock`` (a ``flock`` on the array's file) vs ``multiprocessing.Lock``
   (a POSIX semaphore: no system call when uncontended, usable only by children
   of its creator), ``threading.Lock`` (in-process only) and the two ``flock``
   calls alone in a minimal context manager (the floor of a flock-based lock).

Usage::

    PYTHONPATH=. python benchmarks/bench_arrays.py              # 1 GiB, 3 rounds
    PYTHONPATH=. python benchmarks/bench_arrays.py --size-mib 256 --rounds 5
    PYTHONPATH=. python benchmarks/bench_arrays.py --quick      # smoke test

Writes ``benchmarks/results/bench_arrays-<python>.json``. Everything it creates
in shared memory is removed at the end (a private root under ``/dev/shm``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import mmap
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Any

import numpy as np
from _harness import GIB, alternate, private_root, rotated, spread, versions, write_results

TRACKS = sys.version_info < (3, 13)  # SharedMemory registers attaches

# Targets of issue 5 (ratios; > 1 means shmstore is faster unless noted).
TARGETS = {
    "attach warm vs SharedArray (time ratio, <= 1.2)": 1.2,
    "pool sum by name vs shared_memory (>= 0.9)": 0.9,
    "pool sum by name vs pickled (>= 10)": 10.0,
    "lock pairs/s vs multiprocessing.Lock (>= 0.5)": 0.5,
}


def _sa() -> Any:
    try:
        import SharedArray
    except ImportError:
        return None
    return SharedArray


def _spread(values: list[float]) -> dict[str, float]:
    """Spread of rates (higher is better)."""
    return spread(values, samples=False)


def _rounds(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each contender once per round, rotating the order; values are rates."""
    return alternate(list(contenders), lambda n: contenders[n](), rounds)


# --------------------------------------------------------------- 1. attach
ATTACH_CHILD = {
    "shmstore": """
        import shmstore
        attach = shmstore.attach          # the lazy import happens here, untimed
        def once():
            a = attach(NAME)
            return a
        def drop(a):
            pass
    """,
    "shmstore (root known)": """
        import shmstore
        attach = shmstore.attach
        shmstore._segments.resolve_root()  # the one-time check of the root, untimed
        def once():
            a = attach(NAME)
            return a
        def drop(a):
            pass
    """,
    "shared_memory": """
        import numpy as np
        from multiprocessing import resource_tracker, shared_memory
        TRACKS = sys.version_info < (3, 13)
        kw = {} if TRACKS else {"track": False}
        def once():
            shm = shared_memory.SharedMemory(name=NAME, **kw)
            a = np.ndarray(SHAPE, DTYPE, buffer=shm.buf)
            return (shm, a)
        def drop(pair):
            shm, a = pair
            del a
            shm.close()
            if TRACKS:  # or the tracker unlinks the segment at exit (PITFALLS 1)
                resource_tracker.unregister(shm._name, "shared_memory")
    """,
    "SharedArray": """
        import SharedArray as sa
        def once():
            return sa.attach("shm://" + NAME)
        def drop(a):
            pass
    """,
}

ATTACH_MAIN = """
import sys, time, statistics, json
NAME, SHAPE, DTYPE = sys.argv[1], (int(sys.argv[2]),), "f8"
{body}
t = time.perf_counter(); x = once(); first = time.perf_counter() - t
drop(x)
del x
times = []
for _ in range(200):  # each attach maps afresh: the previous one is gone
    t = time.perf_counter(); x = once(); times.append(time.perf_counter() - t)
    drop(x)
    del x
keep = once()
cached = []
for _ in range(200):  # while another view is alive (shmstore reuses its mapping)
    t = time.perf_counter(); x = once(); cached.append(time.perf_counter() - t)
    drop(x)
    del x
print(json.dumps({{"first": first, "warm": statistics.median(times),
                  "cached": statistics.median(cached)}}))
"""


def bench_attach(root: str, n: int, rounds: int) -> dict[str, Any]:
    import shmstore

    names = {"shmstore": f"bench-attach-{os.getpid()}"}
    names["shmstore (root known)"] = names["shmstore"]
    cleanup: list[Callable[[], None]] = []
    shmstore.create(names["shmstore"], n, "f8", root=root)
    cleanup.append(lambda: shmstore.delete(names["shmstore"], root=root))
    shm = shared_memory.SharedMemory(create=True, size=n * 8)
    names["shared_memory"] = shm.name
    cleanup.append(lambda: (shm.close(), shm.unlink()))
    sa = _sa()
    if sa is not None:
        names["SharedArray"] = f"bench-sa-{os.getpid()}"
        sa.create("shm://" + names["SharedArray"], n, "f8")
        cleanup.append(lambda: sa.delete(names["SharedArray"]))
    env = {**os.environ, "SHMSTORE_ROOT": root}
    results: dict[str, dict[str, list[float]]] = {
        k: {"first": [], "warm": [], "cached": []} for k in names
    }
    try:
        for r in range(rounds):
            for k in rotated(list(names), r):
                code = ATTACH_MAIN.format(body=textwrap.dedent(ATTACH_CHILD[k]))
                proc = subprocess.run(
                    [sys.executable, "-c", code, names[k], str(n)],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                got = json.loads(proc.stdout)
                for what in ("first", "warm", "cached"):
                    results[k][what].append(got[what])
    finally:
        for fn in cleanup:
            with contextlib.suppress(Exception):
                fn()
    return {
        k: {
            "first_us": {s: v * 1e6 for s, v in _spread_low(v["first"]).items()},
            "warm_us": {s: v * 1e6 for s, v in _spread_low(v["warm"]).items()},
            "cached_us": {s: v * 1e6 for s, v in _spread_low(v["cached"]).items()},
        }
        for k, v in results.items()
    }


def _spread_low(values: list[float]) -> dict[str, float]:
    """Spread of times (lower is better)."""
    return spread(values, lower_is_better=True, samples=False)


# ------------------------------------------------------------- 2. pool sum
def _sum_named(part: np.ndarray) -> float:
    return float(part.sum())


def _sum_plain(part: np.ndarray) -> float:
    return float(part.sum())


def _sum_shm(args: tuple[str, int, int]) -> float:
    name, start, stop = args
    kw = {} if TRACKS else {"track": False}
    shm = shared_memory.SharedMemory(name=name, **kw)
    try:
        a = np.ndarray((stop - start,), "f8", buffer=shm.buf, offset=start * 8)
        total = float(a.sum())
        del a
    finally:
        # Pool workers share the parent's resource tracker, where the block is
        # registered once: unregistering here would make the tracker fail later.
        shm.close()
    return total


def _noop(x: int) -> int:
    return x


def bench_pool(root: str, n: int, rounds: int, pickled_rounds: int) -> dict[str, Any]:
    import shmstore

    src = np.random.default_rng(0).random(n)
    expected = float(src.sum())
    name = f"bench-pool-{os.getpid()}"
    a = shmstore.create(name, n, "f8", root=root, fill=src)
    plain = np.array(src)
    shm = shared_memory.SharedMemory(create=True, size=n * 8)
    np.ndarray((n,), "f8", buffer=shm.buf)[:] = src
    half = n // 2
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, list[float]] = {}
    try:
        with ctx.Pool(2) as pool:
            pool.map(_noop, range(4))  # start the workers
            # and let each import shmstore (the stdlib route's modules are imported)
            pool.map(_sum_named, [a[:8], a[8:16]], chunksize=1)

            def timed(fn: Callable[[Any], float], parts: list[Any]) -> float:
                t = time.perf_counter()
                total = sum(pool.map(fn, parts, chunksize=1))
                dt = time.perf_counter() - t
                assert abs(total - expected) <= 1e-6 * abs(expected), (total, expected)
                return n * 8 / GIB / dt

            def local() -> float:
                t = time.perf_counter()
                a.sum()
                return n * 8 / GIB / (time.perf_counter() - t)

            contenders = {
                "by name": lambda: timed(_sum_named, [a[:half], a[half:]]),
                "shared_memory": lambda: timed(
                    _sum_shm, [(shm.name, 0, half), (shm.name, half, n)]
                ),
                "1 process": local,
            }
            results = _rounds(contenders, rounds)
            results["pickled"] = [
                timed(_sum_plain, [plain[:half], plain[half:]]) for _ in range(pickled_rounds)
            ]
        results_bytes = len(pickle.dumps(a))
    finally:
        shm.close()
        shm.unlink()
        shmstore.delete(name, root=root)
    out = {k: _spread(v) for k, v in results.items()}
    out["pickled_size_bytes"] = results_bytes  # type: ignore[assignment]
    return out


# --------------------------------------------------------- 3. create+fill
def bench_create(root: str, n: int, rounds: int) -> dict[str, Any]:
    import shmstore

    src = np.random.default_rng(1).random(n)
    gib = n * 8 / GIB
    name = f"bench-create-{os.getpid()}"
    limit = np.empty_like(src)
    limit[:] = 0  # faulted in

    def fill_arg() -> float:
        t = time.perf_counter()
        shmstore.create(name, n, "f8", root=root, fill=src)
        dt = time.perf_counter() - t
        shmstore.delete(name, root=root)
        return gib / dt

    def create_copy(populate: bool) -> float:
        t = time.perf_counter()
        a = shmstore.create(name, n, "f8", root=root, populate=populate)
        a[...] = src
        dt = time.perf_counter() - t
        del a
        shmstore.delete(name, root=root)
        return gib / dt

    def map_populate() -> float:
        path = os.path.join(root, name)
        t = time.perf_counter()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.posix_fallocate(fd, 0, n * 8)
        m = mmap.mmap(fd, n * 8, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        np.copyto(np.ndarray((n,), "f8", buffer=m), src)
        dt = time.perf_counter() - t
        m.close()
        os.close(fd)
        os.unlink(path)
        return gib / dt

    def stdlib() -> float:
        t = time.perf_counter()
        shm = shared_memory.SharedMemory(create=True, size=n * 8)
        view = np.ndarray((n,), "f8", buffer=shm.buf)
        view[...] = src
        dt = time.perf_counter() - t
        del view
        shm.close()
        shm.unlink()
        return gib / dt

    def memcpy() -> float:
        t = time.perf_counter()
        np.copyto(limit, src)
        return gib / (time.perf_counter() - t)

    res = _rounds(
        {
            "shmstore fill=": fill_arg,
            "create + copy": lambda: create_copy(False),
            "create(populate) + copy": lambda: create_copy(True),
            "MAP_POPULATE + copy": map_populate,
            "shared_memory + copy": stdlib,
            "memcpy": memcpy,
        },
        rounds,
    )
    return {k: _spread(v) for k, v in res.items()}


# ------------------------------------------------------------------ 4. lock
def bench_lock(root: str, pairs: int, rounds: int) -> dict[str, Any]:
    import shmstore

    name = f"bench-lock-{os.getpid()}"
    a = shmstore.create(name, 1, "i8", root=root)
    fd = os.open(os.path.join(root, name), os.O_RDONLY)

    class _Flock:  # the two system calls alone: the floor of any flock lock
        def __enter__(self) -> None:
            fcntl.flock(fd, fcntl.LOCK_EX)

        def __exit__(self, *exc: object) -> None:
            fcntl.flock(fd, fcntl.LOCK_UN)

    locks = {
        "shmstore.Lock": a.lock,
        "flock calls alone": _Flock(),
        "multiprocessing.Lock": multiprocessing.Lock(),
        "threading.Lock": threading.Lock(),
    }

    def run(lock: Any) -> float:
        t = time.perf_counter()
        for _ in range(pairs):
            with lock:
                pass
        return pairs / (time.perf_counter() - t)

    try:
        res = _rounds({k: (lambda lk=lk: run(lk)) for k, lk in locks.items()}, rounds)
    finally:
        del a, locks
        os.close(fd)
        shmstore.delete(name, root=root)
    return {k: _spread(v) for k, v in res.items()}


# ----------------------------------------------------------------- report
def _row(label: str, s: dict[str, float], unit: str, ratio: str = "") -> str:
    return (
        f"  {label:<26} {s['best']:>10.3g} {unit:<8} "
        f"(min {s['min']:.3g} / median {s['median']:.3g} / max {s['max']:.3g}) {ratio}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="array size (default 1024)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pickled-rounds", type=int, default=2)
    parser.add_argument("--lock-pairs", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.rounds, args.pickled_rounds, args.lock_pairs = 16, 1, 1, 10_000
    n = (args.size_mib << 20) // 8
    started = time.perf_counter()
    report: dict[str, Any] = {
        **versions("numpy"),
        "SharedArray": getattr(_sa(), "__version__", None) if _sa() else None,
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
    }
    with private_root("shmstore-bench-") as root:
        report["attach"] = bench_attach(root, (64 << 20) // 8, max(args.rounds, 3))
        report["pool_sum_gib_s"] = bench_pool(root, n, args.rounds, args.pickled_rounds)
        report["create_fill_gib_s"] = bench_create(root, n, args.rounds)
        report["lock_pairs_s"] = bench_lock(root, args.lock_pairs, max(args.rounds, 3))

    att = report["attach"]
    print(f"Python {report['python']}, numpy {report['numpy']}, {report['cpus']} CPUs")
    print("\n1. attach in a fresh process (64 MiB float64), microseconds, lower is better")
    for k, v in att.items():
        print(_row(f"{k} first", v["first_us"], "us"))
        print(_row(f"{k} warm", v["warm_us"], "us"))
        if k == "shmstore":
            print(_row(f"{k} warm, view alive", v["cached_us"], "us"))
    ratios: dict[str, float] = {}
    for other in ("SharedArray", "shared_memory"):
        if other in att:
            r = att["shmstore"]["warm_us"]["best"] / att[other]["warm_us"]["best"]
            ratios[f"attach warm vs {other} (time ratio)"] = r
            r1 = att["shmstore"]["first_us"]["best"] / att[other]["first_us"]["best"]
            ratios[f"attach first vs {other} (time ratio)"] = r1
    if "SharedArray" not in att:
        print("  (SharedArray is not installed: pip install SharedArray)")

    pool = report["pool_sum_gib_s"]
    print(f"\n2. pool of 2 workers summing {args.size_mib} MiB, GiB/s, higher is better")
    for k in ("by name", "shared_memory", "pickled", "1 process"):
        print(_row(k, pool[k], "GiB/s"))
    print(f"  pickled size of the whole NamedArray: {pool['pickled_size_bytes']} bytes")
    ratios["pool sum by name vs shared_memory"] = (
        pool["by name"]["best"] / pool["shared_memory"]["best"]
    )
    ratios["pool sum by name vs pickled"] = pool["by name"]["best"] / pool["pickled"]["best"]

    cf = report["create_fill_gib_s"]
    print(f"\n3. create and fill {args.size_mib} MiB, GiB/s, higher is better")
    for k, v in cf.items():
        print(_row(k, v, "GiB/s"))
    ratios["create fill= vs create + copy"] = (
        cf["shmstore fill="]["best"] / cf["create + copy"]["best"]
    )
    ratios["create fill= vs shared_memory + copy"] = (
        cf["shmstore fill="]["best"] / cf["shared_memory + copy"]["best"]
    )

    lk = report["lock_pairs_s"]
    print("\n4. uncontended lock acquire/release pairs per second, higher is better")
    for k, v in lk.items():
        print(_row(k, v, "pairs/s"))
    ratios["lock pairs/s vs multiprocessing.Lock"] = (
        lk["shmstore.Lock"]["best"] / lk["multiprocessing.Lock"]["best"]
    )

    print("\nratios (best rounds)")
    for k, v in ratios.items():
        print(f"  {k:<45} {v:6.2f}")
    report["ratios"] = ratios
    report["targets"] = TARGETS
    report["seconds"] = time.perf_counter() - started
    print(f"\n({report['seconds']:.0f} s)")
    out = write_results(report, f"bench_arrays-{report['python']}.json")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
