"""Recycled pages: the files a process's writes displaced, kept for its next write of that size.

Writing a new version of a key into fresh tmpfs pages costs about five times
a ``memcpy`` (the kernel allocates, zeroes and maps every page, then frees the
old version's at the rename). A writer that replaces a key therefore keeps
the version it displaced instead of freeing it, and writes a later value of
the same size into it. Atomic replacement and the zero-copy views that other
processes hold stay as they are:

- The new version goes in with ``renameat2(RENAME_EXCHANGE)``, so the old one
  stays linked, under a temporary name of the writer in ``.shmstore/state/tmp``
  (named with its pid: a dead writer's pool is ``shmstore gc``'s to reclaim).
  A delete renames the value there instead of unlinking it.
- A pooled file is written again only under a write *lease*
  (``F_SETLEASE, F_WRLCK``), which the kernel grants only while no other
  descriptor of the file is open. A mapping holds its file open, so a reader
  still holding a view of the old version makes the lease fail, and that
  file is left alone (after three refusals it is released to the kernel,
  pages freed when the last view goes). While the lease is held, an ``open``
  of the file waits; it is dropped as soon as the copy is done.
- A reader re-checks, after mapping a key, that the key still names the file
  it mapped (``_namespace``): an open that resolved the key's name before the
  exchange and was held by the lease sees the new content, not a torn one.
- The writer keeps the descriptor (and, once reused, a writable mapping) of
  each file it wrote, so that a reuse is one lease, one ``memcpy`` and one
  ``futimens``. Descriptors are bounded per process (:data:`MAX_FILES`), and
  the pooled bytes too (:func:`budget`); the oldest go first.

Pooled files are tmpfs pages in use: ``df`` and the namespace's ``free``
space count them, and ``shmstore du`` shows them as bookkeeping. A process
releases its pools when it exits, when a namespace handle goes, and when it
meets a full filesystem (before giving up a write). Tiered namespaces and
host caches, whose capacity counts installed values, do not pool. Where
exchange or leases are unavailable (another filesystem, ``fs.leases-enable=0``)
writes take the plain path. See docs/design.md ("Recycled pages").
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import errno
import os
import resource
import threading
import weakref
from typing import TYPE_CHECKING, Any

from shmstore import _posix as px

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_FILES",
    "MIN_BYTES",
    "Kept",
    "Pool",
    "any_kept",
    "budget",
    "drain_all",
    "drain_later",
]

#: Smaller values are written into fresh pages: the pool would save next to nothing.
MIN_BYTES = 16 * 1024
#: Refusals of the lease (a reader maps the file) before a pooled file is let go.
_MAX_REFUSALS = 3


def _max_files() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    return max(32, min(1 << 14, soft // 2))


#: Descriptors the pools of a process keep at most: half of ``ulimit -n``, at
#: most 16384. A key rewritten again and again holds two (its value and the
#: version it displaced), and a bound smaller than that pattern is worse than
#: none: the oldest go first, which, for an array rewritten chunk by chunk,
#: are exactly the next ones needed. A writer that meets the limit gives
#: them all back before it fails (``Namespace._prepare``).
MAX_FILES = _max_files()

_lock = threading.Lock()
_pools: weakref.WeakSet[Pool] = weakref.WeakSet()
# Every kept file of the process, oldest first: pooled ones (name set) and
# live values this process wrote (name None), which become pooled if this
# process displaces them.
_kept: collections.OrderedDict[Kept, None] = collections.OrderedDict()
_live: dict[tuple[int, int], Kept] = {}
_pooled_bytes = 0
_budget: int | None = None


def budget(fs_fd: int | None = None) -> int:
    """Bytes a process may keep pooled: ``SHMSTORE_POOL_BYTES``, else an eighth of the
    filesystem of the first namespace it writes to, at most 4 GiB."""
    global _budget
    if _budget is None:
        env = os.environ.get("SHMSTORE_POOL_BYTES")
        if env is not None:
            try:
                _budget = max(0, int(env))
            except ValueError:
                raise ValueError(
                    f"SHMSTORE_POOL_BYTES={env!r} is not a number of bytes; "
                    "set it to an integer (0 turns recycled pages off)"
                ) from None
        elif fs_fd is not None:
            st = os.fstatvfs(fs_fd)
            _budget = min(4 << 30, st.f_blocks * st.f_frsize // 8)
        else:
            return 0
    return _budget


class Kept:
    """A file a writer keeps: its descriptor, size and (once reused) a writable mapping."""

    __slots__ = ("addr", "fd", "key", "name", "pool", "refusals", "size", "target")

    def __init__(self, pool: Pool, fd: int, size: int, key: tuple[int, int]) -> None:
        self.pool = pool
        self.fd = fd
        self.size = size
        self.key = key
        self.name: str | None = None
        # The writable mapping, as a ctypes array (px.map_readwrite), and its address.
        self.target: Any = None
        self.addr = 0
        self.refusals = 0

    def fill(self, data: Any) -> None:
        """Copy *data* (a C-contiguous buffer of exactly :attr:`size` bytes) in,
        under the lease :meth:`Pool.take` took, then drop the lease.

        The copy (``memmove`` through ctypes) runs without the GIL, for a
        source it can address (a writable buffer, as zarr's encoded chunks
        are): writers on several threads (zarr's fused pipeline) copy at once.
        A read-only source (``bytes``) is assigned.
        """
        try:
            if self.target is None:
                self._map()
            try:
                source = (ctypes.c_char * self.size).from_buffer(data)
            except TypeError:
                memoryview(self.target).cast("B")[:] = memoryview(data).cast("B")
            else:
                (_memmove if self.size >= _COPY_WITHOUT_GIL else _memmove_gil)(
                    self.addr, source, self.size
                )
                del source  # the export on the source ends here
            px.touch_fd(self.fd)  # mappings do not move the modification time
        finally:
            px.lease(self.fd, take=False)

    def write(self, fn: Callable[[memoryview], None]) -> None:
        """``fn(view)`` on a writable view of the whole file, then drop the lease.

        *fn* must not keep references to the view.
        """
        try:
            if self.target is None:
                self._map()
            fn(memoryview(self.target).cast("B"))
            px.touch_fd(self.fd)
        finally:
            px.lease(self.fd, take=False)

    def _map(self) -> None:
        self.target = px.map_readwrite(self.fd, self.size)
        self.addr = ctypes.addressof(self.target)

    def close(self) -> None:
        self.target = None  # unmapped as it goes
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_memmove = ctypes.memmove
# The same memmove with the GIL held, for copies shorter than handing the GIL
# over and waiting for it back can take among threads (px: "the GIL held").
_memmove_gil = ctypes.PYFUNCTYPE(
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t
)(ctypes.cast(ctypes.memmove, ctypes.c_void_p).value)
_COPY_WITHOUT_GIL = 256 * 1024


class Pool:
    """The recycled files of one namespace handle, in its temporary directory."""

    def __init__(self, tmp_fd: int) -> None:
        self._tmp_fd = os.dup(tmp_fd)
        self._free: dict[int, collections.deque[Kept]] = {}
        self.enabled = budget(self._tmp_fd) > 0
        # Each filesystem gets at most an eighth of its size, whatever the budget.
        vfs = os.fstatvfs(self._tmp_fd)
        self._limit = min(budget(), vfs.f_blocks * vfs.f_frsize // 8)
        self._bytes = 0
        _pools.add(self)
        # Not at exit: drain_all (atexit) still needs the descriptor then.
        weakref.finalize(self, os.close, self._tmp_fd).atexit = False

    def take(self, size: int) -> Kept | None:
        """A pooled file of *size* bytes that nobody else has open, leased; or ``None``."""
        if _pending:
            _drain_pending()
        if not self.enabled or size < MIN_BYTES:
            return None
        free = self._free
        for _ in range(4):
            with _lock:
                queue = free.get(size)
                if not queue:
                    return None
                kept = queue.popleft()
                del _kept[kept]
                _account(kept, -1)
            try:
                if self._lease(kept):
                    return kept
            except OSError as e:
                self._let_go(kept)
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    return None  # fresh pages: that write frees descriptors if it must
                raise
            kept.refusals += 1
            if kept.refusals >= _MAX_REFUSALS or not self.enabled:
                self._let_go(kept)
                continue
            with _lock:  # a reader still maps it: try it again later
                free.setdefault(size, collections.deque()).append(kept)
                _kept[kept] = None
                _account(kept, 1)
        return None

    def _lease(self, kept: Kept) -> bool:
        fd = kept.fd
        if fd < 0:
            fd = kept.fd = os.open(
                kept.name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._tmp_fd
            )
        try:
            if not px.lease(fd, take=True):
                return False  # open elsewhere (a view, a descriptor)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EACCES, errno.EPERM):
                self.enabled = e.errno == errno.EACCES  # another user's file: this one only
                kept.refusals = _MAX_REFUSALS
                return False
            raise
        st = px.quick_stat(fd)
        if st.st_size != kept.size or st.st_nlink != 1:
            px.lease(fd, take=False)
            kept.refusals = _MAX_REFUSALS
            return False
        return True

    def fresh(self, fd: int, size: int) -> Kept | None:
        """Keep the descriptor of a file just written (``None``: not worth keeping)."""
        if not self.enabled or size < MIN_BYTES:
            return None
        st = os.fstat(fd)
        px.lease_signal(fd)
        return Kept(self, fd, size, (st.st_dev, st.st_ino))

    def installed(self, kept: Kept) -> None:
        """*kept* is now a key's value: remember it until it is displaced (or evicted)."""
        kept.name = None
        kept.refusals = 0
        with _lock:
            _live[kept.key] = kept
            _kept[kept] = None
            victims = _evict() if _over() else None
        if victims:
            _close(victims)

    def put(self, name: str, st: Any) -> bool:
        """Pool the regular file now named *name* in the temporary directory; False if not.

        A file not pooled is unlinked (its pages go when the last view does).
        """
        if _pending:
            _drain_pending()
        size = st.st_size
        if not self.enabled or size < MIN_BYTES or st.st_nlink != 1:
            self._unlink(name)
            return False
        with _lock:
            victims = None
            kept = _live.pop((st.st_dev, st.st_ino), None)
            if kept is not None:
                del _kept[kept]
                if kept.pool is not self:
                    victims = [kept]  # written through another handle: closed
                    kept = None
            if kept is None:
                kept = Kept(self, -1, size, (st.st_dev, st.st_ino))
            kept.name = name
            kept.refusals = 0
            queue = self._free.get(size)
            if queue is None:
                queue = self._free[size] = collections.deque()
            queue.append(kept)
            _kept[kept] = None
            _account(kept, 1)
            if _over() or self._bytes > self._limit:
                victims = (victims or []) + _evict(self)
        if victims:
            _close(victims)  # (the rename here set the file's ctime: gc sees it as ours)
        return True

    def room(self, size: int) -> bool:
        """Whether a file of *size* bytes would be pooled now."""
        return (
            self.enabled
            and size >= MIN_BYTES
            and self._bytes + size <= self._limit
            and _pooled_bytes + size <= budget()
        )

    def forget(self, kept: Kept | None) -> None:
        """Close *kept* (a file that is not kept after all: its name is not touched)."""
        if kept is not None:
            kept.close()

    def discard(self, kept: Kept) -> None:
        """Unlink and close the pooled file *kept* (taken, then not used)."""
        self._let_go(kept)

    def _let_go(self, kept: Kept) -> None:
        if kept.name is not None:
            self._unlink(kept.name)
            kept.name = None
        kept.close()

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self._tmp_fd)

    def names(self) -> set[str]:
        """The names of the files this pool holds (in its directory)."""
        with _lock:
            return {k.name for q in self._free.values() for k in q if k.name is not None}

    def pooled_bytes(self) -> int:
        """Bytes this pool holds."""
        with _lock:
            return sum(k.size for q in self._free.values() for k in q)

    def drain(self) -> None:
        """Release every file of this pool, and the descriptors of values it wrote."""
        with _lock:
            victims = [k for k in _kept if k.pool is self]
            for kept in victims:
                _kept.pop(kept)
                if kept.name is None:
                    _live.pop(kept.key, None)
                else:
                    _account(kept, -1)
            self._free.clear()
        for kept in victims:
            self._let_go(kept)


