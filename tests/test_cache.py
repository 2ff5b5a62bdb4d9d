"""CachingStore: a read-through host cache in shared memory, over any Zarr store."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import run_python
from test_tiering import files, start_together
from zarr.abc.store import RangeByteRequest
from zarr.core.buffer import cpu
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore

import shmstore
from shmstore import CachingStore, SharedMemoryStore

# A real source store that counts its reads into a file (one line per read),
# shared by every process: a WrapperStore over zarr's LocalStore, not a mock.
COUNTING = r"""
import os
from zarr.storage import LocalStore, WrapperStore


class CountingStore(WrapperStore):
    def __init__(self, store, log):
        super().__init__(store)
        self.log = log

    def _with_store(self, store):
        return type(self)(store, self.log)

    def _count(self, key):
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (key + "\n").encode())
        finally:
            os.close(fd)

    async def get(self, key, prototype, byte_range=None):
        self._count(key)
        return await self._store.get(key, prototype, byte_range)

    if hasattr(WrapperStore, "get_sync"):  # zarr >= 3.4

        def get_sync(self, key, *, prototype=None, byte_range=None):
            self._count(key)
            return self._store.get_sync(key, prototype=prototype, byte_range=byte_range)
"""

READER = (
    COUNTING
    + r"""
import sys, numpy as np, zarr, shmstore
src, fifo, log = sys.argv[1], sys.argv[2], sys.argv[3]
cache = shmstore.CachingStore(CountingStore(LocalStore(src, read_only=True), log))
with open(fifo) as f:  # start line
    f.read()
