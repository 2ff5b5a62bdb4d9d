"""``SharedMemoryStore``: the zarr face of a shared-memory namespace.

Argument checks, then one :class:`~shmstore._keyspace.Keyspace` call per
operation: which tier holds a key, the capacity and the stale-handle rule all
live in the keyspace. See docs/design.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Self

from zarr.abc.store import Store
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype

from shmstore._keyspace import Keyspace, check_tiering, in_thread
from shmstore._locations import supports_sync
from shmstore._lock import Lock
from shmstore._names import check_name, entry_path, resolve_root, split_url
from shmstore._namespace import SPILLED

_CPU_BUFFER = cpu.Buffer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable
    from types import TracebackType

    from zarr.abc.store import ByteRequest
    from zarr.core.buffer import BufferPrototype

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
        Create the namespace (``FileExistsError`` if it exists) and destroy it
        when the ``with`` block exits, unless it was destroyed (and maybe
        re-created by someone else) meanwhile. A plain store only closes its
        handle there and never destroys shared data.
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

    _ks: Keyspace | None

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
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise ValueError(
                f"mode {mode!r} is not a permission mask; pass bits such as 0o600 "
                "(owner only, the default) or 0o640 (group may read)"
            )
        self.namespace = check_name(namespace)
        self._root_arg = None if root is None else os.fspath(root)
        self.root = resolve_root(root)
        self.scoped = scoped
        self._mode = mode
        check_tiering(capacity, spill)  # before the namespace is created
        # The one time this store may create its namespace: fail early if it is
        # missing (read-only), foreign or another user's.
        self._ks = Keyspace(
            self.namespace,
            self.root,
            read_only=read_only,
            create=not read_only,
            exclusive=scoped,
            mode=mode,
            meta={"scoped": True, "scoped_pid": os.getpid()} if scoped else None,
            capacity=capacity,
            spill=spill,
        )

    def _keyspace(self) -> Keyspace:
        ks = self._ks
        if ks is None:
            # A copy (unpickled, with_read_only) opens the namespace it refers
            # to and never creates one.
            ks = self._ks = Keyspace(self.namespace, self.root, read_only=self.read_only)
        return ks

    @property
    def _supports_sync_io(self) -> bool:
        # zarr >= 3.4 takes its synchronous fast path only where a miss can too:
        # a spill store without a *_sync surface would have to block on a loop.
        tiers = self._keyspace().tiers
        return tiers is None or tiers.spill is None or supports_sync(tiers.spill)

    async def _open(self) -> None:
        # docstring inherited
        self._keyspace()
        await super()._open()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        """Open the namespace of a ``shm://<namespace>`` URL."""
        return cls(split_url(url)[0], **kwargs)

    @classmethod
    def _copy(cls, namespace: str, root_arg: str | None, read_only: bool, mode: int) -> Self:
        store = cls.__new__(cls)
        Store.__init__(store, read_only=read_only)
        store.namespace = namespace
        store._root_arg = root_arg
        store.root = resolve_root(root_arg)
        store.scoped = False  # a copy never owns the namespace's lifetime
        store._mode = mode
        store._ks = None
        return store

    # --------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        # Only the name travels, and the root only if it was given: a root
        # left to $SHMSTORE_ROOT belongs to the host, so a worker resolves it
        # where it unpickles (docs/multihost.md) and reopens the namespace lazily.
        return {
            "namespace": self.namespace,
            "root": self._root_arg,
            "read_only": self.read_only,
            "mode": self._mode,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        copy = self._copy(state["namespace"], state["root"], state["read_only"], state["mode"])
        self.__dict__.update(copy.__dict__)

    # ------------------------------------------------------------- identity
    def with_read_only(self, read_only: bool = False) -> SharedMemoryStore:
        # docstring inherited
        return self._copy(self.namespace, self._root_arg, read_only, self._mode)

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
            self._keyspace().destroy(only_created=True)

    def destroy(self) -> None:
        """Unlink every segment of the namespace, in every process.

        Processes that still hold chunk views keep reading the old bytes until
        they drop them; new opens by name no longer find the namespace, and
        every store opened before raises ``FileNotFoundError`` naming it
        (unless a namespace of that name is created again, which they follow).

        Raises
        ------
        FileNotFoundError
            If the namespace was destroyed already.
        """
        self._check_writable()
        self._keyspace().destroy()

    @property
    def path(self) -> str:
        """The namespace directory (a Zarr v3 directory layout)."""
        return entry_path(self.root, self.namespace)

    def lock(self, *, timeout: float | None = None) -> Lock:
        """The namespace's inter-process lock: ``shmstore.Lock(namespace)``.

        A ``flock`` on the namespace directory, so any process of the host can
        take it by name; the kernel releases it if the holder dies, and it goes
        away with :meth:`destroy`. Use it as ``with store.lock(): ...``.
        zarr itself never takes it: it is for coordinating writers.
        """
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
        if prototype is None:
            prototype = default_buffer_prototype()
        wrap = _wrapper(prototype.buffer)
        # The buffer over a chunk's mapping is made once and reused while the
        # mapping is valid (its memory is read-only, like the view's): a
        # repeated read is a dict lookup and two loads (docs/performance.md).
        ks = self._ks or self._keyspace()
        if byte_range is None and wrap is not None:
            value = ks.peek(key, wrap)
            if value is not None and value is not SPILLED:
                return value
        value = ks.get(key, wrap, byte_range)
        if value is None or wrap is not None:
            return value
        return prototype.buffer.from_bytes(value)

    def set_sync(self, key: str, value: Buffer) -> None:
        """Synchronous :meth:`set` (zarr's ``SupportsSetSync``)."""
        self._check_writable()
        self._keyspace().set(key, self._data(key, value))

    def delete_sync(self, key: str) -> None:
        """Synchronous :meth:`delete` (zarr's ``SupportsDeleteSync``)."""
        self._check_writable()
        self._keyspace().delete(key)

    @staticmethod
    def _data(key: str, value: Buffer) -> Any:
        if type(value) is not _CPU_BUFFER and not isinstance(value, Buffer):
            raise TypeError(
                f"SharedMemoryStore.set(): value for key {key!r} must be a zarr Buffer, "
                f"got {type(value).__name__}"
            )
        return value.as_numpy_array()

    # ---------------------------------------------------------------- async
    # Shared-memory work is a memcpy at most: a thread hop would cost more
    # than it saves, so the coroutines call the keyspace directly. A tiered
    # keyspace may wait on its spill store, so there they run it in a thread
    # (as zarr's LocalStore runs its file I/O), never blocking the loop.
    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        ks = self._ks or self._keyspace()
        if ks.tiered:
            return await in_thread(fn, *args)
        return fn(*args)

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        if not self._is_open:
            await self._open()
        ks = self._ks or self._keyspace()
        if not ks.tiered:
            return self.get_sync(key, prototype=prototype, byte_range=byte_range)
        return await in_thread(
            lambda: self.get_sync(key, prototype=prototype, byte_range=byte_range)
        )

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        # docstring inherited
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        # docstring inherited
        return await self._call(self._keyspace().exists, key)

    async def set(self, key: str, value: Buffer) -> None:
        # docstring inherited
        self._check_writable()
        if not self._is_open:
            await self._open()
        await self._call(self._keyspace().set, key, self._data(key, value))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        # docstring inherited
        self._check_writable()
        if not self._is_open:
            await self._open()
        ks = self._keyspace()
        await self._call(lambda: ks.set(key, self._data(key, value), exclusive=True))

    async def set_partial_values(
        self, key_start_values: Iterable[tuple[str, int, bytes | bytearray | memoryview]]
    ) -> None:
        # docstring inherited (zarr < 3.1.3 declares it abstract)
        raise NotImplementedError(
            "SharedMemoryStore does not write parts of values: each value is replaced "
            "whole and atomically (supports_partial_writes is False)"
        )

    async def delete(self, key: str) -> None:
        # docstring inherited
        self._check_writable()
        await self._call(self._keyspace().delete, key)

    async def delete_dir(self, prefix: str) -> None:
        # docstring inherited
        self._check_writable()
        await self._call(self._keyspace().delete_dir, prefix)

    async def clear(self) -> None:
        # docstring inherited
        self._check_writable()
        await self._call(self._keyspace().clear)

    async def getsize(self, key: str) -> int:
        # docstring inherited
        return await self._call(self._keyspace().getsize, key)

    async def getsize_prefix(self, prefix: str) -> int:
        # docstring inherited
        return await self._call(self._keyspace().getsize_prefix, prefix)

    async def list(self) -> AsyncIterator[str]:
        # docstring inherited
        for key in await self._call(self._keyspace().list_prefix, ""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        for key in await self._call(self._keyspace().list_prefix, prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        for name in await self._call(self._keyspace().list_dir, prefix):
            yield name


def scoped(namespace: str, **kwargs: Any) -> SharedMemoryStore:
    """Return a store that creates *namespace* and destroys it when its ``with`` block exits.

    Equivalent to ``SharedMemoryStore(namespace, scoped=True, **kwargs)``: an
    existing namespace is ``FileExistsError`` (a scoped block never destroys
    what it did not create).

    Examples
    --------
    >>> import shmstore
    >>> with shmstore.scoped("scratch") as store:
    ...     pass  # the namespace is gone after the block
    """
    return SharedMemoryStore(namespace, scoped=True, **kwargs)