def _account(kept: Kept, sign: int) -> None:
    """Under the lock: count *kept*'s bytes in (``1``) or out of (``-1``) the pools."""
    global _pooled_bytes
    _pooled_bytes += sign * kept.size
    kept.pool._bytes += sign * kept.size


def _over() -> bool:
    """Under the lock: whether the process keeps more than its bounds allow."""
    return len(_kept) > MAX_FILES or _pooled_bytes > budget()


def _evict(pool: Pool | None = None) -> list[Kept]:
    """Under the lock: take the oldest kept files out until within the bounds
    (the process's, and *pool*'s own share of its filesystem)."""
    victims = []
    while _kept and _over():
        victims.append(_take_out(next(iter(_kept))))
    if pool is not None and pool._bytes > pool._limit:
        for kept in [k for k in _kept if k.pool is pool and k.name is not None]:
            if pool._bytes <= pool._limit:
                break
            victims.append(_take_out(kept))
    return victims


def _take_out(kept: Kept) -> Kept:
    """Under the lock: remove *kept* from every table (the caller lets it go)."""
    del _kept[kept]
    if kept.name is None:
        _live.pop(kept.key, None)
    else:
        _account(kept, -1)
        queue = kept.pool._free.get(kept.size)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(kept)
    return kept


def _close(victims: list[Kept]) -> None:
    for kept in victims:
        kept.pool._let_go(kept)


