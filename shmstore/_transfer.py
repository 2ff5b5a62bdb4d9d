"""``save`` and ``load``: copy a whole namespace to and from any Zarr store, verified.

Both copy every key (groups, arrays, attributes, chunks: the namespace's whole
Zarr hierarchy, both tiers of a tiered one) with a pool of concurrent
coroutines on zarr's event loop, chunks first and metadata last, so that a copy
cut short leaves no array whose metadata promises chunks that never arrived.
Then they verify the destination: the same set of keys, each of the size that
was written (``verify="size"``, the default), or also the same bytes
(``verify="content"``, a BLAKE2b digest of every value read back).

Chunks in shared memory are best stored raw: a raw chunk is read as a view of
its segment, once for the host, where an encoded one is decoded into memory of
every reading process. So :func:`load` writes raw chunks by default
(``compressors=None``): the chunks of a Zarr v3 array stored with a compressor
or a filter (zarr's default is Zstandard) are decoded and written without,
under the same keys, and the array's metadata says so. :func:`save` copies the
bytes as they are by default (``compressors="keep"``: a namespace that
shmstore wrote is raw already); pass ``compressors=`` to encode on the way.
Zarr v2 arrays are always copied as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from zarr.core.buffer import default_buffer_prototype

from shmstore._errors import _human
from shmstore._names import SCHEME, is_metadata_key, split_url
from shmstore._urls import open_location

if TYPE_CHECKING:
    from collections.abc import Iterator

    from zarr.abc.store import Store

__all__ = ["TransferReport", "load", "save"]

Verify = Literal["size", "content"] | bool
#: ``compressors=`` of save and load that copies every value as it is.
KEEP = "keep"


@dataclass(frozen=True)
class TransferReport:
    """What :func:`save` or :func:`load` copied.

    Attributes
    ----------
    source, destination
        The two stores, as strings.
    keys
        Number of keys copied.
    nbytes
        Bytes copied.
    seconds
        Wall time of the copy (verification excluded).
    verified
        ``"size"``, ``"content"``, or ``None`` when not verified.
    reencoded
        Paths of the arrays whose chunks were decoded and written with other
        codecs (``compressors=``); the other arrays were copied as they are.
    """

    source: str
    destination: str
    keys: int
    nbytes: int
    seconds: float
    verified: str | None
    reencoded: tuple[str, ...] = ()

    @property
    def gib_per_s(self) -> float:
        """Copy throughput in GiB/s."""
        return self.nbytes / (1 << 30) / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        check = f", verified ({self.verified})" if self.verified else ""
        arrays = len(self.reencoded)
        codecs = f", {arrays} array{'s' if arrays != 1 else ''} re-encoded" if arrays else ""
        return (
            f"copied {self.keys} keys, {_human(self.nbytes)} from {self.source} to "
            f"{self.destination} in {self.seconds:.2f} s ({self.gib_per_s:.2f} GiB/s)"
            f"{codecs}{check}"
        )


def _namespace_store(spec: Any, *, read_only: bool, what: str) -> Store:
    if isinstance(spec, str) and spec.startswith(SCHEME) and split_url(spec)[1]:
        raise ValueError(
            f"{what} {spec!r} names a path inside a namespace; save and load copy a "
            "whole namespace: pass shm://<namespace>"
        )
    return open_location(spec, read_only=read_only)


def save(
    namespace: Any,
    destination: Any,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    concurrency: int = 16,
    verify: Verify = "size",
    storage_options: dict[str, Any] | None = None,
    compressors: Any = KEEP,
) -> TransferReport:
    """Copy a whole namespace to a Zarr store: a directory, a URL or any store.

    Parameters
    ----------
    namespace
        ``"shm://<namespace>"`` or a :class:`~shmstore.SharedMemoryStore` (any
        zarr store works: it is only read).
    destination
        A directory path, an fsspec URL (``s3://bucket/x.zarr``) or a zarr store.
    overwrite
        Empty a destination that already holds keys first. Without it, such a
        destination raises ``FileExistsError``.
    progress
        Show a progress bar on stderr. ``None`` (default): only when stderr is
        a terminal, so pipes and logs stay clean.
    concurrency
        Values in flight at once.
    verify
        ``"size"`` (default): the destination must list exactly the keys
        copied, each of the size read. ``"content"``: also the same bytes.
        ``False``: no check.
    storage_options
        fsspec options for a URL destination.
    compressors
        ``"keep"`` (default): every value is copied as it is (the chunks of a
        namespace that shmstore wrote are raw). A zarr compressor or a list of
        them (``zarr.codecs.ZstdCodec()``): the chunks of every Zarr v3 array are
        decoded and written with those compressors and no filter, which makes
        the copy smaller on disk and costs a decode and an encode per chunk;
        ``None``: written raw. Loading it back with :func:`load` (whose default
        is raw) decodes it again.

    Returns
    -------
    TransferReport

    Raises
    ------
    FileNotFoundError
        If the namespace does not exist.
    FileExistsError
        If the destination holds keys and *overwrite* is false.
    OSError
        If verification finds a key missing, of another size or other bytes
        (``errno.EIO``); the message names the keys.

    Examples
    --------
    >>> import shmstore
    >>> shmstore.save("shm://climate", "/data/climate.zarr")  # doctest: +SKIP
    """
    src = _namespace_store(namespace, read_only=True, what="source")
    dst = open_location(destination, read_only=False, storage_options=storage_options)
    return copy_store(
        src,
        dst,
        overwrite=overwrite,
        progress=progress,
        concurrency=concurrency,
        verify=verify,
        compressors=compressors,
    )


def load(
    source: Any,
    namespace: Any,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    concurrency: int = 16,
    verify: Verify = "size",
    storage_options: dict[str, Any] | None = None,
    compressors: Any = None,
) -> TransferReport:
    """Copy a whole Zarr store into a namespace (created if missing).

    The mirror of :func:`save`: *source* is a directory path, an fsspec URL or
    a zarr store; *namespace* is ``"shm://<namespace>"`` or a
    :class:`~shmstore.SharedMemoryStore` (pass one opened with ``capacity=``
    and ``spill=`` to load more than fits in RAM). The other parameters,
    return value and errors are those of :func:`save`, except *compressors*,
    whose default here is ``None``: the chunks of every Zarr v3 array are
    written raw (no compressor, no filter), so that every process reads them
    as views of the shared pages, without decoding. That takes the arrays'
    full size in shared memory (a compressed source can be several times
    smaller) once for the host, where encoded chunks would be decoded into
    the memory of each reading process. Pass a compressor (or a list) to
    store them encoded instead, or ``"keep"`` to copy every value as it is.

    Examples
    --------
    >>> import shmstore
    >>> shmstore.load("/data/climate.zarr", "shm://climate")  # doctest: +SKIP
    """
    src = open_location(source, read_only=True, storage_options=storage_options)
    dst = _namespace_store(namespace, read_only=False, what="destination")
    return copy_store(
        src,
        dst,
        overwrite=overwrite,
        progress=progress,
        concurrency=concurrency,
        verify=verify,
        compressors=compressors,
    )


def copy_store(
    src: Store,
    dst: Store,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    concurrency: int = 16,
    verify: Verify = "size",
    compressors: Any = KEEP,
) -> TransferReport:
    """Copy every key of *src* to *dst*; the engine of :func:`save` and :func:`load`.

    With *compressors* other than ``"keep"``, the chunks of every Zarr v3 array
    whose codecs differ from those asked are re-encoded (:class:`_Recoder`).
    """
    from zarr.core.sync import sync

    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
    mode = {True: "size", False: None}.get(verify, verify)  # type: ignore[call-overload]
    if mode not in ("size", "content", None):
        raise ValueError(f"verify must be 'size', 'content' or False, got {verify!r}")
    if isinstance(compressors, str) and compressors != KEEP:
        raise ValueError(
            f"compressors must be 'keep', None or zarr compressors, got {compressors!r}"
        )
    show = sys.stderr.isatty() if progress is None else bool(progress)
    with _Progress(show) as bar:
        return sync(_copy(src, dst, overwrite, concurrency, mode, bar, compressors))


async def _run_pool(items: Iterator[str], concurrency: int, work: Any) -> None:
    # A few workers pulling from one iterator, not one task per key: a
    # namespace can hold millions of keys.
    async def worker() -> None:
        for item in items:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _copy(
    src: Store,
    dst: Store,
    overwrite: bool,
    concurrency: int,
    mode: str | None,
    bar: _Progress,
    compressors: Any = KEEP,
) -> TransferReport:
    proto = default_buffer_prototype()
    if not src._is_open:
        await src._open()  # a read-only LocalStore raises FileNotFoundError here
    keys = [key async for key in src.list()]
    recoder = None if _is_keep(compressors) else await _Recoder.make(src, keys, compressors)
    if not overwrite:
        async for key in dst.list():
            raise FileExistsError(
                errno.EEXIST,
                f"{dst} already holds keys (such as {key!r}); pass overwrite=True to "
                "replace its content, or choose an empty destination",
            )
    else:
        with contextlib.suppress(FileNotFoundError):
            await dst.clear()
    # Chunks first, metadata last: an interrupted copy leaves no array whose
    # metadata promises chunks that are not there.
    keys.sort(key=is_metadata_key)
    sizes: dict[str, int] = {}
    digests: dict[str, bytes] = {}
    task = bar.start("copy", len(keys))

    async def copy_one(key: str) -> None:
        value = await src.get(key, proto)
        if value is None:
            return  # deleted from the source since it was listed
        if recoder is not None:
            value = await recoder.recode(key, value)
        await dst.set(key, value)
        n = len(value)
        sizes[key] = n
        if mode == "content":
            digests[key] = hashlib.blake2b(value.as_numpy_array()).digest()
        bar.advance(task, n)

    start = time.perf_counter()
    await _run_pool(iter(keys), concurrency, copy_one)
    seconds = time.perf_counter() - start
    if mode is not None:
        await _verify(src, dst, sizes, digests, concurrency, mode, bar)
    return TransferReport(
        source=str(src),
        destination=str(dst),
        keys=len(sizes),
        nbytes=sum(sizes.values()),
        seconds=seconds,
        verified=mode,
        reencoded=() if recoder is None else tuple(sorted(recoder.arrays)),
    )


def _is_keep(compressors: Any) -> bool:
    return isinstance(compressors, str) and compressors == KEEP


def _chunk_coords(rel: str, encoding: dict[str, Any], ndim: int) -> tuple[int, ...] | None:
    """Grid coordinates of chunk key *rel* (relative to its array), ``None`` if it is none."""
    name = encoding.get("name", "default")
    sep = encoding.get("configuration", {}).get("separator", "/" if name == "default" else ".")
    if name == "default":
        if rel == "c" and ndim == 0:
            return ()
        if not rel.startswith("c" + sep):
            return None
        rel = rel[2:]
    elif name != "v2":
        return None
    elif ndim == 0:
        return () if rel == "0" else None
    parts = rel.split(sep)
    if len(parts) != ndim or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


class _Recoder:
    """Re-encodes the chunks and metadata of the Zarr v3 arrays of a copy.

    For each array whose codecs differ from those a raw (or *compressors*)
    array of its dtype would have, a one-chunk array in memory with the
    target codecs encodes each chunk: the chunk is read decoded from the
    source, written into it and its one key read back. Keys stay the same
    (every source chunk is written, fill values included), so verification
    and the chunks-first order hold as for a plain copy.
    """

    def __init__(self, src: Store, compressors: Any) -> None:
        self.src = src
        self.compressors = compressors
        self.arrays: dict[str, dict[str, Any]] = {}  # path -> target metadata document
        self._source: dict[str, Any] = {}  # path -> source AsyncArray
        self._scratch: dict[str, tuple[Any, Any, str]] = {}  # path -> (array, store, key)
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    async def make(cls, src: Store, keys: list[str], compressors: Any) -> _Recoder:
        recoder = cls(src, compressors)
        proto = default_buffer_prototype()
        for key in keys:
            if key.rpartition("/")[2] != "zarr.json":
                continue
            value = await src.get(key, proto)
            doc = json.loads(value.to_bytes()) if value is not None else None
            if isinstance(doc, dict) and doc.get("node_type") == "array":
                await recoder._plan(key.rpartition("/")[0], doc)
        return recoder

    async def _plan(self, path: str, doc: dict[str, Any]) -> None:
        import zarr.api.asynchronous as za
        from zarr.storage import MemoryStore

        source = await za.open_array(store=self.src, path=path, mode="r")
        grid = tuple(doc["chunk_grid"]["configuration"]["chunk_shape"])
        scratch_store = MemoryStore()
        scratch = await za.create_array(
            scratch_store,
            shape=grid,
            chunks=grid,
            dtype=source.dtype,
            fill_value=source.metadata.fill_value,
            compressors=self.compressors,
            filters=None,
            config={"write_empty_chunks": True},
        )
        proto = default_buffer_prototype()
        scratch_doc = json.loads((await scratch_store.get("zarr.json", proto)).to_bytes())
        if scratch_doc["codecs"] == doc.get("codecs"):
            return  # already stored as asked: copied as it is
        target = dict(doc, codecs=scratch_doc["codecs"])
        key0 = scratch.metadata.encode_chunk_key((0,) * len(grid))
        self.arrays[path] = target
        self._source[path] = source
        self._scratch[path] = (scratch, scratch_store, key0)

    def _array_of(self, key: str) -> tuple[str, str] | None:
        """(array path, key relative to it) of the re-encoded array *key* lies in, if any."""
        parts = key.split("/")
        for i in range(len(parts) - 1, -1, -1):
            path = "/".join(parts[:i])
            if path in self.arrays:
                return path, "/".join(parts[i:])
        return None

    async def recode(self, key: str, value: Any) -> Any:
        """The value to write for *key*: re-encoded where it belongs to a re-encoded array."""
        from zarr.core.buffer import cpu

        if key.rpartition("/")[2] == "zarr.json":
            doc = self.arrays.get(key.rpartition("/")[0])
            if doc is None:
                return value
            return cpu.Buffer.from_bytes(json.dumps(doc, indent=2).encode())
        found = self._array_of(key)
        if found is None:
            return value
        path, rel = found
        doc = self.arrays[path]
        grid = doc["chunk_grid"]["configuration"]["chunk_shape"]
        coords = _chunk_coords(rel, doc.get("chunk_key_encoding", {}), len(grid))
        if coords is None:
            return value  # not a chunk of the array (a foreign key): as it is
        shape = doc["shape"]
        region = tuple(
            slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, grid, shape, strict=True)
        )
        data = np.asarray(await self._source[path].getitem(region))
        if data.shape != tuple(grid):
            # An edge chunk: the rest of it is the fill value, as zarr writes it.
            full = np.full(grid, self._source[path].metadata.fill_value, dtype=data.dtype)
            full[tuple(slice(0, n) for n in data.shape)] = data
            data = full
        scratch, store, key0 = self._scratch[path]
        async with self._locks.setdefault(path, asyncio.Lock()):
            # One scratch array per source array: its chunk is written, then read back.
            await scratch.setitem(tuple(slice(0, c) for c in grid), data)
            out = await store.get(key0, default_buffer_prototype())
        if out is None:
            raise OSError(
                errno.EIO,
                f"re-encoding chunk {key!r} of {self.src} produced no value; copy it with "
                "compressors='keep'",
            )
        return out


async def _verify(
    src: Store,
    dst: Store,
    sizes: dict[str, int],
    digests: dict[str, bytes],
    concurrency: int,
    mode: str,
    bar: _Progress,
) -> None:
    proto = default_buffer_prototype()
    listed = {key async for key in dst.list()}
    problems = [f"missing: {k!r}" for k in sorted(set(sizes) - listed)]
    task = bar.start("verify", len(sizes))

    async def check_one(key: str) -> None:
        if key not in listed:
            return
        if mode == "content":
            value = await dst.get(key, proto)
            if value is None:
                problems.append(f"missing: {key!r}")
            elif hashlib.blake2b(value.as_numpy_array()).digest() != digests[key]:
                problems.append(f"other bytes: {key!r}")
        else:
            try:
                size = await dst.getsize(key)
            except FileNotFoundError:
                problems.append(f"missing: {key!r}")
                return
            if size != sizes[key]:
                problems.append(f"{size} bytes instead of {sizes[key]}: {key!r}")
        bar.advance(task, sizes[key])

    await _run_pool(iter(sorted(sizes)), concurrency, check_one)
    if problems:
        shown = "; ".join(sorted(problems)[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise OSError(
            errno.EIO,
            f"copy from {src} to {dst} did not verify: {shown}{more}. Another process "
            "may have written to either store during the copy; copy again with "
            "overwrite=True",
        )


class _Progress:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, show: bool) -> None:
        self._bar = None
        self._bytes: dict[Any, int] = {}
        if show:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("keys  {task.fields[moved]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start(self, what: str, total: int) -> Any:
        if self._bar is None:
            return None
        task = self._bar.add_task(what, total=total, moved=_human(0))
        self._bytes[task] = 0
        return task

    def advance(self, task: Any, nbytes: int) -> None:
        if self._bar is None:
            return
        self._bytes[task] += nbytes
        self._bar.update(task, advance=1, moved=_human(self._bytes[task]))
