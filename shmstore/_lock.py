"""Inter-process locks that the kernel releases when their holder dies.

``shmstore.Lock(name)`` is a ``flock(2)`` on the entry *name* of the
shared-memory root: the file of a named array, or the directory of a
namespace. So ``a.lock``, ``shmstore.Lock("frames")`` in an unrelated process
and ``SharedMemoryStore(ns).lock()`` are all the same kind of lock, need no
process to "own" them (unlike a ``multiprocessing.Lock``, which only children
of its creator can use), add no file to the root, and go away with the entry
they protect. If a holder dies, even by SIGKILL, the kernel drops its lock and
the next waiter gets it (PITFALLS 8).

Semantics
---------
- Not reentrant: a thread that acquires a lock it holds waits for ever (use a
  timeout), like ``threading.Lock``.
- Threads: one ``Lock`` object may be shared by the threads of a process; each
  waits in turn (a ``threading.Lock`` guards the file descriptor, whose
  ``flock`` would otherwise count as held by all of them).
- Fork: a child never inherits a held lock. At fork the child drops its copy of
  every ``Lock``'s descriptor and state (``os.register_at_fork``) and opens its
  own on next use, so it waits for the parent like any other process.
- Deletion: a lock taken by name on an entry that has since been deleted
  looks the name up again (the deleted array's header says so), so processes
  that lock the name after a delete and re-create agree on one lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from shmstore import _arrayfile as af
from shmstore._names import check_name, entry_path, resolve_root
from shmstore._namespace import check_lock_dir

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Lock", "LockTimeoutError"]

_EX = fcntl.LOCK_EX
_EX_NB = fcntl.LOCK_EX | fcntl.LOCK_NB
_UN = fcntl.LOCK_UN
#: Polling interval bounds while waiting with a timeout (flock has none).
_POLL_MIN = 0.0005
_POLL_MAX = 0.02


class LockTimeoutError(TimeoutError):
    """A :class:`Lock` could not be acquired within its timeout.

    Subclasses ``TimeoutError``; carries the lock's name, root and the timeout.
    """

    def __init__(self, name: str, root: str, timeout: float) -> None:
        self.name = name
        self.root = root
        self.timeout = timeout
        super().__init__(errno.ETIMEDOUT, str(self))

    def __str__(self) -> str:
        return (
            f"the shmstore lock {self.name!r} in {self.root} could not be acquired "
            f"within {self.timeout:g} s: another thread or process holds it"
        )

    def __reduce__(self) -> tuple[type, tuple[str, str, float]]:
        return (type(self), (self.name, self.root, self.timeout))


_live: weakref.WeakSet[Lock] = weakref.WeakSet()


class Lock:
    """An inter-process lock on a named array or namespace, usable by any process.

    Parameters
    ----------
    name
        Name of a named array or namespace in the root: its lock is taken.
    root
        Shared-memory directory; default ``$SHMSTORE_ROOT``, else ``/dev/shm``.
    create
        If nothing has the name, create an empty (zero-length) named array to
        carry the lock: a standalone named lock, removed with
        ``shmstore.delete(name)``. Without it a missing name raises
        ``FileNotFoundError``.
    timeout
        Seconds a ``with`` block waits before raising :class:`LockTimeoutError`
        (``None``: wait for ever). ``acquire()`` takes its own.

    Examples
    --------
    >>> import shmstore
    >>> counter = shmstore.create("doc-counter", 1, "i8")
    >>> with counter.lock:               # or shmstore.Lock("doc-counter")
    ...     counter[0] += 1
    >>> with counter.lock(timeout=5):    # LockTimeoutError after 5 s
    ...     counter[0] += 1
    >>> shmstore.delete("doc-counter")
    """

    name: str
    root: str
    timeout: float | None

    def __init__(
        self,
        name: str,
        *,
        root: str | os.PathLike[str] | None = None,
        create: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.name = check_name(name, "lock")
        self.root = resolve_root(root)
        self.timeout = timeout
        self._bound: int | None = None
        self._init_state()
        try:
            self._open()
        except FileNotFoundError:
            if not create:
                raise
            af.create_lock_file(self.root, self.name)
            self._open()
        _live.add(self)

    @classmethod
    def _for_array(cls, root: str, name: str, ino: int) -> Lock:
        """The lock of the array file with inode *ino* (``NamedArray.lock``).

        Bound to that file: it never moves to another array of the same name.
        """
        self = cls.__new__(cls)
        self.name, self.root, self.timeout = name, root, None
        self._bound = ino
        self._init_state()
        self._open()
        _live.add(self)
        return self

    def _init_state(self) -> None:
        self._fd: int | None = None
        self._kind = ""
        self._state: mmap.mmap | None = None
        self._guard = threading.Lock()
        self._held = False

    def _open(self) -> int:
        fd, kind = self._open_target()
        try:
            if self._bound is not None:
                if os.fstat(fd).st_ino != self._bound:
                    raise FileNotFoundError(
                        errno.ENOENT,
                        f"named array {self.name!r} in {self.root} was deleted; its lock "
                        "went with it",
                        entry_path(self.root, self.name),
                    )
                state = None
            elif kind == "array":
                state = mmap.mmap(fd, af.ARRAY_HEADER_SIZE, prot=mmap.PROT_READ)
            else:
                state = None
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._kind, self._state = fd, kind, state
        return fd

    def _open_target(self) -> tuple[int, str]:
        fd, kind = af.open_lock_target(self.root, self.name)
        if kind == "directory":
            try:
                check_lock_dir(fd, entry_path(self.root, self.name))
            except BaseException:
                os.close(fd)
                raise
            kind = "namespace"
        return fd, kind

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        if self._state is not None:
            self._state.close()
            self._state = None

    def _stale(self, fd: int) -> bool:
        """Whether the entry this lock holds was deleted (only for locks by name)."""
        if self._bound is not None:
            return False
        if self._state is not None:
            return self._state[af.ARRAY_STATE_OFFSET] != 0
        return os.fstat(fd).st_nlink == 0

    # -------------------------------------------------------------- locking
    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Acquire the lock; return whether it was acquired.

        Parameters
        ----------
        blocking
            Wait for the lock (``False``: one try).
        timeout
            Seconds to wait at most (``None`` or ``-1``: no limit). Like
            ``threading.Lock.acquire``, returns ``False`` when it expires;
            ``with lock(timeout=...)`` raises :class:`LockTimeoutError` instead.
        """
        if timeout is not None and timeout < 0:
            if timeout != -1:
                raise ValueError(f"timeout must be a non-negative number or -1, got {timeout}")
            timeout = None
        if not blocking and timeout is not None:
            raise ValueError("can't specify a timeout for a non-blocking call")
        deadline = None if timeout is None else time.monotonic() + timeout
        if not blocking:
            got = self._guard.acquire(False)
        elif timeout is None:
            got = self._guard.acquire()
        else:
            got = self._guard.acquire(timeout=timeout)
        if not got:
            return False
        try:
            while True:
                fd = self._fd if self._fd is not None else self._open()
                if blocking and deadline is None:
                    fcntl.flock(fd, _EX)
                elif not _poll(fd, deadline):
                    self._guard.release()
                    return False
                if self._stale(fd):
                    # The entry was deleted under us: the lock of whatever has
                    # the name now is the one the other processes take.
                    fcntl.flock(fd, _UN)
                    self._close()
                    continue
                self._held = True
                return True
        except BaseException:
            self._guard.release()
            raise

    def release(self) -> None:
        """Release the lock.

        Raises
        ------
        RuntimeError
            If it is not held by this object.
        """
        if not self._held:
            raise RuntimeError(f"release of the unheld shmstore lock {self.name!r}")
        self._held = False
        try:
            fcntl.flock(self._fd, _UN)  # type: ignore[arg-type]
        finally:
            self._guard.release()

    def locked(self) -> bool:
        """Whether any thread or process holds the lock now (a snapshot).

        Probes with a shared ``flock`` on a second descriptor, which may make a
        concurrent non-blocking ``acquire`` elsewhere fail at that instant.
        """
        if self._held:
            return True
        # Not under the guard: a thread may be waiting in acquire() with it.
        probe = -1
        fd = self._fd
        if fd is not None:
            with contextlib.suppress(OSError):  # a new open file description
                probe = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        if probe < 0:
            probe, _ = self._open_target()
        try:
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(probe)
        return False

    def __enter__(self) -> Lock:
        if self.timeout is None:
            # The common case, inlined: the lock round trip is two system calls
            # and this is most of what remains.
            self._guard.acquire()
            try:
                fd = self._fd
                if fd is not None:
                    fcntl.flock(fd, _EX)
                    if self._state is None or not self._state[af.ARRAY_STATE_OFFSET]:
                        self._held = True
                        return self
                    fcntl.flock(fd, _UN)
            finally:
                if not self._held:
                    self._guard.release()
        if not self.acquire(timeout=self.timeout):
            raise LockTimeoutError(self.name, self.root, self.timeout)  # type: ignore[arg-type]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._held:
            raise RuntimeError(f"release of the unheld shmstore lock {self.name!r}")
        self._held = False
        try:
            fcntl.flock(self._fd, _UN)  # type: ignore[arg-type]
        finally:
            self._guard.release()

    def __call__(self, timeout: float | None = None) -> _Holding:
        """``with lock(timeout=5):`` holds the lock, or raises :class:`LockTimeoutError`."""
        return _Holding(self, timeout)

    # ----------------------------------------------------------- identity
    def __reduce__(self) -> tuple[Any, tuple[str, str, float | None]]:
        # A lock travels by name and arrives unheld.
        return (_restore, (self.name, self.root, self.timeout))

    def __repr__(self) -> str:
        state = "held" if self._held else "unheld"
        what = self._kind or "entry"
        return f"<shmstore.Lock {self.name!r} ({what} in {self.root}), {state} here>"

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close()


