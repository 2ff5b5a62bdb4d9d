"""Named arrays: N-d NumPy arrays in shared memory, reachable by name from any process.

A named array is one file directly in the shared-memory root (``<root>/<name>``)
holding a small header (shape, dtype, order) and the data, page aligned (see
the format in :mod:`shmstore._arrayfile`). :func:`attach` needs
only the name: it opens the file, maps it and builds a :class:`NamedArray` on
the mapping, which is zero-copy and works wherever NumPy does.

Lifetime
--------
An array lives until :func:`delete` (or the end of a :func:`scoped_array`
block), whichever process created it. Nothing here ever uses
``multiprocessing.shared_memory.SharedMemory``, so no ``resource_tracker`` can
unlink an array when a process that attached it exits (PITFALLS 1). A process
that still maps a deleted array keeps reading and writing it; new attaches by
name fail.

Pickling
--------
A :class:`NamedArray` that views a named array pickles as its name, root and
the view's offset, shape, strides and dtype (a few hundred bytes, whatever the
size): a worker process attaches the same memory. Arrays derived by
computation (``a + 1``, ``a.copy()``) own their data and are plain ndarrays.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import math
import mmap
import operator
import os
import pwd
import sys
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from shmstore import _arrayfile as af
from shmstore._errors import ForeignEntryError
from shmstore._lock import Lock
from shmstore._names import ENV_ROOT, check_name, entry_path, memory_backed, resolve_root

if TYPE_CHECKING:
    from collections.abc import Iterator

    from numpy.typing import ArrayLike, DTypeLike

__all__ = [
    "ArrayInfo",
    "NamedArray",
    "attach",
    "create",
    "delete",
    "list_arrays",
    "scoped_array",
]

#: Python 3.13+ can map without dup()-ing the descriptor (one system call less).
_MMAP_KW: dict[str, Any] = {"trackfd": False} if sys.version_info >= (3, 13) else {}
#: madvise(2) advice that maps every page writable up front (Linux 5.14+).
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)
#: Smaller arrays are made in fresh pages (a pooled file saves next to nothing).
_RECYCLE_MIN_BYTES = 64 * 1024
#: Size of the slices handed to one ``pwrite`` when filling a new array.
_WRITE_STEP = 64 << 20
#: Size of the repeated pattern written for a scalar fill.
_PATTERN_BYTES = 4 << 20


class _File:
    """One named array file, validated and its header parsed once per process.

    A published array's header never changes: the file is published whole by
    ``link()`` and shmstore never rewrites its header (a delete sets the
    state word, which is not parsed here). So :func:`attach` reuses this
    record for a name it attached before when an ``fstat`` shows the same
    file (:attr:`ident`: inode, device, link count, owner, group, size, the
    fields 1 to 6 of a ``stat_result``). A delete and re-create
    gives a new inode on a tmpfs, which numbers inodes with a counter; a disk
    filesystem reuses a freed inode number at once, so on a file-backed root
    (:attr:`trusted` false) every attach parses the header. The ctime is not
    part of the identity: every first write to a page through a mapping
    updates it, so it would throw the record away on most attaches of an
    array that is being written.

    It also holds weak references to this process's live mappings of the
    file (read-write and read-only), so that attaching while a view is alive
    reuses the mapping.
    """

    __slots__ = (
        "data_offset",
        "dtype",
        "ident",
        "ino",
        "live",
        "meta",
        "name",
        "nbytes",
        "order",
        "path",
        "rfd",
        "root",
        "shape",
        "token",
        "trusted",
    )

    def __init__(self, root: str, name: str, st: os.stat_result, buf: Any) -> None:
        path = entry_path(root, name)
        meta, data_offset = af.decode_array_header(buf, path, st.st_size)
        try:
            shape = tuple(operator.index(n) for n in meta["shape"])
            dtype = _dtype_from_json(meta["dtype"])
            order = meta["order"]
            if order not in ("C", "F") or any(n < 0 for n in shape):
                raise ValueError(f"order {order!r}, shape {shape}")
            if math.prod(shape) * dtype.itemsize != meta["nbytes"]:
                raise ValueError(f"shape {shape} x {dtype} is not {meta['nbytes']} bytes")
        except (TypeError, ValueError, KeyError) as e:
            raise ForeignEntryError(path, f"a named array with a corrupt header: {e}") from e
        self.root, self.name, self.path, self.rfd = root, name, path, af.array_root_fd(root)
        self.meta, self.data_offset, self.shape, self.dtype = meta, data_offset, shape, dtype
        self.order, self.nbytes, self.token = order, meta["nbytes"], str(meta["token"])
        self.ino = st.st_ino
        self.ident = st[1:7]  # ino, dev, nlink, uid, gid, size: one C-level slice
        self.trusted = memory_backed(root)
        self.live: list[weakref.ref[_Mapping] | None] = [None, None]  # by read_only

    def mapping(self, read_only: bool) -> _Mapping | None:
        """This process's live mapping of the file, if the name still holds the file."""
        ref = self.live[read_only]
        if ref is None or ref() is None:
            return None
        try:
            st = os.stat(self.name, dir_fd=self.rfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if st[1:7] != self.ident:
            return None  # deleted (and re-created), truncated, chown-ed: map afresh
        return ref()


class _Mapping(mmap.mmap):
    """The shared mapping of one named array file: the owner of its memory.

    Every :class:`NamedArray` on the file has it at the end of its ``base``
    chain; the memory is unmapped when the last of them is gone.
    """

    # _lock and data_address are set on first use (read them with getattr).
    __slots__ = ("_lock", "data_address", "file", "read_only")

    file: _File
    read_only: bool
    data_address: int
    _lock: Lock

    name = property(operator.attrgetter("file.name"))
    root = property(operator.attrgetter("file.root"))
    path = property(operator.attrgetter("file.path"))
    meta = property(operator.attrgetter("file.meta"))
    order = property(operator.attrgetter("file.order"))
    nbytes = property(operator.attrgetter("file.nbytes"))
    token = property(operator.attrgetter("file.token"))
    data_offset = property(operator.attrgetter("file.data_offset"))
    ino = property(operator.attrgetter("file.ino"))


# (root, name) -> the file as last validated (see _File).
_files: dict[tuple[str, str], _File] = {}
# (root argument, $SHMSTORE_ROOT if the argument is None, name) -> the _File that
# attach() found for them: the fast path's one look-up (see attach).
_attached: dict[tuple[str | None, bytes | None, str], _File] = {}
# root argument -> resolved root; value of $SHMSTORE_ROOT (bytes) -> resolved root
_roots: dict[str, str] = {}
_env_roots: dict[bytes | None, str] = {}
_MAX_FILES = 1024
_PROT = (mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ)  # by read_only
_OPEN_FLAGS = af.ARRAY_OPEN_FLAGS  # by read_only
_MAP_SHARED = mmap.MAP_SHARED
_TRACKFD = bool(_MMAP_KW)
_new_array = np.ndarray.__new__
_weakref = weakref.ref
_open, _fstat, _close = os.open, os.fstat, os.close
# os.environ keeps its raw (bytes) mapping in _data, which os.environ[...] = and
# del update; reading it directly costs 0.05 us instead of 0.26 us for
# os.environ.get (encode, look up, decode): a quarter of what attach spends
# outside system calls.
_ENV_KEY = os.fsencode(ENV_ROOT)
_environ_raw: Any = getattr(os.environ, "_data", None)
if not isinstance(_environ_raw, dict) or any(type(k) is not bytes for k in _environ_raw):
    _environ_raw = None


def _environ_get_portable(key: bytes) -> bytes | None:
    value = os.environ.get(os.fsdecode(key))
    return None if value is None else os.fsencode(value)


_environ_get = _environ_raw.get if _environ_raw is not None else _environ_get_portable


def _env_root() -> bytes | None:
    """The raw value of ``$SHMSTORE_ROOT`` (``None`` if unset)."""
    return _environ_get(_ENV_KEY)


def _root(root: str | os.PathLike[str] | None) -> str:
    """The resolved root for a ``root=`` argument (checked once per process and value)."""
    if root is None:
        env = _env_root()
        resolved = _env_roots.get(env)
        if resolved is None:
            resolved = _env_roots[env] = resolve_root(None)
        return resolved
    root = os.fspath(root)
    resolved = _roots.get(root)
    if resolved is None:
        resolved = resolve_root(root)
        if os.path.isabs(root):  # a relative one depends on the working directory
            _roots[root] = resolved
    return resolved


def _absolute(root: object) -> bool:
    return type(root) is str and os.path.isabs(root)


def _open_mapping(root: str, name: str, read_only: bool) -> _Mapping:
    """Map the named array *name*: the full path, which validates what it opens."""
    f = _files.get((root, name))
    if f is not None:
        m = f.mapping(read_only)
        if m is not None:
            return m
    fd, st = af.open_array_file(root, name, read_only=read_only)
    try:
        return _map(fd, st, root, name, read_only)
    finally:
        os.close(fd)


def _map(fd: int, st: os.stat_result, root: str, name: str, read_only: bool) -> _Mapping:
    """Map the whole array file *fd* (opened and checked), validate its header, record both.

    The header is parsed from the mapping (no ``pread``).
    """
    m = _Mapping(fd, st.st_size, _MAP_SHARED, _PROT[read_only], **_MMAP_KW)
    f = _File(root, name, st, m)
    m.file, m.read_only = f, read_only
    f.live[read_only] = _weakref(m)
    if len(_files) >= _MAX_FILES:
        _files.clear()
    _files[root, name] = f
    return m


def _whole(m: _Mapping) -> NamedArray:
    f = m.file
    return _new_array(NamedArray, f.shape, f.dtype, m, f.data_offset, None, f.order)


def _mapping_of(arr: np.ndarray) -> _Mapping | None:
    """The named-array mapping whose memory *arr* views, or ``None``."""
    base = arr.base
    while isinstance(base, np.ndarray):
        base = base.base
    return base if isinstance(base, _Mapping) else None


def _data_address(m: _Mapping) -> int:
    """Address of the first data byte of *m* in this process (computed on first use)."""
    address = getattr(m, "data_address", None)
    if address is None:
        base = np.frombuffer(m, np.uint8).__array_interface__["data"][0]
        address = m.data_address = base + m.data_offset
    return address


def _segment_view(arr: np.ndarray) -> tuple[_Mapping, int] | None:
    """``(mapping, byte offset of arr's first element in the data)`` if *arr* views one.

    ``None`` for arrays that own their data, view something else, or are empty.
    """
    m = _mapping_of(arr)
    if m is None or arr.size == 0:
        return None
    ptr = arr.__array_interface__["data"][0]
    start = _data_address(m)
    lo = hi = ptr
    for n, s in zip(arr.shape, arr.strides, strict=True):
        if s < 0:
            lo += (n - 1) * s
        else:
            hi += (n - 1) * s
    hi += arr.itemsize
    if lo < start or hi > start + m.nbytes:
        return None
    return m, ptr - start


# --------------------------------------------------------------------- dtypes
def _dtype_to_json(dtype: np.dtype[Any]) -> Any:
    return np.lib.format.dtype_to_descr(dtype)


def _descr_from_json(descr: Any) -> Any:
    """Undo JSON's tuples-to-lists on a ``dtype.descr`` (fields are tuples)."""
    if isinstance(descr, str):
        return descr
    fields = []
    for field in descr:
        name = tuple(field[0]) if isinstance(field[0], builtins.list) else field[0]
        rest = [_descr_from_json(field[1])]
        if len(field) > 2:
            rest.append(tuple(field[2]))
        fields.append((name, *rest))
    return fields


def _dtype_from_json(descr: Any) -> np.dtype[Any]:
    if isinstance(descr, str):
        return np.dtype(descr)
    return np.lib.format.descr_to_dtype(_descr_from_json(descr))


def _normalize(shape: Any, dtype: DTypeLike, order: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    if isinstance(shape, bool):
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}")
    try:
        dims = (operator.index(shape),)
    except TypeError:
        try:
            dims = tuple(operator.index(n) for n in shape)
        except TypeError:
            raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}") from None
    if any(n < 0 for n in dims):
        raise ValueError(f"shape {dims} has a negative dimension")
    dt = np.dtype(dtype)
    if dt.subdtype is not None:  # like np.empty: ('f4', (3,)) adds a dimension
        dims, dt = dims + dt.shape, dt.base
    if dt.hasobject:
        raise ValueError(
            f"dtype {dt} holds Python object pointers, which mean nothing in another "
            "process; use a fixed-size dtype (numbers, 'U<n>', 'S<n>', structured)"
        )
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', got {order!r}")
    return dims, dt


