"""POSIX helpers: no-follow opens beneath a directory, read-only maps, whole writes, trees, locks.

Every path here is resolved relative to a directory descriptor and never
through a symbolic link, so neither a link planted in the (world-writable)
root nor a crafted key can make shmstore read or write outside a namespace.
Nothing here knows what a namespace or a named array is. See docs/design.md
("Safety").
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import platform
import shutil
import signal
import socket
import stat
import sys
import threading
from typing import Any

__all__ = [
    "O_CREATE",
    "O_CREATE_RW",
    "O_DIR",
    "O_READ",
    "as_bytes_view",
    "close_fds",
    "creator_alive",
    "exchange",
    "flock_recheck",
    "lease",
    "lease_signal",
    "lock_holders",
    "map_readonly",
    "map_readwrite",
    "open_beneath",
    "open_dir_beneath",
    "pid_alive",
    "pwrite_all",
    "quick_stat",
    "rmtree_at",
    "root_fd",
    "touch_fd",
    "write_all",
]

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted where a value should be must not hang.
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Read-write: a file kept for reuse is mapped writable later (recycled pages).
O_CREATE_RW = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: A process that started this long after a leftover last changed cannot have
#: made it: its pid was reused (``/proc`` start times have a 1 s resolution).
_REUSE_MARGIN_S = 2.0


# ---------------------------------------------------------------- descriptors
# Root directory descriptors, one per root and process, the most recently used
# last. Inherited across fork. A program uses a root or two; one that goes
# through many (a test suite gives each test its own) must not keep a
# descriptor for each: the oldest are closed past _ROOT_FDS. A caller uses the
# descriptor at once and never keeps it.
_root_fds: collections.OrderedDict[str, int] = collections.OrderedDict()
_ROOT_FDS = 64
_root_lock = threading.Lock()


def root_fd(root: str) -> int:
    """This process's descriptor of the (resolved) root directory *root*."""
    fd = _root_fds.get(root)
    if fd is not None:
        return fd
    with _root_lock:
        fd = _root_fds.get(root)
        if fd is None:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            _root_fds[root] = fd
            while len(_root_fds) > _ROOT_FDS:
                close_fds(_root_fds.popitem(last=False)[1])
        return fd


def close_fds(*fds: int) -> None:
    """Close every descriptor of *fds*, ignoring those already closed."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# -------------------------------------------------------------------- writing
def as_bytes_view(data: Any) -> memoryview:
    """A C-contiguous byte view of *data* (a copy only if it is not contiguous)."""
    view = memoryview(data)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view


def write_all(fd: int, data: memoryview) -> None:
    """``write()`` all of *data* (a full tmpfs is ``ENOSPC`` here, never a SIGBUS later)."""
    view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
    n = len(view)
    done = 0
    while done < n:
        done += os.write(fd, view[done:])


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """``pwrite()`` all of *data* at *offset*."""
    done, n = 0, len(data)
    while done < n:
        done += os.pwrite(fd, data[done:], offset + done)


def rmtree_at(name: str, dir_fd: int) -> None:
    """Remove *name* (file or tree) relative to *dir_fd*, never following symlinks."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


# ------------------------------------------------------- exchange and leases
_RENAME_EXCHANGE = 2
_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
_F_SETSIG = getattr(fcntl, "F_SETSIG", 10)

# System calls of the write path that never wait for another process, made
# with the GIL held (``ctypes.PyDLL``). ``os`` and ``fcntl`` release it around
# each call: a writer on one of several threads (zarr's fused pipeline) would
# hand it over at every one of them and then wait to get it back, until the
# thread that took it blocks or the switch interval (5 ms) ends. Where libc
# lacks statx, ``os.stat`` stands in.
_pylibc = ctypes.PyDLL(None, use_errno=True)


def _pyfunc(name: str, restype: Any, *argtypes: Any) -> Any:
    fn = getattr(_pylibc, name, None)
    if fn is not None:
        fn.restype = restype
        fn.argtypes = list(argtypes)
    return fn


