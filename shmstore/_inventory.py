"""What lives in a shared-memory root: namespaces, their usage, and leftovers of crashes.

This is the read side of ``shmstore ls``/``du``/``gc``: it walks a root without
following symlinks and without opening anything for writing, reads each
namespace's ``.shmstore/meta.json`` (never trusting an entry whose metadata is
missing or corrupt), and finds what crashed processes left behind:

- ``<ns>/.shmstore/tmp/<pid>.*.partial``: a write (or the trash of a
  ``delete_prefix``) interrupted before its ``rename`` (see
  ``Namespace._tmp_name``);
- ``<ns>/.shmstore/meta.json.<pid>.partial``: an interrupted metadata update;
- ``<root>/.shmstore-new.<pid>.*`` and ``.shmstore-trash.<pid>.*``: a namespace
  interrupted while being created or destroyed;
- scoped namespaces (``"scoped": true`` in ``meta.json``) whose creating process
  is dead, so their ``with`` block can never destroy them.

Only leftovers of a process known to be dead are reclaimed: a live pid, a pid of
another host (a root shared between containers) or an unparsable name is left
alone. A pid that was reused by a newer process is recognised from the process
start time (it started after the leftover was last changed), so a long-dead
writer's files are not kept forever because its pid came round again.
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import os
import pwd
import socket
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shmstore._errors import ForeignEntryError
from shmstore._segments import (
    _O_DIR,
    MEMORY_FILESYSTEMS,
    META,
    TRANSIENT_PREFIX,
    _read_meta,
    _rmtree_at,
    filesystem_type,
    pid_alive,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "ArrayEntry",
    "DOCKER_DEFAULT_SHM",
    "FilesystemUsage",
    "Leftover",
    "NamespaceEntry",
    "TreeUsage",
    "creator_alive",
    "destroy_namespace",
    "explain_entry",
    "filesystem_usage",
    "find_leftovers",
    "lock_holders",
    "looks_like_docker_default",
    "memory_backed",
    "named_arrays_available",
    "namespace_entry",
    "reclaim",
    "scan_arrays",
    "scan_namespaces",
    "tree_usage",
    "zarr_node_paths",
]

#: Docker's default ``/dev/shm`` size for a container (``--shm-size`` raises it).
DOCKER_DEFAULT_SHM = 64 << 20
#: Keys of zarr metadata documents (not chunks) in v3 and v2 layouts.
_METADATA_KEYS = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
#: Transient root entries (``.shmstore-<kind>.<pid>.<random>``): a namespace
#: being created or destroyed, a named array being created, the scratch
#: directory of ``shmstore bench``. Entries of other kinds are left alone.
_TRANSIENT_KINDS = frozenset({"new", "trash", "array", "bench"})
#: A process that started this long after a leftover last changed cannot have
#: made it: its pid was reused (``/proc`` start times have a 1 s resolution).
_REUSE_MARGIN_S = 2.0


# ------------------------------------------------------------------ processes
def _process_start_time(pid: int) -> float | None:
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
        started = _process_start_time(pid)
        if started is not None and started > since + _REUSE_MARGIN_S:
            return False
    return True


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


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
    """

    keys: int = 0
    chunks: int = 0
    nbytes: int = 0
    chunk_nbytes: int = 0
    allocated: int = 0
    modified: float = 0.0


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
                    sub = os.open(e.name, _O_DIR, dir_fd=dfd)
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
                if e.name not in _METADATA_KEYS:
                    usage.chunks += 1
                    usage.chunk_nbytes += est.st_size
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
    _walk_usage(os.open(os.fspath(path), _O_DIR), usage, top=True)
    return usage


