"""``CachingStore``: a read-through host cache of any Zarr store in shared memory.

The first process on the host that reads a value copies it from the source
into a shared-memory namespace; every other process (and every later read)
maps it from there. This is what the workers of a Dask cluster on one host
want over object storage: one download per chunk per host instead of one per
worker.

Filling
-------
A miss takes a per-key ``flock`` on ``.shmstore/fill/<sha256 of the key>``
(the kernel releases it if the holder dies), looks again, and only then reads
the source and installs the value with an exclusive link. Concurrent readers
of one key, in any processes, therefore fetch it once; readers of different
keys never wait for each other. The lock file is removed by its holder once
the value is in place; a waiter that finds its lock file unlinked retries on
a fresh one. Synchronous readers block in ``flock``; coroutines poll it
(0.5 ms, doubling to 20 ms) so that they never block the event loop nor park
in executor threads.

Capacity and eviction
---------------------
Bytes cached are accounted as in tiering (:class:`shmstore._usage.Usage`,
shared by every process). A fill that does not fit evicts the values with the
oldest access time first, down to 90 % of the capacity so that a full cache
does not walk the namespace on every fill. Hits set the access time (only
it: the modification time, which readers use to detect replaced values, is
kept) at most once per second per key and process, so recency costs no
syscall on most hits. A value larger than the whole capacity, or one that
meets a full tmpfs, is served without being cached.

Consistency
-----------
The source is taken to be immutable while it is cached: a value is fetched
once and served until it is evicted or :meth:`CachingStore.clear_cache` is
called. Listing, ``exists`` for uncached keys and ``getsize`` ask the source.
A process on another host has its own cache and sees the source as it is when
it first reads each value.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype

from shmstore._errors import SharedMemoryFullError
from shmstore._keyspace import Keyspace
from shmstore._locations import as_store, describe_store, get_sync, has_sync, to_buffer
from shmstore._names import check_name, resolve_root
from shmstore._usage import Usage, parse_capacity

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from zarr.abc.store import ByteRequest
    from zarr.core.buffer import BufferPrototype

__all__ = ["CachingStore"]

logger = logging.getLogger(__name__)

#: A hit refreshes a value's access time at most this often (seconds) per process.
TOUCH_INTERVAL = 1.0
#: Eviction frees down to this fraction of the capacity.
LOW_WATERMARK = 0.9


def _source_id(store: Store) -> str:
    """A name for the source that every process computes alike."""
    try:
        return describe_store(store)["url"]
    except ValueError:
        return str(store)


class CachingStore(Store):
    """A read-only Zarr store that caches another store's values in shared memory.

    Every process on the host that opens a ``CachingStore`` over the same
    source shares one cached copy of each value: the first reader fetches it
    from the source, the others map it from shared memory (zero copy).

    Parameters
    ----------
    source
        The store to cache: a zarr store, a local path, or a URL (``s3://...``,
        ``https://...``: anything fsspec opens). Only read.
    namespace
        The shared-memory namespace that holds the cache. Defaults to a name
        derived from the source's location (``cache-<16 hex digits>``), so
        processes that name the same source share the cache without agreeing
        on a name.
    capacity
        Bytes the cache may hold (an int or a string such as ``"8 GiB"``),
        recorded in the namespace; the least recently read values are evicted
        to make room. ``None``: what was recorded, else unbounded (a full tmpfs
        then only stops new values from being cached).
    root
        Shared-memory directory; see :class:`~shmstore.SharedMemoryStore`.
    storage_options
        fsspec options when *source* is a URL.

    Raises
    ------
    ValueError
        If the namespace already caches another source, or is not a cache.

    Examples
    --------
    >>> import zarr, shmstore
    >>> src = zarr.storage.MemoryStore()
    >>> _ = zarr.create_array(src, name="t", shape=(4,), dtype="i4")
    >>> cache = shmstore.CachingStore(src, namespace="doc-cache", capacity="64 MiB")
    >>> zarr.open_array(cache, path="t", mode="r").shape
    (4,)
    >>> cache.destroy()
    """

    supports_writes: bool = False
    supports_deletes: bool = False
    # zarr < 3.1.3 declares partial writes abstract; zarr no longer makes them.
    supports_partial_writes: bool = False
    supports_listing: bool = True

    _ks: Keyspace | None

    def __init__(
        self,
        source: Any,
        *,
        namespace: str | None = None,
        capacity: int | str | None = None,
        root: str | os.PathLike[str] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(read_only=True)
        self.source = as_store(source, read_only=True, storage_options=storage_options)
        self.source_id = _source_id(self.source)
        if namespace is None:
            digest = hashlib.sha256(self.source_id.encode("utf-8", "surrogateescape"))
            namespace = f"cache-{digest.hexdigest()[:16]}"
        self.namespace = check_name(namespace)
        self._root_arg = None if root is None else os.fspath(root)
        self.root = resolve_root(root)
        self._capacity_arg = parse_capacity(capacity)
        self.capacity: int | None = self._capacity_arg
        self._ks = None
        self._usage: Usage | None = None
        self._touched: dict[str, float] = {}
        self._handle()  # fail early: a namespace that caches something else

    # ---------------------------------------------------------------- setup
    def _handle(self) -> Keyspace:
        ks = self._ks
        if ks is None:
            # A cache may always (re)create its namespace: it holds nothing
            # that cannot be fetched again.
            ks = Keyspace(self.namespace, self.root, create=True)
            self.capacity = self._configure(ks)
            self._ks = ks
        if self._usage is None or self._usage.ns is not ks.ns:
            self._usage = Usage(ks.ns)  # a new namespace (destroyed and made again)
        return ks

    def _configure(self, ks: Keyspace) -> int | None:
        """Check (and record) that the namespace caches this source; return the capacity."""
        with ks.ns.editing_meta() as meta:
            record = meta.get("cache")
            if record is None:
                if meta.get("tiering") is not None or ks.list_prefix(""):
                    raise ValueError(
                        f"namespace {self.namespace!r} holds data and is not a cache; "
                        "pass another namespace= (or none, for a name from the source)"
                    )
                record = {"source": self.source_id, "capacity": None}
            elif record.get("source") != self.source_id:
                raise ValueError(
                    f"namespace {self.namespace!r} caches {record.get('source')!r}, not "
                    f"{self.source_id!r}; pass another namespace= (or none, for a name "
                    "derived from the source)"
                )
            capacity = self._capacity_arg
            if capacity is None:
                capacity = record.get("capacity")
            meta["cache"] = {"source": self.source_id, "capacity": capacity}
        return capacity

    # ------------------------------------------------------------- identity
    def with_read_only(self, read_only: bool = True) -> CachingStore:
        # docstring inherited
        if not read_only:
            raise ValueError(
                "a CachingStore is read-only; write to its source store instead "
                "(and call clear_cache() so the host sees the new values)"
            )
        return type(self)(self.source, namespace=self.namespace, root=self._root_arg)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CachingStore)
            and self.namespace == other.namespace
            and self.root == other.root
            and self.source == other.source
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.root, self.namespace))

    def __str__(self) -> str:
        # fsspec's notation for a caching layer over a URL (``simplecache::s3://...``)
        return f"shmcache::{self.source}"

    def __repr__(self) -> str:
        return f"CachingStore({str(self.source)!r}, namespace={self.namespace!r})"

    def __getstate__(self) -> dict[str, Any]:
        # The source store pickles as itself; the cache travels as its name, and
        # its root only if one was given (else the unpickling host resolves it).
        return {"source": self.source, "namespace": self.namespace, "root": self._root_arg}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.source = state["source"]
        self.source_id = _source_id(self.source)
        self.namespace = state["namespace"]
        self._root_arg = state["root"]
        self.root = resolve_root(self._root_arg)
        self._read_only = True
        self._is_open = False
        self._capacity_arg = None
        self.capacity = None
        self._ks = None
        self._usage = None
        self._touched = {}

    @property
    def _supports_sync_io(self) -> bool:
        # zarr >= 3.4: take the synchronous fast path only if a miss can too.
        return has_sync(self.source, "get_sync")

    # ------------------------------------------------------------- lifetime
    def clear_cache(self) -> None:
        """Drop every cached value on the host (after the source changed, say)."""
        ks = self._handle()
        with self._usage.locked() as st:  # type: ignore[union-attr]
            ks.clear()
            st.used = ks.ns.value_bytes()
        self._touched.clear()

    def destroy(self) -> None:
        """Unlink the cache namespace (the source is untouched)."""
        self._handle().destroy()
        self._ks = None
        self._usage = None

    @property
    def cached_bytes(self) -> int:
        """Bytes the cache holds now, host-wide."""
        self._handle()
        return self._usage.used()  # type: ignore[union-attr]

    # -------------------------------------------------------------- filling
    def _hit(self, ks: Keyspace, key: str) -> memoryview | None:
        view = ks.get(key)
        if view is not None and self.capacity is not None:
            self._touch(ks, key)
        return view

    def _touch(self, ks: Keyspace, key: str) -> None:
        now = time.monotonic()
        last = self._touched.get(key)
        if last is not None and now - last < TOUCH_INTERVAL:
            return
        if len(self._touched) > 1 << 16:
            self._touched.clear()
        self._touched[key] = now
        ks.ns.touch(key)

    async def _lock_async(self, ks: Keyspace, key: str) -> int:
        """Take the fill lock of *key* without blocking the event loop.

        Polls (0.5 ms, doubling to 20 ms) rather than blocking in a worker
        thread: waiters parked in threads could take every thread of the
        executor that the holder needs to read its source, and a cancelled
        wait would leave its thread holding the lock.
        """
        delay = 0.0005
        while (fd := ks.ns.lock_key(key, blocking=False)) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
        return fd

    def _admit(self, ks: Keyspace, key: str, value: Buffer) -> memoryview:
        """Cache *value* under *key* (fill lock held); return a view of it."""
        data = value.as_numpy_array()
        n = data.nbytes
        cap = self.capacity
        usage = self._usage
        assert usage is not None
        if cap is not None and n > cap:
            return memoryview(data)

        def room(st: Any, delta: int) -> bool:
            if cap is None or st.used + st.pending + delta <= cap:
                return True
            usage.heal(st)  # dead fillers' reservations, drift from kills
            taken = st.used + st.pending
            if taken + delta > cap:
                st.used -= self._evict(ks, taken + delta - int(cap * LOW_WATERMARK))
            return st.used + st.pending + delta <= cap

        try:
            placed, _ = usage.write(key, data, exclusive=True, room=room)
        except SharedMemoryFullError:
            logger.debug("tmpfs full: %r of %s served uncached", key, self.namespace)
            return memoryview(data)
        if not placed:
            return memoryview(data)
        view = ks.get(key)
        return memoryview(data) if view is None else view

    def _evict(self, ks: Keyspace, need: int) -> int:
        """Delete the least recently read values until *need* bytes are free (lock held)."""
        entries = sorted((st.st_atime_ns, st.st_size, key) for key, st in ks.ns.value_stats())
        freed = 0
        for _, size, key in entries:
            if freed >= need:
                break
            if ks.delete(key):
                freed += size
        return freed

    # ---------------------------------------------------------------- reads
    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Synchronous :meth:`get` (zarr's ``SupportsGetSync``)."""
        ks = self._handle()
        view = self._hit(ks, key)
        if view is None:
            fd = ks.ns.lock_key(key)
            assert fd is not None
            try:
                view = ks.get(key)
                if view is None:
                    value = get_sync(self.source, key, default_buffer_prototype(), None)
                    if value is None:
                        return None
                    view = self._admit(ks, key, value)
            finally:
                ks.ns.unlock_key(key, fd)
        return to_buffer(view, prototype, byte_range)

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        if not self._is_open:
            await self._open()
        ks = self._handle()
        view = self._hit(ks, key)
        if view is None:
            fd = await self._lock_async(ks, key)
            try:
                view = ks.get(key)
                if view is None:
                    value = await self.source.get(key, default_buffer_prototype())
                    if value is None:
                        return None
                    view = self._admit(ks, key, value)
            finally:
                ks.ns.unlock_key(key, fd)
        return to_buffer(view, prototype, byte_range)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        # docstring inherited
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        # docstring inherited
        if self._handle().exists(key):
            return True
        return await self.source.exists(key)

    async def getsize(self, key: str) -> int:
        # docstring inherited
        st = self._handle().stat(key)
        if st is not None and st[0] == "file":
            return st[1]
        return await self.source.getsize(key)

    async def list(self) -> AsyncIterator[str]:
        # docstring inherited
        async for key in self.source.list():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        async for key in self.source.list_prefix(prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        async for name in self.source.list_dir(prefix):
            yield name

    # --------------------------------------------------------------- writes
    def set_sync(self, key: str, value: Buffer) -> None:
        """Refused: the cache is read-only."""
        self._check_writable()

    def delete_sync(self, key: str) -> None:
        """Refused: the cache is read-only."""
        self._check_writable()

    async def set(self, key: str, value: Buffer) -> None:
        # docstring inherited
        self._check_writable()

    async def delete(self, key: str) -> None:
        # docstring inherited
        self._check_writable()

    async def set_partial_values(
        self, key_start_values: Iterable[tuple[str, int, bytes | bytearray | memoryview]]
    ) -> None:
        """Not supported (``supports_partial_writes`` is false); the cache is read-only."""
        raise NotImplementedError(
            f"{type(self).__name__} does not support partial writes; it is a read-only cache"
        )

    def _check_writable(self) -> None:
        # ValueError, as zarr's own read-only stores raise.
        raise ValueError(
            f"{self!r} is a read-only cache; write to its source store instead "
            "(then call clear_cache() so the host sees the new values)"
        )
