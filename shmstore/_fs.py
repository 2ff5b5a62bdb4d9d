"""``SharedMemoryFileSystem``: the fsspec face of shared-memory namespaces (protocol ``shm``).

URLs are ``shm://<namespace>/<key>``. The filesystem is a second view of the
very keys :class:`~shmstore.SharedMemoryStore` serves: a file written with
``fs.pipe_file("shm://ns/a/b", ...)`` is the key ``a/b`` of
``SharedMemoryStore("ns")`` and the reverse.

Layout as fsspec sees it
------------------------
- ``""`` (or ``"/"``) is the root: ``ls`` lists the namespaces of this user.
- A namespace is a top-level directory, like a bucket of an object store:
  ``mkdir("ns")`` creates it, writing any key under it creates it,
  ``rm("ns", recursive=True)`` clears it (its keys go; the namespace, its
  settings and every open handle stay, so zarr's ``mode="w"`` never destroys
  it) and ``rmdir("ns")`` (or ``rm("ns")``) destroys an empty one.
- Inside a namespace, directories are implicit, as in an object store: they
  exist while keys lie beneath them and vanish with their last key.
  ``mkdir("ns/a")`` therefore only makes sure the namespace exists; it does not
  create an empty directory (``exists("ns/a")`` stays false until a key is
  written under it). This keeps every directory visible to every process and
  to any Zarr reader of the namespace, and never leaves an empty one that
  zarr would list as a member.

Speed
-----
zarr wraps a synchronous fsspec filesystem in a thread-hopping adapter, so this
class is an :class:`fsspec.asyn.AsyncFileSystem` (``async_impl = True``, PITFALLS
11). Each operation is written once, as a coroutine over the segment layer that
never suspends for a plain namespace: zarr awaits it on its own loop, and the
public synchronous methods run it to completion in place (no loop, no thread
hop). The coroutine ``_cat_file`` returns a read-only ``memoryview`` of the
mapped segment (zero copy: zarr's ``FsspecStore.get`` wraps it in a ``Buffer``
as it is), while the synchronous ``cat_file``, ``cat`` and ``cat_ranges``
return ``bytes`` as fsspec users expect.

Keyspaces
---------
Every operation is one call of the namespace's
:class:`~shmstore._keyspace.Keyspace`, the object ``SharedMemoryStore`` uses
too: tiering (capacity, spilled keys) and the stale-handle rule live there. A
tiered namespace's spill store may do real I/O, so its calls run in a thread,
and synchronous calls on it run on fsspec's I/O loop.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import errno
import io
import mmap
import os
from glob import has_magic
from typing import TYPE_CHECKING, Any, ClassVar

from fsspec.asyn import AsyncFileSystem, get_loop, sync
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem, make_instance
from fsspec.utils import stringify_path

from shmstore._errors import ForeignEntryError, NamespaceDestroyedError
from shmstore._keyspace import Keyspace, Stat, in_thread
from shmstore._names import check_key, is_metadata_key, resolve_root, strip_scheme
from shmstore._namespace import is_namespace_dir, iter_namespaces

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable

__all__ = ["SharedMemoryFile", "SharedMemoryFileSystem"]

_DIR = "directory"
_FILE = "file"
#: Keyspaces the filesystems of a process keep open, together (each holds a
#: namespace's descriptors; fsspec keeps every filesystem instance it made).
_KEYSPACES = 64
# (root, namespace, mode) -> its keyspace, the most recently used last
_keyspaces: collections.OrderedDict[tuple[str, str, int], Keyspace] = collections.OrderedDict()
# Namespaces found destroyed behind the filesystems' back (see _keyspace).
_destroyed: set[tuple[str, str, int]] = set()


def _now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends to completion, in place.

    The operations on plain namespaces only touch shared memory, so their
    coroutines finish on the first step, without an event loop.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a shared-memory operation suspended; it needs an event loop")


class _RootResolvingCache(type(AsyncFileSystem)):  # type: ignore[misc]
    """fsspec's instance cache, keyed by the *resolved* root; pickles keep only a given one.

    fsspec caches filesystem instances by their arguments. ``root=None`` means
    ``$SHMSTORE_ROOT`` at the time of the call, so it is resolved before the
    cache sees it, as the private option ``_env_root``: a changed
    ``$SHMSTORE_ROOT`` gives a new instance. That option never travels: a
    pickled filesystem (sent to a Dask worker, say) carries its root only if
    the caller gave one, so the unpickling host resolves its own
    (:meth:`__reduce__`, docs/multihost.md).
    """

    #: Whether the first positional argument is the root (fsspec's chained
    #: filesystems take ``fo`` there).
    _root_positional = True

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args and cls._root_positional:
            if "root" in kwargs:
                raise TypeError(f"{cls.__name__}() got root both by position and by name")
            kwargs["root"], args = args[0], args[1:]
        kwargs.pop("_env_root", None)  # from to_dict(): resolve it here, anew
        root = kwargs.pop("root", None)
        if root is None:
            kwargs["_env_root"] = resolve_root(None)
        else:
            kwargs["root"] = resolve_root(stringify_path(root))
        return super().__call__(*args, **kwargs)


def host_reduce(fs: AbstractFileSystem) -> tuple[Any, ...]:
    """``__reduce__`` of a filesystem made by :class:`_RootResolvingCache`.

    Drops the root resolved from the environment, so the unpickling process
    resolves its own.
    """
    options = {k: v for k, v in fs.storage_options.items() if k != "_env_root"}
    return make_instance, (type(fs), fs.storage_args, options)


class SharedMemoryFileSystem(AsyncFileSystem, metaclass=_RootResolvingCache):
    """fsspec filesystem over shmstore namespaces: ``shm://<namespace>/<key>``.

    Registered under the protocol ``"shm"`` through the ``fsspec.specs`` entry
    point, so ``fsspec.filesystem("shm")``, ``fsspec.open("shm://ns/key")`` and
    ``zarr.open_array("shm://ns/array")`` work without importing shmstore.

    Parameters
    ----------
    root
        Shared-memory directory. Defaults to ``$SHMSTORE_ROOT``, else
        ``/dev/shm``; resolved when the filesystem is made. Passed by URL users
        as ``storage_options={"root": ...}``. Only a root given here travels
        when the filesystem is pickled; otherwise the unpickling process
        resolves its own.
    mode
        Permission bits of the files of namespaces this filesystem creates
        (default ``0o600``, owner only).
    **kwargs
        fsspec's options (``asynchronous``, ``loop``, ``batch_size``, ...).

    Notes
    -----
    Writes are atomic: ``pipe_file`` and files opened for writing replace the
    key in one ``rename`` when they complete, so readers in any process see
    the old value or the new one. A file opened for reading keeps showing the
    value it opened, even if the key is replaced meanwhile.

    Examples
    --------
    >>> import fsspec
    >>> fs = fsspec.filesystem("shm")
    >>> fs.pipe_file("shm://doc-fs/greeting", b"hello")
    >>> fs.cat_file("shm://doc-fs/greeting")
    b'hello'
    >>> fs.rm("doc-fs", recursive=True)
    """

    protocol: ClassVar[str | tuple[str, ...]] = "shm"
    root_marker = ""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        mode: int = 0o600,
        _env_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = _env_root if root is None and _env_root else resolve_root(root)
        self.mode = mode

    def __reduce__(self) -> tuple[Any, ...]:
        # A root left to $SHMSTORE_ROOT belongs to the host: it does not travel.
        return host_reduce(self)

    # ------------------------------------------------------------------ paths
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        # docstring inherited
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return strip_scheme(stringify_path(path))

    def _split(self, path: str) -> tuple[str, str]:
        """Return ``(namespace, key)`` of *path*; either may be ``""``."""
        name, _, key = self._strip_protocol(path).partition("/")
        return name, key

    def _split_key(self, path: str, refusal: str) -> tuple[str, str]:
        """Return ``(namespace, key)`` of a *path* that must name a key.

        A path naming a namespace raises ``IsADirectoryError`` with the
        message *refusal*, formatted with the namespace as ``{name}``.
        """
        name, key = self._split(path)
        if not key:
            raise IsADirectoryError(errno.EISDIR, refusal.format(name=name), path)
        return name, key

    def _split_removable(self, path: str) -> tuple[str, str, Keyspace]:
        """Return namespace, key and keyspace of *path*, which must name a namespace."""
        name, key = self._split(path)
        if not name:
            raise ValueError(
                f"refusing to remove every namespace in {self.root}; remove them by name"
            )
        return name, key, self._keyspace(name)

    def _keyspace(self, name: str, *, create: bool = False, strict: bool = False) -> Keyspace:
        """The keyspace of namespace *name* (one ``stat`` to check it is still there).

        With *strict* (a value read, a chunk write), a namespace that was
        destroyed while this process was using it, by another process or
        another handle, is :class:`NamespaceDestroyedError`: never read as
        missing keys (fill values to zarr) nor re-created by a chunk.
        """
        cache = _keyspaces
        ident = (self.root, name, self.mode)
        ks = cache.get(ident)
        if ks is not None and ks.ns.alive():
            with contextlib.suppress(KeyError):
                cache.move_to_end(ident)
            return ks
        if ks is not None:
            _destroyed.add(ident)  # behind our back: the filesystem did not do it
            with contextlib.suppress(KeyError):
                del cache[ident]
        if strict and ident in _destroyed and not is_namespace_dir(self.root, name):
            raise NamespaceDestroyedError(name, self.root)
        try:
            ks = Keyspace(name, self.root, create=create, mode=self.mode)
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT,
                f"no shmstore namespace {name!r} in {self.root}; writing a key under "
                f"shm://{name}/ or fs.mkdir({name!r}) creates it",
                f"shm://{name}",
            ) from None
        _destroyed.discard(ident)
        cache[ident] = ks
        while len(cache) > _KEYSPACES:
            with contextlib.suppress(KeyError):
                cache.popitem(last=False)
        return ks

    def _destroy(self, name: str, ks: Keyspace) -> None:
        """Destroy namespace *name* on purpose (not behind this filesystem's back)."""
        ks.destroy()
        with contextlib.suppress(KeyError):
            del _keyspaces[(self.root, name, self.mode)]

    def _namespaces(self) -> list[str]:
        """Names of this user's namespaces in the root."""
        return iter_namespaces(self.root)

    @staticmethod
    def _info_dict(path: str, st: Stat) -> dict[str, Any]:
        kind, size, mtime = st
        out: dict[str, Any] = {"name": path, "size": size, "type": kind}
        if mtime is not None:
            out["mtime"] = mtime
        return out

    # ------------------------------------------------------------ keyspaces
    @staticmethod
    async def _call(ks: Keyspace, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``: in place for a plain namespace, in a thread for a tiered one.

        A tiered namespace's spill store may really wait on I/O, which must not
        block an event loop.
        """
        if ks.tiered:
            return await in_thread(fn, *args)
        return fn(*args)

    def _run(self, paths: Iterable[str], coro: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the coroutine function *coro* for a synchronous caller.

        In place for plain namespaces; on fsspec's I/O loop if one of *paths*
        lies in a tiered namespace (its coroutines then wait on a thread).
        """
        for path in paths:
            name = self._split(path)[0]
            if not name:
                continue
            try:
                tiered = self._keyspace(name).tiered
            except (OSError, ValueError):
                continue  # missing or foreign: the operation reports it
            if tiered:
                return sync(get_loop(), coro, *args, **kwargs)
        return _now(coro(*args, **kwargs))

    async def _kstat(self, ks: Keyspace, key: str) -> Stat | None:
        return await self._call(ks, ks.stat, key)

    async def _klist_dir(self, ks: Keyspace, key: str) -> list[str]:
        return sorted(await self._call(ks, ks.list_dir, key))

    async def _kkeys(self, ks: Keyspace, prefix: str) -> list[str]:
        return sorted(await self._call(ks, ks.list_prefix, prefix))

    # ------------------------------------------------------------ coroutines
    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        if not path:
            return {"name": "", "size": 0, "type": _DIR}
        name, _, key = path.partition("/")
        try:
            ns = self._keyspace(name)
        except (ForeignEntryError, ValueError) as e:
            raise FileNotFoundError(errno.ENOENT, str(e), path) from e
        if not key:
            return {"name": name, "size": 0, "type": _DIR}
        try:
            st = await self._kstat(ns, key)
        except ValueError as e:  # a key that cannot exist (".shmstore/...", "a//b")
            raise FileNotFoundError(errno.ENOENT, str(e), path) from e
        if st is None:
            raise FileNotFoundError(
                errno.ENOENT, f"no key or directory {key!r} in namespace {name!r}", path
            )
        return self._info_dict(path, st)

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        try:
            await self._info(path)
        except (FileNotFoundError, PermissionError):
            return False
        return True

    async def _isdir(self, path: str) -> bool:
        return await self._is_type(path, _DIR)

    async def _isfile(self, path: str) -> bool:
        return await self._is_type(path, _FILE)

    async def _is_type(self, path: str, kind: str) -> bool:
        try:
            return (await self._info(path))["type"] == kind
        except OSError:
            return False

    async def _size(self, path: str) -> int:
        return int((await self._info(path))["size"])

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        if not path:
            names = self._namespaces()
            return [{"name": n, "size": 0, "type": _DIR} for n in names] if detail else names
        name, _, key = path.partition("/")
        ns = self._keyspace(name)
        if key:
            info = await self._info(path)
            if info["type"] == _FILE:
                return [info] if detail else [path]
        entries = await self._klist_dir(ns, key)
        if not detail:
            return [f"{path}/{e}" for e in entries]
        out = []
        for e in entries:
            st = await self._kstat(ns, f"{key}/{e}" if key else e)
            if st is not None:  # removed meanwhile
                out.append(self._info_dict(f"{path}/{e}", st))
        return out

    async def _read(
        self, path: str, start: int | None = None, end: int | None = None
    ) -> memoryview:
        """Read-only view of the value at *path*, sliced like ``bytes`` (zero copy)."""
        name, key = self._split_key(
            path, "shm://{name} is a namespace, not a file; read shm://{name}/<key>"
        )
        # A value (not a metadata document, whose absence zarr needs to see to
        # create a hierarchy) of a namespace destroyed meanwhile: an error zarr
        # does not take for a missing key.
        strict = not is_metadata_key(key)
        ns = self._keyspace(name, strict=strict)
        try:
            view = await self._call(ns, ns.get, key)
        except FileNotFoundError:
            if not strict or is_namespace_dir(self.root, name):
                raise
            raise NamespaceDestroyedError(name, self.root) from None
        if view is None:
            st = await self._kstat(ns, key)
            if st is not None and st[0] == _DIR:
                raise IsADirectoryError(
                    errno.EISDIR, f"{key!r} in namespace {name!r} is a directory", path
                )
            raise FileNotFoundError(errno.ENOENT, f"no key {key!r} in namespace {name!r}", path)
        if start is not None or end is not None:
            view = view[start:end]
        return view

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> memoryview:
        # A read-only view of the mapping, not bytes: zarr's FsspecStore.get
        # wraps it as it is, so the URL route reads without a copy (PITFALLS 11).
        return await self._read(path, start, end)

    async def _cat_ranges(
        self,
        paths: list[str],
        starts: Any,
        ends: Any,
        max_gap: int | None = None,
        batch_size: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        if max_gap is not None:
            raise NotImplementedError("max_gap is not supported: ranges are read in place")
        if not isinstance(paths, list):
            raise TypeError(f"paths must be a list, got {type(paths).__name__}")
        n = len(paths)
        starts = list(starts) if isinstance(starts, (list, tuple)) else [starts] * n
        ends = list(ends) if isinstance(ends, (list, tuple)) else [ends] * n
        if len(starts) != n or len(ends) != n:
            raise ValueError("paths, starts and ends must have the same length")
        out: list[Any] = []
        for p, s, e in zip(paths, starts, ends, strict=True):
            try:
                out.append(await self._read(p, s, e))
            except Exception as ex:
                if on_error != "return":
                    raise
                out.append(ex)
        return out

    async def _pipe_file(
        self, path: str, value: Any, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        if mode not in ("overwrite", "create"):
            raise ValueError(f"pipe_file mode must be 'overwrite' or 'create', got {mode!r}")
        name, key = self._split_key(
            path, "cannot write to shm://{name}: it names a namespace; write shm://{name}/<key>"
        )
        if isinstance(value, str):
            raise TypeError(f"pipe_file value for {path!r} must be bytes-like, not str")
        check_key(key)
        # A Zarr metadata document creates the namespace it names, as zarr and
        # xarray do when they write a new hierarchy by URL; a chunk written into
        # a namespace destroyed meanwhile is refused rather than leaving a stray.
        ns = self._keyspace(name, create=True, strict=not is_metadata_key(key))
        if not await self._call(ns, lambda: ns.set(key, value, exclusive=mode == "create")):
            raise FileExistsError(
                errno.EEXIST, f"key {key!r} already exists in namespace {name!r}", path
            )

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        name, key = self._split_key(
            path, "shm://{name} is a namespace; remove it with rm({name!r}, recursive=True)"
        )
        ns = self._keyspace(name)
        if await self._call(ns, ns.delete, key):
            return
        info = await self._info(path)  # FileNotFoundError if missing
        if info["type"] == _DIR and await self._klist_dir(ns, key):
            raise IsADirectoryError(
                errno.EISDIR, f"{key!r} in namespace {name!r} is a directory", path
            )

    async def _rm_tree(self, path: str) -> None:
        _, key, ns = self._split_removable(path)
        if not key:
            # Clearing keeps the namespace, its settings and every open handle
            # (zarr's mode="w" comes here); rmdir() destroys an empty one.
            await self._call(ns, ns.clear)
            return
        info = await self._info(path)
        if info["type"] == _DIR:
            await self._call(ns, ns.delete_dir, key)
        else:
            await self._call(ns, ns.delete, key)

    async def _rm_entry(self, path: str, recursive: bool) -> None:
        """Remove one path of an expanded listing (children come first)."""
        name, key, ns = self._split_removable(path)
        if not key:
            if not await self._kkeys(ns, ""):
                self._destroy(name, ns)
            elif not recursive:
                raise IsADirectoryError(
                    errno.EISDIR,
                    f"shm://{name} is a namespace with keys; pass recursive=True to destroy it",
                    path,
                )
            return
        st = await self._kstat(ns, key)
        if st is None:
            if recursive:
                return  # an implicit directory, pruned with its last key
            raise FileNotFoundError(errno.ENOENT, f"no key {key!r} in namespace {name!r}", path)
        if st[0] == _FILE:
            await self._call(ns, ns.delete, key)
        elif not recursive and await self._klist_dir(ns, key):
            raise IsADirectoryError(
                errno.EISDIR,
                f"{key!r} in namespace {name!r} is a directory; pass recursive=True",
                path,
            )

    async def _rm(
        self,
        path: Any,
        recursive: bool = False,
        batch_size: int | None = None,
        maxdepth: int | None = None,
        **kwargs: Any,
    ) -> None:
        if recursive and maxdepth is None:
            # Whole subtrees: one rename out of sight per subtree, not one
            # unlink per key, so no reader sees a half-removed array.
            tops: list[str] = []
            for p in [path] if isinstance(path, str) else list(path):
                if has_magic(p):
                    tops.extend(await self._expand_path(p))
                else:
                    tops.append(self._strip_protocol(p))
            for p in _outermost(tops):
                await self._rm_tree(p)
            return
        paths = await self._expand_path(path, recursive=recursive, maxdepth=maxdepth)
        for p in reversed(paths):
            await self._rm_entry(p, recursive)

    async def _rmdir(self, path: str) -> None:
        name, key = self._split(path)
        ns = self._keyspace(name)
        if key and (await self._info(path))["type"] != _DIR:
            raise NotADirectoryError(errno.ENOTDIR, f"{key!r} is a key, not a directory", path)
        if await self._kkeys(ns, f"{key}/" if key else ""):
            raise OSError(errno.ENOTEMPTY, f"{path!r} is not empty", path)
        if not key:
            self._destroy(name, ns)
        # an empty directory inside a namespace is implicit: nothing to remove

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        name, key = self._split(path)
        if not name:
            raise FileExistsError(errno.EEXIST, f"the root {self.root} exists", path)
        if not key:
            if await self._exists(name):
                raise FileExistsError(
                    errno.EEXIST, f"namespace {name!r} already exists in {self.root}", path
                )
            self._keyspace(name, create=True)
            return
        check_key(key)
        self._keyspace(name, create=create_parents)
        if await self._isfile(path):
            raise FileExistsError(errno.EEXIST, f"{key!r} is a key in namespace {name!r}", path)

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        name, key = self._split(path)
        if not name:
            if not exist_ok:
                raise FileExistsError(errno.EEXIST, f"the root {self.root} exists", path)
            return
        if key:
            check_key(key)
        if not exist_ok and await self._exists(path):
            raise FileExistsError(errno.EEXIST, f"{path!r} already exists", path)
        self._keyspace(name, create=True)
        if key and await self._isfile(path):
            raise FileExistsError(errno.EEXIST, f"{key!r} is a key in namespace {name!r}", path)

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        if await self._isdir(path1):
            await self._makedirs(path2, exist_ok=True)
            return
        await self._pipe_file(path2, await self._read(path1))

    async def _get_file(self, rpath: str, lpath: Any, **kwargs: Any) -> None:
        if await self._isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        view = await self._read(rpath)
        if hasattr(lpath, "write"):
            lpath.write(view)
            return
        with open(lpath, "wb") as f:
            f.write(view)

    async def _put_file(
        self, lpath: Any, rpath: str, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        if hasattr(lpath, "read"):
            await self._pipe_file(rpath, lpath.read(), mode=mode)
            return
        if os.path.isdir(lpath):
            await self._makedirs(rpath, exist_ok=True)
            return
        with open(lpath, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                await self._pipe_file(rpath, b"", mode=mode)
                return
            # Map the local file instead of reading it into a bytes object.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                await self._pipe_file(rpath, m, mode=mode)

    async def _find(
        self, path: str, maxdepth: int | None = None, withdirs: bool = False, **kwargs: Any
    ) -> Any:
        detail = kwargs.pop("detail", False)
        path = self._strip_protocol(path)
        name, _, key = path.partition("/")
        if maxdepth is not None or withdirs or kwargs or not name:
            return await super()._find(
                path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs
            )
        # Fast path (zarr's list and list_prefix): one walk of the namespace.
        try:
            ns = self._keyspace(name)
            st = await self._kstat(ns, key) if key else None
        except (FileNotFoundError, ForeignEntryError, ValueError):
            return {} if detail else []
        if st is not None and st[0] == _FILE:
            return {path: self._info_dict(path, st)} if detail else [path]
        keys = await self._kkeys(ns, f"{key}/" if key else "")
        if not detail:
            return [f"{name}/{k}" for k in keys]
        out = {}
        for k in keys:
            kst = await self._kstat(ns, k)
            if kst is not None:
                out[f"{name}/{k}"] = self._info_dict(f"{name}/{k}", kst)
        return out

    # ----------------------------------------------------- synchronous API
    # fsspec would run each coroutine on its I/O thread; these run them in
    # place instead (see _run), and give bytes where fsspec users expect bytes.
    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        # docstring inherited
        return self._run([path], self._info, path)

    def exists(self, path: str, **kwargs: Any) -> bool:
        # docstring inherited
        return self._run([path], self._exists, path)

    def isdir(self, path: str) -> bool:
        # docstring inherited
        return self._run([path], self._isdir, path)

    def isfile(self, path: str) -> bool:
        # docstring inherited
        return self._run([path], self._isfile, path)

    def size(self, path: str) -> int:
        # docstring inherited
        return self._run([path], self._size, path)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        # docstring inherited
        return self._run([path], self._ls, path, detail=detail)

    def modified(self, path: str) -> datetime.datetime:
        """Time of the last change of *path* (UTC)."""
        info = self.info(path)
        mtime = info.get("mtime")
        if mtime is None:  # the root or a namespace: its directory's time
            name = info["name"].partition("/")[0]
            mtime = self._keyspace(name).ns.mtime() if name else os.stat(self.root).st_mtime
        return datetime.datetime.fromtimestamp(mtime, tz=datetime.UTC)

    def _read_now(self, path: str, start: int | None = None, end: int | None = None) -> memoryview:
        return self._run([path], self._read, path, start, end)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        # docstring inherited
        return bytes(self._read_now(path, start, end))

    def cat(
        self, path: Any, recursive: bool = False, on_error: str = "raise", **kwargs: Any
    ) -> Any:
        # docstring inherited (fsspec's synchronous version: values are bytes)
        return AbstractFileSystem.cat(self, path, recursive=recursive, on_error=on_error, **kwargs)

    def cat_ranges(
        self,
        paths: list[str],
        starts: Any,
        ends: Any,
        max_gap: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        # docstring inherited (fsspec's synchronous version: values are bytes)
        return AbstractFileSystem.cat_ranges(
            self, paths, starts, ends, max_gap=max_gap, on_error=on_error, **kwargs
        )

    def pipe_file(self, path: str, value: Any, mode: str = "overwrite", **kwargs: Any) -> None:
        # docstring inherited
        self._run([path], self._pipe_file, path, value, mode=mode)

    def rm_file(self, path: str) -> None:
        # docstring inherited
        self._run([path], self._rm_file, path)

    def rmdir(self, path: str) -> None:
        # docstring inherited
        self._run([path], self._rmdir, path)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Create a namespace; inside one, only make sure the namespace exists.

        Directories inside a namespace are implicit (see the module notes).

        Raises
        ------
        FileExistsError
            If *path* is an existing namespace or key.
        FileNotFoundError
            If the namespace is missing and *create_parents* is false.
        """
        self._run([path], self._mkdir, path, create_parents=create_parents)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        # docstring inherited
        self._run([path], self._makedirs, path, exist_ok=exist_ok)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        # docstring inherited
        self._run([path1, path2], self._cp_file, path1, path2)

    def get_file(self, rpath: str, lpath: Any, **kwargs: Any) -> None:
        # docstring inherited
        self._run([rpath], self._get_file, rpath, lpath)

    def put_file(self, lpath: Any, rpath: str, mode: str = "overwrite", **kwargs: Any) -> None:
        # docstring inherited
        self._run([rpath], self._put_file, lpath, rpath, mode=mode)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: Any = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SharedMemoryFile:
        # docstring inherited
        return SharedMemoryFile(
            self,
            path,
            mode,
            block_size=block_size,
            autocommit=autocommit,
            cache_options=cache_options,
            **kwargs,
        )


def _outermost(paths: Iterable[str]) -> list[str]:
    """Drop every path that lies below another one of *paths*."""
    out: list[str] = []
    for p in sorted(set(paths)):
        if not any(p == q or p.startswith(f"{q}/") or not q for q in out):
            out.append(p)
    return out


class SharedMemoryFile(AbstractBufferedFile):
    """A file of :class:`SharedMemoryFileSystem`.

    Read mode serves a snapshot: the value as it was when the file was opened,
    from the mapped segment (seekable, no read-ahead buffer needed). Write modes
    collect the data and replace the key atomically on close (or on
    :meth:`commit` inside an fsspec transaction); a ``with`` block that raises
    leaves the key as it was. ``"xb"`` fails with
    ``FileExistsError`` if the key exists, ``"ab"`` starts from its value.
    """

    def __init__(
        self,
        fs: SharedMemoryFileSystem,
        path: str,
        mode: str = "rb",
        block_size: Any = "default",
        autocommit: bool = True,
        cache_type: str = "none",
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        path = fs._strip_protocol(path)
        self._view: memoryview | None = None
        self._abandoned = False
        if mode == "rb":
            self._view = fs._read_now(path)
            kwargs["size"] = len(self._view)
        elif mode in ("wb", "xb", "ab"):
            name, key = fs._split_key(path, "shm://{name} names a namespace, not a file")
            check_key(key)
            if mode == "xb" and fs.exists(path):
                raise FileExistsError(
                    errno.EEXIST, f"key {key!r} already exists in namespace {name!r}", path
                )
        super().__init__(
            fs,
            path,
            mode,
            block_size=block_size,
            autocommit=autocommit,
            cache_type=cache_type,
            cache_options=cache_options,
            **kwargs,
        )
        if mode == "ab":
            with contextlib.suppress(FileNotFoundError):
                self.buffer.write(fs._read_now(path))
            self.loc = self.buffer.tell()

    def _fetch_range(self, start: int, end: int) -> bytes:
        assert self._view is not None
        return self._view[start:end].tobytes()

    def _upload_chunk(self, final: bool = False) -> bool:
        # Keep everything in one buffer until the end: the key is replaced in
        # one atomic write, never grown in place.
        if not final:
            return False
        if self._abandoned:
            self.discard()
            return True
        if self.autocommit:
            self.commit()
            return True
        return False

    def commit(self) -> None:
        """Replace the key with what was written, atomically."""
        buffer, self.buffer = self.buffer, io.BytesIO()
        view = buffer.getbuffer()
        try:
            self.fs.pipe_file(self.path, view, mode="create" if self.mode == "xb" else "overwrite")
        finally:
            view.release()

    def discard(self) -> None:
        """Drop what was written; the key keeps its value."""
        self.buffer = io.BytesIO()

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        # A ``with`` block that fails leaves the key as it was: half-written
        # data never becomes visible.
        if exc_type is not None and self.mode != "rb":
            self._abandoned = True
        self.close()

    def close(self) -> None:
        # docstring inherited
        super().close()
        self._view = None