# ----------------------------------------------------------------- namespaces
@dataclass
class NamespaceEntry:
    """One namespace of a root, as ``shmstore ls``/``du`` show it.

    Attributes
    ----------
    name, path
        Namespace name and directory.
    uid, owner
        Owner of the directory (from the filesystem, not from the metadata).
    pid, host, pid_alive
        Creating process as recorded in ``meta.json`` and whether it still runs
        (``None``: unknown, e.g. created on another host).
    scoped
        Created by a scoped store, destroyed when its creator's block exits.
    created, modified
        Creation time (metadata) and latest change anywhere in the tree.
    usage
        Keys, chunks and bytes in shared memory (see :class:`TreeUsage`).
    spill, capacity
        Spill location and capacity of the shared-memory tier, if recorded
        (for a read-through cache, the cache's capacity).
    spilled
        Usage of the spill tier (zero when there is none; ``None`` when it
        cannot be measured from here, e.g. a remote URL).
    cache_source
        For a read-through cache (``shmstore.CachingStore``), what it caches.
    meta
        The raw ``meta.json``.
    """

    name: str
    path: str
    uid: int
    owner: str
    pid: int | None
    host: str | None
    pid_alive: bool | None
    scoped: bool
    created: float | None
    modified: float
    usage: TreeUsage
    spill: str | None = None
    capacity: int | None = None
    spilled: TreeUsage | None = field(default_factory=TreeUsage)
    cache_source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (the raw metadata left out)."""
        d = dataclasses.asdict(self)
        d.pop("meta")
        return d


def _tiering(meta: dict[str, Any]) -> tuple[str | None, int | None]:
    """(spill location, capacity) recorded by tiering in ``meta.json``.

    Tiering records ``"tiering": {"capacity": <bytes or null>, "spill":
    {"url": <path or URL>, "storage_options": {...}} or null}``.
    """
    tiering = meta.get("tiering")
    if not isinstance(tiering, dict):
        return None, None
    spill = tiering.get("spill")
    url = spill.get("url") if isinstance(spill, dict) else None
    capacity = tiering.get("capacity")
    return (
        url if isinstance(url, str) and url else None,
        capacity if isinstance(capacity, int) and not isinstance(capacity, bool) else None,
    )


def _spill_usage(location: str) -> TreeUsage | None:
    """Usage of a spill tier that is a local directory; ``None`` for anything else."""
    path = location.removeprefix("file://")
    if "://" in path:
        return None  # a remote store: not measured (it could take minutes)
    try:
        return tree_usage(path)
    except FileNotFoundError:
        return TreeUsage()  # nothing spilled yet
    except OSError:
        return None


def namespace_entry(root: str, name: str) -> NamespaceEntry:
    """Describe namespace *name* of *root*.

    Raises
    ------
    FileNotFoundError
        If there is no entry *name* in *root*.
    ForeignEntryError
        If the entry is not a shmstore namespace (a file, a symlink, or a
        directory without valid ``.shmstore/meta.json``).
    """
    path = os.path.join(root, name)
    try:
        dfd = os.open(path, _O_DIR)
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
        meta = _read_meta(dfd, path)
        st = os.fstat(dfd)
    finally:
        os.close(dfd)
    usage = tree_usage(path)
    pid = meta.get("pid") if isinstance(meta.get("pid"), int) else None
    host = meta.get("host") if isinstance(meta.get("host"), str) else None
    created = meta.get("created") if isinstance(meta.get("created"), int | float) else None
    spill, capacity = _tiering(meta)
    cache = meta.get("cache") if isinstance(meta.get("cache"), dict) else {}
    source = cache.get("source")
    if isinstance(cache.get("capacity"), int) and capacity is None:
        capacity = cache["capacity"]
    return NamespaceEntry(
        name=name,
        path=path,
        uid=st.st_uid,
        owner=_owner(st.st_uid),
        pid=pid,
        host=host,
        pid_alive=creator_alive(pid, host, created),
        scoped=bool(meta.get("scoped", False)),
        created=created,
        modified=usage.modified,
        usage=usage,
        spill=spill,
        capacity=capacity,
        spilled=_spill_usage(spill) if spill else TreeUsage(),
        cache_source=str(source) if source is not None else None,
        meta=meta,
    )


def _is_namespace_dir(root: str, name: str) -> bool:
    try:
        st = os.stat(os.path.join(root, name, META), follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode)


def scan_namespaces(
    root: str, pattern: str | None = None
) -> tuple[list[NamespaceEntry], list[ForeignEntryError]]:
    """Describe every namespace of *root* whose name matches the glob *pattern*.

    Returns
    -------
    namespaces
        Sorted by name.
    invalid
        Directories that carry a ``.shmstore`` entry but whose metadata is
        missing or corrupt: reported, never trusted (nor removed).
    """
    found: list[NamespaceEntry] = []
    invalid: list[ForeignEntryError] = []
    with os.scandir(root) as it:
        names = sorted(
            e.name for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
        )
    for name in names:
        if pattern is not None and not fnmatch.fnmatchcase(name, pattern):
            continue
        if not _is_namespace_dir(root, name):
            continue  # some other program's directory: not ours to list
        try:
            found.append(namespace_entry(root, name))
        except FileNotFoundError:
            continue  # destroyed while we looked
        except ForeignEntryError as e:
            invalid.append(e)
    return found, invalid


# ------------------------------------------------------------------ leftovers
@dataclass
class Leftover:
    """Something a crashed process left behind.

    Attributes
    ----------
    kind
        ``"partial-write"`` (a temporary file of an interrupted write),
        ``"partial-meta"``, ``"transient"`` (a namespace or named array
        interrupted while being created, or destroyed), ``"scoped-namespace"``
        or ``"orphan-lock"`` (a fill lock file of a read-through cache whose
        holder died before removing it).
    path
        What would be removed.
    pid
        The process that made it (dead when this is reported); ``None`` for
        an orphan lock, which is known to be unheld instead.
    nbytes
        Memory it takes (``st_blocks``; the whole tree for directories).
    namespace
        The namespace it belongs to (``None`` for root entries).
    """

    kind: str
    path: str
    pid: int | None
    nbytes: int
    namespace: str | None = None
    # How to re-check before removing: (dir path, entry name, host, ctime)
    _where: tuple[str, str, str | None, float | None] = field(
        default=("", "", None, None), repr=False
    )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {
            "kind": self.kind,
            "path": self.path,
            "pid": self.pid,
            "nbytes": self.nbytes,
            "namespace": self.namespace,
        }


def _leading_pid(name: str) -> int | None:
    head = name.split(".", 1)[0]
    return int(head) if head.isdecimal() else None


def _entry_blocks(dir_fd: int, name: str) -> tuple[int, float] | None:
    """(allocated bytes, ctime) of *name* under *dir_fd*, whole tree for a directory."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        try:
            sub = os.open(name, _O_DIR, dir_fd=dir_fd)
        except OSError:
            return st.st_blocks * 512, st.st_ctime
        usage = TreeUsage()
        _walk_usage(sub, usage, top=False)
        return usage.allocated, st.st_ctime
    return st.st_blocks * 512, st.st_ctime


