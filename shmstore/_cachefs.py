"""``shmcache::``: a host-wide shared-memory cache of any fsspec source, as an fsspec layer.

fsspec's chained URLs put a caching layer in front of a filesystem
(``simplecache::s3://bucket/data.zarr``); this module is such a layer,
registered under the protocol ``shmcache`` (``fsspec.specs`` entry point), so
``zarr.open_array("shmcache::http://host/data.zarr", path="t")``,
``da.from_zarr(...)`` and ``xr.open_zarr(...)`` read through one cache that
every process of the host shares. The cache is a :class:`~shmstore.CachingStore`
over the source (an ``FsspecStore`` on the target filesystem): fill locks, so
concurrent misses fetch once; capacity and eviction; expiry; write-through;
host-wide counters. Options come as fsspec passes them to a chained layer::

    storage_options={"shmcache": {"capacity": "8 GiB", "expiry": 60},
                     "s3": {"endpoint_url": ...}}

See docs/multihost.md for the model, docs/design.md for the layout.
"""

from __future__ import annotations

import errno
import io
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

from fsspec.asyn import AsyncFileSystem, sync
from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
from fsspec.registry import get_filesystem_class
from fsspec.utils import stringify_path
from zarr.core.buffer import cpu
from zarr.storage import FsspecStore

from shmstore._cache import CachingStore, cache_namespace
from shmstore._fs import _RootResolvingCache, host_reduce
from shmstore._locations import byte_request
from shmstore._names import resolve_root

try:  # fsspec >= 2025.10 marks chaining layers so that url_to_fs passes them the path
    from fsspec.implementations.chained import ChainedFileSystem

    _LAYER: tuple[type, ...] = (ChainedFileSystem,)
except ImportError:  # older fsspec: the path of a chained layer is ""; fo= carries it
    _LAYER = ()

if TYPE_CHECKING:
    import os

    from fsspec.spec import AbstractFileSystem

__all__ = ["SharedMemoryCacheFileSystem"]

PROTOCOL = "shmcache"
#: What ``writes=`` takes (``None``: read-only).
WRITES = ("through", "local-only", None)


