"""zarr's own store conformance suite, on every route to a namespace.

* ``TestSharedMemoryStore``: a plain namespace through ``SharedMemoryStore``.
* ``TestTieredSharedMemoryStore``: a namespace with a tiny capacity and a spill
  directory, so most values the suite writes through the store spill.
* ``TestFsspecStoreOverShm``: zarr's ``FsspecStore`` over ``shm://`` (the URL
  route zarr takes for ``zarr.open_array("shm://ns/t")``), as zarr's own tests
  run the suite for ``FsspecStore`` over S3.

The suite's raw ``get``/``set`` must bypass the store under test. On every
route they go through files: the namespace is a plain Zarr directory layout,
so key ``a/b`` is the file ``<root>/<namespace>/a/b``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import fsspec
import pytest
import zarr
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype
from zarr.storage import FsspecStore
from zarr.testing.store import StoreTests

from shmstore import SharedMemoryStore

NAMESPACE = "conformance"
# Smaller than most values the suite writes (4 bytes), so those spill, while its
# 1-byte and empty values fit: both tiers are read and written.
TIERED_CAPACITY = 2


def _write_file(path: Path, value: Buffer) -> None:
    """Atomic replace, as the store does: a reader never sees a partial value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp-test")
    tmp.write_bytes(value.to_bytes())
    os.replace(tmp, path)


class TestSharedMemoryStore(StoreTests[SharedMemoryStore, cpu.Buffer]):
    store_cls = SharedMemoryStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, shm_root: Path) -> dict[str, Any]:
        # Like LocalStore's tmpdir, the location exists before the suite opens it
        # (read-only opens of a missing namespace raise FileNotFoundError).
        SharedMemoryStore(NAMESPACE, root=shm_root)
        return {"namespace": NAMESPACE, "root": str(shm_root)}

    # Raw access that bypasses the store: the namespace is a plain directory.
    async def set(self, store: SharedMemoryStore, key: str, value: Buffer) -> None:
        _write_file(Path(store.path) / key, value)

    async def get(self, store: SharedMemoryStore, key: str) -> Buffer:
        return self.buffer_cls.from_bytes((Path(store.path) / key).read_bytes())

    def test_store_repr(self, store: SharedMemoryStore) -> None:
        assert repr(store) == f"SharedMemoryStore('shm://{NAMESPACE}', root={store.root!r})"
        assert str(store) == f"shm://{NAMESPACE}"

    def test_store_supports_writes(self, store: SharedMemoryStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: SharedMemoryStore) -> None:
        assert store.supports_listing


class TestTieredSharedMemoryStore(TestSharedMemoryStore):
    """The suite on a namespace whose shared-memory tier holds 2 bytes.

    Raw access goes through files too, not through a second store (which would
    be the code under test again):

    * ``get`` reads the key's file in the namespace directory, or else in the
      spill directory. A key is in exactly one tier; the namespace directory
      also shows spilled keys (as links to the spill files, see
      test_routes.py), but the suite here tests the store, not that layout, so
      it reads the spill directory directly when the key is not in the
      namespace directory.
    * ``set`` writes the file into the namespace directory (a value the store
      finds in its shared-memory tier, which it must read whatever the
      capacity: the capacity governs the store's own writes) and removes any
      spill copy, so the key stays in one tier.
    """

    @pytest.fixture
    def store_kwargs(self, shm_root: Path, tmp_path: Path) -> dict[str, Any]:
        self.spill_dir = tmp_path / "spill"
        SharedMemoryStore(NAMESPACE, root=shm_root, capacity=TIERED_CAPACITY, spill=self.spill_dir)
        return {
            "namespace": NAMESPACE,
            "root": str(shm_root),
            "capacity": TIERED_CAPACITY,
            "spill": str(self.spill_dir),
        }

    async def set(self, store: SharedMemoryStore, key: str, value: Buffer) -> None:
        _write_file(Path(store.path) / key, value)
        (self.spill_dir / key).unlink(missing_ok=True)

    async def get(self, store: SharedMemoryStore, key: str) -> Buffer:
        path = Path(store.path) / key
        if not path.exists():  # follows a link to the spill file where there is one
            path = self.spill_dir / key
        return self.buffer_cls.from_bytes(path.read_bytes())

    def test_store_repr(self, store: SharedMemoryStore) -> None:
        # The namespace's identity is its name and root; the tiering may show too.
        assert repr(store).startswith(f"SharedMemoryStore('shm://{NAMESPACE}'")
        assert repr(store.root) in repr(store)
        assert str(store) == f"shm://{NAMESPACE}"

    async def test_writes_really_spill(self, store: SharedMemoryStore) -> None:
        """The fixture is tiered for real: values beyond the capacity are spill files."""
        big = {f"a/c/{i}": bytes([i]) * 3 for i in range(10)}  # each larger than the tier
        small = {f"b/c/{i}": bytes([i]) for i in range(4)}  # room for two of them
        for key, value in {**big, **small}.items():
            await store.set(key, self.buffer_cls.from_bytes(value))
        spilled = {
            p.relative_to(self.spill_dir).as_posix(): p.read_bytes()
            for p in self.spill_dir.rglob("*")
            if p.is_file()
        }
        assert {k: spilled.get(k) for k in big} == big
        assert sum(k in spilled for k in small) >= 2
        assert _shm_tier_bytes(Path(store.path)) <= TIERED_CAPACITY
        for key, value in {**big, **small}.items():
            got = await store.get(key, prototype=default_buffer_prototype())
            assert got is not None and got.to_bytes() == value


