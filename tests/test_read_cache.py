"""The per-process mapping cache and the generation page that lets reads skip the ``stat``.

A cached chunk is served without a system call while no shmstore writer (in
any process) has replaced or deleted a key of its generation slot; these tests
check that every kind of shmstore change is seen at once by a process that had
the value cached, and that changes made by other programs are seen within
``REVALIDATE_SECONDS`` (or at once when it is 0).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python
from zarr.abc.store import RangeByteRequest
from zarr.core.buffer import cpu, default_buffer_prototype
from zarr.core.sync import sync

import shmstore._namespace as nsmod
import shmstore._posix as px
import shmstore._readcache as seg
from shmstore import SharedMemoryStore

proto = default_buffer_prototype()
_SET = "import shmstore; from zarr.core.buffer import cpu; s = shmstore.SharedMemoryStore('{ns}'); "


def put(store: SharedMemoryStore, key: str, data: bytes) -> None:
    store.set_sync(key, cpu.Buffer.from_bytes(data))


def get(store: SharedMemoryStore, key: str) -> bytes | None:
    value = store.get_sync(key, prototype=proto)
    return None if value is None else value.to_bytes()


def foreign_replace(path: Path, data: bytes) -> None:
    """Replace a key the way a program without shmstore does: temp file + rename."""
    tmp = path.with_name(path.name + ".foreign.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_generation_page_is_bookkeeping_only(shm_root: Path) -> None:
    store = SharedMemoryStore("genpage")
    put(store, "a/b", b"x")
    page = shm_root / "genpage" / ".shmstore" / "state" / "gen"
    st = page.stat()
    assert stat.S_ISREG(st.st_mode) and st.st_size == 4096
    assert stat.S_IMODE(st.st_mode) == 0o600
    keys = sync(_collect(store.list()))
    assert keys == ["a/b"]


async def _collect(it):  # type: ignore[no-untyped-def]
    return [x async for x in it]


def test_repeated_reads_reuse_one_buffer() -> None:
    store = SharedMemoryStore("reuse")
    put(store, "k", bytes(range(256)) * 16)
    a = store.get_sync("k", prototype=proto)
    b = store.get_sync("k", prototype=proto)
    assert a is b  # made once per mapping, not per read
    arr = a.as_numpy_array()
    assert not arr.flags.writeable
    with pytest.raises(ValueError):
        arr[0] = 1
    part = store.get_sync("k", prototype=proto, byte_range=RangeByteRequest(3, 9))
    assert part is not a and part.to_bytes() == bytes(range(3, 9))
    put(store, "k", b"new")
    c = store.get_sync("k", prototype=proto)
    assert c is not a and c.to_bytes() == b"new"
    assert a.to_bytes() == bytes(range(256)) * 16  # a held buffer keeps its value


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("s.set_sync('d/k', cpu.Buffer.from_bytes(b'new value'))", b"new value"),
        ("s.delete_sync('d/k')", None),
        ("from zarr.core.sync import sync; sync(s.delete_dir('d'))", None),
        ("from zarr.core.sync import sync; sync(s.clear())", None),
    ],
    ids=["replace", "delete", "delete_dir", "clear"],
)
def test_change_by_another_process_is_seen_at_once(change: str, expected: bytes | None) -> None:
    store = SharedMemoryStore("seen")
    put(store, "d/k", b"old")
    put(store, "other", b"unrelated")
    assert get(store, "d/k") == b"old"  # cached now
    assert get(store, "other") == b"unrelated"
    run_python(_SET.format(ns="seen") + change)
    assert get(store, "d/k") == expected
    if "clear" not in change:
        assert get(store, "other") == b"unrelated"


def test_many_replacements_by_another_process() -> None:
    """Every replacement is seen, whichever slot the other keys hash to."""
    store = SharedMemoryStore("manyrep")
    keys = [f"c/{i}" for i in range(64)]
    for k in keys:
        put(store, k, b"0")
        assert get(store, k) == b"0"
    code = _SET.format(ns="manyrep") + (
        "[s.set_sync(f'c/{i}', cpu.Buffer.from_bytes(b'1')) for i in range(0, 64, 2)]"
    )
    run_python(code)
    assert [get(store, k) for k in keys] == [b"1" if i % 2 == 0 else b"0" for i in range(64)]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_child_of_fork_writes_parent_sees() -> None:
    import multiprocessing as mp

    store = SharedMemoryStore("forked")
    put(store, "k", b"before")
    assert get(store, "k") == b"before"
    ctx = mp.get_context("fork")
    p = ctx.Process(target=put, args=(store, "k", b"after"))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert get(store, "k") == b"after"


def test_foreign_writer_seen_after_revalidation(
    shm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SharedMemoryStore("foreign")
    put(store, "t/c/0", b"old")
    assert get(store, "t/c/0") == b"old"
    foreign_replace(shm_root / "foreign" / "t" / "c" / "0", b"from another program")
    # Without a token bump the cached mapping is trusted until its deadline;
    # move the clock past it instead of sleeping.
    now = seg._monotonic()
    for clock in (seg, nsmod):  # the cache's clock and the read path's
        monkeypatch.setattr(clock, "_monotonic", lambda: now + seg.REVALIDATE_SECONDS + 1)
    assert get(store, "t/c/0") == b"from another program"
    (shm_root / "foreign" / "t" / "c" / "0").unlink()
    for clock in (seg, nsmod):
        monkeypatch.setattr(clock, "_monotonic", lambda: now + 2 * seg.REVALIDATE_SECONDS + 2)
    assert get(store, "t/c/0") is None


def test_revalidate_every_read_when_zero(shm_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seg, "REVALIDATE_SECONDS", 0.0)
    store = SharedMemoryStore("always")
    put(store, "k", b"old")
    assert get(store, "k") == b"old"
    foreign_replace(shm_root / "always" / "k", b"new")
    assert get(store, "k") == b"new"


def _child_sees_foreign_replace(shm_root: Path, ns: str, check: str, env: dict[str, str]) -> None:
    """A child caches key k, a program without shmstore replaces it, the child reads again."""
    code = _SET.format(ns=ns) + (
        f"{check}; "
        "print(bytes(s.get_sync('k').as_numpy_array()).decode()); "
        "import sys; sys.stdin.readline(); "
        "print(bytes(s.get_sync('k').as_numpy_array()).decode())"
    )
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "old"  # cached in the child now
    foreign_replace(shm_root / ns / "k", b"new")
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "new"
    assert proc.wait(60) == 0


def test_without_generation_page_every_read_checks(shm_root: Path) -> None:
    """A namespace whose page cannot be mapped falls back to one stat per read."""
    store = SharedMemoryStore("nogen")
    put(store, "k", b"old")
    page = shm_root / "nogen" / ".shmstore" / "state" / "gen"
    page.unlink()
    page.mkdir()  # something that is not a page: never trusted
    _child_sees_foreign_replace(shm_root, "nogen", "assert s._keyspace().ns._gen.page is None", {})


def test_revalidate_seconds_from_the_environment(shm_root: Path) -> None:
    store = SharedMemoryStore("envzero")
    put(store, "k", b"old")
    check = "import shmstore._readcache as g; assert g.REVALIDATE_SECONDS == 0"
    _child_sees_foreign_replace(shm_root, "envzero", check, {"SHMSTORE_REVALIDATE_SECONDS": "0"})


def test_old_namespace_gets_a_page(shm_root: Path) -> None:
    """A namespace made before the generation page existed gets one on open."""
    store = SharedMemoryStore("legacy")
    put(store, "k", b"v")
    (shm_root / "legacy" / ".shmstore" / "state" / "gen").unlink()
    out = run_python(
        _SET.format(ns="legacy")
        + "print(s._keyspace().ns._gen.page is not None, bytes(s.get_sync('k')"
        ".as_numpy_array()).decode())"
    )
    assert out.stdout.split() == ["True", "v"]
    assert (shm_root / "legacy" / ".shmstore" / "state" / "gen").stat().st_size == 4096


def test_symlinked_key_is_missing_not_followed(shm_root: Path, tmp_path: Path) -> None:
    store = SharedMemoryStore("linky")
    put(store, "real", b"v")
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside")
    os.symlink(secret, shm_root / "linky" / "k")
    assert store.get_sync("k", prototype=proto) is None


def test_zarr_array_rewritten_by_another_process() -> None:
    import zarr

    store = SharedMemoryStore("arr")
    z = zarr.create_array(store, name="t", shape=(64,), chunks=(8,), dtype="f8", fill_value=0)
    z[:] = np.arange(64.0)
    np.testing.assert_array_equal(z[:], np.arange(64.0))
    run_python(
        "import zarr, numpy as np, shmstore; "
        "z = zarr.open_array(shmstore.SharedMemoryStore('arr'), path='t'); "
        "z[8:24] = -1"
    )
    expected = np.arange(64.0)
    expected[8:24] = -1
    np.testing.assert_array_equal(z[:], expected)


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "component-walk"])
def test_nested_symlink_never_followed(
    shm_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openat2: bool
) -> None:
    """Keys resolve with openat2 where the kernel has it, else one component at a time."""
    if not openat2:
        monkeypatch.setattr(px, "_openat2_call", False)
    elif px._probe_openat2() is False:
        pytest.skip("no openat2 here")
    store = SharedMemoryStore("nested")
    put(store, "a/b/c/k", b"inside")
    assert get(store, "a/b/c/k") == b"inside"
    outside = tmp_path / "outside"
    (outside / "c").mkdir(parents=True)
    (outside / "c" / "k").write_bytes(b"secret")
    (shm_root / "nested" / "a" / "link").symlink_to(outside)
    assert store.get_sync("a/link/c/k", prototype=proto) is None
    with pytest.raises(NotADirectoryError, match="link"):
        put(store, "a/link/c/new", b"x")
    assert sorted(p.name for p in (outside / "c").iterdir()) == ["k"]
    put(store, "a/b/c/k", b"again")  # the real directory still takes writes
    assert get(store, "a/b/c/k") == b"again"


def test_buffer_cache_follows_the_prototype() -> None:
    from zarr.core.buffer import BufferPrototype

    class MyBuffer(cpu.Buffer):
        pass

    mine = BufferPrototype(buffer=MyBuffer, nd_buffer=proto.nd_buffer)
    store = SharedMemoryStore("protos")
    put(store, "k", b"value")
    a = store.get_sync("k", prototype=mine)
    b = store.get_sync("k", prototype=proto)
    c = store.get_sync("k", prototype=mine)
    assert type(a) is MyBuffer and type(c) is MyBuffer
    assert type(b) is not MyBuffer and isinstance(b, cpu.Buffer)
    assert a.to_bytes() == b.to_bytes() == c.to_bytes() == b"value"
    assert sync(store.get("k", prototype=mine)).to_bytes() == b"value"
