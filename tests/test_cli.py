"""The ``shmstore`` command line, driven in-process (CliRunner) and as real processes."""

from __future__ import annotations

import io
import json
import os
import pty
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from click.testing import CliRunner, Result
from conftest import run_python

import shmstore
from shmstore import _inventory as inventory
from shmstore._cli import main


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def ok(*args: str) -> Result:
    result = cli(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def js(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def fails(*args: str) -> str:
    """Run a command that must fail as a user error: exit 1, one line, no traceback."""
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    return lines[0]


def make_climate(root: Path | None = None) -> None:
    """A namespace with a group, a plain array, a sharded one and a zarr v2 array."""
    store = shmstore.SharedMemoryStore("climate", root=root)
    g = zarr.open_group(store, mode="w")
    g.attrs["title"] = "test"
    t = g.create_array(name="t", shape=(40, 40), chunks=(10, 10), dtype="f4")
    t[:] = 1.5
    u = g.create_array(name="sub/u", shape=(100,), chunks=(10,), shards=(50,), dtype="i2")
    u[:] = 3


def names(payload: dict[str, Any]) -> list[str]:
    return [e["name"] for e in payload["entries"]]


# ----------------------------------------------------------------------- ls
def test_ls_empty(shm_root: Path) -> None:
    assert f"no namespaces or named arrays in {shm_root}" in ok("ls").stdout
    assert js("ls") == {
        "root": str(shm_root),
        "entries": [],
        "leftovers": [],
        "reclaimable_bytes": 0,
        "problems": [],
    }


def test_ls_table_and_json(shm_root: Path) -> None:
    make_climate()
    shmstore.SharedMemoryStore("other")
    out = ok("ls").stdout
    assert "climate" in out and "other" in out and "namespace" in out
    assert f"{os.getpid()} (alive)" in out
    payload = js("ls")
    assert payload["root"] == str(shm_root)
    assert names(payload) == ["climate", "other"]
    climate = payload["entries"][0]
    # 4 metadata documents (root, t, sub, sub/u) + 16 chunks of t + 2 shards of u
    assert climate["keys"] == 22 and climate["chunks"] == 18
    assert climate["kind"] == "namespace"
    assert climate["shm_bytes"] > 0 and climate["spilled_bytes"] == 0
    assert climate["pid"] == os.getpid() and climate["pid_alive"] is True
    assert climate["owner"] and climate["uid"] == os.geteuid()
    assert climate["scoped"] is False
    assert climate["path"] == str(shm_root / "climate")
    for field in ("created", "modified"):
        assert climate[field].endswith("+00:00")


def test_ls_pattern(shm_root: Path) -> None:
    for name in ("run-1", "run-2", "keep"):
        shmstore.SharedMemoryStore(name)
    assert names(js("ls", "run-*")) == ["run-1", "run-2"]
    assert "keep" not in ok("ls", "run-*").stdout
    assert "matching 'nope*'" in ok("ls", "nope*").stdout


def test_ls_dead_creator_and_scoped(shm_root: Path) -> None:
    run_python("import shmstore; shmstore.SharedMemoryStore('orphan')")
    (entry,) = js("ls")["entries"]
    assert entry["pid"] != os.getpid() and entry["pid_alive"] is False
    assert "(dead)" in ok("ls").stdout
    with shmstore.scoped("tmp"):
        assert "namespace (scoped)" in ok("ls", "tmp").stdout
        assert js("ls", "tmp")["entries"][0]["scoped"] is True


def test_ls_root_option(shm_root: Path) -> None:
    other = shm_root / "another-root"  # not a namespace: not listed in shm_root
    other.mkdir()
    shmstore.SharedMemoryStore("elsewhere", root=other)
    shmstore.SharedMemoryStore("here")
    assert names(js("ls", "--root", str(other))) == ["elsewhere"]
    assert names(js("ls")) == ["here"]


def test_root_before_or_after_the_command(shm_root: Path, tmp_path: Path) -> None:
    other = shm_root / "another-root"
    other.mkdir()
    shmstore.SharedMemoryStore("elsewhere", root=other)
    shmstore.SharedMemoryStore("here")
    assert names(js("--root", str(other), "ls")) == ["elsewhere"]
    # The innermost --root wins: the command's own over the one before it.
    assert names(js("--root", str(tmp_path / "typo"), "ls", "--root", str(other))) == ["elsewhere"]
    assert names(js("--root", str(other), "ls", "--root", str(shm_root))) == ["here"]
    before = ("--root", str(other))
    assert [e["name"] for e in js(*before, "du")["entries"]] == ["elsewhere"]
    assert js(*before, "info", "elsewhere")["path"] == str(other / "elsewhere")
    assert js(*before, "gc", "--dry-run")["root"] == str(other)
    if hasattr(shmstore, "save"):
        js(*before, "save", "elsewhere", "shm://copy")
        assert names(js(*before, "ls")) == ["copy", "elsewhere"]
        js(*before, "load", "shm://copy", "copy2")
        assert names(js("ls", "--root", str(other))) == ["copy", "copy2", "elsewhere"]
    assert [r["name"] for r in js(*before, "rm", "-y", "elsewhere")["removed"]] == ["elsewhere"]
    assert names(js("ls")) == ["here"]
    msg = fails("--root", str(tmp_path / "typo"), "ls")
    assert "--root" in msg and "typo" in msg
    assert "--root" in ok("--help").stdout


def json_error(*args: str, exit_code: int = 1) -> dict[str, Any]:
    """Run a failing command with --json: one JSON object on stdout, nothing else."""
    result = cli(*args, "--json")
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stderr == "" and "Traceback" not in result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"error", "kind"} and "\n" not in payload["error"]
    return payload


def test_errors_are_json_with_json(shm_root: Path, tmp_path: Path) -> None:
    shmstore.SharedMemoryStore("a")
    (shm_root / "plain-file").write_bytes(b"not ours")
    err = json_error("info", "nope")
    assert err["kind"] == "not-found" and "no namespace or named array 'nope'" in err["error"]
    assert json_error("rm", "-y", "zz*")["kind"] == "not-found"
    assert json_error("rm", "a")["kind"] == "confirmation-required"  # no terminal, no -y
    assert json_error("info", "plain-file")["kind"] == "foreign-entry"
    assert json_error("info", "bad/name")["kind"] == "not-found"
    err = json_error("--root", str(tmp_path / "typo"), "ls")
    assert err["kind"] == "not-found" and "--root" in err["error"]
    assert json_error("ls", "--root", str(tmp_path / "typo"))["kind"] == "not-found"
    # click's own usage errors too (exit status 2)
    for args in (("ls", "--bogus"), ("nosuch",), ("rm",), ("rm", "--idle", "soon", "-y")):
        assert json_error(*args, exit_code=2)["kind"] == "usage", args
    if hasattr(shmstore, "save"):
        err = json_error("load", str(tmp_path), "z", "--capacity", "lots", exit_code=2)
        assert "--capacity" in err["error"]
        assert json_error("save", "nope", str(tmp_path / "x.zarr"))["kind"] == "not-found"
        assert json_error("save", "shm://a/b", str(tmp_path / "y.zarr"))["kind"] == "invalid"
        make_climate()
        ok("save", "climate", str(tmp_path / "c.zarr"))
        err = json_error("save", "climate", str(tmp_path / "c.zarr"))
        assert err["kind"] == "exists" and "--overwrite" in err["error"]
        ok("rm", "-y", "climate")
    assert names(js("ls")) == ["a"]
    # Without --json the same errors stay one line on stderr.
    assert fails("info", "nope").startswith("Error: no namespace or named array 'nope'")


def test_missing_root_is_refused(shm_root: Path, tmp_path: Path, monkeypatch: Any) -> None:
    missing = tmp_path / "typo"
    msg = fails("ls", "--root", str(missing))
    assert "--root" in msg and str(missing) in msg
    assert not missing.exists()  # a typo creates nothing
    monkeypatch.setenv("SHMSTORE_ROOT", str(missing))
    assert "SHMSTORE_ROOT" in fails("gc")


def test_ls_reports_corrupt_entries(shm_root: Path) -> None:
    shmstore.SharedMemoryStore("good")
    bad = shm_root / "bad" / ".shmstore" / "state"
    bad.mkdir(parents=True)
    (bad / "meta.json").write_text("{not json")
    (shm_root / "someone-elses").mkdir()  # no .shmstore: not ours, not listed
    result = ok("ls", "--json")
    payload = json.loads(result.stdout)
    assert names(payload) == ["good"]
    (problem,) = payload["problems"]  # in the JSON, not on stderr
    assert problem["name"] == "bad" and "corrupt" in problem["reason"]
    assert result.stderr == ""
    result = ok("ls")
    assert "bad" in result.stderr and "corrupt" in result.stderr
    assert "someone-elses" not in result.stderr


# ------------------------------------------------------------ planted entries
OTHER_UID = 65534  # nobody


def chown_tree(top: Path, uid: int = OTHER_UID) -> None:
    """Give *top* and everything under it to *uid*, as if that user had made it."""
    os.chown(top, uid, uid, follow_symlinks=False)
    for path in top.rglob("*"):
        os.chown(path, uid, uid, follow_symlinks=False)


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("entries of another user can only be made by root")


def plant(root: Path) -> dict[str, str]:
    """Entries anyone on the host could put in a root; return name -> what is reported."""
    store = shmstore.SharedMemoryStore("symmeta")
    meta = Path(store.path) / ".shmstore" / "state" / "meta.json"
    meta.rename(meta.with_name("real.json"))
    meta.symlink_to("real.json")
    theirs = shmstore.SharedMemoryStore("theirs", mode=0o644)  # dirs 0o755: readable by all
    dead = dead_pid()
    partial = Path(theirs.path) / ".shmstore" / "state" / "tmp" / f"{dead}.1.1.partial"
    partial.write_bytes(b"p" * 5000)  # a dead writer's file gc must leave to its owner
    scoped = shmstore.SharedMemoryStore("theirscoped")  # a scoped one of a dead process
    meta = Path(scoped.path) / ".shmstore" / "state" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "scoped": True, "pid": dead}))
    for name in ("theirs", "theirscoped"):
        chown_tree(root / name)
    unreadable = root / "unreadable"
    unreadable.write_bytes(b"\x93SHMSTORE-ARRAY\n" + b"\0" * 100)
    unreadable.chmod(0)
    os.chown(unreadable, OTHER_UID, OTHER_UID)
    os.mkfifo(root / "fifo")
    (root / "link").symlink_to("/etc")
    their_leftover = root / f".shmstore-new.{dead}.0123456789ab"
    (their_leftover / ".shmstore").mkdir(parents=True)
    chown_tree(their_leftover)
    return {
        "symmeta": "meta.json is a symbolic link",
        "theirs": f"a namespace of uid {OTHER_UID}",
        "theirscoped": f"a namespace of uid {OTHER_UID}",
        "fifo": "a FIFO",
        "link": "a symbolic link",
        their_leftover.name: f"a leftover of a dead process (pid {dead}) of uid {OTHER_UID}",
    }


