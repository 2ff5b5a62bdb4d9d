"""The ``shmstore`` command line: see, clean and move what lives in shared memory.

Thin commands over the library: parse, call :mod:`shmstore._inventory` and the
public API, format the answer (rich tables for people, ``--json`` for
scripts). Library errors (``ValueError``, ``OSError`` and their subclasses) are
user errors here: one line on stderr, exit status 1, no traceback (set
``SHMSTORE_DEBUG=1`` to see it); with ``--json``, every error is one JSON object
on stdout instead. Entries that cannot be trusted are reported once each and
never stop a command. See docs/cli.md.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

import click

from shmstore import __version__
from shmstore import _inventory as inventory
from shmstore._errors import ForeignEntryError, SharedMemoryFullError, _human
from shmstore._names import ENV_ROOT, SCHEME, entry_path, resolve_root, strip_scheme

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from rich.console import Console
    from rich.text import Text

__all__ = ["main"]

_GLOB_CHARS = frozenset("*?[")


# ------------------------------------------------------------------ plumbing
def _one_line(e: BaseException) -> str:
    """The message of a library error, on one line."""
    if isinstance(e, OSError) and type(e).__str__ is OSError.__str__ and e.strerror:
        msg = e.strerror
        if e.filename and str(e.filename) not in msg:
            msg = f"{msg}: {e.filename}"
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())


class _UserError(click.ClickException):
    """A one-line user error, with the *kind* that ``--json`` reports."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


#: The ``"kind"`` of a JSON error, by exception class (the first that matches).
_ERROR_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (click.UsageError, "usage"),
    (click.Abort, "aborted"),
    (ForeignEntryError, "foreign-entry"),
    (SharedMemoryFullError, "no-space"),
    (FileNotFoundError, "not-found"),
    (FileExistsError, "exists"),
    (PermissionError, "permission"),
    (ValueError, "invalid"),
    (OSError, "os-error"),
)


def _error_kind(e: BaseException) -> str:
    kind = getattr(e, "kind", None)
    if isinstance(kind, str):
        return kind
    return next((k for cls, k in _ERROR_KINDS if isinstance(e, cls)), "error")


class _JsonError(click.ClickException):
    """An error of a ``--json`` command: one JSON object on stdout, same exit status."""

    def __init__(self, error: click.ClickException | click.Abort) -> None:
        message = error.format_message() if isinstance(error, click.ClickException) else ""
        super().__init__(message or "aborted")
        self.exit_code = getattr(error, "exit_code", 1)
        self.kind = _error_kind(error)

    def show(self, file: Any = None) -> None:
        click.echo(json.dumps({"error": self.format_message(), "kind": self.kind}))


_JSON_META = "shmstore.json"


def _wants_json(args: Iterable[str]) -> bool:
    """Whether the command line asks for ``--json`` (before any ``--``)."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


class _Group(click.Group):
    """A group whose commands turn library errors into one-line messages.

    With ``--json`` on the command line every error, click's own usage errors
    included, is printed as one JSON object on stdout instead.
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        as_json = _wants_json(args)
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as e:
            if as_json:
                raise _JsonError(e) from e
            raise
        ctx.meta[_JSON_META] = as_json
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except BrokenPipeError:
                # `shmstore ls | head`: the reader left; say nothing more.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                ctx.exit(1)
            except (ValueError, OSError) as e:
                if os.environ.get("SHMSTORE_DEBUG"):
                    raise
                raise _UserError(_one_line(e), _error_kind(e)) from e
        except (click.ClickException, click.Abort) as e:
            if ctx.meta.get(_JSON_META):
                raise _JsonError(e) from e
            raise


def _root_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=str),
        default=None,
        help=f"Shared-memory directory [default: ${ENV_ROOT}, else /dev/shm].",
    )(fn)


def _json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table."
    )(fn)


def _resolve(root: str | None, *, fs_warnings: bool = True) -> str:
    """The root to work on; an explicit one must exist (no typo creates a directory).

    A command's own ``--root`` wins over the one given before the command
    name (``shmstore --root X ls``), which wins over ``$SHMSTORE_ROOT``. The
    library's warnings about the root (not a tmpfs, no /dev/shm) are printed
    as one line each, unless *fs_warnings* is false (``du`` reports the
    filesystem itself).
    """
    if root is None:
        ctx = click.get_current_context(silent=True)
        root = ctx.find_root().params.get("root") if ctx is not None else None
    given, source = (root, "--root") if root else (os.environ.get(ENV_ROOT), ENV_ROOT)
    if given and not os.path.isdir(given):
        raise _UserError(
            f"{source} {given!r} is not a directory; point {source} at an existing "
            "shared-memory directory (default /dev/shm)",
            "not-found",
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = resolve_root(root)
    for w in caught:
        if fs_warnings or not issubclass(w.category, RuntimeWarning):
            _warn(str(w.message))
    return path


def _warn(msg: str) -> None:
    click.echo(f"warning: {msg}", err=True)


def _console() -> Console:
    from rich.console import Console

    out = sys.stdout
    # Pipes get the whole table, uncoloured: nothing is cut or wrapped.
    width = None if out.isatty() else 1000
    # No markup: names and paths are printed as they are, brackets included.
    return Console(file=out, width=width, highlight=False, soft_wrap=False, markup=False)


def _print_table(
    console: Console,
    columns: list[str],
    rows: list[list[str]],
    *,
    right: Iterable[str] = (),
    optional: Iterable[str] = (),
    footer: list[str] | None = None,
) -> None:
    """Print *rows* under *columns* as a table.

    On a terminal too narrow for every column, the *optional* ones are dropped
    (in that order) rather than names or numbers being cut short.
    """
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    right = set(right)

    def build(shown: list[str]) -> Table:
        table = Table(box=box.SIMPLE, pad_edge=False, show_edge=False, show_footer=bool(footer))
        idx = [columns.index(c) for c in shown]
        for c, i in zip(shown, idx, strict=True):
            table.add_column(
                c,
                footer=footer[i] if footer else "",
                justify="right" if c in right else "left",
                # Only the first column (names, paths) may fold onto more lines.
                no_wrap=c != shown[0],
                overflow="fold",
            )
        for r in rows:
            table.add_row(*(r[i] for i in idx))
        return table

    shown = list(columns)
    table = build(shown)
    unlimited = console.options.update(width=1 << 20)
    for col in optional:
        if Measurement.get(console, unlimited, table).maximum <= console.width:
            break
        shown.remove(col)
        table = build(shown)
    console.print(table)


def _emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t, _dt.UTC).isoformat(timespec="seconds")


