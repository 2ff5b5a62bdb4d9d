"""A namespace directory: open, create, destroy, its values, its bookkeeping, iteration.

A namespace is one directory under the root whose content is a plain Zarr v3
directory layout: the key ``t/c/0/1`` is the file ``<root>/<namespace>/t/c/0/1``.
Its bookkeeping lives in the one hidden entry ``.shmstore/`` (an empty Zarr
group holding an empty Zarr array ``state``, in which lie ``meta.json``, ``gen``,
``usage``, ``fill/`` and ``tmp/``), and this module is that entry's only reader
and writer. It is also the only module that holds a namespace's
descriptors: everything above works through :class:`Namespace` methods.

A key is a regular file (a value in shared memory) or, in a tiered namespace,
a symbolic link standing for a value that spilled (see ``_keyspace``): this
module creates, lists and removes such markers, but never follows one.

Writes go to ``.shmstore/tmp/`` (``O_EXCL | O_NOFOLLOW``, mode 0600), are filled
with ``write()`` (a full tmpfs is ``ENOSPC``, never SIGBUS: PITFALLS 2), then
``rename()``-d over the key (PITFALLS 5). See docs/design.md.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import os
import socket
import stat
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shmstore import _posix as px
from shmstore._errors import ForeignEntryError, SharedMemoryFullError
from shmstore._names import (
    META,
    METADATA_NAMES,
    check_key,
    check_name,
    entry_path,
    parse_tmp_name,
    resolve_root,
    tmp_name,
    transient_name,
)
from shmstore._pool import Kept, Pool, any_kept, drain_all, drain_later
from shmstore._readcache import Entry, Generations, ReadCache

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "FORMAT_VERSION",
    "SPILLED",
    "Namespace",
    "TreeUsage",
    "bookkeeping_leftovers",
    "check_lock_dir",
    "describe_dir",
    "entry_blocks",
    "is_namespace_dir",
    "iter_namespaces",
    "node_paths",
    "read_meta",
    "remove_entry",
    "release_handles",
    "tree_usage",
]

FORMAT_VERSION = 1
# The bookkeeping entry holds two Zarr nodes and nothing else, so that a Zarr
# reader of the namespace directory neither warns nor fails: zarr warns about
# (and, under ``-W error``, raises on) any member of a group that is not a node.
# ``.shmstore`` is an empty group; ``.shmstore/state`` an empty array, which no
# Zarr reader looks into, and which holds every bookkeeping file.
_BOOK = f"{META}/state"
_META_JSON = f"{_BOOK}/meta.json"
_TMP = f"{_BOOK}/tmp"
_GEN = f"{_BOOK}/gen"
_FILL = f"{_BOOK}/fill"
_MARKERS = {
    f"{META}/zarr.json": {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"shmstore": "bookkeeping of this namespace; holds no data"},
    },
    f"{_BOOK}/zarr.json": {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [0],
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes"}],
        "attributes": {"shmstore": "bookkeeping of this namespace; holds no data"},
        "dimension_names": ["shmstore"],
    },
}
_MAX_META_BYTES = 1 << 20
# The clock of the mapping deadlines on the read path (as _readcache's).
_monotonic = time.monotonic
#: About what a new namespace's bookkeeping takes (directories, documents, the page).
_BOOK_BYTES = 8 * 4096


class _Spilled:
    __slots__ = ()

    def __repr__(self) -> str:
        return "SPILLED"


#: What :meth:`Namespace.read` returns for a key whose entry is a spill marker.
SPILLED: Any = _Spilled()

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

# Directory descriptors that writers keep between writes (Namespace._borrow_dir):
# opening a chunk's parent with ``openat2`` costs as much as the rename itself.
# Per handle, a few per parent; in all, at most this many in the process.
_MAX_DIR_FDS = 128
_DIR_FDS_PER_PARENT = 2
_dir_fds = 0
_dir_fds_lock = threading.Lock()


def _close_dirs(dirs: dict[str, list[int]]) -> None:
    """Close the kept directory descriptors *dirs* of a handle (when it goes).

    A finalizer: the garbage collector may run it inside a section of this
    very thread that holds the lock, so it never waits for the lock; the
    count is then put right by the next caller that takes it.
    """
    global _dir_fds
    if not _dir_fds_lock.acquire(blocking=False):
        _dirs_gone.append(dirs)
        return
    try:
        fds = _take_gone_dirs(dirs)
    finally:
        _dir_fds_lock.release()
    px.close_fds(*fds)


# Kept directories of handles that went while the lock was held (_close_dirs).
_dirs_gone: list[dict[str, list[int]]] = []


def _take_gone_dirs(*more: dict[str, list[int]]) -> list[int]:
    """Under the lock: empty *more* and the kept directories of handles gone
    meanwhile; the caller closes what it returns."""
    global _dir_fds
    fds: list[int] = []
    while _dirs_gone:
        more += (_dirs_gone.pop(),)
    for dirs in more:
        fds += [fd for held in dirs.values() for fd in held]
        dirs.clear()
    _dir_fds -= len(fds)
    return fds


def _dirs_after_fork() -> None:
    global _dir_fds_lock
    _dir_fds_lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_dirs_after_fork)


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
    drain_all()


def _dir_mode(mode: int) -> int:
    """Directory bits matching file *mode*: 0600 -> 0700, 0640 -> 0750, 0660 -> 0770."""
    return 0o700 | (mode & 0o066) | ((mode & 0o044) >> 2)


def _require_namespace_entry(fd: int, path: str) -> None:
    """Refuse a directory *fd* that has no ``.shmstore`` directory: not a namespace."""
    try:
        mst = os.stat(META, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        raise ForeignEntryError(path, f"a directory without a {META} entry") from None
    if not stat.S_ISDIR(mst.st_mode):
        raise ForeignEntryError(path, f"its {META} entry is not a directory")


def check_lock_dir(fd: int, path: str) -> None:
    """Refuse a directory *fd* to lock by name unless it is one of your namespaces."""
    px.require_own(os.fstat(fd), path, "locks your own arrays and namespaces")
    _require_namespace_entry(fd, path)


# ------------------------------------------------------------------ meta.json
def read_meta(fd: int, path: str) -> dict[str, Any]:
    """Parse ``meta.json`` of the namespace directory *fd* (never trusted blindly).

    Raises
    ------
    ForeignEntryError
        If it is missing, a symlink, corrupt, or not shmstore's.
    """
    try:
        mfd = os.open(_META_JSON, px.O_READ, dir_fd=fd)
    except FileNotFoundError:
        raise ForeignEntryError(path, f"{_META_JSON} is missing") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ForeignEntryError(path, f"{_META_JSON} is a symbolic link") from None
        raise
    try:
        with os.fdopen(mfd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ForeignEntryError(path, f"{_META_JSON} is not a regular file")
            meta = json.loads(f.read(_MAX_META_BYTES))
    except (ValueError, UnicodeDecodeError) as e:
        raise ForeignEntryError(path, f"{_META_JSON} is corrupt: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != "shmstore":
        raise ForeignEntryError(path, f"{_META_JSON} is not shmstore metadata")
    return meta


def _write_json(fd: int, rel: str, doc: dict[str, Any]) -> None:
    """Atomically (re)write the bookkeeping document *rel* of the namespace directory *fd*."""
    tmp = f"{_BOOK}/{tmp_name(rel.rpartition('/')[2] + '.')}"
    wfd = os.open(tmp, px.O_CREATE, 0o600, dir_fd=fd)
    try:
        px.write_all(wfd, memoryview(json.dumps(doc, indent=1, sort_keys=True).encode()))
    finally:
        os.close(wfd)
    try:
        os.rename(tmp, rel, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)
        raise


def _write_meta(fd: int, meta: dict[str, Any]) -> None:
    """Atomically (re)write ``meta.json`` of the namespace directory *fd*."""
    _write_json(fd, _META_JSON, meta)


# ------------------------------------------------------------------ namespace
class Namespace:
    """A process-local handle on one namespace directory.

    Handles are shared by every store of the process that opens the same
    namespace (see :meth:`open`); they hold the directory descriptors, the
    mapping cache and the generation page. Nothing here unlinks anything
    unless asked to: a process that merely attached leaves the namespace
    untouched when it exits.
    """

    def __init__(self, root: str, name: str, dir_fd: int, meta: dict[str, Any]) -> None:
        self.root = root
        self.name = name
        self.path = entry_path(root, name)
        self.meta = meta
        self.mode = int(meta.get("mode", 0o600))
        self._dmode = _dir_mode(self.mode)
        self._fd = dir_fd
        self._ino = os.fstat(dir_fd).st_ino
        self._tmp_fd = os.open(_TMP, px.O_DIR, dir_fd=dir_fd)
        self._cache = ReadCache()
        self._gen = Generations.open(dir_fd, _GEN, self.mode)
        # The hit path of read() uses these two directly (docs/performance.md).
        self._entries = self._cache.entries
        self._page = self._gen.page
        self._meta_sig: tuple[int, int, int] | None = None
        self._pool: Pool | None = None
        # Parent directories of recent writes and reads, good while the global
        # token is _dirs_tok; each is used by one caller at a time (_borrow_dir).
        self._dirs: dict[str, list[int]] = {}
        self._dirs_tok: int | None = None
        weakref.finalize(self, _close_dirs, self._dirs)
        # Closed when the last reference to the handle goes (never while a
        # store still uses it); views handed out keep their own mappings.
        weakref.finalize(self, px.close_fds, self._fd, self._tmp_fd)

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
        return cls.open_created(name, root, create=create, mode=mode, meta=meta)[0]

    @classmethod
    def open_created(
        cls,
        name: str,
        root: str | os.PathLike[str] | None = None,
        *,
        create: bool,
        mode: int = 0o600,
        meta: dict[str, Any] | None = None,
        exclusive: bool = False,
    ) -> tuple[Namespace, bool]:
        """:meth:`open`, also saying whether this call created the namespace.

        With *exclusive*, an existing namespace is ``FileExistsError``.
        """
        check_name(name)
        root = resolve_root(root)
        key = (root, name)
        with _registry_lock:
            ns = _registry.get(key)
            created = False
            if ns is None or not ns.alive():
                ns, created = cls._open_fresh(
                    root, name, create=create, mode=mode, meta=meta, exclusive=exclusive
                )
            elif exclusive:
                raise cls._exists_error(root, name)
            _remember(key, ns)
            return ns, created

    @staticmethod
    def _exists_error(root: str, name: str) -> FileExistsError:
        return FileExistsError(
            errno.EEXIST,
            f"namespace {name!r} already exists in {root}; a scoped store creates its "
            f"namespace and destroys only that: pick another name, or destroy it first "
            f"(shmstore.destroy({name!r}))",
            entry_path(root, name),
        )

    @classmethod
    def _open_fresh(
        cls,
        root: str,
        name: str,
        *,
        create: bool,
        mode: int,
        meta: dict[str, Any] | None,
        exclusive: bool,
    ) -> tuple[Namespace, bool]:
        rfd = px.root_fd(root)
        for _ in range(8):
            try:
                ns = cls._attach(root, name, rfd)
            except FileNotFoundError:
                if not create:
                    raise
            else:
                if exclusive:
                    raise cls._exists_error(root, name)
                return ns, False
            if cls._create(root, name, rfd, mode, meta or {}):
                return cls._attach(root, name, rfd), True
        raise OSError(f"namespace {name!r} in {root} keeps disappearing while being opened")

    @classmethod
    def _attach(cls, root: str, name: str, rfd: int) -> Namespace:
        path = entry_path(root, name)
        try:
            fd = os.open(name, px.O_DIR, dir_fd=rfd)
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
            raise ForeignEntryError(
                path,
                "a file (a named array?), not a namespace",
                hint=f"attach it with shmstore.attach({name!r}), or remove it with "
                f"shmstore.delete({name!r}) (`shmstore rm {name}`); see shmstore.list()",
            ) from None
        except PermissionError:
            st = os.stat(name, dir_fd=rfd, follow_symlinks=False)
            px.require_own(st, path, "opens your own namespaces: choose another name")
            raise
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ForeignEntryError(path, "a symbolic link; shmstore never follows one") from e
            raise
        try:
            px.require_own(os.fstat(fd), path, "opens your own namespaces")
            _require_namespace_entry(fd, path)
            meta = read_meta(fd, path)
            return cls(root, name, fd, meta)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _create(cls, root: str, name: str, rfd: int, mode: int, extra: dict[str, Any]) -> bool:
        """Build a namespace under a transient name and rename it into place.

        Returns False if another process created *name* first.

        Raises
        ------
        SharedMemoryFullError
            If the filesystem has no room even for the bookkeeping.
        """
        try:
            return cls._build(root, name, rfd, mode, extra)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            st = os.statvfs(rfd)
            raise SharedMemoryFullError(name, _BOOK_BYTES, st.f_bavail * st.f_frsize, root) from e

    @staticmethod
    def _build(root: str, name: str, rfd: int, mode: int, extra: dict[str, Any]) -> bool:
        dmode = _dir_mode(mode)
        tmp = transient_name("new")
        os.mkdir(tmp, 0o700, dir_fd=rfd)
        try:
            tfd = os.open(tmp, px.O_DIR, dir_fd=rfd)
            try:
                os.mkdir(META, 0o700, dir_fd=tfd)
                os.mkdir(_BOOK, 0o700, dir_fd=tfd)
                os.mkdir(_TMP, 0o700, dir_fd=tfd)
                for rel, doc in _MARKERS.items():
                    _write_json(tfd, rel, doc)
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
                Generations.open(tfd, _GEN, mode, create=True)
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
                        entry_path(root, name),
                    ) from e
                raise
            return True
        finally:
            px.rmtree_at(tmp, rfd)

    # -------------------------------------------------------------- identity
    def alive(self) -> bool:
        """Whether the directory this handle holds is still the namespace's (one ``stat``)."""
        try:
            st = os.stat(self.name, dir_fd=px.root_fd(self.root), follow_symlinks=False)
        except FileNotFoundError:
            return False
        return st.st_ino == self._ino

    def destroyed(self) -> bool:
        """Whether the directory this handle holds was removed (``destroy``)."""
        return os.fstat(self._fd).st_nlink == 0

    def gone_error(self) -> FileNotFoundError:
        """The error for an operation on this namespace after it was destroyed."""
        return FileNotFoundError(
            errno.ENOENT,
            f"namespace {self.name!r} in {self.root} was destroyed (and not created "
            "again); create it anew with SharedMemoryStore(...) to write there",
            self.path,
        )

    def _check_alive(self) -> None:
        if self.destroyed():
            raise self.gone_error()

    # ------------------------------------------------------------------ meta
    def read_meta(self) -> dict[str, Any]:
        """``meta.json`` as it is now (one ``stat`` when unchanged since the last call).

        Another process may have changed it since this handle opened the
        namespace (tiered it, say); ``meta.json`` is replaced by rename, so a
        new inode means new content.
        """
        st = os.stat(_META_JSON, dir_fd=self._fd, follow_symlinks=False)
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig != self._meta_sig:
            self.meta = read_meta(self._fd, self.path)
            self._meta_sig = sig
        return self.meta

    @contextlib.contextmanager
    def editing_meta(self) -> Iterator[dict[str, Any]]:
        """Hold the namespace's metadata lock; yield ``meta.json`` to change, saved on exit.

        The lock is a ``flock`` on ``meta.json`` itself, re-checked after it is
        taken: the holder replaces the file, so a waiter that locked the old
        inode locks the new one instead.
        """
        fd = px.flock_recheck(self._fd, _META_JSON)
        assert fd is not None
        try:
            before = read_meta(self._fd, self.path)
            meta = json.loads(json.dumps(before))
            yield meta
            if meta != before:
                _write_meta(self._fd, meta)
                self.meta = meta
        finally:
            os.close(fd)

    def open_bookkeeping(self, name: str) -> int:
        """A read-write descriptor of the bookkeeping file *name*, made if missing."""
        return os.open(
            f"{_BOOK}/{name}",
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            self.mode,
            dir_fd=self._fd,
        )

    # ------------------------------------------------------------------ reads
    def read(self, key: str, wrap: Callable[[memoryview], Any] | None = None) -> Any:
        """Return a read-only view of the value of *key*, or ``None`` if missing.

        The view maps the segment directly (zero copy). It stays valid, showing
        the value as it was, even if the key is later replaced or deleted. A
        spill marker (a symlink as the key's entry) reads as :data:`SPILLED`.

        Parameters
        ----------
        wrap
            If given, return ``wrap(view)`` instead, made once per mapping and
            cached with it (the store wraps each chunk in a zarr buffer once,
            not on every read). Pass the same callable every time.
        """
        ent = self._entries.get(key)
        page = self._page
        if (
            ent is None
            or page is None
            or page[0] != ent.gtok
            or page[ent.slot] != ent.ktok
            or _monotonic() >= ent.deadline
        ):
            # A shmstore writer replaced or deleted a key of this slot since the
            # mapping was validated (or it is new), or the mapping is old: check
            # it with one system call. Otherwise no system call at all.
            ent = self._validate(key, ent)
            if ent is None or ent is SPILLED:
                return ent
        if wrap is None:
            return ent.view
        if ent.wrap is not wrap:
            ent.wrapped = wrap(ent.view)
            ent.wrap = wrap
        return ent.wrapped

    def _validate(self, key: str, ent: Entry | None) -> Any:
        """Check the cached mapping of *key* with one ``stat``; map the key anew if replaced."""
        slot = Generations.slot(check_key(key)) if ent is None else ent.slot
        # The tokens are read *before* the stat (or open): a replace that the
        # stat misses bumps them after it, so the next read looks again.
        gtok, ktok = self._gen.tokens(slot)
        if ent is None:
            return self._map(key, slot, gtok, ktok)
        try:
            st = self._lstat_at(key)
        except (FileNotFoundError, NotADirectoryError):
            self._cache.pop(key)
            return None
        if ent.same_file(st):
            return ent.revalidated(gtok, ktok)
        if not stat.S_ISREG(st.st_mode):
            self._cache.pop(key)
            return SPILLED if stat.S_ISLNK(st.st_mode) else None
        return self._map(key, slot, gtok, ktok)

    def _map(self, key: str, slot: int, gtok: Any, ktok: Any) -> Any:
        for _ in range(8):
            try:
                fd = px.open_beneath(self._fd, key)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                self._cache.pop(key)
                return None
            except BlockingIOError:
                # The name led to a version a writer displaced and now reuses
                # under its lease (``_pool``): the key names another file now.
                continue
            except OSError as e:
                if e.errno != errno.ELOOP:
                    raise
                # Never followed: a spill marker if the key's own entry is the
                # link, else a symlink planted on its path (no value). A value
                # that replaced the marker since is opened again.
                self._cache.pop(key)
                st = self.lstat(key)
                if st is None or not stat.S_ISREG(st.st_mode):
                    return SPILLED if st is not None and stat.S_ISLNK(st.st_mode) else None
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    self._cache.pop(key)
                    return None
                # No MAP_POPULATE: read faults map 16 pages at a time (fault-around),
                # which costs less than populating up front (docs/performance.md).
                view = memoryview(b"") if st.st_size == 0 else px.map_readonly(fd, st.st_size)
            finally:
                os.close(fd)
            # An open that found the key's file before a writer displaced it, and
            # waited for that writer's lease to reuse it (``_pool``), holds
            # another value now: it counts only if the key still names the file.
            try:
                now = self._lstat_at(key)
            except (FileNotFoundError, NotADirectoryError):
                self._cache.pop(key)
                return None
            if now.st_ino == st.st_ino and now.st_dev == st.st_dev:
                return self._cache.put(key, Entry(view, st, slot, gtok, ktok))
            view.release()
        raise OSError(f"key {key!r} of namespace {self.name!r} keeps changing while opened")

    def _lstat_at(self, rel: str) -> os.stat_result:
        """``lstat`` of *rel*, whose parent directories are never symlinks followed."""
        parent, _, base = rel.rpartition("/")
        if not parent:
            return os.stat(base, dir_fd=self._fd, follow_symlinks=False)
        pfd, tok = self._borrow_dir(parent)
        try:
            try:
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                if os.fstat(pfd).st_nlink:
                    raise  # the directory is there: the key is not
                # A kept descriptor of a removed directory: ask a new one.
                os.close(pfd)
                pfd = -1
                pfd, tok = self._borrow_dir(parent, fresh=True)
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except BaseException:
            if pfd >= 0:
                os.close(pfd)
            raise
        self._return_dir(parent, pfd, tok)
        return st

    def lstat(self, key: str) -> os.stat_result | None:
        """The status of the entry of *key* (value, marker or directory), never followed.

        ``None`` if there is none, or it is something else (a FIFO, a device).
        """
        check_key(key)
        try:
            st = self._lstat_at(key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        mode = st.st_mode
        return st if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode) else None

    def size(self, key: str) -> int | None:
        """Return the exact length of the value *key* in shared memory, or ``None``."""
        st = self.lstat(key)
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None

    def read_marker(self, key: str) -> str | None:
        """The target of the spill marker *key* (never followed), or ``None`` if it is none."""
        parent, _, base = check_key(key).rpartition("/")
        try:
            pfd = px.open_dir_beneath(self._fd, parent) if parent else self._fd
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return os.readlink(base, dir_fd=pfd)
        except (FileNotFoundError, NotADirectoryError, OSError):
            return None
        finally:
            if parent:
                os.close(pfd)

    # ----------------------------------------------------------------- writes
    def write(self, key: str, data: Any, *, exclusive: bool = False, recycle: bool = False) -> bool:
        """Atomically set *key* to *data* (any C-contiguous buffer).

        Parameters
        ----------
        exclusive
            Only write if *key* does not exist yet (atomic ``link``).
        recycle
            Write into a file an earlier write or delete of this process left
            behind, where nobody maps it, and keep the version this write
            displaces for a later one (``_pool``). Only for namespaces whose
            bytes no capacity counts.

        Returns
        -------
        bool
            False if *exclusive* and the key already existed; True otherwise.

        Raises
        ------
        SharedMemoryFullError
            If the shared-memory filesystem is full; nothing is left behind.
        FileNotFoundError
            If the namespace was destroyed.
        """
        check_key(key)
        pool = (self._pool or self._get_pool()) if recycle else None
        if pool is None or not pool.enabled:
            return self.install(self.prepare(data), key, exclusive=exclusive)
        view = px.as_bytes_view(data)
        kept = pool.take(view.nbytes)
        if kept is not None:
            try:
                kept.fill(view)
            except BaseException:
                pool.discard(kept)
                raise
            tmp, kept.name = kept.name, None
        else:
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
            tmp, kept = self._prepare(view, pool)
        try:
            written = self._install(tmp, key, exclusive, pool)
        except BaseException:
            self.discard(tmp)
            pool.forget(kept)
            raise
        if written and kept is not None:
            pool.installed(kept)
        else:
            pool.forget(kept)
        return written

    def _get_pool(self) -> Pool:
        pool = self._pool
        if pool is None:
            pool = self._pool = Pool(self._tmp_fd)
            weakref.finalize(self, drain_later, pool)
        return pool

    def release_pool(self) -> None:
        """Free the files this handle keeps for reuse (``_pool``)."""
        if self._pool is not None:
            self._pool.drain()

    def pooled_bytes(self) -> int:
        """Bytes this process keeps in this namespace for reuse."""
        return 0 if self._pool is None else self._pool.pooled_bytes()

    def kept_names(self) -> set[str]:
        """The temporary files (in ``tmp/``) this process keeps for reuse."""
        return set() if self._pool is None else self._pool.names()

    def prepare(self, data: Any) -> str:
        """Write *data* to a new temporary file of the namespace; return its name.

        :meth:`install` publishes it under a key, :meth:`discard` drops it.

        Raises
        ------
        SharedMemoryFullError
            If the shared-memory filesystem is full; nothing is left behind.
        FileNotFoundError
            If the namespace was destroyed.
        """
        return self._prepare(px.as_bytes_view(data), None)[0]

    def _prepare(self, view: memoryview, pool: Pool | None) -> tuple[str, Kept | None]:
        """Write *view* to a new temporary file; with *pool*, keep its descriptor."""
        tmp = tmp_name()
        flags = px.O_CREATE if pool is None else px.O_CREATE_RW
        try:
            fd = self._with_descriptors(os.open, tmp, flags, self.mode, dir_fd=self._tmp_fd)
        except FileNotFoundError:
            self._check_alive()  # destroyed by another process: say so
            raise
        kept = None
        try:
            try:
                if self.mode & ~0o600:
                    os.fchmod(fd, self.mode)
                try:
                    px.write_all(fd, view)
                except OSError as e:
                    if e.errno != errno.ENOSPC or not self._release_pools():
                        raise
                    px.write_all(fd, view[os.lseek(fd, 0, os.SEEK_CUR) :])
                if pool is not None:
                    kept = pool.fresh(fd, view.nbytes)
            finally:
                if kept is None:
                    os.close(fd)
        except OSError as e:
            self.discard(tmp)
            if e.errno == errno.ENOSPC:
                # Measured once the temporary is gone: what was left before the write.
                raise SharedMemoryFullError(
                    self.name, view.nbytes, self.free_bytes(), self.root
                ) from e
            raise
        except BaseException:
            self.discard(tmp)
            raise
        return tmp, kept

    @staticmethod
    def _release_pools() -> bool:
        """A full filesystem, or no descriptor left: free the files (and the directory
        descriptors) this process keeps for reuse; whether it kept any."""
        kept = any_kept() or _dir_fds > 0
        drain_all()
        with _registry_lock:
            handles = list(_registry.values())
        for ns in handles:
            ns.release_dirs()
        return kept

    def install(self, tmp: str, key: str, *, exclusive: bool = False) -> bool:
        """Publish the temporary file *tmp* as *key* (atomic ``rename``, or ``link``).

        Returns False if *exclusive* and the key existed (the temporary is gone).
        On any error the temporary is removed.
        """
        try:
            return self._install(tmp, key, exclusive, None)
        except BaseException:
            self.discard(tmp)
            raise

    def discard(self, tmp: str) -> None:
        """Remove the temporary file *tmp* made by :meth:`prepare` (if still there)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=self._tmp_fd)

    def mark(self, key: str, target: str, *, exclusive: bool = False) -> bool:
        """Atomically replace *key* with a spill marker: a symlink to *target*.

        Returns False if *exclusive* and the key already existed.
        """
        check_key(key)
        tmp = tmp_name()
        try:
            os.symlink(target, tmp, dir_fd=self._tmp_fd)
        except FileNotFoundError:
            self._check_alive()
            raise
        try:
            return self._install(tmp, key, exclusive, None)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self._tmp_fd)
            raise

    def _borrow_dir(self, parent: str, *, fresh: bool = False) -> tuple[int, int | None]:
        """A descriptor of the directory *parent* for this caller alone, and its token.

        A kept one if the handle's kept descriptors are still good, else a new
        one (``openat2``, no symlink followed). They are good while the page's
        global token is the one they were kept under: every ``delete_dir`` and
        ``destroy`` (of any process) bumps it after moving directories away,
        and the handle then closes them all, so a writer never goes on renaming
        into a directory moved out of sight. One that was merely removed fails
        the rename with ``ENOENT``, and the caller retries with a new one. Give
        it back with :meth:`_return_dir`, or close it. *fresh*: a new one in
        any case.
        """
        global _dir_fds
        page = self._page
        if page is None:
            return self._open_dir(parent), None
        tok = page[0]
        if not fresh and self._dirs:
            fd = -1
            stale: list[int] = []
            with _dir_fds_lock:
                if tok != self._dirs_tok:
                    stale = self._take_dirs()
                else:
                    held = self._dirs.get(parent)
                    if held:
                        fd = held.pop()
                        _dir_fds -= 1
                        if not held:
                            del self._dirs[parent]
            px.close_fds(*stale)
            if fd >= 0:
                return fd, tok
        return self._open_dir(parent), tok

    def _open_dir(self, parent: str) -> int:
        return self._with_descriptors(px.open_dir_beneath, self._fd, parent)

    def _with_descriptors(self, opener: Callable[..., int], *args: Any, **kwargs: Any) -> int:
        """``opener(...)``; out of descriptors, again once the kept ones
        (recycled files, directories) are given back."""
        try:
            return opener(*args, **kwargs)
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE) or not self._release_pools():
                raise
            return opener(*args, **kwargs)

    def _return_dir(self, parent: str, fd: int, tok: int | None) -> None:
        """Keep *fd* (from :meth:`_borrow_dir`) for the next write under *parent*."""
        global _dir_fds
        page = self._page
        if tok is not None and page is not None and page[0] == tok:
            with _dir_fds_lock:
                if tok != self._dirs_tok:
                    stale = self._take_dirs()
                    self._dirs_tok = tok
                else:
                    stale = _take_gone_dirs() if _dirs_gone else []
                held = self._dirs.get(parent)
                if _dir_fds < _MAX_DIR_FDS and (held is None or len(held) < _DIR_FDS_PER_PARENT):
                    self._dirs.setdefault(parent, []).append(fd)
                    _dir_fds += 1
                    fd = -1
            px.close_fds(*stale)
        if fd >= 0:
            os.close(fd)

    def _take_dirs(self) -> list[int]:
        """Under the lock: empty the kept directories (and those of handles gone
        meanwhile); the caller closes what it returns."""
        return _take_gone_dirs(self._dirs)

    def release_dirs(self) -> None:
        """Close the directory descriptors this handle keeps between writes."""
        with _dir_fds_lock:
            fds = self._take_dirs()
        px.close_fds(*fds)

    def _install(self, tmp: str, key: str, exclusive: bool, pool: Pool | None) -> bool:
        tfd = self._tmp_fd
        parent, _, base = key.rpartition("/")
        for _ in range(64):
            tok = None
            try:
                pfd, tok = self._borrow_dir(parent) if parent else (self._fd, None)
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
            done = False
            try:
                if exclusive:
                    try:
                        os.link(tmp, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
                    except FileExistsError:
                        os.unlink(tmp, dir_fd=tfd)
                        done = True
                        return False
                    os.unlink(tmp, dir_fd=tfd)
                elif pool is not None and pool.enabled:
                    self._exchange(tmp, pfd, base, key, pool)
                else:
                    os.rename(tmp, base, src_dir_fd=tfd, dst_dir_fd=pfd)
                done = True
                self._cache.pop(key)
                self._gen.bump(key)
                return True
            except FileNotFoundError:
                # The parent was pruned by a concurrent delete after we opened
                # it (a removed directory takes no new entries): redo it.
                self._check_alive()
                continue
            except IsADirectoryError:
                done = True
                raise IsADirectoryError(
                    errno.EISDIR,
                    f"cannot set key {key!r} in namespace {self.name!r}: it is a prefix "
                    "of other keys; delete those first",
                ) from None
            finally:
                if parent:
                    if done:
                        self._return_dir(parent, pfd, tok)
                    else:
                        os.close(pfd)  # maybe a removed directory: never kept
        raise OSError(f"could not install key {key!r} in namespace {self.name!r}")

    def _exchange(self, tmp: str, pfd: int, base: str, key: str, pool: Pool) -> None:
        """Swap *tmp* in as *key*; the version displaced goes to *pool* (a plain rename if none)."""
        tfd = self._tmp_fd
        try:
            px.exchange(tfd, tmp, pfd, base)
        except FileNotFoundError:
            os.rename(tmp, base, src_dir_fd=tfd, dst_dir_fd=pfd)  # a new key
            return
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EXDEV):
                raise
            pool.enabled = False  # not on this filesystem: the plain path from now on
            os.rename(tmp, base, src_dir_fd=tfd, dst_dir_fd=pfd)
            return
        st = px.quick_stat(tfd, tmp)
        if stat.S_ISDIR(st.st_mode):
            px.exchange(tfd, tmp, pfd, base)  # put the directory back
            raise IsADirectoryError(errno.EISDIR, key)
        if stat.S_ISREG(st.st_mode):
            pool.put(tmp, st)
        else:
            os.unlink(tmp, dir_fd=tfd)  # a spill marker the value replaced

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

    def delete(self, key: str, *, recycle: bool = False) -> os.stat_result | None:
        """Remove *key* (a value or a marker); return what it was, ``None`` if nothing.

        Empty parent directories go too. With *recycle*, a value nobody maps
        is kept for a later write of its size (see :meth:`write`).
        """
        check_key(key)
        self._cache.pop(key)
        parent, _, base = key.rpartition("/")
        try:
            pfd = px.open_dir_beneath(self._fd, parent) if parent else self._fd
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            try:
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    return None
                pool = self._get_pool() if recycle else None
                if pool is not None and stat.S_ISREG(st.st_mode) and pool.room(st.st_size):
                    tmp = tmp_name()
                    os.rename(base, tmp, src_dir_fd=pfd, dst_dir_fd=self._tmp_fd)
                    pool.put(tmp, st)
                else:
                    os.unlink(base, dir_fd=pfd)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
        finally:
            if parent:
                os.close(pfd)
        self._gen.bump(key)
        self._prune(parent)
        return st

    def _rmdir_at(self, rel: str) -> bool:
        parent, _, base = rel.rpartition("/")
        try:
            pfd = px.open_dir_beneath(self._fd, parent) if parent else self._fd
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            os.rmdir(base, dir_fd=pfd)
        except OSError:
            return False  # not empty, gone, or not ours to remove: leave it
        finally:
            if parent:
                os.close(pfd)
        return True

    def _prune(self, parent: str) -> None:
        while parent and self._rmdir_at(parent):
            parent = parent.rpartition("/")[0]

    def delete_prefix(self, prefix: str, *, recycle: bool = False) -> None:
        """Remove every key (values and markers) under the directory *prefix* (``""``: all).

        Like zarr's ``delete_dir``, ``"a"`` removes the keys below ``a/``, not a
        key named ``a`` itself. Each subtree is moved out of sight first, so no
        reader sees it half gone. With *recycle*, values nobody maps are kept
        for later writes of their sizes, as far as the pool's bound allows.
        """
        prefix = prefix.rstrip("/")
        parent, _, base = prefix.rpartition("/")
        if prefix:
            check_key(prefix)
            try:
                pfd = px.open_dir_beneath(self._fd, parent) if parent else self._fd
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
                trash = f"{_TMP}/{tmp_name()}"
                try:
                    os.rename(name, trash, src_dir_fd=pfd, dst_dir_fd=self._fd)
                except FileNotFoundError:
                    continue
                self._gen.bump(None)
                if recycle:
                    self._recycle_tree(trash, self._get_pool())
                px.rmtree_at(trash, self._fd)
        finally:
            if pfd != self._fd:
                os.close(pfd)
        if parent:
            self._prune(parent)
        self._cache.clear()

    def _recycle_tree(self, trash: str, pool: Pool) -> None:
        """Move the values of the removed subtree *trash* into *pool*, while it has room."""
        tfd = self._tmp_fd
        try:
            st = os.stat(trash, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISREG(st.st_mode):
            if pool.room(st.st_size):
                name = tmp_name()
                os.rename(trash, name, src_dir_fd=self._fd, dst_dir_fd=tfd)
                pool.put(name, st)
            return
        if not stat.S_ISDIR(st.st_mode):
            return
        for dirpath, _dirs, files, dfd in os.fwalk(trash, dir_fd=self._fd):
            del dirpath
            for entry in files:
                est = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
                if not stat.S_ISREG(est.st_mode) or not pool.room(est.st_size):
                    continue
                name = tmp_name()
                os.rename(entry, name, src_dir_fd=dfd, dst_dir_fd=tfd)
                pool.put(name, est)

    # --------------------------------------------------------------- listing
    def _open_listing(self, base: str) -> int | None:
        try:
            return (
                px.open_dir_beneath(self._fd, base)
                if base
                else os.open(".", px.O_DIR, dir_fd=self._fd)
            )
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                return None
            raise

    def iter_keys(self, prefix: str = "", *, markers: bool = False) -> Iterator[str]:
        """Yield every key that starts with *prefix* (a plain string prefix).

        With *markers*, spill markers are keys too (a tiered namespace).
        """
        base = prefix.rpartition("/")[0]
        if base:
            check_key(base)
        dfd = self._open_listing(base)
        if dfd is None:
            return
        rel = f"{base}/" if base else ""
        for key in _walk(dfd, rel, markers):
            if key.startswith(prefix):
                yield key

    def list_dir(self, prefix: str, *, markers: bool = False) -> list[str]:
        """The names directly under the directory *prefix* (values, markers, directories)."""
        prefix = prefix.rstrip("/")
        if prefix:
            check_key(prefix)
        dfd = self._open_listing(prefix)
        if dfd is None:
            return []
        try:
            with os.scandir(dfd) as it:
                return [
                    e.name
                    for e in it
                    if (prefix or e.name != META)
                    and (
                        e.is_file(follow_symlinks=False)
                        or e.is_dir(follow_symlinks=False)
                        or (markers and e.is_symlink())
                    )
                ]
        finally:
            os.close(dfd)

    def value_stats(self) -> Iterator[tuple[str, os.stat_result]]:
        """``(key, lstat)`` of every value in shared memory (for eviction by access time)."""
        for key in self.iter_keys(""):
            st = self.lstat(key)
            if st is not None and stat.S_ISREG(st.st_mode):
                yield key, st

    def value_bytes(self) -> int:
        """The exact length of every value in shared memory, summed (a walk)."""
        return sum(st.st_size for _, st in self.value_stats())

    def touch(self, key: str) -> None:
        """Set the access time of the value *key* to now (its mtime is kept).

        The mtime is what readers use to detect a replaced value.
        """
        parent, _, base = key.rpartition("/")
        with contextlib.suppress(OSError):
            pfd = px.open_dir_beneath(self._fd, parent) if parent else self._fd
            try:
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    os.utime(
                        base, ns=(time.time_ns(), st.st_mtime_ns), dir_fd=pfd, follow_symlinks=False
                    )
            finally:
                if parent:
                    os.close(pfd)

    # ------------------------------------------------------------- key locks
    @staticmethod
    def _fill_name(key: str) -> str:
        return f"{_FILL}/{hashlib.sha256(key.encode('utf-8', 'surrogateescape')).hexdigest()}"

    def lock_key(self, key: str, *, blocking: bool = True) -> int | None:
        """Take the lock of *key*; return its descriptor.

        What a read-through cache's miss holds while it fetches, and what a
        tiered namespace's writer holds while it moves a key's value into or
        out of the spill tier. ``None`` if *blocking* is false and another
        process holds it. The kernel releases it if the holder dies.
        """
        with contextlib.suppress(FileExistsError):
            os.mkdir(_FILL, 0o700, dir_fd=self._fd)
        return px.flock_recheck(self._fd, self._fill_name(key), blocking=blocking)

    def unlock_key(self, key: str, fd: int) -> None:
        """Release (and remove) the lock of *key* taken by :meth:`lock_key`."""
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._fill_name(key), dir_fd=self._fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------- lifetime
    def mtime(self) -> float:
        """The namespace directory's last modification time."""
        return os.fstat(self._fd).st_mtime

    def free_bytes(self) -> int:
        """Bytes left on the filesystem that holds the namespace."""
        st = os.statvfs(self._fd)
        return st.f_bavail * st.f_frsize

    def destroy(self) -> bool:
        """Unlink the whole namespace; return whether this call removed it.

        It disappears for every process at once (renamed away, then removed);
        mappings other processes hold stay valid.
        """
        rfd = px.root_fd(self.root)
        removed = False
        self.release_pool()
        self.release_dirs()
        if self.alive():
            trash = transient_name("trash")
            try:
                os.rename(self.name, trash, src_dir_fd=rfd, dst_dir_fd=rfd)
            except FileNotFoundError:
                pass
            else:
                removed = True
                px.rmtree_at(trash, rfd)
        self._gen.bump(None)
        self._cache.clear()
        with _registry_lock:
            _forget((self.root, self.name), self)
        return removed

    def __repr__(self) -> str:
        return f"<Namespace {self.name!r} in {self.root!r}>"


