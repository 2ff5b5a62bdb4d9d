"""zarr's own store conformance suite, run against SharedMemoryStore."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from zarr.core.buffer import Buffer, cpu
from zarr.testing.store import StoreTests

from shmstore import SharedMemoryStore


class TestSharedMemoryStore(StoreTests[SharedMemoryStore, cpu.Buffer]):
    store_cls = SharedMemoryStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, shm_root: Path) -> dict[str, Any]:
        # Like LocalStore's tmpdir, the location exists before the suite opens it
        # (read-only opens of a missing namespace raise FileNotFoundError).
        SharedMemoryStore("conformance", root=shm_root)
        return {"namespace": "conformance", "root": str(shm_root)}

    # Raw access that bypasses the store: the namespace is a plain directory.
    async def set(self, store: SharedMemoryStore, key: str, value: Buffer) -> None:
        path = Path(store.path) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp-test")
        tmp.write_bytes(value.to_bytes())
        os.replace(tmp, path)

    async def get(self, store: SharedMemoryStore, key: str) -> Buffer:
        return self.buffer_cls.from_bytes((Path(store.path) / key).read_bytes())

    def test_store_repr(self, store: SharedMemoryStore) -> None:
        assert repr(store) == f"SharedMemoryStore('shm://conformance', root={store.root!r})"
        assert str(store) == "shm://conformance"

    def test_store_supports_writes(self, store: SharedMemoryStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: SharedMemoryStore) -> None:
        assert store.supports_listing