def test_planted_entries_never_break_the_cli(shm_root: Path) -> None:
    needs_root()
    make_climate()
    reported = plant(shm_root)
    own_leftover = shm_root / f".shmstore-array.{dead_pid()}.0123456789ab"
    own_leftover.write_bytes(b"\0" * 8192)
    before = {p for p in shm_root.rglob("*") if p != own_leftover}
    for args in (("ls",), ("du",), ("gc", "--dry-run"), ("ls", "*")):
        result = ok(*args)
        for name, why in reported.items():
            if name.startswith(".") and args == ("ls", "*"):
                continue  # a pattern lists entries by name: transient ones have none
            lines = [line for line in result.stderr.splitlines() if f"/{name}: " in line]
            assert len(lines) == 1 and why in lines[0], (args, name, result.stderr)
        assert "unreadable" not in result.stderr  # another user's file: not ours to report
        payload = js(*args)
        problems = {p["name"]: p["reason"] for p in payload["problems"]}
        expected = {n for n in reported if not (n.startswith(".") and args == ("ls", "*"))}
        assert set(problems) == expected, args
        assert all(reported[n] in problems[n] for n in expected)
        assert {p["path"] for p in payload["problems"]} == {str(shm_root / n) for n in expected}
    assert names(js("ls")) == ["climate"]
    assert [e["name"] for e in js("du")["entries"]] == ["climate"]
    # info and rm of a good name examine that entry only: nothing else to report.
    result = ok("info", "climate")
    assert "namespace climate" in result.stdout and result.stderr == ""
    assert "t  array 40 x 40 float32" in result.stdout
    msg = fails("info", "theirs")
    assert f"uid {OTHER_UID}" in msg and "not you" in msg
    assert "symbolic link" in fails("rm", "-y", "symmeta")
    # gc reclaims your leftovers and nothing of another user's, whatever they look like.
    payload = js("gc")
    assert [lo["path"] for lo in payload["reclaimed"]] == [str(own_leftover)]
    assert payload["failed"] == []
    assert {p["name"] for p in payload["problems"]} == set(reported)
    assert not own_leftover.exists()
    assert {p for p in shm_root.rglob("*")} == before
    result = ok("rm", "-y", "climate")
    assert "removed namespace climate" in result.stdout and result.stderr == ""
    assert names(js("ls")) == []


def test_a_glob_skips_and_reports_what_it_cannot_trust(shm_root: Path) -> None:
    needs_root()
    for name in ("job-1", "job-2"):
        shmstore.SharedMemoryStore(name)
    chown_tree(shm_root / "job-2")
    result = ok("rm", "-y", "job-*")
    assert "removed namespace job-1" in result.stdout
    assert "job-2: a namespace of uid" in result.stderr
    assert (shm_root / "job-2").is_dir()
    # A pattern that matches only entries it cannot trust has nothing to work on.
    msg = fails("du", "job-*")
    assert "matches no namespace or named array" in msg and "'job-2'" in msg


AS_OTHER_USER = ["setpriv", "--reuid", str(OTHER_UID), "--regid", str(OTHER_UID)]
AS_OTHER_USER += ["--clear-groups"]