def _walk(dfd: int, rel: str, markers: bool) -> Iterator[str]:
    """Yield the keys below the directory *dfd*, which this closes."""
    try:
        with os.scandir(dfd) as it:
            entries = [
                (
                    e.name,
                    e.is_dir(follow_symlinks=False),
                    e.is_file(follow_symlinks=False) or (markers and e.is_symlink()),
                )
                for e in it
            ]
        subdirs = []
        for name, is_dir, is_key in entries:
            if not rel and name == META:
                continue
            if is_key:
                yield rel + name
            elif is_dir:
                subdirs.append(name)
        for name in subdirs:
            try:
                sub = os.open(name, px.O_DIR, dir_fd=dfd)
            except OSError:
                continue  # removed meanwhile, or replaced by a symlink: never followed
            yield from _walk(sub, f"{rel}{name}/", markers)
    finally:
        os.close(dfd)


# ---------------------------------------------------------------- root scans
def is_namespace_dir(root: str, name: str) -> bool:
    """Whether the root entry *name* is a directory with a ``.shmstore`` directory."""
    try:
        st = os.stat(f"{name}/{META}", dir_fd=px.root_fd(root), follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode)


def iter_namespaces(root: str, *, own: bool = True) -> list[str]:
    """Names of the namespaces of *root*, sorted (only this user's if *own*).

    Skips named arrays (plain files), hidden and transient entries, symlinks
    and directories without shmstore bookkeeping.
    """
    uid = os.geteuid()
    names = []
    with os.scandir(px.root_fd(root)) as it:
        entries = [e for e in it if not e.name.startswith(".")]
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if own and entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        if is_namespace_dir(root, entry.name):
            names.append(entry.name)
    return sorted(names)


