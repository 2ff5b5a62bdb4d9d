"""Every route sees the same keys: store, shm:// URLs, fsspec, Dask, persist, plain Zarr.

* A tiered namespace reads identically through every route, and ``persist``
  into it returns the values written.
* A store or filesystem opened before a namespace was destroyed and re-created
  by another process acts on the new namespace, in every method.
* A store opened before a namespace was destroyed, and not re-created, raises
  ``FileNotFoundError`` naming it on every read and write, and never
  re-creates it.
* zarr's own ``LocalStore`` on a namespace directory reads spilled chunks (or
  fails loudly where the spill tier is not a local directory), and lists the
  namespace without a warning.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import select
import subprocess
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import pytest
import zarr
from conftest import run_python
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

import shmstore
from shmstore import SharedMemoryStore

PROTO = default_buffer_prototype()


def buf(data: bytes) -> Buffer:
    return PROTO.buffer.from_bytes(data)


async def _collect(it: Any) -> list[Any]:
    return [x async for x in it]


def collect(it: Any) -> list[Any]:
    """The items of an async iterator (a store listing), sorted."""
    return sorted(sync(_collect(it)))


def files(top: Path) -> dict[str, bytes]:
    """Every regular file below *top* (links not followed), as key -> bytes."""
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel = Path(dirpath).relative_to(top)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d != ".shmstore"]
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink() and not name.endswith(".partial"):
                out[(rel / name).as_posix()] = path.read_bytes()
    return out


def chunk_keys(keys: Any, array: str) -> set[str]:
    return {k for k in keys if k.startswith(f"{array}/c/")}


# --------------------------------------------------------------------------
# persist into a tiered namespace, and one tiered namespace through every route

EXPECTED_SUM = 49995000.0  # sum(range(10_000))


@pytest.fixture
def tiered(shm_root: Path, tmp_path: Path) -> tuple[SharedMemoryStore, Path]:
    """Namespace "t": 4 KiB of shared memory, then a spill directory."""
    spill = tmp_path / "spill"
    return SharedMemoryStore("t", capacity=4096, spill=spill), spill


def test_persist_dask_array_into_tiered_namespace(
    tiered: tuple[SharedMemoryStore, Path],
) -> None:
    _, spill = tiered
    y = shmstore.persist(da.arange(10_000, chunks=1000, dtype="f8"), "shm://t/x")
    assert y.sum().compute() == EXPECTED_SUM
    np.testing.assert_array_equal(y.compute(), np.arange(10_000, dtype="f8"))
    # each 8000-byte chunk is larger than the whole shared-memory tier
    assert chunk_keys(files(spill), "x") == {f"x/c/{i}" for i in range(10)}


def test_persist_numpy_array_into_tiered_namespace(
    tiered: tuple[SharedMemoryStore, Path],
) -> None:
    _, spill = tiered
    data = np.arange(10_000, dtype="f8")
    y = shmstore.persist(data, "shm://t/n", chunks=1000)
    assert y.sum().compute() == EXPECTED_SUM
    np.testing.assert_array_equal(y.compute(), data)
    assert chunk_keys(files(spill), "n") == {f"n/c/{i}" for i in range(10)}
    # an unrelated process, by name alone
    code = "import dask.array as da; print(da.from_zarr('shm://t/n').sum().compute())"
    assert float(run_python(code).stdout) == EXPECTED_SUM


_DIGESTS = """
import hashlib, json, asyncio, shmstore
store = shmstore.SharedMemoryStore("t", read_only=True)
async def keys():
    return [k async for k in store.list()]
print(json.dumps({k: hashlib.sha256(store.get_sync(k).to_bytes()).hexdigest()
                  for k in asyncio.run(keys())}))