class SharedMemoryCacheFileSystem(AsyncFileSystem, *_LAYER, metaclass=_RootResolvingCache):  # type: ignore[misc]
    """fsspec layer that caches a source in this host's shared memory (``shmcache::``).

    Every process of the host that reads the same source (by URL) meets the
    same cache namespace, ``cache-<16 hex digits of the source URL's
    sha256>`` unless *namespace* is given: the first reader of a file fetches
    it (once, however many processes miss it at once), the others map it.

    Parameters
    ----------
    fo
        The source's root URL (``http://host/data.zarr``, ``s3://bucket/x.zarr``,
        ``file:///data/x.zarr``); fsspec passes it from a chained URL. Paths
        given to this filesystem are under it (or relative to it). Files under
        it are cached; a URL that names one file (``fsspec.open`` of
        ``shmcache::https://host/a.nc``) is read from the source, uncached:
        chain the cache over a directory, such as a Zarr store's root.
    target_protocol, target_options
        The source's filesystem and its options (fsspec passes them from a
        chained URL: options under the target's protocol in
        ``storage_options``). *target_protocol* defaults to *fo*'s.
    fs
        An existing source filesystem, instead of the two above.
    namespace
        The cache's namespace; see above.
    capacity
        Bytes the cache may hold on this host (``"8 GiB"``); cold values are
        evicted. Recorded in the namespace.
    expiry
        Seconds a cached file is served before it is fetched again (``None``:
        until evicted). A reader sees a changed source within *expiry*.
    writes
        ``"through"`` (default): a write goes to the source, then to the cache,
        so zarr's ``to_zarr("shmcache::...")`` works. ``"local-only"``: a
        scratch tier: writes stay in this host's shared memory (namespace
        ``scratch-...``), never reach the source, and are never evicted.
        ``None``: read-only.
    root
        Shared-memory directory (default ``$SHMSTORE_ROOT``, else
        ``/dev/shm``). Only a root given here travels in a pickle: a worker
        on another host resolves its own.

    Examples
    --------
    >>> import fsspec, pathlib, tempfile
    >>> src = pathlib.Path(tempfile.mkdtemp()) / "greeting.txt"
    >>> _ = src.write_bytes(b"hello")
    >>> fs, path = fsspec.url_to_fs(f"shmcache::file://{src.parent}")
    >>> fs.cat_file(f"{path}/greeting.txt")
    b'hello'
    >>> fs.stats()["misses"], fs.destroy()
    (1, None)
    """

    protocol: ClassVar[str | tuple[str, ...]] = PROTOCOL
    root_marker = ""
    _root_positional = False  # fsspec passes fo first

    def __init__(
        self,
        fo: str = "",
        *,
        target_protocol: str | None = None,
        target_options: dict[str, Any] | None = None,
        fs: AbstractFileSystem | None = None,
        namespace: str | None = None,
        capacity: int | str | None = None,
        expiry: float | None = None,
        writes: str | None = "through",
        root: str | os.PathLike[str] | None = None,
        _env_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if writes not in WRITES:
            raise ValueError(
                f"shmcache writes={writes!r} is not a write mode; pass 'through' (the "
                "default: to the source, then the cache), 'local-only' (a scratch tier "
                "on this host) or None (read-only)"
            )
        if not fo:
            # One cache per source, named from its URL: without it there is no name.
            raise ValueError(
                "shmcache needs the source's root URL: open a chained URL such as "
                "shmcache::s3://bucket/data.zarr, or pass fo='s3://bucket/data.zarr'"
            )
        self.root = _env_root if root is None and _env_root else resolve_root(root)
        self.fs = self._target(fo, target_protocol, target_options, fs)
        sync_fs = getattr(self.fs, "sync_fs", self.fs)
        self._source_root = sync_fs._strip_protocol(fo).rstrip("/")
        #: The source's root URL, from which the cache's namespace is derived.
        self.source_url = sync_fs.unstrip_protocol(self._source_root)
        self.writes = writes
        self._namespace = namespace
        self._capacity = capacity
        self._expiry = expiry
        self._cache: CachingStore | None = None

    def _target(
        self,
        fo: str,
        protocol: str | None,
        options: dict[str, Any] | None,
        fs: AbstractFileSystem | None,
    ) -> AsyncFileSystem:
        """The source filesystem, async (zarr awaits this layer on its own loop)."""
        if fs is None:
            if protocol is None:
                protocol = fo.split("://", 1)[0] if "://" in fo else "file"
            if protocol == PROTOCOL:
                raise ValueError(
                    "shmcache:: over shmcache:: caches nothing twice; chain it over the "
                    "source, e.g. shmcache::s3://bucket/data.zarr"
                )
            cls = get_filesystem_class(protocol)
            opts = dict(options or {})
            if cls.async_impl:
                # Its coroutines must run on the loop that awaits ours: zarr's.
                opts.setdefault("asynchronous", self.asynchronous)
            elif protocol in ("file", "local"):
                opts.setdefault("auto_mkdir", True)  # writing a new array makes its dirs
            fs = cls(**opts)
        if not fs.async_impl:
            # Its coroutines run the sync filesystem in a thread: any loop may await them.
            fs = AsyncFileSystemWrapper(fs, asynchronous=True)
        return fs  # type: ignore[return-value]

    def __reduce__(self) -> tuple[Any, ...]:
        # The root resolved from $SHMSTORE_ROOT stays on this host.
        return host_reduce(self)

    # ------------------------------------------------------------- the cache
    @property
    def host_cache(self) -> CachingStore:
        """The host cache (a :class:`~shmstore.CachingStore`), opened on first use."""
        cache = self._cache
        if cache is None:
            mode = {"through": "through", "local-only": "local-only", None: None}[self.writes]
            with warnings.catch_warnings():
                # zarr warns of a filesystem not made asynchronous; ours is awaited
                # on the loop it was made for (fsspec's, by this layer's sync methods).
                warnings.simplefilter("ignore")
                source = FsspecStore(
                    self.fs, path=self._source_root, read_only=self.writes != "through"
                )
            cache = self._cache = CachingStore(
                source,
                namespace=self.namespace,
                capacity=self._capacity,
                expiry=self._expiry,
                root=self.root,
                writes=mode,
            )
        return cache

    @property
    def namespace(self) -> str:
        """The cache's namespace (the same name on every host; nothing is opened)."""
        return self._namespace or cache_namespace(
            self.source_url, scratch=self.writes == "local-only"
        )

    def stats(self) -> dict[str, Any]:
        """The cache's host-wide counters and size (:meth:`CachingStore.stats`)."""
        return self.host_cache.stats()

    def flush_counters(self) -> None:
        """Add this process's hits not yet counted to the host-wide counters now."""
        self.host_cache.flush_counters()

    def destroy(self) -> None:
        """Unlink this host's cache (the source is untouched)."""
        self.host_cache.destroy()

    # ------------------------------------------------------------------ paths
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        # docstring inherited
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        for prefix in (f"{PROTOCOL}::", f"{PROTOCOL}://"):
            if path.startswith(prefix):
                path = path[len(prefix) :]
        return path.rstrip("/")

    def _key(self, path: str) -> str:
        """The cache key (the path under the source's root) of *path*; ``""`` for the root."""
        stripped = self._strip_protocol(path)
        root = self._source_root
        if stripped == "." or stripped.startswith("./"):  # relative to the root, said so
            return stripped[2:].strip("/")
        if root and stripped == root:
            return ""
        if root and stripped.startswith(root + "/"):
            return stripped[len(root) + 1 :].strip("/")
        if "://" in stripped or (root.startswith("/") and stripped.startswith("/")):
            raise ValueError(
                f"{path!r} is not under the cached source {self.source_url}; open a "
                f"shmcache:: URL of its own source (shmcache::{stripped})"
            )
        return stripped.strip("/")

    def _full(self, key: str) -> str:
        """The source's path of cache key *key*."""
        root = self._source_root
        return f"{root}/{key}" if key else root

    # ------------------------------------------------------------------ reads
    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> Any:
        # docstring inherited
        key = self._key(path)
        if not key:
            return await self.fs._cat_file(self._full(key), start=start, end=end)
        request = byte_request(start, end)
        # A byte range of a shard fetches and caches the whole value once: later
        # ranges of it (the inner chunks) are served from shared memory.
        value = await self.host_cache.get(key, None, request or None)
        if value is None:
            raise FileNotFoundError(errno.ENOENT, f"no file {path!r} in {self.source_url}", path)
        view = memoryview(value.as_numpy_array())
        return view[start:end] if request is False else view

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        # docstring inherited (bytes, as fsspec users expect; zarr gets a view)
        return bytes(sync(self.loop, self._cat_file, path, start, end, **kwargs))

    def cat_ranges(
        self,
        paths: list[str],
        starts: list[int | None] | int | None,
        ends: list[int | None] | int | None,
        max_gap: Any = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        # docstring inherited
        out = sync(self.loop, self._cat_ranges, paths, starts, ends, on_error=on_error, **kwargs)
        return [v if isinstance(v, Exception) else bytes(v) for v in out]

    def _relative(self, path: str) -> bool:
        """Whether *path* was given relative to the source's root (fsspec before 2025.10
        hands a chained layer's users paths relative to ``fo``): answers say so too."""
        stripped = self._strip_protocol(path)
        root = self._source_root
        return not (stripped == root or stripped.startswith(root + "/"))

    def _named(self, entry: dict[str, Any], relative: bool) -> dict[str, Any]:
        """A source's answer about *entry*, named in the caller's terms."""
        if relative and isinstance(entry.get("name"), str):
            entry = {**entry, "name": self._key(entry["name"].rstrip("/"))}
        return entry

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        # docstring inherited
        key = self._key(path)
        size = self.host_cache.cached(key) if key else None
        if size is not None and self.writes == "local-only":
            return {"name": path, "size": size, "type": "file"}
        info = await self.fs._info(self._full(key), **kwargs)
        return self._named(info, self._relative(path))

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        # docstring inherited
        key = self._key(path)
        if key and self.host_cache.cached(key) is not None:
            return True
        return await self.fs._exists(self._full(key), **kwargs)

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        # docstring inherited: the source's listing (the cache holds copies of it)
        entries = await self.fs._ls(self._full(self._key(path)), detail=True, **kwargs)
        relative = self._relative(path)
        entries = [self._named(e, relative) for e in entries]
        return entries if detail else [e["name"] for e in entries]

    # ----------------------------------------------------------------- writes
    def _check_writable(self, path: str) -> None:
        if self.writes is None:
            raise PermissionError(
                errno.EROFS,
                f"{self.source_url} is cached read-only (writes=None); pass "
                "storage_options={'shmcache': {'writes': 'through'}} to write through",
                path,
            )

    async def _pipe_file(
        self, path: str, value: Any, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        # docstring inherited
        self._check_writable(path)
        key = self._key(path)
        if not key:
            raise IsADirectoryError(errno.EISDIR, f"{path!r} is the source's root", path)
        await self.host_cache.set(key, cpu.Buffer.from_bytes(memoryview(value)))

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        # docstring inherited
        self._check_writable(path)
        await self.host_cache.delete(self._key(path))

    async def _rm(
        self,
        path: str | list[str],
        recursive: bool = False,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        # docstring inherited
        paths = [path] if isinstance(path, str) else list(path)
        for p in paths:
            self._check_writable(p)
            key = self._key(p)
            if self.writes == "through":
                await self.fs._rm(self._full(key), recursive=recursive, **kwargs)
            self.host_cache.discard(key)

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        # docstring inherited
        if self.writes == "through":
            await self.fs._mkdir(self._full(self._key(path)), create_parents, **kwargs)

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        # docstring inherited
        if self.writes == "through":
            await self.fs._makedirs(self._full(self._key(path)), exist_ok=exist_ok)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        # docstring inherited: whole files (a cached file is read once, from shared memory)
        if "r" in mode:
            return io.BytesIO(self.cat_file(path))
        self._check_writable(path)
        return _WriteFile(self, path)


class _WriteFile(io.BytesIO):
    """A file opened for writing: its bytes are written (through) when it closes."""

    def __init__(self, fs: SharedMemoryCacheFileSystem, path: str) -> None:
        super().__init__()
        self._fs = fs
        self._path = path

    def close(self) -> None:
        if not self.closed:
            self._fs.pipe_file(self._path, self.getvalue())
        super().close()
