"""What the benchmark scripts share: rounds, spreads, private roots, tables, results.

Every comparison runs in alternating rounds: each round runs every side once,
in an order rotated by one per round, so that drift of a noisy machine hits
all sides alike; each side keeps its best round and the spread
(min/median/max) of its rounds is reported with it.

The scripts run as ``python benchmarks/bench_x.py``, which puts this directory
first on ``sys.path``: they import this module as ``import _harness``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

RESULTS = Path(__file__).resolve().parent / "results"
GIB = float(1 << 30)
FUSED_PATH = "zarr.core.codec_pipeline.FusedCodecPipeline"


# ------------------------------------------------------------------ sizes
def parse_size(text: str) -> int:
    """Parse ``"1MiB"``, ``"64KiB"``, ``"64k"`` or a plain byte count."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    for suffix, mult in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)):
        if t.endswith(suffix):
            return int(float(t[:-1]) * mult)
    return int(t)


def human(n: int) -> str:
    """``1048576`` -> ``"1 MiB"``."""
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= mult and n % mult == 0:
            return f"{n // mult} {unit}"
    return f"{n} B"


# ------------------------------------------------------------- pipelines
def pipelines_available() -> list[str]:
    """``["default"]`` plus ``"fused"`` where the installed zarr has it."""
    import zarr.core.codec_pipeline as cp

    return ["default", "fused"] if hasattr(cp, "FusedCodecPipeline") else ["default"]


@contextlib.contextmanager
def pipeline_config(pipeline: str) -> Iterator[None]:
    """Run the block under zarr's ``"default"`` or ``"fused"`` codec pipeline."""
    import zarr

    if pipeline == "fused":
        with zarr.config.set({"codec_pipeline.path": FUSED_PATH}):
            yield
    else:
        yield


# ---------------------------------------------------------------- rounds
def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of *fn* takes, with the garbage collector held off."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        gc.enable()


def rotated(items: Sequence[T], r: int) -> list[T]:
    """*items* in the order of round *r*: rotated by one per round."""
    items = list(items)
    k = r % len(items)
    return items[k:] + items[:k]


def alternate(
    names: Sequence[str],
    run: Callable[[str], T],
    rounds: int,
    *,
    before_round: Callable[[], object] | None = None,
) -> dict[str, list[T]]:
    """Call ``run(name)`` for every name once per round, in rotated order.

    Returns what each call returned, per name, in round order.
    *before_round* (preparing fresh destinations, say) runs before each
    round, outside any timing.
    """
    out: dict[str, list[T]] = {n: [] for n in names}
    for r in range(rounds):
        if before_round is not None:
            before_round()
        for name in rotated(names, r):
            out[name].append(run(name))
    return out


