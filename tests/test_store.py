"""SharedMemoryStore beyond the conformance suite: layout, lifetime, safety, processes."""

from __future__ import annotations

import os
import pickle
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import run_python
from zarr.core.buffer import cpu, default_buffer_prototype
from zarr.core.sync import sync

import shmstore
from shmstore import ForeignEntryError, SharedMemoryStore
from shmstore._readcache import MAX_MAPPINGS

proto = default_buffer_prototype()


def buf(data: bytes) -> cpu.Buffer:
    return cpu.Buffer.from_bytes(data)


def put(store: SharedMemoryStore, key: str, data: bytes) -> None:
    store.set_sync(key, buf(data))


def get(store: SharedMemoryStore, key: str) -> bytes | None:
    value = store.get_sync(key)
    return None if value is None else value.to_bytes()


# --------------------------------------------------------------------- layout
def test_layout_is_a_zarr_directory(shm_root: Path) -> None:
    store = SharedMemoryStore("layout")
    z = zarr.create_array(store, name="t", shape=(6, 6), chunks=(3, 3), dtype="i4")
    z[:] = np.arange(36).reshape(6, 6)
    ns = shm_root / "layout"
    assert (ns / "t" / "zarr.json").is_file()
    assert (ns / "t" / "c" / "0" / "1").is_file()
    # zarr's own LocalStore reads the namespace as it stands
    local = zarr.open_array(zarr.storage.LocalStore(ns, read_only=True), path="t", mode="r")
    np.testing.assert_array_equal(local[:], np.arange(36).reshape(6, 6))
    # bookkeeping is one hidden entry, never a key
    assert (ns / ".shmstore").is_dir()
    keys = sync(_collect(store.list()))
    assert not any(k.startswith(".shmstore") for k in keys)
    assert ".shmstore" not in sync(_collect(store.list_dir("")))


async def _collect(it):  # type: ignore[no-untyped-def]
    return [x async for x in it]


def test_files_are_owner_only(shm_root: Path) -> None:
    store = SharedMemoryStore("perm")
    put(store, "a/b/c", b"x")
    ns = shm_root / "perm"
    assert stat.S_IMODE((ns / "a" / "b" / "c").stat().st_mode) == 0o600
    assert stat.S_IMODE(ns.stat().st_mode) == 0o700
    assert stat.S_IMODE((ns / "a").stat().st_mode) == 0o700


def test_wider_mode_on_request(shm_root: Path) -> None:
    store = SharedMemoryStore("shared-grp", mode=0o640)
    put(store, "k/v", b"x")
    ns = shm_root / "shared-grp"
    assert stat.S_IMODE((ns / "k" / "v").stat().st_mode) == 0o640
    assert stat.S_IMODE(ns.stat().st_mode) == 0o750


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/../b", "a/b", "x\0y", "n" * 300, ".hidden", "tab\there"]
)
def test_invalid_namespace_names(name: str) -> None:
    with pytest.raises(ValueError) as info:
        SharedMemoryStore(name)
    if name:
        shown = repr(name) if len(name) < 100 else repr(name[:40])[:-1]
        assert shown in str(info.value)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../x",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "./a",
        "a/.",
        "x\0y",
        ".shmstore/state/meta.json",
        "k" * 300,
    ],
)
def test_keys_cannot_escape(shm_root: Path, key: str) -> None:
    store = SharedMemoryStore("keys")
    for op in (
        lambda: put(store, key, b"x"),
        lambda: store.get_sync(key),
        lambda: store.delete_sync(key),
    ):
        with pytest.raises(ValueError) as info:
            op()
        assert repr(key)[:30].rstrip("'") in str(info.value)
    # nothing was written outside (or inside) the namespace
    assert sorted(os.listdir(shm_root)) == ["keys"]
    assert sorted(os.listdir(shm_root / "keys")) == [".shmstore"]


