"""The keyspace: the keys of one namespace, plain or tiered, as every face sees them.

``SharedMemoryStore``, ``SharedMemoryFileSystem``, ``persist``'s chunk reader and
the host cache each hold a :class:`Keyspace` and make one call per operation.
Two rules live here, once, so that no face can forget them:

**Tiering.** A tiered namespace has a capacity (bytes of values its
shared-memory tier may hold), a spill store (any Zarr store another process can
reopen by name), or both, recorded in ``meta.json``. A write that does not fit
goes to the spill store, and the key's entry in the namespace becomes a *spill
marker*: a symbolic link to the spill file where the spill store is a local
directory (so zarr's ``LocalStore``, tensorstore or any Zarr reader of the
namespace directory reads the right bytes), else a link to itself (which any
reader fails on with ``ELOOP``: never a silent fill value). shmstore never
follows a marker; it reads the spill store by key. The namespace directory is
therefore the one index of the keys: listing never merges two tiers. Metadata
documents are mirrored into the spill store, so it opens with ``zarr.open`` on
its own. New writes spill; nothing in shared memory is moved (see
docs/design.md, "Tiering", for why not LRU demotion).

**Stale handles.** A keyspace creates its namespace at most once, when it is
opened. When an operation gives a negative answer (a miss, ``False``, nothing
listed, nothing deleted) or fails because the directory it holds is gone, the
keyspace checks (one ``stat``) whether its namespace was destroyed: if a
namespace of that name was created since, it follows it and repeats the
operation; if none exists, it raises ``FileNotFoundError`` naming it. It never
re-creates the namespace and never answers from a dead directory.

Everything here is synchronous. Spill-tier I/O goes through the blocking
bridges of ``_locations``; the faces call tiered keyspaces from a worker
thread when they run inside an event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import stat
import threading
from typing import TYPE_CHECKING, Any

from zarr.core.buffer import default_buffer_prototype

from shmstore._errors import CapacityExceededError, SharedMemoryFullError
from shmstore._locations import (
    as_store,
    call_sync,
    describe_store,
    get_sync,
    local_path,
    reopen,
    slice_view,
)
from shmstore._names import is_metadata_key
from shmstore._namespace import SPILLED, Namespace
from shmstore._usage import Usage, parse_capacity

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from zarr.abc.store import ByteRequest, Store

__all__ = ["Keyspace", "Tiers", "check_tiering", "in_thread"]

#: What :meth:`Keyspace.stat` returns: (``"file"`` or ``"directory"``, size, mtime or None).
Stat = tuple[str, int, "float | None"]


# Threads that run tiered keyspace calls for coroutines. Not the event loop's
# default executor: a keyspace call blocks until the spill store's coroutine,
# run on zarr's loop, finishes, and that coroutine itself needs the default
# executor (zarr's LocalStore does its file I/O there). Calls parked in it
# would take every worker that the spill I/O needs: a deadlock.
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_POOL_THREADS = 16


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker thread, awaited without blocking the event loop."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = concurrent.futures.ThreadPoolExecutor(
                    _POOL_THREADS, thread_name_prefix="shmstore-keyspace"
                )
    return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)


class SpillMissingError(OSError):
    """A key's spill marker is in the namespace but its value is not in the spill store."""


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


