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
By default the source is taken to be immutable while it is cached: a value
is fetched once and served until it is evicted or
:meth:`CachingStore.clear_cache` is called. With ``expiry=`` seconds, a
cached value older than that (since it was fetched) is fetched again on its
next read, so readers see a changed source within *expiry* seconds. Listing,
``exists`` for uncached keys and ``getsize`` ask the source. A process on
another host has its own cache and sees the source as it is when it first
reads each value (docs/multihost.md).

Writes
------
``writes="through"`` writes each value to the source first, then to the
cache (under the key's fill lock, so a concurrent miss cannot install the
old value after it). ``writes="local-only"`` is a scratch tier: values
written go to this host's shared memory only, never to the source; its
namespace is ``scratch-<16 hex digits>`` (not ``cache-``) and never evicts,
so a scratch write that does not fit raises :class:`SharedMemoryFullError`
instead of being lost.

Counters
--------
Hits, misses, bytes fetched, expired refetches, evictions and writes are
counted host-wide in the bookkeeping file ``counters``
(:class:`shmstore._usage.CacheCounters`); misses are added at once, hits
in batches (at least once a second per process, and at exit).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import logging
import os
import time
import weakref
from typing import TYPE_CHECKING, Any

from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype

from shmstore._errors import SharedMemoryFullError
from shmstore._keyspace import Keyspace
from shmstore._locations import (
    as_store,
    call_sync,
    describe_store,
    get_sync,
    has_sync,
    to_buffer,
)
from shmstore._names import check_name, resolve_root
from shmstore._usage import CacheCounters, Usage, parse_capacity

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
#: Hits are added to the host-wide counters at least this often (seconds) per process.
COUNT_INTERVAL = 1.0
#: What ``writes=`` takes: None (read-only), or where a written value goes.
WRITE_MODES = (None, "through", "local-only")

# Caches of this process with hits not yet added to the host-wide counters.
_uncounted: weakref.WeakSet[CachingStore] = weakref.WeakSet()


@atexit.register
def flush_all_counters() -> None:
    for cache in list(_uncounted):
        cache.flush_counters()


