"""Names: roots, namespace and key checks, the one path builder, URLs, bookkeeping names.

Everything here is pure string and ``stat`` work: no descriptor is kept, nothing
is created but a missing root. Names are formatted and parsed by the same
functions (transient root entries, temporary files of writes in flight), so the
writer of a name and ``shmstore gc``, which parses it, never disagree. See
docs/design.md ("Layout", "Names").
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import random
import re
import stat
import tempfile
import threading
import warnings

__all__ = [
    "DEFAULT_ROOT",
    "ENV_ROOT",
    "META",
    "METADATA_NAMES",
    "SCHEME",
    "check_key",
    "check_name",
    "entry_path",
    "filesystem_type",
    "is_metadata_key",
    "memory_backed",
    "parse_tmp_name",
    "parse_transient_name",
    "resolve_root",
    "split_url",
    "strip_scheme",
    "tmp_name",
    "transient_name",
]

#: Hidden bookkeeping entry inside every namespace; never a key.
META = ".shmstore"
#: Prefix of transient entries in the root (namespaces being created or destroyed).
TRANSIENT_PREFIX = ".shmstore-"
#: Kinds of transient root entries (``.shmstore-<kind>.<pid>.<random>``): a
#: namespace being created or destroyed, a named array being created, the
#: scratch directory of ``shmstore bench``.
TRANSIENT_KINDS = frozenset({"new", "trash", "array", "bench", "pool"})
DEFAULT_ROOT = "/dev/shm"
ENV_ROOT = "SHMSTORE_ROOT"
MAX_NAME_BYTES = 255
#: Longest key, and most components in one: deeper or longer keys break the
#: filesystem's own limits (PATH_MAX is 4096 bytes with the root) and listings.
MAX_KEY_BYTES = 2048
MAX_KEY_DEPTH = 256
#: Filesystems that keep files in RAM; a root on anything else is file-backed.
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
#: Last path component of the keys that hold Zarr metadata (v3 and v2).
METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
#: The URL scheme of namespaces (``shm://<namespace>/<key>``).
SCHEME = "shm://"

_fallback_warned = False
_roots_checked: set[str] = set()
_memory_backed: dict[str, bool] = {}


# ---------------------------------------------------------------------- roots
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
    """Return the absolute shared-memory root directory.

    Parameters
    ----------
    root
        Explicit root. ``None`` means ``$SHMSTORE_ROOT``, else ``/dev/shm``. Where
        neither exists (no shared-memory filesystem, e.g. macOS), a private
        directory under the temporary directory is used (made, mode 0700) and
        a warning is issued once: the API works the same on plain files.

    Returns
    -------
    str
        The absolute path of the root.

    Raises
    ------
    FileNotFoundError
        If the root given (or ``$SHMSTORE_ROOT``) does not exist: it is never
        created, so a mistyped root fails instead of splitting processes
        between two directories.
    """
    global _fallback_warned
    given = "root="
    if root is None:
        root = os.environ.get(ENV_ROOT) or None
        given = f"${ENV_ROOT}"
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
        with contextlib.suppress(FileExistsError):
            os.mkdir(root, 0o700)  # its parent, the temporary directory, exists
        st = os.lstat(root)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            # The temporary directory is world-writable: anyone could have made it.
            raise PermissionError(
                errno.EACCES,
                f"{root} is not a private directory of yours (owner uid {st.st_uid}, "
                f"mode {stat.S_IMODE(st.st_mode):o}); remove it, or set {ENV_ROOT}",
                root,
            )
        return _check_memory_backed(root)
    path = os.path.abspath(os.fspath(root))
    if not os.path.isdir(path):
        raise FileNotFoundError(
            errno.ENOENT,
            f"shared-memory root {path} ({given}) does not exist; create it first "
            f"(mkdir -m 700 {path}, or mount a tmpfs there) or set {given} to an "
            f"existing directory such as {DEFAULT_ROOT}",
            path,
        )
    return _check_memory_backed(path)


# ---------------------------------------------------------------- names, keys
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


#: Keys that passed :func:`check_key` (a chunk is written and read again and
#: again): a set lookup instead of the checks. Cleared when it grows large.
_valid_keys: set[str] = set()
_VALID_KEYS_MAX = 1 << 16


def check_key(key: object) -> str:
    """Validate a zarr key so that it can only name a file inside its namespace.

    Raises
    ------
    ValueError
        If the key is empty, absolute, has empty, ``.`` or ``..`` components,
        contains NUL, has a component over 255 bytes, is longer than 2048
        bytes or 256 components, or starts with the reserved ``.shmstore``
        entry.
    """
    if type(key) is str and key in _valid_keys:
        return key
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}: {key!r}")
    if "\0" in key:
        raise ValueError(f"key {key!r} contains a NUL byte")
    size = len(key.encode("utf-8", "surrogateescape"))
    if size > MAX_KEY_BYTES:
        raise ValueError(
            f"key {key[:60]!r}... is {size} bytes; the limit is {MAX_KEY_BYTES} "
            "(a Zarr key names one chunk or document: shorten its path)"
        )
    parts = key.split("/")
    if len(parts) > MAX_KEY_DEPTH:
        raise ValueError(
            f"key {key[:60]!r}... has {len(parts)} components; the limit is {MAX_KEY_DEPTH}"
        )
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
    if len(_valid_keys) >= _VALID_KEYS_MAX:
        _valid_keys.clear()
    _valid_keys.add(str(key))
    return key


def is_metadata_key(key: str) -> bool:
    """Whether *key* holds Zarr metadata rather than a chunk."""
    return key.rpartition("/")[2] in METADATA_NAMES


def entry_path(root: str, name: str, key: str = "") -> str:
    """Return the path of the root entry *name* under *root*, or of *key* inside it.

    The one place that turns a validated name (and key) into a path, for
    messages and for the few callers that hand a path to another library.
    """
    path = os.path.join(root, check_name(name))
    return f"{path}/{check_key(key)}" if key else path


# ------------------------------------------------------------------------ URLs
def split_url(url: str) -> tuple[str, str]:
    """Split ``shm://<namespace>/<path>`` into ``(namespace, path)``.

    Raises
    ------
    ValueError
        If *url* is not a ``shm://`` URL, names no namespace, or has an invalid
        namespace or path (the message names the value).
    """
    if not isinstance(url, str) or not url.startswith(SCHEME):
        raise ValueError(f"{url!r} is not a shm:// URL; write shm://<namespace>[/<path>]")
    namespace, _, path = url[len(SCHEME) :].strip("/").partition("/")
    if not namespace:
        raise ValueError(f"URL {url!r} names no namespace; write shm://<namespace>[/<path>]")
    check_name(namespace)
    if path:
        check_key(path)
    return namespace, path


def strip_scheme(path: str) -> str:
    """``shm://ns/key`` (or ``shm::ns/key``, or ``ns/key``) -> ``ns/key``, no outer slashes."""
    if path.startswith(SCHEME):
        path = path[len(SCHEME) :]
    elif path.startswith("shm::"):
        path = path[5:]
    return path.strip("/")


