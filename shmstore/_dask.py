"""Dask on shared memory: :func:`persist` a dask array into a ``shm://`` namespace.

Dask itself needs nothing from shmstore to use shared memory:
``da.from_zarr("shm://ns/t")`` and ``x.to_zarr("shm://ns/t")`` work through
the ``shm`` fsspec protocol. :func:`persist` is the one-call version of "write
this array into shared memory, then read it from there", what one does before
fanning work out to process workers: every task then carries the namespace's
name and a chunk index, never chunk bytes (PITFALLS 12), and every worker
process on the host maps the same pages.

Arrays that :func:`persist` writes are raw (no compressor, no filter) unless
the caller passes ``compressors=`` or ``filters=``, and the array it returns
reads raw ones without zarr: a task's chunk is a read-only NumPy
view of the mapped segment, so workers neither decode nor copy, and the pages
of the array count once in the host's memory however many workers read them.

dask is imported when :func:`persist` is first called, not with shmstore.
"""

from __future__ import annotations

import itertools
import math
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from shmstore._keyspace import Keyspace
from shmstore._names import resolve_root, split_url
from shmstore._urls import open_store

if TYPE_CHECKING:
    import os

    import dask.array as da
    import zarr
    from numpy.typing import ArrayLike

__all__ = ["persist"]


