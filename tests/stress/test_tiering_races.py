"""Regressions the fault engine found in tiered namespaces, each reproduced on its own.

Each test drives real processes at one race or one kill point and checks the
promise that broke there: a reader always finds a key that exists (old value
or new, never neither), a write that returned is never lost, and after
``shmstore gc`` the accounted usage equals the bytes the tier's files hold.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fcntl
import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from zarr.core.buffer import default_buffer_prototype

import shmstore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
soak = importlib.import_module("soak")

Buffer = default_buffer_prototype().buffer
SMALL, BIG = 100, 128 << 10  # under a 64 KiB capacity: BIG always spills, SMALL fits


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def _tiered(shm_root: Path, tmp_path: Path, capacity: int = 64 << 10) -> shmstore.SharedMemoryStore:
    return shmstore.SharedMemoryStore(
        "t", root=shm_root, capacity=capacity, spill=str(tmp_path / "spill.zarr")
    )


FLIPPER = r"""
import sys, shmstore
from zarr.core.buffer import default_buffer_prototype
B = default_buffer_prototype().buffer
s = shmstore.SharedMemoryStore("t")
values = [B.from_bytes(b"s" * int(sys.argv[1])), B.from_bytes(b"b" * int(sys.argv[2]))]
for i in range(int(sys.argv[3])):
    s.set_sync("a/k", values[i % 2])
    if i == 1:
        print("ready", flush=True)
"""


def test_a_key_moving_between_tiers_is_never_missing_for_a_reader(
    shm_root: Path, tmp_path: Path
) -> None:
    """One writer moves a key back and forth between shared memory and the spill
    tier; a reader in another process must always get one of its two values."""
    store = _tiered(shm_root, tmp_path)
    store.set_sync("a/k", Buffer.from_bytes(b"s" * SMALL))
    writer = _python(FLIPPER, str(SMALL), str(BIG), "1500")
    assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    reader = shmstore.SharedMemoryStore("t", root=shm_root, read_only=True)
    seen: collections.Counter[str] = collections.Counter()
    try:
        while writer.poll() is None and len(seen) <= 2:
            try:
                value = reader.get_sync("a/k")
            except OSError as e:
                seen[f"{type(e).__name__}: {e}"] += 1
                continue
            seen["missing" if value is None else f"{len(value.to_bytes())} bytes"] += 1
    finally:
        writer.kill()
        writer.wait()
    wrong = {k: n for k, n in seen.items() if k not in (f"{SMALL} bytes", f"{BIG} bytes")}
    assert not wrong, f"a key that always existed read as {wrong} (of {sum(seen.values())} reads)"


RACER = r"""
import sys, shmstore
from zarr.core.buffer import default_buffer_prototype
s = shmstore.SharedMemoryStore("t")
value = default_buffer_prototype().buffer.from_bytes(sys.argv[1].encode() * int(sys.argv[2]))
for line in sys.stdin:
    s.set_sync("k", value)
    print("done", flush=True)
"""


def test_writers_racing_on_one_spilled_key_leave_it_readable(
    shm_root: Path, tmp_path: Path
) -> None:
    """A spilled key, then two writers at once: one value that fits in shared
    memory, one that spills. Once both returned, the key holds one of them."""
    store = _tiered(shm_root, tmp_path)
    racers = [_python(RACER, "s", str(SMALL)), _python(RACER, "b", str(BIG))]
    outcomes: collections.Counter[str] = collections.Counter()
    try:
        for _ in range(200):
            store.set_sync("k", Buffer.from_bytes(b"o" * BIG))  # spilled
            for r in racers:
                assert r.stdin is not None
                r.stdin.write("go\n")
                r.stdin.flush()
            for r in racers:
                assert r.stdout is not None and r.stdout.readline() == "done\n"
            try:
                value = store.get_sync("k")
                outcomes["missing" if value is None else value.to_bytes()[:1].decode()] += 1
            except OSError as e:
                outcomes[f"{type(e).__name__}: {e}"] += 1
            if set(outcomes) - {"s", "b"}:
                break
    finally:
        for r in racers:
            r.kill()
            r.wait()
    wrong = {k: n for k, n in outcomes.items() if k not in ("s", "b")}
    assert not wrong, f"after both writes returned the key read as {wrong}; rounds: {outcomes}"


MID_COPY = r"""
import sys, numpy as np, shmstore
from zarr.core.buffer import default_buffer_prototype
s = shmstore.SharedMemoryStore("t")
value = default_buffer_prototype().buffer.from_bytes(np.ones(32 << 20, "u1").tobytes())
i = 0
while True:
    s.set_sync(f"big{i}", value)
    i += 1
    print("ready", flush=True)
