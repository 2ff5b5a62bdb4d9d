"""First writes, rewrites and first reads of ``SharedMemoryStore``, on 4 KiB and huge pages.

A write into a tmpfs pays for every fresh page it touches (PITFALLS 13):
``write()`` allocates them, and the ``rename`` that replaces a chunk frees the
pages of the version it replaces. This script measures what that costs, for
an uncompressed float64 array (``compressors=None``, ``filters=None``), at
1 MiB and 64 KiB chunks, under zarr's default codec pipeline and, where the
installed zarr has it (3.4), the fused synchronous one:

- ``write``: ``z[:] = data`` into a new, empty array;
- ``first rewrite``: ``z[:] = data2`` into the same array again (every chunk
  replaced), once: the writer has no displaced version of a chunk to reuse yet
  but the first one's, and maps each file it reuses for the first time;
- ``rewrite``: the faster of the two rewrites after it (``data``, then
  ``data2``): an array rewritten over and over, as an iterative job does, where
  each chunk's new version goes into pages recycled from an older one
  (docs/design.md, "Recycled pages");
- ``fresh read``: the whole array read once, by name, in a process that has
  never seen it (``python benchmarks/bench_rewrite.py --child ...``, spawned
  for each round; libraries loaded and zarr warmed up before the clock), so it
  maps every chunk. zarr's ``MemoryStore`` lives in one process only: its
  figure is the first read after the writes, in the writing process.

against zarr's ``MemoryStore``, on two roots (``--roots``): a tmpfs with 4 KiB
pages (``small``; ``/dev/shm`` where it is one, else a private tmpfs mounted
``huge=never``) and a private tmpfs mounted ``huge=within_size`` (``huge``).
Private tmpfs instances are mounted for the run and unmounted after, which
needs root; a kind that cannot be had is skipped with a message.

Sides alternate within each round, in an order rotated by one per round
(each round makes fresh arrays, untimed); each side keeps its best round and
the spread (min/median/max) is shown. Ratios are shmstore over MemoryStore,
best over best and, in brackets, the median of same-round ratios.

Usage::

    PYTHONPATH=. python benchmarks/bench_rewrite.py                 # 256 MiB, 5 rounds, both roots
    PYTHONPATH=. python benchmarks/bench_rewrite.py --roots small --chunks 1MiB
    PYTHONPATH=. python benchmarks/bench_rewrite.py --quick         # smoke test

Writes ``benchmarks/results/bench_rewrite-<python>-<zarr>.json``, whose
``huge_gain`` (default pipeline, 1 MiB chunks, both roots) ``shmstore doctor``
quotes. Everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
from typing import Any

import numpy as np
from _harness import (
    GIB,
    PAGE_KINDS,
    Reader,
    create_array,
    human,
    min_med_max,
    page_kind,
    page_root,
    parse_size,
    pipeline_config,
    pipelines_available,
    print_header,
    rotated,
    spread,
    stamp,
    timed,
    versions,
    write_results,
)

OPS = ("write", "first rewrite", "rewrite", "fresh read")


# ------------------------------------------------------------ fresh reader
def child_read(root: str, namespace: str, pipeline: str) -> dict[str, float]:
    """Run in a fresh process: read array ``a`` of *namespace* once; its seconds and sum."""
    import zarr
    from zarr.core.buffer.cpu import NDBuffer
    from zarr.storage import MemoryStore

    import shmstore

    with pipeline_config(pipeline):
        warm = zarr.create_array(MemoryStore(), shape=(4,), chunks=(2,), dtype="f8")
        warm[...] = 1.0
        warm[...]  # zarr's event loop and codec pipeline, started outside the clock
        z = zarr.open_array(
            shmstore.SharedMemoryStore(namespace, root=root, read_only=True), path="a"
        )
        out = np.zeros(z.shape, dtype=z.dtype)  # faulted in outside the clock
        nd = NDBuffer.from_numpy_array(out)
        seconds = timed(lambda: z.get_basic_selection(Ellipsis, out=nd))
    return {"seconds": seconds, "sum": float(out.sum())}


def fresh_read(root: str, namespace: str, pipeline: str) -> dict[str, float]:
    """:func:`child_read` in a new Python process (this script with ``--child``)."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", root, namespace, pipeline],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fresh reader of {namespace!r} in {root} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ sides