def test_read_only_missing_namespace() -> None:
    with pytest.raises(FileNotFoundError, match="'nowhere'"):
        SharedMemoryStore("nowhere", read_only=True)
    SharedMemoryStore("nowhere")  # writable creates it
    assert SharedMemoryStore("nowhere", read_only=True).read_only


def test_read_only_store_refuses_writes() -> None:
    SharedMemoryStore("ro")
    ro = SharedMemoryStore("ro", read_only=True)
    with pytest.raises(ValueError, match="read-only"):
        put(ro, "k", b"v")
    with pytest.raises(ValueError, match="read-only"):
        ro.destroy()


def test_planted_symlink_not_followed(shm_root: Path, tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.mkdir()
    (shm_root / "trap").symlink_to(target)
    with pytest.raises(ForeignEntryError, match="symbolic link"):
        SharedMemoryStore("trap")
    assert list(target.iterdir()) == []
    assert (shm_root / "trap").is_symlink()  # left alone, not replaced


def test_symlink_inside_namespace_not_followed(shm_root: Path, tmp_path: Path) -> None:
    store = SharedMemoryStore("inner")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (outside / "sub").mkdir()
    (outside / "sub" / "f").write_bytes(b"f")
    (shm_root / "inner" / "link").symlink_to(outside)
    assert store.get_sync("link/secret") is None
    with pytest.raises(NotADirectoryError, match="'link'"):
        put(store, "link/new", b"x")
    # nothing reaches through the link: not deletes, prunes, sizes or listings
    store.delete_sync("link/secret")
    store.delete_sync("link/sub/f")
    assert sync(store.exists("link/secret")) is False
    with pytest.raises(FileNotFoundError):
        sync(store.getsize("link/secret"))
    assert sync(_collect(store.list_prefix("link/"))) == []
    assert sync(_collect(store.list_dir("link/sub"))) == []
    assert sorted(p.name for p in outside.iterdir()) == ["secret", "sub"]
    assert (outside / "sub" / "f").read_bytes() == b"f"


def test_foreign_and_corrupt_entries_reported(shm_root: Path) -> None:
    (shm_root / "plain").mkdir()
    with pytest.raises(ForeignEntryError, match=r"without a \.shmstore entry"):
        SharedMemoryStore("plain")
    run_python("import shmstore; shmstore.SharedMemoryStore('corrupt')")
    (shm_root / "corrupt" / ".shmstore" / "state" / "meta.json").write_text("{not json")
    with pytest.raises(ForeignEntryError, match="corrupt"):
        SharedMemoryStore("corrupt")
    (shm_root / "afile").write_bytes(b"x")
    with pytest.raises(ForeignEntryError, match="not a namespace"):
        SharedMemoryStore("afile")


def test_key_that_is_also_a_prefix(shm_root: Path) -> None:
    store = SharedMemoryStore("prefix")
    put(store, "a", b"1")
    with pytest.raises(NotADirectoryError, match="'a'"):
        put(store, "a/b", b"2")
    put(store, "c/d", b"3")
    with pytest.raises(IsADirectoryError, match="'c'"):
        put(store, "c", b"4")
    assert get(store, "a") == b"1"
    assert get(store, "c/d") == b"3"


# ------------------------------------------------------------- lifetime
def test_context_manager_closes_but_keeps_data() -> None:
    with SharedMemoryStore("keep") as store:
        put(store, "k", b"v")
    assert get(SharedMemoryStore("keep", read_only=True), "k") == b"v"


def test_scoped_destroys_on_exit(shm_root: Path) -> None:
    with SharedMemoryStore("tmp1", scoped=True) as store:
        put(store, "k", b"v")
    assert not (shm_root / "tmp1").exists()
    with shmstore.scoped("tmp2") as store:
        put(store, "k", b"v")
    assert not (shm_root / "tmp2").exists()


def test_destroy_keeps_held_views_valid(shm_root: Path) -> None:
    store = SharedMemoryStore("gone")
    put(store, "k", b"abc" * 1000)
    held = store.get_sync("k")
    store.destroy()
    assert os.listdir(shm_root) == []
    assert held is not None and held.to_bytes() == b"abc" * 1000
    with pytest.raises(FileNotFoundError):
        SharedMemoryStore("gone", read_only=True)
    # writable reopen starts a fresh, empty namespace
    assert get(SharedMemoryStore("gone"), "k") is None


def test_pickle_sends_the_name_only() -> None:
    store = SharedMemoryStore("pick")
    put(store, "big", b"\0" * (8 << 20))
    payload = pickle.dumps(store)
    assert len(payload) < 512
    clone = pickle.loads(payload)
    assert clone == store and clone is not store
    assert get(clone, "big") == b"\0" * (8 << 20)
    scoped_store = SharedMemoryStore("pick-scoped", scoped=True)
    assert pickle.loads(pickle.dumps(scoped_store)).scoped is False


def test_pickled_root_is_the_unpickling_hosts_unless_given(shm_root: Path) -> None:
    other = shm_root / "other-host"
    other.mkdir()
    SharedMemoryStore("hosted", root=other)
    code = (
        "import pickle, sys\n"
        "store = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
        "print(store.root, store.path)\n"
    )
    env = {"SHMSTORE_ROOT": str(other)}
    out = run_python(code, pickle.dumps(SharedMemoryStore("hosted")).hex(), env=env)
    assert out.stdout.split() == [str(other), str(other / "hosted")]
    given = pickle.dumps(SharedMemoryStore("hosted", root=shm_root))
    out = run_python(code, given.hex(), env=env)
    assert out.stdout.split() == [str(shm_root), str(shm_root / "hosted")]


# ------------------------------------------------------------- reads
def test_reads_are_zero_copy_views() -> None:
    store = SharedMemoryStore("zc")
    put(store, "k", bytes(range(256)) * 256)
    a = store.get_sync("k").as_numpy_array()
    b = store.get_sync("k").as_numpy_array()
    assert np.shares_memory(a, b)  # both views of the one cached mapping
    assert not a.flags.writeable
    part = store.get_sync("k", byte_range=zarr.abc.store.RangeByteRequest(10, 20))
    assert part.to_bytes() == bytes(range(10, 20))


def test_replaced_value_is_never_stale() -> None:
    store = SharedMemoryStore("fresh")
    put(store, "k", b"old")
    old = store.get_sync("k")
    run_python(
        "import shmstore, sys; from zarr.core.buffer import cpu;"
        "shmstore.SharedMemoryStore('fresh').set_sync('k', cpu.Buffer.from_bytes(b'new!'))"
    )
    assert get(store, "k") == b"new!"
    assert old.to_bytes() == b"old"  # a held view keeps the value it had


def test_mappings_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import shmstore._readcache as seg

    monkeypatch.setattr(seg, "MAX_MAPPINGS", 64)
    store = SharedMemoryStore("many")
    for i in range(300):
        put(store, f"c/{i}", i.to_bytes(4, "little"))
    for i in range(300):
        assert get(store, f"c/{i}") == i.to_bytes(4, "little")
    assert len(store._keyspace().ns._cache) <= 64
    assert MAX_MAPPINGS >= 4096  # default leaves room for 256 MiB of 64 KiB chunks


def test_delete_prunes_empty_directories(shm_root: Path) -> None:
    store = SharedMemoryStore("prune")
    put(store, "a/b/c", b"1")
    store.delete_sync("a/b/c")
    assert sorted(os.listdir(shm_root / "prune")) == [".shmstore"]


def test_set_if_not_exists_is_atomic() -> None:
    store = SharedMemoryStore("sine")
    sync(store.set_if_not_exists("k", buf(b"first")))
    sync(store.set_if_not_exists("k", buf(b"second")))
    assert get(store, "k") == b"first"


# ------------------------------------------------------------ processes
def test_unrelated_process_sees_writes_both_ways() -> None:
    store = SharedMemoryStore("xproc")
    payload = os.urandom(1 << 20)
    put(store, "from/parent", payload)
    code = """
import hashlib, sys, shmstore
from zarr.core.buffer import cpu
s = shmstore.SharedMemoryStore('xproc')
v = s.get_sync('from/parent').to_bytes()
print(hashlib.sha256(v).hexdigest())
s.set_sync('from/child', cpu.Buffer.from_bytes(b'child:' + v[:16]))
"""
    out = run_python(code).stdout.strip()
    import hashlib

    assert out == hashlib.sha256(payload).hexdigest()
    assert get(store, "from/child") == b"child:" + payload[:16]


def test_child_that_attaches_and_exits_leaves_data(shm_root: Path) -> None:
    store = SharedMemoryStore("stay")
    z = zarr.create_array(store, name="a", shape=(100,), chunks=(10,), dtype="f8")
    z[:] = np.arange(100.0)
    code = """
import zarr, shmstore
z = zarr.open_array(shmstore.SharedMemoryStore('stay', read_only=True), path='a', mode='r')
print(float(z[:].sum()))
"""
    for _ in range(2):
        assert run_python(code).stdout.strip() == "4950.0"
    np.testing.assert_array_equal(z[:], np.arange(100.0))
    assert (shm_root / "stay" / "a" / "c" / "9").is_file()


def test_readers_never_see_a_torn_chunk(tmp_path: Path) -> None:
    """A writer flips a 4 MiB chunk between all-0 and all-1 while a reader reads."""
    SharedMemoryStore("torn")
    writer = f"""
import time, numpy as np, shmstore
from zarr.core.buffer import cpu
s = shmstore.SharedMemoryStore('torn')
zeros = cpu.Buffer.from_bytes(np.zeros(4 << 20, np.uint8).tobytes())
ones = cpu.Buffer.from_bytes(np.ones(4 << 20, np.uint8).tobytes())
s.set_sync('chunk', zeros)
open({str(tmp_path / "started")!r}, 'w').close()
n, end = 0, time.monotonic() + 3
while time.monotonic() < end:
    s.set_sync('chunk', ones if n % 2 == 0 else zeros)
    n += 1
s.set_sync('done', cpu.Buffer.from_bytes(str(n).encode()))
"""
    reader = f"""
import os, numpy as np, shmstore
s = shmstore.SharedMemoryStore('torn')
while not os.path.exists({str(tmp_path / "started")!r}):
    pass
reads = torn = 0
seen = set()
while s.get_sync('done') is None:
    a = s.get_sync('chunk').as_numpy_array()
    lo, hi = int(a.min()), int(a.max())
    reads += 1
    seen.add(lo)
    if lo != hi or len(a) != 4 << 20:
        torn += 1
print(reads, torn, len(seen))
"""
    import subprocess

    w = subprocess.Popen([sys.executable, "-c", writer], env=os.environ.copy())
    r = run_python(reader, timeout=60)
    assert w.wait(timeout=60) == 0
    reads, torn, distinct = map(int, r.stdout.split())
    assert torn == 0
    assert reads > 10 and distinct == 2  # the reader really saw both values


def test_concurrent_writers_of_disjoint_chunks_lose_nothing() -> None:
    store = SharedMemoryStore("disjoint")
    z = zarr.create_array(store, name="a", shape=(400, 100), chunks=(10, 100), dtype="i8")
    code = """
import sys, numpy as np, zarr, shmstore
part = int(sys.argv[1])
z = zarr.open_array(shmstore.SharedMemoryStore('disjoint'), path='a')
for i in range(part, 40, 2):  # interleaved chunk rows: chunk i belongs to one writer
    z[i * 10:(i + 1) * 10] = np.full((10, 100), i + 1)
from zarr.core.buffer import cpu
store = shmstore.SharedMemoryStore('disjoint')
for j in range(200):
    store.set_sync(f'extra/{part}/{j}', cpu.Buffer.from_bytes(b'%d' % j))
"""
    import subprocess

    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(p)], env=os.environ.copy())
        for p in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    expected = np.repeat(np.arange(1, 41), 10)[:, None] * np.ones((1, 100), dtype="i8")
    np.testing.assert_array_equal(z[:], expected)
    keys = sync(_collect(store.list_prefix("extra/")))
    assert len(keys) == 400