class Tiers:
    """The capacity and spill store of one tiered namespace handle.

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
    """

    def __init__(self, ns: Namespace, capacity: int | None, spill: Store | None) -> None:
        self.ns = ns
        self.capacity = capacity
        self.spill = spill
        self.usage = Usage(ns)

    def __repr__(self) -> str:
        return f"<Tiers of {self.ns.name!r}: capacity={self.capacity}, spill={self.spill!r}>"

    @classmethod
    def configure(
        cls,
        ns: Namespace,
        *,
        capacity: int | str | None = None,
        spill: Any = None,
        read_only: bool = False,
    ) -> Tiers | None:
        """The tiering of *ns*, recording new settings; ``None`` for a plain namespace.

        A *capacity* or *spill* given here wins over (and, unless *read_only*,
        is recorded in) the namespace's ``meta.json``; without them, the
        recorded ones apply.

        Raises
        ------
        ValueError
            If the namespace already spills elsewhere, or the capacity is invalid.
        """
        cap = parse_capacity(capacity)
        recorded = ns.read_meta().get("tiering")
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
            spill_store = reopen(old_spill, read_only=read_only)
        else:
            spill_store, spill_desc = None, None
        if cap is None:
            cap = recorded.get("capacity")
        wanted = {"capacity": cap, "spill": spill_desc}
        if not read_only and wanted != {k: recorded.get(k) for k in wanted}:
            with ns.editing_meta() as meta:
                meta["tiering"] = wanted
        return cls(ns, cap, spill_store)

    # ------------------------------------------------------------ placement
    def marker_target(self, key: str) -> str:
        """Where the spill marker of *key* points: the spill file, or itself."""
        assert self.spill is not None
        return local_path(self.spill, key) or key.rpartition("/")[2]

    def to_shm(self, key: str, data: Any, *, exclusive: bool) -> tuple[bool | None, Any]:
        """Write *data* to the shared-memory tier if it fits under the capacity.

        Returns ``(placed, old)``: *placed* is True (written), False (no room:
        the caller spills) or None (*exclusive* and the key exists); *old* is
        the key's entry before (an ``lstat``, or ``None``).

        Raises
        ------
        CapacityExceededError, SharedMemoryFullError
            If it does not fit and there is no spill tier.
        """
        ns, cap = self.ns, self.capacity
        n = memoryview(data).nbytes
        left = 0

        def room(st: Any, delta: int) -> bool:
            nonlocal left
            if _fits(cap, st.used + st.pending, delta):
                return True
            self.usage.heal(st)  # dead writers' reservations, drift from kills
            left = 0 if cap is None else max(0, cap - st.used - st.pending)
            return _fits(cap, st.used + st.pending, delta)

        try:
            placed, old = self.usage.write(key, data, exclusive=exclusive, room=room)
        except SharedMemoryFullError:
            # The tmpfs itself is full (ENOSPC, never SIGBUS: values are written
            # with write()); nothing was left behind.
            if self.spill is None:
                raise
            return False, ns.lstat(key)
        if placed is False and self.spill is None:
            raise CapacityExceededError(ns.name, n, left, cap or 0)
        return placed, old

    def mark(self, key: str, *, exclusive: bool) -> bool:
        """Replace the shared-memory entry of *key* by its spill marker (value already spilled)."""
        ns = self.ns
        with self.usage.locked() as st:
            cur = ns.lstat(key)
            if not ns.mark(key, self.marker_target(key), exclusive=exclusive):
                return False
            if cur is not None and stat.S_ISREG(cur.st_mode):
                st.used -= cur.st_size
        return True

    def drop(self, key: str) -> os.stat_result | None:
        """Delete the shared-memory entry of *key* (value or marker), accounting for it."""
        ns = self.ns
        with self.usage.locked() as st:
            old = ns.delete(key)
            if old is not None and stat.S_ISREG(old.st_mode):
                st.used -= old.st_size
        return old


@contextlib.contextmanager
def _key_lock(ns: Namespace, key: str) -> Iterator[None]:
    """Hold the lock of *key* (see :meth:`Namespace.lock_key`)."""
    fd = ns.lock_key(key)
    assert fd is not None
    try:
        yield
    finally:
        ns.unlock_key(key, fd)


def _fits(capacity: int | None, taken: int, delta: int) -> bool:
    return capacity is None or delta <= 0 or taken + delta <= capacity


def _buffer(data: Any) -> Any:
    return default_buffer_prototype().buffer.from_bytes(memoryview(data).cast("B"))


def _view(buf: Any) -> memoryview:
    return memoryview(buf.as_numpy_array()).cast("B")