def _local(t: float | None) -> str:
    if t is None:
        return "-"
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _size(n: int | None) -> str:
    return "?" if n is None else _human(n)


def _pid(pid: int | None, alive: bool | None) -> str:
    if pid is None:
        return "-"
    state = {True: "alive", False: "dead", None: "?"}[alive]
    return f"{pid} ({state})"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _is_glob(name: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(name)


# ------------------------------------------------------------------- entries
def _scan(
    root: str, pattern: str | None = None
) -> tuple[list[dict[str, Any]], list[inventory.Leftover], list[inventory.Problem]]:
    """Your namespaces and named arrays of *root* matching *pattern*, as records.

    Also the leftovers of dead processes there, and the entries that were
    skipped (each with why). Entries whose bookkeeping or header is corrupt,
    or of another user, are never listed as if they were valid.
    """
    scan = inventory.scan_root(root, pattern)
    return _records(scan), scan.leftovers, scan.problems


def _records(scan: inventory.RootScan) -> list[dict[str, Any]]:
    records = [_record(e) for e in (*scan.namespaces, *scan.arrays)]
    return sorted(records, key=lambda r: (r["name"], r["kind"]))


def _record(entry: inventory.NamespaceEntry | inventory.ArrayEntry) -> dict[str, Any]:
    if isinstance(entry, inventory.NamespaceEntry):
        return _namespace_record(entry)
    return _array_record(entry)


def _report(problems: Iterable[inventory.Problem]) -> None:
    """Name each skipped entry once on stderr (``--json`` puts them in the output)."""
    for p in problems:
        _warn(str(p))


def _problems_json(problems: Iterable[inventory.Problem]) -> list[dict[str, Any]]:
    """The ``"problems"`` of a ``--json`` output: each skipped entry, once."""
    return [p.to_dict() for p in problems]


def _nbytes(leftovers: Iterable[inventory.Leftover]) -> int:
    return sum(lo.nbytes for lo in leftovers)


def _namespace_record(ns: inventory.NamespaceEntry) -> dict[str, Any]:
    spilled = ns.spilled
    return {
        "name": ns.name,
        "kind": "namespace",
        "shm_bytes": ns.usage.nbytes,
        # Tiering mirrors zarr metadata into the spill store: count spilled chunks
        # only, so that no key is counted twice.
        "spilled_bytes": None if spilled is None else spilled.chunk_nbytes,
        "keys": ns.usage.keys + (spilled.chunks if spilled else 0),
        "chunks": ns.usage.chunks + (spilled.chunks if spilled else 0),
        "owner": ns.owner,
        "uid": ns.uid,
        "pid": ns.pid,
        "pid_alive": ns.pid_alive,
        "host": ns.host,
        "scoped": ns.scoped,
        "leftover": ns.leftover,
        "created": _iso(ns.created),
        "modified": _iso(max(ns.modified, ns.created or 0.0)),
        "spill": ns.spill,
        "capacity": ns.capacity,
        "cache_source": ns.cache_source,
        "cache_stats": ns.cache_stats,
        "path": ns.path,
        # for du
        "_shm_allocated": ns.usage.allocated,
        "_spill_allocated": None if spilled is None else spilled.allocated,
        "_created": ns.created,
        "_modified": max(ns.modified, ns.created or 0.0),
    }


def _array_record(a: inventory.ArrayEntry) -> dict[str, Any]:
    return {
        "name": a.name,
        "kind": "array",
        "shm_bytes": a.nbytes,
        "spilled_bytes": 0,
        "keys": None,
        "chunks": None,
        "owner": a.owner,
        "uid": a.uid,
        "pid": a.pid,
        "pid_alive": a.pid_alive,
        "host": None,
        "scoped": a.scoped,
        "leftover": a.leftover,
        "created": _iso(a.created),
        "modified": _iso(max(a.modified, a.created or 0.0)),
        "spill": None,
        "capacity": None,
        "cache_source": None,
        "cache_stats": None,
        "path": a.path,
        "shape": list(a.shape),
        "dtype": a.dtype,
        "order": a.order,
        # for du and info
        "_shm_allocated": a.allocated,
        "_spill_allocated": 0,
        "_created": a.created,
        "_modified": max(a.modified, a.created or 0.0),
    }


def _kind(record: dict[str, Any]) -> str:
    if record.get("cache_source"):
        return f"{record['kind']} (cache)"
    if record.get("leftover"):
        return f"{record['kind']} (scoped, leftover)"
    return record["kind"] + (" (scoped)" if record.get("scoped") else "")


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _exists(root: str, name: str) -> bool:
    return "/" not in name and os.path.lexists(os.path.join(root, name))


def _describe(root: str, name: str) -> dict[str, Any]:
    """The record of your entry *name*; a one-line error saying what it is otherwise."""
    if not _exists(root, name):
        raise _UserError(
            f"no namespace or named array {name!r} in {root}; see `shmstore ls`", "not-found"
        )
    return _record(inventory.describe_entry(root, name))


def _select(
    root: str, names: tuple[str, ...]
) -> tuple[list[dict[str, Any]], list[inventory.Problem]]:
    """The entries named by *names* (names or globs); refuse any that matches nothing.

    Only the entries named are examined. Those a glob matches but that cannot
    be trusted (another user's, corrupt) are returned as problems, not chosen.
    """
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    problems: dict[str, inventory.Problem] = {}
    for name in names:
        if _exists(root, name) or not _is_glob(name):
            # An exact name wins over a glob reading of it (names may hold "[").
            hits = [_describe(root, name)]
        else:
            scan = inventory.scan_root(root, name)
            hits = _records(scan)
            problems.update((p.name, p) for p in scan.problems)
            if not hits:
                skipped = ", ".join(repr(p.name) for p in scan.problems)
                raise _UserError(
                    f"pattern {name!r} matches no namespace or named array in {root}"
                    + (f" but entries that shmstore skips ({skipped})" if skipped else "")
                    + "; see `shmstore ls`",
                    "not-found",
                )
        for r in hits:
            chosen[(r["name"], r["kind"])] = r
    return sorted(chosen.values(), key=lambda r: (r["name"], r["kind"])), list(problems.values())


# ------------------------------------------------------------------ commands
@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shmstore")
@_root_option
def main(root: str | None) -> None:
    """See, clean and move what lives in shared memory (/dev/shm).

    Every command takes --root (default $SHMSTORE_ROOT, else /dev/shm), before
    or after the command name; the ones that print take --json.
    """


def _leftover_name(root: str, lo: inventory.Leftover) -> str:
    return os.path.relpath(lo.path, root)


def _leftovers_line(leftovers: list[inventory.Leftover]) -> str:
    """What ``gc`` would free, for the end of ``ls`` and ``du``."""
    return (
        f"`shmstore gc` would free {_human(_nbytes(leftovers))}: "
        f"{_plural(len(leftovers), 'leftover')} of dead processes"
    )


@main.command("ls")
@click.argument("pattern", required=False)
@_root_option
@_json_option
def ls_command(pattern: str | None, root: str | None, as_json: bool) -> None:
    """List namespaces and named arrays (optionally those matching the glob PATTERN).

    Shows the bytes in shared memory and in the spill tier, the number of keys
    and chunks, the owner, the creating process and whether it is alive, and
    when the entry was created and last modified. Leftovers of dead processes
    (which `shmstore gc` reclaims) are listed too; entries that cannot be
    trusted (another user's, corrupt, symlinks) are named on stderr.
    """
    root = _resolve(root)
    records, leftovers, problems = _scan(root, pattern)
    if as_json:
        _emit_json(
            {
                "root": root,
                "entries": [_public(r) for r in records],
                "leftovers": [lo.to_dict() for lo in leftovers],
                "reclaimable_bytes": _nbytes(leftovers),
                "problems": _problems_json(problems),
            }
        )
        return
    _report(problems)
    console = _console()
    rows = [
        [
            r["name"],
            _kind(r),
            _size(r["shm_bytes"]),
            _size(r["spilled_bytes"]),
            "-" if r["keys"] is None else str(r["keys"]),
            "-" if r["chunks"] is None else str(r["chunks"]),
            r["owner"],
            _pid(r["pid"], r["pid_alive"]),
            _local(r["_created"]),
            _local(r["_modified"]),
        ]
        for r in records
    ]
    # Scoped entries of dead processes have their own rows, marked as leftovers.
    rows += [
        [
            _leftover_name(root, lo),
            f"leftover ({lo.kind})",
            _human(lo.nbytes),
            *("-", "-", "-", "-"),
            _pid(lo.pid, False),
            *("-", "-"),
        ]
        for lo in leftovers
        if not lo.kind.startswith("scoped-")
    ]
    if not rows:
        what = f" matching {pattern!r}" if pattern else ""
        console.print(f"no namespaces or named arrays{what} in {root}")
        return
    _print_table(
        console,
        ["NAME", "KIND", "SHM", "SPILLED", "KEYS", "CHUNKS", "OWNER", "PID", "CREATED", "MODIFIED"],
        rows,
        right=("SHM", "SPILLED", "KEYS", "CHUNKS"),
        optional=("MODIFIED", "CREATED", "OWNER", "CHUNKS", "KEYS", "SPILLED"),
    )
    if leftovers:
        console.print(_leftovers_line(leftovers))


@main.command("du")
@click.argument("names", nargs=-1)
@_root_option
@_json_option
def du_command(names: tuple[str, ...], root: str | None, as_json: bool) -> None:
    """Show usage per namespace and tier, and the size and free space of the tmpfs.

    NAMES (names or globs) restrict the listing; by default every entry is
    shown, with the leftovers of dead processes and what `shmstore gc` would
    free. Sizes are what the filesystem holds (whole pages, bookkeeping and
    writes in flight included), like du(1).
    """
    root = _resolve(root, fs_warnings=False)
    if names:
        records, problems = _select(root, names)
        leftovers: list[inventory.Leftover] = []
    else:
        records, leftovers, problems = _scan(root)
    fs = inventory.filesystem_usage(root)
    # Huge pages are only the doctor's business, read from /proc and /sys: loaded here.
    from shmstore._doctor import huge_page_finding

    huge = huge_page_finding(root)
    rows = []
    for r in records:
        shm, spill = r["_shm_allocated"], r["_spill_allocated"]
        rows.append(
            {
                "name": r["name"],
                "kind": r["kind"],
                "shm_bytes": shm,
                "spilled_bytes": spill,
                "total_bytes": None if spill is None else shm + spill,
                "spill": r.get("spill"),
                # a host cache's hits, misses and bytes fetched (None for other entries)
                "cache_stats": r.get("cache_stats"),
            }
        )
    # Transient root entries belong to no entry: counted on their own. Other
    # leftovers lie inside an entry's tree (or are one) and are counted there.
    loose = [lo for lo in leftovers if lo.kind == "transient"]
    total_shm = sum(row["shm_bytes"] for row in rows) + _nbytes(loose)
    total_spill = sum(row["spilled_bytes"] or 0 for row in rows)
    warnings_ = _fs_warnings(fs)
    if as_json:
        _emit_json(
            {
                "root": root,
                "entries": rows,
                "leftovers": [lo.to_dict() for lo in leftovers],
                "total": {
                    "shm_bytes": total_shm,
                    "spilled_bytes": total_spill,
                    "total_bytes": total_shm + total_spill,
                    "reclaimable_bytes": _nbytes(leftovers),
                },
                "filesystem": fs.to_dict(),
                "huge_pages": None if huge is None else huge.to_dict(),
                "warnings": warnings_,
                "problems": _problems_json(problems),
            }
        )
        return
    _report(problems)
    console = _console()
    if rows or loose:
        columns = ["NAME", "KIND", "SHARED MEMORY", "SPILL TIER", "TOTAL", "SPILL LOCATION"]
        table = [
            [
                row["name"],
                row["kind"],
                _size(row["shm_bytes"]),
                _size(row["spilled_bytes"]),
                _size(row["total_bytes"]),
                row["spill"] or "-",
            ]
            for row in rows
        ]
        table += [
            [_leftover_name(root, lo), "leftover", _human(lo.nbytes), "-", _human(lo.nbytes), "-"]
            for lo in loose
        ]
        total = ["total", "", _size(total_shm), _size(total_spill)]
        total += [_size(total_shm + total_spill), ""]
        if not any(row["spill"] for row in rows):
            columns, table, total = columns[:-1], [t[:-1] for t in table], total[:-1]
        _print_table(
            console,
            columns,
            table,
            right=("SHARED MEMORY", "SPILL TIER", "TOTAL"),
            optional=("SPILL LOCATION", "KIND"),
            footer=total,
        )
    else:
        console.print(f"no namespaces or named arrays in {root}")
    if leftovers:
        console.print(_leftovers_line(leftovers))
    pct = 100 * fs.used / fs.size if fs.size else 0.0
    console.print(
        f"{fs.fstype or 'filesystem'} {fs.mountpoint or root}: {_human(fs.size)} total, "
        f"{_human(fs.used)} used ({pct:.0f}%), {_human(fs.free)} free"
    )
    if huge is not None:
        pages = "huge pages" if huge.level == "ok" else "4 KiB pages"
        hint = "" if huge.level == "ok" else "; `shmstore doctor` says how to get huge pages"
        console.print(f"pages: {pages} (huge={huge.details['huge']}){hint}")
    for w in warnings_:
        _warn(w)


def _fs_warnings(fs: inventory.FilesystemUsage) -> list[str]:
    out = []
    if inventory.looks_like_docker_default(fs):
        out.append(
            f"{fs.mountpoint or fs.root} is only {_human(fs.size)}, like Docker's default "
            "/dev/shm for a container; raise it with `docker run --shm-size=4g` "
            "(compose: `shm_size: 4gb`), or give namespaces a spill tier"
        )
    if inventory.memory_backed(fs) is False:
        out.append(
            f"{fs.root} is on {fs.fstype}, not tmpfs: shmstore runs file-backed there "
            "(pass --root or set SHMSTORE_ROOT to a tmpfs for shared memory)"
        )
    return out


@main.command("info")
@click.argument("name")
@_root_option
@_json_option
def info_command(name: str, root: str | None, as_json: bool) -> None:
    """Describe NAME: a namespace's zarr hierarchy, or a named array's metadata.

    For a namespace: its groups and arrays with shapes, dtypes, chunks, shards
    and codecs, read with zarr over a read-only SharedMemoryStore.
    """
    root = _resolve(root)
    record = _describe(root, name)
    if record["kind"] == "namespace":
        nodes = _zarr_nodes(root, name)
        holders = inventory.lock_holders(record["path"])
        lock = {"held": bool(holders), "holders": holders}
        if as_json:
            _emit_json({**_public(record), "lock": lock, "nodes": nodes})
            return
        _print_namespace(record, nodes, lock)
    else:
        _array_info(root, record, as_json)


def _zarr_nodes(root: str, name: str) -> list[dict[str, Any]]:
    """Every group and array of namespace *name*, read with zarr."""
    # zarr (and the store) load only for commands that need them: `ls` stays fast.
    import zarr

    from shmstore._store import SharedMemoryStore

    store = SharedMemoryStore(name, root=root, read_only=True)
    nodes = []
    for path in inventory.zarr_node_paths(root, name):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                node = zarr.open(store=store, path=path, mode="r")
            except Exception as e:  # a corrupt document: report it, keep going
                node = None
                nodes.append({"path": path, "node_type": "invalid", "error": _one_line(e)})
        for w in caught:
            _warn(f"{'/'.join(filter(None, (name, path)))}: {_one_line(w.message)}")
        if node is None:
            continue
        meta = node.metadata.to_dict()
        rec: dict[str, Any] = {
            "path": path,
            "node_type": "array" if isinstance(node, zarr.Array) else "group",
            "zarr_format": meta.get("zarr_format"),
            "attributes": dict(node.attrs),
        }
        if isinstance(node, zarr.Array):
            rec.update(
                shape=list(node.shape),
                dtype=str(node.dtype),
                chunks=list(node.chunks),
                shards=list(node.shards) if getattr(node, "shards", None) else None,
                fill_value=_jsonable(meta.get("fill_value")),
                codecs=_jsonable(_codecs(meta)),
                nchunks=node.nchunks,
            )
        nodes.append(rec)
    return nodes


def _codecs(meta: dict[str, Any]) -> list[dict[str, Any]]:
    if "codecs" in meta:  # zarr v3
        return list(meta["codecs"])
    # zarr v2: filters, then the compressor
    out = [dict(f) for f in meta.get("filters") or ()]
    if meta.get("compressor"):
        out.append(dict(meta["compressor"]))
    return out


def _codec_names(codecs: Iterable[dict[str, Any]]) -> str:
    names = []
    for c in codecs:
        name = c.get("name") or c.get("id") or "?"
        inner = (c.get("configuration") or {}).get("codecs")
        names.append(f"{name}({_codec_names(inner)})" if inner else name)
    return ", ".join(names)


def _jsonable(value: Any) -> Any:
    """Turn tuples, numpy scalars and non-finite floats into JSON-safe values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Infinity; zarr writes them as strings too
    if value is None or isinstance(value, bool | int | float | str):
        return value
    item = getattr(value, "item", None)
    return _jsonable(item()) if callable(item) else str(value)


def _lock_line(lock: dict[str, Any]) -> str:
    if lock["held"]:
        return f"  lock: held by pid {', '.join(map(str, lock['holders']))}"
    return "  lock: free"


def _print_namespace(
    record: dict[str, Any], nodes: list[dict[str, Any]], lock: dict[str, Any]
) -> None:
    from rich.text import Text
    from rich.tree import Tree

    console = _console()
    lines = [
        f"namespace {record['name']} (shm://{record['name']}) in {record['path']}",
        f"  owner {record['owner']}, created by pid {_pid(record['pid'], record['pid_alive'])}"
        f" on {_local(record['_created'])}{', scoped' if record['scoped'] else ''}",
    ]
    if record["cache_source"]:
        lines.append(f"  read-through cache of {record['cache_source']}")
        stats = record.get("cache_stats")
        if stats:
            kind = "local-only scratch tier, " if stats["scratch"] else ""
            expiry = f"expiry {stats['expiry']:g} s" if stats["expiry"] is not None else "no expiry"
            lines.append(
                f"  {kind}{stats['hits']} hits, {stats['misses']} misses, "
                f"{_size(stats['bytes_fetched'])} fetched, {stats['expired']} expired, "
                f"{stats['evictions']} evicted, {stats['writes']} written; {expiry}"
            )
    lines.append(
        f"  {record['keys']} keys, {record['chunks']} chunks, "
        f"{_size(record['shm_bytes'])} in shared memory, "
        f"{_size(record['spilled_bytes'])} spilled"
        + (f" to {record['spill']}" if record["spill"] else "")
        + (f", capacity {_human(record['capacity'])}" if record["capacity"] else "")
    )
    lines.append(_lock_line(lock))
    for line in lines:
        console.print(line)
    if not nodes:
        console.print("  (no zarr groups or arrays)")
        return
    tree = Tree(Text("/"), guide_style="dim")
    branches = {"": tree}
    for node in sorted(nodes, key=lambda n: n["path"]):
        path = node["path"]
        parent = path.rpartition("/")[0] if path else None
        label = _node_label(node)
        if path == "":
            tree.label = label
            continue
        while parent not in branches:  # an implicit group: no metadata of its own
            parent = parent.rpartition("/")[0]
        branches[path] = branches[parent].add(label)
    console.print(tree)


def _node_label(node: dict[str, Any]) -> Text:
    from rich.markup import escape
    from rich.text import Text

    return Text.from_markup(_node_markup(node, escape))


def _node_markup(node: dict[str, Any], escape: Callable[[str], str]) -> str:
    name = escape(node["path"].rpartition("/")[2] or "/")
    if node["node_type"] == "invalid":
        return f"{name}  [red]invalid: {escape(node['error'])}[/red]"
    if node["node_type"] == "group":
        n = len(node["attributes"])
        return f"[bold]{name}[/bold]  group" + (f", {_plural(n, 'attribute')}" if n else "")
    shape = " x ".join(map(str, node["shape"])) or "scalar"
    chunks = " x ".join(map(str, node["chunks"]))
    text = f"[bold]{name}[/bold]  array {shape} {node['dtype']}, chunks {chunks}"
    if node.get("shards"):
        text += f", shards {' x '.join(map(str, node['shards']))}"
    return text + f", codecs {escape(_codec_names(node['codecs']))}"


def _array_info(root: str, record: dict[str, Any], as_json: bool) -> None:
    holders = inventory.lock_holders(record["path"])
    info = {
        **_public(record),
        "nbytes": record["shm_bytes"],
        "allocated": record["_shm_allocated"],
        "lock": {"held": bool(holders), "holders": holders},
    }
    if as_json:
        _emit_json(info)
        return
    console = _console()
    shape = " x ".join(map(str, record["shape"])) or "scalar"
    console.print(f"named array {record['name']} in {record['path']}")
    console.print(
        f"  {shape} {record['dtype']} ({'Fortran' if record['order'] == 'F' else 'C'} order), "
        f"{_human(record['shm_bytes'])} ({_human(record['_shm_allocated'])} in shared memory)"
    )
    console.print(
        f"  owner {record['owner']}, created by pid {_pid(record['pid'], record['pid_alive'])}"
        f" on {_local(record['_created'])}"
    )
    console.print(_lock_line(info["lock"]))


@main.command("rm")
@click.argument("names", nargs=-1)
@click.option(
    "--idle",
    metavar="DURATION",
    help="Delete the namespaces not modified for longer than DURATION (90s, 30m, 2h, 7d); "
    "with NAMES, only those of them.",
)
@click.option("-y", "--yes", is_flag=True, help="Delete without asking for confirmation.")
@_root_option
@_json_option
def rm_command(
    names: tuple[str, ...], idle: str | None, yes: bool, root: str | None, as_json: bool
) -> None:
    """Delete namespaces (every segment) and named arrays: NAMES or globs.

    Asks for confirmation unless -y. A name or pattern that matches nothing is
    refused before anything is deleted, and so is an --idle that selects
    nothing. Processes that still map the data keep reading it until they drop
    it.
    """
    if not names and idle is None:
        raise click.UsageError("Missing argument 'NAMES...': name what to delete, or pass --idle")
    limit = None if idle is None else (idle, _parse_duration(idle, "--idle"))
    root = _resolve(root)
    if names:
        targets, problems = _select(root, names)
    else:
        targets, _, problems = _scan(root)
    if limit is not None:
        targets = _idle(root, targets, *limit)
    if not as_json:
        _report(problems)
    if not yes:
        listing = ", ".join(f"{r['kind']} {r['name']!r}" for r in targets)
        if not sys.stdin.isatty():
            raise _UserError(
                f"refusing to delete {_plural(len(targets), 'entry', 'entries')} "
                f"({listing}) without confirmation: stdin is not a terminal; pass -y to "
                "delete without asking",
                "confirmation-required",
            )
        click.echo(f"This deletes from {root}:", err=True)
        now = time.time()
        for r in targets:
            idle_for = f", idle {_duration(now - r['_modified'])}" if limit is not None else ""
            click.echo(f"  {r['kind']} {r['name']} ({_size(r['shm_bytes'])}{idle_for})", err=True)
        click.confirm("Delete?", abort=True, err=True)
    removed, failed = [], []
    for r in targets:
        try:
            _delete(root, r)
        except FileNotFoundError:
            continue  # deleted meanwhile by someone else: the goal is reached
        except OSError as e:
            # One entry that cannot be removed does not keep the others.
            failed.append({"name": r["name"], "kind": r["kind"], "error": _one_line(e)})
            continue
        removed.append(
            {
                "name": r["name"],
                "kind": r["kind"],
                "shm_bytes": r["shm_bytes"],
                "path": r["path"],
                "spill": r.get("spill"),
            }
        )
    if as_json:
        out = {"root": root, "removed": removed, "failed": failed}
        _emit_json({**out, "problems": _problems_json(problems)})
    else:
        for r in removed:
            click.echo(f"removed {r['kind']} {r['name']} ({_size(r['shm_bytes'])})")
            if r["spill"]:
                # Disk data the user pointed the namespace at is never deleted for them.
                click.echo(
                    f"  its spill tier {r['spill']} was kept; delete it yourself if unneeded"
                )
        for f in failed:
            click.echo(f"Error: could not remove {f['kind']} {f['name']}: {f['error']}", err=True)
    if failed:
        click.get_current_context().exit(1)


def _parse_duration(value: str, option: str) -> float:
    """Seconds in *value* (``90s``, ``30m``, ``2h``, ``7d``, ``1 week``), as Dask parses them.

    A bare number is refused: ``--idle 2`` would mean two seconds to Dask, which
    is rarely what deleting "idle for 2" means.
    """
    text = value.strip()
    hint = "(e.g. 90s, 30m, 2h, 7d)"
    if not text or text[-1].isdigit():
        raise click.BadParameter(f"{value!r} needs a unit {hint}", param_hint=option)
    # dask (a core dependency) parses durations like its own timeouts: loaded for --idle only.
    from dask.utils import parse_timedelta

    try:
        seconds = parse_timedelta(text)
    except (ValueError, KeyError, TypeError) as e:
        raise click.BadParameter(f"{value!r} is not a duration {hint}", param_hint=option) from e
    if not seconds or seconds < 0:
        raise click.BadParameter("must be longer than 0 seconds", param_hint=option)
    return float(seconds)


def _duration(seconds: float) -> str:
    """``"2h 5m"``: a time span for people, in its two largest units."""
    parts = []
    rest = max(int(seconds), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size or (unit == "s" and not parts):
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return " ".join(parts[:2])


def _idle(
    root: str, records: list[dict[str, Any]], given: str, limit: float
) -> list[dict[str, Any]]:
    """The namespaces of *records* not modified for more than *limit* seconds; refuse none.

    *given* is the duration as the user wrote it, for the message.
    """
    now = time.time()
    namespaces = [r for r in records if r["kind"] == "namespace"]
    chosen = [r for r in namespaces if now - r["_modified"] > limit]
    if not chosen:
        most = max(namespaces, key=lambda r: now - r["_modified"], default=None)
        longest = (
            f"; the longest idle, {most['name']!r}, was modified "
            f"{_duration(now - most['_modified'])} ago"
            if most
            else ""
        )
        raise _UserError(
            f"no namespace in {root} has been idle for more than {given}{longest}; "
            "see `shmstore ls`",
            "not-found",
        )
    return chosen


def _delete(root: str, record: dict[str, Any]) -> None:
    if record["kind"] == "namespace":
        inventory.destroy_namespace(root, record["name"])
    else:
        # The public name: named arrays load numpy only when one is removed.
        import shmstore

        shmstore.delete(record["name"], root=root)


@main.command("gc")
@click.option("--dry-run", is_flag=True, help="Only show what would be reclaimed.")
@_root_option
@_json_option
def gc_command(dry_run: bool, root: str | None, as_json: bool) -> None:
    """Reclaim what crashed processes left behind.

    Temporary files of interrupted writes, namespaces and named arrays
    interrupted while being created or destroyed, scoped namespaces and scoped
    named arrays whose creating process is dead, and fill lock files of
    read-through caches that no process holds. Anything of a live process, of
    a process on another host, of another user, or of unknown origin is left
    alone; entries that cannot be trusted are named on stderr.
    """
    root = _resolve(root)
    scan = inventory.scan_root(root, usage=False)
    done, failed = [], []
    for lo in scan.leftovers:
        try:
            if dry_run or inventory.reclaim(lo):
                done.append(lo.to_dict())
        except OSError as e:
            # One leftover that cannot be removed does not keep the others.
            failed.append({**lo.to_dict(), "error": _one_line(e)})
    freed = sum(d["nbytes"] for d in done)
    # Capacity that writers killed mid-write held, and counts a kill left off.
    recounted = [] if dry_run else inventory.recount_counters(root)
    if as_json:
        out = {"root": root, "dry_run": dry_run, "reclaimed": done, "reclaimed_bytes": freed}
        out["recounted"] = recounted
        _emit_json({**out, "failed": failed, "problems": _problems_json(scan.problems)})
    else:
        _print_reclaimed(root, done, freed, dry_run)
        for r in recounted:
            _console().print(
                f"recounted {r['namespace']}: {_human(r['before'])} accounted, "
                f"{_human(r['after'])} held"
            )
        _report(scan.problems)
        for f in failed:
            _warn(f"could not reclaim {f['path']}: {f['error']}")
    if failed:
        click.get_current_context().exit(1)


def _print_reclaimed(root: str, done: list[dict[str, Any]], freed: int, dry_run: bool) -> None:
    console = _console()
    if not done:
        console.print(f"nothing to reclaim in {root}")
        return
    _print_table(
        console,
        ["KIND", "PATH", "PID", "SIZE"],
        [[d["kind"], d["path"], str(d["pid"] or "-"), _human(d["nbytes"])] for d in done],
        right=("PID", "SIZE"),
    )
    verb = "would reclaim" if dry_run else "reclaimed"
    console.print(f"{verb} {_plural(len(done), 'entry', 'entries')}, {_human(freed)}")


def _transfer_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``save`` and ``load`` share (the library's keyword arguments)."""
    for option in reversed(
        [
            click.option("--overwrite", is_flag=True, help="Replace what the destination holds."),
            click.option(
                "--verify",
                type=click.Choice(["size", "content", "none"]),
                default="size",
                show_default=True,
                help="Check every key copied: its size, or also its bytes.",
            ),
            click.option(
                "--concurrency",
                type=click.IntRange(min=1),
                default=16,
                show_default=True,
                help="Values in flight at once.",
            ),
            click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
            _root_option,
            _json_option,
        ]
    ):
        fn = option(fn)
    return fn


def _transfer_kwargs(overwrite: bool, verify: str, concurrency: int, quiet: bool) -> dict[str, Any]:
    """The library's keyword arguments for the flags of :func:`_transfer_options`."""
    return {
        "overwrite": overwrite,
        "progress": False if quiet else None,
        "concurrency": concurrency,
        "verify": False if verify == "none" else verify,
    }


def _namespace(spec: str, root: str, *, read_only: bool, **kwargs: Any) -> Any:
    """The namespace named by *spec* (``name`` or ``shm://name``) under *root*."""
    # zarr loads only for the commands that open a store.
    from shmstore._store import SharedMemoryStore

    name = strip_scheme(spec)
    if "/" in name:
        raise _UserError(
            f"{spec!r} names a path inside a namespace; save and load copy a whole "
            "namespace: pass its name or shm://<namespace>",
            "invalid",
        )
    try:
        return SharedMemoryStore(name, root=root, read_only=read_only, **kwargs)
    except FileNotFoundError:
        raise _UserError(
            f"no namespace {name!r} in {root}; see `shmstore ls`", "not-found"
        ) from None


def _other_end(spec: str, root: str, *, read_only: bool) -> Any:
    """The zarr side of a copy: a path or URL for the library; shm:// under *root*."""
    if spec.startswith(SCHEME):
        return _namespace(spec, root, read_only=read_only)
    return spec


def _transfer_function(kind: str) -> Callable[..., Any]:
    # The public names, loaded only for save and load (they bring in zarr).
    import shmstore

    try:
        return getattr(shmstore, kind)
    except (AttributeError, ImportError):
        raise click.ClickException(
            f"`shmstore {kind}` needs shmstore.{kind}(), which this installation of "
            "shmstore does not have; upgrade shmstore"
        ) from None


def _run_transfer(kind: str, run: Callable[[], Any], as_json: bool) -> None:
    try:
        report = run()
    except OSError as e:
        # The library names its keyword; on the command line the fix is the flag.
        msg = _one_line(e).replace("overwrite=True", "--overwrite")
        raise _UserError(msg, _error_kind(e)) from e
    if as_json:
        _emit_json(
            {
                "command": kind,
                "source": report.source,
                "destination": report.destination,
                "keys": report.keys,
                "nbytes": report.nbytes,
                "seconds": report.seconds,
                "gib_per_s": report.gib_per_s,
                "verified": report.verified,
                "reencoded": list(getattr(report, "reencoded", ())),
            }
        )
    else:
        click.echo(str(report))


_CODECS = ("raw", "keep", "zstd")


def _codecs_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--codecs",
        type=click.Choice(_CODECS),
        default=default,
        show_default=True,
        help="Chunks of DST's zarr v3 arrays: raw (no compressor, no filter: read as views "
        "of shared memory), keep (copied as they are) or zstd (re-encoded with Zstandard).",
    )