"""


def test_tiered_namespace_reads_identically_on_every_route(
    shm_root: Path, tiered: tuple[SharedMemoryStore, Path]
) -> None:
    store, spill = tiered
    x = np.arange(10_000, dtype="f8")
    shmstore.persist(da.from_array(x, chunks=1000), "shm://t/x")  # every chunk spills
    y = np.arange(256, dtype="f8") * 0.5
    zy = zarr.create_array(
        store, name="y", shape=y.shape, chunks=(64,), dtype="f8", fill_value=-1, compressors=None
    )
    zy[:] = y  # 4 chunks of 512 bytes: these fit
    # both tiers hold chunks
    assert chunk_keys(files(spill), "x") == {f"x/c/{i}" for i in range(10)}
    assert chunk_keys(files(Path(store.path)), "y")

    keys = collect(store.list())
    assert chunk_keys(keys, "x") == {f"x/c/{i}" for i in range(10)}
    assert chunk_keys(keys, "y") == {f"y/c/{i}" for i in range(4)}
    expected = {k: store.get_sync(k).to_bytes() for k in keys}

    # zarr's FsspecStore over shm://
    url_store = FsspecStore.from_url(
        "shm://t", storage_options={"root": str(shm_root)}, read_only=True
    )
    assert collect(url_store.list()) == keys
    assert {k: sync(url_store.get(k, PROTO)).to_bytes() for k in keys} == expected

    # fsspec
    fs = fsspec.filesystem("shm")
    assert fs.find("t") == [f"t/{k}" for k in keys]
    assert sorted(fs.ls("t", detail=False)) == sorted({f"t/{k.split('/')[0]}" for k in keys})
    assert sorted(fs.ls("t/x/c", detail=False)) == sorted(f"t/{k}" for k in chunk_keys(keys, "x"))
    assert {k: fs.cat_file(f"t/{k}") for k in keys} == expected
    assert {k: fs.info(f"t/{k}")["size"] for k in keys} == {k: len(v) for k, v in expected.items()}
    assert fs.du("t") == sum(len(v) for v in expected.values())

    # arrays: the store, a URL, dask
    for name, data in (("x", x), ("y", y)):
        np.testing.assert_array_equal(zarr.open_array(store, path=name, mode="r")[:], data)
        np.testing.assert_array_equal(zarr.open_array(f"shm://t/{name}", mode="r")[:], data)
        np.testing.assert_array_equal(da.from_zarr(f"shm://t/{name}").compute(), data)

    # an unrelated process that opens the namespace by name alone
    digests = json.loads(run_python(_DIGESTS).stdout)
    assert digests == {k: hashlib.sha256(v).hexdigest() for k, v in expected.items()}


# --------------------------------------------------------------------------
# Another process: destroys and re-creates namespaces while this one holds
# handles. One unrelated Python process (not a fork) serves the whole module,
# so each test pays a pipe round trip rather than an interpreter start.

_AGENT = r"""
import asyncio, json, sys
import shmstore
from zarr.core.buffer import default_buffer_prototype

def recreate(root, ns, tiering, keys):
    shmstore.SharedMemoryStore(ns, root=root).destroy()
    store = shmstore.SharedMemoryStore(ns, root=root, **tiering)
    for k, v in keys.items():
        store.set_sync(k, default_buffer_prototype().buffer.from_bytes(bytes.fromhex(v)))

def destroy(root, ns):
    shmstore.SharedMemoryStore(ns, root=root).destroy()

def snapshot(root, ns):
    store = shmstore.SharedMemoryStore(ns, root=root, read_only=True)
    async def keys():
        return [k async for k in store.list()]
    return {k: store.get_sync(k).to_bytes().hex() for k in asyncio.run(keys())}

OPS = {"recreate": recreate, "destroy": destroy, "snapshot": snapshot}
for line in sys.stdin:
    request = json.loads(line)
    try:
        reply = {"ok": OPS[request.pop("op")](**request)}
    except Exception as e:
        reply = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(reply), flush=True)
