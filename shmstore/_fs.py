"""``SharedMemoryFileSystem``: the fsspec face of shared-memory namespaces (protocol ``shm``).

URLs are ``shm://<namespace>/<key>``. The filesystem is a second view of the
very segments :class:`~shmstore.SharedMemoryStore` serves: a file written with
``fs.pipe_file("shm://ns/a/b", ...)`` is the key ``a/b`` of
``SharedMemoryStore("ns")`` and the reverse.

Layout as fsspec sees it
------------------------
- ``""`` (or ``"/"``) is the root: ``ls`` lists the namespaces of this user.
- A namespace is a top-level directory, like a bucket of an object store:
  ``mkdir("ns")`` creates it, ``rm("ns", recursive=True)`` destroys it, and
  writing any key under it creates it.
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
11). Every operation is written once as a synchronous method that touches shared
memory directly; the coroutines fsspec and zarr call run it in place, without
a thread hop. The coroutine ``_cat_file`` returns a read-only ``memoryview`` of
the mapped segment (zero copy: zarr's ``FsspecStore.get`` wraps it in a
``Buffer`` as it is), while the public synchronous ``cat_file``, ``cat`` and
``cat_ranges`` return ``bytes`` as fsspec users expect.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import io
import mmap
import os
import stat
from glob import has_magic
from typing import TYPE_CHECKING, Any, ClassVar

from fsspec.asyn import AsyncFileSystem
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from fsspec.utils import stringify_path

from shmstore._errors import ForeignEntryError
from shmstore._segments import META, Namespace, check_key, resolve_root

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["SharedMemoryFile", "SharedMemoryFileSystem"]

_DIR = "directory"
_FILE = "file"


class _RootResolvingCache(type(AsyncFileSystem)):  # type: ignore[misc]
    """fsspec's instance cache, keyed by the *resolved* root.

    fsspec caches filesystem instances by their arguments. ``root=None`` means
    ``$SHMSTORE_ROOT`` at the time of the call, so it is resolved before the
    cache sees it: a changed ``$SHMSTORE_ROOT`` gives a new instance, and the
    root an instance was made for travels with it when it is pickled (to a
    Dask worker, say), instead of being re-read from the worker's environment.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args:
            if "root" in kwargs:
                raise TypeError("SharedMemoryFileSystem() got root both by position and by name")
            kwargs["root"], args = args[0], args[1:]
        root = kwargs.get("root")
        kwargs["root"] = resolve_root(None if root is None else stringify_path(root))
        return super().__call__(*args, **kwargs)


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
        as ``storage_options={"root": ...}``.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = resolve_root(root)
        self.mode = mode

    # ------------------------------------------------------------------ paths
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        # docstring inherited
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        if path.startswith("shm://"):
            path = path[6:]
        elif path.startswith("shm::"):
            path = path[5:]
        return path.strip("/")

    def _split(self, path: str) -> tuple[str, str]:
        """Return ``(namespace, key)`` of *path*; either may be ``""``."""
        name, _, key = self._strip_protocol(path).partition("/")
        return name, key

    def _handle(self, name: str, *, create: bool = False) -> Namespace:
        try:
            return Namespace.open(name, self.root, create=create, mode=self.mode)
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT,
                f"no shmstore namespace {name!r} in {self.root}; writing a key under "
                f"shm://{name}/ or fs.mkdir({name!r}) creates it",
                f"shm://{name}",
            ) from None

    def _namespaces(self) -> list[str]:
        """Names of this user's namespaces in the root.

        Skips named arrays (plain files), hidden and transient entries
        (``.shmstore-*``: namespaces being created or destroyed), directories
        without shmstore bookkeeping, and other users' entries.
        """
        uid = os.geteuid()
        names = []
        with os.scandir(self.root) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    meta = os.stat(os.path.join(entry.path, META), follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(meta.st_mode):
                    names.append(entry.name)
        return sorted(names)

    @staticmethod
    def _entry(path: str, st: os.stat_result) -> dict[str, Any]:
        if stat.S_ISDIR(st.st_mode):
            return {"name": path, "size": 0, "type": _DIR, "mtime": st.st_mtime}
        return {"name": path, "size": st.st_size, "type": _FILE, "mtime": st.st_mtime}

    def _lstat(self, ns: Namespace, key: str, path: str) -> os.stat_result:
        try:
            st = ns.lstat(key)
        except ValueError as e:
            raise FileNotFoundError(errno.ENOENT, str(e), path) from e
        if st is None:
            raise FileNotFoundError(
                errno.ENOENT, f"no key or directory {key!r} in namespace {ns.name!r}", path
            )
        return st

    # ------------------------------------------------------------ sync core
    # Each operation is one synchronous method over the segment layer; the
    # coroutines below call them in place (a thread hop would cost more than
    # the memory work).
    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        # docstring inherited
        path = self._strip_protocol(path)
        if not path:
            return {"name": "", "size": 0, "type": _DIR}
        name, _, key = path.partition("/")
        try:
            ns = self._handle(name)
        except (ForeignEntryError, ValueError) as e:
            raise FileNotFoundError(errno.ENOENT, str(e), path) from e
        if not key:
            return {"name": name, "size": 0, "type": _DIR}
        return self._entry(path, self._lstat(ns, key, path))

    def exists(self, path: str, **kwargs: Any) -> bool:
        # docstring inherited
        try:
            self.info(path)
        except (FileNotFoundError, PermissionError):
            return False
        return True

    def isdir(self, path: str) -> bool:
        # docstring inherited
        try:
            return self.info(path)["type"] == _DIR
        except OSError:
            return False

    def isfile(self, path: str) -> bool:
        # docstring inherited
        try:
            return self.info(path)["type"] == _FILE
        except OSError:
            return False

    def size(self, path: str) -> int:
        # docstring inherited
        return int(self.info(path)["size"])

    def modified(self, path: str) -> datetime.datetime:
        """Time of the last change of *path* (UTC)."""
        info = self.info(path)
        mtime = info.get("mtime")
        if mtime is None:  # the root or a namespace: its directory's time
            where = os.path.join(self.root, info["name"]) if info["name"] else self.root
            mtime = os.stat(where, follow_symlinks=False).st_mtime
        return datetime.datetime.fromtimestamp(mtime, tz=datetime.UTC)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        # docstring inherited
        path = self._strip_protocol(path)
        if not path:
            names = self._namespaces()
            if detail:
                return [{"name": n, "size": 0, "type": _DIR} for n in names]
            return names
        name, _, key = path.partition("/")
        ns = self._handle(name)
        if key:
            st = self._lstat(ns, key, path)
            if not stat.S_ISDIR(st.st_mode):
                return [self._entry(path, st)] if detail else [path]
        entries = sorted(ns.list_dir(key))
        if not detail:
            return [f"{path}/{e}" for e in entries]
        out = []
        for e in entries:
            st = ns.lstat(f"{key}/{e}" if key else e)
            if st is not None:  # removed meanwhile
                out.append(self._entry(f"{path}/{e}", st))
        return out

    def _read(self, path: str, start: int | None = None, end: int | None = None) -> memoryview:
        """Zero-copy read-only view of the value at *path* (sliced like ``bytes``)."""
        name, key = self._split(path)
        if not key:
            raise IsADirectoryError(
                errno.EISDIR,
                f"shm://{name} is a namespace, not a file; read shm://{name}/<key>",
                path,
            )
        ns = self._handle(name)
        view = ns.read(key)
        if view is None:
            st = ns.lstat(key)
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(
                    errno.EISDIR, f"{key!r} in namespace {name!r} is a directory", path
                )
            raise FileNotFoundError(errno.ENOENT, f"no key {key!r} in namespace {name!r}", path)
        if start is not None or end is not None:
            view = view[start:end]
        return view

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        # docstring inherited
        return bytes(self._read(path, start, end))

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
        if mode not in ("overwrite", "create"):
            raise ValueError(f"pipe_file mode must be 'overwrite' or 'create', got {mode!r}")
        name, key = self._split(path)
        if not key:
            raise IsADirectoryError(
                errno.EISDIR,
                f"cannot write to shm://{name}: it names a namespace; write shm://{name}/<key>",
                path,
            )
        check_key(key)
        ns = self._handle(name, create=True)
        if isinstance(value, str):
            raise TypeError(f"pipe_file value for {path!r} must be bytes-like, not str")
        if not ns.write(key, value, exclusive=mode == "create"):
            raise FileExistsError(
                errno.EEXIST, f"key {key!r} already exists in namespace {name!r}", path
            )

    def rm_file(self, path: str) -> None:
        # docstring inherited
        name, key = self._split(path)
        if not key:
            raise IsADirectoryError(
                errno.EISDIR,
                f"shm://{name} is a namespace; remove it with rm({name!r}, recursive=True)",
                path,
            )
        ns = self._handle(name)
        if ns.delete(key):
            return
        st = self._lstat(ns, key, path)
        if stat.S_ISDIR(st.st_mode) and next(iter(ns.list_dir(key)), None) is not None:
            raise IsADirectoryError(
                errno.EISDIR, f"{key!r} in namespace {name!r} is a directory", path
            )

    def _rm_tree(self, path: str) -> None:
        name, key = self._split(path)
        if not name:
            raise ValueError(
                f"refusing to remove every namespace in {self.root}; remove them by name"
            )
        ns = self._handle(name)
        if not key:
            ns.destroy()
            return
        st = self._lstat(ns, key, path)
        if stat.S_ISDIR(st.st_mode):
            ns.delete_prefix(key)
        else:
            ns.delete(key)

    def _rm_entry(self, path: str, recursive: bool) -> None:
        """Remove one path of an expanded listing (children come first)."""
        name, key = self._split(path)
        if not name:
            raise ValueError(
                f"refusing to remove every namespace in {self.root}; remove them by name"
            )
        ns = self._handle(name)
        if not key:
            if next(ns.iter_keys(""), None) is None:
                ns.destroy()
            elif not recursive:
                raise IsADirectoryError(
                    errno.EISDIR,
                    f"shm://{name} is a namespace with keys; pass recursive=True to destroy it",
                    path,
                )
            return
        st = ns.lstat(key)
        if st is None:
            if recursive:
                return  # an implicit directory, pruned with its last key
            raise FileNotFoundError(errno.ENOENT, f"no key {key!r} in namespace {name!r}", path)
        if not stat.S_ISDIR(st.st_mode):
            ns.delete(key)
        elif not recursive and next(iter(ns.list_dir(key)), None) is not None:
            raise IsADirectoryError(
                errno.EISDIR,
                f"{key!r} in namespace {name!r} is a directory; pass recursive=True",
                path,
            )

    def rmdir(self, path: str) -> None:
        # docstring inherited
        name, key = self._split(path)
        ns = self._handle(name)
        if key:
            st = self._lstat(ns, key, path)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, f"{key!r} is a key, not a directory", path)
        if next(ns.iter_keys(f"{key}/" if key else ""), None) is not None:
            raise OSError(errno.ENOTEMPTY, f"{path!r} is not empty", path)
        if not key:
            ns.destroy()
        # an empty directory inside a namespace is implicit: nothing to remove

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
        name, key = self._split(path)
        if not name:
            raise FileExistsError(errno.EEXIST, f"the root {self.root} exists", path)
        if not key:
            if self.exists(name):
                raise FileExistsError(
                    errno.EEXIST, f"namespace {name!r} already exists in {self.root}", path
                )
            self._handle(name, create=True)
            return
        check_key(key)
        ns = self._handle(name, create=create_parents)
        st = ns.lstat(key)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise FileExistsError(errno.EEXIST, f"{key!r} is a key in namespace {name!r}", path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        # docstring inherited
        name, key = self._split(path)
        if not name:
            if not exist_ok:
                raise FileExistsError(errno.EEXIST, f"the root {self.root} exists", path)
            return
        if key:
            check_key(key)
        existed = self.exists(path)
        if existed and not exist_ok:
            raise FileExistsError(errno.EEXIST, f"{path!r} already exists", path)
        ns = self._handle(name, create=True)
        if key:
            st = ns.lstat(key)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                raise FileExistsError(errno.EEXIST, f"{key!r} is a key in namespace {name!r}", path)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        # docstring inherited
        if self.isdir(path1):
            self.makedirs(path2, exist_ok=True)
            return
        self.pipe_file(path2, self._read(path1))

    def get_file(self, rpath: str, lpath: Any, **kwargs: Any) -> None:
        # docstring inherited
        if self.isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        view = self._read(rpath)
        if hasattr(lpath, "write"):
            lpath.write(view)
            return
        with open(lpath, "wb") as f:
            f.write(view)

    def put_file(self, lpath: Any, rpath: str, mode: str = "overwrite", **kwargs: Any) -> None:
        # docstring inherited
        if hasattr(lpath, "read"):
            self.pipe_file(rpath, lpath.read(), mode=mode)
            return
        if os.path.isdir(lpath):
            self.makedirs(rpath, exist_ok=True)
            return
        with open(lpath, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                self.pipe_file(rpath, b"", mode=mode)
                return
            # Map the local file instead of reading it into a bytes object.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                self.pipe_file(rpath, m, mode=mode)

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

    # ------------------------------------------------------------ coroutines
    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.info(path, **kwargs)

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        return self.exists(path, **kwargs)

    async def _isdir(self, path: str) -> bool:
        return self.isdir(path)

    async def _isfile(self, path: str) -> bool:
        return self.isfile(path)

    async def _size(self, path: str) -> int:
        return self.size(path)

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        return self.ls(path, detail=detail, **kwargs)

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> memoryview:
        # A read-only view of the mapping, not bytes: zarr's FsspecStore.get
        # wraps it as it is, so the URL route reads without a copy (PITFALLS 11).
        return self._read(path, start, end)

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
                out.append(self._read(p, s, e))
            except Exception as ex:
                if on_error != "return":
                    raise
                out.append(ex)
        return out

    async def _pipe_file(
        self, path: str, value: Any, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        self.pipe_file(path, value, mode=mode, **kwargs)

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        self.rm_file(path)

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
                self._rm_tree(p)
            return
        paths = await self._expand_path(path, recursive=recursive, maxdepth=maxdepth)
        for p in reversed(paths):
            self._rm_entry(p, recursive)

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self.mkdir(path, create_parents=create_parents, **kwargs)

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.makedirs(path, exist_ok=exist_ok)

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        self.cp_file(path1, path2, **kwargs)

    async def _get_file(self, rpath: str, lpath: Any, **kwargs: Any) -> None:
        self.get_file(rpath, lpath, **kwargs)

    async def _put_file(
        self, lpath: Any, rpath: str, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        self.put_file(lpath, rpath, mode=mode, **kwargs)

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
        # Fast path (zarr's list and list_prefix): one walk of the segment layer.
        try:
            ns = self._handle(name)
            st = ns.lstat(key) if key else None
        except (FileNotFoundError, ForeignEntryError, ValueError):
            return {} if detail else []
        if st is not None and not stat.S_ISDIR(st.st_mode):
            return {path: self._entry(path, st)} if detail else [path]
        names = sorted(ns.iter_keys(f"{key}/" if key else ""))
        if not detail:
            return [f"{name}/{k}" for k in names]
        out = {}
        for k in names:
            kst = ns.lstat(k)
            if kst is not None:
                out[f"{name}/{k}"] = self._entry(f"{name}/{k}", kst)
        return out


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
            self._view = fs._read(path)
            kwargs["size"] = len(self._view)
        elif mode in ("wb", "xb", "ab"):
            name, key = fs._split(path)
            if not key:
                raise IsADirectoryError(
                    errno.EISDIR, f"shm://{name} names a namespace, not a file", path
                )
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
                self.buffer.write(fs._read(path))
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