def _partials(dir_fd: int, prefix: str = "") -> list[tuple[str, int]]:
    """(name, pid) of the ``<prefix><pid>.*.partial`` entries of the directory *dir_fd*."""
    with os.scandir(dir_fd) as it:
        names = sorted(e.name for e in it)
    out = []
    for entry in names:
        if entry.startswith(prefix) and entry.endswith(".partial"):
            pid = _leading_pid(entry[len(prefix) :])
            if pid is not None:
                out.append((entry, pid))
    return out


def _namespace_leftovers(root: str, name: str) -> Iterator[Leftover]:
    path = os.path.join(root, name)
    try:
        dfd = os.open(path, _O_DIR)
    except OSError:
        return
    try:
        try:
            meta = _read_meta(dfd, path)
        except ForeignEntryError:
            return  # not trusted: never touched
        # A write in flight comes from this host unless the root is shared between
        # hosts (or containers); then the creator's host is the best we know.
        host = meta.get("host") if isinstance(meta.get("host"), str) else None
        for sub, kind, prefix in (
            (META, "partial-meta", "meta.json."),
            (f"{META}/tmp", "partial-write", ""),
        ):
            try:
                sfd = os.open(sub, _O_DIR, dir_fd=dfd)
            except OSError:
                continue
            try:
                where = os.path.join(path, sub)
                for entry, pid in _partials(sfd, prefix):
                    blocks = _entry_blocks(sfd, entry)
                    if blocks is not None and creator_alive(pid, host, blocks[1]) is False:
                        yield Leftover(
                            kind,
                            os.path.join(where, entry),
                            pid,
                            blocks[0],
                            name,
                            (where, entry, host, blocks[1]),
                        )
            finally:
                os.close(sfd)
        yield from _orphan_fill_locks(dfd, path, name)
        pid = meta.get("pid")
        if meta.get("scoped") and isinstance(pid, int):
            created = meta.get("created")
            created = created if isinstance(created, int | float) else None
            if creator_alive(pid, host, created) is False:
                usage = TreeUsage()
                _walk_usage(os.dup(dfd), usage, top=False)
                yield Leftover(
                    "scoped-namespace",
                    path,
                    pid,
                    usage.allocated,
                    name,
                    (root, name, host, created),
                )
    finally:
        os.close(dfd)