"""


class Agent:
    """An unrelated Python process that runs shmstore calls on request."""

    def __init__(self, log: Path) -> None:
        self._log = log.open("w")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _AGENT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=os.environ.copy(),
        )
        self.log = log

    def call(self, op: str, **kwargs: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self._proc.stdin.flush()
        ready, _, _ = select.select([self._proc.stdout], [], [], 120)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            raise AssertionError(f"the other process did not answer {op}: {self.log.read_text()}")
        reply = json.loads(line)
        if "error" in reply:
            raise AssertionError(f"{op} in the other process failed: {reply['error']}")
        return reply["ok"]

    def recreate(
        self, root: Path, ns: str, tiering: dict[str, Any], keys: dict[str, bytes]
    ) -> None:
        hexed = {k: v.hex() for k, v in keys.items()}
        self.call("recreate", root=str(root), ns=ns, tiering=tiering, keys=hexed)

    def destroy(self, root: Path, ns: str) -> None:
        self.call("destroy", root=str(root), ns=ns)

    def snapshot(self, root: Path, ns: str) -> dict[str, bytes]:
        """Every key and value of *ns*, read by a fresh store in the other process."""
        return {
            k: bytes.fromhex(v) for k, v in self.call("snapshot", root=str(root), ns=ns).items()
        }

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=60)
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._log.close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = Agent(tmp_path_factory.mktemp("agent") / "stderr.log")
    try:
        yield a
    finally:
        a.close()


NS = "matrix"  # distinctive, so that an error message naming it is recognisable
CAPACITY = 16  # tiered namespaces: some of the values below fit, the rest spill
OLD = {"old/a": b"old a", "old/b/c": b"old b/c", "shared": b"old shared"}
NEW = {
    "new/a": b"new a value",  # 11 bytes: fits
    "new/b/c": b"new b/c value",  # spills
    "new/b/d": b"new b/d",  # spills
    "shared": b"new shared value",  # spills
}


def _tiering(kind: str, spill: Path) -> dict[str, Any]:
    return {"capacity": CAPACITY, "spill": str(spill)} if kind == "tiered" else {}


@dataclass
class Recreated:
    """A store and a filesystem opened (and used) before namespace NS was re-created."""

    store: SharedMemoryStore
    fs: Any
    agent: Agent
    root: Path

    def snapshot(self) -> dict[str, bytes]:
        return self.agent.snapshot(self.root, NS)


def _open_old(kind: str, tmp_path: Path) -> SharedMemoryStore:
    """Create NS with the OLD keys; return a store opened on it by name and used."""
    creator = SharedMemoryStore(NS, **_tiering(kind, tmp_path / "spill-old"))
    for k, v in OLD.items():
        creator.set_sync(k, buf(v))
    store = SharedMemoryStore(NS)
    assert {k: store.get_sync(k).to_bytes() for k in OLD} == OLD
    assert collect(store.list()) == sorted(OLD)
    return store


@pytest.fixture(params=["plain", "tiered"])
def recreated(
    request: pytest.FixtureRequest, shm_root: Path, tmp_path: Path, agent: Agent
) -> Recreated:
    kind = request.param
    store = _open_old(kind, tmp_path)
    fs = fsspec.filesystem("shm")
    assert fs.cat_file(f"{NS}/shared") == OLD["shared"]
    assert fs.find(NS) == [f"{NS}/{k}" for k in sorted(OLD)]
    assert sorted(fs.ls(NS, detail=False)) == [f"{NS}/old", f"{NS}/shared"]
    # The other process destroys NS and makes a new one of the same name, with
    # other keys (and, tiered, its own spill directory).
    spill_new = tmp_path / "spill-new"
    agent.recreate(shm_root, NS, _tiering(kind, spill_new), NEW)
    if kind == "tiered":
        assert set(files(spill_new)) >= {"new/b/c", "shared"}
    return Recreated(store, fs, agent, shm_root)


def _without(*keys: str) -> dict[str, bytes]:
    return {k: v for k, v in NEW.items() if k not in keys}


NEW_PREFIXED = sorted(k for k in NEW if k.startswith("new/"))

# What each method of the store opened before must do on the new namespace.
STORE_CHECKS: dict[str, Callable[[Recreated], None]] = {}
FS_CHECKS: dict[str, Callable[[Recreated], None]] = {}


def _store_check(fn: Callable[[Recreated], None]) -> Callable[[Recreated], None]:
    STORE_CHECKS[fn.__name__.removeprefix("_store_")] = fn
    return fn


def _fs_check(fn: Callable[[Recreated], None]) -> Callable[[Recreated], None]:
    FS_CHECKS[fn.__name__.removeprefix("_fs_")] = fn
    return fn


@_store_check
def _store_get(r: Recreated) -> None:
    s = r.store
    assert sync(s.get("shared", PROTO)).to_bytes() == NEW["shared"]
    assert sync(s.get("new/a", PROTO)).to_bytes() == NEW["new/a"]
    assert sync(s.get("new/b/c", PROTO)).to_bytes() == NEW["new/b/c"]
    part = sync(s.get("new/b/c", PROTO, byte_range=RangeByteRequest(4, 7)))
    assert part.to_bytes() == NEW["new/b/c"][4:7]
    assert sync(s.get("old/a", PROTO)) is None


@_store_check
def _store_get_partial_values(r: Recreated) -> None:
    got = sync(
        r.store.get_partial_values(
            PROTO,
            [
                ("shared", RangeByteRequest(4, 10)),
                ("new/b/d", SuffixByteRequest(3)),
                ("new/a", None),
                ("old/b/c", None),
            ],
        )
    )
    assert [None if g is None else g.to_bytes() for g in got] == [
        NEW["shared"][4:10],
        NEW["new/b/d"][-3:],
        NEW["new/a"],
        None,
    ]


@_store_check
def _store_exists(r: Recreated) -> None:
    for key in NEW:
        assert sync(r.store.exists(key)), key
    for key in ("old/a", "old/b/c"):
        assert not sync(r.store.exists(key)), key


@_store_check
def _store_set(r: Recreated) -> None:
    sync(r.store.set("new/x", buf(b"written after")))
    sync(r.store.set("shared", buf(b"replaced")))
    assert r.snapshot() == {**NEW, "new/x": b"written after", "shared": b"replaced"}
    assert sync(r.store.get("new/x", PROTO)).to_bytes() == b"written after"


@_store_check
def _store_set_if_not_exists(r: Recreated) -> None:
    sync(r.store.set_if_not_exists("shared", buf(b"not written")))
    sync(r.store.set_if_not_exists("old/a", buf(b"fresh")))  # only in the old one
    assert r.snapshot() == {**NEW, "old/a": b"fresh"}


@_store_check
def _store_delete(r: Recreated) -> None:
    sync(r.store.delete("shared"))  # spilled, where tiered
    sync(r.store.delete("new/a"))  # in shared memory
    assert r.snapshot() == _without("shared", "new/a")
    assert sync(r.store.get("shared", PROTO)) is None


@_store_check
def _store_delete_dir(r: Recreated) -> None:
    sync(r.store.delete_dir("new/b"))
    assert r.snapshot() == _without("new/b/c", "new/b/d")


@_store_check
def _store_clear(r: Recreated) -> None:
    sync(r.store.clear())
    assert r.snapshot() == {}  # emptied, and still there


@_store_check
def _store_getsize(r: Recreated) -> None:
    for key, value in NEW.items():
        assert sync(r.store.getsize(key)) == len(value), key
    with pytest.raises(FileNotFoundError):
        sync(r.store.getsize("old/a"))


@_store_check
def _store_getsize_prefix(r: Recreated) -> None:
    assert sync(r.store.getsize_prefix("new")) == sum(len(NEW[k]) for k in NEW_PREFIXED)
    assert sync(r.store.getsize_prefix("new/b")) == len(NEW["new/b/c"]) + len(NEW["new/b/d"])
    assert sync(r.store.getsize_prefix("old")) == 0


@_store_check
def _store_list(r: Recreated) -> None:
    assert collect(r.store.list()) == sorted(NEW)


@_store_check
def _store_list_prefix(r: Recreated) -> None:
    assert collect(r.store.list_prefix("new/")) == NEW_PREFIXED
    assert collect(r.store.list_prefix("")) == sorted(NEW)
    assert collect(r.store.list_prefix("old/")) == []


@_store_check
def _store_list_dir(r: Recreated) -> None:
    assert collect(r.store.list_dir("")) == ["new", "shared"]
    assert collect(r.store.list_dir("new/b")) == ["c", "d"]
    assert collect(r.store.list_dir("old")) == []


# The synchronous surface: zarr 3.4 calls it itself; SharedMemoryStore has it
# on every zarr version.
@_store_check
def _store_get_sync(r: Recreated) -> None:
    assert r.store.get_sync("shared").to_bytes() == NEW["shared"]
    assert r.store.get_sync("new/a").to_bytes() == NEW["new/a"]
    got = r.store.get_sync("new/b/d", byte_range=RangeByteRequest(0, 3))
    assert got.to_bytes() == NEW["new/b/d"][:3]
    assert r.store.get_sync("old/a") is None


@_store_check
def _store_set_sync(r: Recreated) -> None:
    r.store.set_sync("new/x", buf(b"written after"))
    r.store.set_sync("new/a", buf(b"replaced"))
    assert r.snapshot() == {**NEW, "new/x": b"written after", "new/a": b"replaced"}


@_store_check
def _store_delete_sync(r: Recreated) -> None:
    r.store.delete_sync("shared")
    r.store.delete_sync("new/a")
    assert r.snapshot() == _without("shared", "new/a")


@pytest.mark.parametrize("method", sorted(STORE_CHECKS))
def test_store_method_follows_recreated_namespace(recreated: Recreated, method: str) -> None:
    STORE_CHECKS[method](recreated)


@_fs_check
def _fs_cat_file(r: Recreated) -> None:
    for key, value in NEW.items():
        assert r.fs.cat_file(f"{NS}/{key}") == value, key
    assert r.fs.cat_file(f"{NS}/shared", start=4, end=10) == NEW["shared"][4:10]
    with pytest.raises(FileNotFoundError):
        r.fs.cat_file(f"{NS}/old/a")


@_fs_check
def _fs_pipe_file(r: Recreated) -> None:
    r.fs.pipe_file(f"{NS}/new/x", b"piped after")
    r.fs.pipe_file(f"{NS}/shared", b"replaced")
    assert r.snapshot() == {**NEW, "new/x": b"piped after", "shared": b"replaced"}


@_fs_check
def _fs_info(r: Recreated) -> None:
    for key, value in NEW.items():
        info = r.fs.info(f"{NS}/{key}")
        assert (info["size"], info["type"]) == (len(value), "file"), key
    assert r.fs.info(f"{NS}/new/b")["type"] == "directory"
    for gone in ("old/a", "old"):
        with pytest.raises(FileNotFoundError):
            r.fs.info(f"{NS}/{gone}")


@_fs_check
def _fs_exists(r: Recreated) -> None:
    for path in [*NEW, "new", "new/b"]:
        assert r.fs.exists(f"{NS}/{path}"), path
    for path in ("old", "old/a", "old/b/c"):
        assert not r.fs.exists(f"{NS}/{path}"), path


@_fs_check
def _fs_ls(r: Recreated) -> None:
    assert sorted(r.fs.ls(NS, detail=False)) == [f"{NS}/new", f"{NS}/shared"]
    assert sorted(r.fs.ls(f"{NS}/new/b", detail=False)) == [f"{NS}/new/b/c", f"{NS}/new/b/d"]
    sizes = {d["name"]: d["size"] for d in r.fs.ls(f"{NS}/new/b", detail=True)}
    assert sizes == {f"{NS}/new/b/c": len(NEW["new/b/c"]), f"{NS}/new/b/d": len(NEW["new/b/d"])}
    with pytest.raises(FileNotFoundError):
        r.fs.ls(f"{NS}/old")


@_fs_check
def _fs_find(r: Recreated) -> None:
    assert r.fs.find(NS) == [f"{NS}/{k}" for k in sorted(NEW)]
    assert r.fs.find(f"{NS}/new") == [f"{NS}/{k}" for k in NEW_PREFIXED]


@_fs_check
def _fs_rm_file(r: Recreated) -> None:
    r.fs.rm_file(f"{NS}/shared")
    r.fs.rm_file(f"{NS}/new/a")
    assert r.snapshot() == _without("shared", "new/a")
    with pytest.raises(FileNotFoundError):
        r.fs.rm_file(f"{NS}/old/a")


@_fs_check
def _fs_rm_recursive(r: Recreated) -> None:
    r.fs.rm(f"{NS}/new/b", recursive=True)
    assert r.snapshot() == _without("new/b/c", "new/b/d")


@_fs_check
def _fs_open_read(r: Recreated) -> None:
    for key, value in NEW.items():
        with r.fs.open(f"{NS}/{key}", "rb") as f:
            assert f.read() == value, key
    with pytest.raises(FileNotFoundError):
        r.fs.open(f"{NS}/old/a", "rb")


@_fs_check
def _fs_open_write(r: Recreated) -> None:
    with r.fs.open(f"{NS}/new/x", "wb") as f:
        f.write(b"written after")
    with r.fs.open(f"{NS}/new/a", "wb") as f:
        f.write(b"replaced")
    assert r.snapshot() == {**NEW, "new/x": b"written after", "new/a": b"replaced"}


@pytest.mark.parametrize("method", sorted(FS_CHECKS))
def test_filesystem_method_follows_recreated_namespace(recreated: Recreated, method: str) -> None:
    FS_CHECKS[method](recreated)


# --------------------------------------------------------------------------
# Destroyed and not re-created: loud, and never re-created by a handle.

DESTROYERS = ["other-process", "this-store", "another-store"]

# Every read and write of the store API, on keys that existed before.
STORE_CALLS: dict[str, Callable[[SharedMemoryStore], Any]] = {
    "get": lambda s: sync(s.get("shared", PROTO)),
    "get_partial_values": lambda s: sync(s.get_partial_values(PROTO, [("old/a", None)])),
    "exists": lambda s: sync(s.exists("old/a")),
    "set": lambda s: sync(s.set("old/a", buf(b"after"))),
    "set_if_not_exists": lambda s: sync(s.set_if_not_exists("new", buf(b"after"))),
    "delete": lambda s: sync(s.delete("old/a")),
    "delete_dir": lambda s: sync(s.delete_dir("old")),
    "clear": lambda s: sync(s.clear()),
    "getsize": lambda s: sync(s.getsize("old/a")),
    "getsize_prefix": lambda s: sync(s.getsize_prefix("old")),
    "list": lambda s: collect(s.list()),
    "list_prefix": lambda s: collect(s.list_prefix("old/")),
    "list_dir": lambda s: collect(s.list_dir("")),
    "get_sync": lambda s: s.get_sync("shared"),
    "set_sync": lambda s: s.set_sync("old/a", buf(b"after")),
    "delete_sync": lambda s: s.delete_sync("old/a"),
}


@pytest.fixture(params=["plain", "tiered"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def _destroy(destroyer: str, store: SharedMemoryStore, agent: Agent, root: Path) -> None:
    if destroyer == "other-process":
        agent.destroy(root, NS)
    elif destroyer == "this-store":
        store.destroy()
    else:
        SharedMemoryStore(NS).destroy()


def _assert_not_recreated(root: Path, spill_before: dict[str, bytes], spill: Path) -> None:
    assert not (root / NS).exists()
    assert NS not in os.listdir(root)
    with pytest.raises(FileNotFoundError, match=NS):
        SharedMemoryStore(NS, read_only=True)
    assert files(spill) == spill_before  # nothing written to the spill tier either


@pytest.mark.parametrize("destroyer", DESTROYERS)
@pytest.mark.parametrize("method", sorted(STORE_CALLS))
def test_store_method_of_destroyed_namespace_raises(
    shm_root: Path, tmp_path: Path, agent: Agent, kind: str, destroyer: str, method: str
) -> None:
    store = _open_old(kind, tmp_path)
    spill = tmp_path / "spill-old"
    _destroy(destroyer, store, agent, shm_root)
    spill_before = files(spill)
    with pytest.raises(FileNotFoundError, match=NS):
        STORE_CALLS[method](store)
    # and again: the first failure did not re-create anything either
    with pytest.raises(FileNotFoundError, match=NS):
        STORE_CALLS[method](store)
    _assert_not_recreated(shm_root, spill_before, spill)


@pytest.mark.parametrize("destroyer", DESTROYERS)
def test_zarr_array_of_destroyed_namespace_raises(
    shm_root: Path, tmp_path: Path, agent: Agent, kind: str, destroyer: str
) -> None:
    spill = tmp_path / "spill-old"
    creator = SharedMemoryStore(NS, **_tiering(kind, spill))
    data = np.arange(16, dtype="i4")
    zarr.create_array(
        creator, name="x", shape=(16,), chunks=(2,), dtype="i4", fill_value=-1, compressors=None
    )[:] = data
    store = SharedMemoryStore(NS)
    z = zarr.open_array(store, path="x", mode="r+")
    np.testing.assert_array_equal(z[:], data)
    _destroy(destroyer, store, agent, shm_root)
    spill_before = files(spill)
    with pytest.raises(FileNotFoundError, match=NS):
        z[...]
    with pytest.raises(FileNotFoundError, match=NS):
        z[4:6]
    with pytest.raises(FileNotFoundError, match=NS):
        z[:2] = 5
    with pytest.raises(FileNotFoundError, match=NS):
        z[...]
    _assert_not_recreated(shm_root, spill_before, spill)


# --------------------------------------------------------------------------
# Plain Zarr readers (zarr's LocalStore) of a namespace directory

N_CHUNKS = 20
CHUNK = 20  # 20 f8 = 160 bytes a chunk


def _partly_spilled(store: SharedMemoryStore) -> tuple[zarr.Array, np.ndarray]:
    """Array "x" of 20 chunks, written after its metadata: about half of them spill."""
    z = zarr.create_array(
        store,
        name="x",
        shape=(N_CHUNKS * CHUNK,),
        chunks=(CHUNK,),
        dtype="f8",
        fill_value=-1.0,  # the data is never -1: fill values cannot pass for it
        compressors=None,
    )
    data = np.arange(N_CHUNKS * CHUNK, dtype="f8")
    z[:] = data
    return z, data


def test_plain_zarr_reader_follows_chunks_spilled_to_a_directory(
    shm_root: Path, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    store = SharedMemoryStore("pz", capacity=2048, spill=spill)
    _, data = _partly_spilled(store)
    spilled = chunk_keys(files(spill), "x")
    assert 0 < len(spilled) < N_CHUNKS

    local = LocalStore(shm_root / "pz", read_only=True)
    lz = zarr.open_array(local, path="x", mode="r")
    for i in range(N_CHUNKS):
        region = slice(i * CHUNK, (i + 1) * CHUNK)
        np.testing.assert_array_equal(lz[region], data[region], err_msg=f"chunk {i}")
    np.testing.assert_array_equal(lz[:], data)
    # byte for byte, every key
    for key in collect(store.list()):
        got = sync(local.get(key, PROTO))
        assert got is not None, key
        assert got.to_bytes() == store.get_sync(key).to_bytes(), key
    # and any reader of plain files
    for key in spilled:
        assert (shm_root / "pz" / key).read_bytes() == (spill / key).read_bytes()


@pytest.fixture
def memory_spill() -> Iterator[str]:
    """A spill location that is not a local directory: fsspec's in-process memory."""
    path = f"/shmstore-test-{uuid.uuid4().hex}"
    yield f"memory://{path}"
    mfs = fsspec.filesystem("memory")
    if mfs.exists(path):
        mfs.rm(path, recursive=True)


