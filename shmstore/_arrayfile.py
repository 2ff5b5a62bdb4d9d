"""The named-array file format, end to end: header, create, open, unlink, iteration.

A named array is one regular file directly in the root, ``<root>/<name>``, so
that attaching it by name is one open, one fstat and one mmap::

  offset  0  magic ARRAY_MAGIC (16 bytes)
         16  u32   format version (ARRAY_VERSION)
         20  u32   length of the JSON document
         24  u64   offset of the data (a multiple of the page size)
         32  u64   state: 0 live, 1 deleted (set by unlink_array_file just
                   before the unlink, so a lock bound to the old file by name
                   knows that it must look the name up again)
         64  JSON  shape, dtype, order, nbytes, created, pid, uid, host, token
  data offset: the array's bytes, up to the end of the file

The header is written whole (zero padded up to the data offset), and the data
with ``write()`` or ``posix_fallocate()``, so the file has no hole: a store
through a mapping into a hole of a full tmpfs is a SIGBUS (PITFALLS 2). This
module is the only writer and the only parser of that format. See
docs/design.md ("Named arrays").
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import secrets
import socket
import stat
import time
from typing import TYPE_CHECKING, Any

from shmstore import _posix as px
from shmstore._errors import ForeignEntryError, SharedMemoryFullError
from shmstore._names import check_name, entry_path, transient_name
from shmstore._pool import Kept, Pool, any_kept, drain_all

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "ARRAY_HEADER_SIZE",
    "ARRAY_MAGIC",
    "ARRAY_OPEN_FLAGS",
    "ARRAY_STATE_OFFSET",
    "array_meta",
    "array_root_fd",
    "create_lock_file",
    "create_array_file",
    "decode_array_header",
    "encode_array_header",
    "iter_array_files",
    "open_array_file",
    "open_lock_target",
    "read_array_header",
    "unlink_array_file",
]

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


def _entry_kind_error(root: str, name: str, st: os.stat_result) -> OSError:
    """The error for an entry *name* that exists but is not a named array."""
    path = entry_path(root, name)
    if stat.S_ISLNK(st.st_mode):
        return ForeignEntryError(path, "a symbolic link; shmstore never follows one")
    if stat.S_ISDIR(st.st_mode):
        return ForeignEntryError(
            path,
            "a namespace (a directory), not a named array; namespaces and named "
            "arrays share the root's names",
            hint=f"open it with shmstore.SharedMemoryStore({name!r}), or remove it with "
            f"shmstore.destroy({name!r}) (`shmstore rm {name}`)",
        )
    return ForeignEntryError(path, "not a regular file")


def create_array_file(
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
    rfd = px.root_fd(root)
    header = encode_array_header(meta)
    data_offset = len(header)
    tmp = transient_name("array")
    fd = os.open(tmp, _O_ARRAY_NEW, 0o600, dir_fd=rfd)
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)
        try:
            try:
                _fill_new(fd, header, nbytes, write_data)
            except OSError as e:
                # Full: the files this process keeps for reuse go first, then once more.
                if e.errno != errno.ENOSPC or not any_kept():
                    raise
                drain_all()
                _fill_new(fd, header, nbytes, write_data)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=rfd)
                # Closed first: an unlinked file keeps its pages while it is open,
                # and the message must say what was left before this create.
                os.close(fd)
                fd = -1
                st = os.statvfs(rfd)
                raise SharedMemoryFullError(
                    name, data_offset + nbytes, st.f_bavail * st.f_frsize, root, kind="array"
                ) from e
            raise
        _publish(root, rfd, tmp, name)
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=rfd)


def _fill_new(
    fd: int, header: bytes, nbytes: int, write_data: Callable[[int, int], None] | None
) -> None:
    px.pwrite_all(fd, memoryview(header), 0)
    if write_data is not None:
        write_data(fd, len(header))
    elif nbytes:
        os.posix_fallocate(fd, len(header), nbytes)


def _publish(root: str, rfd: int, tmp: str, name: str) -> None:
    """``link`` the complete file *tmp* of the root as *name*, which must not exist."""
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
            entry_path(root, name),
        ) from None


# --------------------------------------------------------------- recycled files
# Deleted arrays are kept (renamed ``.shmstore-pool.<pid>.*`` in the root, as
# ``_pool`` describes) for a later create of the same size by this process.
_root_pools: dict[str, Pool] = {}


def _root_pool(root: str) -> Pool:
    pool = _root_pools.get(root)
    if pool is None:
        pool = _root_pools[root] = Pool(px.root_fd(root))
    return pool


def recycled_array_file(
    root: str, meta: dict[str, Any], nbytes: int, *, mode: int = 0o600
) -> tuple[Kept, bytes] | None:
    """A deleted array file of the size a new array needs, leased for writing; else ``None``.

    Returns the file and the header to write at its start, with the data
    after it. The caller writes both with :meth:`Kept.write` (which drops the
    lease), then publishes the file with :func:`publish_array_file`.
    """
    header = encode_array_header(meta)
    pool = _root_pool(root)
    kept = pool.take(len(header) + nbytes)
    if kept is None:
        return None
    try:
        os.fchmod(kept.fd, mode)
    except BaseException:
        px.lease(kept.fd, take=False)
        pool.discard(kept)
        raise
    return kept, header


def publish_array_file(root: str, name: str, kept: Kept) -> int:
    """Publish the filled file *kept* as the named array *name*; return a read-write fd on it.

    The descriptor is a new open of the file, not *kept*'s: the mappings made
    of it are what a later lease sees. The file is dropped on any error.

    Raises
    ------
    FileExistsError
        As :func:`create_array_file`.
    """
    check_name(name, "array")
    rfd = px.root_fd(root)
    pool = _root_pool(root)
    tmp = kept.name
    try:
        fd = os.open(tmp, _O_ARRAY_RW, dir_fd=rfd)
    except BaseException:
        pool.discard(kept)
        raise
    try:
        _publish(root, rfd, tmp, name)
    except BaseException:
        os.close(fd)
        pool.discard(kept)
        raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=rfd)
    pool.installed(kept)
    return fd


def open_array_file(root: str, name: str, *, read_only: bool = False) -> tuple[int, os.stat_result]:
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
    rfd = px.root_fd(root)
    path = entry_path(root, name)
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
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EACCES, errno.EPERM):
            try:
                st = os.stat(name, dir_fd=rfd, follow_symlinks=False)
            except FileNotFoundError:
                raise e from None
            if e.errno in (errno.EACCES, errno.EPERM) and stat.S_ISREG(st.st_mode):
                raise PermissionError(
                    e.errno,
                    f"named array {path!r} belongs to uid {st.st_uid}, not you "
                    f"(uid {os.geteuid()}); shmstore only opens your own arrays",
                    path,
                ) from None
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
    reopens a file that :func:`open_array_file` validated before; a caller
    that does so must check with ``fstat`` that it is still that file.
    """
    return px.root_fd(root)