# ----------------------------------------------------------------------- fill
def _fill_plan(
    fill: Any, shape: tuple[int, ...], dtype: np.dtype[Any], order: str, nbytes: int
) -> tuple[Any, np.ndarray | None]:
    """How to fill a new array: ``(write_data, later)``.

    Data goes in with ``pwrite`` where it can (a scalar or an array of the
    exact shape, dtype and layout): the kernel allocates each tmpfs page as it
    copies into it, with no page faults, and a full tmpfs is ``ENOSPC``.
    Anything else (broadcasting, casting) is copied through the mapping
    afterwards: *later* is then the value to ``np.copyto`` there.
    """
    if fill is None or nbytes == 0:
        return None, None
    value = np.asarray(fill)
    if value.ndim == 0:
        count = min(math.prod(shape), max(1, _PATTERN_BYTES // dtype.itemsize))
        pattern = np.full(count, value, dtype=dtype)  # np.full's (unsafe) casting
        pview = memoryview(pattern).cast("B")

        def write_pattern(fd: int, offset: int) -> None:
            done = 0
            while done < nbytes:
                chunk = pview[: min(len(pview), nbytes - done)]
                done += os.pwrite(fd, chunk, offset + done)

        return write_pattern, None
    contiguous = value.flags.c_contiguous if order == "C" else value.flags.f_contiguous
    if value.shape == shape and value.dtype == dtype and contiguous:
        data = memoryview(value.ravel(order=order)).cast("B")

        def write_copy(fd: int, offset: int) -> None:
            done = 0
            while done < nbytes:
                done += os.pwrite(fd, data[done : done + _WRITE_STEP], offset + done)

        return write_copy, None
    np.broadcast_shapes(value.shape, shape)  # fail before creating anything
    return None, value


# ---------------------------------------------------------------------- class
class NamedArray(np.ndarray):
    """A NumPy array whose memory is a named shared-memory array.

    Made by :func:`create` and :func:`attach`; slicing and reshaping give
    ``NamedArray`` views of the same memory, while computed results
    (``a + 1``, reductions, fancy indexing) are plain ``ndarray`` copies.

    Pickling a view sends its name, root, offset, shape, strides and dtype,
    never its bytes: the receiving process attaches the same memory. A
    read-only view (``read_only=True``, or ``flags.writeable`` cleared)
    arrives read-only. Only ``NamedArray`` views pickle by name: a plain
    ``np.asarray(a)`` view pickles its bytes like any ndarray.
    """

    def __array_wrap__(
        self, arr: np.ndarray, context: Any = None, return_scalar: bool = False
    ) -> Any:
        arr = super().__array_wrap__(arr, context)
        if arr is self or _mapping_of(arr) is not None:
            return arr  # out= on the segment itself
        if return_scalar:
            return arr[()]
        return arr.view(np.ndarray)

    def __getitem__(self, index: Any) -> Any:
        res = super().__getitem__(index)
        if type(res) is NamedArray and _mapping_of(res) is None:
            return res.view(np.ndarray)  # fancy indexing copies
        return res

    # ------------------------------------------------------------ identity
    @property
    def name(self) -> str | None:
        """The named array this views (``None`` for a computed copy)."""
        m = _mapping_of(self)
        return m.name if m is not None else None

    @property
    def root(self) -> str | None:
        """The shared-memory root of the named array (``None`` for a copy)."""
        m = _mapping_of(self)
        return m.root if m is not None else None

    @property
    def info(self) -> ArrayInfo:
        """The record :func:`list_arrays` gives for the named array this views."""
        m = self._mapping()
        return ArrayInfo._from_meta(m.name, m.root, m.meta)

    @property
    def lock(self) -> Lock:
        """The array's inter-process lock (a :class:`shmstore.Lock`).

        A ``flock`` on the array's own file: every process that attached the
        array (or calls ``shmstore.Lock(name)``) gets the same lock, the kernel
        releases it if the holder dies, and it goes away with the array. One
        object per mapping in a process; not reentrant.
        """
        m = self._mapping()
        lock = getattr(m, "_lock", None)
        if lock is None:
            lock = m._lock = Lock._for_array(m.root, m.name, m.ino)
        return lock

    def _mapping(self) -> _Mapping:
        m = _mapping_of(self)
        if m is None:
            raise ValueError(
                "this NamedArray is a computed copy, not a view of a named array; "
                "only views of a named array have a name and a lock"
            )
        return m

    # ------------------------------------------------------------ pickling
    def _by_name(self) -> tuple[Any, tuple[Any, ...]] | None:
        found = _segment_view(self)
        if found is None:
            return None
        m, offset = found
        read_only = m.read_only or not self.flags.writeable
        return _rebuild, (
            m.root,
            m.name,
            read_only,
            m.token,
            offset,
            self.shape,
            self.strides,
            self.dtype,
        )

    def __reduce_ex__(self, protocol: Any) -> Any:
        by_name = self._by_name()
        if by_name is not None:
            return by_name
        # A computed result (or an empty view): its bytes, as a plain ndarray.
        return np.asarray(self).__reduce_ex__(protocol)

    def __reduce__(self) -> Any:
        return self.__reduce_ex__(2)

    def to_dask(self, chunks: Any = "auto", **kwargs: Any) -> Any:
        """A dask array over this view, without copying it.

        ``dask.array.from_array`` copies a NumPy input (recent dask does, to
        guard against later mutation), which for a named array means a full
        private copy in this process, pickled by value to every worker. This
        hands dask the named array itself: tasks carry its name and each
        worker process reads (and may write) the shared memory.

        Parameters
        ----------
        chunks, **kwargs
            As for :func:`dask.array.from_array`.
        """
        import dask.array as da

        meta = np.empty((0,) * self.ndim, dtype=self.dtype)
        return da.from_array(_DaskSource(self), chunks=chunks, asarray=False, meta=meta, **kwargs)

    def __dask_tokenize__(self) -> Any:
        # Hash the identity of the memory, not a GiB of data (as dask does for memmap).
        found = _segment_view(self)
        if found is None:
            return ("ndarray", np.asarray(self).tobytes(), self.dtype.str, self.shape)
        m, offset = found
        return ("shmstore.NamedArray", m.root, m.name, m.token, offset, self.shape,
                self.strides, self.dtype.str)  # fmt: skip


class _DaskSource:
    """What :meth:`NamedArray.to_dask` gives dask: array-like, but without ``copy``."""

    __slots__ = ("array",)

    def __init__(self, array: NamedArray) -> None:
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return self.array.ndim

    def __getitem__(self, index: Any) -> Any:
        return self.array[index]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.array, dtype=dtype)

    def __reduce__(self) -> tuple[type, tuple[NamedArray]]:
        return (_DaskSource, (self.array,))

    def __dask_tokenize__(self) -> Any:
        return ("shmstore.to_dask", self.array.__dask_tokenize__())


def _rebuild(
    root: str,
    name: str,
    read_only: bool,
    token: str,
    offset: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    dtype: np.dtype[Any],
) -> NamedArray:
    """Unpickle a view of a named array: attach it by name (zero copy)."""
    m: _Mapping = attach(name, read_only=read_only, root=root).base
    if m.token != token:
        raise FileNotFoundError(
            errno.ENOENT,
            f"named array {name!r} in {root} was deleted (and another made under its "
            "name) since this view of it was pickled",
            m.path,
        )
    return np.ndarray.__new__(
        NamedArray, shape, dtype, buffer=m, offset=m.data_offset + offset, strides=strides
    )


# -------------------------------------------------------------------- records
@dataclass(frozen=True, slots=True)
class ArrayInfo:
    """What :func:`list_arrays` tells about one named array."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    nbytes: int
    created: float
    order: str
    pid: int | None
    owner: str | None
    path: str

    @classmethod
    def _from_meta(cls, name: str, root: str, meta: dict[str, Any]) -> ArrayInfo:
        uid = meta.get("uid")
        owner = None
        if isinstance(uid, int):
            with contextlib.suppress(KeyError):
                owner = pwd.getpwuid(uid).pw_name
        return cls(
            name=name,
            shape=tuple(meta["shape"]),
            dtype=_dtype_from_json(meta["dtype"]),
            nbytes=meta["nbytes"],
            created=float(meta.get("created", 0.0)),
            order=meta["order"],
            pid=meta.get("pid"),
            owner=owner,
            path=entry_path(root, name),
        )


# ------------------------------------------------------------------------ API
def create(
    name: str,
    shape: int | tuple[int, ...],
    dtype: DTypeLike = float,
    *,
    fill: ArrayLike | None = None,
    exist_ok: bool = False,
    root: str | os.PathLike[str] | None = None,
    order: str = "C",
    mode: int = 0o600,
    populate: bool = False,
) -> NamedArray:
    """Create the named array *name* in shared memory and return it.

    Parameters
    ----------
    name
        One path component (no ``/``, not hidden, at most 255 bytes). Named
        arrays and namespaces share the root's names.
    shape
        As for :func:`numpy.empty`. Stored with the array (as are *dtype* and
        *order*), so :func:`attach` needs only the name.
    dtype
        As for :func:`numpy.empty`; object dtypes are refused.
    order
        ``"C"`` or ``"F"``, as for :func:`numpy.empty`.
    fill
        Initial content: ``None`` for zeros (fresh tmpfs pages are zero), a
        scalar, or an array broadcastable to *shape* (cast like
        :func:`numpy.full`). An array of exactly *shape*, *dtype* and layout
        is written with ``write()``, the fastest way to create from data.
    exist_ok
        If the array exists, attach it instead of failing; its shape, dtype
        and order must match (*fill* is then not applied).
    root
        Shared-memory directory; default ``$SHMSTORE_ROOT``, else ``/dev/shm``.
    mode
        Permission bits of the file (default ``0o600``, owner only).
    populate
        Map every page into this process now (``MADV_POPULATE_WRITE``): faster
        when this process writes the whole array next; wasted otherwise.

    Returns
    -------
    NamedArray
        A writable, zero-copy view of the whole array.

    Raises
    ------
    FileExistsError
        If *name* exists and not *exist_ok* (:class:`ForeignEntryError` when
        the entry is not a named array: a namespace, a symlink, another
        program's file).
    SharedMemoryFullError
        If the shared-memory filesystem has no room (never SIGBUS later).
    ValueError
        For an invalid name, shape, order or dtype.

    Examples
    --------
    >>> import shmstore
    >>> a = shmstore.create("doc-frames", (2, 3), "f4", fill=1.5)
    >>> b = shmstore.attach("doc-frames")      # in any process of the host
    >>> b[0, 0] = 7.0; float(a[0, 0])
    7.0
    >>> shmstore.delete("doc-frames")
    """
    return _create(
        name,
        shape,
        dtype,
        fill=fill,
        exist_ok=exist_ok,
        root=root,
        order=order,
        mode=mode,
        populate=populate,
        scoped=False,
    )


def _create(
    name: str,
    shape: int | tuple[int, ...],
    dtype: DTypeLike = float,
    *,
    fill: ArrayLike | None = None,
    exist_ok: bool = False,
    root: str | os.PathLike[str] | None = None,
    order: str = "C",
    mode: int = 0o600,
    populate: bool = False,
    scoped: bool,
) -> NamedArray:
    """:func:`create`; a *scoped* array says so in its header (``shmstore gc``
    reclaims it if its creator dies before the block ends)."""
    name = check_name(name, "array")
    dims, dt = _normalize(shape, dtype, order)
    root = _root(root)
    nbytes = math.prod(dims) * dt.itemsize
    write_data, later = _fill_plan(fill, dims, dt, order, nbytes)
    meta = af.array_meta(builtins.list(dims), _dtype_to_json(dt), order, nbytes, scoped=scoped)
    for _ in range(8):
        try:
            fd = _recycled(root, name, meta, nbytes, mode, fill, dims, dt, order, later)
            if fd is None:
                fd = af.create_array_file(
                    root, name, meta, nbytes, write_data=write_data, mode=mode
                )
        except FileExistsError as e:
            if not exist_ok or isinstance(e, ForeignEntryError):
                raise
            try:
                arr = attach(name, root=root)
            except FileNotFoundError:
                continue  # deleted meanwhile: try to create it again
            if (arr.shape, arr.dtype, _mapping_of(arr).order) != (dims, dt, order):  # type: ignore[union-attr]
                raise FileExistsError(
                    errno.EEXIST,
                    f"named array {name!r} exists in {root} with shape {arr.shape}, "
                    f"dtype {arr.dtype}, order {_mapping_of(arr).order}; asked for "  # type: ignore[union-attr]
                    f"{dims}, {dt}, {order}. Delete it first or use another name",
                    entry_path(root, name),
                ) from None
            return arr
        try:
            m = _map(fd, os.fstat(fd), root, name, read_only=False)
        except BaseException:
            with contextlib.suppress(OSError):
                af.unlink_array_file(root, name, token=meta["token"])
            raise
        finally:
            os.close(fd)
        if populate and nbytes:
            with contextlib.suppress(OSError):  # EINVAL before Linux 5.14
                m.madvise(_MADV_POPULATE_WRITE, m.data_offset, len(m) - m.data_offset)
        arr = _whole(m)
        if later is not None:
            np.copyto(arr, later, casting="unsafe")
        return arr
    raise FileExistsError(
        errno.EEXIST,
        f"named array {name!r} in {root} keeps being deleted and re-created; try again",
        entry_path(root, name),
    )


def _recycled(
    root: str,
    name: str,
    meta: dict[str, Any],
    nbytes: int,
    mode: int,
    fill: Any,
    dims: tuple[int, ...],
    dt: np.dtype[Any],
    order: str,
    later: np.ndarray | None,
) -> int | None:
    """Create the array in a deleted array's file nobody maps (``_pool``); ``None`` if none.

    The pages are there already: filling them is a ``memcpy`` (a ``memset``
    without *fill*, so that a new array reads zeros as a fresh one does).
    """
    if nbytes < _RECYCLE_MIN_BYTES:
        return None
    got = af.recycled_array_file(root, meta, nbytes, mode=mode)
    if got is None:
        return None
    kept, header = got

    def write(view: memoryview) -> None:
        view[: len(header)] = header
        data = np.frombuffer(view, np.uint8, nbytes, len(header))
        if later is not None:
            return  # copied through the array's own mapping, as for a fresh file
        if fill is None:
            data.fill(0)
            return
        value = np.asarray(fill)
        dst = data.view(dt)
        if value.ndim == 0:
            dst.fill(value)  # as np.full casts
        else:
            np.copyto(dst.reshape(dims, order=order), value, casting="unsafe")  # type: ignore[call-overload]

    try:
        kept.write(write)
    except BaseException:
        kept.pool.discard(kept)
        raise
    return af.publish_array_file(root, name, kept)


def attach(
    name: str, *, read_only: bool = False, root: str | os.PathLike[str] | None = None
) -> NamedArray:
    """Attach the named array *name*: a zero-copy view of its memory.

    Parameters
    ----------
    read_only
        Map read-only: writing raises NumPy's ``ValueError`` (assignment
        destination is read-only), and the flag cannot be turned back on.
    root
        Shared-memory directory; default ``$SHMSTORE_ROOT``, else ``/dev/shm``.

    Raises
    ------
    FileNotFoundError
        If there is no array of that name.
    ForeignEntryError
        If the entry is not a named array (a namespace, a symlink, another
        program's or a corrupt file): it is reported, never trusted.
    PermissionError
        If the file belongs to another user.
    """
    # Fast path, for a name this process attached before with the same root
    # argument and $SHMSTORE_ROOT: one look-up finds the validated file
    # (_File), then one open (O_NOFOLLOW) and one fstat prove that the name
    # still holds that very file (same inode, size, owner, device: so the same
    # type and header), and one mmap; the header is not even read. Anything
    # else (an error, another file) takes the full path below, which reports
    # it. Written out inline: what attach costs beyond its system calls is
    # mostly these lines.
    try:
        key = (root, _environ_get(_ENV_KEY) if root is None else None, name)
        f = _attached.get(key)
    except TypeError:  # unhashable root or name: check_name() says what is wrong
        key, f = None, None
    if f is not None:
        ref = f.live[read_only]
        if ref is not None and ref() is not None:
            m = f.mapping(read_only)  # a view is alive: share its mapping
            if m is not None:
                return _new_array(NamedArray, f.shape, f.dtype, m, f.data_offset, None, f.order)
        else:
            try:
                fd = _open(f.name, _OPEN_FLAGS[read_only], dir_fd=f.rfd)
            except OSError:
                fd = -1
            if fd >= 0:
                try:
                    st = _fstat(fd)
                    if st[1:7] == f.ident:
                        if _TRACKFD:
                            m = _Mapping(
                                fd, st.st_size, _MAP_SHARED, _PROT[read_only], trackfd=False
                            )
                        else:
                            m = _Mapping(fd, st.st_size, _MAP_SHARED, _PROT[read_only])
                        m.file, m.read_only = f, read_only
                        f.live[read_only] = _weakref(m)
                        return _new_array(
                            NamedArray, f.shape, f.dtype, m, f.data_offset, None, f.order
                        )
                finally:
                    _close(fd)
    name = check_name(name, "array")
    m = _open_mapping(_root(root), name, read_only)
    if key is not None and m.file.trusted and (root is None or _absolute(root)):
        if len(_attached) >= _MAX_FILES:
            _attached.clear()
        _attached[key] = m.file
    return _whole(m)


def delete(name: str, *, root: str | os.PathLike[str] | None = None) -> None:
    """Delete the named array *name* (and its lock) from shared memory.

    Processes that still map it keep working on their mapping until they drop
    it; the memory is freed then. New :func:`attach` calls fail.

    Raises
    ------
    FileNotFoundError
        If there is no array of that name.
    ForeignEntryError
        If the entry is not a named array; it is left alone.
    """
    name = check_name(name, "array")
    root = _root(root)
    try:
        af.unlink_array_file(root, name)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            errno.ENOENT,
            f"no named array {name!r} in {root} to delete; shmstore.list() (or "
            "`shmstore ls`) shows the arrays there",
            e.filename,
        ) from None


def list_arrays(*, root: str | os.PathLike[str] | None = None) -> builtins.list[ArrayInfo]:
    """The named arrays in the root, sorted by name (public name: ``shmstore.list``).

    Namespaces, other programs' files and corrupt files are not listed.

    Parameters
    ----------
    root
        The shared-memory directory; ``None`` means ``$SHMSTORE_ROOT``, else
        ``/dev/shm``.

    Returns
    -------
    list of ArrayInfo
        One record per array (``name``, ``shape``, ``dtype``, ``nbytes``,
        ``order``, ``created``, ``pid``, ``owner``, ``path``).
    """
    root = _root(root)
    return [ArrayInfo._from_meta(name, root, meta) for name, meta, _ in af.iter_array_files(root)]


@contextlib.contextmanager
def scoped_array(
    name: str, shape: int | tuple[int, ...], dtype: DTypeLike = float, **kwargs: Any
) -> Iterator[NamedArray]:
    """Create a named array for the ``with`` block and delete it when the block exits.

    Takes the arguments of :func:`create` (``exist_ok`` is refused: the block
    deletes what it made, and only that). Views other processes hold stay
    valid after the block; the name is free again.

    Examples
    --------
    >>> import shmstore
    >>> with shmstore.scoped_array("doc-scratch", 10, "i8") as a:
    ...     a[:] = 1
    >>> "doc-scratch" in [r.name for r in shmstore.list()]
    False
    """
    if kwargs.get("exist_ok"):
        raise ValueError("scoped_array() deletes the array it creates; exist_ok is not allowed")
    arr = _create(name, shape, dtype, scoped=True, **kwargs)
    m = arr._mapping()
    try:
        yield arr
    finally:
        # Only our array: not one created under the same name after a delete.
        with contextlib.suppress(FileNotFoundError):
            af.unlink_array_file(m.root, m.name, token=m.token)