def describe_dir(root: str, name: str) -> tuple[dict[str, Any], os.stat_result]:
    """``(meta.json, fstat)`` of the namespace directory *name*, read without opening a handle.

    Raises
    ------
    FileNotFoundError
        If there is no entry *name* in *root*.
    PermissionError
        If it cannot be read (another user's).
    ForeignEntryError
        If the entry is not a shmstore namespace.
    """
    path = entry_path(root, name)
    try:
        dfd = os.open(name, px.O_DIR, dir_fd=px.root_fd(root))
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, f"no namespace {name!r} in {root}; see `shmstore ls`", path
        ) from None
    except PermissionError:
        raise PermissionError(
            errno.EACCES,
            f"cannot read namespace {name!r} in {root}: it belongs to another user",
            path,
        ) from None
    except OSError as e:
        # O_NOFOLLOW: a symlink fails (ENOTDIR or ELOOP) and is never followed.
        if os.path.islink(path):
            what = "a symbolic link"
        elif e.errno == errno.ENOTDIR:
            what = "a file, not a namespace"
        else:
            what = f"cannot be opened: {e.strerror}"
        raise ForeignEntryError(path, what) from None
    try:
        return read_meta(dfd, path), os.fstat(dfd)
    finally:
        os.close(dfd)


def node_paths(root: str, name: str) -> list[str]:
    """Paths (``""`` for the root) of the zarr groups and arrays under namespace *name*.

    A node is a directory holding ``zarr.json`` (v3) or ``.zarray``/``.zgroup``
    (v2); the bookkeeping entry and symlinks are never entered.
    """
    out: list[str] = []

    def walk(dfd: int, rel: str) -> None:
        try:
            with os.scandir(dfd) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            names = {n for n, _ in entries}
            if names & {"zarr.json", ".zarray", ".zgroup"}:
                out.append(rel.rstrip("/"))
            for sub_name, is_dir in sorted(entries):
                if not is_dir or (not rel and sub_name == META):
                    continue
                try:
                    sub = os.open(sub_name, px.O_DIR, dir_fd=dfd)
                except OSError:
                    continue
                walk(sub, f"{rel}{sub_name}/")
        finally:
            os.close(dfd)

    walk(os.open(name, px.O_DIR, dir_fd=px.root_fd(root)), "")
    return out


