"""SharedMemoryFileSystem: shm:// specifics and zarr URLs (fsspec's suites: test_fs_conformance)."""

from __future__ import annotations

import asyncio
import os
import pickle
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import zarr
from conftest import run_python
from zarr.abc.store import RangeByteRequest
from zarr.core.buffer import default_buffer_prototype

import shmstore
from shmstore import SharedMemoryFileSystem, SharedMemoryStore

# --------------------------------------------------------------------------
# Specifics


@pytest.fixture
def fs(shm_root: Path) -> SharedMemoryFileSystem:
    return fsspec.filesystem("shm")


def test_registered_by_entry_point_in_an_unrelated_process(shm_root: Path) -> None:
    code = (
        "import sys, fsspec\n"
        "fs = fsspec.filesystem('shm')\n"
        "assert 'shmstore' not in sys.modules or type(fs).__module__ == 'shmstore._fs'\n"
        "with fsspec.open('shm://reg/hello.txt', 'wb') as f:\n"
        "    f.write(b'from a child')\n"
        "print(type(fs).__module__, type(fs).__name__, fs.root)\n"
    )
    out = run_python(code).stdout.split()
    assert out == ["shmstore._fs", "SharedMemoryFileSystem", str(shm_root)]
    assert SharedMemoryStore("reg").get_sync("hello.txt").to_bytes() == b"from a child"


def test_public_name_and_protocol(fs: SharedMemoryFileSystem, shm_root: Path) -> None:
    assert shmstore.SharedMemoryFileSystem is SharedMemoryFileSystem
    assert isinstance(fs, SharedMemoryFileSystem)
    assert fs.async_impl
    assert fs.root == str(shm_root)
    assert fsspec.get_filesystem_class("shm") is SharedMemoryFileSystem


def test_same_segments_as_the_store(fs: SharedMemoryFileSystem) -> None:
    fs.pipe_file("shm://both/a/b", b"written by fs")
    store = SharedMemoryStore("both")
    assert store.get_sync("a/b").to_bytes() == b"written by fs"
    store.set_sync("c/d", default_buffer_prototype().buffer.from_bytes(b"written by store"))
    assert fs.cat_file("shm://both/c/d") == b"written by store"
    assert sorted(fs.find("both")) == ["both/a/b", "both/c/d"]
    # the namespace directory is a plain layout: key a/b is the file a/b
    assert (Path(store.path) / "a" / "b").read_bytes() == b"written by fs"


def test_ls_root_lists_namespaces_only(fs: SharedMemoryFileSystem, shm_root: Path) -> None:
    fs.pipe_file("ns1/k", b"1")
    fs.mkdir("ns2")
    (shm_root / "array-file").write_bytes(b"a named array, not a namespace")
    (shm_root / "plain-dir").mkdir()
    (shm_root / ".shmstore-new.123.abc").mkdir()
    (shm_root / ".shmstore-new.123.abc" / ".shmstore").mkdir()
    assert fs.ls("", detail=False) == ["ns1", "ns2"]
    assert fs.ls("/", detail=False) == ["ns1", "ns2"]
    assert fs.ls("shm://", detail=True) == [
        {"name": "ns1", "size": 0, "type": "directory"},
        {"name": "ns2", "size": 0, "type": "directory"},
    ]
    assert not fs.exists("plain-dir")
    assert not fs.exists("array-file")