def _compressors(codecs: str) -> Any:
    """The library's ``compressors=`` for a ``--codecs`` choice."""
    if codecs == "keep":
        return "keep"
    if codecs == "zstd":
        # zarr's codecs: loaded for the one command that asks for them.
        from zarr.codecs import ZstdCodec

        return ZstdCodec()
    return None


@main.command("save")
@click.argument("src")
@click.argument("dst")
@_codecs_option("keep")
@_transfer_options
def save_command(
    src: str,
    dst: str,
    codecs: str,
    overwrite: bool,
    verify: str,
    concurrency: int,
    quiet: bool,
    root: str | None,
    as_json: bool,
) -> None:
    """Copy the namespace SRC (a name or shm://name) to the zarr store DST.

    DST is a directory, an fsspec URL (s3://bucket/x.zarr) or shm://name. Every
    group, array and attribute is copied, then verified. A progress bar goes to
    stderr when it is a terminal (not with --quiet).
    """
    save = _transfer_function("save")
    root = _resolve(root)
    options = _transfer_kwargs(overwrite, verify, concurrency, quiet)
    options["compressors"] = _compressors(codecs)
    _run_transfer(
        "save",
        lambda: save(
            _namespace(src, root, read_only=True),
            _other_end(dst, root, read_only=False),
            **options,
        ),
        as_json,
    )