# ---------------------------------------------------------------------- trees
@dataclass
class TreeUsage:
    """What a directory tree holds, counted without following symlinks.

    Attributes
    ----------
    keys
        Regular files outside the ``.shmstore`` bookkeeping entry.
    chunks
        Those keys that are not zarr metadata documents.
    nbytes
        Exact length of the keys, summed.
    chunk_nbytes
        Exact length of the chunks, summed.
    allocated
        Memory the whole tree takes in the filesystem (``st_blocks``), the
        bookkeeping entry and writes in flight included.
    modified
        Latest modification time of any file or directory of the tree.
    markers
        Spill markers (values of a tiered namespace that live in its spill tier).
    """

    keys: int = 0
    chunks: int = 0
    nbytes: int = 0
    chunk_nbytes: int = 0
    allocated: int = 0
    modified: float = 0.0
    markers: int = 0


def _walk_usage(dfd: int, usage: TreeUsage, *, top: bool) -> None:
    """Add the tree of the directory *dfd* (which this closes) to *usage*."""
    try:
        st = os.fstat(dfd)
        usage.allocated += st.st_blocks * 512
        usage.modified = max(usage.modified, st.st_mtime)
        with os.scandir(dfd) as it:
            entries = list(it)
        for e in entries:
            try:
                est = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we walk
            bookkeeping = top and e.name == META
            if stat.S_ISDIR(est.st_mode):
                try:
                    sub = os.open(e.name, px.O_DIR, dir_fd=dfd)
                except OSError:
                    continue
                if bookkeeping:
                    inner = TreeUsage()
                    _walk_usage(sub, inner, top=False)
                    usage.allocated += inner.allocated
                else:
                    _walk_usage(sub, usage, top=False)
            elif stat.S_ISREG(est.st_mode):
                usage.allocated += est.st_blocks * 512
                usage.modified = max(usage.modified, est.st_mtime)
                usage.keys += 1
                usage.nbytes += est.st_size
                if e.name not in METADATA_NAMES:
                    usage.chunks += 1
                    usage.chunk_nbytes += est.st_size
            elif stat.S_ISLNK(est.st_mode):
                usage.markers += 1
    finally:
        os.close(dfd)