class RawChunks:
    """Array-like over the raw chunks of a zarr array in a namespace.

    Reading a region inside one chunk returns a read-only view of the mapped
    segment (no decode, no copy); a region across chunks is assembled from
    such views. Chunks are read through the namespace's keyspace, so spilled
    chunks of a tiered namespace read like the others, and a destroyed
    namespace is an error, never fill values. Pickles as names and shapes
    only: the namespace is reopened by name in the process that reads
    (PITFALLS 12).

    Use :meth:`of` to make one: it returns ``None`` unless the array's chunks
    are stored raw (a lone ``bytes`` codec, fixed-size dtype, no sharding).
    """

    def __init__(
        self,
        root: str,
        namespace: str,
        path: str,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        dtype: np.dtype[Any],
        fill_value: Any,
        key_encoding: Any,
    ) -> None:
        self.root = root
        self.namespace = namespace
        self.path = path
        self.shape = shape
        self.chunks = chunks
        self.dtype = dtype
        self.ndim = len(shape)
        self.fill_value = fill_value
        self.key_encoding = key_encoding
        self._ks: Keyspace | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ks"] = None  # reopened by name where it is read
        return state

    def _keyspace(self) -> Keyspace:
        ks = self._ks
        if ks is None:
            ks = self._ks = Keyspace(self.namespace, resolve_root(self.root), read_only=True)
        return ks

    @classmethod
    def of(cls, z: zarr.Array, root: str, namespace: str) -> RawChunks | None:
        """Return a raw reader of *z*, or ``None`` if its chunks are encoded."""
        from zarr.codecs import BytesCodec

        meta = z.metadata
        codecs = getattr(meta, "codecs", ())
        if getattr(meta, "zarr_format", None) != 3 or len(codecs) != 1:
            return None
        codec = codecs[0]
        dtype = np.dtype(z.dtype)
        if not isinstance(codec, BytesCodec) or dtype.kind not in "biufcmM":
            return None
        endian = getattr(codec.endian, "value", codec.endian)
        if dtype.itemsize > 1:
            dtype = dtype.newbyteorder("<" if endian == "little" else ">")
        return cls(
            root,
            namespace,
            z.path,
            tuple(z.shape),
            tuple(z.chunks),
            dtype,
            meta.fill_value,
            meta.chunk_key_encoding,
        )

    def chunk(self, coords: tuple[int, ...]) -> np.ndarray:
        """The full chunk at grid *coords*: a read-only view of its segment."""
        key = self.key_encoding.encode_chunk_key(coords)
        if self.path:
            key = f"{self.path}/{key}"
        view = self._keyspace().get(key)
        if view is None:  # never written: zarr's fill value
            out = np.full(self.chunks, self.fill_value, dtype=self.dtype)
            out.flags.writeable = False
            return out
        if len(view) != math.prod(self.chunks) * self.dtype.itemsize:
            raise ValueError(
                f"chunk {key!r} of namespace {self.namespace!r} holds {len(view)} bytes, not "
                f"the {math.prod(self.chunks) * self.dtype.itemsize} of a raw {self.chunks} "
                f"{self.dtype} chunk; read it through zarr instead"
            )
        return np.frombuffer(view, dtype=self.dtype).reshape(self.chunks)

    def __getitem__(self, sel: Any) -> np.ndarray:
        sel = sel if isinstance(sel, tuple) else (sel,)
        if any(s is Ellipsis for s in sel):
            i = sel.index(Ellipsis)
            sel = sel[:i] + (slice(None),) * (self.ndim - len(sel) + 1) + sel[i + 1 :]
        sel = sel + (slice(None),) * (self.ndim - len(sel))
        if len(sel) != self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-d array: {sel!r}")
        bounds: list[tuple[int, int]] = []
        squeeze = []
        for axis, (s, n) in enumerate(zip(sel, self.shape, strict=True)):
            if isinstance(s, (int, np.integer)):
                i = int(s) + n if s < 0 else int(s)
                if not 0 <= i < n:
                    raise IndexError(f"index {s} is out of bounds for axis {axis} of size {n}")
                bounds.append((i, i + 1))
                squeeze.append(axis)
            elif isinstance(s, slice) and s.indices(n)[2] == 1:
                start, stop, _ = s.indices(n)
                bounds.append((start, max(start, stop)))
            else:
                return self._through_zarr(sel)
        out = self._region(bounds)
        return out.reshape([b - a for i, (a, b) in enumerate(bounds) if i not in squeeze])

    def _region(self, bounds: list[tuple[int, int]]) -> np.ndarray:
        shape = [b - a for a, b in bounds]
        if 0 in shape:
            return np.empty(shape, dtype=self.dtype)
        first = [a // c for (a, _), c in zip(bounds, self.chunks, strict=True)]
        last = [(b - 1) // c for (_, b), c in zip(bounds, self.chunks, strict=True)]
        if first == last:  # inside one chunk: a view, the common case for dask tasks
            chunk = self.chunk(tuple(first))
            return chunk[
                tuple(
                    slice(a - i * c, b - i * c)
                    for (a, b), i, c in zip(bounds, first, self.chunks, strict=True)
                )
            ]
        out = np.empty(shape, dtype=self.dtype)
        for coords in itertools.product(
            *(range(f, t + 1) for f, t in zip(first, last, strict=True))
        ):
            src, dst = [], []
            for (a, b), i, c in zip(bounds, coords, self.chunks, strict=True):
                lo, hi = max(a, i * c), min(b, (i + 1) * c)
                src.append(slice(lo - i * c, hi - i * c))
                dst.append(slice(lo - a, hi - a))
            out[tuple(dst)] = self.chunk(coords)[tuple(src)]
        return out

    def _through_zarr(self, sel: tuple[Any, ...]) -> np.ndarray:
        import zarr

        store = open_store(f"shm://{self.namespace}", root=self.root, read_only=True)
        return zarr.open_array(store, path=self.path, mode="r")[sel]


def _shape(chunks: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    return tuple(sum(c) for c in chunks)


def _regular(chunks: tuple[tuple[int, ...], ...]) -> bool:
    """Whether dask *chunks* fit a zarr grid: equal blocks, the last one no larger."""
    return all(len(set(c[:-1])) <= 1 and c[-1] <= c[0] for c in chunks if c)


def persist(
    x: da.Array | ArrayLike,
    url: str,
    *,
    chunks: Any = None,
    overwrite: bool = False,
    compressors: Any = None,
    filters: Any = None,
    root: str | os.PathLike[str] | None = None,
    **compute_kwargs: Any,
) -> da.Array:
    """Write *x* into shared memory at *url* and return a dask array that reads it.

    Parameters
    ----------
    x
        A dask array (computed by the current scheduler, its workers writing),
        or a NumPy array or anything ``numpy.asarray`` takes (written from this
        process, without a graph carrying its bytes anywhere).
    url
        ``shm://<namespace>/<name>``: the namespace (created if missing) and
        the array's path inside it (``""`` for the namespace's root array).
    chunks
        Chunks of the stored array (dask's notation; default: *x*'s chunks, or
        dask's ``"auto"`` for a NumPy array). Irregular chunks (which zarr
        cannot store) are made regular with the largest block of each axis.
    overwrite
        Replace an existing array at *url*; otherwise zarr refuses to.
    compressors
        zarr compressors of the stored chunks (``zarr.codecs.ZstdCodec()``, ...).
        ``None`` (the default) stores them raw: the array takes its full size in
        shared memory (``x.nbytes``, rounded up to whole pages per chunk), once
        for the host however many processes read it, and reads map the
        segments without decoding or copying. With a compressor the namespace
        is smaller, but every reading process decodes each chunk into memory
        of its own: N readers hold N decoded copies, besides the decode time.
    filters
        zarr filters (array-to-array codecs); ``None`` (the default): none.
        Any filter also makes reads go through zarr's decoding.
    root
        Shared-memory directory (default ``$SHMSTORE_ROOT``, else ``/dev/shm``).
    **compute_kwargs
        Passed to ``dask.array.store`` when computing (``scheduler=``, ...);
        with a ``distributed`` client active, its workers do the writing.

    Returns
    -------
    dask.array.Array
        An array with the same values, shape, dtype and (regular) chunks,
        reading from shared memory. Its graph holds the store's name, never
        chunk bytes: it pickles small and every process maps the same pages.
        With raw chunks (the default), its chunks are read-only views of the
        segments; write results to a new array rather than in place.

    Examples
    --------
    >>> import dask.array as da, shmstore
    >>> x = da.arange(1_000, chunks=100)
    >>> y = shmstore.persist(x, "shm://doc-persist/x")
    >>> int(y.sum().compute())
    499500
    >>> shmstore.open_store("shm://doc-persist").destroy()
    """
    import dask.array as da
    import zarr
    from dask.array.core import normalize_chunks
    from dask.base import tokenize

    namespace, path = split_url(url)
    in_memory = not isinstance(x, da.Array)
    if in_memory:
        # Written from this process: a graph would carry the bytes to the
        # workers (a distributed client may be active), which is what
        # persisting into shared memory avoids.
        data = np.asarray(x)
        grid = normalize_chunks("auto" if chunks is None else chunks, data.shape, dtype=data.dtype)
    else:
        if chunks is not None:
            x = x.rechunk(chunks)
        grid = x.chunks
    if not _regular(grid):
        grid = normalize_chunks(tuple(max(c, default=0) for c in grid), _shape(grid))
        if not in_memory:
            x = x.rechunk(grid)
    shape = _shape(grid)
    store = open_store(f"shm://{namespace}", root=root)
    z = zarr.create_array(
        store,
        name=path or None,
        shape=shape,
        chunks=tuple(max(max(c, default=1), 1) for c in grid),
        dtype=data.dtype if in_memory else x.dtype,
        compressors=compressors,
        filters=filters,
        overwrite=overwrite,
    )
    if in_memory:
        z[...] = data
        name = f"shm-persist-{uuid.uuid4().hex}"
    else:
        da.store(x, z, lock=False, compute=True, **compute_kwargs)
        # The name follows what was stored, so equal inputs give equal keys.
        name = f"shm-persist-{tokenize(x.name, store.root, namespace, path)}"
    raw = RawChunks.of(z, store.root, namespace)
    if raw is None:  # encoded chunks (compressors= or filters=): zarr decodes them
        return da.from_zarr(z, chunks=grid, name=name)
    meta = np.empty((0,) * len(shape), dtype=raw.dtype)
    return da.from_array(raw, chunks=grid, name=name, asarray=False, fancy=False, meta=meta)