_c = ctypes
# Not renameat2: a rename across directories may wait for the filesystem's
# rename lock and the directories' locks (another process renaming, or listing
# a large directory); it releases the GIL (ctypes.CDLL).
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
if _renameat2 is not None:
    _renameat2.restype = _c.c_int
    _renameat2.argtypes = [_c.c_int, _c.c_char_p, _c.c_int, _c.c_char_p, _c.c_uint]
_fcntl3 = _pyfunc("fcntl", _c.c_int, _c.c_int, _c.c_int, _c.c_int)
_futimens = _pyfunc("futimens", _c.c_int, _c.c_int, _c.c_void_p)
_statx = _pyfunc("statx", _c.c_int, _c.c_int, _c.c_char_p, _c.c_int, _c.c_uint, _c.c_void_p)


class _StatxTimestamp(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32), ("_r", ctypes.c_int32))


class _Statx(ctypes.Structure):
    """``struct statx`` (linux/stat.h): the fields the write path reads, and room for the rest."""

    _fields_ = (
        ("stx_mask", ctypes.c_uint32),
        ("stx_blksize", ctypes.c_uint32),
        ("stx_attributes", ctypes.c_uint64),
        ("st_nlink", ctypes.c_uint32),
        ("stx_uid", ctypes.c_uint32),
        ("stx_gid", ctypes.c_uint32),
        ("st_mode", ctypes.c_uint16),
        ("_spare0", ctypes.c_uint16),
        ("st_ino", ctypes.c_uint64),
        ("st_size", ctypes.c_uint64),
        ("stx_blocks", ctypes.c_uint64),
        ("stx_attributes_mask", ctypes.c_uint64),
        ("stx_atime", _StatxTimestamp),
        ("stx_btime", _StatxTimestamp),
        ("stx_ctime", _StatxTimestamp),
        ("stx_mtime", _StatxTimestamp),
        ("stx_rdev_major", ctypes.c_uint32),
        ("stx_rdev_minor", ctypes.c_uint32),
        ("stx_dev_major", ctypes.c_uint32),
        ("stx_dev_minor", ctypes.c_uint32),
        ("_spare", ctypes.c_uint64 * 14),
    )

    @property
    def st_dev(self) -> int:
        return os.makedev(self.stx_dev_major, self.stx_dev_minor)


_STATX_BASIC = 0x1 | 0x2 | 0x4 | 0x100 | 0x200  # type, mode, nlink, ino, size
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000


def quick_stat(dir_fd: int, name: str | None = None) -> Any:
    """``lstat`` of *name* under *dir_fd* (``fstat`` of *dir_fd* without a name), GIL held.

    Returns an object with ``st_mode``, ``st_nlink``, ``st_ino``, ``st_size``
    and ``st_dev``, as ``os.stat`` would.

    Raises
    ------
    OSError
        As ``os.stat`` would (``FileNotFoundError`` for a missing name).
    """
    global _statx
    if _statx is None:
        if name is None:
            return os.fstat(dir_fd)
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    buf = _Statx()
    if name is None:
        rc = _statx(dir_fd, b"", _AT_EMPTY_PATH, _STATX_BASIC, ctypes.byref(buf))
    else:
        path = name.encode("utf-8", "surrogateescape")
        rc = _statx(dir_fd, path, _AT_SYMLINK_NOFOLLOW, _STATX_BASIC, ctypes.byref(buf))
    if rc:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
            _statx = None  # refused here (an old seccomp profile): os.stat from now on
            return quick_stat(dir_fd, name)
        raise OSError(err, os.strerror(err), name)
    return buf


