"""Tiering: capacity, spill to an on-disk Zarr store, full tmpfs, file-backed roots."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import run_python
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from zarr.core.buffer import cpu
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, MemoryStore

from shmstore import CapacityExceededError, SharedMemoryFullError, SharedMemoryStore
from shmstore._names import is_metadata_key
from shmstore._usage import parse_capacity


def buf(data: bytes) -> cpu.Buffer:
    return cpu.Buffer.from_bytes(data)


def get(store: SharedMemoryStore, key: str) -> bytes | None:
    value = store.get_sync(key)
    return None if value is None else value.to_bytes()


async def _collect(it):  # type: ignore[no-untyped-def]
    return [x async for x in it]


def files(top: Path, skip: str | None = ".shmstore") -> dict[str, int]:
    """Every regular file below *top* (a tier), as key -> size."""
    out: dict[str, int] = {}
    if not top.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(top):
        rel = Path(dirpath).relative_to(top)
        if skip and rel == Path("."):
            dirnames[:] = [d for d in dirnames if d != skip]
        for name in filenames:
            if name.endswith(".partial"):
                continue
            key = (rel / name).as_posix()
            st = (Path(dirpath) / name).lstat()
            if stat.S_ISREG(st.st_mode):  # a symlink in a namespace marks a spilled key
                out[key] = st.st_size
    return out


def used(store: SharedMemoryStore) -> int:
    tiers = store._keyspace().tiers
    assert tiers is not None
    return tiers.usage.used()


# ------------------------------------------------------------------ capacity
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (0, 0),
        (4096, 4096),
        ("4 GiB", 4 << 30),
        ("512 MB", 512_000_000),
        ("1.5 KiB", 1536),
    ],
)
def test_parse_capacity(value: object, expected: int | None) -> None:
    assert parse_capacity(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["lots", "-5", -1, "4 GiB of RAM", "", "4 Gx"])
def test_parse_capacity_rejects_nonsense(value: object) -> None:
    with pytest.raises(ValueError, match="capacity"):
        parse_capacity(value)  # type: ignore[arg-type]


def test_capacity_type_checked() -> None:
    with pytest.raises(TypeError, match="capacity"):
        parse_capacity(4.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_capacity(True)  # type: ignore[arg-type]


# --------------------------------------------------------------------- spill
def test_what_does_not_fit_spills(shm_root: Path, tmp_path: Path) -> None:
    spill = tmp_path / "spill.zarr"
    store = SharedMemoryStore("tiers", capacity="16 KiB", spill=spill)
    z = zarr.create_array(
        store, name="t", shape=(64, 64), chunks=(16, 16), dtype="f8", compressors=None
    )
    data = np.arange(64 * 64, dtype="f8").reshape(64, 64)
    z[:] = data  # 16 chunks of 2 KiB each: 7 fit beside the metadata
    np.testing.assert_array_equal(z[:], data)

    shm, disk = files(shm_root / "tiers"), files(spill)
    chunks_shm = {k for k in shm if not is_metadata_key(k)}
    chunks_disk = {k for k in disk if not is_metadata_key(k)}
    assert chunks_shm and chunks_disk
    assert not chunks_shm & chunks_disk  # a chunk lives in exactly one tier
    assert len(chunks_shm | chunks_disk) == 16
    assert sum(shm.values()) <= 16 << 10
    assert used(store) == sum(shm.values())
    # metadata is in both: the spill directory is a Zarr hierarchy on its own
    assert "t/zarr.json" in shm and "t/zarr.json" in disk
    alone = zarr.open_array(str(spill), path="t", mode="r")
    got = alone[:]
    for key in chunks_disk:
        i, j = (int(p) for p in key.split("/")[-2:])
        block = np.s_[i * 16 : (i + 1) * 16, j * 16 : (j + 1) * 16]
        np.testing.assert_array_equal(got[block], data[block])


def test_listing_size_and_delete_cover_both_tiers(tmp_path: Path) -> None:
    store = SharedMemoryStore("both", capacity=1000, spill=tmp_path / "spill")
    store.set_sync("a/small", buf(b"x" * 600))
    store.set_sync("a/big", buf(b"y" * 600))  # does not fit: spills
    store.set_sync("b/other", buf(b"z" * 10))
    assert (tmp_path / "spill" / "a" / "big").is_file()
    assert sorted(sync(_collect(store.list()))) == ["a/big", "a/small", "b/other"]
    assert sorted(sync(_collect(store.list_prefix("a/")))) == ["a/big", "a/small"]
    assert sorted(sync(_collect(store.list_dir("a")))) == ["big", "small"]
    assert sync(store.exists("a/big")) and sync(store.exists("a/small"))
    assert sync(store.getsize("a/big")) == 600
    assert sync(store.getsize_prefix("a")) == 1200
    with pytest.raises(FileNotFoundError):
        sync(store.getsize("nope"))
    assert get(store, "a/big") == b"y" * 600
    assert sync(store.get("a/big", cpu.buffer_prototype)).to_bytes() == b"y" * 600
    store.delete_sync("a/big")
    assert get(store, "a/big") is None and not (tmp_path / "spill" / "a" / "big").exists()
    sync(store.delete_dir("a"))
    assert sorted(sync(_collect(store.list()))) == ["b/other"]
    assert used(store) == 10
    sync(store.clear())
    assert sync(_collect(store.list())) == []
    assert used(store) == 0


def test_a_key_moves_between_tiers_and_never_lives_in_both(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    store = SharedMemoryStore("move", capacity=1000, spill=spill)
    store.set_sync("k", buf(b"1" * 2000))  # too big: spill tier
    assert (spill / "k").is_file() and get(store, "k") == b"1" * 2000
    store.set_sync("k", buf(b"2" * 100))  # fits: shared memory, spill copy removed
    assert not (spill / "k").exists() and get(store, "k") == b"2" * 100
    store.set_sync("k", buf(b"3" * 2000))  # spills again, shared-memory copy removed
    assert (spill / "k").read_bytes() == b"3" * 2000 and get(store, "k") == b"3" * 2000
    assert used(store) == 0
    sync(store.set("k", buf(b"4" * 10)))  # the async route too
    assert not (spill / "k").exists() and get(store, "k") == b"4" * 10
    sync(store.set_if_not_exists("k", buf(b"5")))
    assert get(store, "k") == b"4" * 10
    sync(store.set_if_not_exists("j", buf(b"6" * 5000)))
    assert (spill / "j").read_bytes() == b"6" * 5000
    sync(store.set_if_not_exists("j", buf(b"7")))
    assert get(store, "j") == b"6" * 5000


def test_a_move_between_tiers_by_another_process_is_seen(tmp_path: Path) -> None:
    store = SharedMemoryStore("moved", capacity=1000, spill=tmp_path / "spill")
    store.set_sync("k", buf(b"a" * 100))
    assert get(store, "k") == b"a" * 100  # mapped and cached in this process
    writer = (
        "import sys, shmstore\n"
        "from zarr.core.buffer import cpu\n"
        "value = cpu.Buffer.from_bytes(sys.argv[1].encode())\n"
        "shmstore.SharedMemoryStore('moved').set_sync('k', value)\n"
    )
    run_python(writer, "b" * 5000)  # spills: the shared-memory copy goes
    assert get(store, "k") == b"b" * 5000
    run_python(writer, "c" * 10)  # fits again: the spill copy goes
    assert get(store, "k") == b"c" * 10
    assert not (tmp_path / "spill" / "k").exists()


def test_partial_reads_from_either_tier(tmp_path: Path) -> None:
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    store = SharedMemoryStore("ranges", capacity=100, spill=tmp_path / "spill")
    store.set_sync("shm", buf(bytes(range(50))))
    store.set_sync("disk", buf(bytes(range(200))))
    for key, full in (("shm", bytes(range(50))), ("disk", bytes(range(200)))):
        for req, want in (
            (RangeByteRequest(2, 7), full[2:7]),
            (OffsetByteRequest(40), full[40:]),
            (SuffixByteRequest(3), full[-3:]),
        ):
            assert store.get_sync(key, byte_range=req).to_bytes() == want
            [got] = sync(store.get_partial_values(cpu.buffer_prototype, [(key, req)]))
            assert got.to_bytes() == want


def test_capacity_without_spill_raises_a_clear_error() -> None:
    store = SharedMemoryStore("capped", capacity="1 KiB")
    store.set_sync("a", buf(b"x" * 800))
    with pytest.raises(CapacityExceededError) as info:
        store.set_sync("b", buf(b"y" * 800))
    err = info.value
    assert isinstance(err, SharedMemoryFullError) and isinstance(err, OSError)
    assert err.errno == errno.ENOSPC
    assert (err.namespace, err.requested, err.available, err.capacity) == ("capped", 800, 224, 1024)
    message = str(err)
    assert "'capped'" in message and "800 B" in message and "224 B" in message
    assert "spill=" in message and "capacity=" in message
    assert pickle.loads(pickle.dumps(err)).capacity == 1024
    assert get(store, "b") is None  # nothing half-written
    assert used(store) == 800
    store.set_sync("a", buf(b"z" * 1024))  # replacing a key counts only the difference
    assert used(store) == 1024


def test_spill_location_is_recorded_and_read_by_name_alone(shm_root: Path, tmp_path: Path) -> None:
    spill = tmp_path / "spill.zarr"
    store = SharedMemoryStore("named", capacity=3000, spill=str(spill))
    z = zarr.create_array(store, name="t", shape=(100,), chunks=(10,), dtype="i8", compressors=None)
    z[:] = np.arange(100)
    assert files(spill)  # some chunks spilled
    meta = json.loads((shm_root / "named" / ".shmstore" / "state" / "meta.json").read_text())
    assert meta["tiering"] == {"capacity": 3000, "spill": {"url": str(spill)}}
    # an unrelated process that knows only the name
    out = run_python(
        "import zarr, shmstore\n"
        "z = zarr.open_array(shmstore.SharedMemoryStore('named', read_only=True), path='t')\n"
        "print(z[:].tolist())\n"
    )
    assert json.loads(out.stdout) == list(range(100))
    # a pickled store sends the name only, and the copy finds the spill tier
    payload = pickle.dumps(store)
    assert str(spill).encode() not in payload
    copy = pickle.loads(payload)
    np.testing.assert_array_equal(zarr.open_array(copy, path="t")[:], np.arange(100))
    # a store opened by name alone writes under the same capacity
    again = SharedMemoryStore("named")
    again.set_sync("big", buf(b"b" * 4000))
    assert (spill / "big").is_file()


def test_a_namespace_spills_to_one_place(tmp_path: Path) -> None:
    SharedMemoryStore("one", spill=tmp_path / "a")
    with pytest.raises(ValueError, match="already spills to"):
        SharedMemoryStore("one", spill=tmp_path / "b")
    SharedMemoryStore("one", spill=str(tmp_path / "a"))  # the same place is fine
    with pytest.raises(ValueError, match="reopen it by name"):
        SharedMemoryStore("two", spill=MemoryStore())


def test_capacity_change_is_recorded(shm_root: Path) -> None:
    SharedMemoryStore("cap", capacity=100)
    SharedMemoryStore("cap", capacity="1 KiB")
    meta = json.loads((shm_root / "cap" / ".shmstore" / "state" / "meta.json").read_text())
    assert meta["tiering"]["capacity"] == 1024
    assert SharedMemoryStore("cap")._keyspace().tiers.capacity == 1024  # type: ignore[union-attr]


def test_plain_namespaces_stay_plain(shm_root: Path) -> None:
    store = SharedMemoryStore("plain")
    store.set_sync("k", buf(b"v"))
    assert store._keyspace().tiers is None
    assert "tiering" not in json.loads(
        (shm_root / "plain" / ".shmstore" / "state" / "meta.json").read_text()
    )
    assert not (shm_root / "plain" / ".shmstore" / "state" / "usage").exists()


def test_spill_store_without_sync_methods(tmp_path: Path) -> None:
    """An fsspec spill store has no *_sync: sync calls go through zarr's loop."""
    spill = FsspecStore.from_url(f"file://{tmp_path / 'fs'}", storage_options={"auto_mkdir": True})
    store = SharedMemoryStore("fsspill", capacity=100, spill=spill)
    assert store._supports_sync_io is False  # zarr >= 3.4 keeps its sync fast path away
    store.set_sync("k", buf(b"a" * 500))
    assert (tmp_path / "fs" / "k").read_bytes() == b"a" * 500
    assert get(store, "k") == b"a" * 500

    async def inside_a_loop() -> None:
        with pytest.raises(RuntimeError, match="event loop is running"):
            store.get_sync("k")
        assert (await store.get("k", cpu.buffer_prototype)).to_bytes() == b"a" * 500

    import asyncio

    asyncio.run(inside_a_loop())
    store.delete_sync("k")
    assert not (tmp_path / "fs" / "k").exists()


