"""Named shared-memory segments: the only module that creates, replaces or unlinks them.

Layout
------
A *root* is a directory on a tmpfs (``/dev/shm`` by default, or ``root=`` /
``$SHMSTORE_ROOT``). A *namespace* is one directory under the root whose
content is a plain Zarr v3 directory layout: the key ``t/c/0/1`` is the regular
file ``<root>/<namespace>/t/c/0/1``. shmstore's own bookkeeping lives in the
hidden entry ``<namespace>/.shmstore/`` (``meta.json`` and ``tmp/`` for writes
in flight), which is never listed as a key.

Atomicity
---------
Every write goes to a fresh file in ``.shmstore/tmp/`` (``O_EXCL | O_NOFOLLOW``,
mode 0600), is filled with ``write()`` (so a full tmpfs is ``ENOSPC``, never
SIGBUS: PITFALLS 2), then ``rename()``-d over the key. A reader therefore sees
the old value or the new one, never a torn one (PITFALLS 5).

Reads
-----
A read maps the chunk read-only and hands out a ``memoryview`` of the mapping
(zero copy). Mappings are cached per process, at most :data:`MAX_MAPPINGS` per
namespace (``vm.max_map_count`` is 65,530 per process: PITFALLS 4). A cached
mapping is checked with one ``stat`` of the key (inode, size and mtime change
on every replace), but only when the namespace's *generation page*
(``.shmstore/gen``) says that a shmstore writer replaced or deleted a key of
its slot since the last check, or :data:`REVALIDATE_SECONDS` have passed: a
repeated read costs no system call. A program that writes into the directory
without shmstore (zarr's ``LocalStore`` on its path, say) does not bump the
generation page, so a process that had cached the key may serve the previous
value for up to :data:`REVALIDATE_SECONDS` (``$SHMSTORE_REVALIDATE_SECONDS``;
0 checks on every read). See docs/performance.md.

Everything is relative to directory file descriptors opened with
``O_NOFOLLOW``, so neither a planted symlink in the (world-writable) root nor
a crafted key can make shmstore read or write outside the namespace.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import json
import logging
import mmap
import os
import platform
import random
import re
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
import warnings
import weakref
import zlib
from typing import TYPE_CHECKING, Any

from shmstore._errors import ForeignEntryError, SharedMemoryFullError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "META",
    "Namespace",
    "check_key",
    "check_name",
    "entry_path",
    "resolve_root",
]

logger = logging.getLogger(__name__)

#: Hidden bookkeeping entry inside every namespace; never a key.
META = ".shmstore"
#: Prefix of transient entries in the root (namespaces being created or destroyed).
TRANSIENT_PREFIX = ".shmstore-"
DEFAULT_ROOT = "/dev/shm"
ENV_ROOT = "SHMSTORE_ROOT"
FORMAT_VERSION = 1
MAX_NAME_BYTES = 255
#: Upper bound on cached chunk mappings per namespace and process.
MAX_MAPPINGS = int(os.environ.get("SHMSTORE_MAX_MAPPINGS", "8192"))
#: Longest time a cached mapping is trusted on the generation page alone; after
#: that a read checks it with a ``stat``, which also sees writers that bypass
#: shmstore. Each check is a system call, and under zarr's fused pipeline a GIL
#: hand-off between its threads: at 1 s, chunks read every few seconds paid it
#: on every read (issue 2 benchmark, fused 64 KiB: 0.74x MemoryStore, 0.91x
#: without), hence 10 s. 0 checks on every read.
REVALIDATE_SECONDS = float(os.environ.get("SHMSTORE_REVALIDATE_SECONDS", "10"))

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_monotonic = time.monotonic

_fallback_warned = False
#: Filesystems that keep files in RAM; a root on anything else is file-backed.
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
_roots_checked: set[str] = set()


def filesystem_type(path: str) -> str | None:
    """Return the type of the filesystem holding *path* (``"tmpfs"``, ``"ext4"``...).

    Read from ``/proc/self/mountinfo`` (the mount with the longest matching
    mount point, the last one where mounts are stacked); ``None`` where that
    file does not exist (not Linux).
    """
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    path = os.path.realpath(path)
    best, fstype = -1, None
    for line in lines:
        fields, sep, rest = line.partition(" - ")
        parts = fields.split()
        if not sep or len(parts) < 5 or not rest:
            continue
        # Mount points escape space, tab, newline and backslash as octal (\040).
        mnt = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= best:
            best, fstype = len(mnt), rest.split()[0]
    return fstype


def _same_device(a: str, b: str) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def _check_memory_backed(root: str) -> str:
    """Warn once per root and process when *root* is not on a tmpfs; return it."""
    if root not in _roots_checked:
        _roots_checked.add(root)
        if _same_device(root, DEFAULT_ROOT):
            return root  # /dev/shm's own tmpfs: skip parsing the mount table
        fstype = filesystem_type(root)
        if fstype is not None and fstype not in MEMORY_FILESYSTEMS:
            warnings.warn(
                f"shmstore root {root} is on a filesystem of type {fstype}, not tmpfs: its "
                "namespaces are file-backed (same API and layout, but values go through "
                "the page cache to disk). Set SHMSTORE_ROOT or root= to a tmpfs such as "
                "/dev/shm for shared memory.",
                RuntimeWarning,
                stacklevel=4,
            )
    return root


_memory_backed: dict[str, bool] = {}


def memory_backed(root: str) -> bool:
    """Whether the resolved *root* is on a tmpfs or ramfs (checked once per process).

    There, inode numbers come from a counter and are not reused while the
    machine runs, so ``(st_dev, st_ino)`` identifies one file for good; on a
    disk filesystem a freed inode number is reused at once.
    """
    known = _memory_backed.get(root)
    if known is None:
        known = _memory_backed[root] = _same_device(root, DEFAULT_ROOT) or (
            filesystem_type(root) in MEMORY_FILESYSTEMS
        )
    return known


def resolve_root(root: str | os.PathLike[str] | None = None) -> str:
    """Return the absolute shared-memory root directory, creating it if needed.

    Parameters
    ----------
    root
        Explicit root. ``None`` means ``$SHMSTORE_ROOT``, else ``/dev/shm``. Where
        neither exists (no shared-memory filesystem, e.g. macOS), a private
        directory under the temporary directory is used and a warning is issued
        once: the API works the same on plain files.

    Returns
    -------
    str
        The absolute path of the root.
    """
    global _fallback_warned
    if root is None:
        root = os.environ.get(ENV_ROOT) or None
    if root is None:
        if os.path.isdir(DEFAULT_ROOT):
            return _check_memory_backed(DEFAULT_ROOT)
        root = os.path.join(tempfile.gettempdir(), f"shmstore-{os.geteuid()}")
        _roots_checked.add(root)  # warned about just below
        if not _fallback_warned:
            _fallback_warned = True
            warnings.warn(
                f"no shared-memory filesystem at {DEFAULT_ROOT}; shmstore falls back to "
                f"file-backed segments in {root} (set SHMSTORE_ROOT to choose a tmpfs)",
                RuntimeWarning,
                stacklevel=3,
            )
    path = os.path.abspath(os.fspath(root))
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
    return _check_memory_backed(path)


def check_name(name: object, kind: str = "namespace") -> str:
    """Validate a namespace or array name: one printable path component.

    Raises
    ------
    ValueError
        If the name is empty, ``.``/``..``, hidden, contains ``/`` or NUL, is not
        printable, or is longer than 255 bytes. The message names the value.
    """
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a str, got {type(name).__name__}: {name!r}")
    if not name:
        raise ValueError(f"{kind} name must not be empty")
    if "\0" in name:
        raise ValueError(f"{kind} name {name!r} contains a NUL byte")
    if "/" in name or "\\" in name:
        raise ValueError(f"{kind} name {name!r} must not contain a path separator")
    if name.startswith("."):
        raise ValueError(f"{kind} name {name!r} must not start with '.' (reserved)")
    if not name.isprintable():
        raise ValueError(f"{kind} name {name!r} contains non-printable characters")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ValueError(
            f"{kind} name {name[:40]!r}... is {len(name.encode())} bytes; the limit is "
            f"{MAX_NAME_BYTES}"
        )
    return name


def check_key(key: object) -> str:
    """Validate a zarr key so that it can only name a file inside its namespace.

    Raises
    ------
    ValueError
        If the key is empty, absolute, has empty, ``.`` or ``..`` components,
        contains NUL, has a component over 255 bytes, or starts with the
        reserved ``.shmstore`` entry.
    """
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}: {key!r}")
    if "\0" in key:
        raise ValueError(f"key {key!r} contains a NUL byte")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ValueError(
                f"key {key!r} is not a relative path of named components "
                "(empty, '.', '..' and leading or doubled '/' would escape the namespace)"
            )
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise ValueError(f"key {key!r} has a component longer than {MAX_NAME_BYTES} bytes")
    if parts[0] == META:
        raise ValueError(f"key {key!r} is reserved for shmstore's bookkeeping")
    return key


def entry_path(root: str, name: str) -> str:
    """Return the path of the namespace or array *name* under *root*.

    This is the one place that turns a validated name into a path.
    """
    return os.path.join(root, check_name(name))


def _transient_name(kind: str) -> str:
    return f"{TRANSIENT_PREFIX}{kind}.{os.getpid()}.{random.getrandbits(48):012x}"


# Root directory descriptors, one per root and process. Inherited across fork.
_root_fds: dict[str, int] = {}
# Namespace handles of this process, by (root, name). A handle lives while a
# store (or anything else) refers to it, and the registry keeps the most
# recently opened ones alive too, so code that opens by name per operation
# reuses one handle and its mapping cache. A handle nobody holds any more
# closes its descriptors and unmaps its cache: a long-running process that
# opens many namespaces does not accumulate descriptors.
_registry: weakref.WeakValueDictionary[tuple[str, str], Namespace] = weakref.WeakValueDictionary()
_recent: collections.OrderedDict[tuple[str, str], Namespace] = collections.OrderedDict()
_RECENT_HANDLES = 64
_registry_lock = threading.Lock()


def _remember(key: tuple[str, str], ns: Namespace) -> None:
    """Register *ns* and keep it among the recently used handles (lock held)."""
    _registry[key] = ns
    _recent[key] = ns
    _recent.move_to_end(key)
    while len(_recent) > _RECENT_HANDLES:
        _recent.popitem(last=False)


def _forget(key: tuple[str, str], ns: Namespace) -> None:
    """Drop *ns* from the registry if it is the registered handle (lock held)."""
    if _registry.get(key) is ns:
        del _registry[key]
    if _recent.get(key) is ns:
        del _recent[key]


def release_handles() -> None:
    """Let go of every namespace handle the registry keeps for this process.

    Handles still used by a store stay open; the others close their
    descriptors and unmap their cached chunks (a long-lived worker that is done
    with its namespaces calls this to stop pinning their memory).
    """
    with _registry_lock:
        _recent.clear()
        _registry.clear()


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _root_fd(root: str) -> int:
    fd = _root_fds.get(root)
    if fd is None:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _root_fds[root] = fd
    return fd


def _rmtree_at(name: str, dir_fd: int) -> None:
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


def _write_all(fd: int, data: memoryview) -> None:
    view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
    n = len(view)
    done = 0
    while done < n:
        done += os.write(fd, view[done:])


def _as_bytes_view(data: Any) -> memoryview:
    view = memoryview(data)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view


def _map_readonly_mmap(fd: int, size: int) -> memoryview:
    # Python 3.13+: trackfd=False keeps mmap from holding a dup of the descriptor.
    return memoryview(
        mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, trackfd=False)
    )


class _Mapping:
    """A read-only ``mmap(2)`` made through libc, unmapped when the last view goes.

    Before Python 3.13, ``mmap.mmap`` keeps a ``dup`` of the file descriptor for
    as long as the mapping lives: a cache of thousands of chunk mappings would
    hold thousands of descriptors and hit ``ulimit -n`` (often 1024). Mapping
    through libc holds none.
    """

    __slots__ = ("addr", "size")

    def __init__(self, fd: int, size: int) -> None:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap of {size} bytes failed: {os.strerror(err)}")
        self.addr = addr
        self.size = size

    def __del__(self) -> None:
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


#: The namespace's generation page: 512 slots of 64 bits, mapped by every process
#: that opens the namespace. After each replace or delete of a key, a shmstore
#: writer stores a fresh random token in the key's slot (slot 0: after removing
#: a subtree). Random, not incremented: two writers that bump the same slot at
#: once can never leave the value a reader saw before either of them.
GEN = f"{META}/gen"
_GEN_SLOTS = 512
_GEN_BYTES = _GEN_SLOTS * 8


def _gen_slot(key: str) -> int:
    """The generation slot of *key* (the same in every process, unlike ``hash``)."""
    return 1 + zlib.crc32(key.encode("utf-8", "surrogateescape")) % (_GEN_SLOTS - 1)


def _open_generations(dir_fd: int, mode: int, *, create: bool = False) -> memoryview | None:
    """Map the generation page of the namespace *dir_fd*; ``None`` where impossible.

    A namespace made before the page existed gets one on first open. Without
    one (a full or read-only filesystem), every read checks its cached mapping
    with a ``stat``: always correct, only slower.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(GEN, flags, mode, dir_fd=dir_fd)
    except FileNotFoundError:
        return None if create else _open_generations(dir_fd, mode, create=True)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size < _GEN_BYTES:
            # Extends with zeros and never truncates: safe beside a concurrent opener.
            os.posix_fallocate(fd, 0, _GEN_BYTES)
            if mode & ~0o600 and st.st_uid == os.geteuid():
                os.fchmod(fd, mode)
        return memoryview(mmap.mmap(fd, _GEN_BYTES, flags=mmap.MAP_SHARED)).cast("Q")
    except OSError:
        return None
    finally:
        os.close(fd)