#: Fill locks of a read-through cache (shmstore._cache): one file per key being
#: fetched, removed by its holder once the value is in place.
_FILL = f"{META}/fill"


def _orphan_fill_locks(dfd: int, path: str, name: str) -> Iterator[Leftover]:
    """Fill lock files of namespace *dfd* that no process holds (their holder died)."""
    try:
        ffd = os.open(_FILL, _O_DIR, dir_fd=dfd)
    except OSError:
        return
    try:
        with os.scandir(ffd) as it:
            entries = sorted(e.name for e in it if e.is_file(follow_symlinks=False))
        where = os.path.join(path, _FILL)
        for entry in entries:
            if lock_holders(os.path.join(where, entry)):
                continue  # a fill in progress
            blocks = _entry_blocks(ffd, entry)
            if blocks is not None:
                yield Leftover(
                    "orphan-lock",
                    os.path.join(where, entry),
                    None,
                    blocks[0],
                    name,
                    (where, entry, None, None),
                )
    finally:
        os.close(ffd)


def _reclaim_lock_file(directory: str, name: str) -> bool:
    """Unlink the lock file *name* the way its holder would: under its lock.

    The lock is taken without waiting (a holder means a fill in progress:
    nothing is removed), and the name must still be that file. A process that
    opened the file meanwhile and waits for the lock then finds it unlinked
    and starts over on a fresh one, as the cache's protocol provides.
    """
    import fcntl

    try:
        dfd = os.open(directory, _O_DIR)
    except FileNotFoundError:
        return False
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if st.st_ino != os.fstat(fd).st_ino:
                return False
            os.unlink(name, dir_fd=dfd)
            return True
        finally:
            os.close(fd)  # releases the lock
    finally:
        os.close(dfd)


def find_leftovers(root: str) -> list[Leftover]:
    """Everything in *root* that a process now dead left behind.

    Entries of live processes, of processes on another host, of unknown
    origin, and namespaces whose metadata is not valid are never reported.
    """
    out: list[Leftover] = []
    rfd = os.open(root, _O_DIR)
    try:
        with os.scandir(rfd) as it:
            names = sorted(e.name for e in it)
        for name in names:
            if name.startswith(TRANSIENT_PREFIX):
                # .shmstore-<kind>.<pid>.<random>: see _segments._transient_name
                parts = name[len(TRANSIENT_PREFIX) :].split(".")
                if len(parts) != 3 or parts[0] not in _TRANSIENT_KINDS:
                    continue
                pid = int(parts[1]) if parts[1].isdecimal() else None
                blocks = _entry_blocks(rfd, name)
                if pid is None or blocks is None:
                    continue
                if creator_alive(pid, None, blocks[1]) is False:
                    out.append(
                        Leftover(
                            "transient",
                            os.path.join(root, name),
                            pid,
                            blocks[0],
                            None,
                            (root, name, None, blocks[1]),
                        )
                    )
            elif not name.startswith(".") and _is_namespace_dir(root, name):
                out.extend(_namespace_leftovers(root, name))
    finally:
        os.close(rfd)
    return out