@main.command("load")
@click.argument("src")
@click.argument("dst")
@click.option("--capacity", help="Capacity of the shared-memory tier of DST (e.g. 4GiB); recorded.")
@click.option("--spill", help="Spill tier of DST (directory or URL) for what does not fit.")
@_codecs_option("raw")
@_transfer_options
def load_command(
    src: str,
    dst: str,
    capacity: str | None,
    spill: str | None,
    codecs: str,
    overwrite: bool,
    verify: str,
    concurrency: int,
    quiet: bool,
    root: str | None,
    as_json: bool,
) -> None:
    """Copy the zarr store SRC into the namespace DST (a name or shm://name).

    SRC is a directory, an fsspec URL or shm://name. DST is created if missing;
    with --capacity and --spill, what does not fit in shared memory goes to the
    spill tier (recorded in the namespace). Verified after the copy. Chunks are
    written raw unless --codecs says otherwise: every process then reads them
    as views of the shared pages, at the cost of their full size in RAM.
    """
    load = _transfer_function("load")
    root = _resolve(root)
    tiering: dict[str, Any] = {}
    if capacity is not None:
        tiering["capacity"] = _parse_size(capacity, "--capacity")
    if spill is not None:
        tiering["spill"] = spill
    source = _other_end(src, root, read_only=True)
    existed = os.path.lexists(entry_path(root, strip_scheme(dst)))
    target = _namespace(dst, root, read_only=False, **tiering)
    options = _transfer_kwargs(overwrite, verify, concurrency, quiet)
    options["compressors"] = _compressors(codecs)
    try:
        _run_transfer("load", lambda: load(source, target, **options), as_json)
    except BaseException:
        if not existed:
            # A load that fails (a missing source, say) leaves no empty namespace.
            with contextlib.suppress(OSError):
                target.destroy()
        raise


