"""``shmstore bench``: a short local comparison against zarr's own stores.

So that users can see the gain on their own machine, this writes and reads one
uncompressed array (``compressors=None``, so the stores are measured, not the
codecs) through zarr with:

- ``shmstore``: a scoped :class:`~shmstore.SharedMemoryStore` in the root;
- ``memory``: ``zarr.storage.MemoryStore`` (one process only: not shareable);
- ``local-tmpfs``: ``zarr.storage.LocalStore`` on a directory in the root;
- ``local-disk``: ``zarr.storage.LocalStore`` in the temporary directory.

Stores run in alternating rounds (each round runs every store once, in an
order rotated by one), and each store's best round is kept, with the spread
of its rounds, so that a noisy machine's drift hits all of them alike. Reads
right after writes find ``local-disk`` in the page cache: it shows the
filesystem overhead, not the disk. Everything created is removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from shmstore._store import SharedMemoryStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["STORES", "run_bench"]

STORES = ("shmstore", "memory", "local-tmpfs", "local-disk")


@contextlib.contextmanager
def _stores(root: str) -> Iterator[dict[str, Any]]:
    """Open one store of each kind; remove everything they hold on exit."""
    from zarr.storage import LocalStore, MemoryStore

    pid = os.getpid()
    # A hidden transient name with our pid: never listed by `shmstore ls`, and
    # reclaimed by `shmstore gc` if this process dies before the finally below
    # (as is the scoped namespace).
    tmpfs_dir = tempfile.mkdtemp(prefix=f".shmstore-bench.{pid}.", dir=root)
    disk_dir = tempfile.mkdtemp(prefix="shmstore-bench.")
    shm = SharedMemoryStore(
        f"shmstore-bench-{pid}-{random.getrandbits(32):08x}", root=root, scoped=True
    )
    try:
        yield {
            "shmstore": shm,
            "memory": MemoryStore(),
            "local-tmpfs": LocalStore(tmpfs_dir),
            "local-disk": LocalStore(disk_dir),
        }
    finally:
        with contextlib.suppress(FileNotFoundError):
            shm.destroy()
        shutil.rmtree(tmpfs_dir, ignore_errors=True)
        shutil.rmtree(disk_dir, ignore_errors=True)


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_bench(
    root: str,
    *,
    nbytes: int = 256 << 20,
    chunk_bytes: int = 1 << 20,
    rounds: int = 3,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write and read one array through each store; return the figures.

    Parameters
    ----------
    root
        Shared-memory root (for ``shmstore`` and ``local-tmpfs``).
    nbytes, chunk_bytes
        Size of the array and of its chunks (rounded to whole float64s/chunks).
    rounds
        Alternating rounds; each store's best round is reported.
    progress
        Called with a short description before each measurement.

    Returns
    -------
    dict
        ``{"nbytes", "chunk_bytes", "rounds", "results": [{"store", "write_gibs",
        "read_gibs", "write_spread", "read_spread"}], "ratios": {...}}`` where the
        spreads are ``[min, median, max]`` GiB/s and ``ratios`` compares
        shmstore's best with each other store's best (above 1: shmstore faster).
    """
    import zarr
    from zarr.core.buffer.cpu import NDBuffer

    if nbytes <= 0 or chunk_bytes <= 0 or rounds <= 0:
        raise ValueError(
            f"bench sizes and rounds must be positive, got size={nbytes}, "
            f"chunk={chunk_bytes}, rounds={rounds}"
        )
    per_chunk = max(1, chunk_bytes // 8)
    nchunks = max(1, nbytes // (per_chunk * 8))
    data = np.random.default_rng(0).random((nchunks, per_chunk))
    out = np.empty_like(data)
    # One preallocated output for every store: none pays page faults the others do not.
    out_nd = NDBuffer.from_numpy_array(out)
    gib = float(1 << 30)
    size = data.nbytes
    times: dict[str, dict[str, list[float]]] = {s: {"write": [], "read": []} for s in STORES}
    with _stores(root) as stores:
        # Warm zarr up (imports, codec pipeline) so that no store pays for it.
        warm = zarr.create_array(stores["memory"], name="warm", shape=(1, 8), dtype="f8")
        warm[:] = 1.0
        warm[:]
        for r in range(rounds):
            order = STORES[r % len(STORES) :] + STORES[: r % len(STORES)]
            for name in order:
                store = stores[name]
                if progress:
                    progress(f"round {r + 1}/{rounds}: {name}")
                z = zarr.create_array(
                    store,
                    name="bench",
                    shape=data.shape,
                    chunks=(1, per_chunk),
                    dtype=data.dtype,
                    compressors=None,
                    filters=None,
                    overwrite=True,
                )
                times[name]["write"].append(_timed(lambda z=z: z.__setitem__(..., data)))
                times[name]["read"].append(
                    _timed(lambda z=z: z.get_basic_selection(..., out=out_nd))
                )
                if not np.array_equal(out, data):
                    raise AssertionError(f"bench: {name} read back different bytes")
    results = []
    for name in STORES:
        row: dict[str, Any] = {"store": name}
        for op in ("write", "read"):
            rates = sorted(size / gib / t for t in times[name][op])
            row[f"{op}_gibs"] = rates[-1]
            row[f"{op}_spread"] = [rates[0], rates[len(rates) // 2], rates[-1]]
        results.append(row)
    best = {r["store"]: r for r in results}
    ratios = {
        f"{op} vs {name}": best["shmstore"][f"{op}_gibs"] / best[name][f"{op}_gibs"]
        for name in STORES[1:]
        for op in ("write", "read")
    }
    return {
        "nbytes": size,
        "chunk_bytes": per_chunk * 8,
        "rounds": rounds,
        "results": results,
        "ratios": ratios,
    }