class Side:
    """One store on one root: a fresh array per round, written, rewritten and read."""

    def __init__(self, store: str, root: str | None, tag: str, data: np.ndarray, chunk: int):
        self.store, self.root, self.tag = store, root, tag
        self.data, self.chunk = data, chunk
        self.data2 = data + 1.0
        self._reader = Reader(self.data2)
        self._round = 0
        self._z: Any = None
        self._destroy: Any = None

    @property
    def namespace(self) -> str:
        return f"bench-rewrite-{self.tag}-{self._round}"

    def fresh(self) -> None:
        """A new empty array (untimed); the previous one is destroyed."""
        from zarr.storage import MemoryStore

        import shmstore

        self.close()
        self._round += 1
        if self.store == "shmstore":
            store = shmstore.SharedMemoryStore(self.namespace, root=self.root)
            self._destroy = store.destroy
        else:
            store = MemoryStore()
        self._z = create_array(store, self.data, self.chunk)

    def write(self) -> float:
        return timed(lambda: self._z.__setitem__(slice(None), self.data))

    def first_rewrite(self) -> float:
        return timed(lambda: self._z.__setitem__(slice(None), self.data2))

    def rewrite(self) -> float:
        again = timed(lambda: self._z.__setitem__(slice(None), self.data))
        return min(again, timed(lambda: self._z.__setitem__(slice(None), self.data2)))

    def first_read(self, pipeline: str) -> float:
        if self.store == "memory":  # one process only: the first read after the writes
            seconds = timed(self._reader.read(self._z))
            self._reader.check(self.store, self._reader.read(self._z))
            return seconds
        got = fresh_read(str(self.root), self.namespace, pipeline)
        want = float(self.data2.sum())
        if not np.isclose(got["sum"], want, rtol=1e-9):
            raise AssertionError(f"fresh reader of {self.namespace}: sum {got['sum']} != {want}")
        return got["seconds"]

    def close(self) -> None:
        self._z = None
        if self._destroy is not None:
            self._destroy()
            self._destroy = None


