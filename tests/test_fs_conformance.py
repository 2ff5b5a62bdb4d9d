"""fsspec's abstract test suites on SharedMemoryFileSystem, plain and tiered.

Every path of the suites lives inside the namespace "suite" of the test's
private root; directories inside a namespace are implicit, as in an object
store, so the suites run without empty ones.

The tiered runs create "suite" first with a capacity of 2 bytes and a spill
directory: the filesystem sees the tiering because it is recorded in the
namespace. Most of the suites' files are empty (they fit); what they write
with content (``b"data"``, ``b"new data"``) spills.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

from shmstore import SharedMemoryFileSystem, SharedMemoryStore

NAMESPACE = "suite"
TIERED_CAPACITY = 2


class ShmFixtures(AbstractFixtures):
    @pytest.fixture
    def fs(self, shm_root: Path) -> SharedMemoryFileSystem:
        return fsspec.filesystem("shm", root=str(shm_root))

    @pytest.fixture
    def fs_join(self) -> Any:
        return posixpath.join

    @pytest.fixture
    def fs_path(self) -> str:
        return f"{NAMESPACE}/abstract"

    @pytest.fixture
    def fs_sanitize_path(self) -> Any:
        return lambda p: p.rstrip("/")

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False

    @pytest.fixture
    def local_path(self, tmp_path: Path) -> str:
        return str(tmp_path)


class TieredShmFixtures(ShmFixtures):
    @pytest.fixture
    def spill_dir(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        # Not under local_path: the suites compare listings of that directory.
        return tmp_path_factory.mktemp("spill")

    @pytest.fixture
    def fs(self, shm_root: Path, spill_dir: Path) -> SharedMemoryFileSystem:
        SharedMemoryStore(NAMESPACE, root=shm_root, capacity=TIERED_CAPACITY, spill=spill_dir)
        return fsspec.filesystem("shm", root=str(shm_root))


class TestShmCopy(AbstractCopyTests, ShmFixtures):
    pass


class TestShmGet(AbstractGetTests, ShmFixtures):
    pass


class TestShmPut(AbstractPutTests, ShmFixtures):
    pass


class TestShmPipe(AbstractPipeTests, ShmFixtures):
    pass


class TestShmOpen(AbstractOpenTests, ShmFixtures):
    pass


class TestTieredShmCopy(AbstractCopyTests, TieredShmFixtures):
    pass


class TestTieredShmGet(AbstractGetTests, TieredShmFixtures):
    pass


class TestTieredShmPut(AbstractPutTests, TieredShmFixtures):
    pass


class TestTieredShmPipe(AbstractPipeTests, TieredShmFixtures):
    def test_tiered_fixture_really_spills(
        self, fs: SharedMemoryFileSystem, fs_path: str, spill_dir: Path
    ) -> None:
        fs.pipe_file(f"{fs_path}/big", b"more than two bytes")
        fs.pipe_file(f"{fs_path}/small", b"1")
        spilled = spill_dir / "abstract" / "big"
        assert spilled.is_file() and spilled.read_bytes() == b"more than two bytes"
        assert not (spill_dir / "abstract" / "small").exists()
        assert fs.cat_file(f"{fs_path}/big") == b"more than two bytes"
        assert fs.find(fs_path) == [f"{fs_path}/big", f"{fs_path}/small"]
        fs.rm(fs_path, recursive=True)
        assert not spilled.exists()


class TestTieredShmOpen(AbstractOpenTests, TieredShmFixtures):
    pass