def tree_usage(path: str | os.PathLike[str]) -> TreeUsage:
    """Count the keys, chunks and bytes of the directory tree at *path*.

    Raises
    ------
    FileNotFoundError
        If *path* does not exist.
    NotADirectoryError
        If *path* is not a directory (or is a symlink).
    """
    usage = TreeUsage()
    _walk_usage(os.open(os.fspath(path), px.O_DIR), usage, top=True)
    return usage


def entry_blocks(dir_fd: int, name: str) -> tuple[int, float] | None:
    """(allocated bytes, ctime) of *name* under *dir_fd*, whole tree for a directory."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        try:
            sub = os.open(name, px.O_DIR, dir_fd=dir_fd)
        except OSError:
            return st.st_blocks * 512, st.st_ctime
        usage = TreeUsage()
        _walk_usage(sub, usage, top=False)
        return usage.allocated, st.st_ctime
    return st.st_blocks * 512, st.st_ctime


# ------------------------------------------------------------------ leftovers
@dataclass
class BookkeepingLeftover:
    """An entry of a namespace's bookkeeping that a process may have left behind.

    Attributes
    ----------
    kind
        ``"partial-write"``, ``"partial-meta"`` or ``"orphan-lock"``.
    directory, entry
        Where it is: the entry *entry* of the directory *directory*.
    pid
        The writer's pid (``None`` for a fill lock, which no process holds).
    nbytes, ctime
        Memory it takes and its last status change.
    """

    kind: str
    directory: str
    entry: str
    pid: int | None
    nbytes: int
    ctime: float


def bookkeeping_leftovers(root: str, name: str) -> tuple[dict[str, Any], list[BookkeepingLeftover]]:
    """``meta.json`` of namespace *name* and the candidates ``shmstore gc`` may reclaim.

    Writes in flight (``tmp/<pid>.*.partial``, ``meta.json.<pid>.*.partial``)
    are reported with their writer's pid, for the caller to check; fill locks
    only when no process holds them.

    Raises
    ------
    OSError, ForeignEntryError
        If the namespace cannot be read, or its metadata is not trusted.
    """
    path = entry_path(root, name)
    dfd = os.open(name, px.O_DIR, dir_fd=px.root_fd(root))
    out: list[BookkeepingLeftover] = []
    try:
        meta = read_meta(dfd, path)
        for sub, kind, prefix in (
            (_BOOK, "partial-meta", "meta.json."),
            (_BOOK, "partial-meta", "zarr.json."),
            (_TMP, "partial-write", ""),
        ):
            try:
                sfd = os.open(sub, px.O_DIR, dir_fd=dfd)
            except OSError:
                continue
            try:
                with os.scandir(sfd) as it:
                    names = sorted(e.name for e in it)
                for entry in names:
                    pid = parse_tmp_name(entry, prefix)
                    blocks = entry_blocks(sfd, entry) if pid is not None else None
                    if blocks is not None:
                        where = f"{path}/{sub}"
                        out.append(BookkeepingLeftover(kind, where, entry, pid, *blocks))
            finally:
                os.close(sfd)
        try:
            ffd = os.open(_FILL, px.O_DIR, dir_fd=dfd)
        except OSError:
            ffd = -1
        if ffd >= 0:
            try:
                with os.scandir(ffd) as it:
                    locks = sorted(e.name for e in it if e.is_file(follow_symlinks=False))
                where = f"{path}/{_FILL}"
                for entry in locks:
                    if px.lock_holders(f"{where}/{entry}"):
                        continue  # a fill in progress
                    blocks = entry_blocks(ffd, entry)
                    if blocks is not None:
                        out.append(BookkeepingLeftover("orphan-lock", where, entry, None, *blocks))
            finally:
                os.close(ffd)
    finally:
        os.close(dfd)
    return meta, out


def remove_entry(directory: str, entry: str, *, locked: bool = False) -> bool:
    """Remove *entry* of *directory* (a tree, never followed); return whether it was there.

    With *locked*, *entry* is a lock file, removed only while nobody holds it.
    """
    try:
        dfd = os.open(directory, px.O_DIR)
    except FileNotFoundError:
        return False
    try:
        if locked:
            return px.unlink_locked(dfd, entry)
        if entry_blocks(dfd, entry) is None:
            return False
        px.rmtree_at(entry, dfd)
        return True
    finally:
        os.close(dfd)