z = zarr.open_array(cache, path="t", mode="r")
expected = np.arange(64 * 64, dtype="i4").reshape(64, 64)
assert np.array_equal(z[:], expected)
assert np.array_equal(z[5:37, 11:60], expected[5:37, 11:60])
print("ok")
"""
)


def make_source(path: Path) -> np.ndarray:
    data = np.arange(64 * 64, dtype="i4").reshape(64, 64)
    z = zarr.create_array(LocalStore(path), name="t", shape=data.shape, chunks=(8, 8), dtype="i4")
    z[:] = data
    return data


def counting_store(src: Path, log: Path):  # type: ignore[no-untyped-def]
    namespace: dict = {}
    exec(COUNTING, namespace)
    return namespace["CountingStore"](LocalStore(src, read_only=True), str(log))


def source_reads(log: Path) -> collections.Counter[str]:
    if not log.exists():
        return collections.Counter()
    return collections.Counter(log.read_text().split())


def test_three_processes_fetch_each_chunk_once(tmp_path: Path) -> None:
    src, log = tmp_path / "src.zarr", tmp_path / "reads.log"
    make_source(src)
    procs = start_together(READER, [[str(src), str(log)] for _ in range(3)], tmp_path)
    outs = [p.wait(timeout=120) for p in procs]
    assert outs == [0, 0, 0]
    reads = source_reads(log)
    chunk_reads = {k: n for k, n in reads.items() if "/c/" in k}
    print("source reads by 3 processes:", sum(chunk_reads.values()), "for 64 chunks")
    assert len(chunk_reads) == 64  # every chunk was fetched...
    assert max(chunk_reads.values()) == 1  # ...exactly once for the whole host
    assert reads["t/zarr.json"] == 1
    # this process, too, reads everything from shared memory now
    cache = CachingStore(counting_store(src, log))
    np.testing.assert_array_equal(
        zarr.open_array(cache, path="t", mode="r")[:], np.arange(4096).reshape(64, 64)
    )
    again = source_reads(log)
    # only misses go to the source again (zarr probes the absent v2 metadata)
    assert {k: n for k, n in again.items() if "/c/" in k or k.endswith("zarr.json")} == {
        k: n for k, n in reads.items() if "/c/" in k or k.endswith("zarr.json")
    }
    cache.destroy()


def test_concurrent_readers_in_one_process_fetch_once(tmp_path: Path) -> None:
    src, log = tmp_path / "src.zarr", tmp_path / "reads.log"
    make_source(src)
    keys = [f"t/c/{i}/{j}" for i in range(8) for j in range(8)]
    cache = CachingStore(counting_store(src, log), namespace="one-process")

    async def many_coroutines() -> list:
        return await asyncio.gather(
            *(cache.get(k, cpu.buffer_prototype) for k in keys[:32] for _ in range(4))
        )

    values = sync(many_coroutines())
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        values += list(pool.map(cache.get_sync, [k for k in keys[32:] for _ in range(4)]))
    assert all(v is not None for v in values)
    reads = source_reads(log)
    assert sorted(reads) == sorted(keys) and set(reads.values()) == {1}
    cache.destroy()


def test_capacity_evicts(tmp_path: Path) -> None:
    src, log = tmp_path / "src.zarr", tmp_path / "reads.log"
    data = make_source(src)
    chunk = (src / "t" / "c" / "0" / "0").stat().st_size  # a stored chunk, on disk
    capacity = 10 * chunk
    cache = CachingStore(counting_store(src, log), namespace="evicting", capacity=capacity)
    z = zarr.open_array(cache, path="t", mode="r")
    np.testing.assert_array_equal(z[:], data)
    np.testing.assert_array_equal(z[:], data)
    assert 0 < cache.cached_bytes <= capacity
    assert sum(files(Path(cache.root) / "evicting").values()) == cache.cached_bytes
    chunk_reads = sum(n for k, n in source_reads(log).items() if "/c/" in k)
    assert chunk_reads > 64  # values were evicted and fetched again
    cache.destroy()


def test_least_recently_read_goes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    import shmstore._cache as cache_module

    monkeypatch.setattr(cache_module, "TOUCH_INTERVAL", 0.0)
    src = MemoryStore()
    for k in "abcde":
        src._store_dict[k] = cpu.Buffer.from_bytes(k.encode() * 100)
    cache = CachingStore(src, namespace="lru", capacity=450)
    for k in "abcd":
        assert cache.get_sync(k).to_bytes() == k.encode() * 100  # type: ignore[union-attr]
    cache.get_sync("a")  # a is now more recent than b
    cache.get_sync("e")  # 500 > 450: evicts down to 90 %, the oldest first
    cached = set(files(Path(cache.root) / "lru"))
    assert cached == {"a", "c", "d", "e"}
    cache.destroy()


def test_reads_ranges_misses_and_listing(tmp_path: Path) -> None:
    src = tmp_path / "src.zarr"
    make_source(src)
    cache = CachingStore(str(src), namespace="misc")
    full = (src / "t" / "c" / "1" / "1").read_bytes()
    part = cache.get_sync("t/c/1/1", byte_range=RangeByteRequest(3, 9))
    assert part.to_bytes() == full[3:9]  # type: ignore[union-attr]
    assert (Path(cache.root) / "misc" / "t" / "c" / "1" / "1").read_bytes() == full
    got = sync(cache.get("t/c/1/1", cpu.buffer_prototype, RangeByteRequest(0, 4)))
    assert got.to_bytes() == full[:4]
    assert cache.get_sync("t/c/99/0") is None
    assert not (Path(cache.root) / "misc" / "t" / "c" / "99").exists()
    assert sync(cache.exists("t/c/2/2")) and not sync(cache.exists("nope"))
    assert sync(cache.getsize("t/c/1/1")) == len(full)

    async def keys() -> list[str]:
        return [k async for k in cache.list_prefix("t/c/0/")]

    assert len(sync(keys())) == 8
    cache.clear_cache()
    assert cache.cached_bytes == 0 and not files(Path(cache.root) / "misc")
    cache.destroy()


def test_read_only(tmp_path: Path) -> None:
    make_source(tmp_path / "src.zarr")
    cache = CachingStore(tmp_path / "src.zarr", namespace="ro")
    with pytest.raises(ValueError, match="read-only cache"):
        sync(cache.set("k", cpu.Buffer.from_bytes(b"x")))
    with pytest.raises(ValueError, match="read-only cache"):
        cache.delete_sync("t/zarr.json")
    with pytest.raises(ValueError, match="read-only"):
        cache.with_read_only(False)
    with pytest.raises(ValueError, match="read-only"):
        zarr.open_array(cache, path="t", mode="r")[:2] = 1
    cache.destroy()


def test_one_namespace_caches_one_source(tmp_path: Path) -> None:
    make_source(tmp_path / "a.zarr")
    make_source(tmp_path / "b.zarr")
    CachingStore(tmp_path / "a.zarr", namespace="c1")
    with pytest.raises(ValueError, match="caches"):
        CachingStore(tmp_path / "b.zarr", namespace="c1")
    SharedMemoryStore("data").set_sync("k", cpu.Buffer.from_bytes(b"v"))
    with pytest.raises(ValueError, match="not a cache"):
        CachingStore(tmp_path / "a.zarr", namespace="data")
    # without a name, each source gets its own namespace, the same in every process
    x, y = CachingStore(tmp_path / "a.zarr"), CachingStore(tmp_path / "b.zarr")
    assert x.namespace != y.namespace
    assert x.namespace == CachingStore(str(tmp_path / "a.zarr")).namespace


def test_pickles_and_reopens(tmp_path: Path) -> None:
    data = make_source(tmp_path / "src.zarr")
    cache = CachingStore(tmp_path / "src.zarr", capacity="1 MiB")
    copy = pickle.loads(pickle.dumps(cache))
    assert copy == cache and copy.capacity is None
    np.testing.assert_array_equal(zarr.open_array(copy, path="t", mode="r")[:], data)
    assert copy.capacity == 1 << 20  # recorded in the namespace
    assert "shmcache::" in str(cache) and shmstore.CachingStore is CachingStore


def test_full_tmpfs_serves_uncached(tiny_tmpfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "big.zarr"
    data = np.arange(2048 * 1024, dtype="f8").reshape(2048, 1024)  # 16 MiB, tmpfs is 8
    z = zarr.create_array(
        LocalStore(src),
        name="t",
        shape=data.shape,
        chunks=(128, 1024),
        dtype="f8",
        compressors=None,
    )
    z[:] = data
    code = r"""
