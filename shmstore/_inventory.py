"""What lives in a shared-memory root: namespaces, their usage, and leftovers of crashes.

This is the read side of ``shmstore ls``/``du``/``info``/``gc``. :func:`scan_root`
walks a root once, without following symlinks and without opening anything for
writing, and sorts every entry into one of four lists:

- your namespaces (a directory with valid ``.shmstore/state/meta.json``) and
  named arrays (a file with a valid header);
- leftovers of processes now dead, which ``gc`` reclaims:

  - ``<ns>/.shmstore/state/tmp/<pid>.*.partial``: a write (or the trash of a
    ``delete_prefix``) interrupted before its ``rename``;
  - ``<ns>/.shmstore/state/meta.json.<pid>.*.partial``: an interrupted
    metadata update;
  - ``<root>/.shmstore-<kind>.<pid>.*``: a namespace or named array interrupted
    while being created or destroyed, or a killed ``shmstore bench``;
  - scoped namespaces and scoped named arrays (``"scoped": true`` in their
    metadata) whose creating process is dead, so that their ``with`` block can
    never remove them;
  - fill lock files of read-through caches that no process holds;

- problems: entries that look like shmstore's or that shmstore cannot examine
  safely (a corrupt namespace, another user's namespace, a symlink, a FIFO, an
  unreadable file), each reported once and never trusted, opened or removed;
- nothing, for what plainly belongs to other programs (their files, their
  directories) and for work in flight of live processes.

Only leftovers of a process known to be dead, in entries of this user, are
reclaimed: a live pid, a pid of another host (a root shared between containers)
or an unparsable name is left alone. A pid that was reused by a newer process is
recognised from the process start time (it started after the leftover was last
changed), so a long-dead writer's files are not kept forever because its pid
came round again. See docs/cli.md and docs/design.md ("Layout").
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import os
import pwd
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shmstore import _arrayfile as af
from shmstore._errors import ForeignEntryError
from shmstore._names import (
    MEMORY_FILESYSTEMS,
    check_name,
    entry_path,
    filesystem_type,
    parse_transient_name,
    resolve_root,
)
from shmstore._namespace import (
    Namespace,
    TreeUsage,
    bookkeeping_leftovers,
    describe_dir,
    entry_blocks,
    is_namespace_dir,
    node_paths,
    remove_entry,
    tree_usage,
)
from shmstore._posix import creator_alive, lock_holders, root_fd

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
    "destroy",
    "destroy_namespace",
    "explain_entry",
    "filesystem_usage",
    "find_leftovers",
    "lock_holders",
    "looks_like_docker_default",
    "memory_backed",
    "named_arrays_available",
    "namespace_entry",
    "namespaces",
    "reclaim",
    "scan_arrays",
    "scan_namespaces",
    "tree_usage",
    "zarr_node_paths",
]

#: Docker's default ``/dev/shm`` size for a container (``--shm-size`` raises it).
DOCKER_DEFAULT_SHM = 64 << 20


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


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

    @property
    def nbytes(self) -> int:
        """Bytes of the values in shared memory (``usage.nbytes``)."""
        return self.usage.nbytes

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
    path = entry_path(root, name)
    meta, st = describe_dir(root, name)
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
    for name in _root_names(root, directories=True):
        if pattern is not None and not fnmatch.fnmatchcase(name, pattern):
            continue
        if not is_namespace_dir(root, name):
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


def _namespace_leftovers(root: str, name: str) -> Iterator[Leftover]:
    try:
        meta, found = bookkeeping_leftovers(root, name)
    except (OSError, ForeignEntryError):
        return  # gone, unreadable or not trusted: never touched
    # A write in flight comes from this host unless the root is shared between
    # hosts (or containers); then the creator's host is the best we know.
    host = meta.get("host") if isinstance(meta.get("host"), str) else None
    path = entry_path(root, name)
    for item in found:
        full = os.path.join(item.directory, item.entry)
        if item.kind == "orphan-lock":
            where = (item.directory, item.entry, None, None)
            yield Leftover(item.kind, full, None, item.nbytes, name, where)
        elif creator_alive(item.pid, host, item.ctime) is False:
            where = (item.directory, item.entry, host, item.ctime)
            yield Leftover(item.kind, full, item.pid, item.nbytes, name, where)
    pid = meta.get("pid")
    if meta.get("scoped") and isinstance(pid, int):
        created = meta.get("created")
        created = created if isinstance(created, int | float) else None
        if creator_alive(pid, host, created) is False:
            yield Leftover(
                "scoped-namespace",
                path,
                pid,
                tree_usage(path).allocated,
                name,
                (root, name, host, created),
            )


def _root_names(root: str, *, directories: bool = False, hidden: bool = False) -> list[str]:
    """Names of the root's entries, sorted (only directories, never through a symlink)."""
    with os.scandir(root_fd(root)) as it:
        return sorted(
            e.name
            for e in it
            if (hidden or not e.name.startswith("."))
            and (not directories or e.is_dir(follow_symlinks=False))
        )