# openat2(2) (Linux 5.6) resolves a relative path in one system call and refuses
# any symlink on it (RESOLVE_NO_SYMLINKS) and any way out of the directory
# (RESOLVE_BENEATH): the same guarantee as opening one component at a time with
# O_NOFOLLOW, for 1 call instead of 2 per component (issue 2 benchmark: about
# 5 us less per write and per first read of a key like "t/c/0/1").
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
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).syscall
            fn.restype = ctypes.c_long
            fn.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
            fn.argtypes += [ctypes.c_size_t]
            rfd = os.open("/", _O_DIR)
            try:
                os.close(_openat2_raw(fn, rfd, ".", _O_DIR))
            finally:
                os.close(rfd)
            call = fn
        except (OSError, AttributeError, ImportError):
            call = False  # no libc syscall(), or a seccomp filter refuses openat2
    _openat2_call = call
    return call


def _openat2_raw(fn: Any, dir_fd: int, path: str, flags: int) -> int:
    how = _openat2_how.get(flags)
    if how is None:
        import ctypes

        how = (ctypes.c_uint64 * 3)(flags, 0, _RESOLVE_NO_SYMLINKS_BENEATH)
        _openat2_how[flags] = how
    fd = fn(_SYS_OPENAT2, dir_fd, os.fsencode(path), how, 24)
    if fd < 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def _open_beneath(dir_fd: int, path: str, flags: int) -> int | None:
    """Open *path* below *dir_fd* without following any symlink on it.

    Returns ``None`` where ``openat2`` is not available (the caller walks the
    path itself). Raises ``OSError`` like ``os.open``; a symlink anywhere on the
    path is ``ELOOP``.
    """
    fn = _openat2_call
    if fn is None:
        fn = _probe_openat2()
    if fn is False:
        return None
    return _openat2_raw(fn, dir_fd, path, flags)


