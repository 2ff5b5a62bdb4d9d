"""``save`` and ``load``: copy a whole namespace to and from any Zarr store, verified.

Both copy every key (groups, arrays, attributes, chunks: the namespace's whole
Zarr hierarchy, both tiers of a tiered one) with a pool of concurrent
coroutines on zarr's event loop, chunks first and metadata last, so that a copy
cut short leaves no array whose metadata promises chunks that never arrived.
Then they verify the destination: the same set of keys, each of the size that
was read (``verify="size"``, the default), or also the same bytes
(``verify="content"``, a BLAKE2b digest of every value read back).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from zarr.core.buffer import default_buffer_prototype

from shmstore._errors import _human
from shmstore._names import SCHEME, is_metadata_key, split_url
from shmstore._urls import open_location

if TYPE_CHECKING:
    from collections.abc import Iterator

    from zarr.abc.store import Store

__all__ = ["TransferReport", "load", "save"]

Verify = Literal["size", "content"] | bool


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
    """

    source: str
    destination: str
    keys: int
    nbytes: int
    seconds: float
    verified: str | None

    @property
    def gib_per_s(self) -> float:
        """Copy throughput in GiB/s."""
        return self.nbytes / (1 << 30) / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        check = f", verified ({self.verified})" if self.verified else ""
        return (
            f"copied {self.keys} keys, {_human(self.nbytes)} from {self.source} to "
            f"{self.destination} in {self.seconds:.2f} s ({self.gib_per_s:.2f} GiB/s){check}"
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
        src, dst, overwrite=overwrite, progress=progress, concurrency=concurrency, verify=verify
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
) -> TransferReport:
    """Copy a whole Zarr store into a namespace (created if missing).

    The mirror of :func:`save`: *source* is a directory path, an fsspec URL or
    a zarr store; *namespace* is ``"shm://<namespace>"`` or a
    :class:`~shmstore.SharedMemoryStore` (pass one opened with ``capacity=``
    and ``spill=`` to load more than fits in RAM). The other parameters,
    return value and errors are those of :func:`save`.

    Examples
    --------
    >>> import shmstore
    >>> shmstore.load("/data/climate.zarr", "shm://climate")  # doctest: +SKIP
    """
    src = open_location(source, read_only=True, storage_options=storage_options)
    dst = _namespace_store(namespace, read_only=False, what="destination")
    return copy_store(
        src, dst, overwrite=overwrite, progress=progress, concurrency=concurrency, verify=verify
    )


def copy_store(
    src: Store,
    dst: Store,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    concurrency: int = 16,
    verify: Verify = "size",
) -> TransferReport:
    """Copy every key of *src* to *dst*; the engine of :func:`save` and :func:`load`."""
    from zarr.core.sync import sync

    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
    mode = {True: "size", False: None}.get(verify, verify)  # type: ignore[call-overload]
    if mode not in ("size", "content", None):
        raise ValueError(f"verify must be 'size', 'content' or False, got {verify!r}")
    show = sys.stderr.isatty() if progress is None else bool(progress)
    with _Progress(show) as bar:
        return sync(_copy(src, dst, overwrite, concurrency, mode, bar))


async def _run_pool(items: Iterator[str], concurrency: int, work: Any) -> None:
    # A few workers pulling from one iterator, not one task per key: a
    # namespace can hold millions of keys.
    async def worker() -> None:
        for item in items:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _copy(
    src: Store, dst: Store, overwrite: bool, concurrency: int, mode: str | None, bar: _Progress
) -> TransferReport:
    proto = default_buffer_prototype()
    if not src._is_open:
        await src._open()  # a read-only LocalStore raises FileNotFoundError here
    keys = [key async for key in src.list()]
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
    )


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