def test_ls_info_exists(fs: SharedMemoryFileSystem) -> None:
    fs.pipe({"ns/zarr.json": b"{}", "ns/t/c/0": b"x" * 10, "ns/t/zarr.json": b"{}"})
    assert fs.ls("ns", detail=False) == ["ns/t", "ns/zarr.json"]  # never .shmstore
    assert fs.ls("shm://ns/t/", detail=False) == ["ns/t/c", "ns/t/zarr.json"]
    listing = {d["name"]: d for d in fs.ls("ns/t")}
    assert listing["ns/t/c"]["type"] == "directory"
    assert listing["ns/t/zarr.json"]["type"] == "file"
    assert fs.ls("ns/t/c/0", detail=False) == ["ns/t/c/0"]
    info = fs.info("ns/t/c/0")
    assert (info["name"], info["size"], info["type"]) == ("ns/t/c/0", 10, "file")
    assert fs.info("ns")["type"] == "directory"
    assert fs.info("")["type"] == "directory"
    assert fs.isdir("ns/t") and fs.isdir("ns") and not fs.isfile("ns/t")
    assert fs.isfile("ns/t/c/0") and fs.size("ns/t/c/0") == 10
    assert fs.exists("ns/t/c") and not fs.exists("ns/t/nope")
    assert not fs.exists("ns/.shmstore") and not fs.exists("ns/.shmstore/meta.json")
    assert not fs.exists("nons") and not fs.exists("nons/key")
    assert fs.find("ns") == ["ns/t/c/0", "ns/t/zarr.json", "ns/zarr.json"]
    assert fs.find("ns/t/c/0") == ["ns/t/c/0"]
    assert fs.find("ns", withdirs=True) == [
        "ns",
        "ns/t",
        "ns/t/c",
        "ns/t/c/0",
        "ns/t/zarr.json",
        "ns/zarr.json",
    ]
    assert fs.find("ns", maxdepth=1) == ["ns/zarr.json"]
    assert fs.glob("ns/t/*") == ["ns/t/c", "ns/t/zarr.json"]
    assert fs.du("ns") == 14
    assert fs.modified("ns/t/c/0").timestamp() == pytest.approx(info["mtime"])
    with pytest.raises(FileNotFoundError):
        fs.info("ns/missing")
    with pytest.raises(FileNotFoundError):
        fs.ls("ns/missing")


def test_cat_file_ranges_and_types(fs: SharedMemoryFileSystem) -> None:
    data = bytes(range(100))
    fs.pipe_file("ns/r", data)
    assert fs.cat_file("ns/r") == data
    assert type(fs.cat_file("ns/r")) is bytes
    for start, end in [
        (10, 20),
        (None, 5),
        (95, None),
        (-5, None),
        (10, -10),
        (90, 200),
        (150, 160),
    ]:
        got = fs.cat_file("ns/r", start=start, end=end)
        assert type(got) is bytes
        assert got == data[start:end]
    assert fs.cat("ns/r") == data
    assert fs.cat(["ns/r"]) == {"ns/r": data}
    assert fs.cat_ranges(["ns/r", "ns/r"], [0, 50], [2, 52]) == [data[0:2], data[50:52]]
    assert all(type(v) is bytes for v in fs.cat_ranges(["ns/r"], [0], [2]))
    assert fs.head("ns/r", 3) == data[:3]
    assert fs.tail("ns/r", 3) == data[-3:]
    assert fs.read_block("ns/r", 10, 5) == data[10:15]


def test_async_cat_file_is_a_zero_copy_read_only_view(shm_root: Path) -> None:
    fs = fsspec.filesystem("shm", asynchronous=True)
    fs.pipe_file("ns/big", np.arange(1 << 16, dtype="u1").tobytes())

    async def read() -> tuple[Any, Any, list[Any]]:
        whole = await fs._cat_file("ns/big")
        part = await fs._cat_file("ns/big", start=10, end=20)
        ranges = await fs._cat_ranges(["ns/big", "ns/nope"], [0, 0], [4, 4])
        return whole, part, ranges

    whole, part, ranges = asyncio.run(read())
    assert isinstance(whole, memoryview) and whole.readonly
    # the view maps the segment itself: a second read returns the same mapping
    again = asyncio.run(fs._cat_file("ns/big"))
    assert np.shares_memory(np.frombuffer(whole, "u1"), np.frombuffer(again, "u1"))
    assert bytes(part) == bytes(range(10, 20))
    assert bytes(ranges[0]) == bytes(range(4))
    assert isinstance(ranges[1], FileNotFoundError)
    with pytest.raises(TypeError):
        whole[0] = 1  # read-only