class _Holding:
    """Context manager of ``lock(timeout=...)``."""

    __slots__ = ("_lock", "_timeout")

    def __init__(self, lock: Lock, timeout: float | None) -> None:
        self._lock = lock
        self._timeout = timeout

    def __enter__(self) -> Lock:
        lock = self._lock
        if not lock.acquire(timeout=self._timeout):
            raise LockTimeoutError(lock.name, lock.root, self._timeout)  # type: ignore[arg-type]
        return lock

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def _poll(fd: int, deadline: float | None) -> bool:
    """Try to take the flock until *deadline* (``None``: once)."""
    delay = _POLL_MIN
    while True:
        try:
            fcntl.flock(fd, _EX_NB)
            return True
        except BlockingIOError:
            pass
        if deadline is None:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(delay * 2, _POLL_MAX)


def _restore(name: str, root: str, timeout: float | None) -> Lock:
    return Lock(name, root=root, timeout=timeout)


def _after_fork_in_child() -> None:
    # The child shares each descriptor's open file description, and with it a
    # held flock: unlocking through it would release the parent's lock. Drop
    # them all; each Lock reopens its own on next use.
    for lock in list(_live):
        lock._guard = threading.Lock()
        lock._held = False
        fd, lock._fd = lock._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


os.register_at_fork(after_in_child=_after_fork_in_child)