class _Entry:
    """A cached mapping of one key, and what it was last validated against."""

    __slots__ = (
        "deadline",
        "gtok",
        "ino",
        "ktok",
        "mtime",
        "size",
        "slot",
        "view",
        "wrap",
        "wrapped",
    )

    def __init__(
        self, view: memoryview, st: os.stat_result, slot: int, gtok: Any, ktok: Any
    ) -> None:
        self.view = view
        self.ino, self.size, self.mtime = st.st_ino, st.st_size, st.st_mtime_ns
        self.slot, self.gtok, self.ktok = slot, gtok, ktok
        self.deadline = _monotonic() + REVALIDATE_SECONDS
        self.wrap: Any = None
        self.wrapped: Any = None


def _dir_mode(mode: int) -> int:
    """Directory bits matching file *mode*: 0600 -> 0700, 0640 -> 0750, 0660 -> 0770."""
    return 0o700 | (mode & 0o066) | ((mode & 0o044) >> 2)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on the host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _require_own(st: os.stat_result, path: str, what: str) -> None:
    """Refuse an entry of another user: ``PermissionError`` saying what shmstore *what*."""
    if st.st_uid != os.geteuid():
        raise PermissionError(
            errno.EACCES,
            f"{path!r} belongs to uid {st.st_uid}, not you (uid {os.geteuid()}); "
            f"shmstore only {what}",
            path,
        )