# ----------------------------------------------------------- bookkeeping names
def transient_name(kind: str) -> str:
    """A fresh transient root entry name: ``.shmstore-<kind>.<pid>.<random>``."""
    if kind not in TRANSIENT_KINDS:
        raise ValueError(f"unknown transient kind {kind!r}")
    return f"{TRANSIENT_PREFIX}{kind}.{os.getpid()}.{random.getrandbits(48):012x}"


def parse_transient_name(name: str) -> tuple[str, int] | None:
    """``(kind, pid)`` of a transient root entry name; ``None`` for any other name."""
    if not name.startswith(TRANSIENT_PREFIX):
        return None
    parts = name[len(TRANSIENT_PREFIX) :].split(".")
    if len(parts) != 3 or parts[0] not in TRANSIENT_KINDS or not parts[1].isdecimal():
        return None
    return parts[0], int(parts[1])


# next() on a count is atomic under the GIL; the thread id keeps threads apart anyway.
_seq = itertools.count(1)


def tmp_name(suffix: str = "") -> str:
    """A fresh name for a write in flight: ``<prefix?><pid>.<thread>.<n>.partial``.

    The pid comes first so that ``shmstore gc`` reclaims the leftovers of dead
    writers only (:func:`parse_tmp_name`).
    """
    return f"{suffix}{os.getpid()}.{threading.get_ident():x}.{next(_seq)}.partial"


def parse_tmp_name(name: str, prefix: str = "") -> int | None:
    """The pid of a write in flight named by :func:`tmp_name` (with *prefix*); else ``None``."""
    if not name.startswith(prefix) or not name.endswith(".partial"):
        return None
    head = name[len(prefix) :].split(".", 1)[0]
    return int(head) if head.isdecimal() else None