def test_zarr_array_larger_than_capacity_round_trips(tmp_path: Path) -> None:
    store = SharedMemoryStore("big", capacity="64 KiB", spill=tmp_path / "spill")
    data = np.random.default_rng(0).random((256, 256))  # 512 KiB, 8x the capacity
    z = zarr.create_array(store, name="x", shape=data.shape, chunks=(32, 32), dtype="f8")
    z[:] = data
    np.testing.assert_array_equal(zarr.open_array(store, path="x", mode="r")[:], data)
    assert sum(files(Path(store.path)).values()) <= 64 << 10


# ----------------------------------------------------- concurrent processes
WRITER = r"""
import sys, numpy as np
from zarr.core.buffer import cpu
import shmstore
name, fifo, tag, n, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
store = shmstore.SharedMemoryStore(name)  # by name: capacity and spill come from the namespace
with open(fifo) as f:  # start line: blocks until the parent opens the other end
    f.read()
for i in range(n):
    store.set_sync(f"{tag}/{i}", cpu.Buffer.from_bytes(np.full(size, i % 251, np.uint8).tobytes()))
"""


def start_together(code: str, argvs: list[list[str]], tmp_path: Path) -> list[subprocess.Popen]:
    """Start one process per argv; release them at once (each waits on its FIFO)."""
    procs, fifos = [], []
    for k, argv in enumerate(argvs):
        fifo = tmp_path / f"go-{k}"
        os.mkfifo(fifo)
        fifos.append(fifo)
        procs.append(
            subprocess.Popen([sys.executable, "-c", code, *argv[:1], str(fifo), *argv[1:]])
        )
    # Opening a FIFO for writing blocks until its reader has opened it: once
    # every open returned, all the processes are at their start line.
    ends = [open(fifo, "w") for fifo in fifos]  # noqa: SIM115
    for end in ends:
        end.close()
    return procs