def test_plain_zarr_reader_fails_loudly_on_chunks_spilled_elsewhere(
    shm_root: Path, memory_spill: str
) -> None:
    store = SharedMemoryStore("pm", capacity=2048, spill=memory_spill)
    _, data = _partly_spilled(store)
    top = memory_spill.removeprefix("memory://")
    spilled = chunk_keys(
        (p.removeprefix(top).lstrip("/") for p in fsspec.filesystem("memory").find(top)), "x"
    )
    assert 0 < len(spilled) < N_CHUNKS
    # shmstore reads every chunk, through the store and by URL
    np.testing.assert_array_equal(zarr.open_array(store, path="x", mode="r")[:], data)
    np.testing.assert_array_equal(zarr.open_array("shm://pm/x", mode="r")[:], data)

    lz = zarr.open_array(LocalStore(shm_root / "pm", read_only=True), path="x", mode="r")
    for i in range(N_CHUNKS):
        region = slice(i * CHUNK, (i + 1) * CHUNK)
        if f"x/c/{i}" in spilled:
            # an error, never the fill value (a missing file would read as one)
            with pytest.raises(OSError):
                lz[region]
        else:
            np.testing.assert_array_equal(lz[region], data[region], err_msg=f"chunk {i}")
    with pytest.raises(OSError):
        lz[:]