def test_delete_dir_removes_the_subtree_only() -> None:
    store = SharedMemoryStore("deldir")
    for key in ("a", "a-b/c", "b/a", "x/a/1", "x/a/2/3", "x/ab"):
        put(store, key, b"v")
    sync(store.delete_dir("x/a"))
    sync(store.delete_dir("a"))  # a key, not a prefix: zarr keeps it
    keys = sorted(sync(_collect(store.list())))
    assert keys == ["a", "a-b/c", "b/a", "x/ab"]
    sync(store.clear())
    assert sync(_collect(store.list())) == []


def test_handles_nobody_holds_release_their_descriptors() -> None:
    import gc

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    SharedMemoryStore("warm").destroy()
    before = open_fds()
    for i in range(200):
        store = SharedMemoryStore(f"many-{i}")
        put(store, "k", b"v")
        assert get(store, "k") == b"v"
    del store
    gc.collect()
    # the registry keeps a bounded number of recent handles, not all 200
    assert open_fds() - before < 3 * 64 + 16
    assert get(SharedMemoryStore("many-7", read_only=True), "k") == b"v"


def test_cached_mappings_hold_no_descriptors() -> None:
    store = SharedMemoryStore("nofds")
    for i in range(300):
        put(store, f"c/{i}", b"x" * 5000)
    before = len(os.listdir("/proc/self/fd"))
    views = [store.get_sync(f"c/{i}") for i in range(300)]
    assert len(os.listdir("/proc/self/fd")) - before < 10  # not one per mapping
    assert all(v.to_bytes() == b"x" * 5000 for v in views)