def _shm_tier_bytes(ns_dir: Path) -> int:
    """Bytes of the values held in the namespace directory itself.

    Regular files only: links to spill files (and the bookkeeping entry) do not
    hold values in shared memory.
    """
    total = 0
    for dirpath, dirnames, filenames in os.walk(ns_dir):  # never follows links
        if Path(dirpath) == ns_dir:
            dirnames[:] = [d for d in dirnames if d != ".shmstore"]
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


class TestFsspecStoreOverShm(StoreTests[FsspecStore, cpu.Buffer]):
    """zarr's ``FsspecStore`` over ``SharedMemoryFileSystem`` (the ``shm://`` URL route)."""

    store_cls = FsspecStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, shm_root: Path) -> dict[str, Any]:
        SharedMemoryStore(NAMESPACE, root=shm_root)
        fs, path = fsspec.url_to_fs(f"shm://{NAMESPACE}", root=str(shm_root), asynchronous=True)
        return {"fs": fs, "path": path}

    # Raw access through the namespace directory, as for the store itself.
    @staticmethod
    def _file(store: FsspecStore, key: str) -> Path:
        return Path(store.fs.root) / store.path / key

    async def set(self, store: FsspecStore, key: str, value: Buffer) -> None:
        _write_file(self._file(store, key), value)

    async def get(self, store: FsspecStore, key: str) -> Buffer:
        return self.buffer_cls.from_bytes(self._file(store, key).read_bytes())

    def test_store_repr(self, store: FsspecStore) -> None:
        assert str(store) == f"<FsspecStore(SharedMemoryFileSystem, {NAMESPACE})>"

    def test_store_supports_writes(self, store: FsspecStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: FsspecStore) -> None:
        assert store.supports_listing

    def test_from_url_is_the_same_store(self, store: FsspecStore, shm_root: Path) -> None:
        url_store = FsspecStore.from_url(
            f"shm://{NAMESPACE}", storage_options={"root": str(shm_root)}
        )
        assert url_store.path == store.path == NAMESPACE
        assert url_store.fs.root == str(shm_root)

    async def test_groups_open_by_url(self, store: FsspecStore, shm_root: Path) -> None:
        """As zarr's own FsspecStore tests: metadata written by the store opens by URL."""
        options = {"root": str(shm_root)}
        meta = {"attributes": {"key": "value"}, "zarr_format": 3, "node_type": "group"}
        await store.set("zarr.json", self.buffer_cls.from_bytes(json.dumps(meta).encode()))
        group = await zarr.api.asynchronous.open_group(
            store=f"shm://{NAMESPACE}", storage_options=options
        )
        assert dict(group.attrs) == {"key": "value"}
        meta["attributes"]["key"] = "value-2"
        await store.set("dir-2/zarr.json", self.buffer_cls.from_bytes(json.dumps(meta).encode()))
        group = await zarr.api.asynchronous.open_group(
            store=f"shm://{NAMESPACE}/dir-2", storage_options=options
        )
        assert dict(group.attrs) == {"key": "value-2"}
        group = await zarr.api.asynchronous.open_group(
            store=f"shm://{NAMESPACE}", path="dir-2", storage_options=options
        )
        assert dict(group.attrs) == {"key": "value-2"}

    async def test_empty_nonexistent_path(self, store_kwargs: dict[str, Any]) -> None:
        store = await self.store_cls.open(**{**store_kwargs, "path": f"{NAMESPACE}/abc"})
        assert await store.is_empty("")
