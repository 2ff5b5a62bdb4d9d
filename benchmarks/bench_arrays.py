"""Named arrays and locks against the standard library (SharedArray and Ray where installed).

Five measurements, each in alternating rounds (every round runs each contender
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

5. ``Ray``: only where ``ray`` is importable (it is not a shmstore dependency:
   use a throwaway venv; elsewhere the section says it was skipped). Ray is
   started once (``ray.init(num_cpus=2, include_dashboard=False,
   object_store_memory=...)``) outside the timings and shut down at the end.
   Default 256 MiB of float64 (``--ray-size-mib``):

   - ``ray.put`` of the array (GiB/s) beside shmstore's create-and-fill
     (``fill=``, create then copy, with and without ``populate``) and a copy
     into an existing named array. Ray's store reuses memory that earlier
     objects faulted in, so its first put (``ray.put first``, one sample) is
     shown apart and the timed puts run after cycling through the store;
   - 2 Ray tasks summing the put object (one half each; the workers read it
     zero-copy from the object store) beside 2 pool workers (spawn) summing a
     named array: passed by name to workers that keep it attached after their
     first task (``kept attached``, as Ray workers keep the store mapped), or
     as two ``NamedArray`` views pickled by name that each task maps afresh
     (``views by name``). Warm: every worker reads the whole array twice,
     untimed, before the rounds.

   ``--huge-root PATH`` repeats the create-and-fill and sum rows on a second
   root, for a tmpfs mounted with ``huge=always`` or ``huge=within_size``.

6. ``refill``: putting new data of the same size into shared memory, GiB/s of
   data, on a root with 4 KiB pages and on one with huge pages
   (``huge=within_size``; each a private tmpfs mounted for the run where
   ``/dev/shm`` is not of that kind, which needs root: a kind that cannot be
   had is skipped with a message). ``--roots`` chooses the kinds.

   - ``delete + create(fill=)``: ``shmstore.delete(name)`` then
     ``shmstore.create(name, ..., fill=src)``: new pages for every byte (the
     old ones freed);
   - ``create(fill=)``: the create alone, into a name not taken;
   - ``copy into a live array``: ``arr[...] = src`` into a named array that
     is attached and whose pages are mapped already: the pages are reused;
   - the root-independent baseline of a create: ``ray.put`` where ``ray`` is
     importable (started once, outside the timings, and cycled through its
     store first as in section 5), else ``pickle.dumps`` of the array (what
     sending it to a pool costs the sender) and ``memcpy`` (``np.copyto``
     into memory already faulted in).

Usage::

    PYTHONPATH=. python benchmarks/bench_arrays.py              # 1 GiB, 3 rounds
    PYTHONPATH=. python benchmarks/bench_arrays.py --size-mib 256 --rounds 5
    PYTHONPATH=. python benchmarks/bench_arrays.py --quick      # smoke test
    /tmp/vray/bin/python benchmarks/bench_arrays.py --sections ray --rounds 7

Writes ``benchmarks/results/bench_arrays-<python>.json`` (or ``--output``);
section 6's ``huge_gain`` (each ratio on both kinds of root) is what
``shmstore doctor`` quotes. Everything it creates in shared memory is removed
at the end (a private root under ``/dev/shm``, private mounts unmounted).
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
from _harness import (
    GIB,
    PAGE_KINDS,
    alternate,
    page_kind,
    page_root,
    private_root,
    rotated,
    spread,
    versions,
    write_results,
)

TRACKS = sys.version_info < (3, 13)  # SharedMemory registers attaches

# Targets of issue 5 (ratios; > 1 means shmstore is faster unless noted).
TARGETS = {
    "attach warm vs SharedArray (time ratio, <= 1.2)": 1.2,
    "pool sum by name vs shared_memory (>= 0.9)": 0.9,
    "pool sum by name vs pickled (>= 10)": 10.0,
    "lock pairs/s vs multiprocessing.Lock (>= 0.5)": 0.5,
    "pool sum by name, kept attached, vs Ray tasks (>= 0.9)": 0.9,
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
        shmstore._names.resolve_root()  # the one-time check of the root, untimed
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


# ------------------------------------------------------------------- 5. Ray
SECTIONS = ("attach", "pool", "create", "lock", "ray", "refill")
RAY_MISSING = (
    "Ray rows skipped: ray is not importable in this interpreter. Ray is not a "
    "shmstore dependency; run this script from a throwaway venv that has it "
    "(pip install 'ray==2.60.*' numpy zarr psutil; pip install -e . --no-deps)."
)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        return None
    return ray


def _part_sum(a: np.ndarray, lo: int, hi: int) -> float:
    """Ray task: sum ``a[lo:hi]`` (*a* arrives as a read-only view on the object store)."""
    return float(a[lo:hi].sum())


# (root, name) -> the named array a pool worker keeps attached between tasks.
_KEPT: dict[tuple[str, str], Any] = {}


def _sum_kept(args: tuple[str, str, int, int]) -> float:
    """Pool task: sum ``[lo:hi]`` of the named array *name*, attached once per worker.

    The worker keeps the array attached after its first task, as a Ray worker
    keeps the object store mapped: later tasks find its pages already mapped.
    """
    import shmstore

    root, name, lo, hi = args
    a = _KEPT.get((root, name))
    if a is None:
        a = _KEPT[root, name] = shmstore.attach(name, root=root, read_only=True)
    return float(a[lo:hi].sum())


def bench_ray(root: str, n: int, rounds: int, huge_root: str | None) -> dict[str, Any] | None:
    """``ray.put`` beside create-and-fill, Ray tasks beside pool workers; ``None`` without Ray."""
    ray = _ray()
    if ray is None:
        return None
    import logging

    import shmstore

    src = np.random.default_rng(2).random(n)
    expected = float(src.sum())
    nbytes = n * 8
    gib = nbytes / GIB
    half = n // 2
    pid = os.getpid()
    roots = {"": root} | ({" (huge-page root)": huge_root} if huge_root else {})
    out: dict[str, Any] = {"ray": ray.__version__}
    # Room for three objects: a put, the one before it being freed, and slack.
    store = max(3 * nbytes + (64 << 20), 256 << 20)
    t = time.perf_counter()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=store,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    out["init_s"] = time.perf_counter() - t
    out["object_store_mib"] = store >> 20
    part = ray.remote(_part_sum)
    keep = f"bench-ray-kept-{pid}"
    views = f"bench-ray-views-{pid}"
    existing = f"bench-ray-existing-{pid}"
    try:
        # The first put writes into store memory that nothing touched yet (one
        # page fault per page, like a new named array); the store then reuses
        # freed memory, already faulted in. Cycle through it before timing.
        t = time.perf_counter()
        ref = ray.put(src)
        out["ray.put first"] = gib / (time.perf_counter() - t)
        del ref
        for _ in range(store // nbytes + 2):
            ref = ray.put(src)
            del ref
        # What the closures below use; dropped when done with (memory back).
        live: dict[str, Any] = {}
        live["target"] = shmstore.create(existing, n, "f8", root=root, fill=0.0)
        live["target"][...] = 1.0  # its pages are mapped in this process, like the store's

        def put() -> float:
            t = time.perf_counter()
            ref = ray.put(src)
            dt = time.perf_counter() - t
            del ref
            return gib / dt

        def fill(where: str) -> float:
            t = time.perf_counter()
            shmstore.create(f"bench-ray-fill-{pid}", n, "f8", root=where, fill=src)
            dt = time.perf_counter() - t
            shmstore.delete(f"bench-ray-fill-{pid}", root=where)
            return gib / dt

        def create_copy(where: str, populate: bool = False) -> float:
            t = time.perf_counter()
            a = shmstore.create(f"bench-ray-fill-{pid}", n, "f8", root=where, populate=populate)
            a[...] = src
            dt = time.perf_counter() - t
            del a
            shmstore.delete(f"bench-ray-fill-{pid}", root=where)
            return gib / dt

        def copy_into_existing() -> float:
            t = time.perf_counter()
            np.copyto(live["target"], src)
            return gib / (time.perf_counter() - t)

        sides: dict[str, Callable[[], float]] = {"ray.put": put}
        for label, where in roots.items():
            sides[f"shmstore fill={label}"] = lambda w=where: fill(w)
            sides[f"create + copy{label}"] = lambda w=where: create_copy(w)
            sides[f"create(populate) + copy{label}"] = lambda w=where: create_copy(w, True)
        sides["copy into an existing array"] = copy_into_existing
        out["put_gib_s"] = {k: _spread(v) for k, v in _rounds(sides, rounds).items()}
        del live["target"]
        shmstore.delete(existing, root=root)

        # Sums: 2 Ray tasks on the put object, 2 pool workers on a named array.
        live["ref"] = ray.put(src)
        for where in roots.values():
            shmstore.create(keep, n, "f8", root=where, fill=src)
            shmstore.create(views, n, "f8", root=where, fill=src)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(2) as pool:
            pool.map(_noop, range(4))  # start the workers

            halves = [(0, half), (half, n)]
            whole = [(0, n), (0, n)]  # warm-up: each worker reads every page

            def check(parts: list[tuple[int, int]], total: float, dt: float) -> float:
                want = expected * len(parts) if parts is whole else expected
                assert abs(total - want) <= 1e-6 * abs(want), (total, want)
                return gib / dt

            def ray_sum(parts: list[tuple[int, int]] = halves) -> float:
                t = time.perf_counter()
                total = sum(ray.get([part.remote(live["ref"], lo, hi) for lo, hi in parts]))
                return check(parts, total, time.perf_counter() - t)

            def pool_kept(where: str, parts: list[tuple[int, int]] = halves) -> float:
                tasks = [(where, keep, lo, hi) for lo, hi in parts]
                t = time.perf_counter()
                total = sum(pool.map(_sum_kept, tasks, chunksize=1))
                return check(parts, total, time.perf_counter() - t)

            def pool_views(where: str) -> float:
                a = shmstore.attach(views, root=where)
                t = time.perf_counter()
                total = sum(pool.map(_sum_named, [a[:half], a[half:]], chunksize=1))
                return check(halves, total, time.perf_counter() - t)

            # Warm: each worker (Ray's and the pool's) reads the whole array
            # twice first, untimed, so that every worker has every page mapped.
            for _ in range(2):
                ray_sum(whole)
                for where in roots.values():
                    pool_kept(where, whole)
                    pool_views(where)
            sums: dict[str, Callable[[], float]] = {"Ray tasks": ray_sum}
            for label, where in roots.items():
                sums[f"pool, kept attached{label}"] = lambda w=where: pool_kept(w)
                sums[f"pool, views by name{label}"] = lambda w=where: pool_views(w)
            out["sum_gib_s"] = {k: _spread(v) for k, v in _rounds(sums, rounds).items()}
        live.clear()
    finally:
        ray.shutdown()
        for where in roots.values():
            for name in (keep, views, existing):
                with contextlib.suppress(FileNotFoundError):
                    shmstore.delete(name, root=where)
    return out


# ---------------------------------------------------------------- 6. refill
def _start_ray(ray: Any, nbytes: int) -> Callable[[np.ndarray], Any]:
    """Start Ray for the refill rows; a ``put`` whose store memory is already faulted in."""
    import logging

    store = max(3 * nbytes + (64 << 20), 256 << 20)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=store,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    return lambda a: ray.put(a)


def bench_refill(n: int, rounds: int, kinds: list[str]) -> dict[str, Any]:
    """Section 6: delete + create(fill=), create(fill=) and a copy into a live array, per root."""
    import shmstore

    src = np.random.default_rng(3).random(n)
    nbytes = n * 8
    gib = nbytes / GIB
    pid = os.getpid()
    live_name, fill_name = f"bench-refill-live-{pid}", f"bench-refill-new-{pid}"
    ray = _ray()
    out: dict[str, Any] = {"baseline": "ray.put" if ray is not None else "pickle.dumps"}
    with contextlib.ExitStack() as stack:
        roots: dict[str, str] = {}
        for kind in kinds:
            # A tmpfs size is a limit, not memory taken: room for the live array,
            # the refilled one and the one created beside them, and for the
            # refilled one to be kept for reuse (a process keeps at most an
            # eighth of a filesystem: docs/design.md, "Recycled pages").
            where = stack.enter_context(page_root(kind, 8 * nbytes + (64 << 20)))
            if where is not None:
                roots[kind] = where
        out["roots"] = dict(roots)
        out["root_pages"] = {k: page_kind(v) for k, v in roots.items()}
        out["roots_skipped"] = [k for k in kinds if k not in roots]
        sides: dict[str, Callable[[], float]] = {}
        live: dict[str, Any] = {}
        for kind, where in roots.items():
            live[kind] = shmstore.create(live_name, n, "f8", root=where, fill=src)
            live[kind][...] = 0.0  # mapped and faulted in, like a store's reused pages
            shmstore.create(fill_name, n, "f8", root=where, fill=src)  # what refill replaces

            def refill(w: str = where) -> float:
                t = time.perf_counter()
                shmstore.delete(fill_name, root=w)
                shmstore.create(fill_name, n, "f8", root=w, fill=src)
                return gib / (time.perf_counter() - t)

            def create(w: str = where) -> float:
                name = f"{fill_name}-2"
                t = time.perf_counter()
                shmstore.create(name, n, "f8", root=w, fill=src)
                dt = time.perf_counter() - t
                shmstore.delete(name, root=w)
                return gib / dt

            def copy_live(k: str = kind) -> float:
                t = time.perf_counter()
                live[k][...] = src
                return gib / (time.perf_counter() - t)

            sides[f"delete + create(fill=) @{kind}"] = refill
            sides[f"create(fill=) @{kind}"] = create
            sides[f"copy into a live array @{kind}"] = copy_live
        if ray is not None:
            put = _start_ray(ray, nbytes)
            stack.callback(ray.shutdown)
            for _ in range(4):  # cycle through the store: later puts reuse its memory
                del_ref = put(src)
                del del_ref

            def ray_put() -> float:
                t = time.perf_counter()
                ref = put(src)
                dt = time.perf_counter() - t
                del ref
                return gib / dt

            sides["ray.put"] = ray_put
        else:
            out_buf = np.empty_like(src)
            out_buf[...] = 0.0  # faulted in

            def pickled() -> float:
                t = time.perf_counter()
                blob = pickle.dumps(src, protocol=pickle.HIGHEST_PROTOCOL)
                dt = time.perf_counter() - t
                del blob
                return gib / dt

            def memcpy() -> float:
                t = time.perf_counter()
                np.copyto(out_buf, src)
                return gib / (time.perf_counter() - t)

            sides["pickle.dumps"] = pickled
            sides["memcpy"] = memcpy
        try:
            res = _rounds(sides, rounds)
        finally:
            live.clear()
            for where in roots.values():
                for name in (live_name, fill_name, f"{fill_name}-2"):
                    with contextlib.suppress(FileNotFoundError):
                        shmstore.delete(name, root=where)
    out["gib_s"] = {k: _spread(v) for k, v in res.items()}
    return out


def refill_ratios(rf: dict[str, Any]) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Per kind of root, the section's ratios; and the ``huge_gain`` entries for doctor."""
    g = {k: v["best"] for k, v in rf["gib_s"].items()}
    baselines = [b for b in ("ray.put", "pickle.dumps", "memcpy") if b in g]
    per_kind: dict[str, dict[str, float]] = {}
    for kind in rf["roots"]:
        per_kind[kind] = {
            "delete + create(fill=) vs copy into a live array": (
                g[f"delete + create(fill=) @{kind}"] / g[f"copy into a live array @{kind}"]
            ),
        }
        for base in baselines:
            per_kind[kind][f"create(fill=) vs {base}"] = g[f"create(fill=) @{kind}"] / g[base]
    gains = []
    if {"small", "huge"} <= set(per_kind):
        for what in per_kind["small"]:
            gains.append(
                {"what": what, "small": per_kind["small"][what], "huge": per_kind["huge"][what]}
            )
    return per_kind, gains


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
    parser.add_argument(
        "--ray-size-mib", type=int, default=256, help="array size of the Ray rows (default 256)"
    )
    parser.add_argument(
        "--huge-root",
        help="also run the create-and-fill and sum rows of the Ray section on this root "
        "(a tmpfs mounted with huge=always or huge=within_size)",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--roots", default="small,huge", help="kinds of root of the refill rows (default both)"
    )
    parser.add_argument(
        "--output", default=None, help="JSON path (default: benchmarks/results/...)"
    )
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.rounds, args.pickled_rounds, args.lock_pairs = 16, 1, 1, 10_000
        args.ray_size_mib = 16
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        parser.error(f"unknown sections {sorted(sections - set(SECTIONS))}; use {SECTIONS}")
    kinds = [k.strip() for k in args.roots.split(",") if k.strip()]
    if set(kinds) - set(PAGE_KINDS):
        parser.error(f"--roots {args.roots!r}: choose from {PAGE_KINDS}")
    n = (args.size_mib << 20) // 8
    started = time.perf_counter()
    report: dict[str, Any] = {
        **versions("numpy"),
        "SharedArray": getattr(_sa(), "__version__", None) if _sa() else None,
        "size_mib": args.size_mib,
        "ray_size_mib": args.ray_size_mib,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "sections": sorted(sections),
    }
    with private_root("shmstore-bench-") as root:
        if "attach" in sections:
            report["attach"] = bench_attach(root, (64 << 20) // 8, max(args.rounds, 3))
        if "pool" in sections:
            report["pool_sum_gib_s"] = bench_pool(root, n, args.rounds, args.pickled_rounds)
        if "create" in sections:
            report["create_fill_gib_s"] = bench_create(root, n, args.rounds)
        if "lock" in sections:
            report["lock_pairs_s"] = bench_lock(root, args.lock_pairs, max(args.rounds, 3))
        if "ray" in sections:
            n_ray = (args.ray_size_mib << 20) // 8
            report["ray"] = bench_ray(root, n_ray, max(args.rounds, 3), args.huge_root)
    if "refill" in sections:
        report["refill"] = bench_refill(n, args.rounds, kinds)

    print(f"Python {report['python']}, numpy {report['numpy']}, {report['cpus']} CPUs")
    ratios: dict[str, float] = {}
    if "attach" in report:
        _print_attach(report["attach"], ratios)
    if "pool_sum_gib_s" in report:
        _print_pool(report["pool_sum_gib_s"], args.size_mib, ratios)
    if "create_fill_gib_s" in report:
        _print_create(report["create_fill_gib_s"], args.size_mib, ratios)
    if "lock_pairs_s" in report:
        _print_lock(report["lock_pairs_s"], ratios)
    if "ray" in sections:
        _print_ray(report["ray"], args.ray_size_mib, ratios)
    if "refill" in report:
        report["huge_gain"] = _print_refill(report["refill"], args.size_mib, ratios)

    print("\nratios (best rounds)")
    for k, v in ratios.items():
        print(f"  {k:<52} {v:6.2f}")
    report["ratios"] = ratios
    report["targets"] = TARGETS
    report["seconds"] = time.perf_counter() - started
    print(f"\n({report['seconds']:.0f} s)")
    write_results(report, f"bench_arrays-{report['python']}.json", args.output)
    return 0


def _print_attach(att: dict[str, Any], ratios: dict[str, float]) -> None:
    print("\n1. attach in a fresh process (64 MiB float64), microseconds, lower is better")
    for k, v in att.items():
        print(_row(f"{k} first", v["first_us"], "us"))
        print(_row(f"{k} warm", v["warm_us"], "us"))
        if k == "shmstore":
            print(_row(f"{k} warm, view alive", v["cached_us"], "us"))
    for other in ("SharedArray", "shared_memory"):
        if other in att:
            r = att["shmstore"]["warm_us"]["best"] / att[other]["warm_us"]["best"]
            ratios[f"attach warm vs {other} (time ratio)"] = r
            r1 = att["shmstore"]["first_us"]["best"] / att[other]["first_us"]["best"]
            ratios[f"attach first vs {other} (time ratio)"] = r1
    if "SharedArray" not in att:
        print("  (SharedArray is not installed: pip install SharedArray)")


def _print_pool(pool: dict[str, Any], size_mib: int, ratios: dict[str, float]) -> None:
    print(f"\n2. pool of 2 workers summing {size_mib} MiB, GiB/s, higher is better")
    for k in ("by name", "shared_memory", "pickled", "1 process"):
        print(_row(k, pool[k], "GiB/s"))
    print(f"  pickled size of the whole NamedArray: {pool['pickled_size_bytes']} bytes")
    ratios["pool sum by name vs shared_memory"] = (
        pool["by name"]["best"] / pool["shared_memory"]["best"]
    )
    ratios["pool sum by name vs pickled"] = pool["by name"]["best"] / pool["pickled"]["best"]


def _print_create(cf: dict[str, Any], size_mib: int, ratios: dict[str, float]) -> None:
    print(f"\n3. create and fill {size_mib} MiB, GiB/s, higher is better")
    for k, v in cf.items():
        print(_row(k, v, "GiB/s"))
    ratios["create fill= vs create + copy"] = (
        cf["shmstore fill="]["best"] / cf["create + copy"]["best"]
    )
    ratios["create fill= vs shared_memory + copy"] = (
        cf["shmstore fill="]["best"] / cf["shared_memory + copy"]["best"]
    )


def _print_lock(lk: dict[str, Any], ratios: dict[str, float]) -> None:
    print("\n4. uncontended lock acquire/release pairs per second, higher is better")
    for k, v in lk.items():
        print(_row(k, v, "pairs/s"))
    ratios["lock pairs/s vs multiprocessing.Lock"] = (
        lk["shmstore.Lock"]["best"] / lk["multiprocessing.Lock"]["best"]
    )


def _print_ray(ray: dict[str, Any] | None, size_mib: int, ratios: dict[str, float]) -> None:
    version = f" {ray['ray']}" if ray else ""
    print(f"\n5. Ray{version}: put and 2 tasks, {size_mib} MiB, GiB/s")
    if ray is None:
        print(f"  {RAY_MISSING}")
        return
    print(
        f"  (ray.init {ray['init_s']:.1f} s, object store {ray['object_store_mib']} MiB, "
        "outside the timings)"
    )
    put = ray["put_gib_s"]
    print(f"  {'ray.put first (fresh store memory)':<40} {ray['ray.put first']:>10.3g} GiB/s")
    for k, v in put.items():
        print(_row(k, v, "GiB/s").replace(f"  {k:<26}", f"  {k:<40}"))
    print("  sum of the put object / named array, warm (after 2 untimed runs):")
    sums = ray["sum_gib_s"]
    for k, v in sums.items():
        print(_row(k, v, "GiB/s").replace(f"  {k:<26}", f"  {k:<40}"))
    best_put = put["ray.put"]["best"]
    for label in [k for k in put if k != "ray.put"]:
        ratios[f"{label} vs ray.put"] = put[label]["best"] / best_put
    ratios["shmstore fill= vs ray.put first"] = put["shmstore fill="]["best"] / ray["ray.put first"]
    ray_sum = sums["Ray tasks"]["best"]
    for label in [k for k in sums if k != "Ray tasks"]:
        ratios[f"sum {label} vs Ray tasks"] = sums[label]["best"] / ray_sum


def _print_refill(rf: dict[str, Any], size_mib: int, ratios: dict[str, float]) -> list[Any]:
    print(f"\n6. new data into shared memory, {size_mib} MiB, GiB/s, higher is better")
    print("  roots: " + ", ".join(f"{k}={v}" for k, v in rf["roots"].items()))
    for k in rf["roots_skipped"]:
        print(f"  ({k}-page root skipped: see the message on stderr)")
    for k, v in rf["gib_s"].items():
        print(_row(k, v, "GiB/s").replace(f"  {k:<26}", f"  {k:<34}"))
    per_kind, gains = refill_ratios(rf)
    for kind, rats in per_kind.items():
        for what, r in rats.items():
            ratios[f"{what} @{kind}"] = r
    return gains


if __name__ == "__main__":
    sys.exit(main())
