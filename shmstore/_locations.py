"""Other zarr stores: open a location (path, URL, store), describe it, call it from sync code.

A spill tier, the source of a host cache and the two ends of ``save``/``load``
are zarr stores that are not shared memory. This module turns what a user
passes (a path, an fsspec URL, a store) into a store, describes it in JSON so
that another process reopens the same location by name, and bridges the
synchronous core of the keyspace to stores whose methods are coroutines.
See docs/design.md ("Tiering").
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any

from zarr.abc.store import (
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.storage import FsspecStore, LocalStore

from shmstore._names import SCHEME

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from zarr.abc.store import ByteRequest
    from zarr.core.buffer import BufferPrototype

__all__ = [
    "as_store",
    "call_sync",
    "describe_store",
    "get_sync",
    "has_sync",
    "local_path",
    "slice_view",
    "supports_sync",
    "to_buffer",
]


def as_store(spec: Any, *, read_only: bool, storage_options: dict[str, Any] | None = None) -> Store:
    """Return a Zarr store for a store, a local path or an fsspec URL.

    Parameters
    ----------
    spec
        A ``zarr.abc.store.Store`` (returned as is), a path (``str`` or
        ``os.PathLike``, ``file://`` URLs included: a ``LocalStore``) or any
        other fsspec URL (an ``FsspecStore``). ``shm://`` URLs are opened one
        layer up (``shmstore._urls.open_location``).
    read_only
        Open read-only (only for stores this function creates).
    storage_options
        fsspec options for URLs.
    """
    if isinstance(spec, Store):
        return spec
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise TypeError(
            f"expected a zarr store, a path or a URL, got {type(spec).__name__}: {spec!r}"
        )
    if spec.startswith(SCHEME):
        raise ValueError(
            f"{spec!r} is shared memory, not an on-disk location; pass a directory or "
            "a URL such as s3://bucket/data.zarr"
        )
    if spec.startswith("file://") and not storage_options:
        spec = spec.removeprefix("file://")
    elif "://" in spec or "::" in spec:
        return FsspecStore.from_url(spec, storage_options=storage_options, read_only=read_only)
    if storage_options:
        raise ValueError(f"storage_options only apply to URLs, not to the path {spec!r}")
    return LocalStore(os.path.abspath(os.path.expanduser(spec)), read_only=read_only)


def describe_store(store: Store) -> dict[str, Any]:
    """Return a JSON description from which another process reopens *store*.

    Raises
    ------
    ValueError
        For stores that another process cannot reopen from a description
        (``MemoryStore`` and other process-local stores).
    """
    if isinstance(store, LocalStore):
        return {"url": os.path.abspath(os.fspath(store.root))}
    if isinstance(store, FsspecStore):
        fs = getattr(store.fs, "sync_fs", store.fs)  # AsyncFileSystemWrapper
        options = {k: v for k, v in fs.storage_options.items() if k != "asynchronous"}
        try:
            json.dumps(options)
        except TypeError as e:
            raise ValueError(
                f"the storage options of {store!r} cannot be recorded in the namespace "
                f"({e}); pass options that are plain JSON"
            ) from e
        return {"url": fs.unstrip_protocol(store.path), "storage_options": options}
    raise ValueError(
        f"cannot record {store!r} as a spill store: other processes must be able to "
        "reopen it by name; pass a directory path, a URL, a LocalStore or an FsspecStore"
    )


def reopen(description: dict[str, Any], *, read_only: bool) -> Store:
    """The store that :func:`describe_store` described."""
    return as_store(
        description["url"],
        read_only=read_only,
        storage_options=description.get("storage_options") or None,
    )


def local_path(store: Store, key: str) -> str | None:
    """The file that holds *key* in *store* if it is a local directory, else ``None``."""
    if isinstance(store, LocalStore):
        return os.path.join(os.path.abspath(os.fspath(store.root)), key)
    return None


def is_empty(store: Store) -> bool:
    """Whether *store* surely holds no keys (only checked for local stores)."""
    if isinstance(store, LocalStore):
        try:
            with os.scandir(store.root) as it:
                return next(it, None) is None
        except FileNotFoundError:
            return True
    return False


# ---------------------------------------------------------------- sync bridge
def has_sync(store: Store, method: str) -> bool:
    # zarr >= 3.4: wrapper stores say at run time whether their sync surface works.
    return callable(getattr(store, method, None)) and bool(
        getattr(store, "_supports_sync_io", True)
    )


def supports_sync(store: Store) -> bool:
    """Whether *store* has the whole synchronous surface (zarr's ``*_sync``)."""
    return all(has_sync(store, m) for m in ("get_sync", "set_sync", "delete_sync"))


def _run_sync(coro: Coroutine[Any, Any, Any], store: Store, method: str) -> Any:
    """Run a coroutine of *store* from synchronous code, on zarr's own loop.

    Inside a running loop, blocking on a coroutine could wait on this very
    loop, so that is refused with an error that says what to do (the faces
    call the keyspace from a worker thread there).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        from zarr.core.sync import sync

        return sync(coro)
    coro.close()
    raise RuntimeError(
        f"{store!r} has no synchronous {method}() and an event loop is running in this "
        f"thread; call the async API here (await store.{method}(...))"
    )


def call_sync(store: Store, method: str, *args: Any) -> Any:
    """``store.<method>(*args)`` from synchronous code (its ``<method>_sync`` where it has one)."""
    sync_method = f"{method}_sync"
    if has_sync(store, sync_method):
        return getattr(store, sync_method)(*args)
    return _run_sync(getattr(store, method)(*args), store, method)


def get_sync(
    store: Store, key: str, prototype: BufferPrototype | None, byte_range: ByteRequest | None
) -> Buffer | None:
    """``store.get`` from synchronous code."""
    prototype = prototype or default_buffer_prototype()
    if has_sync(store, "get_sync"):
        return store.get_sync(key, prototype=prototype, byte_range=byte_range)  # type: ignore[attr-defined]
    return _run_sync(store.get(key, prototype, byte_range), store, "get")


def list_sync(store: Store, method: str, prefix: str) -> list[str]:
    """``[k async for k in store.<method>(prefix)]`` from synchronous code."""

    async def collect() -> list[str]:
        try:
            return [k async for k in getattr(store, method)(prefix)]
        except FileNotFoundError:
            return []  # a spill store never written to

    return _run_sync(collect(), store, method)


# --------------------------------------------------------------- byte ranges
def slice_view(view: memoryview, byte_range: ByteRequest | None) -> memoryview:
    """*view* cut to a zarr byte request (zero copy)."""
    if byte_range is None:
        return view
    if isinstance(byte_range, RangeByteRequest):
        return view[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return view[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return view[max(0, len(view) - byte_range.suffix) :]
    raise TypeError(
        f"Unexpected byte_range, got {byte_range!r}; pass a zarr RangeByteRequest, "
        "OffsetByteRequest or SuffixByteRequest"
    )


def byte_request(start: int | None, end: int | None) -> ByteRequest | bool | None:
    """The zarr byte request of fsspec's ``[start:end]``; ``False`` if none fits (slice after)."""
    if start is None and end is None:
        return None
    if end is None:
        return OffsetByteRequest(start) if start >= 0 else SuffixByteRequest(-start)  # type: ignore[operator]
    if (start or 0) >= 0 and end >= 0:
        return RangeByteRequest(start or 0, end)
    return False


def to_buffer(
    view: memoryview, prototype: BufferPrototype | None, byte_range: ByteRequest | None
) -> Buffer:
    """Wrap a segment view as a zarr Buffer (zero copy), sliced to *byte_range*."""
    if prototype is None:
        prototype = default_buffer_prototype()
    return prototype.buffer.from_bytes(slice_view(view, byte_range))
