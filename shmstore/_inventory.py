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
import glob
import os
import pwd
import stat
from dataclasses import dataclass, field
from typing import Any

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
    iter_namespaces,
    node_paths,
    remove_entry,
    tree_usage,
)
from shmstore._posix import creator_alive, lock_holders, root_fd
from shmstore._usage import CacheCounters, Usage

__all__ = [
    "ArrayEntry",
    "DOCKER_DEFAULT_SHM",
    "FilesystemUsage",
    "Leftover",
    "NamespaceEntry",
    "Problem",
    "RootScan",
    "TreeUsage",
    "creator_alive",
    "describe_entry",
    "destroy",
    "destroy_namespace",
    "filesystem_usage",
    "lock_holders",
    "looks_like_docker_default",
    "memory_backed",
    "named_arrays_available",
    "namespace_entry",
    "namespaces",
    "reclaim",
    "scan_root",
    "tree_usage",
    "zarr_node_paths",
]

#: Docker's default ``/dev/shm`` size for a container (``--shm-size`` raises it).
DOCKER_DEFAULT_SHM = 64 << 20

#: What a root entry that is neither a file, a directory nor a symlink is.
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _whose(uid: int) -> str:
    """``"uid 65534 (nobody)"``: an owner for a message."""
    name = _owner(uid)
    return f"uid {uid}" if name == str(uid) else f"uid {uid} ({name})"


def _not_yours(path: str, uid: int) -> PermissionError:
    return PermissionError(
        errno.EACCES,
        f"{path!r} belongs to {_whose(uid)}, not you (uid {os.geteuid()}); shmstore only "
        "shows, reclaims and removes your own entries",
        path,
    )


# ----------------------------------------------------------------- problems
@dataclass(frozen=True)
class Problem:
    """A root entry that is reported instead of being listed, trusted or removed.

    Attributes
    ----------
    name, path
        The root entry.
    reason
        What it is and why it was skipped, for one line of output.
    error
        The error that a command naming this entry raises.
    """

    name: str
    path: str
    reason: str
    error: OSError = field(repr=False, compare=False)

    def __str__(self) -> str:
        # A planted name may hold a newline or escape codes: never printed raw.
        path = self.path if self.path.isprintable() else ascii(self.path)
        return f"{path}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {"name": self.name, "path": self.path, "reason": self.reason}


def _problem(root: str, name: str, error: OSError) -> Problem:
    """The problem that *error*, raised while examining the entry *name*, makes of it."""
    path = os.path.join(root, name)
    if isinstance(error, ForeignEntryError):
        reason = f"not a shmstore entry ({error.reason}); skipped (remove it if it is stale)"
    elif isinstance(error, PermissionError):
        reason = "cannot be read (permission denied); skipped"
    else:
        reason = f"cannot be read ({error.strerror or error}); skipped"
    return Problem(name, path, reason, error)


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
    leftover
        Scoped, and its creator is dead: nothing will destroy it but ``gc``.
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
    cache_stats
        For a read-through cache, its host-wide counters (hits, misses,
        bytes fetched, expired, evictions, writes) and its ``expiry`` and
        ``scratch`` settings; ``None`` for other namespaces or where they
        cannot be read.
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
    cache_stats: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    leftover: bool = False

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


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cache_stats(root: str, name: str, record: dict[str, Any]) -> dict[str, Any] | None:
    """The counters of the cache namespace *name*, with its settings; ``None`` if unreadable."""
    try:
        counts: dict[str, Any] = CacheCounters(Namespace.open(name, root, create=False)).read()
    except OSError:
        return None  # another user's, or destroyed meanwhile
    counts["expiry"] = _number(record.get("expiry"))
    counts["scratch"] = record.get("scratch") is True
    return counts


def namespace_entry(root: str, name: str) -> NamespaceEntry:
    """Describe namespace *name* of *root* (whoever owns it: callers check).

    Raises
    ------
    FileNotFoundError
        If there is no entry *name* in *root*.
    ForeignEntryError
        If the entry is not a shmstore namespace (a file, a symlink, or a
        directory without valid ``.shmstore/state/meta.json``).
    PermissionError
        If it cannot be read.
    """
    path = entry_path(root, name)
    meta, st = describe_dir(root, name)
    usage = tree_usage(path)
    pid = meta.get("pid") if isinstance(meta.get("pid"), int) else None
    host = meta.get("host") if isinstance(meta.get("host"), str) else None
    created = _number(meta.get("created"))
    spill, capacity = _tiering(meta)
    cache = meta.get("cache") if isinstance(meta.get("cache"), dict) else {}
    source = cache.get("source")
    if isinstance(cache.get("capacity"), int) and capacity is None:
        capacity = cache["capacity"]
    alive = creator_alive(pid, host, created)
    scoped = meta.get("scoped") is True
    stats = _cache_stats(root, name, cache) if source is not None else None
    return NamespaceEntry(
        name=name,
        path=path,
        uid=st.st_uid,
        owner=_owner(st.st_uid),
        pid=pid,
        host=host,
        pid_alive=alive,
        scoped=scoped,
        created=created,
        modified=usage.modified,
        usage=usage,
        spill=spill,
        capacity=capacity,
        spilled=_spill_usage(spill) if spill else TreeUsage(),
        cache_source=str(source) if source is not None else None,
        cache_stats=stats,
        meta=meta,
        leftover=scoped and alive is False,
    )