def find_leftovers(root: str) -> list[Leftover]:
    """Everything in *root* that a process now dead left behind.

    Entries of live processes, of processes on another host, of unknown
    origin, and namespaces whose metadata is not valid are never reported.
    """
    out: list[Leftover] = []
    rfd = root_fd(root)
    for name in _root_names(root, hidden=True):
        transient = parse_transient_name(name)
        if transient is not None:
            pid = transient[1]
            blocks = entry_blocks(rfd, name)
            if blocks is not None and creator_alive(pid, None, blocks[1]) is False:
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
        elif not name.startswith(".") and is_namespace_dir(root, name):
            out.extend(_namespace_leftovers(root, name))
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
        return bool(directory) and remove_entry(directory, name, locked=True)
    if not directory or creator_alive(leftover.pid, host, since) is not False:
        return False
    if leftover.kind == "scoped-namespace":
        try:
            return Namespace.open(name, directory, create=False).destroy()
        except FileNotFoundError:
            return False
    return remove_entry(directory, name)


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
def zarr_node_paths(root: str, name: str) -> list[str]:
    """Paths (``""`` for the root) of the zarr groups and arrays of namespace *name*."""
    return node_paths(root, name)


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
    Namespace.open(name, root, create=False).destroy()


def namespaces(root: str | os.PathLike[str] | None = None) -> list[NamespaceEntry]:
    """The namespaces of this user in the shared-memory root, sorted by name.

    Each record has at least ``.name``, ``.path``, ``.nbytes`` (bytes in shared
    memory), ``.owner``, ``.created``, ``.modified``, ``.scoped``, ``.spill``
    and ``.capacity``: what ``shmstore ls`` shows. Entries that are not valid
    namespaces are left out (``shmstore ls`` reports them).

    Examples
    --------
    >>> import shmstore
    >>> _ = shmstore.SharedMemoryStore("doc-namespaces")
    >>> "doc-namespaces" in [n.name for n in shmstore.namespaces()]
    True
    >>> shmstore.destroy("doc-namespaces")
    """
    return scan_namespaces(resolve_root(root))[0]


def destroy(name: str, root: str | os.PathLike[str] | None = None) -> None:
    """Destroy the namespace *name*: unlink every segment of it, in every process.

    Nothing is created: a missing name is an error, not a namespace made and
    destroyed. Processes that hold chunk views keep their bytes until they drop
    them; stores opened before raise ``FileNotFoundError`` naming it. A spill
    tier is kept (data on disk that you named).

    Raises
    ------
    FileNotFoundError
        If there is no namespace *name* (see ``shmstore.namespaces()``).
    ForeignEntryError
        If the entry of that name is not a shmstore namespace.
    """
    root = resolve_root(root)
    try:
        destroy_namespace(root, check_name(name))
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT,
            f"no namespace {name!r} in {root} to destroy; see shmstore.namespaces() "
            "or `shmstore ls`",
            entry_path(root, name),
        ) from None


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
        # Imported here: named arrays need numpy, which `shmstore ls` of namespaces does not.
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
    # numpy loads only when arrays are listed: `shmstore ls` of namespaces stays light.
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
    rfd = root_fd(root)
    for name in _root_names(root):
        if name in listed or (pattern is not None and not fnmatch.fnmatchcase(name, pattern)):
            continue
        try:
            st = os.stat(name, dir_fd=rfd, follow_symlinks=False)
            if not af.has_array_magic(root, name, st):
                continue
            af.check_array_file(root, name)
        except ForeignEntryError as e:
            invalid.append(e)
        except (FileNotFoundError, PermissionError):
            continue
    return found, invalid


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
    st = os.stat(name, dir_fd=root_fd(root), follow_symlinks=False)
    if stat.S_ISREG(st.st_mode):
        af.check_array_file(root, name)
    namespace_entry(root, name)  # raises for anything that is not a namespace
