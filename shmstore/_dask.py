"""Dask on shared memory: :func:`persist` a dask array into a ``shm://`` namespace.

Dask itself needs nothing from shmstore to use shared memory:
``da.from_zarr("shm://ns/t")`` and ``x.to_zarr("shm://ns/t")`` work through
the ``shm`` fsspec protocol. :func:`persist` is the one-call version of "write
this array into shared memory, then read it from there", what one does before
fanning work out to process workers: every task then carries the namespace's
name and a chunk index, never chunk bytes (PITFALLS 12), and every worker
process on the host maps the same pages.

dask is imported when :func:`persist` is first called, not with shmstore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmstore._urls import open_store, split_url

if TYPE_CHECKING:
    import os

    import dask.array as da
    from numpy.typing import ArrayLike

__all__ = ["persist"]


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
    root: str | os.PathLike[str] | None = None,
    **compute_kwargs: Any,
) -> da.Array:
    """Write *x* into shared memory at *url* and return a dask array that reads it.

    Parameters
    ----------
    x
        A dask array, or anything ``dask.array.asarray`` takes (a NumPy array).
    url
        ``shm://<namespace>/<name>``: the namespace (created if missing) and
        the array's path inside it (``""`` for the namespace's root array).
    chunks
        Rechunk *x* to this first. Irregular chunks (which zarr cannot store)
        are made regular with the largest block of each axis.
    overwrite
        Replace an existing array at *url*; otherwise zarr refuses to.
    compressors
        zarr compressors of the stored chunks. ``None`` (the default) stores
        them raw, so reads map the segments without decoding or copying.
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
    from dask.base import tokenize

    namespace, path = split_url(url)
    x = da.asarray(x)
    if chunks is not None:
        x = x.rechunk(chunks)
    if not _regular(x.chunks):
        x = x.rechunk(x.chunksize)
    store = open_store(f"shm://{namespace}", root=root)
    z = zarr.create_array(
        store,
        name=path or None,
        shape=x.shape,
        chunks=x.chunksize if x.size else None,
        dtype=x.dtype,
        compressors=compressors,
        overwrite=overwrite,
    )
    da.store(x, z, lock=False, compute=True, **compute_kwargs)
    # The name follows what was stored, so equal inputs give equal keys.
    name = f"shm-persist-{tokenize(x.name, store.root, namespace, path)}"
    return da.from_zarr(z, chunks=x.chunks, name=name)