# ------------------------------------------------------------------ leftovers
@dataclass
class Leftover:
    """Something a crashed process left behind.

    Attributes
    ----------
    kind
        ``"partial-write"`` (a temporary file of an interrupted write),
        ``"partial-meta"``, ``"transient"`` (a namespace or named array
        interrupted while being created, or destroyed), ``"scoped-namespace"``,
        ``"scoped-array"`` or ``"orphan-lock"`` (a fill lock file of a
        read-through cache whose holder died before removing it).
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
    # A scoped array is removed only if its header still has this token.
    _token: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {
            "kind": self.kind,
            "path": self.path,
            "pid": self.pid,
            "nbytes": self.nbytes,
            "namespace": self.namespace,
        }


def _namespace_leftovers(root: str, name: str, entry: NamespaceEntry | None) -> list[Leftover]:
    """Leftovers of dead processes in (or being) your namespace *name*.

    A scoped namespace of a dead process is one leftover, whatever it holds:
    destroying it reclaims its writes in flight too.

    Raises
    ------
    OSError, ForeignEntryError
        If the namespace cannot be read, or its metadata is not trusted.
    """
    meta, found = bookkeeping_leftovers(root, name)
    # A write in flight comes from this host unless the root is shared between
    # hosts (or containers); then the creator's host is the best we know.
    host = meta.get("host") if isinstance(meta.get("host"), str) else None
    path = entry_path(root, name)
    pid = meta.get("pid")
    if meta.get("scoped") is True and isinstance(pid, int):
        created = _number(meta.get("created"))
        if creator_alive(pid, host, created) is False:
            nbytes = entry.usage.allocated if entry else tree_usage(path).allocated
            where = (root, name, host, created)
            return [Leftover("scoped-namespace", path, pid, nbytes, name, where)]
    out = []
    for item in found:
        full = os.path.join(item.directory, item.entry)
        if item.kind == "orphan-lock":
            where = (item.directory, item.entry, None, None)
            out.append(Leftover(item.kind, full, None, item.nbytes, name, where))
        elif creator_alive(item.pid, host, item.ctime) is False:
            where = (item.directory, item.entry, host, item.ctime)
            out.append(Leftover(item.kind, full, item.pid, item.nbytes, name, where))
    return out


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
    scoped, leftover
        Made by ``shmstore.scoped_array`` whose process is dead, so that only
        ``gc`` will delete it (both are known for such arrays only).
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
    scoped: bool = False
    leftover: bool = False

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


def _array_entries(root: str) -> dict[str, ArrayEntry]:
    """Your valid named arrays of *root*, by name (from ``shmstore.list``)."""
    if not named_arrays_available():
        return {}
    # numpy loads only when arrays are listed: `shmstore ls` of namespaces stays light.
    from shmstore._arrays import list_arrays

    found = {}
    for info in list_arrays(root=root):
        try:
            st = os.stat(info.path, follow_symlinks=False)
        except FileNotFoundError:
            continue  # deleted while we looked
        found[info.name] = ArrayEntry(
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
    return found


def _array_header(root: str, name: str) -> dict[str, Any] | None:
    """The header document of the named array *name*; ``None`` if it is gone or corrupt."""
    try:
        fd, st = af.open_array_file(root, name, read_only=True)
    except OSError:
        return None
    try:
        return af.read_array_header(fd, entry_path(root, name), st.st_size)[0]
    except ForeignEntryError:
        return None
    finally:
        os.close(fd)


def _scoped_array_leftover(root: str, entry: ArrayEntry) -> Leftover | None:
    """The leftover that *entry* is if a scoped array of a dead process made it.

    Only arrays whose creator is dead are looked at again: their header says
    whether ``scoped_array`` made them (``"scoped": true``) and which array it
    was (its token), so that ``gc`` never deletes one created since.
    """
    if entry.pid_alive is not False:
        return None
    header = _array_header(root, entry.name)
    if header is None or header.get("scoped") is not True:
        return None
    host = header.get("host") if isinstance(header.get("host"), str) else None
    if creator_alive(entry.pid, host, entry.created) is not False:
        return None
    entry.scoped = entry.leftover = True
    where = (root, entry.name, host, entry.created)
    token = str(header.get("token"))
    return Leftover(
        "scoped-array", entry.path, entry.pid, entry.allocated, None, where, _token=token
    )


# ---------------------------------------------------------------- root scans
@dataclass
class RootScan:
    """What :func:`scan_root` found: entries, leftovers and problems, each by name."""

    namespaces: list[NamespaceEntry] = field(default_factory=list)
    arrays: list[ArrayEntry] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class _Scanner:
    """One walk of a root for :func:`scan_root`."""

    def __init__(self, root: str, usage: bool, leftovers: bool) -> None:
        self.root, self.usage, self.want_leftovers = root, usage, leftovers
        self.rfd = root_fd(root)
        self.uid = os.geteuid()
        self.out = RootScan()
        self._arrays: dict[str, ArrayEntry] | None = None

    def problem(self, name: str, reason: str, error: OSError) -> None:
        self.out.problems.append(Problem(name, os.path.join(self.root, name), reason, error))

    def arrays(self) -> dict[str, ArrayEntry]:
        if self._arrays is None:
            self._arrays = _array_entries(self.root)
        return self._arrays

    def entry(self, name: str) -> None:
        try:
            st = os.stat(name, dir_fd=self.rfd, follow_symlinks=False)
        except FileNotFoundError:
            return  # removed while we looked
        path = os.path.join(self.root, name)
        try:
            check_name(name)
        except ValueError:
            valid = False  # never a namespace or named array: no shmstore name
        else:
            valid = True
        if stat.S_ISLNK(st.st_mode):
            self.problem(
                name,
                "a symbolic link; skipped (shmstore never follows one)",
                ForeignEntryError(path, "a symbolic link; shmstore never follows one"),
            )
        elif stat.S_ISDIR(st.st_mode):
            if valid:
                self.directory(name, st)
        elif stat.S_ISREG(st.st_mode):
            if valid:
                self.file(name, st)
        else:
            what = next((w for test, w in _SPECIAL_FILES if test(st.st_mode)), "a special file")
            self.problem(
                name,
                f"{what}, not a shmstore entry; skipped (never opened)",
                ForeignEntryError(path, what),
            )

    def directory(self, name: str, st: os.stat_result) -> None:
        if not is_namespace_dir(self.root, name):
            # Another program's directory; or one of yours that cannot be searched.
            if st.st_uid == self.uid and not os.access(name, os.R_OK | os.X_OK, dir_fd=self.rfd):
                self.unreadable(name)
            return
        if st.st_uid != self.uid:
            # Its metadata is another user's word: never trusted, nor walked.
            self.problem(
                name,
                f"a namespace of {_whose(st.st_uid)}, not yours; skipped",
                _not_yours(os.path.join(self.root, name), st.st_uid),
            )
            return
        try:
            entry = namespace_entry(self.root, name) if self.usage else None
            if self.want_leftovers:
                self.out.leftovers.extend(_namespace_leftovers(self.root, name, entry))
        except FileNotFoundError:
            return  # destroyed while we looked
        except OSError as e:  # ForeignEntryError included: reported, never trusted
            self.out.problems.append(_problem(self.root, name, e))
            return
        if entry is not None:
            self.out.namespaces.append(entry)

    def file(self, name: str, st: os.stat_result) -> None:
        if st.st_uid != self.uid:
            return  # another user's file: never one of your arrays
        entry = self.arrays().get(name)
        if entry is not None:
            if self.want_leftovers:
                leftover = _scoped_array_leftover(self.root, entry)
                if leftover is not None:
                    self.out.leftovers.append(leftover)
            self.out.arrays.append(entry)
        elif not os.access(name, os.R_OK, dir_fd=self.rfd):
            self.unreadable(name)
        elif af.has_array_magic(self.root, name, st):
            try:
                af.check_array_file(self.root, name)
            except FileNotFoundError:
                return
            except OSError as e:
                self.out.problems.append(_problem(self.root, name, e))
        # else: another program's file

    def unreadable(self, name: str) -> None:
        path = os.path.join(self.root, name)
        error = PermissionError(errno.EACCES, f"cannot read {path!r}: permission denied", path)
        self.out.problems.append(_problem(self.root, name, error))

    def transient(self, name: str) -> None:
        parsed = parse_transient_name(name)
        if parsed is None:
            return  # another hidden entry: not shmstore's
        pid = parsed[1]
        try:
            st = os.stat(name, dir_fd=self.rfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if st.st_uid != self.uid:
            if creator_alive(pid, None, st.st_ctime) is False:
                self.problem(
                    name,
                    f"a leftover of a dead process (pid {pid}) of {_whose(st.st_uid)}, "
                    "not yours; skipped",
                    _not_yours(os.path.join(self.root, name), st.st_uid),
                )
            return
        blocks = entry_blocks(self.rfd, name)
        if blocks is not None and creator_alive(pid, None, blocks[1]) is False:
            where = (self.root, name, None, blocks[1])
            path = os.path.join(self.root, name)
            self.out.leftovers.append(Leftover("transient", path, pid, blocks[0], None, where))


def scan_root(
    root: str, pattern: str | None = None, *, usage: bool = True, leftovers: bool = True
) -> RootScan:
    """Sort the entries of *root* (those matching the glob *pattern*) into a :class:`RootScan`.

    Every entry is looked at once, without following symlinks, and nothing
    that cannot be examined safely stops the scan: it becomes a problem.

    Parameters
    ----------
    pattern
        Only entries whose name matches; transient root entries (which have
        no name of their own) only without a pattern.
    usage
        Describe your namespaces (walking their trees). Without it
        ``namespaces`` stays empty: for ``gc``, which needs leftovers only.
    leftovers
        Look for leftovers of dead processes.
    """
    scanner = _Scanner(root, usage, leftovers)
    with os.scandir(scanner.rfd) as it:
        names = sorted(e.name for e in it)
    for name in names:
        if name.startswith("."):
            if pattern is None and leftovers:
                scanner.transient(name)
        elif pattern is None or fnmatch.fnmatchcase(name, pattern):
            scanner.entry(name)
    return scanner.out


def recount_counters(root: str) -> list[dict[str, Any]]:
    """Rebuild the byte counters of your tiered namespaces and caches from their files.

    What ``shmstore gc`` runs after reclaiming leftovers: reservations of
    writers that died go back, and a count that a kill left off is set right.
    Namespaces that are not trusted (see :func:`scan_root`) are left alone.

    Returns
    -------
    list of dict
        ``{"namespace", "before", "after"}`` for each counter that changed.
    """
    changed = []
    for name in iter_namespaces(root):
        try:
            meta, _ = describe_dir(root, name)
            if not (isinstance(meta.get("tiering"), dict) or isinstance(meta.get("cache"), dict)):
                continue
            usage = Usage(Namespace.open(name, root, create=False))
            with usage.locked() as st:
                before = st.used + st.pending
                usage.heal(st, force=True)
                after = st.used + st.pending
        except (OSError, ForeignEntryError):
            continue  # gone meanwhile, or not trusted: scan_root reports those
        if before != after:
            changed.append({"namespace": name, "before": before, "after": after})
    return changed


def describe_entry(root: str, name: str) -> NamespaceEntry | ArrayEntry:
    """Your namespace or named array *name* of *root*, for ``info`` and ``rm``.

    Only that entry is examined: other entries of the root, whatever they
    are, play no part.

    Raises
    ------
    FileNotFoundError
        If there is no such entry.
    ForeignEntryError, PermissionError
        Saying what the entry is instead: corrupt, another program's, another
        user's, a symlink.
    """
    scan = scan_root(root, glob.escape(name))
    for entry in (*scan.namespaces, *scan.arrays):
        if entry.name == name:
            return entry
    for problem in scan.problems:
        if problem.name == name:
            raise problem.error
    path = entry_path(root, name)
    st = os.stat(name, dir_fd=root_fd(root), follow_symlinks=False)
    if stat.S_ISREG(st.st_mode):
        if st.st_uid != os.geteuid():
            raise _not_yours(path, st.st_uid)
        af.check_array_file(root, name)  # says what is wrong with it
        raise ForeignEntryError(path, "a file without shmstore's named-array header")
    raise ForeignEntryError(path, "a directory without shmstore's .shmstore entry")


def reclaim(leftover: Leftover) -> bool:
    """Remove *leftover* after checking once more that its process is dead.

    Returns
    -------
    bool
        Whether it was removed (``False`` if it was gone already or its
        process turned out to be alive).

    Raises
    ------
    OSError
        If it could not be removed.
    """
    directory, name, host, since = leftover._where
    if leftover.kind == "orphan-lock":
        return bool(directory) and remove_entry(directory, name, locked=True)
    if not directory or creator_alive(leftover.pid, host, since) is not False:
        return False
    try:
        if leftover.kind == "scoped-namespace":
            return Namespace.open(name, directory, create=False).destroy()
        if leftover.kind == "scoped-array":
            return af.unlink_array_file(directory, name, token=leftover._token)
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
    namespaces, and other users' namespaces, are left out (``shmstore ls``
    reports them).

    Examples
    --------
    >>> import shmstore
    >>> _ = shmstore.SharedMemoryStore("doc-namespaces")
    >>> "doc-namespaces" in [n.name for n in shmstore.namespaces()]
    True
    >>> shmstore.destroy("doc-namespaces")
    """
    return scan_root(resolve_root(root), leftovers=False).namespaces


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