def test_pipe_modes_and_bad_keys(fs: SharedMemoryFileSystem) -> None:
    fs.pipe_file("ns/k", b"1")
    with pytest.raises(FileExistsError, match="'k'"):
        fs.pipe_file("ns/k", b"2", mode="create")
    assert fs.cat_file("ns/k") == b"1"
    fs.pipe_file("ns/k", memoryview(b"22"))
    assert fs.cat_file("ns/k") == b"22"
    for bad in ["ns/a/../b", "ns/.shmstore/meta.json", "ns/a//b"]:
        with pytest.raises(ValueError, match="key"):
            fs.pipe_file(bad, b"x")
    with pytest.raises(ValueError, match=r"\.hidden"):
        fs.pipe_file(".hidden/k", b"x")
    with pytest.raises(IsADirectoryError, match="namespace"):
        fs.pipe_file("ns", b"x")
    fs.pipe_file("ns/d/e", b"x")
    with pytest.raises(IsADirectoryError):
        fs.pipe_file("ns/d", b"x")
    with pytest.raises(IsADirectoryError):
        fs.cat_file("ns/d")
    with pytest.raises(NotADirectoryError):
        fs.pipe_file("ns/k/under-a-key", b"x")


def test_missing_namespace_on_read_names_it(fs: SharedMemoryFileSystem) -> None:
    for call in (
        lambda: fs.cat_file("shm://nowhere/k"),
        lambda: fs.ls("nowhere"),
        lambda: fs.info("nowhere"),
        lambda: fs.open("shm://nowhere/k", "rb"),
        lambda: fs.rm("nowhere/k"),
        lambda: zarr.open_array("shm://nowhere/t", mode="r"),
        lambda: zarr.open_group("shm://nowhere", mode="r"),
        lambda: shmstore.open_store("shm://nowhere", read_only=True),
    ):
        with pytest.raises(FileNotFoundError, match="nowhere"):
            call()
    assert "nowhere" not in fs.ls("")  # reading never creates it


def test_open_read_is_seekable_snapshot(fs: SharedMemoryFileSystem) -> None:
    fs.pipe_file("ns/f", b"0123456789")
    with fs.open("shm://ns/f", "rb") as f:
        assert f.read(3) == b"012"
        fs.pipe_file("ns/f", b"replaced")  # the open file keeps its snapshot
        f.seek(-2, 2)
        assert f.read() == b"89"
        f.seek(4)
        assert f.tell() == 4
        assert f.read(2) == b"45"
        buf = bytearray(3)
        assert f.readinto(buf) == 3 and bytes(buf) == b"678"
    with fs.open("ns/f", "r") as f:  # text mode
        assert f.read() == "replaced"
    with fsspec.open("shm://ns/f", "rb", compression=None) as f:
        assert f.read() == b"replaced"


def test_open_write_is_atomic_on_close(fs: SharedMemoryFileSystem) -> None:
    fs.pipe_file("ns/w", b"old")
    reader = "import fsspec, sys\nprint(fsspec.filesystem('shm').cat_file('ns/w').decode(), end='')"
    with fs.open("ns/w", "wb", block_size=4) as f:
        f.write(b"new-")
        f.write(b"value spanning blocks")
        # an unrelated process still sees the old value while the file is open
        assert run_python(reader).stdout == "old"
        assert fs.cat_file("ns/w") == b"old"
    assert run_python(reader).stdout == "new-value spanning blocks"
    with fs.open("ns/w", "ab") as f:
        f.write(b"!")
    assert fs.cat_file("ns/w") == b"new-value spanning blocks!"
    with pytest.raises(FileExistsError):
        fs.open("ns/w", "xb")
    with fs.open("ns/x", "xb") as f:
        f.write(b"exclusive")
    assert fs.cat_file("ns/x") == b"exclusive"
    with fs.open("ns/t.txt", "w") as f:
        f.write("text")
    assert fs.cat_file("ns/t.txt") == b"text"
    # a failed write leaves nothing behind, not even a temporary file
    with pytest.raises(RuntimeError), fs.open("ns/fail", "wb") as f:
        f.write(b"partial")
        raise RuntimeError("boom")
    assert not fs.exists("ns/fail")
    ns_dir = Path(fs.root) / "ns" / ".shmstore" / "state" / "tmp"
    assert list(ns_dir.iterdir()) == []