def reclaim(leftover: Leftover) -> bool:
    """Remove *leftover* after checking once more that its process is dead.

    Returns
    -------
    bool
        Whether it was removed (``False`` if it was gone already or its
        process turned out to be alive).
    """
    directory, name, host, since = leftover._where
    if leftover.kind == "orphan-lock":
        return bool(directory) and _reclaim_lock_file(directory, name)
    if not directory or creator_alive(leftover.pid, host, since) is not False:
        return False
    if leftover.kind == "scoped-namespace":
        from shmstore._segments import Namespace

        try:
            Namespace.open(name, directory, create=False).destroy()
        except FileNotFoundError:
            return False
        return True
    try:
        dfd = os.open(directory, _O_DIR)
    except FileNotFoundError:
        return False
    try:
        if _entry_blocks(dfd, name) is None:
            return False
        _rmtree_at(name, dfd)
    finally:
        os.close(dfd)
    return True


# ----------------------------------------------------------------- filesystem
@dataclass
class FilesystemUsage:
    """Size and free space of the filesystem that holds a root.

    Attributes
    ----------
    root
        The root directory.
    mountpoint, fstype
        Where that filesystem is mounted and its type (``"tmpfs"`` for shared
        memory; anything else means shmstore runs file-backed there).
    size, used, free
        Bytes; ``free`` is what an unprivileged writer can still use.
    """

    root: str
    mountpoint: str | None
    fstype: str | None
    size: int
    used: int
    free: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return dataclasses.asdict(self)


def _mountpoint(path: str) -> str:
    """The mount point of the filesystem holding *path* (where the device changes)."""
    path = os.path.realpath(path)
    dev = os.stat(path).st_dev
    while path != "/":
        parent = os.path.dirname(path)
        if os.stat(parent).st_dev != dev:
            break
        path = parent
    return path


def filesystem_usage(root: str) -> FilesystemUsage:
    """Size, usage and type of the filesystem holding *root* (``statvfs``)."""
    st = os.statvfs(root)
    return FilesystemUsage(
        root=root,
        mountpoint=_mountpoint(root),
        fstype=filesystem_type(root),
        size=st.f_blocks * st.f_frsize,
        used=(st.f_blocks - st.f_bfree) * st.f_frsize,
        free=st.f_bavail * st.f_frsize,
    )


def looks_like_docker_default(fs: FilesystemUsage) -> bool:
    """Whether *fs* looks like the 64 MiB ``/dev/shm`` Docker gives a container."""
    return fs.fstype in (None, "tmpfs") and 0 < fs.size <= DOCKER_DEFAULT_SHM


def memory_backed(fs: FilesystemUsage) -> bool | None:
    """Whether *fs* keeps files in RAM (``None``: unknown, not Linux)."""
    return None if fs.fstype is None else fs.fstype in MEMORY_FILESYSTEMS


# ---------------------------------------------------------------- namespaces
def zarr_node_paths(path: str | os.PathLike[str]) -> list[str]:
    """Paths (``""`` for the root) of the zarr groups and arrays under a namespace.

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
            for name, is_dir in sorted(entries):
                if not is_dir or (not rel and name == META):
                    continue
                try:
                    sub = os.open(name, _O_DIR, dir_fd=dfd)
                except OSError:
                    continue
                walk(sub, f"{rel}{name}/")
        finally:
            os.close(dfd)

    walk(os.open(os.fspath(path), _O_DIR), "")
    return out


def destroy_namespace(root: str, name: str) -> None:
    """Destroy namespace *name* of *root* as ``SharedMemoryStore.destroy`` does.

    Every segment of the shared-memory tier is unlinked; a spill tier is kept
    (and never opened, so a remote one needs no credentials here).

    Raises
    ------
    FileNotFoundError
        If there is no such namespace (nothing is created).
    ForeignEntryError
        If the entry is not a shmstore namespace.
    """
    from shmstore._segments import Namespace

    Namespace.open(name, root, create=False).destroy()


# ------------------------------------------------------------- named arrays
@dataclass
class ArrayEntry:
    """One named array of a root, as ``shmstore ls``/``du``/``info`` show it.

    Attributes
    ----------
    name, path
        Array name and file.
    uid, owner
        Owner of the file.
    pid, pid_alive
        Creating process as recorded in the header, and whether it still runs.
    created, modified
        Creation time (header) and the file's last change (writes through a
        mapping need not update it).
    shape, dtype, order, nbytes
        As recorded in the header (``dtype`` as NumPy spells it).
    allocated
        Memory the file takes (header page included).
    """

    name: str
    path: str
    uid: int
    owner: str
    pid: int | None
    pid_alive: bool | None
    created: float | None
    modified: float
    shape: tuple[int, ...]
    dtype: str
    order: str
    nbytes: int
    allocated: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record."""
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        return d