class Keyspace:
    """The keys of one namespace, opened once by one face.

    Parameters
    ----------
    namespace, root
        The namespace and its (resolved) root.
    read_only
        Refuse writes (the faces check first; this is the last line).
    create
        Create the namespace if it is missing (only now, never later).
    exclusive
        Refuse an existing namespace (``FileExistsError``): a scoped store.
    mode
        Permission bits of a namespace created here.
    meta
        Extra ``meta.json`` entries of a namespace created here.
    capacity, spill
        Tiering to record (see :meth:`Tiers.configure`).

    Attributes
    ----------
    created
        Whether opening this keyspace created the namespace.
    """

    def __init__(
        self,
        namespace: str,
        root: str,
        *,
        read_only: bool = False,
        create: bool = False,
        exclusive: bool = False,
        mode: int = 0o600,
        meta: dict[str, Any] | None = None,
        capacity: int | str | None = None,
        spill: Any = None,
    ) -> None:
        self.name = namespace
        self.root = root
        self.read_only = read_only
        ns, self.created = Namespace.open_created(
            namespace, root, create=create, mode=mode, meta=meta, exclusive=exclusive
        )
        self._own = ns if self.created else None
        self._ns = ns
        #: The hit path of :meth:`get`: ``peek(key, wrap)`` is the cached value
        #: of *key* in shared memory (or ``None``, or ``SPILLED``), no system
        #: call, no stale check. Faces call it first and :meth:`get` when it
        #: has nothing: one Python frame less on every cached read.
        self.peek = ns.read
        self._set_tiers(Tiers.configure(ns, capacity=capacity, spill=spill, read_only=read_only))

    def __repr__(self) -> str:
        kind = "tiered" if self._tiers is not None else "plain"
        return f"<Keyspace {self.name!r} ({kind}) in {self.root!r}>"

    @property
    def ns(self) -> Namespace:
        """The namespace handle this keyspace uses now."""
        return self._ns

    @property
    def tiers(self) -> Tiers | None:
        """The tiering in force, or ``None`` for a plain namespace."""
        return self._tiers

    def _set_tiers(self, tiers: Tiers | None) -> None:
        self._tiers = tiers
        #: Whether some keys may live outside shared memory (spill I/O may block):
        #: a plain attribute, read by the faces on every call.
        self.tiered = tiers is not None and tiers.spill is not None

    @property
    def path(self) -> str:
        """The namespace directory."""
        return self._ns.path

    # ------------------------------------------------------ the stale rule
    def _moved(self, ns: Namespace) -> Namespace | None:
        """After a negative answer from *ns*: the handle to repeat with, ``None`` if *ns* holds.

        Raises
        ------
        FileNotFoundError
            If the namespace was destroyed and no namespace of its name exists.
        """
        if ns is not self._ns:
            return self._ns  # another thread already moved on
        if ns.alive():
            return None
        ns.release_pool()  # its files went with the directory: free their pages
        try:
            new = Namespace.open(self.name, self.root, create=False)
        except FileNotFoundError:
            raise ns.gone_error() from None
        self._set_tiers(Tiers.configure(new, read_only=self.read_only))
        self._ns = new
        self.peek = new.read
        return new

    def _run(self, op: Callable[[Namespace], Any], negative: Callable[[Any], bool]) -> Any:
        """``op(ns)``, repeated on the current namespace while its answer came from a dead one."""
        ns = self._ns
        for _ in range(8):
            try:
                result = op(ns)
            except FileNotFoundError:
                moved = self._moved(ns)
                if moved is None:
                    raise
                ns = moved
                continue
            if not negative(result):
                return result
            moved = self._moved(ns)
            if moved is None:
                return result
            ns = moved
        raise OSError(f"namespace {self.name!r} in {self.root} keeps being re-created")

    def _noticed_tiering(self, ns: Namespace) -> bool:
        """A plain handle met a spill marker: another process tiered the namespace since."""
        if self._tiers is not None:
            return False
        tiers = Tiers.configure(ns, read_only=self.read_only)
        if tiers is None:
            return False
        self._set_tiers(tiers)
        return True

    def _check_writable(self) -> None:
        if self.read_only:
            raise ValueError(f"namespace {self.name!r} was opened read-only; open it writable")

    # ---------------------------------------------------------------- reads
    def get(
        self,
        key: str,
        wrap: Callable[[memoryview], Any] | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Any:
        """The value of *key*: a read-only view (or ``wrap(view)``), ``None`` if missing.

        Without *byte_range*, a value in shared memory is the cached view of its
        mapping (and *wrap* of it, made once per mapping): zero copy.
        """
        if byte_range is None:
            value = self._ns.read(key, wrap)
            if value is not None and value is not SPILLED:
                return value
        return self._run(lambda ns: self._get(ns, key, wrap, byte_range), _is_none)

    def _get(
        self,
        ns: Namespace,
        key: str,
        wrap: Callable[[memoryview], Any] | None,
        byte_range: ByteRequest | None,
    ) -> Any:
        for _ in range(8):
            value = ns.read(key)
            if value is None:
                return None
            if value is not SPILLED:
                view = slice_view(value, byte_range)
                return view if wrap is None else wrap(view)
            tiers = self._tiers
            if tiers is None and not self._noticed_tiering(ns):
                return None  # a symlink in a plain namespace: never followed
            tiers = self._tiers
            assert tiers is not None
            if tiers.spill is None:
                return None
            marker = ns.lstat(key)
            if marker is None or not stat.S_ISLNK(marker.st_mode):
                continue  # replaced (or removed) since: look again
            buf = get_sync(tiers.spill, key, None, byte_range)
            if buf is not None:
                view = _view(buf)
                return view if wrap is None else wrap(view)
            now = ns.lstat(key)
            if now is not None and now.st_ino == marker.st_ino:
                raise SpillMissingError(
                    errno.EIO,
                    f"key {key!r} of namespace {self.name!r} spilled, but its spill store "
                    f"{tiers.spill!r} has no value for it; the spill location was changed "
                    "or cleared behind shmstore's back",
                )
            # Rewritten or deleted while we read the spill store: look again.
        raise OSError(f"key {key!r} of namespace {self.name!r} keeps changing while being read")

    def exists(self, key: str) -> bool:
        """Whether *key* holds a value (in either tier)."""
        return self._run(lambda ns: self._kind(ns, key) == "file", _is_false)

    def _kind(self, ns: Namespace, key: str) -> str | None:
        st = ns.lstat(key)
        if st is None:
            return None
        if stat.S_ISREG(st.st_mode):
            return "file"
        if stat.S_ISDIR(st.st_mode):
            return "directory"
        if self._tiers is not None or self._noticed_tiering(ns):
            return "file"  # a spill marker
        return None

    def stat(self, key: str) -> Stat | None:
        """``(type, size, mtime)`` of the value or directory *key*; ``None`` if neither."""
        return self._run(lambda ns: self._stat(ns, key), _is_none)

    def _stat(self, ns: Namespace, key: str) -> Stat | None:
        st = ns.lstat(key)
        if st is None:
            return None
        if stat.S_ISREG(st.st_mode):
            return ("file", st.st_size, st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            return ("directory", 0, st.st_mtime)
        if self._tiers is None and not self._noticed_tiering(ns):
            return None
        return ("file", self._spilled_size(key), st.st_mtime)

    def _spilled_size(self, key: str) -> int:
        tiers = self._tiers
        if tiers is None or tiers.spill is None:
            return 0
        return int(call_sync(tiers.spill, "getsize", key))

    def getsize(self, key: str) -> int:
        """Size of the value *key* in bytes (``FileNotFoundError`` if missing)."""
        st = self.stat(key)
        if st is None or st[0] != "file":
            raise FileNotFoundError(errno.ENOENT, f"no key {key!r} in namespace {self.name!r}", key)
        return st[1]

    def getsize_prefix(self, prefix: str) -> int:
        """Total size of the values under the directory *prefix*."""
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        total = 0
        for key in self.list_prefix(prefix):
            st = self._stat(self._ns, key)
            total += st[1] if st is not None and st[0] == "file" else 0
        return total

    def list_prefix(self, prefix: str) -> list[str]:
        """Every key that starts with *prefix* (a plain string prefix)."""
        return self._run(
            lambda ns: list(ns.iter_keys(prefix, markers=self._tiers is not None)), _is_empty
        )

    def list_dir(self, prefix: str) -> list[str]:
        """The names directly under the directory *prefix* (keys and directories)."""
        return self._run(lambda ns: ns.list_dir(prefix, markers=self._tiers is not None), _is_empty)

    # --------------------------------------------------------------- writes
    def set(self, key: str, data: Any, *, exclusive: bool = False) -> bool:
        """Write *data* (any C-contiguous buffer) to *key*, in the tier it fits in.

        Returns False if *exclusive* and the key existed (nothing written).
        """
        self._check_writable()
        if self._tiers is None:
            # The common case first, without the closure: the namespace is the
            # one this handle holds (a destroyed one raises, and _run moves on).
            try:
                return self._ns.write(key, data, exclusive=exclusive, recycle=True)
            except FileNotFoundError:
                pass
        return self._run(lambda ns: self._set(ns, key, data, exclusive), _never)

    def _set(self, ns: Namespace, key: str, data: Any, exclusive: bool) -> bool:
        tiers = self._tiers
        if tiers is None:
            return ns.write(key, data, exclusive=exclusive, recycle=True)
        placed, old = tiers.to_shm(key, data, exclusive=exclusive)
        if placed is None:
            return False
        spill = tiers.spill
        if spill is None:
            return True
        # Each step that changes a key's spill copy holds the key's lock, so a
        # writer removing the copy its value replaced never removes the copy
        # a concurrent spilling writer just made (a marker to nothing).
        if placed:
            if is_metadata_key(key):
                call_sync(spill, "set", key, _buffer(data))  # the mirror
            elif old is not None and stat.S_ISLNK(old.st_mode):
                with _key_lock(ns, key):
                    cur = ns.lstat(key)
                    if cur is not None and stat.S_ISREG(cur.st_mode):
                        call_sync(spill, "delete", key)  # our value is in place
            return True
        with _key_lock(ns, key):
            # Spill first, then the marker: a reader sees the old value or the new one.
            call_sync(spill, "set_if_not_exists" if exclusive else "set", key, _buffer(data))
            return tiers.mark(key, exclusive=exclusive)

    def delete(self, key: str) -> bool:
        """Remove *key* from every tier; return whether it existed."""
        self._check_writable()
        return self._run(lambda ns: self._delete(ns, key), _is_false)

    def _delete(self, ns: Namespace, key: str) -> bool:
        tiers = self._tiers
        if tiers is None:
            old = ns.delete(key, recycle=True)
            return old is not None
        spill = tiers.spill
        if spill is None:
            return tiers.drop(key) is not None
        with _key_lock(ns, key):
            old = tiers.drop(key)
            if is_metadata_key(key) or (old is not None and stat.S_ISLNK(old.st_mode)):
                call_sync(spill, "delete", key)
        return old is not None

    def delete_dir(self, prefix: str) -> None:
        """Remove every key under the directory *prefix* (``""``: every key), every tier."""
        self._check_writable()
        self._run(lambda ns: self._delete_dir(ns, prefix), _always)

    def _delete_dir(self, ns: Namespace, prefix: str) -> None:
        base = prefix.rstrip("/")
        tiers = self._tiers
        if tiers is None:
            ns.delete_prefix(base, recycle=True)
            return
        below = f"{base}/" if base else ""
        spilled = False
        with tiers.usage.locked() as st:
            freed = 0
            for key in ns.iter_keys(below, markers=True):
                kst = ns.lstat(key)
                if kst is None:
                    continue
                if stat.S_ISREG(kst.st_mode):
                    freed += kst.st_size
                    spilled = spilled or is_metadata_key(key)
                else:
                    spilled = True
            ns.delete_prefix(base)
            st.used = ns.value_bytes() if not base else st.used - freed
        if tiers.spill is not None and spilled:
            with contextlib.suppress(FileNotFoundError):
                if base:
                    call_sync(tiers.spill, "delete_dir", base)
                else:
                    call_sync(tiers.spill, "clear")

    def clear(self) -> None:
        """Remove every key; the namespace, its settings and every handle stay."""
        self.delete_dir("")

    # ------------------------------------------------------------- lifetime
    def destroy(self, *, only_created: bool = False) -> bool:
        """Unlink the namespace (its shared-memory tier); return whether this call did.

        With *only_created*, only the namespace that opening this keyspace
        created is destroyed, never one made since under the same name. The
        keyspace then follows a namespace created later, like every handle.
        """
        ns = self._ns
        if only_created and (self._own is None or ns is not self._own):
            return False
        if not ns.alive():
            if only_created:
                return False
            self._moved(ns)  # FileNotFoundError naming it if there is none
            ns = self._ns
        return ns.destroy()


def _is_none(value: Any) -> bool:
    return value is None


def _is_false(value: Any) -> bool:
    return value is False


def _is_empty(value: Any) -> bool:
    return not value


def _never(value: Any) -> bool:
    return False


def _always(value: Any) -> bool:
    return True