def test_two_writer_processes_share_one_capacity(shm_root: Path, tmp_path: Path) -> None:
    size, n, capacity = 16 << 10, 30, 20 * (16 << 10)  # 60 chunks, room for 20
    spill = tmp_path / "spill"
    SharedMemoryStore("shared-cap", capacity=capacity, spill=spill)
    procs = start_together(
        WRITER,
        [["shared-cap", tag, str(n), str(size)] for tag in ("w0", "w1")],
        tmp_path,
    )
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    shm, disk = files(shm_root / "shared-cap"), files(spill)
    assert sum(shm.values()) <= capacity  # never past it: reservations come first
    assert len(shm) == capacity // size  # and it filled up: both writers used it
    assert not set(shm) & set(disk)
    assert len(set(shm) | set(disk)) == 2 * n
    store = SharedMemoryStore("shared-cap")
    assert used(store) == sum(shm.values())
    assert store._keyspace().tiers.usage.recount() == sum(shm.values())  # type: ignore[union-attr]
    for tag in ("w0", "w1"):
        for i in range(n):
            assert get(store, f"{tag}/{i}") == bytes([i % 251]) * size


# -------------------------------------------------------------- full tmpfs
FILLER = r"""
import json, os, sys, numpy as np
from zarr.core.buffer import cpu
import shmstore
from shmstore import SharedMemoryFullError
root, spill, n, size = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), int(sys.argv[4])
store = shmstore.SharedMemoryStore("full", root=root, spill=spill)
errors, message = 0, ""
for i in range(n):
    try:
        store.set_sync(f"k/{i}", cpu.Buffer.from_bytes(np.full(size, i % 251, np.uint8).tobytes()))
    except SharedMemoryFullError as e:
        errors += 1
        message = str(e)
kdir = os.path.join(root, "full", "k")  # spilled keys are symlinks there: not counted
shm = {int(k): os.path.getsize(os.path.join(kdir, k))
       for k in os.listdir(kdir) if not os.path.islink(os.path.join(kdir, k))}
ok = all(
    (v := store.get_sync(f"k/{i}")) is not None and v.to_bytes() == bytes([i % 251]) * size
    for i in range(n) if spill or i in shm
)
print(json.dumps({
    "asked": n * size, "bytes_in_shm": sum(shm.values()), "chunks_in_shm": len(shm),
    "partial_chunks": sum(s != size for s in shm.values()), "errors": errors,
    "leftover_tmp": len(os.listdir(os.path.join(root, "full", ".shmstore", "state", "tmp"))),
    "all_readable": ok, "message": message,
}))
"""


