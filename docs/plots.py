"""Redraw the Results page (tables and figures) from the benchmarks' JSON.

    python docs/plots.py [DIR_OR_JSON ...]

Reads ``benchmarks/results/*.json`` (where the benchmarks write) and
``docs/results/data/*.json`` (the results the site shows, committed), or the
directories and files given. For each *kind* of result, the file name up to
its first ``-`` (``bench_store``, ``soak``, ...), the newest run (``meta.time``)
is used; once drawn it is copied into ``docs/results/data/``, so the page can
be rebuilt from the repository alone (a run the script cannot draw is listed,
and the page keeps the previous one). Each kind that has a section below gets
``docs/results/<kind>.md`` (tables, included by ``docs/results.md``) and its
figures ``docs/results/<kind>-*.svg``; a kind without one is listed in
``docs/results/other.md``, so a new benchmark shows up before it is drawn.

To draw a new benchmark: write ``section_<kind>(doc, name) -> str`` that
returns the markdown (calling :func:`figure` for each plot), add it to
``SECTIONS``, and include ``results/<kind>.md`` in ``docs/results.md``.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
OUT = DOCS / "results"
DATA = OUT / "data"
DEFAULT_SOURCES = [REPO / "benchmarks" / "results", DATA]

# Reproducible SVG: no date, fixed element ids, text kept as text.
plt.rcParams.update(
    {"svg.hashsalt": "shmstore", "svg.fonttype": "none", "font.size": 9, "figure.dpi": 100}
)
STORE_LABELS = {
    "shmstore": "shmstore",
    "memory": "zarr MemoryStore",
    "local-shm": "LocalStore on /dev/shm",
    "local-disk": "LocalStore on disk",
    "memcpy": "memcpy (np.copyto)",
}


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g} {unit}"
        n /= 1024
    return f"{n:g} GiB"


def figure(fig: Any, name: str) -> str:
    """Save *fig* as ``docs/results/<name>.svg``; return the markdown that shows it."""
    path = OUT / f"{name}.svg"
    fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return f"![{name}](results/{path.name})"


def table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_line(doc: dict[str, Any], name: str) -> str:
    meta = doc.get("meta", {})
    versions = ", ".join(
        f"{k} {meta[k]}" for k in ("python", "zarr", "numpy") if k in meta
    ) or ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    cpus = meta.get("cpus") or meta.get("machine", {}).get("cpus")
    argv = " ".join(meta.get("argv", []))
    return (
        f"Run of {meta.get('time', '?')} (`{name}`): {versions}"
        + (f", {cpus} CPUs" if cpus else "")
        + (f"; arguments `{argv}`" if argv else "")
        + "."
    )


# ---------------------------------------------------------------- bench_store
def section_bench_store(doc: dict[str, Any], name: str) -> str:
    rows = doc["rows"]
    meta = doc.get("meta", {})
    stores = [s for s in STORE_LABELS if any(r["store"] == s for r in rows)]
    configs = sorted(
        {(r["pipeline"], r["chunk_bytes"]) for r in rows},
        key=lambda c: (c[0] != "default", -c[1]),
    )
    by = {(r["pipeline"], r["chunk_bytes"], r["store"], r["op"]): r for r in rows}
    ops = ["read", "write"]
    if any("first_write" in r for r in rows):  # a rewrite against a first write, if measured
        ops.append("first_write")

    fig, axes = plt.subplots(1, len(ops), figsize=(4.2 * len(ops), 3.2), sharey=True)
    width = 0.8 / len(stores)
    for ax, op in zip(axes, ops, strict=True):
        for i, store in enumerate(stores):
            values = []
            for pipeline, chunk in configs:
                r = by.get((pipeline, chunk, store, "write" if op == "first_write" else op))
                v = r.get("first_write") if (r and op == "first_write") else (r or {}).get("best")
                values.append(v or 0)
            xs = [k + (i - (len(stores) - 1) / 2) * width for k in range(len(configs))]
            ax.bar(xs, values, width, label=STORE_LABELS[store])
        if op == "read":
            firsts = [
                (by.get((p, c, "shmstore", "read")) or {}).get("first_read", 0) for p, c in configs
            ]
            xs = [k - (len(stores) - 1) / 2 * width for k in range(len(configs))]
            ax.scatter(
                xs, firsts, marker="_", s=120, color="black", zorder=3, label="shmstore, first read"
            )
        ax.set_xticks(range(len(configs)))
        ax.set_xticklabels([f"{human(c)} chunks\n{p} pipeline" for p, c in configs])
        ax.set_title({"first_write": "first write"}.get(op, op))
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("GiB/s (best round)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.16))
    fig.suptitle(f"{meta.get('size_mib', '?')} MiB float64, uncompressed", fontsize=9)
    out = [run_line(doc, name), "", figure(fig, "bench_store-throughput"), ""]

    head = [
        "pipeline",
        "chunk",
        "store",
        "read GiB/s",
        "read spread",
        "write GiB/s",
        "write spread",
    ]
    body = []
    for pipeline, chunk in configs:
        for store in stores:
            rd, wr = (
                by.get((pipeline, chunk, store, "read")),
                by.get((pipeline, chunk, store, "write")),
            )
            if not rd or not wr:
                continue
            body.append(
                [
                    pipeline,
                    human(chunk),
                    STORE_LABELS[store],
                    f"{rd['best']:.2f}",
                    f"{rd['min']:.2f}/{rd['median']:.2f}/{rd['max']:.2f}",
                    f"{wr['best']:.2f}",
                    f"{wr['min']:.2f}/{wr['median']:.2f}/{wr['max']:.2f}",
                ]
            )
    out += [table(head, body), "", "*Spread*: the slowest, median and fastest round.", ""]
    rats = [r for r in doc.get("ratios", []) if r["vs"] != "memcpy"]
    if rats:
        out += [
            "shmstore over each baseline, best over best (in brackets the median of "
            "same-round ratios); a target where one is set:",
            "",
            table(
                ["pipeline", "chunk", "op", "against", "ratio", "target"],
                [
                    [
                        r["pipeline"],
                        human(r["chunk_bytes"]),
                        r["op"],
                        STORE_LABELS[r["vs"]],
                        f"{r['ratio']:.2f}x ({r['paired']:.2f}x)",
                        (f">= {r['target']}x, " + ("met" if r["met"] else "not met"))
                        if r.get("target")
                        else "-",
                    ]
                    for r in rats
                ],
            ),
            "",
        ]
    return "\n".join(out)


# ---------------------------------------------------------------------- soak
SOAK_COLUMNS = ("torn", "lost", "signals", "leftovers_after_gc", "capacity_leaked")


def section_soak(doc: dict[str, Any], name: str) -> str:
    head = [
        "scenario",
        "duration",
        "processes",
        "operations",
        "kills",
        *(c.replace("_", " ") for c in SOAK_COLUMNS),
        "other failures",
    ]
    body = []
    for r in doc["reports"]:
        if "skipped" in r:
            body.append([r["scenario"], "skipped: " + r["skipped"], *[""] * (len(head) - 2)])
            continue
        fails = r.get("failures", {})
        ops = sum(
            v
            for k, v in r.get("operations", {}).items()
            if k not in ("committed", "in_flight_at_kill")
        )
        other = sum(v for k, v in fails.items() if k not in SOAK_COLUMNS)
        body.append(
            [
                r["scenario"],
                f"{r['duration_s']:.1f} s",
                r.get("processes", "-"),
                f"{ops:,}",
                r.get("kills", 0),
                *(fails.get(c, "-") for c in SOAK_COLUMNS),
                other,
            ]
        )
    return "\n".join([run_line(doc, name), "", table(head, body), ""])


def _spread(cell: dict[str, Any], fmt: str = "{:.2f}") -> str:
    """``best (min-max)`` of a ``{best, min, max}`` cell."""
    return f"{fmt.format(cell['best'])} ({fmt.format(cell['min'])}-{fmt.format(cell['max'])})"


def section_bench_rewrite(doc: dict[str, Any], name: str) -> str:
    """First writes, rewrites (first and steady) and fresh-process reads vs MemoryStore."""
    rows, rats = doc["rows"], doc["ratios"]
    ops = list(dict.fromkeys(r["op"] for r in rows))
    vs_mem = {
        (r["pipeline"], r["chunk_bytes"], r["root"], r["op"]): r
        for r in rats
        if r["vs"] == "memory"
    }
    head = ["pipeline", "chunk", "root", *ops]
    body = []
    for pipeline, chunk, root in dict.fromkeys((k[0], k[1], k[2]) for k in vs_mem):
        cells = []
        for op in ops:
            r = vs_mem.get((pipeline, chunk, root, op))
            cells.append("-" if r is None else f"{r['ratio']:.2f}x ({r['paired']:.2f}x)")
        pages = "4 KiB pages" if root == "small" else "huge=within_size"
        body.append([pipeline, human(chunk), pages, *cells])
    out = [
        run_line(doc, name),
        "",
        "shmstore over zarr's MemoryStore, best round over best round (median of "
        "the same-round ratios):",
        "",
        table(head, body),
        "",
    ]
    gib = {(r["pipeline"], r["chunk_bytes"], r["side"], r["op"]): r for r in rows}
    sides = list(dict.fromkeys(r["side"] for r in rows))
    chunks = sorted({r["chunk_bytes"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(chunks), figsize=(4.2 * len(chunks), 3), squeeze=False)
    width = 0.8 / len(sides)
    for ax, chunk in zip(axes[0], chunks, strict=True):
        for i, side in enumerate(sides):
            vals = [gib.get(("default", chunk, side, op), {}).get("best", 0) for op in ops]
            xs = [j + i * width for j in range(len(ops))]
            label = side.replace("shmstore@small", "shmstore, 4 KiB pages")
            label = label.replace("shmstore@huge", "shmstore, huge pages")
            ax.bar(xs, vals, width, label=label.replace("memory", "zarr MemoryStore"))
        ax.set_xticks([j + width * (len(sides) - 1) / 2 for j in range(len(ops))], ops)
        ax.set_title(f"{human(chunk)} chunks, default pipeline")
        ax.set_ylabel("GiB/s (best round)")
    axes[0][0].legend(fontsize=7)
    out += [figure(fig, "bench_rewrite-ops"), ""]
    return "\n".join(out)


def section_bench_arrays(doc: dict[str, Any], name: str) -> str:
    """The refill section of bench_arrays: delete + create vs a copy into a live array."""
    rf = doc["refill"]
    body = [[side, _spread(cell)] for side, cell in rf["gib_s"].items()]
    rat = [[k, f"{v:.2f}x"] for k, v in doc.get("ratios", {}).items() if "@" in k]
    return "\n".join(
        [
            f"`{name}`: Python {doc.get('python', '?')}, numpy {doc.get('numpy', '?')}, "
            f"{doc.get('size_mib', '?')} MiB arrays, {doc.get('rounds', '?')} rounds, "
            f"{doc.get('cpus', '?')} CPUs.",
            "",
            table(["what", "GiB/s, best (min-max)"], body),
            "",
            table(["ratio (best rounds)", ""], rat),
            "",
        ]
    )


def section_bench_pipeline(doc: dict[str, Any], name: str) -> str:
    """N fresh consumers reading one persisted array: time, first result, PSS."""
    rows = doc["rows"]
    head = ["consumers", "route", "total s", "first result s", "consumers' PSS MiB"]
    body = [
        [
            r["consumers"],
            r["label"],
            _spread(r["total"]),
            _spread(r["first"]),
            f"{r['pss']['best'] / 2**20:.0f}",
        ]
        for r in rows
    ]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for label in labels:
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["consumers"])
        ns = [r["consumers"] for r in mine]
        a1.plot(ns, [r["total"]["best"] for r in mine], marker="o", label=label)
        a2.plot(ns, [r["pss"]["best"] / 2**20 for r in mine], marker="o", label=label)
    a1.set_xlabel("consumer processes")
    a1.set_ylabel("total time, s (best round)")
    a2.set_xlabel("consumer processes")
    a2.set_ylabel("consumers' total PSS, MiB")
    for ax in (a1, a2):
        ax.set_xticks(sorted({r["consumers"] for r in rows}))
    a2.legend(fontsize=7, loc="upper left")
    meta = doc["meta"]
    return "\n".join(
        [
            run_line(doc, name) + f" {human(meta['size'])} in {human(meta['chunk'])} chunks.",
            "",
            figure(fig, "bench_pipeline-scaling"),
            "",
            table(head, body),
            "",
        ]
    )


def section_bench_scaleout(doc: dict[str, Any], name: str) -> str:
    """Two simulated hosts reading one source: requests, bytes, cold and warm time, PSS."""
    head = ["source", "route", "source requests", "MiB served", "cold s", "warm s", "PSS MiB"]
    body = [
        [
            r["source"],
            r["route"],
            r["requests"],
            f"{r['bytes_served'] / 2**20:.1f}",
            _spread(r["cold_s"]),
            _spread(r["warm_s"], "{:.3f}"),
            f"{r['pss_bytes'] / 2**20:.0f}",
        ]
        for r in doc["rows"]
    ]
    meta = doc["meta"]
    return "\n".join(
        [
            run_line(doc, name) + f" {meta['hosts']} hosts x {meta['workers_per_host']} workers,"
            f" {meta['size_mib']} MiB in {human(meta['chunk_bytes'])} chunks.",
            "",
            table(head, body),
            "",
        ]
    )


SECTIONS: dict[str, Callable[[dict[str, Any], str], str]] = {
    "bench_store": section_bench_store,
    "bench_rewrite": section_bench_rewrite,
    "bench_arrays": section_bench_arrays,
    "bench_pipeline": section_bench_pipeline,
    "bench_scaleout": section_bench_scaleout,
    "soak": section_soak,
}


def newest_runs(sources: list[Path]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The newest result file of each kind among *sources* (directories or files)."""
    files = []
    for src in sources:
        files += sorted(src.glob("*.json")) if src.is_dir() else [src] if src.exists() else []
    runs: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in files:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            print(f"skipped {path}: {e}", file=sys.stderr)
            continue
        kind = path.name.split("-", 1)[0].removesuffix(".json")
        when = doc.get("meta", {}).get("time", "")
        if kind not in runs or when > runs[kind][1].get("meta", {}).get("time", ""):
            runs[kind] = (path, doc)
    return runs


def main(argv: list[str]) -> int:
    sources = [Path(a) for a in argv] or DEFAULT_SOURCES
    DATA.mkdir(parents=True, exist_ok=True)
    others = []
    for kind, (path, doc) in sorted(newest_runs(sources).items()):
        section = SECTIONS.get(kind)
        if section is None:
            others.append(f"* `{path.name}` ({kind}): not drawn yet; see `docs/plots.py`")
            continue
        try:
            text = section(doc, path.name)
        except (KeyError, TypeError, ValueError) as e:  # a result of another shape
            print(f"could not draw {path}: {e!r}; kept docs/results/{kind}.md", file=sys.stderr)
            others.append(f"* `{path.name}` ({kind}): could not be drawn ({e!r})")
            continue
        (OUT / f"{kind}.md").write_text(text)
        print(f"wrote {OUT / (kind + '.md')}")
        if path.resolve().parent != DATA.resolve():  # keep the run the page shows
            for old in DATA.glob(f"{kind}-*.json"):
                old.unlink()
            shutil.copyfile(path, DATA / path.name)
    (OUT / "other.md").write_text("\n".join(others) + "\n" if others else "No other results.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