def named_arrays_available() -> bool:
    """Whether this shmstore has named arrays (``shmstore.create``/``list``)."""
    try:
        import shmstore._arrays  # noqa: F401
    except ImportError:
        return False
    return True


def scan_arrays(
    root: str, pattern: str | None = None
) -> tuple[list[ArrayEntry], list[ForeignEntryError]]:
    """Describe every named array of *root* whose name matches the glob *pattern*.

    Returns
    -------
    arrays
        Sorted by name (from ``shmstore.list``).
    invalid
        Files that carry the named-array magic but whose header is corrupt:
        reported, never trusted (nor removed).
    """
    if not named_arrays_available():
        return [], []
    from shmstore import _segments as seg
    from shmstore._arrays import list_arrays

    found: list[ArrayEntry] = []
    for info in list_arrays(root=root):
        if pattern is not None and not fnmatch.fnmatchcase(info.name, pattern):
            continue
        try:
            st = os.stat(info.path, follow_symlinks=False)
        except FileNotFoundError:
            continue  # deleted while we looked
        found.append(
            ArrayEntry(
                name=info.name,
                path=info.path,
                uid=st.st_uid,
                owner=_owner(st.st_uid),
                pid=info.pid,
                pid_alive=creator_alive(info.pid, None, info.created),
                created=info.created or None,
                modified=st.st_mtime,
                shape=tuple(info.shape),
                dtype=str(info.dtype),
                order=info.order,
                nbytes=info.nbytes,
                allocated=st.st_blocks * 512,
            )
        )
    listed = {a.name for a in found}
    invalid: list[ForeignEntryError] = []
    for name, kind in seg.iter_root_entries(root):
        if kind != "array" or name in listed:
            continue
        if pattern is not None and not fnmatch.fnmatchcase(name, pattern):
            continue
        path = os.path.join(root, name)
        try:
            fd, st = seg.open_array_segment(root, name, read_only=True)
        except ForeignEntryError as e:
            invalid.append(e)
            continue
        except (FileNotFoundError, PermissionError):
            continue
        try:
            seg.read_array_header(fd, path, st.st_size)
        except ForeignEntryError as e:
            invalid.append(e)
        finally:
            os.close(fd)
    return found, invalid


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


def explain_entry(root: str, name: str) -> None:
    """Raise the error that says why the entry *name* of *root* is not listed.

    For an entry that exists but is neither a valid namespace nor a valid
    named array: a corrupt one, a symlink, another program's file.

    Raises
    ------
    FileNotFoundError
        If there is no such entry.
    ForeignEntryError, PermissionError
        Saying what the entry is.
    """
    path = os.path.join(root, name)
    st = os.stat(path, follow_symlinks=False)
    if stat.S_ISREG(st.st_mode) and named_arrays_available():
        from shmstore import _segments as seg

        fd, st = seg.open_array_segment(root, name, read_only=True)
        try:
            seg.read_array_header(fd, path, st.st_size)
        finally:
            os.close(fd)
    namespace_entry(root, name)  # raises for anything that is not a namespace
