"""Soak and fault injection: SIGKILLs, a full tmpfs, scale, hostile input, another user.

Six scenarios. Each is a function that returns a JSON-ready report whose
failure counters (``report["failures"]``) must all be 0; ``tests/stress`` runs
them with the short profile and asserts that.

- **faults** (:func:`run_faults`): writer and reader processes on a plain and
  a tiered namespace (``capacity=``, ``spill=`` a directory on disk), through
  ``set_sync``/``get_sync``/``delete_sync``, on shared keys (every writer) and
  disjoint keys (one writer slot each). Writers are SIGKILLed at random points
  and replaced. Every value carries a header (namespace, key, writer, version)
  and a CRC32, so a reader detects a torn value; writers log when each
  operation began and when it returned, so every read is checked against
  what had been committed before it began: a read that returns a value
  overwritten by a write committed in between, or nothing where a committed
  write should be, is *lost*. Then ``shmstore gc``, a final read of every key,
  and the leftovers and accounting checks.
- **fill** (:func:`run_fill`): a small tmpfs filled several times over, with and
  without a spill tier, and named arrays created until it is full: every write
  lands, spills or raises ``SharedMemoryFullError``; nothing is half-written;
  nobody dies of SIGBUS.
- **scale** (:func:`run_scale`): many small chunks in one namespace: time to
  write, list and read them, and the process's mappings.
- **namespaces** (:func:`run_namespaces`): many namespaces read one after
  another by one process holding nothing: mappings stay under the per-process
  bound, descriptors under ``ulimit -n``.
- **fuzz** (:func:`run_fuzz`): Hypothesis-generated namespace names and keys
  through ``SharedMemoryStore``, ``shmstore.create`` and
  ``fsspec.filesystem("shm")``: each round-trips or raises ``ValueError`` or
  ``TypeError``, and nothing appears outside the namespace directory.
- **isolation** (:func:`run_isolation`): a process of uid 65534 tries to read,
  write, delete and plant symlinks in root's shared-memory root; root's data
  and root's ``shmstore ls``/``gc`` are checked afterwards.

Usage::

    PYTHONPATH=. python benchmarks/soak.py --minutes 5    # the long profile
    PYTHONPATH=. python benchmarks/soak.py --short        # what tests/stress runs

Writes ``benchmarks/results/soak-<profile>-<python>-<zarr>.json``. Everything
it creates in shared memory or on disk is removed at the end. The fill
scenario mounts a tmpfs and the isolation scenario switches users: both need
root, and report why they were skipped otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import importlib
import json
import mmap
import multiprocessing
import multiprocessing.connection
import os
import platform
import random
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from _harness import private_root, scratch_dir, stamp, versions, write_results
from zarr.core.buffer import default_buffer_prototype

import shmstore
from shmstore import _readcache
from shmstore._names import check_name
from shmstore._namespace import release_handles

SOAK = Path(__file__).resolve()
REPO = SOAK.parent.parent
NS_PLAIN = "soak-plain"
NS_TIERED = "soak-tiered"
KiB, MiB = 1 << 10, 1 << 20


# ------------------------------------------------------------------ profiles
@dataclasses.dataclass(frozen=True)
class Profile:
    """How long and how hard each scenario runs."""

    name: str
    #: faults: seconds of load (extended until ``kills`` SIGKILLs were sent)
    seconds: float
    writers: int
    readers: int
    kills: int
    shared_keys: int
    own_keys: int
    sizes: tuple[int, ...]
    #: capacity of the tiered namespace's shared-memory tier (most keys spill)
    capacity: int
    #: fill: how many times the tmpfs is filled over, and its size
    fill_rounds: int
    tmpfs_bytes: int
    #: scale: chunks in one namespace
    scale_chunks: int
    #: namespaces: how many, chunks in each, mapping bound of the reader
    namespaces: int
    namespace_chunks: int
    max_mappings: int | None
    #: fuzz: Hypothesis examples per route
    fuzz_examples: int


SHORT = Profile(
    name="short",
    seconds=2.0,
    writers=3,
    readers=2,
    kills=4,
    shared_keys=8,
    own_keys=9,
    sizes=(64, 700, 4 * KiB, 30 * KiB, 128 * KiB),
    capacity=384 * KiB,
    fill_rounds=4,
    tmpfs_bytes=8 * MiB,
    scale_chunks=20_000,
    namespaces=9,
    namespace_chunks=600,
    max_mappings=512,
    fuzz_examples=40,
)


def long_profile(minutes: float) -> Profile:
    """The long profile: *minutes* of faults, at least 100 SIGKILLs, 100,000 chunks."""
    seconds = minutes * 60
    return dataclasses.replace(
        SHORT,
        name="long",
        seconds=seconds,
        writers=4,
        readers=3,
        kills=max(100, int(seconds / 2)),
        shared_keys=16,
        own_keys=24,
        sizes=(64, 700, 4 * KiB, 30 * KiB, 128 * KiB, 512 * KiB),
        capacity=2 * MiB,
        fill_rounds=10,
        scale_chunks=100_000,
        namespaces=9,
        namespace_chunks=5_000,
        max_mappings=None,  # the default bound (16384) against 45,000 chunks
        fuzz_examples=500,
    )


# ------------------------------------------------------------ value format
# A value: header, payload, CRC32 of both. The header names the namespace and
# key it was written to and the writer and version that wrote it.
MAGIC = b"SOAK"
HEAD = struct.Struct("<4sBHIII")  # magic, namespace, key index, writer, version, payload bytes
CRC = struct.Struct("<I")


class Torn(Exception):
    """A value that is not whole: bad magic, length or checksum, or another key's."""