def touch_fd(fd: int) -> None:
    """Set the modification time of *fd* to now (``futimens``), GIL held."""
    if _futimens(fd, None):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def exchange(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> None:
    """Swap the two entries atomically (``renameat2(RENAME_EXCHANGE)``); both must exist.

    Raises
    ------
    FileNotFoundError
        If either is missing (nothing changed).
    OSError
        ``EINVAL`` (or ``ENOSYS``) where the filesystem, kernel or libc cannot.
    """
    if _renameat2 is None:  # glibc 2.28+, musl 1.2.2+
        raise OSError(errno.ENOSYS, "renameat2 is not available in this C library")
    if _renameat2(
        src_dir_fd,
        src.encode("utf-8", "surrogateescape"),
        dst_dir_fd,
        dst.encode("utf-8", "surrogateescape"),
        _RENAME_EXCHANGE,
    ):
        err = ctypes.get_errno()
        raise OSError(err, f"{os.strerror(err)}: exchanging {src!r} and {dst!r}")


def lease(fd: int, *, take: bool) -> bool:
    """Take (or drop) a write lease on *fd*: granted only while nobody else has the file open.

    A mapping holds its file open, so a granted lease proves that no other
    process (nor another descriptor of this one) can read the file's pages,
    and none can open it until the lease is dropped: an ``open`` meanwhile
    waits for it. Call :func:`lease_signal` on *fd* first.

    Returns
    -------
    bool
        Whether the lease was granted (``False``: the file is open elsewhere).

    Raises
    ------
    OSError
        Where leases are unavailable: ``EINVAL`` (``fs.leases-enable=0``, a
        filesystem without them), ``EACCES`` (a file of another user).
    """
    if _fcntl3(fd, _F_SETLEASE, fcntl.F_WRLCK if take else fcntl.F_UNLCK) == 0:
        return True
    err = ctypes.get_errno()
    if take and err in (errno.EAGAIN, errno.EBUSY):
        return False
    raise OSError(err, os.strerror(err))


def lease_signal(fd: int) -> None:
    """Have the kernel signal a lease on *fd* being waited for with ``SIGWINCH``.

    The default, ``SIGIO``, ends a process that does not handle it; ``SIGWINCH``
    is ignored unless handled (and a handler takes it for a terminal resize).
    """
    fcntl.fcntl(fd, _F_SETSIG, signal.SIGWINCH)


def map_readwrite(fd: int, size: int) -> Any:
    """A shared writable mapping of *fd*, populated (its page tables made up front).

    Returned as a ctypes ``c_char`` array over it (its address is
    ``ctypes.addressof``), which unmaps it when it goes. Like the read-only
    mappings, it holds no descriptor of its own (``mmap.mmap`` keeps a ``dup``
    before Python 3.13).
    """
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    if sys.version_info >= (3, 13):
        m = mmap.mmap(fd, size, flags=flags, prot=prot, trackfd=False)
        return (ctypes.c_char * size).from_buffer(m)  # keeps *m* while it lives
    mapping = _Mapping(fd, size, prot, flags)
    raw = (ctypes.c_char * size).from_address(mapping.addr)
    raw._mapping = mapping
    return raw


# -------------------------------------------------------------------- mapping
def _map_readonly_mmap(fd: int, size: int) -> memoryview:
    # Python 3.13+: trackfd=False keeps mmap from holding a dup of the descriptor.
    return memoryview(
        mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, trackfd=False)
    )