def test_transaction_commits_at_the_end(fs: SharedMemoryFileSystem) -> None:
    with fs.transaction:
        with fs.open("ns/tx", "wb") as f:
            f.write(b"in a transaction")
        assert not fs.exists("ns/tx")
    assert fs.cat_file("ns/tx") == b"in a transaction"


def test_rm(fs: SharedMemoryFileSystem) -> None:
    fs.pipe({"ns/a/b/c": b"1", "ns/a/b/d": b"2", "ns/a/e": b"3", "ns/f": b"4"})
    fs.rm("ns/a/b/c")
    assert fs.find("ns") == ["ns/a/b/d", "ns/a/e", "ns/f"]
    with pytest.raises(FileNotFoundError):
        fs.rm("ns/a/b/c")
    with pytest.raises(IsADirectoryError, match="recursive"):
        fs.rm("ns/a")
    fs.rm("ns/a", recursive=True)
    assert fs.find("ns") == ["ns/f"]
    assert not fs.exists("ns/a")  # implicit directories go with their keys
    fs.pipe({"ns/g/h/i": b"5", "ns/g/j": b"6"})
    fs.rm("ns/g", recursive=True, maxdepth=1)
    assert fs.find("ns") == ["ns/f", "ns/g/h/i"]
    fs.rm("ns/g/*", recursive=True)
    assert fs.find("ns") == ["ns/f"]
    with pytest.raises(IsADirectoryError, match="recursive=True"):
        fs.rm("ns")
    fs.rm("shm://ns", recursive=True)  # clears the namespace, which stays
    assert fs.ls("", detail=False) == ["ns"] and fs.find("ns") == []
    fs.rm("ns")  # an empty namespace is destroyed
    assert fs.ls("") == []
    with pytest.raises(ValueError, match="every namespace"):
        fs.rm("", recursive=True)


def test_mkdir_namespace_and_implicit_directories(fs: SharedMemoryFileSystem) -> None:
    fs.mkdir("made")
    assert fs.ls("", detail=False) == ["made"]
    assert SharedMemoryStore("made", read_only=True).namespace == "made"
    with pytest.raises(FileExistsError, match="made"):
        fs.mkdir("made")
    fs.makedirs("made", exist_ok=True)
    with pytest.raises(FileExistsError):
        fs.makedirs("made")
    # inside a namespace, directories are implicit
    fs.mkdir("made/sub/dir")
    assert not fs.exists("made/sub")
    fs.pipe_file("made/sub/dir/k", b"x")
    assert fs.isdir("made/sub") and fs.isdir("made/sub/dir")
    fs.rm_file("made/sub/dir/k")
    assert not fs.exists("made/sub")
    fs.pipe_file("made2/k", b"x")
    with pytest.raises(FileExistsError):
        fs.makedirs("made2/k", exist_ok=True)  # a key, not a directory
    # mkdir inside a missing namespace creates it unless told not to
    with pytest.raises(FileNotFoundError, match="later"):
        fs.mkdir("later/dir", create_parents=False)
    fs.mkdir("later/dir")
    assert fs.isdir("later")
    fs.rmdir("later")
    assert not fs.exists("later")