def any_kept() -> bool:
    """Whether this process keeps any file at all."""
    return bool(_kept)


def drain_all() -> None:
    """Release every pool of this process (at exit, and when a filesystem is full)."""
    _drain_pending()
    for pool in list(_pools):
        with contextlib.suppress(OSError):
            pool.drain()


# Pools of handles that went while the lock was held (drain_later).
_pending: list[Pool] = []


def drain_later(pool: Pool) -> None:
    """Release *pool* now if the lock is free, else at this process's next pool call.

    For finalizers: the garbage collector may run one inside a section of this
    very thread that holds the (non-reentrant) lock, where waiting for it
    would wait forever.
    """
    if _lock.acquire(blocking=False):
        _lock.release()
        with contextlib.suppress(OSError):
            pool.drain()
    else:
        _pending.append(pool)


def _drain_pending() -> None:
    while _pending:
        try:
            pool = _pending.pop()
        except IndexError:  # another thread took the last one
            return
        with contextlib.suppress(OSError):
            pool.drain()


def _after_fork() -> None:
    # The child must not write into its parent's files: close them, unlink nothing.
    global _pooled_bytes, _lock
    _lock = threading.Lock()
    for kept in list(_kept):
        with contextlib.suppress(OSError):
            kept.close()
    _kept.clear()
    _live.clear()
    _pooled_bytes = 0
    for pool in list(_pools):
        pool._free.clear()
        pool._bytes = 0


atexit.register(drain_all)
os.register_at_fork(after_in_child=_after_fork)
