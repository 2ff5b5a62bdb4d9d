"""Recycled pages: rewrites reuse the files nobody maps; views others hold never change."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python
from zarr.core.buffer import default_buffer_prototype
from zarr.core.buffer.cpu import Buffer

import shmstore
from shmstore import _pool

SIZE = 64 * 1024
PROTO = default_buffer_prototype()


def value(tag: int, size: int = SIZE) -> Buffer:
    """A chunk whose every word is *tag*, in writable memory (as zarr's encoded chunks)."""
    return Buffer.from_array_like(np.full(size // 8, tag, dtype="<u8").view(np.uint8))


def test_read_only_sources_are_copied_too(shm_root: Path) -> None:
    store = shmstore.SharedMemoryStore("ro")
    try:
        for tag in range(4):  # bytes: a read-only buffer, copied by assignment
            store.set_sync("k", Buffer.from_bytes(np.full(SIZE // 8, tag, "<u8").tobytes()))
        got = np.frombuffer(store.get_sync("k", prototype=PROTO).as_numpy_array(), "<u8")
        assert (got == 3).all()
        assert len(tmp_entries(shm_root, "ro")) == 1
    finally:
        store.destroy()


def ino(root: Path, ns: str, key: str) -> int:
    return os.stat(root / ns / key).st_ino


def tmp_entries(root: Path, ns: str) -> list[str]:
    return sorted(os.listdir(root / ns / ".shmstore" / "state" / "tmp"))


@pytest.fixture
def store(shm_root: Path):  # type: ignore[no-untyped-def]
    s = shmstore.SharedMemoryStore("rec")
    yield s
    s.destroy()


def test_a_rewrite_reuses_the_file_it_displaced(store, shm_root: Path) -> None:
    store.set_sync("k", value(1))
    first = ino(shm_root, "rec", "k")
    store.set_sync("k", value(2))  # fresh pages; the first version is kept
    second = ino(shm_root, "rec", "k")
    assert second != first
    assert len(tmp_entries(shm_root, "rec")) == 1
    store.set_sync("k", value(3))  # written into the first version's file
    assert ino(shm_root, "rec", "k") == first
    got = np.frombuffer(store.get_sync("k", prototype=PROTO).as_numpy_array(), "<u8")
    assert (got == 3).all()
    assert len(tmp_entries(shm_root, "rec")) == 1  # the second version, kept in turn


def test_a_view_held_elsewhere_is_never_written(store, shm_root: Path) -> None:
    store.set_sync("k", value(1))
    held = np.frombuffer(store.get_sync("k", prototype=PROTO).as_numpy_array(), "<u8")
    held_ino = ino(shm_root, "rec", "k")
    for tag in range(2, 12):
        store.set_sync("k", value(tag))
        assert ino(shm_root, "rec", "k") != held_ino
        assert (held == 1).all()
    got = np.frombuffer(store.get_sync("k", prototype=PROTO).as_numpy_array(), "<u8")
    assert (got == 11).all()


def test_a_view_held_by_another_process_is_never_written(store, shm_root: Path) -> None:
    store.set_sync("k", value(1))
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, numpy as np, shmstore\n"
            "from zarr.core.buffer import default_buffer_prototype as p\n"
            "s = shmstore.SharedMemoryStore('rec', read_only=True)\n"
            "v = np.frombuffer(s.get_sync('k', prototype=p()).as_numpy_array(), '<u8')\n"
            "print(int(v[0]), flush=True)\n"
            "sys.stdin.readline()\n"
            "print(int(v.min()), int(v.max()), flush=True)\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "1"
        for tag in range(2, 10):
            store.set_sync("k", value(tag))
        out, _ = reader.communicate("go\n", timeout=60)
        assert out.split() == ["1", "1"]
    finally:
        reader.kill()
        reader.wait()


def test_delete_then_set_of_the_same_size_reuses(store, shm_root: Path) -> None:
    store.set_sync("k", value(1))
    first = ino(shm_root, "rec", "k")
    store.delete_sync("k")
    assert not (shm_root / "rec" / "k").exists()
    store.set_sync("j", value(2))
    assert ino(shm_root, "rec", "j") == first


def test_a_cleared_namespace_refills_into_its_old_pages(store, shm_root: Path) -> None:
    for i in range(8):
        store.set_sync(f"a/c/{i}", value(i))
    before = {ino(shm_root, "rec", f"a/c/{i}") for i in range(8)}
    asyncio.run(store.clear())
    for i in range(8):
        store.set_sync(f"a/c/{i}", value(100 + i))
    after = {ino(shm_root, "rec", f"a/c/{i}") for i in range(8)}
    assert after == before
    for i in range(8):
        got = np.frombuffer(store.get_sync(f"a/c/{i}", prototype=PROTO).as_numpy_array(), "<u8")
        assert (got == 100 + i).all()


def test_small_values_take_fresh_pages(store, shm_root: Path) -> None:
    small = _pool.MIN_BYTES // 2
    store.set_sync("s", value(1, small))
    store.set_sync("s", value(2, small))
    assert tmp_entries(shm_root, "rec") == []


def test_pool_bytes_zero_turns_recycling_off(shm_root: Path) -> None:
    out = run_python(
        "import os, numpy as np, shmstore\n"
        "from zarr.core.buffer.cpu import Buffer\n"
        "s = shmstore.SharedMemoryStore('off')\n"
        "for t in range(4):\n"
        "    s.set_sync('k', Buffer.from_bytes(bytes([t]) * 65536))\n"
        "print(len(os.listdir(s.path + '/.shmstore/state/tmp')))\n"
        "s.destroy()\n",
        env={"SHMSTORE_POOL_BYTES": "0"},
    )
    assert out.stdout.strip() == "0"


def test_a_process_releases_its_pool_at_exit(shm_root: Path) -> None:
    run_python(
        "import shmstore\n"
        "from zarr.core.buffer.cpu import Buffer\n"
        "s = shmstore.SharedMemoryStore('ex')\n"
        "for t in range(4):\n"
        "    s.set_sync('k', Buffer.from_bytes(bytes([t]) * 65536))\n"
    )
    assert tmp_entries(shm_root, "ex") == []
    shmstore.destroy("ex")


def test_gc_reclaims_a_killed_writers_pool(shm_root: Path) -> None:
    from click.testing import CliRunner

    from shmstore._cli import main

    run_python(
        "import os, shmstore\n"
        "from zarr.core.buffer.cpu import Buffer\n"
        "s = shmstore.SharedMemoryStore('dead')\n"
        "for t in range(4):\n"
        "    s.set_sync('k', Buffer.from_bytes(bytes([t]) * 65536))\n"
        "os._exit(0)  # no atexit: as if killed\n"
    )
    assert len(tmp_entries(shm_root, "dead")) == 1
    result = CliRunner().invoke(main, ["gc"])
    assert result.exit_code == 0, result.output
    assert tmp_entries(shm_root, "dead") == []
    shmstore.destroy("dead")


# The fork is the point: a child of a process that keeps files must not reuse them.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_never_writes_into_its_parents_files(store, shm_root: Path) -> None:
    store.set_sync("k", value(1))
    store.set_sync("k", value(2))  # the parent keeps version 1's file
    kept = tmp_entries(shm_root, "rec")
    assert len(kept) == 1
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            store.set_sync("k", value(3))
            store.set_sync("k", value(4))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert kept[0] in tmp_entries(shm_root, "rec")  # the parent's file is untouched
    got = np.frombuffer(store.get_sync("k", prototype=PROTO).as_numpy_array(), "<u8")
    assert (got == 4).all()


def test_a_full_filesystem_frees_the_pool_before_failing(
    tiny_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHMSTORE_ROOT", str(tiny_tmpfs))
    store = shmstore.SharedMemoryStore("full")
    big = 3 * 1024 * 1024
    try:
        # Pooling here is bounded by an eighth of 8 MiB: raise it for this test.
        monkeypatch.setattr(_pool, "_budget", 8 * 1024 * 1024)
        store._keyspace().ns._get_pool()._limit = 8 * 1024 * 1024
        store.set_sync("a", value(1, big))
        store.set_sync("a", value(2, big))  # 3 MiB kept, 6 MiB in use
        assert store._keyspace().ns.pooled_bytes() == big
        store.set_sync("b", value(3, big))  # does not fit beside the pool: the pool goes
        got = np.frombuffer(store.get_sync("b", prototype=PROTO).as_numpy_array(), "<u8")
        assert (got == 3).all()
        assert store._keyspace().ns.pooled_bytes() == 0
    finally:
        store.destroy()


def test_destroy_releases_the_pool(shm_root: Path) -> None:
    store = shmstore.SharedMemoryStore("gone")
    store.set_sync("k", value(1))
    store.set_sync("k", value(2))
    assert store._keyspace().ns.pooled_bytes() == SIZE
    ns = store._keyspace().ns
    store.destroy()
    assert ns.pooled_bytes() == 0


def test_without_leases_writes_take_the_plain_path(shm_root: Path) -> None:
    knob = Path("/proc/sys/fs/leases-enable")
    try:
        before = knob.read_text()
        knob.write_text("0\n")
    except OSError as e:
        pytest.skip(f"cannot turn leases off here ({e}); needs root and a writable /proc/sys")
    try:
        out = run_python(
            "import os, numpy as np, shmstore\n"
            "from zarr.core.buffer.cpu import Buffer\n"
            "s = shmstore.SharedMemoryStore('nolease')\n"
            "for t in range(6):\n"
            "    s.set_sync('k', Buffer.from_bytes(bytes([t]) * 65536))\n"
            "print(open(s.path + '/k', 'rb').read(1)[0], "
            "len(os.listdir(s.path + '/.shmstore/state/tmp')))\n"
            "s.destroy()\n"
        )
    finally:
        knob.write_text(before)
    assert out.stdout.split() == ["5", "0"]


# ------------------------------------------------------------------ named arrays
N = 1 << 16  # 512 KiB of float64


def test_a_create_after_a_delete_reuses_the_file(shm_root: Path) -> None:
    a = shmstore.create("arr", N, "f8", fill=1.0)
    first = os.stat(shm_root / "arr").st_ino
    del a
    shmstore.delete("arr")
    assert [e for e in os.listdir(shm_root) if e.startswith(".shmstore-pool.")]
    b = shmstore.create("arr2", N, "f8", fill=2.5)
    assert os.stat(shm_root / "arr2").st_ino == first
    assert (b == 2.5).all()
    del b
    shmstore.delete("arr2")
    z = shmstore.create("zeros", N, "f8")  # no fill: zeros, as in fresh pages
    assert os.stat(shm_root / "zeros").st_ino == first
    assert not z.any()
    m = shmstore.create("copied", (N // 2, 2), "f8", fill=np.arange(N, dtype="f8").reshape(-1, 2))
    assert m[-1, 1] == N - 1
    del z, m
    shmstore.delete("zeros")
    shmstore.delete("copied")


def test_an_array_still_held_is_never_reused(shm_root: Path) -> None:
    a = shmstore.create("held", N, "f8", fill=7.0)
    first = os.stat(shm_root / "held").st_ino
    shmstore.delete("held")  # `a` still maps it
    b = shmstore.create("other", N, "f8", fill=1.0)
    assert os.stat(shm_root / "other").st_ino != first
    assert (a == 7.0).all()
    del b
    shmstore.delete("other")


def test_an_array_held_by_another_process_is_never_reused(shm_root: Path) -> None:
    a = shmstore.create("shared", N, "f8", fill=3.0)
    first = os.stat(shm_root / "shared").st_ino
    del a
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, shmstore\n"
            "a = shmstore.attach('shared')\n"
            "print('attached', flush=True)\n"
            "sys.stdin.readline()\n"
            "print(float(a.min()), float(a.max()), flush=True)\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "attached"
        shmstore.delete("shared")
        b = shmstore.create("again", N, "f8", fill=9.0)
        assert os.stat(shm_root / "again").st_ino != first
        out, _ = reader.communicate("go\n", timeout=60)
        assert out.split() == ["3.0", "3.0"]
        del b
        shmstore.delete("again")
    finally:
        reader.kill()
        reader.wait()


def test_gc_reclaims_the_deleted_arrays_a_dead_process_kept(shm_root: Path) -> None:
    from click.testing import CliRunner

    from shmstore._cli import main

    run_python(
        "import os, shmstore\n"
        "a = shmstore.create('gone', 65536, 'f8')\n"
        "del a\n"
        "shmstore.delete('gone')\n"
        "os._exit(0)  # no atexit: as if killed\n"
    )
    assert [e for e in os.listdir(shm_root) if e.startswith(".shmstore-pool.")]
    result = CliRunner().invoke(main, ["gc"])
    assert result.exit_code == 0, result.output
    assert not [e for e in os.listdir(shm_root) if e.startswith(".shmstore-pool.")]


def test_a_filesystem_pools_at_most_an_eighth_of_its_size(
    tiny_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHMSTORE_ROOT", str(tiny_tmpfs))
    store = shmstore.SharedMemoryStore("eighth")
    try:
        for i in range(4):
            store.set_sync(f"k{i}", value(i, 512 * 1024))
        for i in range(4):
            store.set_sync(f"k{i}", value(10 + i, 512 * 1024))  # displaces 2 MiB
        assert store._keyspace().ns.pooled_bytes() <= 1024 * 1024
    finally:
        store.destroy()


def test_a_full_filesystem_frees_deleted_arrays_before_failing(
    tiny_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHMSTORE_ROOT", str(tiny_tmpfs))
    monkeypatch.setattr(_pool, "_budget", 8 * 1024 * 1024)
    a = shmstore.create("a", (3 << 20) // 8, "f8", fill=1.0)
    del a
    pool = shmstore._arrayfile._root_pool(str(tiny_tmpfs))
    pool._limit = 8 * 1024 * 1024
    shmstore.delete("a")  # kept: 3 MiB of the 8
    assert pool.pooled_bytes() > 0
    b = shmstore.create("b", (5 << 20) // 8, "f8", fill=2.0)  # fits only without it
    assert (b == 2.0).all()
    assert pool.pooled_bytes() == 0
    del b
    shmstore.delete("b")


# ------------------------------------------- kept directory descriptors
#: The start of a script for another process that writes to namespace "rec":
#: ``v(tag)`` is a chunk as :func:`value` makes them.
OTHER_WRITER = (
    "import asyncio, numpy as np, shmstore\n"
    "from zarr.core.buffer.cpu import Buffer\n"
    "s = shmstore.SharedMemoryStore('rec')\n"
    "v = lambda t: Buffer.from_array_like(np.full(8192, t, '<u8').view(np.uint8))\n"
)


def _tag(store: shmstore.SharedMemoryStore, key: str) -> int | None:
    buf = store.get_sync(key, prototype=PROTO)
    return None if buf is None else int(np.frombuffer(buf.as_numpy_array(), "<u8")[0])


def test_a_write_after_another_process_deleted_its_directory_lands_in_sight(
    store, shm_root: Path
) -> None:
    # The writer keeps "a/c" open between writes; another process moves that
    # directory away (delete_dir) and makes a new "a/c". The next write must
    # go into the new one, not the old one out of sight.
    store.set_sync("a/c/0", value(1))
    store.set_sync("a/c/1", value(1))
    run_python(OTHER_WRITER + "asyncio.run(s.delete_dir('a'))\ns.set_sync('a/c/9', v(9))\n")
    store.set_sync("a/c/0", value(2))
    assert _tag(store, "a/c/0") == 2
    assert sorted(os.listdir(shm_root / "rec" / "a" / "c")) == ["0", "9"]
    other = run_python(
        "import shmstore, numpy as np\n"
        "s = shmstore.SharedMemoryStore('rec', read_only=True)\n"
        "from zarr.core.buffer import default_buffer_prototype as p\n"
        "print(int(np.frombuffer(s.get_sync('a/c/0', prototype=p()).as_numpy_array(), '<u8')[0]))\n"
    )
    assert other.stdout.strip() == "2"


def test_a_write_after_its_directory_was_pruned_makes_it_again(store, shm_root: Path) -> None:
    store.set_sync("a/c/0", value(1))
    run_python(OTHER_WRITER + "s.delete_sync('a/c/0')\n")  # the only key: a/c and a are pruned
    assert not (shm_root / "rec" / "a").exists()
    assert _tag(store, "a/c/0") is None  # a kept descriptor of a removed directory: asked anew
    store.set_sync("a/c/0", value(3))
    assert _tag(store, "a/c/0") == 3
    assert os.listdir(shm_root / "rec" / "a" / "c") == ["0"]


def test_reads_after_a_directory_was_made_again_see_its_keys(store, shm_root: Path) -> None:
    store.set_sync("a/c/0", value(1))
    assert _tag(store, "a/c/0") == 1
    run_python(OTHER_WRITER + "s.delete_sync('a/c/0')\ns.set_sync('a/c/1', v(5))\n")  # prunes a/c
    assert _tag(store, "a/c/1") == 5
    assert _tag(store, "a/c/0") is None


def test_a_write_out_of_descriptors_gives_the_kept_ones_back(shm_root: Path) -> None:
    # Half of a small `ulimit -n` is kept; the process then uses up the rest.
    # A write that needs a descriptor must get one from the kept files.
    proc = run_python(
        "import os, resource\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "import numpy as np, shmstore\n"
        "from shmstore import _pool\n"
        "from zarr.core.buffer.cpu import Buffer\n"
        "from zarr.core.buffer import default_buffer_prototype as p\n"
        "assert _pool.MAX_FILES == 128, _pool.MAX_FILES\n"
        "s = shmstore.SharedMemoryStore('fds')\n"
        "v = lambda t: Buffer.from_array_like(np.full(8192, t, '<u8').view(np.uint8))\n"
        "for t in (1, 2):\n"
        "    for i in range(60):\n"
        "        s.set_sync(f'k/{i}', v(t))\n"
        "held = []\n"
        "try:\n"
        "    while True:\n"
        "        held.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError:\n"
        "    pass\n"
        "s.set_sync('new', v(7))\n"
        "for fd in held:\n"
        "    os.close(fd)\n"
        "got = np.frombuffer(s.get_sync('new', prototype=p()).as_numpy_array(), '<u8')\n"
        "assert (got == 7).all()\n"
        "s.destroy()\n"
        "print('ok')\n"
    )
    assert proc.stdout.strip() == "ok"


def test_kept_directories_go_when_a_delete_dir_moves_directories(store, shm_root: Path) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    for i in range(20):
        store.set_sync(f"g{i}/c/0", value(i))
    kept = open_fds() - before
    assert kept > 0  # parents kept between writes
    asyncio.run(store.delete_dir("g0"))  # bumps the global token
    store.set_sync("h/c/0", value(1))  # the next borrow drops every stale one
    assert open_fds() - before < kept
    assert _tag(store, "g1/c/0") == 1  # the keys under the others are unaffected


def test_writes_and_reads_without_statx(store, monkeypatch: pytest.MonkeyPatch) -> None:
    from shmstore import _posix

    monkeypatch.setattr(_posix, "_statx", None)  # as where a seccomp profile refuses it
    for tag in range(1, 5):
        store.set_sync("k", value(tag))
    assert _tag(store, "k") == 4


def test_a_handle_that_goes_while_this_thread_holds_the_locks_never_deadlocks(
    shm_root: Path,
) -> None:
    # The garbage collector may finalize a namespace handle inside a section of
    # this very thread that holds the pool's or the directories' lock.
    import threading

    from shmstore import _namespace

    s = shmstore.SharedMemoryStore("gone")
    for tag in (1, 2):
        s.set_sync("a/c/0", value(tag))  # a pool with a kept file, a kept directory
    ns = s._keyspace()._ns
    pool, dirs = ns._pool, ns._dirs
    assert pool is not None and pool.names() and dirs

    def finalize_inside_locks() -> None:
        with _pool._lock, _namespace._dir_fds_lock:
            _pool.drain_later(pool)
            _namespace._close_dirs(dirs)

    t = threading.Thread(target=finalize_inside_locks)
    t.start()
    t.join(10)
    assert not t.is_alive(), "a finalizer waited for a lock its own thread held"
    s.set_sync("a/c/1", value(3))  # the next calls finish the work left
    assert not pool.names()
    assert not _namespace._dirs_gone
    s.destroy()