def _require_namespace_entry(fd: int, path: str) -> None:
    """Refuse a directory *fd* that has no ``.shmstore`` directory: not a namespace."""
    try:
        mst = os.stat(META, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        raise ForeignEntryError(path, f"a directory without a {META} entry") from None
    if not stat.S_ISDIR(mst.st_mode):
        raise ForeignEntryError(path, f"its {META} entry is not a directory")


class Namespace:
    """A process-local handle on one namespace directory.

    Handles are shared by every store of the process that opens the same
    namespace (see :meth:`open`); they hold the directory descriptors and the
    mapping cache. Nothing here unlinks anything unless asked to: a process
    that merely attached leaves the namespace untouched when it exits.
    """

    def __init__(self, root: str, name: str, dir_fd: int, meta: dict[str, Any]) -> None:
        self.root = root
        self.name = name
        self.path = os.path.join(root, name)
        self.meta = meta
        self.mode = int(meta.get("mode", 0o600))
        self._dmode = _dir_mode(self.mode)
        self._fd = dir_fd
        self._ino = os.fstat(dir_fd).st_ino
        self._tmp_fd = os.open(f"{META}/tmp", _O_DIR, dir_fd=dir_fd)
        self._cache: dict[str, _Entry] = {}
        self._seq = 0
        self._gen = _open_generations(dir_fd, self.mode)
        # Closed when the last reference to the handle goes (never while a
        # store still uses it); views handed out keep their own mappings.
        weakref.finalize(self, _close_fds, self._fd, self._tmp_fd)

    # ------------------------------------------------------------------ open
    @classmethod
    def open(
        cls,
        name: str,
        root: str | os.PathLike[str] | None = None,
        *,
        create: bool,
        mode: int = 0o600,
        meta: dict[str, Any] | None = None,
    ) -> Namespace:
        """Return this process's handle on namespace *name*, creating it if asked.

        Parameters
        ----------
        name
            Namespace name (validated by :func:`check_name`).
        root
            Shared-memory root; see :func:`resolve_root`.
        create
            Create the namespace if it does not exist.
        mode
            Permission bits of new files (directories get the matching
            search bits). Only used when the namespace is created.
        meta
            Extra bookkeeping recorded in ``meta.json`` on creation.

        Raises
        ------
        FileNotFoundError
            If the namespace does not exist and *create* is false.
        ForeignEntryError
            If something that is not a shmstore namespace has the name.
        PermissionError
            If the namespace belongs to another user.
        """
        check_name(name)
        root = resolve_root(root)
        key = (root, name)
        with _registry_lock:
            ns = _registry.get(key)
            if ns is None or not ns.alive():
                ns = cls._open_fresh(root, name, create=create, mode=mode, meta=meta)
            _remember(key, ns)
            return ns

    @classmethod
    def _open_fresh(
        cls, root: str, name: str, *, create: bool, mode: int, meta: dict[str, Any] | None
    ) -> Namespace:
        rfd = _root_fd(root)
        for _ in range(8):
            try:
                return cls._attach(root, name, rfd)
            except FileNotFoundError:
                if not create:
                    raise
            if cls._create(root, name, rfd, mode, meta or {}):
                return cls._attach(root, name, rfd)
        raise OSError(f"namespace {name!r} in {root} keeps disappearing while being opened")

    @classmethod
    def _attach(cls, root: str, name: str, rfd: int) -> Namespace:
        path = os.path.join(root, name)
        try:
            fd = os.open(name, _O_DIR, dir_fd=rfd)
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT,
                f"no shmstore namespace {name!r} in {root}; open it writable to create it",
                path,
            ) from None
        except NotADirectoryError:
            # O_DIRECTORY|O_NOFOLLOW reports a symlink as ENOTDIR: say which it is.
            if stat.S_ISLNK(os.stat(name, dir_fd=rfd, follow_symlinks=False).st_mode):
                raise ForeignEntryError(path, "a symbolic link; never followed") from None
            raise ForeignEntryError(path, "a file (a named array?), not a namespace") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ForeignEntryError(path, "a symbolic link; shmstore never follows one") from e
            raise
        try:
            _require_own(os.fstat(fd), path, "opens your own namespaces")
            _require_namespace_entry(fd, path)
            meta = _read_meta(fd, path)
            return cls(root, name, fd, meta)
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _create(root: str, name: str, rfd: int, mode: int, extra: dict[str, Any]) -> bool:
        """Build a namespace under a temporary name and rename it into place.

        Returns False if another process created *name* first.
        """
        dmode = _dir_mode(mode)
        tmp = _transient_name("new")
        os.mkdir(tmp, 0o700, dir_fd=rfd)
        try:
            tfd = os.open(tmp, _O_DIR, dir_fd=rfd)
            try:
                os.mkdir(META, 0o700, dir_fd=tfd)
                os.mkdir(f"{META}/tmp", 0o700, dir_fd=tfd)
                meta = {
                    "format": "shmstore",
                    "version": FORMAT_VERSION,
                    "name": name,
                    "created": time.time(),
                    "pid": os.getpid(),
                    "uid": os.geteuid(),
                    "host": socket.gethostname(),
                    "mode": mode,
                    **extra,
                }
                _write_meta(tfd, meta)
                _open_generations(tfd, mode, create=True)
                if dmode != 0o700:
                    os.chmod(tfd, dmode)
            finally:
                os.close(tfd)
            try:
                os.rename(tmp, name, src_dir_fd=rfd, dst_dir_fd=rfd)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    return False  # someone else's entry: _attach reports what it is
                if e.errno in (errno.EPERM, errno.EACCES):
                    raise PermissionError(
                        e.errno,
                        f"cannot create namespace {name!r} in {root}: an entry of that name "
                        "belongs to another user; choose another name",
                        os.path.join(root, name),
                    ) from e
                raise
            return True
        finally:
            _rmtree_at(tmp, rfd)

    def alive(self) -> bool:
        """Whether the directory this handle holds is still the namespace's."""
        try:
            st = os.stat(self.name, dir_fd=_root_fd(self.root), follow_symlinks=False)
        except FileNotFoundError:
            return False
        return st.st_ino == self._ino

    # ------------------------------------------------------------------ reads
    def read(self, key: str, wrap: Callable[[memoryview], Any] | None = None) -> Any:
        """Return a read-only view of the value of *key*, or ``None`` if missing.

        The view maps the segment directly (zero copy). It stays valid, showing
        the value as it was, even if the key is later replaced or deleted.

        Parameters
        ----------
        wrap
            If given, return ``wrap(view)`` instead, made once per mapping and
            cached with it (the store wraps each chunk in a zarr buffer once,
            not on every read). Pass the same callable every time.
        """
        ent = self._cache.get(key)
        gen = self._gen
        if (
            ent is not None
            and gen is not None
            and gen[0] == ent.gtok
            and gen[ent.slot] == ent.ktok
            and _monotonic() < ent.deadline
        ):
            # No shmstore writer replaced or deleted a key of this slot since the
            # mapping was last validated: no system call (issue 2 benchmark).
            pass
        else:
            ent = self._validate(key, ent)
            if ent is None:
                return None
        if wrap is None:
            return ent.view
        if ent.wrap is not wrap:
            ent.wrapped = wrap(ent.view)
            ent.wrap = wrap
        return ent.wrapped

    def _validate(self, key: str, ent: _Entry | None) -> _Entry | None:
        """Check the cached mapping of *key* with one ``stat``; map the key anew if replaced."""
        slot = _gen_slot(check_key(key)) if ent is None else ent.slot
        gen = self._gen
        # The tokens are read *before* the stat (or open): a replace that the
        # stat misses bumps them after it, so the next read looks again.
        gtok, ktok = (gen[0], gen[slot]) if gen is not None else (None, None)
        if ent is None:
            return self._map(key, slot, gtok, ktok)
        try:
            st = os.stat(key, dir_fd=self._fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            self._cache.pop(key, None)
            return None
        if ent.ino == st.st_ino and ent.size == st.st_size and ent.mtime == st.st_mtime_ns:
            ent.gtok, ent.ktok = gtok, ktok
            ent.deadline = _monotonic() + REVALIDATE_SECONDS
            return ent
        if not stat.S_ISREG(st.st_mode):
            self._cache.pop(key, None)
            return None
        return self._map(key, slot, gtok, ktok)

    def _map(self, key: str, slot: int, gtok: Any, ktok: Any) -> _Entry | None:
        try:
            fd = self._open_key(key)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._cache.pop(key, None)
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                return None  # a symlink on the way: never followed, never a value
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._cache.pop(key, None)
                return None
            # No MAP_POPULATE: read faults map 16 pages at a time (fault-around),
            # which costs less than populating up front (issue 2 benchmark: a
            # first read of a 64 KiB chunk 42 -> 32 us, of a 1 MiB one 234 -> 211).
            view = memoryview(b"") if st.st_size == 0 else map_readonly(fd, st.st_size)
        finally:
            os.close(fd)
        cache = self._cache
        if len(cache) >= MAX_MAPPINGS:
            # Evict the oldest eighth. Views still held by callers keep their
            # mapping alive until they are dropped; the cache only stops
            # pinning them.
            for old in list(cache)[: max(1, MAX_MAPPINGS // 8)]:
                cache.pop(old, None)
        ent = cache[key] = _Entry(view, st, slot, gtok, ktok)
        return ent

    def size(self, key: str) -> int | None:
        """Return the exact length of *key* in bytes, or ``None`` if missing."""
        check_key(key)
        try:
            st = self._lstat_at(key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def _lstat_at(self, rel: str) -> os.stat_result:
        """``lstat`` of *rel*, whose parent directories are never symlinks followed."""
        parent, _, base = rel.rpartition("/")
        if not parent:
            return os.stat(base, dir_fd=self._fd, follow_symlinks=False)
        pfd = self._open_dir(parent)
        try:
            return os.stat(base, dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(pfd)

    def exists(self, key: str) -> bool:
        """Whether *key* holds a value."""
        return self.size(key) is not None

    def lstat(self, key: str) -> os.stat_result | None:
        """Return the status of *key* if it is a value or a directory of keys, else ``None``.

        Never follows a symbolic link; anything but a regular file or a
        directory counts as missing.
        """
        check_key(key)
        try:
            st = self._lstat_at(key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) else None

    # ----------------------------------------------------------------- writes
    def write(self, key: str, data: Any, *, exclusive: bool = False) -> bool:
        """Atomically set *key* to *data* (any C-contiguous buffer).

        Parameters
        ----------
        exclusive
            Only write if *key* does not exist yet (atomic ``link``).

        Returns
        -------
        bool
            False if *exclusive* and the key already existed; True otherwise.

        Raises
        ------
        SharedMemoryFullError
            If the shared-memory filesystem is full; nothing is left behind.
        """
        check_key(key)
        view = _as_bytes_view(data)
        tmp = self._tmp_name()
        try:
            fd = os.open(tmp, _O_CREATE, self.mode, dir_fd=self._tmp_fd)
        except FileNotFoundError:
            self._check_alive()  # destroyed by another process: say so
            raise
        try:
            try:
                if self.mode & ~0o600:
                    os.fchmod(fd, self.mode)
                _write_all(fd, view)
            finally:
                os.close(fd)
            return self._install(tmp, key, exclusive)
        except OSError as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self._tmp_fd)
            if e.errno == errno.ENOSPC:
                raise SharedMemoryFullError(
                    self.name, view.nbytes, self.free_bytes(), self.root
                ) from e
            raise
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self._tmp_fd)
            raise

    def _tmp_name(self) -> str:
        # pid first: `shmstore gc` reclaims the leftovers of dead writers only.
        self._seq += 1
        return f"{os.getpid()}.{threading.get_ident():x}.{self._seq}.partial"

    def _install(self, tmp: str, key: str, exclusive: bool) -> bool:
        tfd = self._tmp_fd
        parent, _, base = key.rpartition("/")
        for _ in range(64):
            try:
                pfd = self._open_dir(parent) if parent else self._fd
            except FileNotFoundError:
                self._check_alive()
                # A concurrent delete may prune a level we just made (ENOENT on
                # the next mkdir): go round again rather than fail the write.
                with contextlib.suppress(FileNotFoundError):
                    self._makedirs(parent)
                continue
            except NotADirectoryError:
                with contextlib.suppress(FileNotFoundError):
                    self._makedirs(parent)  # raises, naming the component at fault
                continue
            try:
                if exclusive:
                    try:
                        os.link(tmp, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
                    except FileExistsError:
                        os.unlink(tmp, dir_fd=tfd)
                        return False
                    os.unlink(tmp, dir_fd=tfd)
                else:
                    os.rename(tmp, base, src_dir_fd=tfd, dst_dir_fd=pfd)
                self._bump(key)
                return True
            except FileNotFoundError:
                # The parent was pruned by a concurrent delete after we opened
                # it (a removed directory takes no new entries): redo it.
                self._check_alive()
                continue
            except IsADirectoryError:
                raise IsADirectoryError(
                    errno.EISDIR,
                    f"cannot set key {key!r} in namespace {self.name!r}: it is a prefix "
                    "of other keys; delete those first",
                ) from None
            finally:
                if parent:
                    os.close(pfd)
        raise OSError(f"could not install key {key!r} in namespace {self.name!r}")

    def _open_key(self, key: str) -> int:
        """Open the value of *key* read-only, following no symlink on its path."""
        fd = _open_beneath(self._fd, key, _O_READ)
        if fd is not None:
            return fd
        parent, _, base = key.rpartition("/")
        pfd = self._open_dir(parent) if parent else self._fd
        try:
            return os.open(base, _O_READ, dir_fd=pfd)
        finally:
            if parent:
                os.close(pfd)

    def _open_dir(self, rel: str) -> int:
        """Open the directory *rel* of the namespace one component at a time.

        No component is followed if it is a symlink (``O_NOFOLLOW``), so nothing
        planted inside the namespace can redirect a read or a write outside it.
        The caller closes the descriptor.
        """
        try:
            fd = _open_beneath(self._fd, rel, _O_DIR)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EXDEV):
                raise NotADirectoryError(errno.ENOTDIR, f"{rel!r} is a symlink") from e
            raise
        if fd is not None:
            return fd
        fd = self._fd
        for part in rel.split("/"):
            try:
                nfd = os.open(part, _O_DIR, dir_fd=fd)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise NotADirectoryError(errno.ENOTDIR, f"{rel!r} is a symlink") from e
                raise
            finally:
                if fd != self._fd:
                    os.close(fd)
            fd = nfd
        return fd

    def _makedirs(self, parent: str) -> None:
        if not parent:
            return
        fd = self._fd
        path = ""
        for part in parent.split("/"):
            path = f"{path}/{part}" if path else part
            try:
                os.mkdir(path, self._dmode, dir_fd=fd)
                if self._dmode != 0o700:
                    os.chmod(path, self._dmode, dir_fd=fd)
            except FileExistsError:
                st = os.stat(path, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    raise NotADirectoryError(
                        errno.ENOTDIR,
                        f"cannot create keys under {path!r} in namespace {self.name!r}: "
                        f"{path!r} is itself a key (or a foreign entry)",
                    ) from None

    def _bump(self, key: str | None) -> None:
        """Tell every process's mapping cache that *key* (``None``: any key) changed."""
        gen = self._gen
        if gen is not None:
            gen[0 if key is None else _gen_slot(key)] = random.getrandbits(64)

    def destroyed(self) -> bool:
        """Whether the directory this handle holds was removed (``destroy``)."""
        return os.fstat(self._fd).st_nlink == 0

    def _check_alive(self) -> None:
        if self.destroyed():
            raise FileNotFoundError(
                errno.ENOENT,
                f"namespace {self.name!r} in {self.root} was destroyed; open it again",
                self.path,
            )

    def delete(self, key: str) -> bool:
        """Remove *key*; return whether it existed. Empty parent directories go too."""
        check_key(key)
        self._cache.pop(key, None)
        if not self._remove_at(key, os.unlink):
            return False
        self._bump(key)
        self._prune(key.rpartition("/")[0])
        return True

    def _remove_at(self, rel: str, remove: Callable[..., None]) -> bool:
        """``remove(base, dir_fd=parent)`` for *rel*, its parents opened without
        following symlinks; False if there was nothing (or not that) to remove."""
        parent, _, base = rel.rpartition("/")
        try:
            pfd = self._open_dir(parent) if parent else self._fd
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            remove(base, dir_fd=pfd)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
                return False
            raise
        finally:
            if parent:
                os.close(pfd)
        return True

    def _prune(self, parent: str) -> None:
        while parent:
            try:
                if not self._remove_at(parent, os.rmdir):
                    return
            except OSError:
                return  # not ours to remove (permissions): leave it
            parent = parent.rpartition("/")[0]

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under the directory *prefix* (``""``: all keys).

        Like zarr's ``delete_dir``, ``"a"`` removes the keys below ``a/``, not a
        key named ``a`` itself.
        """
        prefix = prefix.rstrip("/")
        parent, _, base = prefix.rpartition("/")
        if prefix:
            check_key(prefix)
            try:
                pfd = self._open_dir(parent) if parent else self._fd
            except (FileNotFoundError, NotADirectoryError):
                return
            names = [base]
        else:
            pfd = self._fd
            with os.scandir(pfd) as it:
                names = [e.name for e in it if e.name != META]
        try:
            for name in names:
                try:
                    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if prefix and not stat.S_ISDIR(st.st_mode):
                    continue
                # Move the subtree out of sight first: no reader sees it half gone.
                trash = f"{META}/tmp/{self._tmp_name()}"
                try:
                    os.rename(name, trash, src_dir_fd=pfd, dst_dir_fd=self._fd)
                except FileNotFoundError:
                    continue
                self._bump(None)
                _rmtree_at(trash, self._fd)
        finally:
            if pfd != self._fd:
                os.close(pfd)
        if parent:
            self._prune(parent)
        self._cache.clear()

    # --------------------------------------------------------------- listing
    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Yield every key that starts with *prefix* (a plain string prefix)."""
        base = prefix.rpartition("/")[0]
        if base:
            check_key(base)
        try:
            dfd = self._open_dir(base) if base else os.open(".", _O_DIR, dir_fd=self._fd)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            if e.errno == errno.ELOOP:
                return
            raise
        rel = f"{base}/" if base else ""
        for key in _walk(dfd, rel):
            if key.startswith(prefix):
                yield key

    def list_dir(self, prefix: str) -> Iterator[str]:
        """Yield the names directly under the directory *prefix*."""
        prefix = prefix.rstrip("/")
        if prefix:
            check_key(prefix)
        try:
            dfd = self._open_dir(prefix) if prefix else os.open(".", _O_DIR, dir_fd=self._fd)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            if e.errno == errno.ELOOP:
                return
            raise
        try:
            with os.scandir(dfd) as it:
                names = [
                    e.name
                    for e in it
                    if (prefix or e.name != META)
                    and (e.is_file(follow_symlinks=False) or e.is_dir(follow_symlinks=False))
                ]
        finally:
            os.close(dfd)
        yield from names

    # ------------------------------------------------------------- lifetime
    def free_bytes(self) -> int:
        """Bytes left on the filesystem that holds the namespace."""
        st = os.statvfs(self._fd)
        return st.f_bavail * st.f_frsize

    def destroy(self) -> None:
        """Unlink the whole namespace. Mappings other processes hold stay valid."""
        rfd = _root_fd(self.root)
        if self.alive():
            trash = _transient_name("trash")
            try:
                os.rename(self.name, trash, src_dir_fd=rfd, dst_dir_fd=rfd)
            except FileNotFoundError:
                pass
            else:
                _rmtree_at(trash, rfd)
        self._bump(None)
        self._cache.clear()
        with _registry_lock:
            _forget((self.root, self.name), self)

    def __repr__(self) -> str:
        return f"<Namespace {self.name!r} in {self.root!r}>"


def _walk(dfd: int, rel: str) -> Iterator[str]:
    """Yield the regular files below the directory *dfd*, which this closes."""
    try:
        with os.scandir(dfd) as it:
            entries = [
                (e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False))
                for e in it
            ]
        subdirs = []
        for name, is_dir, is_file in entries:
            if not rel and name == META:
                continue
            if is_file:
                yield rel + name
            elif is_dir:
                subdirs.append(name)
        for name in subdirs:
            try:
                sub = os.open(name, _O_DIR, dir_fd=dfd)
            except OSError:
                continue  # removed meanwhile, or replaced by a symlink: never followed
            yield from _walk(sub, f"{rel}{name}/")
    finally:
        os.close(dfd)


def _read_meta(fd: int, path: str) -> dict[str, Any]:
    try:
        mfd = os.open(f"{META}/meta.json", _O_READ, dir_fd=fd)
    except FileNotFoundError:
        raise ForeignEntryError(path, f"{META}/meta.json is missing") from None
    try:
        with os.fdopen(mfd, "rb") as f:
            meta = json.loads(f.read(1 << 20))
    except (ValueError, UnicodeDecodeError) as e:
        raise ForeignEntryError(path, f"{META}/meta.json is corrupt: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != "shmstore":
        raise ForeignEntryError(path, f"{META}/meta.json is not shmstore metadata")
    return meta


def _write_meta(fd: int, meta: dict[str, Any]) -> None:
    """Atomically (re)write ``meta.json`` of the namespace directory *fd*."""
    tmp = f"{META}/meta.json.{os.getpid()}.partial"
    wfd = os.open(tmp, _O_CREATE, 0o600, dir_fd=fd)
    try:
        _write_all(wfd, memoryview(json.dumps(meta, indent=1, sort_keys=True).encode()))
    finally:
        os.close(wfd)
    os.rename(tmp, f"{META}/meta.json", src_dir_fd=fd, dst_dir_fd=fd)


# =============================================================================
# Named arrays (shmstore._arrays) and the entries that locks use (shmstore._lock)
# =============================================================================
#
# A named array is one regular file directly in the root, ``<root>/<name>``, so
# that attaching it by name is one open, one fstat and one mmap:
#
#   offset  0  magic ARRAY_MAGIC (16 bytes)
#          16  u32   format version (ARRAY_VERSION)
#          20  u32   length of the JSON document
#          24  u64   offset of the data (a multiple of the page size)
#          32  u64   state: 0 live, 1 deleted (set by unlink_array_segment just
#                    before the unlink, so a lock bound to the old file by name
#                    knows that it must look the name up again)
#          64  JSON  shape, dtype, order, nbytes, created, pid, uid, host, token
#   data offset: the array's bytes, up to the end of the file
#
# The header is written whole (zero padded up to the data offset), and the data
# with write() or posix_fallocate(), so the file has no hole: a store through a
# mapping into a hole of a full tmpfs is a SIGBUS (PITFALLS 2).

#: First bytes of every named array file.
ARRAY_MAGIC = b"\x93SHMSTORE-ARRAY\n"
ARRAY_VERSION = 1
#: Offset of the 8-byte state word (0 live, 1 deleted) in an array file.
ARRAY_STATE_OFFSET = 32
#: Bytes of the fixed part of the header; the JSON document starts here.
ARRAY_HEADER_SIZE = 64
ARRAY_DELETED = 1
_PAGE = mmap.PAGESIZE
_O_ARRAY_NEW = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in the root must not hang.
_O_ARRAY_RO = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_O_ARRAY_RW = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_ARRAY_KEYS = ("shape", "dtype", "order", "nbytes", "token")
#: ``os.open`` flags of an existing array file, indexed by ``read_only``.
ARRAY_OPEN_FLAGS = (_O_ARRAY_RW, _O_ARRAY_RO)


def encode_array_header(meta: dict[str, Any]) -> bytes:
    """Return the header of an array file: fixed part, JSON, zeros up to the data.

    The data offset is ``len(result)``, a multiple of the page size.
    """
    doc = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    data_offset = -(-(ARRAY_HEADER_SIZE + len(doc)) // _PAGE) * _PAGE
    head = (
        ARRAY_MAGIC
        + ARRAY_VERSION.to_bytes(4, "little")
        + len(doc).to_bytes(4, "little")
        + data_offset.to_bytes(8, "little")
        + (0).to_bytes(8, "little")
    )
    return head.ljust(ARRAY_HEADER_SIZE, b"\0") + doc.ljust(data_offset - ARRAY_HEADER_SIZE, b"\0")


def decode_array_header(buf: Any, path: str, size: int) -> tuple[dict[str, Any], int]:
    """Parse the header of an array file of *size* bytes from *buf* (its first bytes).

    Returns
    -------
    (dict, int)
        The metadata document and the data offset.

    Raises
    ------
    ForeignEntryError
        If the file is not a named array, is of an unknown format version, or
        is corrupt or truncated. Nothing in it is trusted then.
    """
    view = memoryview(buf).cast("B") if not isinstance(buf, bytes) else memoryview(buf)
    if size < ARRAY_HEADER_SIZE or len(view) < ARRAY_HEADER_SIZE:
        raise ForeignEntryError(path, "a file too short to be a shmstore named array")
    if bytes(view[:16]) != ARRAY_MAGIC:
        raise ForeignEntryError(path, "a file without shmstore's named-array header")
    version = int.from_bytes(view[16:20], "little")
    if version != ARRAY_VERSION:
        raise ForeignEntryError(
            path,
            f"named-array format version {version}; this shmstore reads version "
            f"{ARRAY_VERSION} (use the shmstore that made it)",
        )
    doc_len = int.from_bytes(view[20:24], "little")
    data_offset = int.from_bytes(view[24:32], "little")
    end = ARRAY_HEADER_SIZE + doc_len
    if end > data_offset or data_offset > size or len(view) < end:
        raise ForeignEntryError(path, "a named array with a corrupt header (bad lengths)")
    try:
        meta = json.loads(bytes(view[ARRAY_HEADER_SIZE:end]).decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise ForeignEntryError(path, f"a named array with a corrupt header: {e}") from e
    if not isinstance(meta, dict) or any(k not in meta for k in _ARRAY_KEYS):
        raise ForeignEntryError(path, "a named array whose header lacks shape/dtype/nbytes")
    nbytes = meta["nbytes"]
    if not isinstance(nbytes, int) or nbytes < 0 or data_offset + nbytes > size:
        raise ForeignEntryError(
            path, f"a truncated named array ({size} bytes, header says {data_offset} + {nbytes})"
        )
    return meta, data_offset


def read_array_header(fd: int, path: str, size: int) -> tuple[dict[str, Any], int]:
    """Read and parse the header of the open array file *fd* (see decode_array_header)."""
    buf = os.pread(fd, min(size, _PAGE), 0)
    if len(buf) >= 24:
        need = ARRAY_HEADER_SIZE + int.from_bytes(buf[20:24], "little")
        if len(buf) < need <= size:
            buf = os.pread(fd, need, 0)
    return decode_array_header(buf, path, size)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done, n = 0, len(data)
    while done < n:
        done += os.pwrite(fd, data[done:], offset + done)


def _entry_kind_error(root: str, name: str, st: os.stat_result) -> OSError:
    """The error for an entry *name* that exists but is not a named array."""
    path = os.path.join(root, name)
    if stat.S_ISLNK(st.st_mode):
        return ForeignEntryError(path, "a symbolic link; shmstore never follows one")
    if stat.S_ISDIR(st.st_mode):
        return ForeignEntryError(
            path,
            "a namespace (a directory), not a named array; namespaces and named "
            "arrays share the root's names",
        )
    return ForeignEntryError(path, "not a regular file")


def create_array_segment(
    root: str,
    name: str,
    meta: dict[str, Any],
    nbytes: int,
    *,
    write_data: Callable[[int, int], None] | None = None,
    mode: int = 0o600,
) -> int:
    """Create the named array file ``<root>/<name>`` and return a read-write fd on it.

    The file is built under a transient name in the root (``O_EXCL | O_NOFOLLOW``,
    owner-only until *mode* is applied), its data reserved or written, and only
    then published under *name* with ``link()``, which never replaces an entry:
    a reader that finds the name finds a complete array.

    Parameters
    ----------
    meta
        Header document (see :func:`encode_array_header`).
    nbytes
        Bytes of data after the header.
    write_data
        ``write_data(fd, offset)`` writes exactly *nbytes* at *offset* with
        ``pwrite``. ``None`` reserves zeroed space with ``posix_fallocate``.
        Either way a full tmpfs is ``ENOSPC`` here, never a SIGBUS later.
    mode
        Permission bits of the file.

    Raises
    ------
    FileExistsError
        If *name* exists (a :class:`ForeignEntryError` when it is not a named
        array: a namespace, a symlink, ...).
    SharedMemoryFullError
        If the filesystem has no room; nothing is left behind.
    """
    check_name(name, "array")
    rfd = _root_fd(root)
    header = encode_array_header(meta)
    data_offset = len(header)
    tmp = _transient_name("array")
    fd = os.open(tmp, _O_ARRAY_NEW, 0o600, dir_fd=rfd)
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)
        try:
            _pwrite_all(fd, memoryview(header), 0)
            if write_data is not None:
                write_data(fd, data_offset)
            elif nbytes:
                os.posix_fallocate(fd, data_offset, nbytes)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=rfd)
                st = os.statvfs(rfd)
                raise SharedMemoryFullError(
                    name, data_offset + nbytes, st.f_bavail * st.f_frsize, root
                ) from e
            raise
        try:
            os.link(tmp, name, src_dir_fd=rfd, dst_dir_fd=rfd, follow_symlinks=False)
        except FileExistsError:
            try:
                st = os.stat(name, dir_fd=rfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise _entry_kind_error(root, name, st) from None
            raise FileExistsError(
                errno.EEXIST,
                f"named array {name!r} already exists in {root}; pass exist_ok=True to "
                f"attach it, or shmstore.delete({name!r}) first",
                os.path.join(root, name),
            ) from None
        return fd
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=rfd)


def open_array_segment(
    root: str, name: str, *, read_only: bool = False
) -> tuple[int, os.stat_result]:
    """Open the named array file *name* (never through a symlink); return (fd, fstat).

    Only the file type, owner and minimal size are checked here; the caller
    parses the header (:func:`decode_array_header`) from a mapping or with
    :func:`read_array_header`.

    Raises
    ------
    FileNotFoundError
        If no entry has that name.
    ForeignEntryError
        If the entry is a namespace, a symlink or not a regular file.
    PermissionError
        If the file belongs to another user.
    """
    check_name(name, "array")
    rfd = _root_fd(root)
    path = os.path.join(root, name)
    try:
        fd = os.open(name, _O_ARRAY_RO if read_only else _O_ARRAY_RW, dir_fd=rfd)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT,
            f"no named array {name!r} in {root}; create it with "
            f"shmstore.create({name!r}, shape, dtype)",
            path,
        ) from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            try:
                st = os.stat(name, dir_fd=rfd, follow_symlinks=False)
            except FileNotFoundError:
                raise e from None
            raise _entry_kind_error(root, name, st) from e
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _entry_kind_error(root, name, st)
        if st.st_uid != os.geteuid():
            raise PermissionError(
                errno.EACCES,
                f"named array {path!r} belongs to uid {st.st_uid}, not you "
                f"(uid {os.geteuid()}); shmstore only opens your own arrays",
                path,
            )
        if st.st_size < ARRAY_HEADER_SIZE:
            raise ForeignEntryError(path, "a file too short to be a shmstore named array")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def array_root_fd(root: str) -> int:
    """The directory descriptor of *root* that array files are opened relative to.

    ``os.open(name, ARRAY_OPEN_FLAGS[read_only], dir_fd=array_root_fd(root))``
    reopens a file that :func:`open_array_segment` validated before; a caller
    that does so must check with ``fstat`` that it is still that file.
    """
    return _root_fd(root)


def unlink_array_segment(root: str, name: str, *, token: str | None = None) -> bool:
    """Unlink the named array *name*; processes that map it keep their data.

    The file's state word is set to deleted first, so that locks held on it by
    name look the name up again. A file that is not a shmstore named array is
    never removed.

    Parameters
    ----------
    token
        Only unlink the array if its header has this token (the array a scoped
        block created, not another one made since under the same name).

    Returns
    -------
    bool
        Whether this call removed it (False: the token differed, or another
        process removed or replaced it meanwhile).

    Raises
    ------
    FileNotFoundError, ForeignEntryError, PermissionError
        As :func:`open_array_segment`.
    """
    fd, st = open_array_segment(root, name, read_only=False)
    try:
        path = os.path.join(root, name)
        meta, _ = read_array_header(fd, path, st.st_size)
        if token is not None and meta.get("token") != token:
            return False
        os.pwrite(fd, ARRAY_DELETED.to_bytes(8, "little"), ARRAY_STATE_OFFSET)
        rfd = _root_fd(root)
        try:
            cur = os.stat(name, dir_fd=rfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if (cur.st_ino, cur.st_dev) != (st.st_ino, st.st_dev):
            return False  # deleted and re-created meanwhile: not ours to remove
        try:
            os.unlink(name, dir_fd=rfd)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


def iter_root_entries(root: str) -> Iterator[tuple[str, str]]:
    """Yield ``(name, kind)`` for each visible entry of *root*, sorted by name.

    *kind* is ``"namespace"`` (a directory with shmstore's bookkeeping entry),
    ``"array"`` (a regular file of yours with the named-array magic) or
    ``"foreign"`` (anything else: other programs' segments, other users'
    files, symlinks). Hidden and transient entries are skipped. Nothing is
    opened for writing and no symlink is followed.
    """
    rfd = _root_fd(root)
    uid = os.geteuid()
    with os.scandir(rfd) as it:
        entries = sorted((e.name, e) for e in it if not e.name.startswith("."))
    for name, entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        kind = "foreign"
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError):
                mst = os.stat(f"{name}/{META}", dir_fd=rfd, follow_symlinks=False)
                if stat.S_ISDIR(mst.st_mode):
                    kind = "namespace"
        elif stat.S_ISREG(st.st_mode) and st.st_uid == uid and st.st_size >= ARRAY_HEADER_SIZE:
            try:
                fd = os.open(name, _O_ARRAY_RO, dir_fd=rfd)
            except OSError:
                pass
            else:
                try:
                    if os.pread(fd, len(ARRAY_MAGIC), 0) == ARRAY_MAGIC:
                        kind = "array"
                finally:
                    os.close(fd)
        yield name, kind


def iter_array_segments(root: str) -> Iterator[tuple[str, dict[str, Any], os.stat_result]]:
    """Yield ``(name, header, fstat)`` for every valid named array of *root*, by name.

    Foreign and corrupt files are skipped (``shmstore ls`` reports those).
    """
    for name, kind in iter_root_entries(root):
        if kind != "array":
            continue
        try:
            fd, st = open_array_segment(root, name, read_only=True)
        except (FileNotFoundError, ForeignEntryError, PermissionError):
            continue
        try:
            meta, _ = read_array_header(fd, os.path.join(root, name), st.st_size)
        except ForeignEntryError:
            continue
        finally:
            os.close(fd)
        yield name, meta, st


def open_lock_target(root: str, name: str) -> tuple[int, str]:
    """Open the entry whose lock ``shmstore.Lock(name)`` takes; return (fd, kind).

    The lock of a named array is a ``flock`` on the array file itself, and the
    lock of a namespace one on its directory: each goes away with its entry,
    and no extra file is ever left in the root. The fd is read-only (``flock``
    needs no write access) and close-on-exec.

    Raises
    ------
    FileNotFoundError
        If nothing has that name.
    ForeignEntryError
        If the entry is neither a named array nor a namespace.
    PermissionError
        If it belongs to another user.
    """
    check_name(name, "lock")
    rfd = _root_fd(root)
    path = os.path.join(root, name)
    try:
        fd = os.open(name, _O_ARRAY_RO, dir_fd=rfd)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT,
            f"no named array or namespace {name!r} in {root} to lock; create it first, "
            "or pass create=True for a standalone lock",
            path,
        ) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ForeignEntryError(path, "a symbolic link; shmstore never follows one") from e
        raise
    try:
        st = os.fstat(fd)
        _require_own(st, path, "locks your own arrays and namespaces")
        if stat.S_ISDIR(st.st_mode):
            _require_namespace_entry(fd, path)
            return fd, "namespace"
        if not stat.S_ISREG(st.st_mode):
            raise ForeignEntryError(path, "neither a named array nor a namespace")
        read_array_header(fd, path, st.st_size)
        return fd, "array"
    except BaseException:
        os.close(fd)
        raise
