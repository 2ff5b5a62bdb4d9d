"""Tiering: a capacity for a namespace's shared-memory tier and a Zarr store for the rest.

A *tiered* namespace has a capacity (bytes of values its shared-memory tier
may hold), a *spill* store (any writable Zarr store: a directory, a URL, a
``LocalStore`` or ``FsspecStore``), or both. Both are recorded in the
namespace's ``.shmstore/meta.json``, so every process that opens the namespace
by name alone (a pickled store sends only the name) applies the same capacity
and sees the spilled keys.

Policy: new writes spill
------------------------
A write that does not fit (it would take the tier past its capacity, or the
tmpfs itself is full: ``ENOSPC``) goes to the spill store; nothing already in
shared memory is moved. Least-recently-used demotion was rejected because it
needs every read, in every process, to record its access (a write on the read
path, which is the path shared memory exists to make fast), and because it
moves a chunk while other processes may be reading it: each move is a disk
write charged to whichever unrelated writer happened to need room. With
"new writes spill", a byte is written once, a read never writes, and which
tier holds a key only depends on the order of the writes.

A key lives in exactly one tier: a write that lands in shared memory removes
the spill copy and a write that spills removes the shared-memory copy, in the
order that never leaves a reader without the key (write the new tier first).
The one exception is Zarr metadata (``zarr.json``, ``.zarray``, ``.zgroup``,
``.zattrs``, ``.zmetadata``): it is written to both tiers, so the spill store
is a Zarr hierarchy that ``zarr.open`` reads on its own, and read from shared
memory.

Accounting
----------
The bytes held by the shared-memory tier live in ``.shmstore/usage`` (three
little-endian int64: bytes used, spill writes, valid flag), read and updated
under an exclusive ``flock`` on that file (the kernel releases it when a
holder dies). A write reserves its bytes under the lock before it copies
them and releases the reservation if the copy fails; deletes subtract under
the lock. Writers of different keys therefore never take the tier past its
capacity, whichever processes they run in. Concurrent writes *of the same
key* from several processes (which Zarr leaves undefined) can leave the count
off by that key's size; :meth:`Usage.recount` rebuilds it from the files.
Capacity counts value bytes; the tmpfs rounds each file up to a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import struct
import threading
import weakref
from typing import TYPE_CHECKING, Any

from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.storage import FsspecStore, LocalStore

from shmstore._errors import CapacityExceededError, SharedMemoryFullError
from shmstore._segments import META, _read_meta, _write_meta
from shmstore._store import _slice

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator

    from zarr.abc.store import ByteRequest
    from zarr.core.buffer import BufferPrototype

    from shmstore._segments import Namespace
    from shmstore._store import SharedMemoryStore

__all__ = [
    "Tiers",
    "Usage",
    "attach_tiers",
    "describe_store",
    "is_metadata_key",
    "as_store",
    "parse_capacity",
    "tiers_for",
    "to_buffer",
]

logger = logging.getLogger(__name__)

#: Last path component of the keys that hold Zarr metadata (v3 and v2).
METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
_USAGE = f"{META}/usage"
# bytes used by the shared-memory tier, spill writes so far, 1 once valid
_RECORD = struct.Struct("<3q")


def is_metadata_key(key: str) -> bool:
    """Whether *key* holds Zarr metadata rather than a chunk."""
    return key.rpartition("/")[2] in METADATA_NAMES


def parse_capacity(value: int | str | None) -> int | None:
    """Return a capacity in bytes from an int or a human string such as ``"4 GiB"``.

    Strings are parsed by :func:`dask.utils.parse_bytes`, the notation of Dask's
    ``memory_limit``: IEC units are binary (``"4 GiB"`` is 4 x 2**30), SI units
    decimal (``"4 GB"`` is 4e9), and an unknown unit is an error.

    Raises
    ------
    ValueError
        If the value is negative or not a size; the message names it.
    TypeError
        If the value is neither ``None``, an int nor a str.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(
            f"capacity must be a number of bytes or a string such as '4 GiB', got "
            f"{type(value).__name__}: {value!r}"
        )
    if isinstance(value, str):
        from dask.utils import parse_bytes

        try:
            if not value.strip():
                raise ValueError(value)
            value = int(parse_bytes(value))
        except ValueError as e:
            raise ValueError(
                f"capacity {value!r} is not a size; pass bytes (an int) or a string "
                "such as '4 GiB' or '512 MB'"
            ) from e
    if value < 0:
        raise ValueError(f"capacity {value!r} is negative; pass 0 or more bytes")
    return value