def cache_namespace(source_id: str, *, scratch: bool = False) -> str:
    """The namespace a host cache of *source_id* takes when it is not named.

    ``cache-<16 hex digits of sha256(source_id)>`` (``scratch-...`` for a
    local-only scratch tier): the same in every process of every host.
    """
    digest = hashlib.sha256(source_id.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{'scratch' if scratch else 'cache'}-{digest}"


def _check_expiry(expiry: float | None) -> float | None:
    if expiry is None:
        return None
    if isinstance(expiry, bool) or not isinstance(expiry, int | float) or not expiry >= 0:
        raise ValueError(
            f"expiry={expiry!r} is not a number of seconds; pass one >= 0 (0: fetch "
            "on every read), or None to keep cached values until they are evicted"
        )
    return float(expiry)


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
        Resolved where the cache is used: a pickled cache carries it only if
        it was given.
    storage_options
        fsspec options when *source* is a URL.
    expiry
        Seconds a cached value is served before it is fetched again (``None``,
        the default: until it is evicted). Recorded in the namespace.
    writes
        ``None`` (default): read-only. ``"through"``: a write goes to the
        source, then to the cache. ``"local-only"``: a scratch tier, whose
        writes stay in this host's shared memory and never reach the source
        (namespace ``scratch-...``, never evicted, never expired).

    Raises
    ------
    ValueError
        If the namespace already caches another source, or is not a cache,
        or *expiry* or *writes* is not one of the values above.

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
        expiry: float | None = None,
        writes: str | None = None,
    ) -> None:
        if writes not in WRITE_MODES:
            raise ValueError(
                f"writes={writes!r} is not a write mode; pass None (read-only), "
                "'through' (to the source, then the cache) or 'local-only' (a scratch "
                "tier on this host)"
            )
        super().__init__(read_only=writes is None)
        self.writes = writes
        self.source = as_store(
            source, read_only=writes != "through", storage_options=storage_options
        )
        self.source_id = _source_id(self.source)
        if namespace is None:
            namespace = cache_namespace(self.source_id, scratch=self.scratch)
        self.namespace = check_name(namespace)
        self._root_arg = None if root is None else os.fspath(root)
        self.root = resolve_root(root)
        self._capacity_arg = parse_capacity(capacity)
        self.capacity: int | None = self._capacity_arg
        self._expiry_arg = _check_expiry(expiry)
        self.expiry: float | None = self._expiry_arg
        self._init_state()
        self._handle()  # fail early: a namespace that caches something else

    def _init_state(self) -> None:
        self._ks = None
        self._usage: Usage | None = None
        self._counters: CacheCounters | None = None
        self._touched: dict[str, float] = {}
        self._hits = 0
        self._counted_at = float("-inf")  # a process's first hit is counted at once

    @property
    def scratch(self) -> bool:
        """Whether this is a local-only scratch tier (``writes="local-only"``)."""
        return self.writes == "local-only"

    # ---------------------------------------------------------------- setup
    def _handle(self) -> Keyspace:
        ks = self._ks
        if ks is None:
            # A cache may always (re)create its namespace: it holds nothing
            # that cannot be fetched again.
            ks = Keyspace(self.namespace, self.root, create=True)
            self.capacity, self.expiry = self._configure(ks)
            self._ks = ks
        if self._usage is None or self._usage.ns is not ks.ns:
            self._usage = Usage(ks.ns)  # a new namespace (destroyed and made again)
            self._counters = CacheCounters(ks.ns)
        return ks

    def _configure(self, ks: Keyspace) -> tuple[int | None, float | None]:
        """Check (and record) that the namespace caches this source; return capacity, expiry."""
        with ks.ns.editing_meta() as meta:
            record = meta.get("cache")
            if record is None:
                if meta.get("tiering") is not None or ks.list_prefix(""):
                    raise ValueError(
                        f"namespace {self.namespace!r} holds data and is not a cache; "
                        "pass another namespace= (or none, for a name from the source)"
                    )
                record = {"source": self.source_id, "capacity": None, "scratch": self.scratch}
            elif record.get("source") != self.source_id:
                raise ValueError(
                    f"namespace {self.namespace!r} caches {record.get('source')!r}, not "
                    f"{self.source_id!r}; pass another namespace= (or none, for a name "
                    "derived from the source)"
                )
            if bool(record.get("scratch")) != self.scratch:
                kinds = ("a read-through cache", "a local-only scratch tier")
                raise ValueError(
                    f"namespace {self.namespace!r} is {kinds[bool(record.get('scratch'))]} "
                    f"of {self.source_id!r}, not {kinds[self.scratch]}; pass another "
                    "namespace= (or none, for a name derived from the source and the mode)"
                )
            capacity = self._capacity_arg
            if capacity is None:
                capacity = record.get("capacity")
            expiry = self._expiry_arg
            if expiry is None:
                expiry = record.get("expiry")
            meta["cache"] = {
                "source": self.source_id,
                "capacity": capacity,
                "expiry": expiry,
                "scratch": self.scratch,
            }
        # a scratch tier holds the only copy of what was written: it never expires
        return capacity, None if self.scratch else expiry

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
        return {
            "source": self.source,
            "namespace": self.namespace,
            "root": self._root_arg,
            "expiry": self._expiry_arg,
            "writes": self.writes,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.source = state["source"]
        self.source_id = _source_id(self.source)
        self.namespace = state["namespace"]
        self._root_arg = state["root"]
        self.root = resolve_root(self._root_arg)
        self.writes = state.get("writes")
        self._read_only = self.writes is None
        self._is_open = False
        self._capacity_arg = None
        self.capacity = None
        self._expiry_arg = state.get("expiry")
        self.expiry = self._expiry_arg
        self._init_state()

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

    def discard(self, prefix: str) -> None:
        """Drop the cached values of key *prefix* (one key, or all under it) on the host.

        The source is untouched; the next read of each fetches it again.
        """
        ks = self._handle()
        keys = ks.list_prefix(prefix.rstrip("/") + "/") if prefix else ks.list_prefix("")
        if prefix and ks.exists(prefix):
            keys.append(prefix)
        for key in keys:
            self._drop(ks, key)

    def destroy(self) -> None:
        """Unlink the cache namespace (the source is untouched)."""
        self._handle().destroy()
        _uncounted.discard(self)
        self._init_state()

    def flush_counters(self) -> None:
        """Add this process's hits not yet counted to the host-wide counters."""
        hits, self._hits = self._hits, 0
        self._counted_at = time.monotonic()
        _uncounted.discard(self)
        if hits and self._counters is not None:
            with contextlib.suppress(OSError):  # the namespace was destroyed meanwhile
                self._counters.add(hits=hits)

    def stats(self) -> dict[str, Any]:
        """The host-wide counters of this cache, with its size and settings.

        Returns
        -------
        dict
            ``hits``, ``misses`` (source reads), ``bytes_fetched``, ``expired``
            (values fetched again after *expiry*), ``evictions``, ``writes``,
            and ``cached_bytes``, ``capacity``, ``expiry``, ``namespace``,
            ``root``, ``source``.
        """
        self._handle()
        flush_all_counters()  # every cache of this process: they may share the namespace
        counts: dict[str, Any] = self._counters.read()  # type: ignore[union-attr]
        counts.update(
            cached_bytes=self.cached_bytes,
            capacity=self.capacity,
            expiry=self.expiry,
            namespace=self.namespace,
            root=self.root,
            source=self.source_id,
        )
        return counts

    def _count(self, **deltas: int) -> None:
        if self._counters is not None:
            self._counters.add(**deltas)

    @property
    def cached_bytes(self) -> int:
        """Bytes the cache holds now, host-wide."""
        self._handle()
        return self._usage.used()  # type: ignore[union-attr]

    # -------------------------------------------------------------- filling
    def _hit(self, ks: Keyspace, key: str) -> memoryview | None:
        view = ks.get(key)
        if view is None or self._stale(ks, key):
            return None
        if self.capacity is not None:
            self._touch(ks, key)
        self._note_hit()
        return view

    def _note_hit(self) -> None:
        self._hits += 1
        if self._hits == 1:
            _uncounted.add(self)
        if time.monotonic() - self._counted_at >= COUNT_INTERVAL:
            self.flush_counters()

    def _stale(self, ks: Keyspace, key: str) -> bool:
        """Whether the cached value of *key* is older than *expiry* (one ``lstat``)."""
        if self.expiry is None:
            return False
        st = ks.ns.lstat(key)
        return st is None or time.time() - st.st_mtime >= self.expiry

    def _refill(self, ks: Keyspace, key: str) -> tuple[memoryview | None, bool]:
        """Under the fill lock: the value another process filled meanwhile, and whether
        a value is cached but stale."""
        view = ks.get(key)
        if view is None:
            return None, False
        if self._stale(ks, key):
            return None, True
        self._note_hit()  # another reader fetched it while this one waited
        return view, False

    def _fetched(self, ks: Keyspace, key: str, value: Buffer | None, stale: bool) -> Any:
        """Under the fill lock: count a source read and cache its *value*."""
        if value is None:
            self._count(misses=1)
            if stale:
                self._drop(ks, key)  # gone from the source
            return None
        n = len(value)
        if stale:
            self._count(misses=1, bytes_fetched=n, expired=1)
        else:
            self._count(misses=1, bytes_fetched=n)
        return self._admit(ks, key, value, replace=stale)

    def _drop(self, ks: Keyspace, key: str) -> None:
        """Remove the cached value of *key*, keeping the byte count right."""
        usage = self._usage
        assert usage is not None
        with usage.locked() as st:
            old = ks.ns.lstat(key)
            if old is not None and ks.delete(key):
                st.used -= old.st_size

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

    def _admit(self, ks: Keyspace, key: str, value: Buffer, *, replace: bool = False) -> memoryview:
        """Cache *value* under *key* (fill lock held); return a view of it.

        A value that does not fit is served uncached, except in a scratch tier,
        which holds the only copy: there it raises :class:`SharedMemoryFullError`.
        """
        data = value.as_numpy_array()
        n = data.nbytes
        cap = self.capacity
        usage = self._usage
        assert usage is not None
        scratch = self.scratch

        def full(available: int) -> memoryview:
            if scratch:
                raise SharedMemoryFullError(self.namespace, n, max(0, available), self.root)
            return memoryview(data)

        if cap is not None and n > cap:
            return full(cap)

        def room(st: Any, delta: int) -> bool:
            if cap is None or st.used + st.pending + delta <= cap:
                return True
            usage.heal(st)  # dead fillers' reservations, drift from kills
            taken = st.used + st.pending
            if taken + delta > cap and not scratch:  # a scratch tier never evicts
                freed, evicted = self._evict(ks, taken + delta - int(cap * LOW_WATERMARK))
                st.used -= freed
                if evicted:
                    self._count(evictions=evicted)
            return st.used + st.pending + delta <= cap

        try:
            placed, _ = usage.write(key, data, exclusive=not replace, room=room)
        except SharedMemoryFullError:
            if scratch:
                raise
            logger.debug("tmpfs full: %r of %s served uncached", key, self.namespace)
            return memoryview(data)
        if not placed:
            return full((cap or 0) - usage.used())
        view = ks.get(key)
        return memoryview(data) if view is None else view

    def _evict(self, ks: Keyspace, need: int) -> tuple[int, int]:
        """Delete the least recently read values until *need* bytes are free (lock held).

        Returns the bytes freed and the number of values deleted.
        """
        entries = sorted((st.st_atime_ns, st.st_size, key) for key, st in ks.ns.value_stats())
        freed = evicted = 0
        for _, size, key in entries:
            if freed >= need:
                break
            if ks.delete(key):
                freed += size
                evicted += 1
        return freed, evicted

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
                view, stale = self._refill(ks, key)
                if view is None:
                    value = get_sync(self.source, key, default_buffer_prototype(), None)
                    view = self._fetched(ks, key, value, stale)
                    if view is None:
                        return None
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
                view, stale = self._refill(ks, key)
                if view is None:
                    value = await self.source.get(key, default_buffer_prototype())
                    view = self._fetched(ks, key, value, stale)
                    if view is None:
                        return None
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
        async for key in self.list_prefix(""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        seen: set[str] = set()
        if self.scratch:  # what was written here is in no source listing
            seen.update(self._handle().list_prefix(prefix))
            for key in sorted(seen):
                yield key
        async for key in self.source.list_prefix(prefix):
            if key not in seen:
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        seen: set[str] = set()
        if self.scratch:
            seen.update(self._handle().list_dir(prefix))
            for name in sorted(seen):
                yield name
        async for name in self.source.list_dir(prefix):
            if name not in seen:
                yield name

    # --------------------------------------------------------------- writes
    def _written(self, ks: Keyspace, key: str, value: Buffer) -> None:
        """Under the fill lock, after the source took *value* (if it does): cache it."""
        if not self.scratch:
            self._drop(ks, key)  # a value that does not fit must not leave the old one
        self._admit(ks, key, value, replace=self.scratch)
        self._count(writes=1)

    def set_sync(self, key: str, value: Buffer) -> None:
        """Synchronous :meth:`set` (zarr's ``SupportsSetSync``)."""
        self._check_writable()
        ks = self._handle()
        fd = ks.ns.lock_key(key)
        assert fd is not None
        try:
            if not self.scratch:
                call_sync(self.source, "set", key, value)
            self._written(ks, key, value)
        finally:
            ks.ns.unlock_key(key, fd)

    def delete_sync(self, key: str) -> None:
        """Synchronous :meth:`delete` (zarr's ``SupportsDeleteSync``)."""
        self._check_writable()
        ks = self._handle()
        fd = ks.ns.lock_key(key)
        assert fd is not None
        try:
            if not self.scratch:
                call_sync(self.source, "delete", key)
            self._drop(ks, key)
        finally:
            ks.ns.unlock_key(key, fd)

    async def set(self, key: str, value: Buffer) -> None:
        # docstring inherited
        self._check_writable()
        if not self._is_open:
            await self._open()
        ks = self._handle()
        fd = await self._lock_async(ks, key)
        try:
            if not self.scratch:
                await self.source.set(key, value)
            self._written(ks, key, value)
        finally:
            ks.ns.unlock_key(key, fd)

    async def delete(self, key: str) -> None:
        # docstring inherited
        self._check_writable()
        ks = self._handle()
        fd = await self._lock_async(ks, key)
        try:
            if not self.scratch:
                await self.source.delete(key)
            self._drop(ks, key)
        finally:
            ks.ns.unlock_key(key, fd)

    async def delete_dir(self, prefix: str) -> None:
        # docstring inherited
        self._check_writable()
        ks = self._handle()
        if not self.scratch:
            await self.source.delete_dir(prefix)
        for key in ks.list_prefix(prefix):
            self._drop(ks, key)

    def cached(self, key: str) -> int | None:
        """Bytes of the value of *key* cached on the host now, or ``None``."""
        st = self._handle().stat(key)
        return st[1] if st is not None and st[0] == "file" else None

    async def set_partial_values(
        self, key_start_values: Iterable[tuple[str, int, bytes | bytearray | memoryview]]
    ) -> None:
        """Not supported (``supports_partial_writes`` is false)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not support partial writes; write whole values"
        )

    @property
    def supports_writes(self) -> bool:  # type: ignore[override]
        """Whether the cache takes writes (``writes=`` was given)."""
        return self.writes is not None

    @property
    def supports_deletes(self) -> bool:  # type: ignore[override]
        """As :attr:`supports_writes`."""
        return self.writes is not None

    def _check_writable(self) -> None:
        if self.writes is not None and not self.read_only:
            return
        # ValueError, as zarr's own read-only stores raise.
        raise ValueError(
            f"{self!r} is a read-only cache; write to its source store instead "
            "(then call clear_cache() so the host sees the new values), or open the "
            "cache with writes='through'"
        )
