"""``SharedMemoryStore``: a Zarr v3 store whose values live in shared memory."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Self

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype

from shmstore._segments import Namespace, check_name, resolve_root

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable
    from types import TracebackType

    from zarr.core.buffer import BufferPrototype

    from shmstore._lock import Lock
    from shmstore._tiering import Tiers

__all__ = ["SharedMemoryStore", "scoped"]


_wrappers: dict[type[Buffer], Callable[[memoryview], Buffer] | None] = {}


def _wrapper(cls: type[Buffer]) -> Callable[[memoryview], Buffer] | None:
    """The same ``cls.from_bytes`` object on every call (the namespace caches by it).

    ``None`` for buffers that are not host memory: a device buffer is a copy,
    which the mapping cache must not pin.
    """
    try:
        return _wrappers[cls]
    except KeyError:
        return _wrappers.setdefault(cls, cls.from_bytes if issubclass(cls, cpu.Buffer) else None)


def _slice(view: memoryview, byte_range: ByteRequest | None) -> memoryview:
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


class SharedMemoryStore(Store):
    """A Zarr v3 store whose keys are files in a shared-memory namespace.

    Every process of the host that opens the same namespace name sees the same
    keys and bytes. The namespace directory is a standard Zarr v3 directory
    layout, so ``zarr.storage.LocalStore`` (or any other Zarr implementation)
    can read it as it stands.

    Parameters
    ----------
    namespace
        Name of the namespace: one path component (no ``/``, not hidden).
    root
        Shared-memory directory. Defaults to ``$SHMSTORE_ROOT``, else ``/dev/shm``.
    read_only
        Open read-only. A missing namespace then raises ``FileNotFoundError``;
        opened writable, a missing namespace is created.
    scoped
        Destroy the namespace when the ``with`` block exits. A plain store only
        closes its handle there and never destroys shared data.
    mode
        Permission bits of the namespace's files when it is created (default
        ``0o600``, owner only).
    capacity
        Bytes the shared-memory tier may hold (an int or a string such as
        ``"4 GiB"``); what does not fit goes to *spill*. Recorded in the
        namespace. See docs/tiering.md.
    spill
        Where values that do not fit go: a directory, a URL, a ``LocalStore``
        or an ``FsspecStore``. Recorded in the namespace, so a store opened by
        name alone reads spilled keys too.

    Attributes
    ----------
    supports_writes
    supports_deletes
    supports_partial_writes
    supports_listing

    Examples
    --------
    >>> import zarr, shmstore
    >>> store = shmstore.SharedMemoryStore("doc-example")
    >>> z = zarr.create_array(store, name="t", shape=(4, 4), chunks=(2, 2), dtype="f4")
    >>> store.destroy()
    """

    supports_writes: bool = True
    supports_deletes: bool = True
    # zarr < 3.1.3 declares partial writes abstract; zarr no longer makes them.
    supports_partial_writes: bool = False
    supports_listing: bool = True

    _ns: Namespace | None
    # Tiering (shmstore._tiering): None for plain namespaces, the common case.
    _tiers: Tiers | None = None
    _capacity: int | str | None = None
    _spill: Any = None

    def __init__(
        self,
        namespace: str,
        *,
        root: str | os.PathLike[str] | None = None,
        read_only: bool = False,
        scoped: bool = False,
        mode: int = 0o600,
        capacity: int | str | None = None,
        spill: Any = None,
    ) -> None:
        super().__init__(read_only=read_only)
        if scoped and read_only:
            raise ValueError(
                f"a scoped store destroys namespace {namespace!r} on exit, so it cannot be "
                "read-only; open it writable, or drop scoped=True"
            )
        self.namespace = check_name(namespace)
        self.root = resolve_root(root)
        self.scoped = scoped
        self._mode = mode
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise ValueError(
                f"mode {mode!r} is not a permission mask; pass bits such as 0o600 "
                "(owner only, the default) or 0o640 (group may read)"
            )
        if capacity is not None or spill is not None:
            from shmstore._tiering import check_tiering

            check_tiering(capacity, spill)  # before the namespace is created
        self._capacity = capacity
        self._spill = spill
        self._ns = None
        self._handle()  # fail early: missing (read-only), foreign or another user's

    def _handle(self) -> Namespace:
        ns = self._ns
        if ns is None:
            ns = Namespace.open(
                self.namespace,
                self.root,
                create=not self.read_only,
                mode=self._mode,
                meta={"scoped": True} if self.scoped else None,
            )
            from shmstore._tiering import attach_tiers

            self._tiers = attach_tiers(self, ns)
            self._ns = ns
        return ns

    async def _open(self) -> None:
        # docstring inherited
        self._handle()  # resolves the tiering before the first async call
        await super()._open()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        """Open the namespace of a ``shm://<namespace>`` URL."""
        rest = url.removeprefix("shm://")
        if rest == url:
            raise ValueError(f"URL {url!r} is not a shm:// URL")
        return cls(rest.strip("/").split("/")[0], **kwargs)

    # --------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        # Only the name travels: workers reopen the namespace lazily.
        return {
            "namespace": self.namespace,
            "root": self.root,
            "read_only": self.read_only,
            "mode": self._mode,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.namespace = state["namespace"]
        self.root = state["root"]
        self._read_only = state["read_only"]
        self._mode = state["mode"]
        self.scoped = False  # a copy never owns the namespace's lifetime
        self._is_open = False
        self._ns = None

    # ------------------------------------------------------------- identity
    def with_read_only(self, read_only: bool = False) -> SharedMemoryStore:
        # docstring inherited
        return type(self)(self.namespace, root=self.root, read_only=read_only, mode=self._mode)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SharedMemoryStore)
            and self.namespace == other.namespace
            and self.root == other.root
            and self.read_only == other.read_only
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.root, self.namespace, self.read_only))

    def __str__(self) -> str:
        return f"shm://{self.namespace}"

    def __repr__(self) -> str:
        return f"SharedMemoryStore({str(self)!r}, root={self.root!r})"

    # ------------------------------------------------------------- lifetime
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        if self.scoped:
            self.destroy()

    def destroy(self) -> None:
        """Unlink every segment of the namespace, in every process.

        Processes that still hold chunk views keep reading the old bytes until
        they drop them; new opens by name no longer find the namespace.
        """
        self._check_writable()
        ns = self._ns or Namespace.open(self.namespace, self.root, create=False)
        ns.destroy()
        self._ns = None
        self._is_open = False

    @property
    def path(self) -> str:
        """The namespace directory (a Zarr v3 directory layout)."""
        return os.path.join(self.root, self.namespace)

    def lock(self, *, timeout: float | None = None) -> Lock:
        """The namespace's inter-process lock: ``shmstore.Lock(namespace)``.

        A ``flock`` on the namespace directory, so any process of the host can
        take it by name; the kernel releases it if the holder dies, and it goes
        away with :meth:`destroy`. Use it as ``with store.lock(): ...``.
        zarr itself never takes it: it is for coordinating writers.
        """
        from shmstore._lock import Lock

        return Lock(self.namespace, root=self.root, timeout=timeout)

    # ----------------------------------------------------------- sync core
    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Synchronous :meth:`get` (zarr's ``SupportsGetSync``)."""
        ns = self._ns or self._handle()
        if prototype is None:
            prototype = default_buffer_prototype()
        wrap = _wrapper(prototype.buffer)
        if byte_range is None and wrap is not None:
            # The buffer over a chunk's mapping is made once and reused while the
            # mapping is valid (its memory is read-only, like the view's): a
            # repeated read is a dict lookup and two loads (docs/performance.md).
            buf = ns.read(key, wrap)
        else:
            view = ns.read(key)
            buf = None if view is None else prototype.buffer.from_bytes(_slice(view, byte_range))
        if buf is None:
            if self._tiers is not None:
                # A tiered namespace may hold the key in its spill tier.
                return self._tiers.get_sync(key, prototype, byte_range)
            if self._reopened(ns):
                return self.get_sync(key, prototype=prototype, byte_range=byte_range)
        return buf

    def _reopened(self, ns: Namespace) -> bool:
        """Drop a handle whose namespace another process destroyed; True if so.

        The next call opens the namespace by name again: the one created since,
        if any (a read-only store raises ``FileNotFoundError`` if there is none).
        """
        if ns is not self._ns or not ns.destroyed():
            return False
        self._ns = None
        self._tiers = None
        return True

    def set_sync(self, key: str, value: Buffer) -> None:
        """Synchronous :meth:`set` (zarr's ``SupportsSetSync``)."""
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(
                f"SharedMemoryStore.set(): value for key {key!r} must be a zarr Buffer, "
                f"got {type(value).__name__}"
            )
        ns = self._handle()
        if self._tiers is not None:
            self._tiers.set_sync(key, value)
            return
        try:
            ns.write(key, value.as_numpy_array())
        except FileNotFoundError:
            if not self._reopened(ns):
                raise
            self.set_sync(key, value)

    def delete_sync(self, key: str) -> None:
        """Synchronous :meth:`delete` (zarr's ``SupportsDeleteSync``)."""
        self._check_writable()
        ns = self._handle()
        if self._tiers is not None:
            self._tiers.delete_sync(key)
            return
        ns.delete(key)

    # ---------------------------------------------------------------- async
    # Shared-memory work is a memcpy at most: a thread hop would cost more
    # than it saves, so the coroutines call the sync core directly.
    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        if not self._is_open:
            await self._open()
        if self._tiers is not None:
            return await self._tiers.get(key, prototype, byte_range)
        return self.get_sync(key, prototype=prototype, byte_range=byte_range)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        # docstring inherited
        self._handle()
        if self._tiers is not None:
            return [await self._tiers.get(k, prototype, r) for k, r in key_ranges]
        return [
            self.get_sync(key, prototype=prototype, byte_range=byte_range)
            for key, byte_range in key_ranges
        ]

    async def exists(self, key: str) -> bool:
        # docstring inherited
        ns = self._handle()
        if self._tiers is not None:
            return await self._tiers.exists(key)
        return ns.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        # docstring inherited
        if not self._is_open:
            await self._open()
        if self._tiers is not None:
            self._check_writable()
            await self._tiers.set(key, value)
            return
        self.set_sync(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        # docstring inherited
        self._check_writable()
        if not self._is_open:
            await self._open()
        ns = self._handle()
        if self._tiers is not None:
            await self._tiers.set_if_not_exists(key, value)
            return
        ns.write(key, value.as_numpy_array(), exclusive=True)

    async def set_partial_values(
        self, key_start_values: Iterable[tuple[str, int, bytes | bytearray | memoryview]]
    ) -> None:
        """Not supported (``supports_partial_writes`` is false): values are written whole."""
        raise NotImplementedError(
            f"{type(self).__name__} does not support partial writes; set the whole value instead"
        )

    async def delete(self, key: str) -> None:
        # docstring inherited
        self._handle()
        if self._tiers is not None:
            self._check_writable()
            await self._tiers.delete(key)
            return
        self.delete_sync(key)

    async def delete_dir(self, prefix: str) -> None:
        # docstring inherited
        self._check_writable()
        ns = self._handle()
        if self._tiers is not None:
            await self._tiers.delete_dir(prefix)
            return
        ns.delete_prefix(prefix)

    async def clear(self) -> None:
        # docstring inherited
        self._check_writable()
        ns = self._handle()
        if self._tiers is not None:
            await self._tiers.clear()
            return
        ns.delete_prefix("")

    async def getsize(self, key: str) -> int:
        # docstring inherited
        size = self._handle().size(key)
        if size is None and self._tiers is not None:
            return await self._tiers.getsize(key)
        if size is None:
            raise FileNotFoundError(key)
        return size

    async def getsize_prefix(self, prefix: str) -> int:
        # docstring inherited
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        ns = self._handle()
        if self._tiers is not None:
            return await self._tiers.getsize_prefix(prefix)
        return sum(ns.size(key) or 0 for key in ns.iter_keys(prefix))

    async def list(self) -> AsyncIterator[str]:
        # docstring inherited
        ns = self._handle()
        if self._tiers is not None:
            async for key in self._tiers.list_prefix(""):
                yield key
            return
        for key in ns.iter_keys(""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        ns = self._handle()
        if self._tiers is not None:
            async for key in self._tiers.list_prefix(prefix):
                yield key
            return
        for key in ns.iter_keys(prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        ns = self._handle()
        if self._tiers is not None:
            async for name in self._tiers.list_dir(prefix):
                yield name
            return
        for name in ns.list_dir(prefix):
            yield name


def scoped(namespace: str, **kwargs: Any) -> SharedMemoryStore:
    """Return a store whose namespace is destroyed when its ``with`` block exits.

    Equivalent to ``SharedMemoryStore(namespace, scoped=True, **kwargs)``.

    Examples
    --------
    >>> import shmstore
    >>> with shmstore.scoped("scratch") as store:
    ...     pass  # the namespace is gone after the block
    """
    return SharedMemoryStore(namespace, scoped=True, **kwargs)