"""

_IN_CREATE = 0x100


def test_capacity_matches_files_after_a_writer_dies_mid_copy(
    shm_root: Path, tmp_path: Path
) -> None:
    """SIGKILL while a 32 MiB value is being copied (after its bytes were reserved)."""
    store = _tiered(shm_root, tmp_path, capacity=1 << 30)
    tmp = Path(store.path, ".shmstore", "state", "tmp")
    libc = ctypes.CDLL(None, use_errno=True)
    ifd = libc.inotify_init1(os.O_CLOEXEC)
    if ifd < 0:
        pytest.skip(f"no inotify here: {os.strerror(ctypes.get_errno())}")
    try:
        writer = _python(MID_COPY)
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        assert libc.inotify_add_watch(ifd, bytes(tmp), _IN_CREATE) >= 0
        os.read(ifd, 4096)  # a new value's temporary file exists: it is being copied
        writer.send_signal(signal.SIGKILL)
        assert writer.wait() == -signal.SIGKILL
    finally:
        os.close(ifd)
    assert list(tmp.iterdir()), "the kill did not land during a copy"
    gc = soak.gc_cli(str(shm_root))
    assert gc["returncode"] == 0, gc
    assert not list(tmp.iterdir())
    leak = soak.capacity_leak(str(shm_root), "t")
    assert leak["leaked"] == 0, leak


CHURN = r"""
import shmstore
from zarr.core.buffer import default_buffer_prototype
s = shmstore.SharedMemoryStore("t")
value = default_buffer_prototype().buffer.from_bytes(b"v" * 4096)
key = "a/b/c/d/e/f/g/h/k"  # alone in its directories: every delete prunes eight of them
i = 0
while True:
    s.set_sync(key, value)
    s.delete_sync(key)
    i += 1
    if i == 1:
        print("ready", flush=True)
"""


def test_capacity_matches_files_after_a_writer_dies_holding_the_counter(
    shm_root: Path, tmp_path: Path
) -> None:
    """SIGKILL while the writer holds the namespace's accounting lock (a delete or an
    install in progress), then gc: the accounted usage is what the files hold."""
    store = _tiered(shm_root, tmp_path, capacity=1 << 30)
    counter = Path(store.path, ".shmstore", "state", "usage")
    for _ in range(2):
        writer = _python(CHURN)
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        fd = os.open(counter, os.O_RDWR)
        try:
            for _ in range(10_000_000):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError as e:
                    assert e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
                    writer.send_signal(signal.SIGKILL)  # it holds the lock now
                    break
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:
                writer.kill()
        finally:
            os.close(fd)
        assert writer.wait() == -signal.SIGKILL
        gc = soak.gc_cli(str(shm_root))
        assert gc["returncode"] == 0, gc
        leak = soak.capacity_leak(str(shm_root), "t")
        assert leak["leaked"] == 0, leak


SAME_KEY = r"""
import random, sys, shmstore
from zarr.core.buffer import default_buffer_prototype
B = default_buffer_prototype().buffer
s = shmstore.SharedMemoryStore("t")
values = [B.from_bytes(bytes(n)) for n in (100, 5000, 20000, 70000)]
print("ready", flush=True)
sys.stdin.readline()
for _ in range(500):
    s.set_sync("k", random.choice(values))
"""


def test_capacity_matches_files_after_writers_race_on_one_key(
    shm_root: Path, tmp_path: Path
) -> None:
    """Two processes replace one key with values of different sizes at once."""
    _tiered(shm_root, tmp_path, capacity=1 << 30)
    writers = [_python(SAME_KEY) for _ in range(2)]
    for w in writers:
        assert w.stdout is not None and w.stdout.readline() == "ready\n"
    for w in writers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    assert [w.wait() for w in writers] == [0, 0]
    leak = soak.capacity_leak(str(shm_root), "t")
    assert leak["leaked"] == 0, leak