def _parse_size(value: str, option: str) -> int:
    # dask.utils parses sizes: imported for the commands that take one.
    from shmstore._usage import parse_capacity

    try:
        size = parse_capacity(int(value) if value.isdecimal() else value)
    except ValueError as e:
        raise click.BadParameter(f"{value!r} is not a size (e.g. 256MiB)", param_hint=option) from e
    if not size:
        raise click.BadParameter("must be more than 0 bytes", param_hint=option)
    return size


@main.command("bench")
@click.option("--size", default="256 MiB", show_default=True, help="Array size.")
@click.option("--chunk", default="1 MiB", show_default=True, help="Chunk size.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@_root_option
@_json_option
def bench_command(
    size: str, chunk: str, rounds: int, quiet: bool, root: str | None, as_json: bool
) -> None:
    """Compare shmstore with zarr's MemoryStore and LocalStore on this machine.

    Writes and reads one uncompressed array through zarr with each store, in
    alternating rounds, and shows each store's best GiB/s and shmstore's ratio
    to it. MemoryStore lives in one process only; shmstore's data is shared by
    every process of the host. Everything created is removed at the end.
    """
    # The benchmark needs zarr and numpy: loaded for this command only.
    from shmstore._bench import run_bench

    root = _resolve(root)
    nbytes, chunk_bytes = _parse_size(size, "--size"), _parse_size(chunk, "--chunk")
    show = not quiet and sys.stderr.isatty()
    report = run_bench(
        root,
        nbytes=nbytes,
        chunk_bytes=chunk_bytes,
        rounds=rounds,
        progress=(lambda msg: click.echo(f"\r\x1b[K{msg}", err=True, nl=False)) if show else None,
    )
    if show:
        click.echo("\r\x1b[K", err=True, nl=False)
    if as_json:
        _emit_json(report)
        return
    console = _console()
    console.print(
        f"{_human(report['nbytes'])} array, {_human(report['chunk_bytes'])} chunks, "
        f"uncompressed; best of {_plural(report['rounds'], 'round')} (spread: min/median/max)"
    )
    ratios = report["ratios"]

    def spread(s: list[float]) -> str:
        return "/".join(f"{v:.2f}" for v in s)

    rows = []
    for r in report["results"]:
        name = r["store"]
        vs = (
            "-"
            if name == "shmstore"
            else f"{ratios[f'write vs {name}']:.2f}x / {ratios[f'read vs {name}']:.2f}x"
        )
        rows.append(
            [
                name,
                f"{r['write_gibs']:.2f}",
                f"{r['read_gibs']:.2f}",
                spread(r["write_spread"]),
                spread(r["read_spread"]),
                vs,
            ]
        )
    _print_table(
        console,
        ["STORE", "WRITE GiB/s", "READ GiB/s", "WRITE SPREAD", "READ SPREAD", "SHMSTORE W/R"],
        rows,
        right=("WRITE GiB/s", "READ GiB/s", "SHMSTORE W/R"),
        optional=("WRITE SPREAD", "READ SPREAD"),
    )


_LEVEL_MARKS = {
    "ok": "ok",
    "info": "info",
    "advice": "advice",
    "warning": "WARNING",
    "error": "ERROR",
}


@main.command("doctor")
@click.option(
    "--results",
    type=click.Path(exists=True, path_type=str),
    default=None,
    help="Benchmark result JSON (or a directory of them) for the measured huge-page gains "
    "[default: $SHMSTORE_BENCH_RESULTS, else benchmarks/results of a checkout].",
)
@_root_option
@_json_option
def doctor_command(results: str | None, root: str | None, as_json: bool) -> None:
    """Check the root and this host for shared memory, and say what to change.

    Looks at the root (exists, writable, tmpfs, size and free space), whether
    writes there get huge pages (the tmpfs's huge= option and the kernel's
    shmem_enabled) and what remounting with huge=within_size would gain,
    vm.max_map_count against the mappings a process may cache, the open-files
    limit and systemd-logind's RemoveIPC. Exits 1 if the root is unusable.
    """
    # The doctor reads /proc and /sys only: loaded for this command only.
    from shmstore._doctor import diagnose

    if root is None:
        ctx = click.get_current_context()
        root = ctx.find_root().params.get("root")
    report = diagnose(root, results=results)
    if as_json:
        _emit_json(report.to_dict())
    else:
        console = _console()
        for f in report.findings:
            console.print(f"{_LEVEL_MARKS[f.level]:>7}  {f.check:<13} {f.message}")
    if report.worst == "error":
        raise click.exceptions.Exit(1)