def test_views_outlive_the_cache_and_the_handle() -> None:
    import gc

    from shmstore._namespace import release_handles

    store = SharedMemoryStore("outlive")
    put(store, "k", bytes(range(256)) * 64)
    array = store.get_sync("k").as_numpy_array()
    store.delete_sync("k")
    del store
    release_handles()
    gc.collect()
    # the mapping is only unmapped when the last array over it goes
    assert bytes(array[:256]) == bytes(range(256))
    assert int(array.sum()) == sum(range(256)) * 64


def test_writes_survive_concurrent_prunes_of_their_parents(tmp_path: Path) -> None:
    """Writers and deleters in the same directories: every write lands or says why."""
    SharedMemoryStore("churn")
    code = """
import sys, shmstore
from zarr.core.buffer import cpu
s = shmstore.SharedMemoryStore('churn')
me, failures = sys.argv[1], 0
value = cpu.Buffer.from_bytes(b'v')
for j in range(1500):
    key = f'x/y{j % 4}/c/{j % 3}/{me}'
    try:
        s.set_sync(key, value)
    except OSError as e:
        failures += 1
        print('FAIL', repr(e), file=sys.stderr)
    s.delete_sync(key)
print(failures)
"""
    import subprocess

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(p)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for p in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert [int(out.strip()) for out, _ in outs] == [0, 0, 0], outs


def test_store_follows_its_namespace_through_destroy_and_recreate() -> None:
    store = SharedMemoryStore("phoenix")
    put(store, "k", b"old")
    assert get(store, "k") == b"old"
    run_python(
        "import shmstore; from zarr.core.buffer import cpu\n"
        "shmstore.SharedMemoryStore('phoenix').destroy()\n"
        "shmstore.SharedMemoryStore('phoenix').set_sync('k', cpu.Buffer.from_bytes(b'new'))"
    )
    assert get(store, "k") == b"new"  # the namespace made since, not the dead one
    put(store, "k2", b"x")  # and writes go there too
    assert get(SharedMemoryStore("phoenix", read_only=True), "k2") == b"x"


def test_scoped_store_cannot_be_read_only() -> None:
    with pytest.raises(ValueError, match="scoped store destroys namespace 'ro-scope'"):
        SharedMemoryStore("ro-scope", scoped=True, read_only=True)