class _Mapping:
    """An ``mmap(2)`` made through libc (read-only unless asked), unmapped when the last view goes.

    Before Python 3.13, ``mmap.mmap`` keeps a ``dup`` of the file descriptor for
    as long as the mapping lives: a cache of thousands of chunk mappings would
    hold thousands of descriptors and hit ``ulimit -n`` (often 1024). Mapping
    through libc holds none.
    """

    __slots__ = ("addr", "size")

    def __init__(
        self, fd: int, size: int, prot: int = mmap.PROT_READ, flags: int = mmap.MAP_SHARED
    ) -> None:
        self.addr = None  # __del__ runs even when the mmap below fails
        addr = _libc.mmap(None, size, prot, flags, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap of {size} bytes failed: {os.strerror(err)}")
        self.addr = addr
        self.size = size

    def __del__(self) -> None:
        if self.addr is not None:
            _libc.munmap(self.addr, self.size)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


def _map_readonly_libc(fd: int, size: int) -> memoryview:
    mapping = _Mapping(fd, size)
    raw = (ctypes.c_char * size).from_address(mapping.addr)
    raw._mapping = mapping  # the ctypes array, exported by the view, owns the mapping
    return memoryview(raw).cast("B").toreadonly()


#: Map *size* bytes of *fd* read-only and return a read-only view; the mapping
#: goes when the last view (or array built on it) does. Holds no descriptor.
map_readonly = _map_readonly_mmap if sys.version_info >= (3, 13) else _map_readonly_libc


# ------------------------------------------------------------ opening beneath
# openat2(2) (Linux 5.6) resolves a relative path in one system call and refuses
# any symlink on it (RESOLVE_NO_SYMLINKS) and any way out of the directory
# (RESOLVE_BENEATH): the same guarantee as opening one component at a time with
# O_NOFOLLOW, for 1 call instead of 2 per component (about 5 us less per write
# and per first read of a key like "t/c/0/1": docs/performance.md).
_SYS_OPENAT2 = 437  # the same on every architecture with the generic table
_RESOLVE_NO_SYMLINKS_BENEATH = 0x04 | 0x08
_openat2_call: Any = None  # None: not probed yet; False: not available here
_openat2_how: dict[int, Any] = {}
_OPENAT2_MACHINES = frozenset(
    {"x86_64", "aarch64", "arm64", "armv7l", "ppc64le", "s390x", "riscv64", "i686"}
)


def _probe_openat2() -> Any:
    global _openat2_call
    call: Any = False
    if sys.platform == "linux" and platform.machine() in _OPENAT2_MACHINES:
        try:
            fn = ctypes.CDLL(None, use_errno=True).syscall
            fn.restype = ctypes.c_long
            fn.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
            fn.argtypes += [ctypes.c_size_t]
            rfd = os.open("/", O_DIR)
            try:
                os.close(_openat2_raw(fn, rfd, ".", O_DIR))
            finally:
                os.close(rfd)
            call = fn
        except (OSError, AttributeError):
            call = False  # no libc syscall(), or a seccomp filter refuses openat2
    _openat2_call = call
    return call


def _openat2_raw(fn: Any, dir_fd: int, path: str, flags: int) -> int:
    how = _openat2_how.get(flags)
    if how is None:
        how = (ctypes.c_uint64 * 3)(flags, 0, _RESOLVE_NO_SYMLINKS_BENEATH)
        _openat2_how[flags] = how
    fd = fn(_SYS_OPENAT2, dir_fd, os.fsencode(path), how, 24)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def _openat2(dir_fd: int, path: str, flags: int) -> int | None:
    fn = _openat2_call
    if fn is None:
        fn = _probe_openat2()
    if fn is False:
        return None
    return _openat2_raw(fn, dir_fd, path, flags)


def open_dir_beneath(dir_fd: int, rel: str) -> int:
    """Open the directory *rel* below *dir_fd*, following no symlink on the way.

    The caller closes the descriptor. A symlink anywhere on the path is
    ``NotADirectoryError``; a missing component ``FileNotFoundError``.
    """
    try:
        fd = _openat2(dir_fd, rel, O_DIR)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EXDEV):
            raise NotADirectoryError(errno.ENOTDIR, f"{rel!r} is a symlink") from e
        raise
    if fd is not None:
        return fd
    fd = dir_fd
    for part in rel.split("/"):
        try:
            nfd = os.open(part, O_DIR, dir_fd=fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise NotADirectoryError(errno.ENOTDIR, f"{rel!r} is a symlink") from e
            raise
        finally:
            if fd != dir_fd:
                os.close(fd)
        fd = nfd
    return fd


def open_beneath(dir_fd: int, rel: str, flags: int = O_READ) -> int:
    """Open the file *rel* below *dir_fd* with *flags*, following no symlink on its path.

    A symlink as the last component is ``ELOOP`` (``O_NOFOLLOW``); on a parent,
    ``NotADirectoryError`` or ``ELOOP``.
    """
    fd = _openat2(dir_fd, rel, flags)
    if fd is not None:
        return fd
    parent, _, base = rel.rpartition("/")
    pfd = open_dir_beneath(dir_fd, parent) if parent else dir_fd
    try:
        return os.open(base, flags, dir_fd=pfd)
    finally:
        if parent:
            os.close(pfd)


# ----------------------------------------------------------------------- locks
def flock_recheck(
    dir_fd: int, name: str, *, blocking: bool = True, mode: int = 0o600
) -> int | None:
    """Take an exclusive ``flock`` on the file *name* under *dir_fd* (created if missing).

    Returns the locked descriptor, or ``None`` if *blocking* is false and the
    lock is held. The lock is re-checked after it is taken: a lock on an
    unlinked inode is useless (its holder removed the file when done), so it is
    discarded and the file that is there now is locked instead.
    """
    while True:
        fd = os.open(
            name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.close(fd)
            continue
        if st.st_ino != os.fstat(fd).st_ino:
            os.close(fd)
            continue
        return fd


def unlink_locked(dir_fd: int, name: str) -> bool:
    """Unlink the lock file *name* the way its holder would: under its lock, if unheld.

    The lock is taken without waiting (a holder means work in progress:
    nothing is removed), and the name must still be that file. Returns
    whether it was removed.
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if st.st_ino != os.fstat(fd).st_ino:
            return False
        os.unlink(name, dir_fd=dir_fd)
        return True
    finally:
        os.close(fd)  # releases the lock


def lock_holders(path: str | os.PathLike[str]) -> list[int]:
    """Pids holding a ``flock`` or ``fcntl`` lock on the file or directory *path*.

    Read from ``/proc/locks`` (empty where it does not exist): nothing is
    locked or waited on to find out, so asking never disturbs a process that
    takes the lock.
    """
    try:
        st = os.stat(path, follow_symlinks=False)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 00:1b:574034 0 EOF"; waiters are "1: -> FLOCK ..."
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        if fields[5] == want and fields[4].isdecimal():
            pids.append(int(fields[4]))
    return sorted(set(pids))


# ------------------------------------------------------------------- processes
def require_own(st: os.stat_result, path: str, what: str) -> None:
    """Refuse an entry of another user: ``PermissionError`` naming its owner and what
    shmstore *what* (``"opens your own namespaces"``, say)."""
    if st.st_uid != os.geteuid():
        raise PermissionError(
            errno.EACCES,
            f"{path!r} belongs to uid {st.st_uid}, not you (uid {os.geteuid()}); "
            f"shmstore only {what}",
            path,
        )


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on the host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start_time(pid: int) -> float | None:
    """Wall-clock start time of *pid* from ``/proc``, or ``None`` if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        with open("/proc/stat", "rb") as f:
            btime = next(int(ln.split()[1]) for ln in f if ln.startswith(b"btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    try:
        # fields[0] is the state (field 3 of stat(5)); starttime is field 22.
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, OSError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state in (b"Z", b"X")


def creator_alive(
    pid: int | None, host: str | None = None, since: float | None = None
) -> bool | None:
    """Whether the process that made something is still running.

    Parameters
    ----------
    pid
        The recorded pid.
    host
        The recorded host name; another host's pid cannot be checked here.
    since
        When the thing was made (or last changed). A live process with this pid
        that started after that is a newer process that reused the pid.

    Returns
    -------
    bool or None
        ``True`` alive, ``False`` dead (or a zombie, which can write nothing),
        ``None`` unknown (no pid, or another host): never reclaim on ``None``.
    """
    if pid is None or pid <= 0:
        return None
    if host and host != socket.gethostname():
        return None
    if not pid_alive(pid) or _is_zombie(pid):
        return False
    if since is not None:
        started = process_start_time(pid)
        if started is not None and started > since + _REUSE_MARGIN_S:
            return False
    return True
