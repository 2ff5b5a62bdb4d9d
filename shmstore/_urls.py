"""``shm://`` URLs: parsing, and :func:`open_store`, the fast route for zarr.

``zarr.open_array("shm://ns/t")`` goes through zarr's ``FsspecStore`` and
:class:`~shmstore.SharedMemoryFileSystem`; :func:`open_store` hands zarr the
:class:`~shmstore.SharedMemoryStore` itself, which skips fsspec's path handling
and uses zarr's synchronous store surface where zarr has one. Both read the
same segments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmstore._locations import as_store
from shmstore._names import SCHEME, split_url
from shmstore._store import SharedMemoryStore

if TYPE_CHECKING:
    from zarr.abc.store import Store

__all__ = ["open_location", "open_store"]


def open_store(
    url: str, *, storage_options: dict[str, Any] | None = None, **kwargs: Any
) -> SharedMemoryStore:
    """Open the namespace of a ``shm://<namespace>`` URL as a :class:`SharedMemoryStore`.

    This is the fast route to hand zarr: ``zarr.open_array(open_store("shm://ns"),
    path="t")`` reads the same data as ``zarr.open_array("shm://ns/t")`` without
    fsspec in between.

    Parameters
    ----------
    url
        ``shm://<namespace>``. A path after the namespace is refused (zarr
        takes it as ``path=``), so a URL never silently means less than it says.
    storage_options
        Options as zarr and fsspec take them for ``shm://`` URLs (``root``,
        ``mode``); merged with *kwargs*.
    **kwargs
        Passed to :class:`SharedMemoryStore` (``root``, ``read_only``,
        ``scoped``, ``mode``).

    Raises
    ------
    ValueError
        If *url* is not ``shm://<namespace>``.
    FileNotFoundError
        If *read_only* and the namespace does not exist.

    Examples
    --------
    >>> import zarr, shmstore
    >>> store = shmstore.open_store("shm://doc-urls")
    >>> z = zarr.create_array(store, name="t", shape=(4,), dtype="i4")
    >>> zarr.open_array(shmstore.open_store("shm://doc-urls", read_only=True), path="t").shape
    (4,)
    >>> store.destroy()
    """
    namespace, path = split_url(url)
    if path:
        raise ValueError(
            f"URL {url!r} names {path!r} inside namespace {namespace!r}; open_store takes "
            f"the namespace only: zarr.open_array(shmstore.open_store('shm://{namespace}'), "
            f"path={path!r}) (or zarr.open_group(..., path={path!r}) for a group)"
        )
    options = {**(storage_options or {}), **kwargs}
    options.pop("asynchronous", None)  # an fsspec option; the store is async-native
    return SharedMemoryStore(namespace, **options)


def open_location(
    spec: Any, *, read_only: bool, storage_options: dict[str, Any] | None = None
) -> Store:
    """A zarr store for a store, a path, an fsspec URL or a ``shm://<namespace>`` URL.

    What ``save``/``load`` take at either end; see :func:`shmstore._locations.as_store`.
    """
    if isinstance(spec, str) and spec.startswith(SCHEME):
        return open_store(spec, read_only=read_only, storage_options=storage_options)
    return as_store(spec, read_only=read_only, storage_options=storage_options)