def as_other_user(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as uid 65534, on the test's root."""
    env = {**os.environ, "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}
    code = "from shmstore._cli import main; main()"
    return subprocess.run(
        [*AS_OTHER_USER, sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_of_another_user_in_a_planted_root(shm_root: Path) -> None:
    """What uid 65534 sees of root's entries, and of its own unreadable ones."""
    needs_root()
    if subprocess.run(["which", "setpriv"], capture_output=True).returncode != 0:
        pytest.skip("setpriv (util-linux) is not installed")
    shm_root.chmod(0o1777)  # like /dev/shm: everyone creates, nobody removes others' entries
    probe = as_other_user("--version")
    if probe.returncode != 0:
        pytest.skip(f"uid {OTHER_UID} cannot run this interpreter: {probe.stderr.strip()}")
    dead = dead_pid()
    shmstore.SharedMemoryStore("private")  # 0o700: invisible to another user
    shmstore.SharedMemoryStore("open", mode=0o644)  # readable: another user's namespace
    roots_leftover = shm_root / f".shmstore-array.{dead}.0123456789ab"
    roots_leftover.write_bytes(b"\0" * 8192)
    roots_leftover.chmod(0o644)
    mine = shm_root / "mine"
    proc = subprocess.run(
        [
            *AS_OTHER_USER,
            sys.executable,
            "-c",
            "import shmstore; shmstore.SharedMemoryStore('mine')",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": "/tmp"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    unreadable = shm_root / "unreadable"  # its own file, but mode 000
    unreadable.write_bytes(b"x")
    os.chown(unreadable, OTHER_UID, OTHER_UID)
    unreadable.chmod(0)
    own_leftover = shm_root / f".shmstore-new.{dead}.0123456789ab"
    (own_leftover / ".shmstore").mkdir(parents=True)
    chown_tree(own_leftover)
    reported = {"open", "unreadable", roots_leftover.name}
    for args in (("ls",), ("du",), ("gc", "--dry-run")):
        result = as_other_user(*args)
        assert result.returncode == 0, result.stderr
        for name in reported:
            assert result.stderr.count(f"/{name}: ") == 1, (args, result.stderr)
        assert "private" not in result.stderr + result.stdout
    payload = json.loads(as_other_user("ls", "--json").stdout)
    assert names(payload) == ["mine"]
    assert {p["name"] for p in payload["problems"]} == reported
    assert "cannot be read" in next(
        p["reason"] for p in payload["problems"] if p["name"] == "unreadable"
    )
    result = as_other_user("gc", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [lo["path"] for lo in payload["reclaimed"]] == [str(own_leftover)]
    assert not own_leftover.exists() and roots_leftover.exists()
    result = as_other_user("rm", "-y", "mine")
    assert result.returncode == 0 and "removed namespace mine" in result.stdout
    assert not mine.exists()
    assert (shm_root / "open").is_dir() and (shm_root / "private").is_dir()


# ------------------------------------------------------------- named arrays
needs_arrays = pytest.mark.skipif(
    not inventory.named_arrays_available(), reason="named arrays not available"
)


def create_array(name: str, shape: tuple[int, ...], dtype: str, **kwargs: Any) -> np.ndarray:
    return shmstore.create(name, shape, dtype, **kwargs)


@needs_arrays
def test_ls_named_arrays(shm_root: Path) -> None:
    create_array("frames", (100, 200), "f4", fill=1.0)
    create_array("counter", (), "i8")
    make_climate()
    payload = js("ls")
    assert [(e["name"], e["kind"]) for e in payload["entries"]] == [
        ("climate", "namespace"),
        ("counter", "array"),
        ("frames", "array"),
    ]
    frames = payload["entries"][2]
    assert frames["shape"] == [100, 200] and frames["dtype"] == "float32"
    assert frames["shm_bytes"] == 100 * 200 * 4 and frames["spilled_bytes"] == 0
    assert frames["keys"] is None and frames["chunks"] is None
    assert frames["pid"] == os.getpid() and frames["pid_alive"] is True
    assert frames["path"] == str(shm_root / "frames")
    assert names(js("ls", "fr*")) == ["frames"]
    out = ok("ls").stdout
    assert "frames" in out and "array" in out and "78.1 KiB" in out


@needs_arrays
def test_du_and_rm_named_arrays(shm_root: Path) -> None:
    create_array("a1", (1000,), "f8")
    create_array("a2", (10,), "u1")
    shmstore.SharedMemoryStore("a3")
    rows = {e["name"]: e for e in js("du")["entries"]}
    assert rows["a1"]["kind"] == "array" and rows["a1"]["shm_bytes"] >= 8000
    payload = js("rm", "-y", "a*")
    assert [(r["name"], r["kind"]) for r in payload["removed"]] == [
        ("a1", "array"),
        ("a2", "array"),
        ("a3", "namespace"),
    ]
    assert js("ls")["entries"] == []
    assert list(shm_root.iterdir()) == []


@needs_arrays
def test_info_named_array(shm_root: Path) -> None:
    create_array("frames", (4, 5), "i2", order="F")
    out = ok("info", "frames").stdout
    assert "named array frames" in out and "4 x 5 int16 (Fortran order)" in out
    assert "lock: free" in out
    payload = js("info", "frames")
    assert payload["kind"] == "array" and payload["shape"] == [4, 5]
    assert payload["dtype"] == "int16" and payload["order"] == "F"
    assert payload["nbytes"] == 40 and payload["allocated"] >= 40
    assert payload["lock"] == {"held": False, "holders": []}


HOLDER = textwrap.dedent(
    """
    import sys
    import shmstore

    a = shmstore.attach("frames")
    with a.lock:
        print("held", flush=True)
        sys.stdin.readline()
    """
)


@needs_arrays
def test_info_shows_who_holds_a_lock(shm_root: Path) -> None:
    pytest.importorskip("shmstore._lock", reason="locks not available")
    create_array("frames", (4,), "f8")
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        assert js("info", "frames")["lock"] == {"held": True, "holders": [proc.pid]}
        assert f"lock: held by pid {proc.pid}" in ok("info", "frames").stdout
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        proc.stdout.close()
    assert js("info", "frames")["lock"]["held"] is False


@needs_arrays
def test_corrupt_named_array_is_reported_not_trusted(shm_root: Path) -> None:
    create_array("good", (3,), "f4")
    bad = shm_root / "bad"
    bad.write_bytes(b"\x93SHMSTORE-ARRAY\n" + b"\0" * 100)  # magic, then garbage
    payload = js("ls")
    assert names(payload) == ["good"]
    assert [p["name"] for p in payload["problems"]] == ["bad"]
    assert "bad" in ok("ls").stderr and "not a shmstore entry" in ok("ls").stderr
    assert "not a shmstore entry" in fails("rm", "-y", "bad")
    assert "not a shmstore entry" in fails("info", "bad")
    assert bad.exists()
    assert "bad" not in ok("info", "good").stderr  # only ls and du report others


# ----------------------------------------------------------------------- du
def test_du(shm_root: Path) -> None:
    make_climate()
    shmstore.SharedMemoryStore("empty")
    out = ok("du").stdout
    assert "climate" in out and "total" in out and "free" in out
    payload = js("du")
    assert [e["name"] for e in payload["entries"]] == ["climate", "empty"]
    climate = payload["entries"][0]
    assert climate["shm_bytes"] >= 18 * 4096  # every chunk takes at least a page
    assert climate["spilled_bytes"] == 0
    assert climate["total_bytes"] == climate["shm_bytes"]
    assert payload["total"]["shm_bytes"] == sum(e["shm_bytes"] for e in payload["entries"])
    fs = payload["filesystem"]
    st = os.statvfs(shm_root)
    assert fs["size"] == st.f_blocks * st.f_frsize
    assert 0 <= fs["free"] <= fs["size"]
    if str(shm_root).startswith("/dev/shm/"):
        assert fs["fstype"] == "tmpfs"
        assert payload["warnings"] == []


def tiering_available() -> bool:
    import inspect

    return "spill" in inspect.signature(shmstore.SharedMemoryStore).parameters


@pytest.mark.skipif(not tiering_available(), reason="tiering (capacity/spill) not available")
def test_ls_du_info_of_a_tiered_namespace(shm_root: Path, tmp_path: Path) -> None:
    spill = tmp_path / "spill.zarr"
    store = shmstore.SharedMemoryStore("tiered", capacity="64 KiB", spill=str(spill))
    z = zarr.create_array(
        store, name="x", shape=(10, 4096), chunks=(1, 4096), dtype="f4", compressors=None
    )
    z[:] = 1.0  # ten 16 KiB chunks: a few fit under 64 KiB, the rest spill
    (entry,) = js("ls")["entries"]
    assert entry["capacity"] == 64 << 10
    assert entry["spill"] == str(spill)
    assert entry["chunks"] == 10 and entry["keys"] == 12  # + zarr.json of root and x
    assert 0 < entry["spilled_bytes"] < 10 * 16384
    assert entry["shm_bytes"] <= (64 << 10) + 4096  # chunks under capacity + metadata
    assert entry["spilled_bytes"] + entry["shm_bytes"] >= 10 * 16384
    (row,) = js("du")["entries"]
    assert row["spilled_bytes"] >= entry["spilled_bytes"]
    assert row["total_bytes"] == row["shm_bytes"] + row["spilled_bytes"]
    assert row["spill"] == str(spill)
    out = ok("du").stdout
    assert "SPILL LOCATION" in out and str(spill) in out
    out = ok("info", "tiered").stdout
    assert f"spilled to {spill}" in out and "capacity 64.0 KiB" in out
    nodes = {n["path"]: n for n in js("info", "tiered")["nodes"]}
    assert nodes["x"]["shape"] == [10, 4096]
    result = ok("rm", "-y", "tiered")
    assert f"its spill tier {spill} was kept" in result.stdout
    assert (spill / "x" / "zarr.json").exists()
    assert js("ls")["entries"] == []


def test_du_names_and_globs(shm_root: Path) -> None:
    for name in ("a1", "a2", "b"):
        shmstore.SharedMemoryStore(name)
    assert [e["name"] for e in js("du", "a*", "b")["entries"]] == ["a1", "a2", "b"]
    assert [e["name"] for e in js("du", "b")["entries"]] == ["b"]
    assert "'zz*' matches no namespace" in fails("du", "zz*")
    assert "no namespace or named array 'nope'" in fails("du", "nope")


def test_du_warns_on_a_file_backed_root(shm_root: Path, tmp_path: Path) -> None:
    if inventory.filesystem_usage(str(tmp_path)).fstype in (None, "tmpfs"):
        pytest.skip("the temporary directory is itself a tmpfs here")
    payload = js("du", "--root", str(tmp_path))
    assert any("not tmpfs" in w for w in payload["warnings"])
    stderr = ok("du", "--root", str(tmp_path)).stderr
    assert stderr.count("file-backed") == 1, stderr


@pytest.fixture
def docker_like_shm(tmp_path: Path) -> Path:
    """A 64 MiB tmpfs, the size Docker gives a container's /dev/shm."""
    mnt = tmp_path / "shm"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=1777", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        # Lazily: this process keeps its descriptor of the root open (segment layer).
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)


def test_du_warns_on_dockers_64mib_default(docker_like_shm: Path) -> None:
    shmstore.SharedMemoryStore("x", root=docker_like_shm)
    result = ok("du", "--root", str(docker_like_shm))
    assert "--shm-size" in result.stderr and "Docker" in result.stderr
    payload = js("du", "--root", str(docker_like_shm))
    assert payload["filesystem"]["size"] == 64 << 20
    assert payload["filesystem"]["fstype"] == "tmpfs"
    assert any("--shm-size" in w for w in payload["warnings"])


# --------------------------------------------------------------------- info
def test_info_namespace_tree(shm_root: Path) -> None:
    make_climate()
    out = ok("info", "climate").stdout
    assert "namespace climate" in out
    assert "t  array 40 x 40 float32, chunks 10 x 10" in out
    assert "u  array 100 int16, chunks 10, shards 50, codecs sharding_indexed(" in out
    assert "sub  group" in out and "1 attribute" in out


def test_info_json(shm_root: Path) -> None:
    make_climate()
    payload = js("info", "climate")
    assert payload["name"] == "climate" and payload["kind"] == "namespace"
    nodes = {n["path"]: n for n in payload["nodes"]}
    assert set(nodes) == {"", "sub", "sub/u", "t"}
    assert nodes[""]["node_type"] == "group" and nodes[""]["attributes"] == {"title": "test"}
    t = nodes["t"]
    assert t["node_type"] == "array" and t["zarr_format"] == 3
    assert t["shape"] == [40, 40] and t["chunks"] == [10, 10] and t["dtype"] == "float32"
    assert t["shards"] is None and t["nchunks"] == 16
    assert [c["name"] for c in t["codecs"]] == ["bytes", "zstd"]
    u = nodes["sub/u"]
    assert u["shards"] == [50] and u["chunks"] == [10]
    assert u["codecs"][0]["name"] == "sharding_indexed"


def test_info_zarr_v2(shm_root: Path) -> None:
    store = shmstore.SharedMemoryStore("v2")
    old = zarr.create_array(
        store, name="old", shape=(8,), chunks=(4,), dtype="u1", zarr_format=2, fill_value=None
    )
    old[:] = np.arange(8, dtype="u1")
    nodes = {n["path"]: n for n in js("info", "v2")["nodes"]}
    assert nodes["old"]["zarr_format"] == 2
    assert nodes["old"]["shape"] == [8] and nodes["old"]["dtype"] == "uint8"
    assert nodes[""]["node_type"] == "group"
    assert "old  array 8 uint8, chunks 4" in ok("info", "v2").stdout


def test_info_reports_a_corrupt_document(shm_root: Path) -> None:
    make_climate()
    (shm_root / "climate" / "t" / "zarr.json").write_text("{broken")
    nodes = {n["path"]: n for n in js("info", "climate")["nodes"]}
    assert nodes["t"]["node_type"] == "invalid" and nodes["t"]["error"]
    assert nodes["sub/u"]["node_type"] == "array"
    assert "invalid" in ok("info", "climate").stdout


NS_HOLDER = textwrap.dedent(
    """
    import sys
    import shmstore

    with shmstore.Lock("climate"):
        print("held", flush=True)
        sys.stdin.readline()
    """
)


def test_info_namespace_lock(shm_root: Path) -> None:
    pytest.importorskip("shmstore._lock", reason="locks not available")
    make_climate()
    assert js("info", "climate")["lock"] == {"held": False, "holders": []}
    assert "lock: free" in ok("info", "climate").stdout
    proc = subprocess.Popen(
        [sys.executable, "-c", NS_HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        assert js("info", "climate")["lock"] == {"held": True, "holders": [proc.pid]}
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        proc.stdout.close()


def test_info_empty_and_missing(shm_root: Path) -> None:
    shmstore.SharedMemoryStore("blank")
    assert "no zarr groups or arrays" in ok("info", "blank").stdout
    assert js("info", "blank")["nodes"] == []
    assert "no namespace or named array 'nope'" in fails("info", "nope")


def test_info_is_read_only(shm_root: Path) -> None:
    make_climate()
    before = sorted(p.relative_to(shm_root) for p in shm_root.rglob("*"))
    ok("info", "climate")
    assert sorted(p.relative_to(shm_root) for p in shm_root.rglob("*")) == before


# ----------------------------------------------------------------------- rm
def test_rm_yes(shm_root: Path) -> None:
    make_climate()
    shmstore.SharedMemoryStore("keep")
    result = ok("rm", "-y", "climate")
    assert "removed namespace climate" in result.stdout
    assert names(js("ls")) == ["keep"]
    assert not (shm_root / "climate").exists()


def test_rm_globs_and_json(shm_root: Path) -> None:
    for name in ("job-1", "job-2", "job-3", "keep"):
        shmstore.SharedMemoryStore(name)
    payload = js("rm", "--yes", "job-*", "job-1")
    assert [r["name"] for r in payload["removed"]] == ["job-1", "job-2", "job-3"]
    assert names(js("ls")) == ["keep"]


def test_rm_refuses_what_matches_nothing(shm_root: Path) -> None:
    shmstore.SharedMemoryStore("a")
    msg = fails("rm", "-y", "a", "zz*")
    assert "'zz*' matches no namespace or named array" in msg
    assert "no namespace or named array 'b'" in fails("rm", "-y", "a", "b")
    assert names(js("ls")) == ["a"]  # nothing was deleted


def test_names_with_brackets_are_printed_and_matched_as_they_are(shm_root: Path) -> None:
    store = shmstore.SharedMemoryStore("run[1]")
    zarr.create_array(store, name="x[0]", shape=(2,), dtype="i1")
    shmstore.SharedMemoryStore("run1")
    assert "run[1]" in ok("ls").stdout
    assert "x[0]" in ok("info", "run[1]").stdout
    assert "namespace run[1]" in ok("info", "run[1]").stdout
    assert names(js("ls", "run[[]1]")) == ["run[1]"]
    assert [r["name"] for r in js("rm", "-y", "run[1]")["removed"]] == ["run[1]"]
    assert names(js("ls")) == ["run1"]


def test_rm_without_a_tty_needs_yes(shm_root: Path) -> None:
    shmstore.SharedMemoryStore("a")
    msg = fails("rm", "a")
    assert "-y" in msg and "not a terminal" in msg
    assert names(js("ls")) == ["a"]


def test_rm_refuses_foreign_entries(shm_root: Path) -> None:
    (shm_root / "plain-file").write_bytes(b"not ours")
    msg = fails("rm", "-y", "plain-file")
    assert "not a shmstore entry" in msg
    assert (shm_root / "plain-file").exists()


def _run_in_pty(args: list[str], answer: bytes | None) -> tuple[int, str]:
    """Run the CLI on a terminal; answer its prompt if asked. Return (rc, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from shmstore._cli import main; main()", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    out = b""
    answered = False
    # selectors picks poll/epoll: select() fails once descriptors pass 1024.
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ)
    try:
        while True:
            if not sel.select(60):
                raise AssertionError(f"no output from the CLI: {out!r}")
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            out += data
            if answer is not None and not answered and b"Delete?" in out:
                os.write(master, answer)
                answered = True
    finally:
        sel.close()
        os.close(master)
    return proc.wait(timeout=60), out.decode(errors="replace")


def test_rm_confirms_on_a_terminal(shm_root: Path) -> None:
    shmstore.SharedMemoryStore("a")
    shmstore.SharedMemoryStore("b")
    rc, out = _run_in_pty(["rm", "a"], b"n\n")
    assert rc == 1 and "Aborted" in out
    assert names(js("ls")) == ["a", "b"]
    rc, out = _run_in_pty(["rm", "a"], b"y\n")
    assert rc == 0, out
    assert "namespace a" in out and "removed namespace a" in out
    assert names(js("ls")) == ["b"]


def age(root: Path, name: str, seconds: float) -> None:
    """Make the entry *name* look untouched (and created) *seconds* ago."""
    then = time.time() - seconds
    top = root / name
    if top.is_dir():
        meta = top / ".shmstore" / "state" / "meta.json"
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "created": then}))
    for path in [top, *top.rglob("*")] if top.is_dir() else [top]:
        os.utime(path, (then, then), follow_symlinks=False)


def test_rm_idle(shm_root: Path) -> None:
    make_climate()
    for name in ("old-1", "old-2", "fresh"):
        zarr.create_array(shmstore.SharedMemoryStore(name), name="x", shape=(4,), dtype="i1")
    for name in ("old-1", "old-2", "climate"):
        age(shm_root, name, 3 * 3600)
    if inventory.named_arrays_available():
        create_array("old-array", (4,), "f8")
        age(shm_root, "old-array", 3 * 3600)  # arrays are never chosen by --idle
    msg = fails("rm", "--idle", "2h")
    assert "not a terminal" in msg and "'old-1'" in msg and "'fresh'" not in msg
    payload = js("rm", "--idle", "2h", "-y", "old-*", "fresh")  # NAMES narrow it down
    assert [r["name"] for r in payload["removed"]] == ["old-1", "old-2"]
    assert "climate" in names(js("ls")) and "fresh" in names(js("ls"))
    (line,) = ok("rm", "--idle", "150m", "-y").stdout.splitlines()
    assert line.startswith("removed namespace climate ")
    assert sorted(names(js("ls"))) == sorted(
        ["fresh"] + (["old-array"] if inventory.named_arrays_available() else [])
    )
    msg = fails("rm", "--idle", "2h", "-y")
    assert "no namespace in" in msg and "idle for more than 2h" in msg
    assert "the longest idle, 'fresh', was modified" in msg
    result = cli("rm", "--idle", "2h", "-y", "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["kind"] == "not-found"
    assert "fresh" in names(js("ls"))


def test_rm_idle_durations(shm_root: Path) -> None:
    shmstore.SharedMemoryStore("a")
    for bad, why in (("2", "needs a unit"), ("lots", "is not a duration"), ("0s", "longer than 0")):
        result = cli("rm", "--idle", bad, "-y")
        assert result.exit_code == 2 and "--idle" in result.stderr and why in result.stderr
    for good in ("90s", "30m", "1.5h", "7d", "1 week"):
        assert "idle for more than" in fails("rm", "--idle", good, "-y")
    result = cli("rm")
    assert result.exit_code == 2 and "--idle" in result.stderr
    assert names(js("ls")) == ["a"]


def test_rm_idle_confirms_on_a_terminal(shm_root: Path) -> None:
    shmstore.SharedMemoryStore("stale")
    shmstore.SharedMemoryStore("busy")
    age(shm_root, "stale", 7200)
    rc, out = _run_in_pty(["rm", "--idle", "1h"], b"y\n")
    assert rc == 0, out
    assert "namespace stale (0 B, idle 2h" in out and "busy" not in out
    assert "removed namespace stale" in out
    assert names(js("ls")) == ["busy"]


# ----------------------------------------------------------------------- gc
WRITER = textwrap.dedent(
    """
    import sys
    import shmstore
    from shmstore._namespace import Namespace

    install = Namespace._install

    def paused(self, tmp, key, exclusive, pool):
        # The temporary file is written; hold before the rename that publishes it.
        print(tmp, flush=True)
        sys.stdin.readline()
        return install(self, tmp, key, exclusive, pool)

    Namespace._install = paused
    store = shmstore.SharedMemoryStore("ns")
    store._keyspace().ns.write("c/0", b"x" * 100_000)
    print("done", flush=True)
    """
)


def start_writer() -> tuple[subprocess.Popen[str], Path]:
    shmstore.SharedMemoryStore("ns")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    tmp_name = proc.stdout.readline().strip()
    assert tmp_name.startswith(f"{proc.pid}."), tmp_name
    tmp = Path(os.environ["SHMSTORE_ROOT"]) / "ns" / ".shmstore" / "state" / "tmp" / tmp_name
    assert tmp.stat().st_size == 100_000
    return proc, tmp


def test_gc_spares_a_live_writer(shm_root: Path) -> None:
    proc, tmp = start_writer()
    try:
        assert js("gc", "--dry-run")["reclaimed"] == []
        payload = js("gc")
        assert payload["reclaimed"] == [] and payload["reclaimed_bytes"] == 0
        assert "nothing to reclaim" in ok("gc").stdout
        assert tmp.exists()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    assert not tmp.exists()
    store = shmstore.SharedMemoryStore("ns", read_only=True)
    assert bytes(store._keyspace().ns.read("c/0")) == b"x" * 100_000


def test_gc_reclaims_a_killed_writer(shm_root: Path) -> None:
    proc, tmp = start_writer()
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    proc.stdin.close()
    proc.stdout.close()
    (dry,) = js("gc", "--dry-run")["reclaimed"]
    assert tmp.exists()
    assert dry == {
        "kind": "partial-write",
        "path": str(tmp),
        "pid": proc.pid,
        "nbytes": dry["nbytes"],
        "namespace": "ns",
    }
    assert dry["nbytes"] >= 100_000
    payload = js("gc")
    assert payload["reclaimed"] == [dry] and payload["dry_run"] is False
    assert not tmp.exists()
    assert names(js("ls")) == ["ns"]  # the namespace itself is never touched
    assert js("gc")["reclaimed"] == []


def test_gc_table(shm_root: Path) -> None:
    proc, tmp = start_writer()
    proc.kill()
    proc.wait(timeout=60)
    proc.stdin.close()
    proc.stdout.close()
    out = ok("gc", "--dry-run").stdout
    assert "partial-write" in out and "would reclaim 1 entry" in out
    assert tmp.exists()
    assert "reclaimed 1 entry" in ok("gc").stdout
    assert not tmp.exists()


SCOPED = textwrap.dedent(
    """
    import sys
    import shmstore

    with shmstore.scoped("scratch") as store:
        store._keyspace().ns.write("k", b"y" * 5000)
        print("ready", flush=True)
        sys.stdin.readline()
    """
)


def test_gc_scoped_namespace_of_live_and_killed_owner(shm_root: Path) -> None:
    shmstore.SharedMemoryStore("durable")
    run_python("import shmstore; shmstore.SharedMemoryStore('durable-of-dead')")
    proc = subprocess.Popen(
        [sys.executable, "-c", SCOPED], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert js("gc")["reclaimed"] == []
        assert (shm_root / "scratch").is_dir()
    finally:
        proc.kill()
        proc.wait(timeout=60)
        proc.stdin.close()
        proc.stdout.close()
    (lo,) = js("gc")["reclaimed"]
    assert lo["kind"] == "scoped-namespace" and lo["pid"] == proc.pid
    assert lo["path"] == str(shm_root / "scratch")
    assert not (shm_root / "scratch").exists()
    # Unscoped namespaces live until deleted, whatever became of their creator.
    assert names(js("ls")) == ["durable", "durable-of-dead"]


FILLER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import zarr
    import shmstore

    source = zarr.storage.LocalStore(sys.argv[1], read_only=True)
    cache = shmstore.CachingStore(source, namespace="cache")
    fd = cache._handle().ns.lock_key("x/c/0")  # the fill lock a miss takes before fetching
    print("filling", flush=True)
    sys.stdin.readline()
    """
)


def test_gc_orphan_fill_locks_of_a_cache(shm_root: Path, tmp_path: Path) -> None:
    if not hasattr(shmstore, "CachingStore"):
        pytest.skip("read-through cache not available")
    source = tmp_path / "source.zarr"
    zarr.create_array(str(source), name="x", shape=(4,), chunks=(2,), dtype="i4")[:] = 1
    proc = subprocess.Popen(
        [sys.executable, "-c", FILLER, str(source)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "filling"
        fill = shm_root / "cache" / ".shmstore" / "state" / "fill"
        (lock_file,) = fill.iterdir()
        assert js("gc", "--dry-run")["reclaimed"] == []  # held: a fill in progress
        assert js("gc")["reclaimed"] == []
        assert lock_file.exists()
    finally:
        proc.kill()
        proc.wait(timeout=60)
        proc.stdin.close()
        proc.stdout.close()
    (lo,) = js("gc")["reclaimed"]
    assert lo == {
        "kind": "orphan-lock",
        "path": str(lock_file),
        "pid": None,
        "nbytes": lo["nbytes"],
        "namespace": "cache",
    }
    assert not lock_file.exists()
    # The cache still works: a new reader takes a fresh lock and fills.
    cache = shmstore.CachingStore(
        zarr.storage.LocalStore(str(source), read_only=True), namespace="cache"
    )
    assert zarr.open_array(cache, path="x", mode="r")[:].tolist() == [1, 1, 1, 1]
    assert js("gc")["reclaimed"] == []


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_gc_transient_root_entries(shm_root: Path) -> None:
    dead = dead_pid()
    new_dead = shm_root / f".shmstore-new.{dead}.0123456789ab"
    trash_dead = shm_root / f".shmstore-trash.{dead}.0123456789ab"
    bench_dead = shm_root / f".shmstore-bench.{dead}.k2j4_x9q"  # a killed `shmstore bench`
    array_dead = shm_root / f".shmstore-array.{dead}.0123456789ab"  # a create cut short
    new_live = shm_root / f".shmstore-new.{os.getpid()}.0123456789ab"
    foreign = shm_root / ".shmstore-something-else"
    for d in (new_dead, trash_dead, bench_dead, new_live, foreign):
        (d / ".shmstore").mkdir(parents=True)
    array_dead.write_bytes(b"\0" * 8192)
    (trash_dead / "chunk").write_bytes(b"z" * 10_000)
    payload = js("gc")
    assert sorted(lo["path"] for lo in payload["reclaimed"]) == sorted(
        [str(new_dead), str(trash_dead), str(bench_dead), str(array_dead)]
    )
    assert {lo["kind"] for lo in payload["reclaimed"]} == {"transient"}
    for d in (new_dead, trash_dead, bench_dead, array_dead):
        assert not d.exists()
    assert new_live.exists() and foreign.exists()


def test_gc_partial_meta_and_trash_directories(shm_root: Path) -> None:
    shmstore.SharedMemoryStore("ns")
    dead = dead_pid()
    book = shm_root / "ns" / ".shmstore" / "state"
    (book / f"meta.json.{dead}.partial").write_text("{}")
    (book / f"meta.json.{os.getpid()}.partial").write_text("{}")
    trash = book / "tmp" / f"{dead}.7f.3.partial"  # a delete_prefix cut short
    (trash / "c" / "0").mkdir(parents=True)
    (trash / "c" / "0" / "1").write_bytes(b"q" * 3000)
    (book / "tmp" / "not-a-pid.partial").write_bytes(b"?")
    payload = js("gc")
    kinds = sorted((lo["kind"], Path(lo["path"]).name) for lo in payload["reclaimed"])
    assert kinds == [("partial-meta", f"meta.json.{dead}.partial"), ("partial-write", trash.name)]
    assert not trash.exists() and not (book / f"meta.json.{dead}.partial").exists()
    assert (book / f"meta.json.{os.getpid()}.partial").exists()
    assert (book / "tmp" / "not-a-pid.partial").exists()
    assert (book / "meta.json").exists()


def test_gc_leaves_other_hosts_and_corrupt_namespaces_alone(shm_root: Path) -> None:
    dead = dead_pid()
    with shmstore.scoped("remote") as store:
        meta_path = Path(store.path) / ".shmstore" / "state" / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta.update(pid=dead, host="some-other-host")
        meta_path.write_text(json.dumps(meta))
        (Path(store.path) / ".shmstore" / "state" / "tmp" / f"{dead}.1.1.partial").write_bytes(b"r")
        bad = shm_root / "corrupt" / ".shmstore" / "state" / "tmp"
        bad.mkdir(parents=True)
        (bad / f"{dead}.1.1.partial").write_bytes(b"c")
        assert js("gc")["reclaimed"] == []
        assert (bad / f"{dead}.1.1.partial").exists()
        assert js("ls", "remote")["entries"][0]["pid_alive"] is None


KILLED_CREATE = textwrap.dedent(
    """
    import os
    import sys
    import shmstore

    reserve = os.posix_fallocate

    def paused(fd, offset, length):
        # The data is reserved under the transient name: hold before it is published.
        reserve(fd, offset, length)
        print("reserved", flush=True)
        sys.stdin.readline()

    os.posix_fallocate = paused
    shmstore.create("big", (int(sys.argv[1]),), "u1")
    """
)


def kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    proc.stdin.close()
    proc.stdout.close()


@needs_arrays
def test_a_killed_create_is_a_leftover_in_ls_and_du(shm_root: Path) -> None:
    size = 8 << 20
    shmstore.SharedMemoryStore("keep")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CREATE, str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "reserved"
    finally:
        kill(proc)
    (tmp,) = shm_root.glob(f".shmstore-array.{proc.pid}.*")
    payload = js("ls")
    assert names(payload) == ["keep"]  # never published: not an array
    (lo,) = payload["leftovers"]
    assert lo["kind"] == "transient" and lo["path"] == str(tmp) and lo["pid"] == proc.pid
    assert lo["nbytes"] >= size and payload["reclaimable_bytes"] == lo["nbytes"]
    out = ok("ls").stdout
    assert tmp.name in out and "leftover (transient)" in out and f"{proc.pid} (dead)" in out
    assert "`shmstore gc` would free 8.0 MiB: 1 leftover of dead processes" in out
    payload = js("du")
    assert payload["leftovers"] == [lo]
    total = payload["total"]
    assert total["reclaimable_bytes"] == lo["nbytes"]
    keep = payload["entries"][0]["shm_bytes"]
    assert total["shm_bytes"] == keep + lo["nbytes"]  # the root holds it: counted
    out = ok("du").stdout
    assert tmp.name in out and "leftover" in out
    assert "`shmstore gc` would free 8.0 MiB" in out
    assert [d["path"] for d in js("gc")["reclaimed"]] == [str(tmp)]
    assert not tmp.exists()
    payload = js("du")
    assert payload["leftovers"] == [] and payload["total"]["reclaimable_bytes"] == 0
    assert "would free" not in ok("du").stdout and "leftover" not in ok("ls").stdout


def test_ls_and_du_show_what_gc_would_free_inside_namespaces(shm_root: Path) -> None:
    proc, tmp = start_writer()  # a write in flight of "ns", then killed
    kill(proc)
    (lo,) = js("ls")["leftovers"]
    assert lo["kind"] == "partial-write" and lo["namespace"] == "ns" and lo["path"] == str(tmp)
    assert "ns/.shmstore/state/tmp/" in ok("ls").stdout
    payload = js("du")
    assert payload["total"]["reclaimable_bytes"] == lo["nbytes"] >= 100_000
    # Inside the namespace's tree: counted once, in its row.
    assert payload["total"]["shm_bytes"] == payload["entries"][0]["shm_bytes"]
    assert js("ls", "other*")["leftovers"] == []  # a pattern shows its entries' leftovers only
    assert js("ls", "n*")["leftovers"] == [lo]


def test_a_dead_scoped_namespace_is_one_leftover(shm_root: Path) -> None:
    dead = dead_pid()
    store = shmstore.SharedMemoryStore("scratch")
    book = Path(store.path) / ".shmstore" / "state"
    meta = book / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "scoped": True, "pid": dead}))
    (book / "tmp" / f"{dead}.1.1.partial").write_bytes(b"q" * 3000)
    (entry,) = js("ls")["entries"]
    assert entry["scoped"] is True and entry["leftover"] is True
    assert "namespace (scoped, leftover)" in ok("ls").stdout
    (lo,) = js("du")["leftovers"]  # destroying it takes its write in flight too
    assert lo["kind"] == "scoped-namespace" and lo["path"] == str(shm_root / "scratch")
    assert js("gc")["reclaimed"] == [lo]
    assert not (shm_root / "scratch").exists()


def plant_scoped_array(root: Path, name: str, pid: int) -> Path:
    """A named array as ``shmstore.scoped_array`` makes it, of the process *pid*.

    The header says ``"scoped": true``, which is how a scoped array is told
    from one made by ``create`` (both record their pid and a token).
    """
    from shmstore import _arrayfile as af

    meta = {**af.array_meta([16], "<f8", "C", 128), "scoped": True, "pid": pid}
    os.close(af.create_array_file(str(root), name, meta, 128))
    return root / name


@needs_arrays
def test_a_dead_scoped_array_is_a_leftover(shm_root: Path) -> None:
    run_python("import shmstore; shmstore.create('durable', 4, 'f8')")  # a dead creator: normal
    array = plant_scoped_array(shm_root, "scratch", dead_pid())
    live = plant_scoped_array(shm_root, "in-use", os.getpid())
    entries = {e["name"]: e for e in js("ls")["entries"]}
    assert entries["scratch"]["leftover"] is True and entries["scratch"]["scoped"] is True
    assert entries["durable"]["leftover"] is False and entries["in-use"]["leftover"] is False
    out = ok("ls").stdout
    assert out.count("array (scoped, leftover)") == 1
    (dry,) = js("gc", "--dry-run")["reclaimed"]
    assert dry["kind"] == "scoped-array" and dry["path"] == str(array)
    assert dry["nbytes"] >= 128 and array.exists()
    assert js("gc")["reclaimed"] == [dry]
    assert not array.exists() and live.exists()
    assert names(js("ls")) == ["durable", "in-use"]


@needs_arrays
def test_gc_never_deletes_a_scoped_array_made_again_since(shm_root: Path) -> None:
    from shmstore import _arrayfile as af

    plant_scoped_array(shm_root, "scratch", dead_pid())
    (lo,) = inventory.scan_root(str(shm_root)).leftovers
    af.unlink_array_file(str(shm_root), "scratch")
    again = plant_scoped_array(shm_root, "scratch", lo.pid)  # same name and pid, new token
    assert inventory.reclaim(lo) is False
    assert again.exists()


SCOPED_ARRAY = textwrap.dedent(
    """
    import sys
    import shmstore

    with shmstore.scoped_array("scratch", (1000,), "f8") as a:
        a[:] = 1.0
        print("ready", flush=True)
        sys.stdin.readline()
    """
)


@needs_arrays
def test_a_killed_scoped_array_is_reclaimed_by_gc(shm_root: Path) -> None:
    from shmstore import _arrayfile as af

    proc = subprocess.Popen(
        [sys.executable, "-c", SCOPED_ARRAY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        kill(proc)
    fd, st = af.open_array_file(str(shm_root), "scratch", read_only=True)
    try:
        header, _ = af.read_array_header(fd, str(shm_root / "scratch"), st.st_size)
    finally:
        os.close(fd)
    if header.get("scoped") is not True:
        pytest.skip(
            'shmstore.scoped_array does not record "scoped": true in the array header, '
            "so its array cannot be told from one made by create()"
        )
    (entry,) = js("ls")["entries"]
    assert entry["leftover"] is True and "array (scoped, leftover)" in ok("ls").stdout
    (dry,) = js("gc", "--dry-run")["reclaimed"]
    assert dry["kind"] == "scoped-array" and dry["pid"] == proc.pid
    assert js("gc")["reclaimed"] == [dry]
    assert js("ls")["entries"] == []


def test_creator_alive() -> None:
    me = os.getpid()
    assert inventory.creator_alive(me) is True
    assert inventory.creator_alive(me, since=time.time()) is True
    # A file last changed before this process started was not made by it: the pid
    # was reused.
    assert inventory.creator_alive(me, since=0.0) is False
    assert inventory.creator_alive(dead_pid()) is False
    assert inventory.creator_alive(None) is None
    assert inventory.creator_alive(me, host="some-other-host") is None
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Not reaped yet: a zombie writes nothing, so it counts as dead.
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)
        assert inventory.creator_alive(zombie.pid) is False
    finally:
        zombie.wait()


# ---------------------------------------------------------------- save/load
needs_transfer = pytest.mark.skipif(
    not hasattr(shmstore, "save"), reason="shmstore.save/load not available"
)


@needs_transfer
def test_save_and_load_round_trip(shm_root: Path, tmp_path: Path) -> None:
    make_climate()
    dest = tmp_path / "climate.zarr"
    out = ok("save", "climate", str(dest)).stdout
    assert out.startswith("copied 22 keys") and "verified (size)" in out
    assert zarr.open_array(str(dest), path="t", mode="r")[:].tolist() == [[1.5] * 40] * 40
    payload = js("load", str(dest), "shm://copy", "--verify", "content", "--codecs", "keep")
    assert payload["command"] == "load" and payload["keys"] == 22
    assert payload["reencoded"] == []
    assert payload["destination"] == "shm://copy" and payload["verified"] == "content"
    copy = shmstore.SharedMemoryStore("copy", read_only=True)
    assert zarr.open_array(copy, path="sub/u", mode="r")[:].tolist() == [3] * 100
    assert js("info", "copy")["nodes"] == js("info", "climate")["nodes"]
    # By default load writes raw chunks; save --codecs zstd compresses on the way out.
    raw = js("load", str(dest), "shm://raw")
    assert raw["keys"] == 22 and "t" in raw["reencoded"]
    t = zarr.open_array(shmstore.SharedMemoryStore("raw", read_only=True), path="t", mode="r")
    assert t.compressors == () and t.filters == () and t[:].tolist() == [[1.5] * 40] * 40
    packed = js("save", "raw", str(tmp_path / "packed.zarr"), "--codecs", "zstd")
    assert "t" in packed["reencoded"]
    assert [
        type(c).__name__
        for c in zarr.open_array(str(tmp_path / "packed.zarr"), path="t").compressors
    ] == ["ZstdCodec"]


@needs_transfer
def test_save_refuses_a_full_destination_unless_overwrite(shm_root: Path, tmp_path: Path) -> None:
    make_climate()
    dest = tmp_path / "climate.zarr"
    ok("save", "climate", str(dest), "-q")
    msg = fails("save", "climate", str(dest))
    assert "--overwrite" in msg and "overwrite=True" not in msg
    payload = js("save", "shm://climate", str(dest), "--overwrite", "--verify", "none")
    assert payload["verified"] is None and payload["keys"] == 22
    # namespace to namespace, both under --root
    payload = js("save", "climate", "shm://twin", "--root", str(shm_root))
    assert payload["destination"] == "shm://twin"
    assert "twin" in names(js("ls"))


@needs_transfer
def test_load_into_a_tiered_namespace(shm_root: Path, tmp_path: Path) -> None:
    if not tiering_available():
        pytest.skip("tiering not available")
    src = tmp_path / "src.zarr"
    z = zarr.create_array(
        str(src), name="x", shape=(10, 4096), chunks=(1, 4096), dtype="f4", compressors=None
    )
    z[:] = 2.0
    spill = tmp_path / "spill.zarr"
    payload = js("load", str(src), "big", "--capacity", "64KiB", "--spill", str(spill))
    assert payload["keys"] == 12
    (entry,) = js("ls")["entries"]
    assert entry["capacity"] == 64 << 10 and entry["spill"] == str(spill)
    assert entry["spilled_bytes"] > 0
    store = shmstore.SharedMemoryStore("big", read_only=True)
    assert (zarr.open_array(store, path="x", mode="r")[:] == 2.0).all()


@needs_transfer
def test_transfer_errors(shm_root: Path, tmp_path: Path) -> None:
    msg = fails("save", "nope", str(tmp_path / "x.zarr"))
    assert "no namespace 'nope'" in msg
    fails("load", str(tmp_path / "missing.zarr"), "fresh")
    assert js("ls")["entries"] == []  # a failed load leaves no empty namespace
    assert "whole namespace" in fails("save", "shm://a/b", str(tmp_path / "y.zarr"))
    result = cli("load", str(tmp_path), "z", "--capacity", "lots")
    assert result.exit_code == 2 and "--capacity" in result.stderr


@needs_transfer
def test_progress_only_on_a_terminal(shm_root: Path, tmp_path: Path) -> None:
    make_climate()
    result = ok("save", "climate", str(tmp_path / "a.zarr"))  # CliRunner: not a TTY
    assert result.stderr == ""
    rc, out = _run_in_pty(["save", "climate", str(tmp_path / "b.zarr")], None)
    assert rc == 0 and "copy" in out and "verify" in out and "copied 22 keys" in out
    rc, out = _run_in_pty(["save", "-q", "climate", str(tmp_path / "c.zarr")], None)
    assert rc == 0 and "verify" not in out and "copied 22 keys" in out


# -------------------------------------------------------------------- bench
def test_bench(shm_root: Path) -> None:
    from shmstore._bench import STORES

    payload = js("bench", "--size", "256KiB", "--chunk", "64KiB", "--rounds", "2", "-q")
    assert payload["nbytes"] == 256 << 10 and payload["chunk_bytes"] == 64 << 10
    assert [r["store"] for r in payload["results"]] == list(STORES)
    for r in payload["results"]:
        assert r["read_gibs"] > 0 and r["write_gibs"] > 0
        assert r["read_spread"][0] <= r["read_spread"][1] <= r["read_spread"][2]
    assert set(payload["ratios"]) == {
        f"{op} vs {name}" for name in STORES[1:] for op in ("write", "read")
    }
    out = ok("bench", "--size", "128KiB", "--chunk", "64KiB", "--rounds", "1").stdout
    assert "local-disk" in out and "GiB/s" in out
    assert list(shm_root.iterdir()) == []  # everything it made is gone
    result = cli("bench", "--size", "lots")
    assert result.exit_code == 2 and "--size" in result.stderr


# -------------------------------------------------------------------- misc
def test_help_and_version() -> None:
    out = ok("--help").stdout
    for command in ("ls", "du", "info", "rm", "gc", "save", "load", "bench"):
        assert command in out
        sub = ok(command, "--help").stdout
        assert "--root" in sub
        if command not in ("save", "load"):
            assert "--json" in sub
    assert shmstore.__version__ in ok("--version").stdout


def test_invalid_name_is_a_one_line_error(shm_root: Path) -> None:
    (shm_root / "sym").symlink_to("/etc")
    msg = fails("info", "sym")
    assert "sym" in msg


def test_installed_entry_point(shm_root: Path) -> None:
    script = Path(sys.executable).parent / "shmstore"
    if not script.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    make_climate()
    env = {**os.environ, "SHMSTORE_ROOT": str(shm_root)}
    proc = subprocess.run(
        [str(script), "ls", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert names(json.loads(proc.stdout)) == ["climate"]
    proc = subprocess.run(
        [str(script), "rm", "climate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "-y" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [str(script), "--root", str(shm_root), "info", "nope", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr == ""
    assert json.loads(proc.stdout)["kind"] == "not-found"
    proc = subprocess.run(
        [str(script), "rm", "-y", "climate"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0 and "removed namespace climate" in proc.stdout


def test_tables_fit_narrow_terminals() -> None:
    from rich.console import Console

    from shmstore._cli import _print_table

    columns = ["NAME", "SIZE", "OWNER", "CREATED"]
    rows = [["a-long-namespace-name", "13.7 MiB", "someone", "2026-01-01 00:00:00"]]
    wide, narrow = io.StringIO(), io.StringIO()
    for buf, width in ((wide, 200), (narrow, 40)):
        _print_table(Console(file=buf, width=width), columns, rows, optional=("CREATED", "OWNER"))
    assert "CREATED" in wide.getvalue() and "OWNER" in wide.getvalue()
    out = narrow.getvalue()
    assert "CREATED" not in out and "OWNER" not in out
    assert "a-long-namespace-name" in out and "13.7 MiB" in out
    assert max(len(line) for line in out.splitlines()) <= 40