# --------------------------------------------------------------------- stores
def as_store(spec: Any, *, read_only: bool, storage_options: dict[str, Any] | None = None) -> Store:
    """Return a Zarr store for a store, a local path, a ``shm://`` or an fsspec URL.

    Parameters
    ----------
    spec
        A ``zarr.abc.store.Store`` (returned as is), a path (``str`` or
        ``os.PathLike``, ``file://`` URLs included: a ``LocalStore``),
        ``shm://<namespace>`` (a ``SharedMemoryStore``) or any other fsspec URL
        (an ``FsspecStore``).
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
    if spec.startswith("shm://"):
        from shmstore._store import SharedMemoryStore

        return SharedMemoryStore.from_url(spec, read_only=read_only)
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


def _has_sync(store: Store, method: str) -> bool:
    # zarr >= 3.4: wrapper stores say at run time whether their sync surface works.
    return callable(getattr(store, method, None)) and bool(
        getattr(store, "_supports_sync_io", True)
    )


def supports_sync(store: Store) -> bool:
    """Whether *store* has the whole synchronous surface (zarr's ``*_sync``)."""
    return all(_has_sync(store, m) for m in ("get_sync", "set_sync", "delete_sync"))


def run_sync(coro: Coroutine[Any, Any, Any], store: Store, method: str) -> Any:
    """Run a coroutine of *store* from synchronous code.

    Uses zarr's own loop (``zarr.core.sync.sync``) when no event loop runs in
    this thread. Inside a running loop, blocking on a coroutine could wait on
    this very loop, so that is refused with an error that says what to do.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        from zarr.core.sync import sync

        return sync(coro)
    coro.close()
    raise RuntimeError(
        f"{store!r} has no synchronous {method}() and an event loop is running in this "
        f"thread; call the async API here (await store.{method.removesuffix('_sync')}(...))"
    )


def store_get_sync(
    store: Store, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None
) -> Buffer | None:
    """``store.get`` from synchronous code (its ``get_sync`` where it has one)."""
    if _has_sync(store, "get_sync"):
        return store.get_sync(key, prototype=prototype, byte_range=byte_range)  # type: ignore[attr-defined]
    return run_sync(store.get(key, prototype, byte_range), store, "get_sync")


def store_set_sync(store: Store, key: str, value: Buffer) -> None:
    """``store.set`` from synchronous code."""
    if _has_sync(store, "set_sync"):
        store.set_sync(key, value)  # type: ignore[attr-defined]
    else:
        run_sync(store.set(key, value), store, "set_sync")


def store_delete_sync(store: Store, key: str) -> None:
    """``store.delete`` from synchronous code."""
    if _has_sync(store, "delete_sync"):
        store.delete_sync(key)  # type: ignore[attr-defined]
    else:
        run_sync(store.delete(key), store, "delete_sync")


def to_buffer(
    view: memoryview, prototype: BufferPrototype | None, byte_range: ByteRequest | None
) -> Buffer:
    """Wrap a segment view as a zarr Buffer (zero copy), sliced to *byte_range*."""
    if prototype is None:
        prototype = default_buffer_prototype()
    if byte_range is not None:
        view = _slice(view, byte_range)
    return prototype.buffer.from_bytes(view)


# ----------------------------------------------------------------- accounting
class _State:
    __slots__ = ("spilled", "used")

    def __init__(self, used: int, spilled: int) -> None:
        self.used = used
        self.spilled = spilled


class Usage:
    """The bytes a namespace's shared-memory tier holds, shared by every process.

    Kept in ``.shmstore/usage`` and changed only under an exclusive ``flock``
    on it (plus a thread lock: ``flock`` does not exclude threads that share
    one descriptor). Critical sections are a few syscalls long.

    Parameters
    ----------
    ns
        The namespace handle.
    """

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self._fd = -1
        self._pid = -1
        self._tlock = threading.Lock()

    def _fileno(self) -> int:
        pid = os.getpid()
        if self._pid != pid:
            # A forked child must not share the parent's open file description:
            # flock locks belong to it, so both would "hold" the lock at once.
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._tlock = threading.Lock()
            self._fd = os.open(
                _USAGE,
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                self.ns.mode,
                dir_fd=self.ns._fd,
            )
            self._pid = pid
        return self._fd

    def __del__(self) -> None:
        # Only this process's own descriptor: a forked child that never used
        # the counter holds the parent's number, which _fileno replaces.
        if self._fd >= 0 and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def count(self) -> int:
        """Sum the sizes of every value now in the shared-memory tier (a walk)."""
        ns = self.ns
        return sum(ns.size(key) or 0 for key in ns.iter_keys(""))

    @contextlib.contextmanager
    def locked(self) -> Iterator[_State]:
        """Hold the namespace's accounting lock; yield its state, saved on exit."""
        fd = self._fileno()
        with self._tlock:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, _RECORD.size, 0)
                if len(raw) == _RECORD.size and _RECORD.unpack(raw)[2] == 1:
                    used, spilled, _ = _RECORD.unpack(raw)
                    valid = True
                else:
                    # New (or damaged) record: rebuild it from the files. Whether
                    # the spill store holds keys is unknown: assume it does.
                    used, spilled, valid = self.count(), 1, False
                state = _State(used, spilled)
                yield state
                if not valid or state.used != used or state.spilled != spilled:
                    os.pwrite(fd, _RECORD.pack(max(0, state.used), state.spilled, 1), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def used(self) -> int:
        """Bytes the shared-memory tier holds, as accounted."""
        with self.locked() as st:
            return st.used

    def recount(self) -> int:
        """Rebuild the count from the files (heals drift); return it."""
        with self.locked() as st:
            st.used = self.count()
            return st.used

    def add(self, delta: int) -> None:
        """Add *delta* bytes (negative to release)."""
        if delta:
            with self.locked() as st:
                st.used += delta


# ---------------------------------------------------------------------- tiers
class Tiers:
    """The capacity and spill store of one tiered namespace, in one process.

    ``SharedMemoryStore`` hands its work here when the namespace is tiered;
    plain stores never create one.

    Parameters
    ----------
    ns
        The namespace handle.
    capacity
        Bytes the shared-memory tier may hold, or ``None`` (only the tmpfs
        limits it).
    spill
        The store that takes what does not fit, or ``None`` (a write that does
        not fit raises :class:`~shmstore.SharedMemoryFullError`).
    usage
        The shared accounting.
    """

    def __init__(
        self, ns: Namespace, capacity: int | None, spill: Store | None, usage: Usage
    ) -> None:
        self.ns = ns
        self.capacity = capacity
        self.spill = spill
        self.usage = usage

    def __repr__(self) -> str:
        return f"<Tiers of {self.ns.name!r}: capacity={self.capacity}, spill={self.spill!r}>"

    # -------------------------------------------------------------- placing
    def _to_shm(self, key: str, value: Buffer, *, exclusive: bool = False) -> tuple[bool, int]:
        """Try to write *value* to the shared-memory tier under the capacity.

        Returns ``(placed, spill_writes)``: *placed* is False when it does not
        fit and a spill tier exists (the caller spills); *spill_writes* is zero
        when the spill store cannot hold a copy to remove.

        Raises
        ------
        CapacityExceededError, SharedMemoryFullError
            If it does not fit and there is no spill tier.
        """
        data = value.as_numpy_array()
        n = data.nbytes
        ns, cap = self.ns, self.capacity
        with self.usage.locked() as st:
            spilled = st.spilled
            old = ns.size(key)
            if exclusive and old is not None:
                return True, spilled
            delta = n - (old or 0)
            left = None if cap is None else cap - st.used
            fits = left is None or delta <= 0 or delta <= left
            if fits:
                st.used += delta
        if not fits:
            if self.spill is None:
                raise CapacityExceededError(ns.name, n, max(0, left or 0), cap or 0)
            return False, spilled
        try:
            written = ns.write(key, data, exclusive=exclusive)
        except SharedMemoryFullError:
            # The tmpfs itself is full (ENOSPC, never SIGBUS: the segment layer
            # writes with write()); nothing was left behind.
            self.usage.add(-delta)
            if self.spill is None:
                raise
            return False, spilled
        except BaseException:
            self.usage.add(-delta)
            raise
        if not written:
            self.usage.add(-delta)  # exclusive write of a key that exists
        return True, spilled

    def _drop_shm(self, key: str) -> int:
        """Delete *key* from the shared-memory tier; return the spill-write count."""
        ns = self.ns
        with self.usage.locked() as st:
            size = ns.size(key)
            if size is not None and ns.delete(key):
                st.used -= size
            return st.spilled

    def _note_spill(self, key: str) -> None:
        # Before the spill write: a shared-memory write of the same key that
        # reads a zero count would otherwise leave this copy behind.
        if not is_metadata_key(key):
            with self.usage.locked() as st:
                st.spilled += 1

    def _must_clean_spill(self, key: str, spilled: int) -> bool:
        return self.spill is not None and (spilled > 0 or is_metadata_key(key))

    # ---------------------------------------------------------------- sync
    def get_sync(
        self, key: str, prototype: BufferPrototype | None, byte_range: ByteRequest | None
    ) -> Buffer | None:
        """Read *key* from the spill tier (the shared-memory tier missed)."""
        if self.spill is None:
            return None
        return store_get_sync(self.spill, key, prototype or default_buffer_prototype(), byte_range)

    def set_sync(self, key: str, value: Buffer) -> None:
        """Write *key* to the tier it fits in."""
        spill = self.spill
        if spill is not None and is_metadata_key(key):
            placed, _ = self._to_shm(key, value)
            store_set_sync(spill, key, value)
            if not placed:
                self._drop_shm(key)
            return
        placed, spilled = self._to_shm(key, value)
        if placed:
            if self._must_clean_spill(key, spilled):
                store_delete_sync(spill, key)  # type: ignore[arg-type]
            return
        self._note_spill(key)
        store_set_sync(spill, key, value)  # type: ignore[arg-type]
        self._drop_shm(key)

    def delete_sync(self, key: str) -> None:
        """Delete *key* from both tiers."""
        spilled = self._drop_shm(key)
        if self._must_clean_spill(key, spilled):
            store_delete_sync(self.spill, key)  # type: ignore[arg-type]

    # --------------------------------------------------------------- async
    async def get(
        self, key: str, prototype: BufferPrototype | None, byte_range: ByteRequest | None
    ) -> Buffer | None:
        """Read *key* from whichever tier holds it."""
        view = self.ns.read(key)
        if view is not None:
            return to_buffer(view, prototype, byte_range)
        if self.spill is None:
            return None
        return await self.spill.get(key, prototype or default_buffer_prototype(), byte_range)

    async def set(self, key: str, value: Buffer) -> None:
        """Write *key* to the tier it fits in."""
        spill = self.spill
        if spill is not None and is_metadata_key(key):
            placed, _ = self._to_shm(key, value)
            await spill.set(key, value)
            if not placed:
                self._drop_shm(key)
            return
        placed, spilled = self._to_shm(key, value)
        if placed:
            if self._must_clean_spill(key, spilled):
                await spill.delete(key)  # type: ignore[union-attr]
            return
        self._note_spill(key)
        await spill.set(key, value)  # type: ignore[union-attr]
        self._drop_shm(key)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Write *key* only if neither tier holds it."""
        spill = self.spill
        meta = is_metadata_key(key)
        if spill is not None and not meta and await spill.exists(key):
            return
        placed, _ = self._to_shm(key, value, exclusive=True)
        if spill is None:
            return
        if meta:
            await spill.set_if_not_exists(key, value)
        elif not placed:
            self._note_spill(key)
            await spill.set_if_not_exists(key, value)

    async def delete(self, key: str) -> None:
        """Delete *key* from both tiers."""
        spilled = self._drop_shm(key)
        if self._must_clean_spill(key, spilled):
            await self.spill.delete(key)  # type: ignore[union-attr]

    async def delete_dir(self, prefix: str) -> None:
        """Delete every key under the directory *prefix* from both tiers."""
        ns = self.ns
        base = prefix.rstrip("/")
        with self.usage.locked() as st:
            freed = sum(ns.size(k) or 0 for k in ns.iter_keys(f"{base}/" if base else ""))
            ns.delete_prefix(base)
            st.used -= freed
        if self.spill is not None:
            # Metadata is mirrored, so the spill store may hold keys here even
            # when no chunk ever spilled.
            with contextlib.suppress(FileNotFoundError):
                await self.spill.delete_dir(prefix)

    async def clear(self) -> None:
        """Delete every key of both tiers."""
        ns = self.ns
        with self.usage.locked() as st:
            ns.delete_prefix("")
            st.used = self.usage.count()  # whatever concurrent writers added since
            spilled = st.spilled
        if self.spill is not None:
            with contextlib.suppress(FileNotFoundError):
                await self.spill.clear()
            with self.usage.locked() as st:
                if st.spilled == spilled:  # nothing spilled meanwhile
                    st.spilled = 0

    async def exists(self, key: str) -> bool:
        """Whether either tier holds *key*."""
        if self.ns.exists(key):
            return True
        return self.spill is not None and await self.spill.exists(key)

    async def getsize(self, key: str) -> int:
        """Size of *key* in bytes, in whichever tier holds it."""
        size = self.ns.size(key)
        if size is not None:
            return size
        if self.spill is None:
            raise FileNotFoundError(key)
        return await self.spill.getsize(key)

    async def getsize_prefix(self, prefix: str) -> int:
        """Total size of the keys under the directory *prefix*, both tiers."""
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        total = 0
        async for key in self.list_prefix(prefix):
            size = self.ns.size(key)
            if size is None and self.spill is not None:
                try:
                    size = await self.spill.getsize(key)
                except FileNotFoundError:
                    size = 0  # deleted meanwhile
            total += size or 0
        return total

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Keys of both tiers that start with *prefix*, each once."""
        return self._both_tiers(
            lambda: self.ns.iter_keys(prefix), lambda spill: spill.list_prefix(prefix), prefix
        )

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """Names directly under the directory *prefix*, both tiers, each once."""
        return self._both_tiers(
            lambda: self.ns.list_dir(prefix), lambda spill: spill.list_dir(prefix)
        )

    async def _both_tiers(
        self,
        in_shm: Callable[[], Iterable[str]],
        in_spill: Callable[[Store], AsyncIterator[str]],
        prefix: str = "",
    ) -> AsyncIterator[str]:
        """What the shared-memory tier lists, then what only the spill tier lists.

        Both listings start when the iteration does. Names from the spill tier
        are kept only where they start with *prefix*.
        """
        seen = set()
        for name in in_shm():
            seen.add(name)
            yield name
        if self.spill is None:
            return
        try:
            async for name in in_spill(self.spill):
                if name not in seen and name.startswith(prefix):
                    yield name
        except FileNotFoundError:
            return  # the spill store was never written


# ------------------------------------------------------------------- attach
def _spill_is_empty(store: Store) -> bool:
    """Whether *store* surely holds no keys (only checked for local stores)."""
    if isinstance(store, LocalStore):
        try:
            with os.scandir(store.root) as it:
                return next(it, None) is None
        except FileNotFoundError:
            return True
    return False


# namespace handle -> ((inode, size, mtime) of its meta.json, its content)
_meta_seen: weakref.WeakKeyDictionary[Namespace, tuple[tuple[int, int, int], dict[str, Any]]]
_meta_seen = weakref.WeakKeyDictionary()


def _current_meta(ns: Namespace) -> dict[str, Any]:
    """The namespace's ``meta.json`` as it is now (one ``stat`` when unchanged).

    Not the copy the process's cached handle read when it first opened the
    namespace: another process may have tiered it since. ``meta.json`` is
    replaced by rename, so a new inode means new content.
    """
    st = os.stat(f"{META}/meta.json", dir_fd=ns._fd, follow_symlinks=False)
    sig = (st.st_ino, st.st_size, st.st_mtime_ns)
    seen = _meta_seen.get(ns)
    if seen is not None and seen[0] == sig:
        return seen[1]
    meta = _read_meta(ns._fd, ns.path)
    _meta_seen[ns] = (sig, meta)
    return meta


def check_tiering(capacity: int | str | None, spill: Any) -> None:
    """Validate ``capacity=`` and ``spill=`` before anything is created.

    Raises
    ------
    ValueError, TypeError
        As :func:`parse_capacity`, :func:`as_store` and :func:`describe_store`.
    """
    parse_capacity(capacity)
    if spill is not None:
        describe_store(as_store(spill, read_only=True))


def tiers_for(
    ns: Namespace,
    *,
    capacity: int | str | None = None,
    spill: Any = None,
    read_only: bool = False,
) -> Tiers | None:
    """Return the tiering of namespace *ns*, recording new settings; None if plain.

    A *capacity* or *spill* given here wins over (and, unless *read_only*, is
    recorded in) the namespace's ``meta.json``; without them, the recorded
    ones apply. Any code that reads or writes a namespace's keys (the zarr
    store, a filesystem) calls this once per handle and routes misses and
    writes through the result when it is not ``None``.

    Raises
    ------
    ValueError
        If the namespace already spills elsewhere, or the capacity is invalid.
    """
    cap = parse_capacity(capacity)
    meta = _current_meta(ns)
    recorded = meta.get("tiering")
    if recorded is None and cap is None and spill is None:
        return None
    recorded = dict(recorded or {})
    old_spill = recorded.get("spill")
    if spill is not None:
        spill_store = as_store(spill, read_only=read_only)
        spill_desc = describe_store(spill_store)
        if old_spill is not None and old_spill.get("url") != spill_desc["url"]:
            raise ValueError(
                f"namespace {ns.name!r} already spills to {old_spill.get('url')!r}, not "
                f"{spill_desc['url']!r}; open it without spill= (or with that location), "
                "or destroy it and its spilled keys first"
            )
    elif old_spill is not None:
        spill_desc = old_spill
        spill_store = as_store(
            old_spill["url"],
            read_only=read_only,
            storage_options=old_spill.get("storage_options") or None,
        )
    else:
        spill_store, spill_desc = None, None
    if cap is None:
        cap = recorded.get("capacity")
    usage = Usage(ns)
    wanted = {"capacity": cap, "spill": spill_desc}
    if not read_only and wanted != {k: recorded.get(k) for k in wanted}:
        with usage.locked() as st:
            meta = dict(_read_meta(ns._fd, ns.path))
            meta["tiering"] = wanted
            _write_meta(ns._fd, meta)
            if spill_store is not None and old_spill is None:
                st.spilled = 0 if _spill_is_empty(spill_store) else 1
        ns.meta["tiering"] = wanted
    return Tiers(ns, cap, spill_store, usage)


def attach_tiers(store: SharedMemoryStore, ns: Namespace) -> Tiers | None:
    """:func:`tiers_for` with a store's ``capacity=``/``spill=``; called by its ``_handle``."""
    tiers = tiers_for(ns, capacity=store._capacity, spill=store._spill, read_only=store.read_only)
    if tiers is not None and tiers.spill is not None and not supports_sync(tiers.spill):
        # zarr >= 3.4 then keeps its synchronous fast path away from this store:
        # a spill read there would have to block on an event loop.
        store._supports_sync_io = False  # type: ignore[attr-defined]
    return tiers


def tiers_of(store: SharedMemoryStore) -> Tiers | None:
    """Return the tiering of an open store (``None`` for a plain one)."""
    store._handle()
    return store._tiers