def test_root_from_storage_options(tmp_path: Path, shm_root: Path) -> None:
    other = shm_root / "other-root"
    other.mkdir()
    with fsspec.open("shm://ns/k", "wb", root=str(other)) as f:
        f.write(b"elsewhere")
    assert (other / "ns" / "k").read_bytes() == b"elsewhere"
    assert not fsspec.filesystem("shm").exists("ns")
    fs = fsspec.filesystem("shm", root=other)
    assert fs.root == str(other)
    z = zarr.create_array(
        "shm://zns/t", shape=(4,), chunks=(2,), dtype="i4", storage_options={"root": str(other)}
    )
    z[:] = [1, 2, 3, 4]
    got = zarr.open_array("shm://zns/t", mode="r", storage_options={"root": str(other)})
    assert got[:].tolist() == [1, 2, 3, 4]
    assert fs.ls("", detail=False) == ["ns", "zns"]


def test_instances_follow_the_environment(shm_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = fsspec.filesystem("shm")
    assert fsspec.filesystem("shm") is a  # fsspec's instance cache
    other = shm_root / "env-root"
    other.mkdir()
    monkeypatch.setenv("SHMSTORE_ROOT", str(other))
    b = fsspec.filesystem("shm")
    assert b is not a and b.root == str(other)


def test_pickle_carries_the_root_not_the_data(fs: SharedMemoryFileSystem, shm_root: Path) -> None:
    fs.pipe_file("ns/big", b"x" * (1 << 20))
    blob = pickle.dumps(fs)
    assert len(blob) < 1000
    with fs.open("ns/big", "rb") as f:
        assert len(pickle.dumps(f)) < 2000
    code = (
        "import pickle, sys\n"
        "fs = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
        "print(fs.root, fs.exists('ns/big'))\n"
    )
    # the child's own $SHMSTORE_ROOT points elsewhere (another host's shared
    # memory): a root left to the environment is resolved there...
    other = shm_root / "other-host"
    other.mkdir()
    out = run_python(code, blob.hex(), env={"SHMSTORE_ROOT": str(other)})
    assert out.stdout.split() == [str(other), "False"]
    # ...and a root given explicitly travels as given
    explicit = pickle.dumps(SharedMemoryFileSystem(root=shm_root))
    out = run_python(code, explicit.hex(), env={"SHMSTORE_ROOT": str(other)})
    assert out.stdout.split() == [str(shm_root), "True"]


def test_unrelated_process_reads_through_fsspec(fs: SharedMemoryFileSystem) -> None:
    arr = np.arange(1000, dtype="f8")
    fs.pipe_file("ns/arr", arr.tobytes())
    code = (
        "import fsspec, numpy as np\n"
        "with fsspec.open('shm://ns/arr', 'rb') as f:\n"
        "    print(np.frombuffer(f.read(), 'f8').sum())\n"
    )
    assert float(run_python(code).stdout) == arr.sum()


def _files(top: Path) -> dict[str, bytes]:
    return {
        p.relative_to(top).as_posix(): p.read_bytes()
        for p in top.rglob("*")
        if p.is_file() and not p.is_symlink() and ".shmstore" not in p.parts
    }


def test_tiered_namespace_keeps_capacity_and_shows_spilled_keys(
    shm_root: Path, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    store = SharedMemoryStore("tier", capacity=1000, spill=spill)
    fs = fsspec.filesystem("shm")
    fs.pipe_file("tier/a", b"a" * 600)  # fits
    fs.pipe_file("tier/d/b", b"b" * 600)  # does not: spills
    assert _files(Path(store.path)) == {"a": b"a" * 600}
    assert _files(spill) == {"d/b": b"b" * 600}
    assert store.get_sync("d/b").to_bytes() == b"b" * 600
    # the spilled key is a file of the filesystem like any other
    assert fs.cat_file("tier/d/b") == b"b" * 600
    assert fs.cat_file("tier/d/b", start=598) == b"bb"
    assert fs.ls("tier", detail=False) == ["tier/a", "tier/d"]
    assert fs.info("tier/d/b")["size"] == 600 and fs.isdir("tier/d")
    assert fs.find("tier") == ["tier/a", "tier/d/b"]
    with fs.open("tier/d/b", "rb") as f:
        f.seek(599)
        assert f.read() == b"b"
    assert asyncio.run(_acat(fs.root, "tier/d/b")) == b"b" * 600
    # the store's spilled writes show through the filesystem, and the reverse
    store.set_sync("c", default_buffer_prototype().buffer.from_bytes(b"c" * 600))
    assert fs.cat_file("tier/c") == b"c" * 600
    fs.rm_file("tier/d/b")
    assert store.get_sync("d/b") is None and "d/b" not in _files(spill)
    assert not fs.exists("tier/d")
    # the URL route over a tiered namespace: an array larger than the capacity
    data = np.arange(1000, dtype="f8")
    z = zarr.create_array("shm://tier/z", shape=(1000,), chunks=(50,), dtype="f8", compressors=None)
    z[:] = data
    assert any(k.startswith("z/c/") for k in _files(spill))
    assert np.array_equal(zarr.open_array("shm://tier/z", mode="r")[:], data)
    assert np.array_equal(zarr.open_array(store, path="z", mode="r")[:], data)
    shm_bytes = sum(len(v) for v in _files(Path(store.path)).values())
    assert shm_bytes <= 1000
    fs.rm("tier/z", recursive=True)
    assert not any(k.startswith("z/") for k in _files(spill))
    assert not any(k.startswith("z/") for k in _files(Path(store.path)))


async def _acat(root: str, path: str) -> bytes:
    fs = fsspec.filesystem("shm", root=root, asynchronous=True)
    return bytes(await fs._cat_file(path))


# --------------------------------------------------------------------------
# zarr URLs


def test_zarr_url_round_trip_and_direct_store(shm_root: Path) -> None:
    data = np.arange(200 * 300, dtype="f4").reshape(200, 300)
    z = zarr.create_array("shm://clim/t", shape=data.shape, chunks=(64, 64), dtype="f4")
    assert type(z.store).__name__ == "FsspecStore"
    z[:] = data
    assert np.array_equal(zarr.open_array("shm://clim/t", mode="r")[:], data)
    # the same bytes through the direct store
    store = shmstore.open_store("shm://clim")
    assert isinstance(store, SharedMemoryStore)
    assert np.array_equal(zarr.open_array(store, path="t", mode="r")[:], data)
    # and the reverse: written directly, read by URL
    zarr.create_array(store, name="u", shape=(10,), chunks=(3,), dtype="i8")[:] = np.arange(10)
    assert zarr.open_array("shm://clim/u")[:].tolist() == list(range(10))


@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
def test_zarr_groups_and_consolidated(shm_root: Path) -> None:
    g = zarr.open_group("shm://grp", mode="w")
    g.attrs["title"] = "shared"
    a = g.create_array("a", shape=(8, 8), chunks=(4, 4), dtype="i2")
    a[:] = np.arange(64).reshape(8, 8)
    sub = g.create_group("sub")
    sub.create_array("b", shape=(5,), chunks=(5,), dtype="f8")[:] = 0.5
    zarr.consolidate_metadata("shm://grp")
    cg = zarr.open_consolidated("shm://grp")
    assert cg.attrs["title"] == "shared"
    assert sorted(k for k, _ in cg.members(max_depth=None)) == ["a", "sub", "sub/b"]
    assert cg["a"][:].sum() == np.arange(64).sum()
    assert cg["sub/b"][:].tolist() == [0.5] * 5
    plain = zarr.open_group("shm://grp", mode="r")
    assert sorted(plain.array_keys()) == ["a"]
    assert sorted(plain.group_keys()) == ["sub"]
    # mode="w" clears the whole namespace, nested keys included
    zarr.open_group("shm://grp", mode="w")
    assert fsspec.filesystem("shm").find("grp") == ["grp/zarr.json"]


def test_zarr_sharded_partial_reads_by_url(shm_root: Path) -> None:
    data = np.arange(64 * 64, dtype="i4").reshape(64, 64)
    z = zarr.create_array(
        "shm://shard/t", shape=data.shape, chunks=(8, 8), shards=(32, 32), dtype="i4"
    )
    z[:] = data
    r = zarr.open_array("shm://shard/t", mode="r")
    assert np.array_equal(r[3:17, 40:63], data[3:17, 40:63])


def test_fsspec_store_hands_zarr_the_mapping(shm_root: Path) -> None:
    """zarr's FsspecStore.get wraps what _cat_file returns as it is (PITFALLS 11)."""
    from zarr.core.sync import sync
    from zarr.storage import FsspecStore

    fs = fsspec.filesystem("shm")
    fs.pipe_file("zc/k", bytes(range(256)) * 16)
    store = FsspecStore.from_url("shm://zc", read_only=True)
    proto = default_buffer_prototype()
    a = sync(store.get("k", proto)).as_numpy_array()
    b = sync(store.get("k", proto)).as_numpy_array()
    assert np.shares_memory(a, b) and not a.flags.writeable
    part = sync(store.get("k", proto, byte_range=RangeByteRequest(16, 32))).as_numpy_array()
    assert part.tobytes() == bytes(range(16, 32)) and np.shares_memory(part, a)


def test_sync_instance_made_async_by_zarr(shm_root: Path) -> None:
    """zarr turns a synchronous instance into an async one (JSON on 3.1, arguments on 3.4)."""
    from zarr.storage import FsspecStore

    (shm_root / "r2").mkdir()
    fs = fsspec.filesystem("shm", root=str(shm_root / "r2"))
    clone = fsspec.AbstractFileSystem.from_json(fs.to_json())
    assert clone.root == fs.root
    fs.pipe_file("m/zarr.json", b"{}")
    store = FsspecStore.from_mapper(fs.get_mapper("m"))
    assert store.fs.asynchronous and store.fs.root == fs.root
    zarr.create_array(store, name="a", shape=(3,), dtype="i1")[:] = [1, 2, 3]
    assert fs.find("m/a") == ["m/a/c/0", "m/a/zarr.json"]


def test_import_shmstore_stays_light(shm_root: Path) -> None:
    code = (
        "import sys, shmstore\n"
        "heavy = [m for m in ('fsspec', 'dask', 'zarr') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert {'SharedMemoryFileSystem', 'open_store', 'persist'} <= set(dir(shmstore))\n"
        "assert {'SharedMemoryFileSystem', 'open_store', 'persist'} <= set(shmstore.__all__)\n"
        "print(shmstore.persist.__module__, shmstore.open_store.__module__)\n"
    )
    assert run_python(code).stdout.split() == ["shmstore._dask", "shmstore._urls"]


def test_open_store(shm_root: Path) -> None:
    store = shmstore.open_store("shm://os", root=shm_root)
    assert isinstance(store, SharedMemoryStore) and store.namespace == "os"
    assert not store.read_only
    ro = shmstore.open_store("shm://os/", read_only=True)
    assert ro.read_only and ro.root == str(shm_root)
    with pytest.raises(ValueError, match="path='t'"):
        shmstore.open_store("shm://os/t")
    with pytest.raises(ValueError, match="shm://"):
        shmstore.open_store("s3://bucket")
    with pytest.raises(ValueError, match="namespace"):
        shmstore.open_store("shm://")


def test_no_leak_into_dev_shm(fs: SharedMemoryFileSystem, shm_root: Path) -> None:
    fs.pipe_file("leak/k", b"x")
    assert os.path.isdir(shm_root / "leak")
    assert not os.path.exists(os.path.join("/dev/shm", "leak"))