import sys, numpy as np, zarr, shmstore
cache = shmstore.CachingStore(sys.argv[2], root=sys.argv[1])
z = zarr.open_array(cache, path="t", mode="r")
ok = np.array_equal(z[:], np.arange(2048 * 1024, dtype="f8").reshape(2048, 1024))
print(ok, cache.cached_bytes)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tiny_tmpfs), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr  # not killed by SIGBUS
    ok, cached = proc.stdout.split()
    assert ok == "True" and 0 < int(cached) <= 8 << 20
    assert os.statvfs(tiny_tmpfs).f_bavail * os.statvfs(tiny_tmpfs).f_frsize < 1 << 20


def test_pickled_cache_resolves_root_where_unpickled(tmp_path: Path, shm_root: Path) -> None:
    make_source(tmp_path / "src.zarr")
    other = tmp_path / "other-host"
    other.mkdir(mode=0o700)
    blobs = [
        pickle.dumps(CachingStore(tmp_path / "src.zarr")),
        pickle.dumps(CachingStore(tmp_path / "src.zarr", root=shm_root)),
    ]
    code = r"""
import pickle, sys, zarr
for path in sys.argv[1:]:
    cache = pickle.load(open(path, "rb"))
    zarr.open_array(cache, path="t", mode="r")[:]
    print(cache.root, cache.cached_bytes > 0)
"""
    paths = []
    for i, blob in enumerate(blobs):
        (tmp_path / f"{i}.pkl").write_bytes(blob)
        paths.append(str(tmp_path / f"{i}.pkl"))
    out = run_python(code, *paths, env={"SHMSTORE_ROOT": str(other)}).stdout.split("\n")
    # the implicit root is the other host's, the explicit one travelled as given
    assert out[:2] == [f"{other} True", f"{shm_root} True"]
    assert any(other.iterdir())