def encode(ns: int, key: int, wid: int, ver: int, size: int) -> bytes:
    """The value that writer *wid* writes as its version *ver* of key *key* of namespace *ns*."""
    unit = struct.pack("<IIQ", wid, ver, key * 1_000_003 + ns)
    body = HEAD.pack(MAGIC, ns, key, wid, ver, size) + (unit * (size // 16 + 1))[:size]
    return body + CRC.pack(zlib.crc32(body))


def decode(view: Any, ns: int, key: int) -> tuple[int, int]:
    """``(writer, version)`` of a value read from key *key* of namespace *ns*.

    Raises
    ------
    Torn
        If the value is not a whole value written to that very key.
    """
    view = memoryview(view).cast("B")
    n = len(view)
    if n < HEAD.size + CRC.size:
        raise Torn(f"{n} bytes, shorter than a header")
    magic, vns, vkey, wid, ver, size = HEAD.unpack_from(view)
    if magic != MAGIC:
        raise Torn(f"bad magic {bytes(magic)!r}")
    if n != HEAD.size + size + CRC.size:
        raise Torn(f"{n} bytes, header says {HEAD.size + size + CRC.size}")
    if CRC.unpack_from(view, n - CRC.size)[0] != zlib.crc32(view[: n - CRC.size]):
        raise Torn(f"bad checksum (writer {wid} version {ver})")
    if (vns, vkey) != (ns, key):
        raise Torn(f"value of namespace {vns} key {vkey} read from namespace {ns} key {key}")
    return wid, ver


# ----------------------------------------------------------------- logs
# Writers log every operation twice, unbuffered: "B" when it begins, then "E"
# when it returned or "F" when it raised. A SIGKILL leaves a "B" alone: that
# operation ended when the process died. Readers log one record per read.
OP = np.dtype(
    [
        ("tag", "S1"),
        ("kind", "u1"),
        ("ns", "u1"),
        ("wid", "<u4"),
        ("ver", "<u4"),
        ("key", "<u2"),
        ("t", "<i8"),
    ]
)
READ = np.dtype(
    [
        ("status", "u1"),
        ("ns", "u1"),
        ("wid", "<u4"),
        ("ver", "<u4"),
        ("key", "<u2"),
        ("t0", "<i8"),
        ("t1", "<i8"),
    ]
)
SET, DELETE = 0, 1
#: Read outcomes: a value, nothing, a torn value, a read error, a spilled value gone (EIO).
GOT, NONE, TORN, ERROR, MISSING = 0, 1, 2, 3, 4
_OP = struct.Struct("<cBBIIHq")
_READ = struct.Struct("<BBIIHqq")
assert _OP.size == OP.itemsize and _READ.size == READ.itemsize


def _now() -> int:
    # CLOCK_MONOTONIC: one clock for every process of the host.
    return time.monotonic_ns()


def _stop_flag(path: str) -> mmap.mmap:
    """The one-byte stop flag the engine sets when the run is over (mapped read-only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return mmap.mmap(fd, 1, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


def _keys(p: Profile) -> tuple[list[str], list[list[int]]]:
    """Every key of the faults scenario, and the disjoint keys of each writer slot.

    Shared keys come first (indices ``0 .. shared_keys-1``). Disjoint keys of
    all slots share parent directories, so a delete that prunes one races with
    another slot's write into it.
    """
    keys = [f"s/{i % 2}/k{i}" for i in range(p.shared_keys)]
    own: list[list[int]] = []
    for slot in range(p.writers):
        own.append([])
        for i in range(p.own_keys):
            own[slot].append(len(keys))
            keys.append(f"d/{i % 3}/w{slot}k{i}")
    return keys, own


# --------------------------------------------------------------- children
def _writer(spec: dict[str, Any], conn: Connection) -> None:
    """A writer process: random sets and deletes until the stop flag is set."""
    prototype = default_buffer_prototype().buffer
    stores = [shmstore.SharedMemoryStore(n, root=spec["root"]) for n in spec["namespaces"]]
    keys, shared, own = spec["keys"], spec["shared"], spec["own"]
    sizes, wid = spec["sizes"], spec["wid"]
    rng = random.Random(spec["seed"])
    flag = _stop_flag(spec["stop"])
    log = os.open(spec["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    ver = 0
    errors = 0
    while not flag[0]:
        ver += 1
        if ver == 2:  # one operation done: from now on, a kill lands among them
            conn.send("ready")
        ns = rng.randrange(len(stores))
        r = rng.random()
        key = rng.randrange(shared) if r < 0.45 and shared else rng.choice(own)
        kind = DELETE if (0.35 <= r < 0.45 or r >= 0.85) else SET
        buf = None
        if kind == SET:
            buf = prototype.from_bytes(encode(ns, key, wid, ver, rng.choice(sizes)))
        os.write(log, _OP.pack(b"B", kind, ns, wid, ver, key, _now()))
        try:
            if buf is not None:
                stores[ns].set_sync(keys[key], buf)
            else:
                stores[ns].delete_sync(keys[key])
        except Exception as e:
            os.write(log, _OP.pack(b"F", kind, ns, wid, ver, key, _now()))
            errors += 1
            if errors <= 5:
                with open(spec["err"], "a") as f:
                    f.write(f"writer {wid}: {'delete' if kind else 'set'} {keys[key]!r}: {e!r}\n")
            continue
        os.write(log, _OP.pack(b"E", kind, ns, wid, ver, key, _now()))


def _reader(spec: dict[str, Any], conn: Connection) -> None:
    """A reader process: random reads, each checked for tearing, until the stop flag is set."""
    root = spec["root"]
    stores = [shmstore.SharedMemoryStore(n, root=root, read_only=True) for n in spec["namespaces"]]
    keys = spec["keys"]
    rng = random.Random(spec["seed"])
    flag = _stop_flag(spec["stop"])
    details: list[str] = []
    with open(spec["log"], "wb") as log:
        conn.send("ready")
        while not flag[0]:
            ns = rng.randrange(len(stores))
            key = rng.randrange(len(keys))
            wid = ver = 0
            t0 = _now()
            try:
                value = stores[ns].get_sync(keys[key])
                t1 = _now()
                if value is None:
                    status = NONE
                else:
                    wid, ver = decode(value.as_numpy_array(), ns, key)
                    status = GOT
            except Torn as e:
                t1, status = _now(), TORN
                details.append(f"torn: {spec['namespaces'][ns]} {keys[key]!r}: {e}")
            except Exception as e:
                t1, status = _now(), _error_status(e)
                what = "lost" if status == MISSING else "error"
                details.append(f"{what}: {spec['namespaces'][ns]} {keys[key]!r}: {e!r}")
            log.write(_READ.pack(status, ns, wid, ver, key, t0, t1))
            del details[50:]
    with open(spec["log"] + ".json", "w") as f:
        json.dump(details, f)


def _engine_child(role: str, spec: dict[str, Any], conn: Connection) -> None:
    """What a forked writer or reader runs: its loop, any traceback to its error file."""
    try:
        (_writer if role == "writer" else _reader)(spec, conn)
    except BaseException:
        with open(spec["err"], "a") as f:
            f.write(traceback.format_exc())
        raise


def _forkserver() -> multiprocessing.context.ForkServerContext:
    """Writers and readers are forked from a server that imported shmstore and zarr once.

    So a killed writer's replacement runs within milliseconds instead of
    paying the imports again, and no child is a fork of the (threaded) caller.
    """
    ctx = multiprocessing.get_context("forkserver")
    # What the children need, by names the server finds without this directory
    # on its path (Python 3.11's forkserver preloads before it applies sys.path).
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


_PRELOAD = [
    "numpy",
    "zarr",
    "zarr.storage",
    "zarr.core.buffer",
    "shmstore",
    "shmstore._store",
    "shmstore._keyspace",
]


def _error_status(e: BaseException) -> int:
    # A key whose spill marker is there but whose value is not (SpillMissingError,
    # EIO): a committed write was lost, not merely an error.
    return MISSING if isinstance(e, OSError) and e.errno == errno.EIO else ERROR


def _child_main(role: str, spec_json: str) -> int:
    spec = json.loads(spec_json)
    fn = {
        "fill": _fill_child,
        "scale": _scale_child,
        "namespaces": _namespaces_child,
    }[role]
    return fn(spec)


def _spawn_child(
    role: str, spec: dict[str, Any], env: dict[str, str], stderr: Any = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SOAK), "--child", role, json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
    )


def _run_child(role: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Run a one-shot child to its end; its report (last stdout line) and how it exited."""
    proc = _spawn_child(role, spec, env, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=600)
    report: dict[str, Any] = {}
    lines = out.decode(errors="replace").strip().splitlines()
    if lines:
        with contextlib.suppress(ValueError):
            report = json.loads(lines[-1])
    report["returncode"] = proc.returncode
    report["signal"] = _signal_name(proc.returncode)
    if proc.returncode != 0:
        report["stderr"] = err.decode(errors="replace")[-3000:]
    return report


def _signal_name(rc: int | None) -> str | None:
    if rc is None or rc >= 0:
        return None
    with contextlib.suppress(ValueError):
        return signal.Signals(-rc).name
    return str(-rc)


def _child_env(root: str, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "SHMSTORE_ROOT": root, "PYTHONPATH": path, **extra}


# ---------------------------------------------------------- shared checks
def gc_cli(root: str, *, dry_run: bool = False) -> dict[str, Any]:
    """``shmstore gc --json --root ROOT`` in a subprocess; its JSON and exit status."""
    proc = _cli(root, "gc", "--json", *(["--dry-run"] if dry_run else []))
    out: dict[str, Any] = {"returncode": proc.returncode}
    if proc.returncode == 0:
        out.update(json.loads(proc.stdout))
    else:
        out["stderr"] = proc.stderr.strip()[-2000:]
    return out


def _cli(root: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``shmstore`` command of this interpreter on *root*."""
    exe = Path(sys.executable).with_name("shmstore")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", _CLI_MAIN]
    return subprocess.run(
        [*cmd, *args, "--root", root],
        capture_output=True,
        text=True,
        timeout=300,
        env=_child_env(root),
    )


_CLI_MAIN = "from shmstore._cli import main; main()"


def leftovers(root: str, namespaces: list[str]) -> list[str]:
    """What crashed writers left that gc should have reclaimed.

    Temporary files of writes in flight (``.shmstore/state/tmp/``), transient
    root entries (``.shmstore-*``), and whatever ``shmstore gc --dry-run``
    would still reclaim.
    """
    found = [name for name in os.listdir(root) if name.startswith(".shmstore-")]
    for ns in namespaces:
        tmp = os.path.join(root, ns, ".shmstore", "state", "tmp")
        with contextlib.suppress(FileNotFoundError):
            found += [f"{ns}/.shmstore/state/tmp/{n}" for n in os.listdir(tmp)]
    again = gc_cli(root, dry_run=True)
    if again["returncode"] != 0:
        found.append(f"shmstore gc --dry-run failed: {again.get('stderr')}")
    found += [os.path.relpath(d["path"], root) for d in again.get("reclaimed", [])]
    return sorted(set(found))


def regular_bytes(path: str) -> int:
    """Bytes of the regular files of a namespace directory: its shared-memory tier.

    Spilled keys are symbolic links there, and the bookkeeping entry is not a
    value: neither is counted. Nothing is followed.
    """
    total = 0

    def walk(d: str, top: bool) -> None:
        nonlocal total
        with os.scandir(d) as it:
            for e in it:
                if top and e.name == ".shmstore":
                    continue
                st = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    walk(e.path, False)
                elif stat.S_ISREG(st.st_mode):
                    total += st.st_size

    walk(path, True)
    return total


def capacity_leak(root: str, ns: str) -> dict[str, int]:
    """Accounted usage of a tiered namespace against the bytes its files hold."""
    store = shmstore.SharedMemoryStore(ns, root=root)
    tiers = store._keyspace().tiers
    assert tiers is not None, f"{ns} is not tiered"
    used = tiers.usage.used()
    held = regular_bytes(store.path)
    return {"accounted": used, "held": held, "leaked": used - held}


def _list_keys(store: Any) -> list[str]:
    async def collect() -> list[str]:
        return [k async for k in store.list()]

    return asyncio.run(collect())


def failed(report: dict[str, Any]) -> dict[str, int]:
    """The failure counters of a scenario report that are not 0."""
    return {k: v for k, v in report.get("failures", {}).items() if v}


# ------------------------------------------------------------------ faults
@dataclasses.dataclass
class _Proc:
    role: str
    slot: int
    wid: int
    process: multiprocessing.process.BaseProcess
    conn: Connection
    err: str
    ready: bool = False
    killed: bool = False
    died: int = 0  # monotonic ns when it was reaped

    def reap(self) -> None:
        self.process.join()
        self.died = _now()
        self.conn.close()


def run_faults(
    p: Profile,
    root: str,
    scratch: str,
    *,
    seed: int | None = None,
    namespaces: tuple[str, ...] = ("plain", "tiered"),
) -> dict[str, Any]:
    """Writers SIGKILLed at random under readers, then gc and the checks; the report.

    Parameters
    ----------
    root
        The shared-memory root (private to the run).
    scratch
        A private directory on disk: the spill tier and the logs.
    namespaces
        ``"plain"``, ``"tiered"`` or both: which namespaces the processes use.
    """
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    names = [{"plain": NS_PLAIN, "tiered": NS_TIERED}[n] for n in namespaces]
    spill = os.path.join(scratch, "spill.zarr")
    logs = os.path.join(scratch, "logs")
    os.makedirs(logs, exist_ok=True)
    for name in names:
        if name == NS_TIERED:
            shmstore.SharedMemoryStore(name, root=root, capacity=p.capacity, spill=spill)
        else:
            shmstore.SharedMemoryStore(name, root=root)
    keys, own = _keys(p)
    stop_path = os.path.join(scratch, "stop")
    with open(stop_path, "wb") as f:
        f.write(b"\0")
    fd = os.open(stop_path, os.O_RDWR)
    stop = mmap.mmap(fd, 1)
    os.close(fd)
    ctx = _forkserver()
    common = {"root": root, "namespaces": names, "keys": keys, "stop": stop_path}
    procs: list[_Proc] = []
    live: dict[Any, _Proc] = {}  # what to wait on (a pipe, or a sentinel) -> its process
    next_wid = [1]

    def spawn(role: str, slot: int) -> _Proc:
        wid = next_wid[0] if role == "writer" else 0
        next_wid[0] += role == "writer"
        tag = f"{role}-{slot}-{wid}" if role == "writer" else f"{role}-{slot}"
        spec = {
            **common,
            "seed": rng.randrange(1 << 30),
            "log": os.path.join(logs, f"{tag}.log"),
            "err": os.path.join(logs, f"{tag}.err"),
            "wid": wid,
            "shared": p.shared_keys,
            "own": own[slot] if role == "writer" else [],
            "sizes": list(p.sizes),
        }
        Path(spec["err"]).touch()
        mine, theirs = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_engine_child, args=(role, spec, theirs), name=tag)
        process.start()
        theirs.close()
        proc = _Proc(role, slot, wid, process, mine, spec["err"])
        live[mine] = live[process.sentinel] = proc
        procs.append(proc)
        return proc

    def gone(proc: _Proc) -> None:
        live.pop(proc.conn, None)
        live.pop(proc.process.sentinel, None)
        proc.reap()

    def events(timeout: float | None) -> list[_Proc]:
        """Wait for a ready message or an exit; mark the ready, reap the exited."""
        exited = []
        for obj in multiprocessing.connection.wait(list(live), timeout):
            proc = live.get(obj)
            if proc is None:
                continue
            if obj is proc.conn:
                try:
                    proc.conn.recv()
                    proc.ready = True
                    continue
                except EOFError:
                    pass
            gone(proc)
            exited.append(proc)
        return exited

    t_spawn = time.monotonic()
    for slot in range(p.readers):
        spawn("reader", slot)
    writers = {slot: spawn("writer", slot) for slot in range(p.writers)}
    # The clock starts once every process runs.
    while any(not pr.ready and pr.process.exitcode is None for pr in procs):
        if time.monotonic() > t_spawn + 300:
            break
        events(300)
    t_start = time.monotonic()
    deadline = t_start + p.seconds
    hard_stop = t_start + 3 * p.seconds + 120
    interval = p.seconds / max(1, p.kills)
    next_kill = t_start + rng.uniform(0.3, 1.7) * interval if p.kills else float("inf")
    kills = 0
    while True:
        now = time.monotonic()
        if (now >= deadline and kills >= p.kills) or now >= hard_stop:
            break
        ready = [w for w in writers.values() if w.ready]
        if now >= next_kill and ready:
            victim = rng.choice(ready)
            victim.killed = True
            victim.process.kill()  # SIGKILL
            gone(victim)
            kills += 1
            writers[victim.slot] = spawn("writer", victim.slot)
            next_kill = time.monotonic() + rng.uniform(0.3, 1.7) * interval
            continue
        timeout = hard_stop - now
        if (ready or now < next_kill) and next_kill < hard_stop:
            timeout = max(0.0, next_kill - now)
        if now < deadline:
            timeout = min(timeout, deadline - now)
        for proc in events(timeout):
            # Exited on its own before the end: a failure, counted below; keep N writers.
            if proc.role == "writer" and writers.get(proc.slot) is proc:
                writers[proc.slot] = spawn("writer", proc.slot)
    stop[0] = 1
    for proc in procs:
        if proc.process.exitcode is None and not proc.died:
            proc.process.join(120)
            if proc.process.exitcode is None:
                proc.process.kill()
        if not proc.died:
            gone(proc)
    stop.close()
    duration = time.monotonic() - t_start
    startup = t_start - t_spawn

    # Exits: SIGKILL only for the writers we killed, 0 for everyone else.
    signals: list[str] = []
    exit_errors: list[str] = []
    for proc in procs:
        rc = proc.process.exitcode
        if proc.killed and rc == -signal.SIGKILL:
            continue
        if rc is not None and rc < 0:
            signals.append(f"{proc.role} {proc.process.pid}: {_signal_name(rc)}")
        elif rc != 0:
            tail = Path(proc.err).read_text(errors="replace")[-800:]
            exit_errors.append(f"{proc.role} {proc.process.pid} exited {rc}: {tail}")

    gc = gc_cli(root)
    left = leftovers(root, names)
    history = _check_history(p, root, names, keys, procs)
    leaks = {n: capacity_leak(root, n) for n in names if n == NS_TIERED}
    writer_errors = [
        line
        for proc in procs
        if proc.role == "writer"
        for line in Path(proc.err).read_text(errors="replace").splitlines()
        if line.startswith("writer ")
    ]
    report = {
        "scenario": "faults",
        "seed": seed,
        "duration_s": round(duration, 2),
        "startup_s": round(startup, 2),
        "processes": len(procs),
        "writers": p.writers,
        "readers": p.readers,
        "namespaces": names,
        "operations": history["operations"],
        "kills": kills,
        "gc": {
            "returncode": gc["returncode"],
            "reclaimed": len(gc.get("reclaimed", [])),
            "stderr": gc.get("stderr"),
        },
        "leftovers_after_gc": left,
        "capacity": leaks,
        "per_namespace": history["per_namespace"],
        "examples": {
            "signals": signals,
            "exit_errors": exit_errors[:10],
            "writer_errors": writer_errors[:10],
            **history["examples"],
        },
        "failures": {
            "torn": history["torn"],
            "lost": history["lost"],
            "signals": len(signals),
            "errors": history["errors"] + len(exit_errors),
            "leftovers_after_gc": len(left),
            "capacity_leaked": sum(abs(v["leaked"]) for v in leaks.values()),
            "gc_failed": int(gc["returncode"] != 0),
            "kills_short": max(0, p.kills - kills),
        },
    }
    return report


def _load(path: str, dtype: np.dtype[Any]) -> np.ndarray:
    data = Path(path).read_bytes()
    n = len(data) // dtype.itemsize  # a SIGKILL never tears a record, but be safe
    return np.frombuffer(data[: n * dtype.itemsize], dtype=dtype)


def _check_history(
    p: Profile, root: str, names: list[str], keys: list[str], procs: list[_Proc]
) -> dict[str, Any]:
    """Check every read, and a final read of every key, against the writers' logs.

    An operation is *committed* once its writer logged that it returned. A read
    that began at ``r0`` and returned the value of operation ``x`` is lost (a
    stale read) if some committed operation ``y`` of that key began after ``x``
    ended and ended before ``r0``: ``y`` had replaced ``x`` before the read
    began. A read that returned nothing is lost unless some delete of the key
    (or the initial state) is legal by the same rule. An operation in flight
    when its writer was killed ended when the writer was reaped.
    """
    nkeys = len(keys)
    # ---- operations, indexed by writer and version
    starts, ends, kinds, groups, committed, failed_ops = [], [], [], [], [], 0
    base: dict[int, int] = {}
    count: dict[int, int] = {}
    offset = 0
    for proc in procs:
        if proc.role != "writer":
            continue
        recs = _load(os.path.join(os.path.dirname(proc.err), Path(proc.err).stem + ".log"), OP)
        begins = recs[recs["tag"] == b"B"]
        done = recs[recs["tag"] != b"B"]
        n = len(begins)
        if len(done) < n - 1 or len(done) > n:
            raise AssertionError(f"writer {proc.wid}: log out of order")
        end = np.full(n, proc.died, dtype=np.int64)
        end[: len(done)] = done["t"]
        ok = np.zeros(n, dtype=bool)
        ok[: len(done)] = done["tag"] == b"E"
        failed_ops += int(np.count_nonzero(done["tag"] == b"F"))
        base[proc.wid], count[proc.wid] = offset, n
        offset += n
        starts.append(begins["t"])
        ends.append(end)
        kinds.append(begins["kind"])
        groups.append(begins["ns"].astype(np.int64) * nkeys + begins["key"])
        committed.append(ok)
    start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    end = np.concatenate(ends) if ends else np.zeros(0, np.int64)
    kind = np.concatenate(kinds) if kinds else np.zeros(0, np.uint8)
    group = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    ok = np.concatenate(committed) if committed else np.zeros(0, bool)

    # ---- reads: the readers' logs, then a final read of every key by this process
    reads = [
        _load(os.path.join(os.path.dirname(pr.err), Path(pr.err).stem + ".log"), READ)
        for pr in procs
        if pr.role == "reader"
    ]
    examples: dict[str, list[str]] = {"torn": [], "lost": [], "errors": []}
    for pr in procs:
        if pr.role == "reader":
            with contextlib.suppress(FileNotFoundError, ValueError):
                for d in json.loads(Path(pr.err).with_suffix(".log.json").read_text()):
                    label = d.split(":")[0]
                    examples[label if label in ("torn", "lost") else "errors"].append(d)
    final = []
    listing_lost = [0] * len(names)
    t = _now()
    for ns, name in enumerate(names):
        store = shmstore.SharedMemoryStore(name, root=root)
        present = set()
        for k, key in enumerate(keys):
            wid = ver = 0
            try:
                value = store.get_sync(key)
                if value is None:
                    status = NONE
                else:
                    wid, ver = decode(value.as_numpy_array(), ns, k)
                    status = GOT
                    present.add(key)
            except Torn as e:
                status = TORN
                examples["torn"].append(f"final: {name} {key!r}: {e}")
            except Exception as e:
                status = _error_status(e)
                what = "lost" if status == MISSING else "errors"
                examples[what].append(f"final: {name} {key!r}: {e!r}")
            final.append((status, ns, wid, ver, k, t, t))
        listed = set(_list_keys(store))
        if listed != present:
            listing_lost[ns] += len(listed ^ present)
            examples["lost"].append(
                f"final: {name}: listed but unreadable {sorted(listed - present)[:5]}, "
                f"readable but not listed {sorted(present - listed)[:5]}"
            )
    reads.append(np.array(final, dtype=READ))
    r = np.concatenate(reads)

    # ---- the checks
    rgroup = r["ns"].astype(np.int64) * nkeys + r["key"]
    lost = np.zeros(len(r), dtype=bool)
    phantom = np.zeros(len(r), dtype=bool)
    # the operation each value came from
    got = r["status"] == GOT
    idx = np.full(len(r), -1, dtype=np.int64)
    for wid in np.unique(r["wid"][got]):
        sel = got & (r["wid"] == wid)
        if int(wid) not in base:
            phantom |= sel
            continue
        vers = r["ver"][sel].astype(np.int64)
        bad = (vers < 1) | (vers > count[int(wid)])
        where = np.flatnonzero(sel)
        phantom[where[bad]] = True
        idx[where[~bad]] = base[int(wid)] + vers[~bad] - 1
    has = idx >= 0
    hit = np.flatnonzero(has)
    wrong = (
        (kind[idx[hit]] != SET)
        | (group[idx[hit]] != rgroup[hit])
        | (start[idx[hit]] > r["t1"][hit])
    )
    phantom[hit[wrong]] = True
    for g in np.unique(rgroup):
        in_g = rgroup == g
        ops = group == g
        c = ops & ok
        c_end = end[c]
        order = np.argsort(c_end, kind="stable")
        c_end = c_end[order]
        c_maxstart = np.maximum.accumulate(start[c][order]) if len(order) else c_end
        # latest start of a committed operation that ended before each read began
        rows = np.flatnonzero(in_g)
        pos = np.searchsorted(c_end, r["t0"][rows], side="left") - 1
        m = np.where(pos >= 0, c_maxstart[np.maximum(pos, 0)] if len(c_end) else 0, -1)
        vals = has[rows] & ~phantom[rows]
        vrows = rows[vals]
        lost[vrows] = m[vals] > end[idx[vrows]]
        nones = r["status"][rows] == NONE
        if nones.any():
            d = ops & (kind == DELETE)
            d_start = start[d]
            order = np.argsort(d_start, kind="stable")
            d_start = d_start[order]
            d_maxend = np.maximum.accumulate(end[d][order]) if len(order) else d_start
            nrows = rows[nones]
            dpos = np.searchsorted(d_start, r["t1"][nrows], side="left") - 1
            best = np.where(dpos >= 0, d_maxend[np.maximum(dpos, 0)] if len(d_start) else 0, -1)
            # the initial state (nothing) is legal while nothing was committed before
            lost[nrows] = (m[nones] >= 0) & (m[nones] > best)
    for i in np.flatnonzero(lost)[:10]:
        row = r[i]
        what = "nothing" if row["status"] == NONE else f"writer {row['wid']} v{row['ver']}"
        examples["lost"].append(
            f"{names[row['ns']]} {keys[row['key']]!r}: read {what} at {row['t0']}, "
            "after a later write had been committed"
        )
    for i in np.flatnonzero(phantom)[:10]:
        row = r[i]
        examples["torn"].append(
            f"{names[row['ns']]} {keys[row['key']]!r}: writer {row['wid']} v{row['ver']} "
            "never wrote that value there"
        )
    missing = r["status"] == MISSING
    per_ns = {}
    for ns, name in enumerate(names):
        in_ns = r["ns"] == ns
        per_ns[name] = {
            "writes": int(np.count_nonzero((group // nkeys == ns) & (kind == SET))),
            "deletes": int(np.count_nonzero((group // nkeys == ns) & (kind == DELETE))),
            "reads": int(np.count_nonzero(in_ns)),
            "torn": int(np.count_nonzero(in_ns & ((r["status"] == TORN) | phantom))),
            "lost": int(np.count_nonzero(in_ns & (lost | missing))) + listing_lost[ns],
            "lost_by_kind": {
                "older value": int(np.count_nonzero(in_ns & lost & (r["status"] == GOT))),
                "nothing": int(np.count_nonzero(in_ns & lost & (r["status"] == NONE))),
                "spilled value gone": int(np.count_nonzero(in_ns & missing)),
                "listing": listing_lost[ns],
            },
            "read_errors": int(np.count_nonzero(in_ns & (r["status"] == ERROR))),
        }
    for v in examples.values():
        del v[10:]
    return {
        "operations": {
            "writes": int(np.count_nonzero(kind == SET)),
            "deletes": int(np.count_nonzero(kind == DELETE)),
            "reads": len(r),
            "committed": int(np.count_nonzero(ok)),
            "in_flight_at_kill": int(np.count_nonzero(~ok)) - failed_ops,
        },
        "torn": int(np.count_nonzero(r["status"] == TORN) + np.count_nonzero(phantom)),
        "lost": int(np.count_nonzero(lost | missing)) + sum(listing_lost),
        "errors": failed_ops + int(np.count_nonzero(r["status"] == ERROR)),
        "per_namespace": per_ns,
        "examples": examples,
    }


# -------------------------------------------------------------------- fill
FILL_SIZES = (4 * KiB, 64 * KiB, 256 * KiB, 1 * MiB)


def _fill_child(spec: dict[str, Any]) -> int:
    """Fill the tmpfs at ``spec["root"]`` over and over; print the report as JSON."""
    root, mode = spec["root"], spec["mode"]
    prototype = default_buffer_prototype().buffer
    vfs = os.statvfs(root)
    fs_bytes = vfs.f_blocks * vfs.f_frsize
    name = f"fill-{mode}"
    if mode == "spill":
        store = shmstore.SharedMemoryStore(name, root=root, spill=spec["spill"])
    else:
        store = shmstore.SharedMemoryStore(name, root=root)
    rng = random.Random(spec["seed"])
    keys = [f"c/{i % 4}/{i}" for i in range(48)]
    live: dict[int, int] = {}
    c = dict.fromkeys(
        (
            "writes",
            "landed",
            "spilled",
            "full",
            "deletes",
            "errors",
            "half_written",
            "lost",
            "bad_full_errors",
        ),
        0,
    )
    details: list[str] = []
    tmp = os.path.join(store.path, ".shmstore", "state", "tmp")
    ver = 0

    def check(k: int, when: str) -> None:
        try:
            value = store.get_sync(keys[k])
            got = None if value is None else decode(value.as_numpy_array(), 0, k)
        except Torn as e:
            c["half_written"] += 1
            details.append(f"{when}: {keys[k]!r} torn: {e}")
            return
        except Exception as e:
            c["errors"] += 1
            details.append(f"{when}: {keys[k]!r}: {e!r}")
            return
        want = None if k not in live else (1, live[k])
        if got != want:
            c["lost"] += 1
            details.append(f"{when}: {keys[k]!r} holds {got}, last whole write was {want}")

    def write(k: int, size: int) -> bool:
        nonlocal ver
        ver += 1
        c["writes"] += 1
        value = encode(0, k, 1, ver, size)
        try:
            store.set_sync(keys[k], prototype.from_bytes(value))
        except shmstore.SharedMemoryFullError as e:
            c["full"] += 1
            if e.errno != errno.ENOSPC or e.namespace != name or e.requested < size:
                c["bad_full_errors"] += 1
                details.append(f"full error says too little: {e!r}")
            ok = False
        except Exception as e:
            c["errors"] += 1
            details.append(f"write {keys[k]!r} of {size} B: {e!r}")
            ok = False
        else:
            live[k] = ver
            st = os.lstat(os.path.join(store.path, keys[k]))
            c["landed" if stat.S_ISREG(st.st_mode) else "spilled"] += 1
            ok = True
        # Only the files this process keeps for reuse (recycled pages) may stay.
        extra = set(os.listdir(tmp)) - store._keyspace().ns.kept_names()
        if extra:
            c["half_written"] += 1
            details.append(f"after writing {keys[k]!r}: {sorted(extra)} left in tmp/")
        check(k, "after write")
        return ok

    def delete_one() -> int:
        k = rng.choice(sorted(live))
        store.delete_sync(keys[k])
        del live[k]
        c["deletes"] += 1
        check(k, "after delete")
        return held.pop(k, 0)

    landed_bytes = 0
    held: dict[int, int] = {}  # bytes of each key's value, where it landed or spilled
    for _ in range(100_000):
        if landed_bytes >= spec["rounds"] * fs_bytes:
            break
        size = rng.choice(FILL_SIZES)
        k = rng.randrange(len(keys))
        if write(k, size):
            landed_bytes += size
            held[k] = size
        else:
            freed = 0  # full: make room for it, as an application would
            while live and freed < size:
                freed += delete_one()
        if live and rng.random() < 0.1:
            delete_one()
    report: dict[str, Any] = {"tmpfs_bytes": fs_bytes, "landed_bytes": landed_bytes}

    if mode == "plain":
        # Fill it to the brim, then: a new namespace, a zarr array, named arrays.
        for size in (64 * KiB, 4 * KiB):  # to the last page
            k = len(keys)
            keys.extend(f"brim/{size}/{i}" for i in range(2 * fs_bytes // (64 * KiB)))
            while k < len(keys) and write(k, size):
                k += 1
        transient_before = sorted(n for n in os.listdir(root) if n.startswith(".shmstore-"))
        try:
            shmstore.SharedMemoryStore("fill-new", root=root)
            report["new_namespace_when_full"] = "created"
        except OSError as e:
            report["new_namespace_when_full"] = f"{type(e).__name__} errno {e.errno}"
            if e.errno != errno.ENOSPC:
                c["errors"] += 1
                details.append(f"new namespace on a full tmpfs: {e!r}")
        except Exception as e:
            c["errors"] += 1
            details.append(f"new namespace on a full tmpfs: {e!r}")
        left = sorted(n for n in os.listdir(root) if n.startswith(".shmstore-"))
        if left != transient_before:
            c["half_written"] += 1
            details.append(f"new namespace on a full tmpfs left {left}")
        report["zarr_when_full"] = _fill_zarr(store, c, details)
        for k in list(live):
            check(k, "when full")
        asyncio.run(store.clear())  # zarr's Store.clear is a coroutine
        live.clear()
        report["named_arrays"] = _fill_arrays(root, c, details)
    else:
        report["capacity"] = capacity_leak(root, name)
    for k in range(len(keys)):
        check(k, "at the end")
    listed = set(_list_keys(store))
    if listed != {keys[k] for k in live}:
        c["lost"] += 1
        details.append(f"listing {sorted(listed)[:5]}... differs from the keys written")
    release_handles()  # gives back the files kept for reuse: none may stay
    transients = [n for n in os.listdir(root) if n.startswith(".shmstore-")]
    report.update(
        counts=c,
        leftovers=transients + os.listdir(tmp),
        details=details[:20],
    )
    print(json.dumps(report))
    return 0


def _fill_zarr(store: Any, c: dict[str, int], details: list[str]) -> dict[str, Any]:
    """Write a zarr array into a full namespace: SharedMemoryFullError, whole chunks only."""
    out: dict[str, Any] = {}
    chunk = 64 * KiB
    try:
        z = zarr.create_array(
            store,
            name="z",
            shape=(8 * chunk,),
            chunks=(chunk,),
            dtype="u1",
            fill_value=0,
            compressors=None,
            overwrite=True,
        )
        z[:] = 7
        out["write"] = "landed"
    except shmstore.SharedMemoryFullError:
        out["write"] = "SharedMemoryFullError"
        c["full"] += 1
    except Exception as e:
        out["write"] = repr(e)
        c["errors"] += 1
        details.append(f"zarr write on a full tmpfs: {e!r}")
    try:
        z = zarr.open_array(store, path="z", mode="r")
    except Exception:
        return out  # its metadata did not fit: no array at all
    data = z[:].reshape(-1, chunk)
    whole = [(row == 7).all() or (row == 0).all() for row in data]
    out["chunks_written"] = int(sum(bool((row == 7).all()) for row in data))
    if not all(whole):
        c["half_written"] += 1
        details.append("zarr array on a full tmpfs has a chunk that is neither old nor new")
    return out


def _fill_arrays(root: str, c: dict[str, int], details: list[str]) -> dict[str, Any]:
    """Named arrays until the tmpfs is full, then every byte of each one written."""
    made = []
    full = 0
    for i in range(64):
        try:
            made.append(shmstore.create(f"fill-arr-{i}", (512 * KiB,), "u1", root=root))
        except shmstore.SharedMemoryFullError:
            full += 1
            break
        except Exception as e:
            c["errors"] += 1
            details.append(f"create a named array on a full tmpfs: {e!r}")
            break
    for i, arr in enumerate(made):
        arr[:] = i + 1  # a hole in a full tmpfs would be a SIGBUS here
    bad = sum(int(not (arr == i + 1).all()) for i, arr in enumerate(made))
    c["lost"] += bad
    for i in range(len(made)):
        shmstore.delete(f"fill-arr-{i}", root=root)
    if not full:
        details.append("the named arrays never filled the tmpfs")
        c["errors"] += 1
    return {"created": len(made), "full_errors": full, "bad": bad}


def run_fill(
    p: Profile, root: str, spill: str, *, mode: str, seed: int | None = None
) -> dict[str, Any]:
    """Fill the (small, private) tmpfs *root* over and over, in a child process.

    *mode* is ``"plain"`` (no spill tier: writes raise ``SharedMemoryFullError``;
    then a zarr array and named arrays on the full tmpfs) or ``"spill"`` (a spill
    tier on disk at *spill*: writes that do not fit spill).
    """
    seed = random.randrange(1 << 30) if seed is None else seed
    t0 = time.monotonic()
    spec = {"root": root, "spill": spill, "mode": mode, "rounds": p.fill_rounds, "seed": seed}
    child = _run_child("fill", spec, _child_env(root))
    c = child.get("counts", {})
    left = child.get("leftovers", [])
    leaked = child.get("capacity", {}).get("leaked", 0)
    expect = {"plain": ("full", "spilled"), "spill": ("spilled", "full")}[mode]
    report = {
        "scenario": f"fill-{mode}",
        "seed": seed,
        "duration_s": round(time.monotonic() - t0, 2),
        "processes": 1,
        "operations": {"writes": c.get("writes", 0), "deletes": c.get("deletes", 0)},
        "kills": 0,
        "child": child,
        "failures": {
            "torn": c.get("half_written", 0),
            "lost": c.get("lost", 0),
            "signals": int(child["signal"] is not None),
            "errors": c.get("errors", 0) + int(child["returncode"] > 0),
            "leftovers_after_gc": len(left),
            "capacity_leaked": abs(leaked),
            "bad_full_errors": c.get("bad_full_errors", 0),
            # plain: some writes must have found the tmpfs full and none spilled;
            # spill: some must have spilled and none raised
            f"no_{expect[0]}": int(c.get(expect[0], 0) == 0),
            f"unexpected_{expect[1]}": c.get(expect[1], 0),
        },
    }
    return report


@contextlib.contextmanager
def private_tmpfs(parent: str, size: int) -> Iterator[str]:
    """Mount a tmpfs of *size* bytes under *parent* for the block; unmount it after.

    Raises
    ------
    PermissionError
        If it cannot be mounted here (not root, no ``mount``, a container
        without the capability); the message says why.
    """
    mnt = tempfile.mkdtemp(prefix="soak-tmpfs-", dir=parent)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", mnt],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        os.rmdir(mnt)
        raise PermissionError(f"cannot mount a tmpfs: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", mnt], check=True)
        os.rmdir(mnt)


# ------------------------------------------------------------------- scale
def _maps() -> int:
    with open("/proc/self/maps", "rb") as f:
        return sum(1 for _ in f)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _max_map_count() -> int:
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return 65530


def _scale_child(spec: dict[str, Any]) -> int:
    """Write, list and read ``spec["chunks"]`` small chunks in one namespace."""
    n = spec["chunks"]
    prototype = default_buffer_prototype().buffer
    store = shmstore.SharedMemoryStore("scale")
    keys = [f"a/c/{i // 1000}/{i % 1000}" for i in range(n)]
    t0 = time.perf_counter()
    for i, key in enumerate(keys):
        store.set_sync(key, prototype.from_bytes(encode(0, i & 0xFFFF, 1, i, 8 + i % 56)))
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    listed = _list_keys(store)
    list_s = time.perf_counter() - t0
    store.get_sync(keys[0])  # loads what the first read needs before the baseline
    base = _maps()
    maps_max, fds_max, bad, missing = base, _fds(), 0, 0
    t0 = time.perf_counter()
    for i, key in enumerate(keys):
        value = store.get_sync(key)
        if value is None:
            missing += 1
        else:
            try:
                if decode(value.as_numpy_array(), 0, i & 0xFFFF)[1] != i:
                    bad += 1
            except Torn:
                bad += 1
        if i % 1000 == 999:
            maps_max, fds_max = max(maps_max, _maps()), max(fds_max, _fds())
    read_s = time.perf_counter() - t0
    limit = _max_map_count()
    bound = _readcache.MAX_MAPPINGS
    print(
        json.dumps(
            {
                "chunks": n,
                "write_s": round(write_s, 3),
                "list_s": round(list_s, 3),
                "read_s": round(read_s, 3),
                "listed": len(listed),
                "maps_baseline": base,
                "maps_max": maps_max,
                "max_map_count": limit,
                "mapping_bound": bound,
                "fds_max": fds_max,
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                "bad": bad,
                "missing": missing,
                "listing_wrong": int(sorted(listed) != sorted(keys)),
                # well under the kernel's limit, and within the cache's bound (plus
                # one bound check's worth of inserts)
                "maps_over_bound": int(maps_max - base > bound + 512),
                "maps_near_limit": int(maps_max > limit // 2),
            }
        )
    )
    return 0


def run_scale(p: Profile, root: str) -> dict[str, Any]:
    """``p.scale_chunks`` chunks in one namespace, in a child process; the report."""
    t0 = time.monotonic()
    child = _run_child("scale", {"chunks": p.scale_chunks}, _child_env(root))
    return {
        "scenario": "scale",
        "duration_s": round(time.monotonic() - t0, 2),
        "processes": 1,
        "operations": {
            "writes": child.get("chunks", 0),
            "reads": child.get("chunks", 0),
            "lists": 1,
        },
        "kills": 0,
        "child": child,
        "failures": {
            "torn": child.get("bad", 0),
            "lost": child.get("missing", 0) + child.get("listing_wrong", 0),
            "signals": int(child["signal"] is not None),
            "errors": int(child["returncode"] != 0 and child["signal"] is None),
            "maps_over_bound": child.get("maps_over_bound", 0),
            "maps_near_limit": child.get("maps_near_limit", 0),
        },
    }


def _namespaces_child(spec: dict[str, Any]) -> int:
    """Many namespaces written, then read one after another, holding no store."""
    nofile = spec["nofile"]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))
    prototype = default_buffer_prototype().buffer
    count, chunks = spec["namespaces"], spec["chunks"]
    keys = [f"t/c/{i // 100}/{i % 100}" for i in range(chunks)]
    for j in range(count):
        store = shmstore.SharedMemoryStore(f"many-{j}")
        for i, key in enumerate(keys):
            store.set_sync(key, prototype.from_bytes(encode(j, i, 1, j, 16)))
        del store
    shmstore.SharedMemoryStore("many-0", read_only=True).get_sync(keys[0])
    base, fds_base = _maps(), _fds()
    maps_max, fds_max, bad = base, fds_base, 0
    after = []
    for j in range(count):
        store = shmstore.SharedMemoryStore(f"many-{j}", read_only=True)
        for i, key in enumerate(keys):
            value = store.get_sync(key)
            try:
                if value is None or decode(value.as_numpy_array(), j, i) != (1, j):
                    bad += 1
            except Torn:
                bad += 1
            if i % 500 == 499:
                maps_max, fds_max = max(maps_max, _maps()), max(fds_max, _fds())
        del store, value
        after.append(_maps() - base)
    bound = _readcache.MAX_MAPPINGS
    print(
        json.dumps(
            {
                "namespaces": count,
                "chunks_each": chunks,
                "mapping_bound": bound,
                "maps_baseline": base,
                "maps_max": maps_max,
                "maps_after_each": after,
                "cached_mappings": _readcache.cached_mappings(),
                "max_map_count": _max_map_count(),
                "fds_baseline": fds_base,
                "fds_max": fds_max,
                "nofile": min(nofile, hard),
                "bad": bad,
                "maps_over_bound": int(maps_max - base > bound + 512),
                "fds_near_limit": int(fds_max > min(nofile, hard) * 3 // 4),
            }
        )
    )
    return 0


def run_namespaces(p: Profile, root: str, *, nofile: int = 256) -> dict[str, Any]:
    """``p.namespaces`` namespaces read in turn by one child process; the report.

    The child runs under ``ulimit -n`` *nofile* and, where the profile sets
    one, ``SHMSTORE_MAX_MAPPINGS`` (so that a few thousand chunks exceed it).
    """
    t0 = time.monotonic()
    extra = {} if p.max_mappings is None else {"SHMSTORE_MAX_MAPPINGS": str(p.max_mappings)}
    spec = {"namespaces": p.namespaces, "chunks": p.namespace_chunks, "nofile": nofile}
    child = _run_child("namespaces", spec, _child_env(root, **extra))
    n = p.namespaces * p.namespace_chunks
    return {
        "scenario": "namespaces",
        "duration_s": round(time.monotonic() - t0, 2),
        "processes": 1,
        "operations": {"writes": n, "reads": n},
        "kills": 0,
        "child": child,
        "failures": {
            "torn": child.get("bad", 0),
            "lost": 0,
            "signals": int(child["signal"] is not None),
            "errors": int(child["returncode"] != 0 and child["signal"] is None),
            "maps_over_bound": child.get("maps_over_bound", 0),
            "fds_near_limit": child.get("fds_near_limit", 0),
        },
    }


# -------------------------------------------------------------------- fuzz
_WEIRD = (
    "",
    ".",
    "..",
    "...",
    "/",
    "//",
    "\\",
    "\0",
    ".shmstore",
    ".shmstore-new.1.0123456789ab",
    "a/..",
    "../a",
    "/a",
    "a/",
    " ",
    "\n",
    "\t",
    "é",
    "\udc80",
    "\ud800",
    "\u202e",
    "\x7f",
    "x" * 255,
    "é" * 127 + "e",
    "é" * 128,
    "x" * 256,
    "zarr.json",
    "c/0/0",
    "-",
    "~",
    "*",
    "?",
    "[a]",
    "%2e%2e",
    "shm://x",
)


def _snapshot(top: str, skip: str | None = None) -> set[tuple[str, str]]:
    """Every entry below *top* as (relative path, kind), not entering *skip*; never followed."""
    out: set[tuple[str, str]] = set()

    def walk(d: str) -> None:
        with os.scandir(d) as it:
            for e in it:
                if skip is not None and e.path == skip:
                    continue
                st = e.stat(follow_symlinks=False)
                kind = stat.filemode(st.st_mode)[0]
                out.add((os.path.relpath(e.path, top), kind))
                if stat.S_ISDIR(st.st_mode):
                    walk(e.path)

    walk(top)
    return out


def run_fuzz(p: Profile, parent: str, *, seed: int | None = None) -> dict[str, Any]:
    """Hypothesis-generated names and keys through the store, named arrays and fsspec.

    The shared-memory root is ``<parent>/root``; *parent* (the root's parent)
    and the root are compared before and after every example.
    """
    # Hypothesis and fsspec only here: the other scenarios' children start without them.
    import fsspec
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    seed = random.randrange(1 << 30) if seed is None else seed
    t0 = time.monotonic()
    root = os.path.join(parent, "root")
    os.mkdir(root, 0o700)
    baseline = _snapshot(parent)
    prototype = default_buffer_prototype().buffer
    fs = fsspec.filesystem("shm", root=root)
    counts: dict[str, dict[str, int]] = {r: {} for r in ("store", "array", "fsspec")}

    def count(route: str, what: str) -> None:
        counts[route][what] = counts[route].get(what, 0) + 1

    def unchanged(what: str, skip: str | None = None) -> None:
        now = _snapshot(parent, skip)
        want = baseline if skip is None else {e for e in baseline if e[0] != skip}
        if now != want:
            raise AssertionError(f"{what}: created {sorted(now - want)[:5]}")

    def inside(path: str) -> None:
        if os.path.dirname(path) != root:
            raise AssertionError(f"{path!r} is not an entry of the root {root!r}")

    # Plausible names and components (most of them valid) as often as hostile ones.
    plausible = st.text(
        st.characters(
            whitelist_categories=("L", "M", "N", "P", "S"),
            whitelist_characters=" ",
            blacklist_characters="/\\",
        ),
        min_size=1,
        max_size=12,
    )
    component = st.one_of(
        plausible,
        plausible,
        st.sampled_from(_WEIRD),
        st.text(max_size=10),
        st.text(alphabet="./\\\0 a-é", max_size=6),
    )
    text = st.one_of(
        component, component, st.lists(component, min_size=1, max_size=4).map("/".join)
    )
    other = st.one_of(
        st.integers(), st.binary(max_size=8), st.none(), st.lists(st.integers(), max_size=2)
    )

    def mix(*choices: Any) -> Any:
        # one_of draws hostile branches far more often than their share; this does not
        return st.integers(0, len(choices) - 1).flatmap(lambda i: choices[i])

    names = mix(plausible, plausible, plausible, component, text, other)
    keys = mix(plausible, text, text, text, other)
    data = st.binary(max_size=64)
    config = settings(
        max_examples=p.fuzz_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )

    @hypothesis_seed(seed)
    @config
    @given(name=names, key=keys, value=data)
    def store_route(name: Any, key: Any, value: bytes) -> None:
        try:
            store = shmstore.SharedMemoryStore(name, root=root)
        except (ValueError, TypeError):
            count("store", "name refused")
            unchanged(f"refused name {name!r}")
            return
        inside(store.path)
        try:
            try:
                store.set_sync(key, prototype.from_bytes(value))
            except (ValueError, TypeError):
                count("store", "key refused")
            else:
                got = store.get_sync(key)
                assert got is not None and got.to_bytes() == value, f"{key!r}: read back {got}"
                assert _list_keys(store) == [key], f"{key!r} listed as {_list_keys(store)}"
                count("store", "round trip")
            unchanged(f"name {name!r}, key {key!r}", skip=store.path)
        finally:
            store.destroy()
        unchanged(f"name {name!r}, key {key!r}, destroyed")

    @hypothesis_seed(seed)
    @config
    @given(name=names, value=data.filter(bool))
    def array_route(name: Any, value: bytes) -> None:
        fill = np.frombuffer(value, "u1")
        try:
            arr = shmstore.create(name, fill.shape, "u1", fill=fill, root=root)
        except (ValueError, TypeError):
            count("array", "name refused")
            unchanged(f"refused array name {name!r}")
            return
        path = os.path.join(root, name)
        try:
            inside(path)
            back = shmstore.attach(name, read_only=True, root=root)
            assert bytes(back) == value, f"{name!r}: attached {bytes(back)!r}"
            assert name in [a.name for a in shmstore.list(root=root)], f"{name!r} not listed"
            unchanged(f"array {name!r}", skip=path)
            del back
            count("array", "round trip")
        finally:
            del arr
            shmstore.delete(name, root=root)
        unchanged(f"array {name!r}, deleted")

    @hypothesis_seed(seed)
    @config
    @given(name=mix(plausible, plausible, text), key=mix(plausible, text, text), value=data)
    def fsspec_route(name: str, key: str, value: bytes) -> None:
        url = f"shm://{name}/{key}"
        path = fs._strip_protocol(url)
        ns = path.partition("/")[0]
        try:
            nsdir: str | None = os.path.join(root, check_name(ns))
        except (ValueError, TypeError):
            nsdir = None
        try:
            try:
                fs.pipe_file(url, value)
            except (ValueError, TypeError):
                count("fsspec", "refused")
            except IsADirectoryError:
                # the path, once fsspec has stripped its slashes, names a namespace
                assert "/" not in path, f"{url!r}: IsADirectoryError for a key"
                count("fsspec", "names a namespace")
            else:
                got = fs.cat_file(url)
                assert got == value, f"{url!r}: read back {got!r}"
                found = fs.find(ns)
                assert found == [path], f"{url!r} written as {path!r}, found {found}"
                count("fsspec", "round trip")
            unchanged(f"url {url!r}", skip=nsdir)
        finally:
            # Through the filesystem itself: a namespace destroyed behind its back
            # is NamespaceDestroyedError for the next chunk written there, by design.
            # (rm_file and rmdir: fs.rm would expand a name such as "[a]" as a glob)
            if nsdir is not None and os.path.isdir(nsdir):
                with contextlib.suppress(FileNotFoundError, ValueError, IsADirectoryError):
                    fs.rm_file(url)
                fs.rmdir(ns)
        unchanged(f"url {url!r}, destroyed")

    problems = []
    for route, fn in (("store", store_route), ("array", array_route), ("fsspec", fsspec_route)):
        try:
            fn()
        except Exception as e:
            for one in getattr(e, "exceptions", None) or [e]:  # Hypothesis: one per distinct bug
                notes = "\n".join(getattr(one, "__notes__", []))
                problems.append(f"{route}: {type(one).__name__}: {one}\n{notes}"[:3000])
    examples = sum(sum(c.values()) for c in counts.values())
    return {
        "scenario": "fuzz",
        "seed": seed,
        "duration_s": round(time.monotonic() - t0, 2),
        "processes": 0,
        "operations": {"examples": examples},
        "kills": 0,
        "counts": counts,
        "problems": problems,
        "failures": {"problems": len(problems)},
    }


# --------------------------------------------------------------- isolation
NOBODY = 65534

# Runs as uid 65534 in root's shared-memory root (mode 1777, like /dev/shm).
# Prints one JSON list: what it tried and whether it was refused. Attempts
# marked "plant" are allowed by the sticky root; root's tools must cope.
_NOBODY_SCRIPT = r"""
import json, os, shutil, sys
import fsspec, numpy as np, shmstore
from zarr.core.buffer import default_buffer_prototype

root, victim = sys.argv[1], sys.argv[2]
B = default_buffer_prototype().buffer
ns = os.path.join(root, "secret")
fs = fsspec.filesystem("shm", root=root)
results = []

def attempt(what, fn, plant=False):
    try:
        out = fn()
    except Exception as e:
        results.append({"what": what, "plant": plant, "refused": True,
                        "how": f"{type(e).__name__}: {e}"[:200]})
    else:
        results.append({"what": what, "plant": plant, "refused": False, "how": repr(out)[:200]})

def planted_link_over_array():
    os.symlink(victim, os.path.join(root, "swap"))
    os.rename(os.path.join(root, "swap"), os.path.join(root, "secret-arr"))

def transient_dir(dead):
    d = os.path.join(root, f".shmstore-new.{dead}.0123456789ab")
    os.mkdir(d)
    os.symlink(victim, os.path.join(d, "x"))
    with open(os.path.join(d, "f"), "wb") as f:
        f.write(b"x" * 100)

def fake_namespace(name, meta):
    d = os.path.join(root, name, ".shmstore", "state")
    os.makedirs(d)
    with open(os.path.join(d, "meta.json"), "w") as f:
        f.write(meta)

def linked_bookkeeping():
    os.mkdir(os.path.join(root, "fake-link"))
    os.symlink(os.path.join(ns, ".shmstore"), os.path.join(root, "fake-link", ".shmstore"))

def killed_in_scope():
    # A process of this user that dies inside a scoped store: its namespace stays
    # behind for gc, marked scoped, with a dead creator.
    pid = os.fork()
    if pid == 0:
        with shmstore.SharedMemoryStore("nobody-scoped", scoped=True):
            os.kill(os.getpid(), 9)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), status

dead = os.fork()
if dead == 0:
    os._exit(0)
os.waitpid(dead, 0)

attempt("read a value (store)",
        lambda: shmstore.SharedMemoryStore("secret", read_only=True).get_sync("t/c/0").to_bytes())
attempt("open the namespace writable", lambda: shmstore.SharedMemoryStore("secret"))
attempt("read a value's file", lambda: open(os.path.join(ns, "t/c/0"), "rb").read())
attempt("list the namespace directory", lambda: os.listdir(ns))
attempt("read a value (fsspec)", lambda: fs.cat_file("secret/t/c/0"))
attempt("list the namespace (fsspec)", lambda: fs.find("secret"))
attempt("attach the named array", lambda: float(shmstore.attach("secret-arr").sum()))
attempt("attach the named array read-only",
        lambda: float(shmstore.attach("secret-arr", read_only=True).sum()))
attempt("read the named array's file", lambda: open(os.path.join(root, "secret-arr"), "rb").read())
attempt("write a value (store)",
        lambda: shmstore.SharedMemoryStore("secret").set_sync("t/c/0", B.from_bytes(b"x")))
attempt("write a value (fsspec)", lambda: fs.pipe_file("secret/t/c/9", b"x"))
attempt("create the named array again", lambda: shmstore.create("secret-arr", 4, exist_ok=True))
attempt("open the named array's file for writing",
        lambda: os.open(os.path.join(root, "secret-arr"), os.O_WRONLY))
attempt("delete a value (store)",
        lambda: shmstore.SharedMemoryStore("secret").delete_sync("t/c/0"))
attempt("delete the named array", lambda: shmstore.delete("secret-arr"))
attempt("destroy the namespace", lambda: shmstore.destroy("secret"))
attempt("clear the namespace (fsspec)", lambda: fs.rm("secret", recursive=True))
attempt("unlink the named array's file", lambda: os.unlink(os.path.join(root, "secret-arr")))
attempt("rename the namespace away", lambda: os.rename(ns, os.path.join(root, "stolen")))
attempt("remove the namespace tree", lambda: shutil.rmtree(ns))
attempt("replace the named array by a symlink", planted_link_over_array)
attempt("lock the namespace", lambda: shmstore.Lock("secret").acquire())
attempt("plant a symlink where root will create a namespace",
        lambda: os.symlink(victim, os.path.join(root, "planted-ns")), plant=True)
attempt("plant a symlink where root will create a named array",
        lambda: os.symlink(os.path.join(victim, "file"), os.path.join(root, "planted-arr")),
        plant=True)
attempt("plant a symlink named like a dead process's trash",
        lambda: os.symlink(victim, os.path.join(root, f".shmstore-trash.{dead}.0123456789ab")),
        plant=True)
attempt("plant a transient directory holding a symlink", lambda: transient_dir(dead), plant=True)
attempt("plant a FIFO", lambda: os.mkfifo(os.path.join(root, "fifo")), plant=True)
attempt("plant an unreadable file",
        lambda: os.close(os.open(os.path.join(root, "unreadable"), os.O_CREAT | os.O_WRONLY, 0)),
        plant=True)
def corrupt_array():
    with open(os.path.join(root, "fake-arr"), "wb") as f:
        f.write(b"\x93SHMSTORE-ARRAY\n" + b"\xff" * 64)

attempt("plant a corrupt named array", corrupt_array, plant=True)
attempt("plant a namespace with corrupt bookkeeping",
        lambda: fake_namespace("fake-ns", "{not json"), plant=True)
attempt("plant a namespace whose bookkeeping is a symlink to root's", linked_bookkeeping,
        plant=True)
attempt("create a namespace of its own",
        lambda: shmstore.SharedMemoryStore("nobody-ns").set_sync("k", B.from_bytes(b"mine")),
        plant=True)
attempt("create a named array of its own", lambda: shmstore.create("nobody-arr", 4), plant=True)
attempt("die inside a scoped store of its own", killed_in_scope, plant=True)
print(json.dumps(results))
"""


def as_nobody(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run *args* as uid and gid 65534 with no supplementary groups."""
    return subprocess.run(
        ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd="/",
    )


def nobody_unavailable(env: dict[str, str]) -> str | None:
    """Why this interpreter cannot run shmstore as uid 65534 here, or ``None`` if it can."""
    if os.geteuid() != 0:
        return "switching to uid 65534 needs root"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    probe = as_nobody([sys.executable, "-c", "import shmstore, fsspec, zarr, numpy"], env)
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
        return f"{sys.executable} cannot run shmstore as uid {NOBODY}: {why}"
    return None


def _tree(path: str) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for d, dirs, files in os.walk(path):
        for n in dirs:
            out[os.path.relpath(os.path.join(d, n), path)] = None
        for n in files:
            out[os.path.relpath(os.path.join(d, n), path)] = Path(d, n).read_bytes()
    return out


def run_isolation(root: str, scratch: str) -> dict[str, Any]:
    """Uid 65534 against root's data in a sticky shared root; root's tools afterwards.

    *root* is made mode 1777 (as ``/dev/shm`` is). Returns a report with
    ``skipped`` set (and no failures) where uid 65534 cannot run shmstore here.
    """
    t0 = time.monotonic()
    env = _child_env(root)
    env.pop("HOME", None)
    why = nobody_unavailable(env)
    if why is not None:
        return {"scenario": "isolation", "skipped": why, "failures": {}}
    os.chmod(root, 0o1777)
    victim = os.path.join(scratch, "victim")
    os.makedirs(os.path.join(victim, "sub"))
    Path(victim, "file").write_bytes(b"root's file")
    Path(victim, "sub", "deep").write_bytes(b"root's deep file")
    victim_before = _tree(victim)
    prototype = default_buffer_prototype().buffer
    store = shmstore.SharedMemoryStore("secret", root=root)
    values = {f"t/c/{i}": f"secret value {i}".encode() * 10 for i in range(4)}
    for key, value in values.items():
        store.set_sync(key, prototype.from_bytes(value))
    arr = shmstore.create("secret-arr", (64,), "f8", fill=np.arange(64.0), root=root)
    del arr
    nobody = as_nobody([sys.executable, "-c", _NOBODY_SCRIPT, root, victim], env)
    try:
        attempts = json.loads(nobody.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        attempts = []
    breaches = [a for a in attempts if not a["refused"] and not a["plant"]]
    refused_plants = [a["what"] for a in attempts if a["refused"] and a["plant"]]
    problems: list[str] = []
    if nobody.returncode != 0 or not attempts:
        problems.append(f"uid {NOBODY}'s process failed: {nobody.stderr[-1500:]}")

    # Root's data, root's tools.
    def check_data(when: str) -> None:
        s = shmstore.SharedMemoryStore("secret", root=root)
        for key, value in values.items():
            got = s.get_sync(key)
            if got is None or got.to_bytes() != value:
                problems.append(f"{when}: root's {key!r} is now {got and got.to_bytes()[:20]!r}")
        a = shmstore.attach("secret-arr", read_only=True, root=root)
        if not np.array_equal(a, np.arange(64.0)):
            problems.append(f"{when}: root's named array changed")
        if _tree(victim) != victim_before:
            problems.append(f"{when}: root's directory {victim} was changed through a planted link")

    check_data("after uid 65534")
    cli = []
    for cmd in (("ls", "--json"), ("du", "--json"), ("gc", "--json"), ("ls", "--json")):
        proc = _cli(root, *cmd)
        cli.append({"command": " ".join(cmd), "returncode": proc.returncode})
        if proc.returncode != 0:
            problems.append(
                f"root's `shmstore {' '.join(cmd)}` failed: {proc.stderr.strip()[-500:]}"
            )
        elif cmd[0] == "ls":
            names = {e.get("name") for e in json.loads(proc.stdout).get("entries", [])}
            if not {"secret", "secret-arr"} <= names:
                problems.append(f"root's `shmstore ls` no longer shows its data: {sorted(names)}")
    check_data("after root's ls, du and gc")
    # Root's own operations on names uid 65534 planted: refused, never followed.
    for what, fn, refused_with in (
        (
            "open the planted namespace symlink",
            lambda: shmstore.SharedMemoryStore("planted-ns", root=root),
            shmstore.ForeignEntryError,
        ),
        (
            "create over the planted array symlink",
            lambda: shmstore.create("planted-arr", 4, root=root),
            FileExistsError,
        ),
        (
            "attach the corrupt array",
            lambda: shmstore.attach("fake-arr", root=root),
            (shmstore.ForeignEntryError, PermissionError),
        ),
        (
            "open the corrupt namespace",
            lambda: shmstore.SharedMemoryStore("fake-ns", root=root),
            (shmstore.ForeignEntryError, PermissionError),
        ),
        (
            "open the namespace with linked bookkeeping",
            lambda: shmstore.SharedMemoryStore("fake-link", root=root),
            OSError,
        ),
        (
            "open uid 65534's namespace",
            lambda: shmstore.SharedMemoryStore("nobody-ns", root=root),
            PermissionError,
        ),
    ):
        try:
            fn()
        except refused_with:
            continue
        except Exception as e:
            problems.append(f"root: {what}: {type(e).__name__}: {e}")
        else:
            problems.append(f"root: {what}: succeeded")
    check_data("after root's operations on planted names")
    try:
        names = [n.name for n in shmstore.namespaces(root=root)]
        arrays = [a.name for a in shmstore.list(root=root)]
        if "secret" not in names or "secret-arr" not in arrays:
            problems.append(f"root's namespaces()/list() lost its data: {names}, {arrays}")
    except Exception as e:
        problems.append(f"root's namespaces()/list(): {e!r}")
    return {
        "scenario": "isolation",
        "duration_s": round(time.monotonic() - t0, 2),
        "processes": 1,
        "operations": {"attempts": len(attempts)},
        "kills": 0,
        "attempts": attempts,
        "refused_plants": refused_plants,
        "cli": cli,
        "problems": problems,
        "failures": {"breaches": len(breaches), "problems": len(problems)},
    }


# --------------------------------------------------------------------- run
SCENARIOS = ("faults", "fill", "scale", "namespaces", "fuzz", "isolation")
COLUMNS = ("torn", "lost", "signals", "leftovers_after_gc", "capacity_leaked")


def run_all(p: Profile, scenarios: tuple[str, ...], seed: int | None) -> list[dict[str, Any]]:
    """Every scenario of *scenarios* with profile *p*, each in a fresh private root."""
    reports = []
    for name in scenarios:
        with private_root("soak-") as root, scratch_dir("soak-") as scratch:
            print(f"{name} ...", file=sys.stderr, flush=True)
            if name == "faults":
                reports.append(run_faults(p, root, scratch, seed=seed))
            elif name == "fill":
                for mode in ("plain", "spill"):
                    try:
                        with private_tmpfs(scratch, p.tmpfs_bytes) as mnt:
                            spill = os.path.join(scratch, f"spill-{mode}")
                            reports.append(run_fill(p, mnt, spill, mode=mode, seed=seed))
                    except PermissionError as e:
                        reports.append({"scenario": f"fill-{mode}", "skipped": str(e)})
            elif name == "scale":
                reports.append(run_scale(p, root))
            elif name == "namespaces":
                reports.append(run_namespaces(p, root))
            elif name == "fuzz":
                reports.append(run_fuzz(p, root, seed=seed))
            elif name == "isolation":
                reports.append(run_isolation(root, scratch))
    return reports


def _ops(report: dict[str, Any]) -> int:
    """Operations done: writes, deletes, reads, lists, examples, attempts."""
    ops = report.get("operations", {})
    return sum(v for k, v in ops.items() if k not in ("committed", "in_flight_at_kill"))


def print_table(reports: list[dict[str, Any]]) -> None:
    """One line per scenario: the figures, the zeros that must hold, and the verdict."""
    head = (
        f"{'scenario':<12}{'duration':>10}{'procs':>7}{'ops':>10}{'kills':>7}"
        + "".join(f"{c.replace('_after_gc', '').replace('capacity_', ''):>10}" for c in COLUMNS)
        + "  verdict"
    )
    print(head)
    print("-" * len(head))
    for r in reports:
        if "skipped" in r:
            print(f"{r['scenario']:<12}  skipped: {r['skipped']}")
            continue
        f = r["failures"]
        cells = "".join(f"{f.get(c, 0) if c in f else '-':>10}" for c in COLUMNS)
        bad = failed(r)
        verdict = "ok" if not bad else "FAIL " + ", ".join(f"{k}={v}" for k, v in bad.items())
        print(
            f"{r['scenario']:<12}{r.get('duration_s', 0):>9.1f}s{r.get('processes', 0):>7}"
            f"{_ops(r):>10}{r.get('kills', 0):>7}{cells}  {verdict}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="faults: minutes (default 5)")
    ap.add_argument("--short", action="store_true", help="the short profile of tests/stress")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SCENARIOS)}")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    ap.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/...)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child_main(*args.child)
    p = SHORT if args.short else long_profile(args.minutes)
    scenarios = tuple(args.only.split(",")) if args.only else SCENARIOS
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios {sorted(unknown)}; choose from {','.join(SCENARIOS)}")
    t0 = time.monotonic()
    reports = run_all(p, scenarios, args.seed)
    print()
    print_table(reports)
    doc = {
        "meta": {
            **stamp(argv),
            "versions": versions("numpy", "zarr", "shmstore"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "profile": dataclasses.asdict(p),
            "duration_s": round(time.monotonic() - t0, 1),
        },
        "reports": reports,
    }
    name = f"soak-{p.name}-{platform.python_version()}-zarr{zarr.__version__}.json"
    write_results(doc, name, args.output)
    return 1 if any(failed(r) for r in reports) else 0


if __name__ == "__main__":
    # Through the module "soak", not "__main__": what the engine's forkserver
    # children run is then found by name there.
    sys.exit(importlib.import_module("soak").main())