def run_filler(root: Path, spill: Path | None, n: int, size: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", FILLER, str(root), str(spill or ""), str(n), str(size)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # A negative return code is death by a signal (SIGBUS is what mmap gives).
    assert proc.returncode >= 0, f"writer killed by {signal.Signals(-proc.returncode).name}"
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    figures["signals"] = 0
    return figures


def test_full_tmpfs_spills(tiny_tmpfs: Path, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    size, n = 512 << 10, 40  # 20 MiB into an 8 MiB tmpfs
    fig = run_filler(tiny_tmpfs, spill, n, size)
    spilled = files(spill)
    fig["bytes_spilled"] = sum(spilled.values())
    print("full tmpfs, with spill:", json.dumps(fig))
    assert fig["errors"] == 0 and fig["all_readable"]
    assert fig["partial_chunks"] == 0 and fig["leftover_tmp"] == 0
    assert fig["chunks_in_shm"] > 0 and len(spilled) == n - fig["chunks_in_shm"]
    assert fig["bytes_in_shm"] + fig["bytes_spilled"] == n * size


def test_full_tmpfs_without_spill_raises(tiny_tmpfs: Path) -> None:
    size, n = 512 << 10, 40
    fig = run_filler(tiny_tmpfs, None, n, size)
    print("full tmpfs, no spill:", json.dumps({k: v for k, v in fig.items() if k != "message"}))
    assert fig["errors"] == n - fig["chunks_in_shm"] > 0
    assert fig["partial_chunks"] == 0 and fig["leftover_tmp"] == 0 and fig["all_readable"]
    msg = fig["message"]
    assert "'full'" in msg and "512.0 KiB" in msg and str(tiny_tmpfs) in msg
    assert "--shm-size" in msg and "spill=" in msg


def test_zarr_on_a_full_tmpfs_then_read_by_name(tiny_tmpfs: Path, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    code = r"""
import sys, numpy as np, zarr, shmstore
store = shmstore.SharedMemoryStore("arr", root=sys.argv[1], spill=sys.argv[2])
z = zarr.create_array(store, name="x", shape=(2048, 1024), chunks=(256, 1024), dtype="f8",
                      compressors=None)  # 16 MiB in 2 MiB chunks
z[:] = np.arange(2048 * 1024, dtype="f8").reshape(2048, 1024)
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_tmpfs), str(spill)], timeout=120)
    assert proc.returncode == 0
    reader = r"""
import sys, numpy as np, zarr, shmstore
z = zarr.open_array(shmstore.SharedMemoryStore("arr", root=sys.argv[1], read_only=True), path="x")
ok = np.array_equal(z[:], np.arange(2048 * 1024, dtype="f8").reshape(2048, 1024))
print(ok)
"""
    out = run_python(reader, str(tiny_tmpfs))
    assert out.stdout.strip() == "True"
    assert files(spill)  # some chunks had to go to disk


# ------------------------------------------------------- file-backed roots
def test_file_backed_root_warns_once_and_works(tmp_path: Path) -> None:
    root = tmp_path / "disk-root"  # tmp_path is on the disk, not a tmpfs
    root.mkdir(mode=0o700)  # a root is never created for you
    out = run_python(
        "import warnings, sys, numpy as np, zarr, shmstore\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    a = shmstore.SharedMemoryStore('fb')\n"
        "    b = shmstore.SharedMemoryStore('fb2')\n"
        "    z = zarr.create_array(a, name='t', shape=(4,), dtype='i4')\n"
        "    z[:] = [1, 2, 3, 4]\n"
        "    r = shmstore.SharedMemoryStore('fb', read_only=True)\n"
        "    print(zarr.open_array(r, path='t')[:].tolist())\n"
        "for w in caught:\n"
        "    print(w.category.__name__, w.message)\n",
        env={"SHMSTORE_ROOT": str(root)},
    )
    lines = out.stdout.splitlines()
    assert lines[0] == "[1, 2, 3, 4]"
    warnings_seen = [line for line in lines[1:] if line.startswith("RuntimeWarning")]
    assert len(warnings_seen) == 1
    assert str(root) in warnings_seen[0] and "file-backed" in warnings_seen[0]


def test_tmpfs_root_does_not_warn(shm_root: Path) -> None:
    from shmstore._names import filesystem_type

    if filesystem_type(str(shm_root)) != "tmpfs":
        pytest.skip(f"{shm_root} is not on a tmpfs here")
    out = run_python(
        "import warnings, shmstore\n"
        "warnings.simplefilter('error')\n"
        "shmstore.SharedMemoryStore('quiet')\n"
        "print('ok')\n"
    )
    assert out.stdout.strip() == "ok"


# ------------------------------------------------------ stateful, vs a dict
KEYS = [
    "zarr.json",
    "a/zarr.json",
    "a/c/0",
    "a/c/1",
    "a/c/2",
    "b/c/0/0",
    "b/c/0/1",
    "b/c/1/0",
    "d",
]
PREFIXES = ["", "a", "a/c", "b", "b/c/0"]
CAPACITY = 2048


class TieredStoreMachine(RuleBasedStateMachine):
    """A tiered store (tiny capacity) must behave like a dict, both tiers together."""

    def __init__(self) -> None:
        super().__init__()
        self.name = f"hyp-{uuid.uuid4().hex[:8]}"
        self.spill = Path(tempfile.mkdtemp(prefix="shmstore-spill-"))
        self.store = SharedMemoryStore(self.name, capacity=CAPACITY, spill=self.spill)
        self.model: dict[str, bytes] = {}

    def teardown(self) -> None:
        self.store.destroy()
        shutil.rmtree(self.spill, ignore_errors=True)

    @rule(key=st.sampled_from(KEYS), value=st.binary(max_size=1500), use_async=st.booleans())
    def set(self, key: str, value: bytes, use_async: bool) -> None:
        if use_async:
            sync(self.store.set(key, buf(value)))
        else:
            self.store.set_sync(key, buf(value))
        self.model[key] = value

    @rule(key=st.sampled_from(KEYS), value=st.binary(max_size=1500))
    def set_if_not_exists(self, key: str, value: bytes) -> None:
        sync(self.store.set_if_not_exists(key, buf(value)))
        self.model.setdefault(key, value)

    @rule(key=st.sampled_from(KEYS), use_async=st.booleans())
    def get(self, key: str, use_async: bool) -> None:
        if use_async:
            value = sync(self.store.get(key, cpu.buffer_prototype))
        else:
            value = self.store.get_sync(key)
        assert (None if value is None else value.to_bytes()) == self.model.get(key)

    @rule(key=st.sampled_from(KEYS), use_async=st.booleans())
    def delete(self, key: str, use_async: bool) -> None:
        if use_async:
            sync(self.store.delete(key))
        else:
            self.store.delete_sync(key)
        self.model.pop(key, None)

    @rule(prefix=st.sampled_from(PREFIXES))
    def delete_dir(self, prefix: str) -> None:
        sync(self.store.delete_dir(prefix))
        for key in [k for k in self.model if not prefix or k.startswith(prefix + "/")]:
            del self.model[key]

    @rule(key=st.sampled_from(KEYS))
    def exists_and_size(self, key: str) -> None:
        assert sync(self.store.exists(key)) == (key in self.model)
        if key in self.model:
            assert sync(self.store.getsize(key)) == len(self.model[key])

    @rule(prefix=st.sampled_from(PREFIXES))
    def list_prefix(self, prefix: str) -> None:
        p = f"{prefix}/" if prefix else ""
        assert sorted(sync(_collect(self.store.list_prefix(p)))) == sorted(
            k for k in self.model if k.startswith(p)
        )

    @rule()
    def list(self) -> None:
        assert sorted(sync(_collect(self.store.list()))) == sorted(self.model)

    @rule()
    def reopen_by_name(self) -> None:
        self.store = SharedMemoryStore(self.name)

    @invariant()
    def one_tier_per_key_and_capacity_honoured(self) -> None:
        shm, disk = files(Path(self.store.path)), files(self.spill)
        both = set(shm) & set(disk)
        assert all(is_metadata_key(k) for k in both), both
        assert set(shm) | set(disk) == set(self.model)
        assert sum(shm.values()) <= CAPACITY
        assert used(self.store) == sum(shm.values())


def test_tiered_store_behaves_like_a_dict() -> None:
    run_state_machine_as_test(
        TieredStoreMachine,
        settings=settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_local_store_spill_is_a_plain_local_store(tmp_path: Path) -> None:
    store = SharedMemoryStore("plainlayout", capacity=0, spill=tmp_path / "s")
    store.set_sync("g/c/0", buf(b"abc"))
    assert sync(LocalStore(tmp_path / "s").get("g/c/0", cpu.buffer_prototype)).to_bytes() == b"abc"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity": "4 GiBs"}, "'4 GiBs' is not a size"),
        ({"capacity": -5}, "negative"),
        ({"spill": zarr.storage.MemoryStore()}, "cannot record"),
        ({"mode": "bad"}, "'bad' is not a permission mask"),
        ({"mode": 0o1777}, "is not a permission mask"),
    ],
)
def test_invalid_options_create_nothing(shm_root: Path, kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        SharedMemoryStore("never", **kwargs)
    assert list(shm_root.iterdir()) == []


def test_tiered_stores_do_not_leak_descriptors(shm_root: Path, tmp_path: Path) -> None:
    import gc

    SharedMemoryStore("fds", capacity="1 MiB", spill=str(tmp_path / "spill.zarr"))
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for i in range(100):
        store = SharedMemoryStore("fds")
        store.set_sync(f"k{i}", cpu.Buffer.from_bytes(b"v"))
        del store
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) - before < 10