def time_sides(
    sides: dict[str, Callable[[], Any]],
    rounds: int,
    *,
    before_round: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """:func:`alternate` over *sides*, keeping the seconds of each call (:func:`timed`)."""
    return alternate(list(sides), lambda n: timed(sides[n]), rounds, before_round=before_round)


def spread(
    values: list[float], *, lower_is_better: bool = False, samples: bool = True
) -> dict[str, Any]:
    """Best, min, median and max of one side's rounds, and the rounds themselves.

    ``best`` is the highest value (a rate), or the lowest with
    *lower_is_better* (a time); ``samples`` (in round order) is left out
    without *samples*.
    """
    out: dict[str, Any] = {
        "best": min(values) if lower_is_better else max(values),
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }
    if samples:
        out["samples"] = values
    return out


def throughput(nbytes: int, times: list[float]) -> dict[str, Any]:
    """:func:`spread` of the GiB/s of moving *nbytes* in each of *times* seconds."""
    return spread([nbytes / t / GIB for t in times])


def met(ratio: float, target: float | None, *, at_most: bool = False) -> bool | None:
    """Whether *ratio* meets *target* (``>=``, or ``<=`` with *at_most*); ``None`` if none."""
    if target is None:
        return None
    return ratio <= target if at_most else ratio >= target


# ---------------------------------------------------------- zarr arrays
def create_array(store: Any, data: np.ndarray, chunk: int, *, overwrite: bool = True) -> Any:
    """An empty uncompressed zarr array ``"a"`` shaped like the 1-d *data*, *chunk* bytes a chunk.

    No compressor and no filter: the stores are measured, not the codecs.
    """
    import zarr

    return zarr.create_array(
        store,
        name="a",
        shape=data.shape,
        chunks=(chunk // data.itemsize,),
        dtype=data.dtype,
        compressors=None,
        filters=None,
        fill_value=0.0,
        overwrite=overwrite,
    )


class Reader:
    """Reads whole arrays into one preallocated buffer, and checks what it read.

    The same buffer for every side, faulted in once outside any timing, so
    that no side pays page faults the others do not.
    """

    def __init__(self, data: np.ndarray) -> None:
        from zarr.core.buffer.cpu import NDBuffer

        self.data = data
        self.out = np.zeros_like(data)
        self.nd = NDBuffer.from_numpy_array(self.out)

    def read(self, z: Any) -> Callable[[], None]:
        """A call that reads the whole of *z* into the buffer."""
        return lambda: z.get_basic_selection(Ellipsis, out=self.nd)

    def check(self, name: str, read: Callable[[], object]) -> None:
        """Fail loudly if *read* fills the buffer with something else than the data."""
        self.out.fill(-1.0)
        read()
        if not np.array_equal(self.out, self.data):
            raise AssertionError(f"{name}: read back differs from what was written")


# -------------------------------------------------------- private places
@contextlib.contextmanager
def private_root(prefix: str) -> Iterator[str]:
    """A new private directory in shared memory, ``SHMSTORE_ROOT`` while the block runs.

    Made under ``/dev/shm`` (the temporary directory where there is none), so
    what a benchmark creates, by path or by name, never mixes with real
    namespaces; child processes inherit it. On exit it is removed with
    everything in it and ``SHMSTORE_ROOT`` is restored.
    """
    parent = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    root = tempfile.mkdtemp(prefix=prefix, dir=parent)
    old_root = os.environ.get("SHMSTORE_ROOT")
    os.environ["SHMSTORE_ROOT"] = root
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if old_root is None:
            os.environ.pop("SHMSTORE_ROOT", None)
        else:
            os.environ["SHMSTORE_ROOT"] = old_root


#: The kinds of root :func:`page_root` makes: tmpfs pages of 4 KiB, or huge pages.
PAGE_KINDS = ("small", "huge")
_HUGE_OPTION = {"small": "never", "huge": "within_size"}


def page_kind(path: str) -> str | None:
    """``"small"`` or ``"huge"``: what a write into *path*'s tmpfs gets (``None``: not a tmpfs)."""
    from shmstore._mounts import huge_pages, mount_of, shmem_enabled

    return huge_pages(mount_of(path), shmem_enabled())


@contextlib.contextmanager
def page_root(kind: str, size: int, prefix: str = "shmstore-bench-") -> Iterator[str | None]:
    """A private root on a tmpfs with *kind* pages, ``SHMSTORE_ROOT`` while the block runs.

    ``"small"`` (4 KiB pages) or ``"huge"`` (``huge=within_size``). Where
    ``/dev/shm`` already gives that kind, a directory there (:func:`private_root`);
    otherwise, as root, a private tmpfs of *size* bytes mounted for the block
    (``mount -t tmpfs -o size=...,huge=...``) and unmounted after. Yields
    ``None``, having said why on stderr, where neither is possible (not root,
    no ``mount``, or the kernel's ``shmem_enabled`` overrides the option): the
    caller skips that kind.
    """
    if kind not in PAGE_KINDS:
        raise ValueError(f"page kind {kind!r}: choose one of {PAGE_KINDS}")
    if os.path.isdir("/dev/shm") and page_kind("/dev/shm") == kind:
        with private_root(prefix) as root:
            yield root
        return
    why = _mount_private(kind, size, prefix)
    if isinstance(why, str):
        print(f"skipping the {kind}-page root: {why}", file=sys.stderr)
        yield None
        return
    mnt = why
    old_root = os.environ.get("SHMSTORE_ROOT")
    os.environ["SHMSTORE_ROOT"] = str(mnt)
    try:
        yield str(mnt)
    finally:
        if old_root is None:
            os.environ.pop("SHMSTORE_ROOT", None)
        else:
            os.environ["SHMSTORE_ROOT"] = old_root
        _unmount(mnt)


def _mount_private(kind: str, size: int, prefix: str) -> Path | str:
    """Mount a private tmpfs giving *kind* pages: its path, or why it cannot be had."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return (
            f"/dev/shm does not give {kind} pages and mounting a private tmpfs needs root "
            "and mount(8); run as root"
        )
    mnt = Path(tempfile.mkdtemp(prefix=f"{prefix}{kind}-"))
    size_k = max(size, 1 << 20) >> 10
    opts = f"size={size_k}k,mode=0700,huge={_HUGE_OPTION[kind]}"
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        mnt.rmdir()
        return f"mount -t tmpfs -o {opts} failed ({proc.stderr.strip()})"
    got = page_kind(str(mnt))
    if got != kind:
        _unmount(mnt)
        return (
            f"a tmpfs mounted huge={_HUGE_OPTION[kind]} gives {got} pages here "
            "(/sys/kernel/mm/transparent_hugepage/shmem_enabled overrides it)"
        )
    return mnt


def _unmount(mnt: Path) -> None:
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    with contextlib.suppress(OSError):
        mnt.rmdir()


@contextlib.contextmanager
def scratch_dir(prefix: str, parent: str | None = None) -> Iterator[str]:
    """A new directory in *parent* (default: ``$TMPDIR``), removed on exit."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------- results
def versions(*modules: str) -> dict[str, str]:
    """``{"python": ..., module: its __version__, ...}`` in the order given."""
    out = {"python": platform.python_version()}
    for name in modules:
        out[name] = importlib.import_module(name).__version__
    return out


def stamp(argv: list[str] | None) -> dict[str, Any]:
    """When the benchmark ran, and with which arguments."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv[1:] if argv is None else argv,
    }


def write_results(doc: dict[str, Any], name: str, output: str | None = None) -> Path:
    """Write *doc* as JSON to *output*, or to ``benchmarks/results/<name>``; say where.

    Returns the path written.
    """
    out = Path(output) if output else RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(f"\nwrote {out}")
    return out


# ----------------------------------------------------------------- tables
def print_header(head: str) -> None:
    """A table's column line, underlined."""
    print(head)
    print("-" * len(head))


def min_med_max(s: dict[str, Any]) -> str:
    """``"min/median/max"`` of a :func:`spread`, two decimals each."""
    return f"{s['min']:.2f}/{s['median']:.2f}/{s['max']:.2f}"


def target_mark(target: float | None, ok: bool | None, sign: str = ">=") -> str:
    """``"  target >= 0.9x: met"`` (or ``NOT met``); empty where no target is set."""
    if target is None:
        return ""
    return f"  target {sign} {target:.1f}x: " + ("met" if ok else "NOT met")