@contextlib.contextmanager
def _all_warnings_are_errors() -> Iterator[None]:
    """Every warning raises, in zarr's event-loop thread too (the filters are global).

    A warning raised that way inside one of zarr's concurrent tasks can leave
    other tasks' exceptions unretrieved; they are collected and logged here, in
    this thread. Left to the garbage collector, asyncio may log them from
    zarr's thread while pytest parses sources to report the failure, which
    trips CPython 3.11's AST recursion-depth check (python/cpython#106905).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield
    finally:
        gc.collect()


def _group(store: SharedMemoryStore) -> None:
    g = zarr.open_group(store, mode="w")
    g.attrs["title"] = "listed"
    g.create_array("a", shape=(8,), chunks=(2,), dtype="i4", fill_value=-1)[:] = np.arange(8)
    g.create_array("b", shape=(4, 4), chunks=(2, 2), dtype="f8")[:] = 1.5
    sub = g.create_group("sub")
    sub.create_array("c", shape=(6,), chunks=(3,), dtype="i2")[:] = 7


@pytest.mark.parametrize("kind", ["plain", "tiered"])
def test_plain_zarr_reader_lists_a_namespace_without_warnings(
    shm_root: Path, tmp_path: Path, kind: str
) -> None:
    tiering = {"capacity": 1024, "spill": tmp_path / "spill"} if kind == "tiered" else {}
    _group(SharedMemoryStore("lw", **tiering))
    with _all_warnings_are_errors():
        g = zarr.open_group(LocalStore(shm_root / "lw", read_only=True), mode="r")
        assert g.attrs["title"] == "listed"
        assert sorted(g.array_keys()) == ["a", "b"]  # never the bookkeeping entry
        groups = sorted(g.group_keys())
        members = dict(g.members())
        deep = dict(g.members(max_depth=None))
        # The bookkeeping entry shows as an empty group holding one empty array
        # (docs/design.md, "Layout"), nothing more.
        book_nodes = {".shmstore", ".shmstore/state"}
        assert set(groups) - book_nodes == {"sub"}
        assert set(members) - book_nodes == {"a", "b", "sub"}
        assert set(deep) - book_nodes == {"a", "b", "sub", "sub/c"}
        if ".shmstore" in {*groups, *members, *deep}:
            book = g[".shmstore"]
            assert isinstance(book, zarr.Group)
            assert [k for k, _ in book.members(max_depth=None)] == ["state"]
            state = book["state"]
            assert isinstance(state, zarr.Array) and state.shape == (0,)
        np.testing.assert_array_equal(g["a"][:], np.arange(8))
        np.testing.assert_array_equal(g["sub/c"][:], np.full(6, 7, dtype="i2"))
        np.testing.assert_array_equal(g["b"][:], np.full((4, 4), 1.5))


# zarr says so when a dataset is *written* with consolidated metadata; reading
# below turns every warning into an error.
@pytest.mark.filterwarnings("ignore:Consolidated metadata")
@pytest.mark.parametrize("kind", ["plain", "tiered"])
@pytest.mark.parametrize("consolidated", [True, False])
def test_xarray_reads_a_namespace_with_local_store_without_warnings(
    shm_root: Path, tmp_path: Path, kind: str, consolidated: bool
) -> None:
    xr = pytest.importorskip("xarray")
    if kind == "tiered":
        SharedMemoryStore("xw", capacity=1024, spill=tmp_path / "spill")
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {
            "t": (("time", "lat"), rng.random((6, 40)).astype("f4"), {"units": "K"}),
            "p": (("time",), np.arange(6.0)),
        },
        coords={"time": np.arange(6), "lat": np.linspace(-60, 60, 40)},
        attrs={"title": "shared"},
    )
    ds.chunk({"time": 2}).to_zarr("shm://xw", consolidated=consolidated)
    with _all_warnings_are_errors():
        back = xr.open_zarr(
            LocalStore(shm_root / "xw", read_only=True),
            consolidated=None if consolidated else False,
        )
        xr.testing.assert_identical(back.load(), ds)