def unlink_array_file(root: str, name: str, *, token: str | None = None) -> bool:
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
        As :func:`open_array_file`.
    """
    fd, st = open_array_file(root, name, read_only=False)
    try:
        path = entry_path(root, name)
        meta, _ = read_array_header(fd, path, st.st_size)
        if token is not None and meta.get("token") != token:
            return False
        os.pwrite(fd, ARRAY_DELETED.to_bytes(8, "little"), ARRAY_STATE_OFFSET)
        rfd = px.root_fd(root)
        try:
            cur = os.stat(name, dir_fd=rfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if (cur.st_ino, cur.st_dev) != (st.st_ino, st.st_dev):
            return False  # deleted and re-created meanwhile: not ours to remove
        pool = _root_pool(root)
        try:
            if pool.room(st.st_size):
                # Kept for a later create of this size (renamed: gone for every reader).
                kept = transient_name("pool")
                os.rename(name, kept, src_dir_fd=rfd, dst_dir_fd=rfd)
                pool.put(kept, os.fstat(fd))
            else:
                os.unlink(name, dir_fd=rfd)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


def has_array_magic(root: str, name: str, st: os.stat_result) -> bool:
    """Whether the root entry *name* (lstat *st*) is a regular file of yours with the magic.

    Nothing is opened for writing and no symlink is followed.
    """
    if not (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()):
        return False
    if st.st_size < ARRAY_HEADER_SIZE:
        return False
    try:
        fd = os.open(name, _O_ARRAY_RO, dir_fd=px.root_fd(root))
    except OSError:
        return False
    try:
        return os.pread(fd, len(ARRAY_MAGIC), 0) == ARRAY_MAGIC
    finally:
        os.close(fd)


def iter_array_files(root: str) -> Iterator[tuple[str, dict[str, Any], os.stat_result]]:
    """Yield ``(name, header, fstat)`` for every valid named array of *root*, by name.

    Foreign and corrupt files are skipped (``shmstore ls`` reports those).
    """
    rfd = px.root_fd(root)
    with os.scandir(rfd) as it:
        names = sorted(e.name for e in it if not e.name.startswith("."))
    for name in names:
        try:
            st = os.stat(name, dir_fd=rfd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not has_array_magic(root, name, st):
            continue
        try:
            fd, st = open_array_file(root, name, read_only=True)
        except (FileNotFoundError, ForeignEntryError, PermissionError):
            continue
        try:
            meta, _ = read_array_header(fd, entry_path(root, name), st.st_size)
        except ForeignEntryError:
            continue
        finally:
            os.close(fd)
        yield name, meta, st


def check_array_file(root: str, name: str) -> None:
    """Raise the error that says why the root entry *name* is not a valid named array.

    Returns quietly for a valid one.
    """
    fd, st = open_array_file(root, name, read_only=True)
    try:
        read_array_header(fd, entry_path(root, name), st.st_size)
    finally:
        os.close(fd)


def open_lock_target(root: str, name: str) -> tuple[int, str]:
    """Open the entry whose lock ``shmstore.Lock(name)`` takes; return (fd, kind).

    The lock of a named array is a ``flock`` on the array file itself, and the
    lock of a namespace one on its directory: each goes away with its entry,
    and no extra file is ever left in the root. The fd is read-only (``flock``
    needs no write access) and close-on-exec. *kind* is ``"array"`` (its
    header checked) or ``"directory"`` (for the namespace layer to check).

    Raises
    ------
    FileNotFoundError
        If nothing has that name.
    ForeignEntryError
        If the entry is neither a named array nor a directory.
    PermissionError
        If it belongs to another user.
    """
    check_name(name, "lock")
    rfd = px.root_fd(root)
    path = entry_path(root, name)
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
        px.require_own(st, path, "locks your own arrays and namespaces")
        if stat.S_ISDIR(st.st_mode):
            return fd, "directory"
        if not stat.S_ISREG(st.st_mode):
            raise ForeignEntryError(path, "neither a named array nor a namespace")
        read_array_header(fd, path, st.st_size)
        return fd, "array"
    except BaseException:
        os.close(fd)
        raise


def array_meta(
    shape: list[int], dtype: Any, order: str, nbytes: int, *, scoped: bool = False
) -> dict[str, Any]:
    """The header document of a new named array (*dtype* as ``numpy.lib.format`` spells it).

    A *scoped* array (``shmstore.scoped_array``) records it, with its creator's
    pid: ``shmstore gc`` reclaims it if that process died before its block ended.
    """
    extra: dict[str, Any] = {"scoped": True} if scoped else {}
    return {
        **extra,
        "format": "shmstore-array",
        "shape": shape,
        "dtype": dtype,
        "order": order,
        "nbytes": nbytes,
        "created": time.time(),
        "pid": os.getpid(),
        "uid": os.geteuid(),
        "host": socket.gethostname(),
        "token": secrets.token_hex(8),
    }


def create_lock_file(root: str, name: str) -> None:
    """Make sure *name* exists to lock: an empty ``uint8`` named array unless something is there."""
    with contextlib.suppress(FileExistsError):
        os.close(create_array_file(root, name, array_meta([0], "|u1", "C", 0), 0))
