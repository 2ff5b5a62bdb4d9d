"""Inter-process locks: flock on named arrays and namespaces, released when the holder dies."""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python

import shmstore
from shmstore._errors import ForeignEntryError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _popen(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _expect(proc: subprocess.Popen[str], line: str) -> None:
    got = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if got != line:
        proc.kill()
        _, err = proc.communicate(timeout=60)
        raise AssertionError(f"expected {line!r} from the child, got {got!r}\n{err}")


INCREMENTER = """
import sys, shmstore
name, how = sys.argv[1], sys.argv[2]
counter = shmstore.attach(name)
lock = counter.lock if how == "array" else shmstore.Lock(name)
print("ready", flush=True)
sys.stdin.readline()                      # start together
for _ in range(1000):
    with lock:
        counter[0] += 1
"""


def test_four_processes_times_1000_increments() -> None:
    counter = shmstore.create("counter", 1, "i8")
    procs = [_popen(INCREMENTER, "counter", how) for how in ("array", "name") * 2]
    try:
        for p in procs:
            _expect(p, "ready")
        for p in procs:
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert int(counter[0]) == 4000


HOLDER = """
import sys, shmstore
lock = shmstore.Lock(sys.argv[1])
lock.acquire()
print("held", flush=True)
sys.stdin.readline()   # hold until killed
"""


def test_sigkilled_holder_releases_the_lock() -> None:
    shmstore.create("victim", 1, "i8")
    holder = _popen(HOLDER, "victim")
    waiter = None
    try:
        _expect(holder, "held")
        lock = shmstore.Lock("victim")
        assert lock.locked()
        assert not lock.acquire(blocking=False)
        assert not lock.acquire(timeout=0.05)
        waiter = _popen(
            """
            import sys, shmstore
            lock = shmstore.Lock(sys.argv[1])
            print("waiting", flush=True)
            lock.acquire()                 # blocks until the holder is gone
            print("acquired", flush=True)
            """,
            "victim",
        )
        _expect(waiter, "waiting")
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        assert holder.returncode == -signal.SIGKILL
        _expect(waiter, "acquired")  # woken by the kernel, no polling
        assert waiter.wait(timeout=60) == 0
        # and once the waiter has exited too, anyone gets it at once
        out = run_python(
            "import shmstore; l = shmstore.Lock('victim'); print(l.acquire(timeout=1.0))"
        ).stdout
        assert out.strip() == "True"
        assert lock.acquire(blocking=False)
        lock.release()
    finally:
        for p in (holder, waiter):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_timeouts_follow_threading_and_filelock() -> None:
    a = shmstore.create("slow", 1)
    holder = _popen(HOLDER, "slow")
    try:
        _expect(holder, "held")
        assert a.lock.acquire(timeout=0.02) is False
        assert a.lock.acquire(blocking=False) is False
        with pytest.raises(shmstore.LockTimeoutError, match="'slow'") as info, a.lock(timeout=0.02):
            pass
        assert isinstance(info.value, TimeoutError)
        assert pickle.loads(pickle.dumps(info.value)).name == "slow"
        lock = shmstore.Lock("slow", timeout=0.02)
        with pytest.raises(TimeoutError, match=r"within 0\.02 s"), lock:
            pass
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(ValueError, match="non-blocking"):
        a.lock.acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        a.lock.acquire(timeout=-2)
    assert a.lock.acquire(timeout=-1)
    a.lock.release()
    with pytest.raises(RuntimeError, match="unheld"):
        a.lock.release()


def test_threads_share_one_lock_object_and_wait_in_turn() -> None:
    counter = shmstore.create("threads", 1, "i8")
    lock = counter.lock
    other = shmstore.Lock("threads")  # a second object in the same process
    barrier = threading.Barrier(4)

    def work(which: shmstore.Lock) -> None:
        barrier.wait()
        for _ in range(1000):
            with which:
                value = int(counter[0])
                counter[0] = value + 1

    threads = [threading.Thread(target=work, args=(lk,)) for lk in (lock, lock, other, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(counter[0]) == 4000
    assert not lock.locked()


def test_not_reentrant_but_a_timeout_saves_you() -> None:
    a = shmstore.create("reent", 1)
    with a.lock:
        assert not a.lock.acquire(timeout=0.01)
        assert not shmstore.Lock("reent").acquire(blocking=False)


_FORK_SCRIPT = """
import os, subprocess, sys
import shmstore

a = shmstore.create("fork", 1, "i8")
lock = a.lock
lock.acquire()
pid = os.fork()
if pid == 0:
    ok = lock.locked()  # locked: the parent holds it
    try:
        lock.release()
        ok = False  # the child must not be able to release the parent's lock
    except RuntimeError:
        pass
    ok = ok and not lock.acquire(blocking=False)
    os._exit(0 if ok else 2)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
# the child's exit did not release the parent's lock
other = subprocess.run(
    [sys.executable, "-c",
     "import shmstore; print(shmstore.Lock('fork').acquire(blocking=False))"],
    capture_output=True, text=True, check=True,
)
assert other.stdout.strip() == "False", other
lock.release()
# a child forked while nothing is held can take it for itself
pid = os.fork()
if pid == 0:
    os._exit(0 if lock.acquire(blocking=False) else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert lock.acquire(blocking=False)  # and its death released it
lock.release()
shmstore.delete("fork")
print("ok")
"""


def test_fork_child_does_not_inherit_a_held_lock() -> None:
    # Forked from a fresh single-threaded interpreter: the test process runs
    # zarr's and dask's threads, and fork() beside threads may deadlock.
    assert run_python(_FORK_SCRIPT).stdout.strip() == "ok"


def test_namespace_lock_and_store_method(shm_root: Path) -> None:
    store = shmstore.SharedMemoryStore("ns-locked")
    lock = store.lock()
    assert isinstance(lock, shmstore.Lock)
    with lock:
        out = run_python(
            "import shmstore; print(shmstore.Lock('ns-locked').acquire(blocking=False))"
        ).stdout
        assert out.strip() == "False"
    assert shmstore.Lock("ns-locked").acquire(blocking=False)
    store.destroy()
    assert list(shm_root.iterdir()) == []


def test_lock_by_name_needs_an_entry_or_create(shm_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"'free'.*create=True"):
        shmstore.Lock("free")
    lock = shmstore.Lock("free", create=True)
    with lock:
        assert shmstore.Lock("free").locked()
    assert [r.name for r in shmstore.list()] == ["free"]
    assert shmstore.Lock("free", create=True).acquire(blocking=False)  # exists now
    shmstore.delete("free")
    assert list(shm_root.iterdir()) == []
    with pytest.raises(ValueError, match="lock name"):
        shmstore.Lock("../escape")


def test_lock_goes_with_the_array_and_follows_the_name(shm_root: Path) -> None:
    shmstore.create("cycle", 1)
    by_name = shmstore.Lock("cycle")
    with by_name:
        pass
    shmstore.delete("cycle")
    assert list(shm_root.iterdir()) == []  # no lock file is left
    shmstore.create("cycle", 1)
    holder = _popen(HOLDER, "cycle")
    try:
        _expect(holder, "held")
        # the old object looks the name up again: it is the new array's lock
        assert not by_name.acquire(blocking=False)
    finally:
        holder.kill()
        holder.wait()
    assert by_name.acquire(blocking=False)
    by_name.release()


def test_lock_refuses_foreign_entries(shm_root: Path, tmp_path: Path) -> None:
    (shm_root / "plain").write_bytes(b"not an array at all")
    with pytest.raises(ForeignEntryError):
        shmstore.Lock("plain")
    (tmp_path / "t").write_bytes(b"")
    (shm_root / "link").symlink_to(tmp_path / "t")
    with pytest.raises(ForeignEntryError, match="symbolic link"):
        shmstore.Lock("link")
    (shm_root / "dir").mkdir()
    with pytest.raises(ForeignEntryError):
        shmstore.Lock("dir")


def test_lock_pickles_by_name_and_arrives_unheld() -> None:
    a = shmstore.create("pick", 1)
    with a.lock:
        copy = pickle.loads(pickle.dumps(a.lock))
        assert isinstance(copy, shmstore.Lock)
        assert not copy.acquire(blocking=False)  # the same lock, held by a.lock
        assert copy.locked()
    assert copy.acquire(blocking=False)
    copy.release()


def test_views_share_the_array_lock() -> None:
    a = shmstore.create("views", (4, 4))
    assert a[1:].lock is a.lock
    with pytest.raises(ValueError, match="computed copy"):
        (a + 1).view(shmstore.NamedArray).lock  # noqa: B018
    assert "views" in repr(a.lock)


def test_example_lock_counter(shm_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "lock_counter.py"), "--processes", "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 processes x 1000 increments = 4000 (expected 4000)" in proc.stdout
    assert "counter deleted: True" in proc.stdout
    assert list(shm_root.iterdir()) == []


def test_counter_sum_is_exact_with_numpy_views() -> None:
    a = shmstore.create("np", 2, "i8", fill=np.array([5, 6]))
    with a[:1].lock:
        a[0] += 1
    assert a.tolist() == [6, 6]