def run_config(
    pipeline: str, chunk: int, roots: dict[str, str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    n = args.size // 8
    data = np.random.default_rng(42).random(n)
    names = [f"shmstore@{kind}" for kind in roots] + ["memory"]
    sides = {
        f"shmstore@{kind}": Side("shmstore", root, f"{pipeline}-{chunk}-{kind}", data, chunk)
        for kind, root in roots.items()
    }
    sides["memory"] = Side("memory", None, "memory", data, chunk)
    times: dict[str, dict[str, list[float]]] = {s: {op: [] for op in OPS} for s in names}
    try:
        with pipeline_config(pipeline):
            for r in range(args.rounds):
                for name in rotated(names, r):
                    side = sides[name]
                    side.fresh()
                    times[name]["write"].append(side.write())
                    times[name]["first rewrite"].append(side.first_rewrite())
                    times[name]["rewrite"].append(side.rewrite())
                    times[name]["fresh read"].append(side.first_read(pipeline))
    finally:
        for side in sides.values():
            side.close()
    rows = []
    for name in names:
        store, _, kind = name.partition("@")
        for op in OPS:
            row = {
                "pipeline": pipeline,
                "chunk_bytes": chunk,
                "side": name,
                "store": store,
                "root": kind or None,
                "op": op,
            }
            row.update(spread([args.size / t / GIB for t in times[name][op]]))
            rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """shmstore (each root) over MemoryStore per (pipeline, chunk, op); rewrite over write."""
    by = {(r["pipeline"], r["chunk_bytes"], r["side"], r["op"]): r for r in rows}
    out = []
    for (pipeline, chunk, side, op), mine in by.items():
        if side == "memory":
            continue
        base = by[(pipeline, chunk, "memory", op)]
        out.append(
            {
                "pipeline": pipeline,
                "chunk_bytes": chunk,
                "root": mine["root"],
                "op": op,
                "vs": "memory",
                "ratio": mine["best"] / base["best"],
                "paired": statistics.median(
                    a / b for a, b in zip(mine["samples"], base["samples"], strict=True)
                ),
            }
        )
    for (pipeline, chunk, side, op), row in by.items():
        if op == "rewrite":
            first = by[(pipeline, chunk, side, "write")]
            out.append(
                {
                    "pipeline": pipeline,
                    "chunk_bytes": chunk,
                    "root": row["root"],
                    "side": side,
                    "op": "rewrite",
                    "vs": "write",
                    "ratio": row["best"] / first["best"],
                    "paired": statistics.median(
                        a / b for a, b in zip(row["samples"], first["samples"], strict=True)
                    ),
                }
            )
    return out


def huge_gains(rats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For ``shmstore doctor``: shmstore/MemoryStore on each root, default pipeline, 1 MiB."""
    vs_memory = [r for r in rats if r["vs"] == "memory" and r["pipeline"] == "default"]
    chunks = sorted({r["chunk_bytes"] for r in vs_memory})
    if not chunks:
        return []
    chunk = 1 << 20 if 1 << 20 in chunks else chunks[-1]
    out = []
    for op in OPS:
        by = {
            r["root"]: r["ratio"] for r in vs_memory if r["chunk_bytes"] == chunk and r["op"] == op
        }
        if {"small", "huge"} <= set(by):
            out.append(
                {
                    "what": f"{op} vs zarr MemoryStore, {human(chunk)} chunks",
                    "small": by["small"],
                    "huge": by["huge"],
                }
            )
    return out


def print_table(rows: list[dict[str, Any]], rats: list[dict[str, Any]]) -> None:
    print("GiB/s, best of rounds (min/median/max)")
    print_header(
        f"{'pipeline':<8} {'chunk':>7} {'side':<15} " + " ".join(f"{op:>24}" for op in OPS)
    )
    by = {(r["pipeline"], r["chunk_bytes"], r["side"], r["op"]): r for r in rows}
    for pipeline, chunk, side in dict.fromkeys(
        (r["pipeline"], r["chunk_bytes"], r["side"]) for r in rows
    ):
        cells = []
        for op in OPS:
            r = by[(pipeline, chunk, side, op)]
            cells.append(f"{r['best']:6.2f} {'(' + min_med_max(r) + ')':>17}")
        print(f"{pipeline:<8} {human(chunk):>7} {side:<15} " + " ".join(f"{c:>24}" for c in cells))
    print("\nshmstore over MemoryStore: best vs best (median of same-round ratios)")
    for r in rats:
        if r["vs"] == "memory":
            print(
                f"  {r['pipeline']:<8} {human(r['chunk_bytes']):>7} {r['root']:<6} "
                f"{r['op']:<11} {r['ratio']:5.2f}x ({r['paired']:4.2f}x)"
            )
    print("\nrewrite over first write, same side")
    for r in rats:
        if r["vs"] == "write":
            print(
                f"  {r['pipeline']:<8} {human(r['chunk_bytes']):>7} {r['side']:<15} "
                f"{r['ratio']:5.2f}x ({r['paired']:4.2f}x)"
            )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child_read(*argv[1:4])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="256MiB", help="array size (default 256MiB)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--chunks", default="1MiB,64KiB", help="chunk sizes (default 1MiB,64KiB)")
    p.add_argument("--pipelines", default=None, help="subset of default,fused (default: all)")
    p.add_argument(
        "--roots", default="small,huge", help="kinds of root: small (4 KiB pages), huge; both"
    )
    p.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/...)")
    p.add_argument("--quick", action="store_true", help="smoke test: 8 MiB, 2 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.rounds = "8MiB", min(args.rounds, 2)
    args.size = parse_size(args.size)
    chunks = [parse_size(c) for c in args.chunks.split(",") if c.strip()]
    have = pipelines_available()
    pipelines = have if args.pipelines is None else args.pipelines.split(",")
    if set(pipelines) - {"default", "fused"}:
        p.error(f"--pipelines {args.pipelines!r}: choose from default,fused")
    skipped = [pl for pl in pipelines if pl not in have]
    pipelines = [pl for pl in pipelines if pl in have]
    wanted = [k.strip() for k in args.roots.split(",") if k.strip()]
    if set(wanted) - set(PAGE_KINDS):
        p.error(f"--roots {args.roots!r}: choose from {PAGE_KINDS}")

    # Two versions of one chunk at most live at once: the array twice, and slack.
    root_size = 2 * args.size + (64 << 20)
    with contextlib.ExitStack() as stack:
        roots: dict[str, str] = {}
        for kind in wanted:
            root = stack.enter_context(page_root(kind, root_size, "shmstore-bench-rewrite-"))
            if root is not None:
                roots[kind] = root
        if not roots:
            print(
                "no root of the kinds asked could be had; see the messages above", file=sys.stderr
            )
            return 1
        meta = {
            **versions("zarr", "numpy"),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "size": args.size,
            "rounds": args.rounds,
            "chunks": chunks,
            "pipelines": pipelines,
            "pipelines_unavailable": skipped,
            "roots": dict(roots),
            "root_pages": {k: page_kind(v) for k, v in roots.items()},
            "roots_skipped": [k for k in wanted if k not in roots],
            **stamp(argv),
        }
        rows: list[dict[str, Any]] = []
        for pipeline in pipelines:
            for chunk in chunks:
                rows += run_config(pipeline, chunk, roots, args)
    rats = ratios(rows)
    print(
        f"bench_rewrite: Python {meta['python']}, zarr {meta['zarr']}, {human(args.size)} float64, "
        f"{args.rounds} rounds, {meta['cpus']} CPUs; roots: "
        + ", ".join(f"{k}={v}" for k, v in roots.items())
    )
    print_table(rows, rats)
    pyver = ".".join(platform.python_version_tuple()[:2])
    write_results(
        {"meta": meta, "rows": rows, "ratios": rats, "huge_gain": huge_gains(rats)},
        f"bench_rewrite-{pyver}-{meta['zarr']}.json",
        args.output,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
