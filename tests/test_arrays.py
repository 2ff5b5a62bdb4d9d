"""Named arrays: create/attach/delete/list by name, lifetime, pickling by name."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from conftest import run_python

import shmstore
from shmstore._errors import ForeignEntryError

if TYPE_CHECKING:
    from collections.abc import Iterator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _child(code: str, *args: str) -> str:
    return run_python(textwrap.dedent(code), *args).stdout


def _entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


@pytest.fixture
def other_root(shm_root: Path) -> Iterator[Path]:
    """A second private root on the same tmpfs."""
    other = shm_root.with_name(shm_root.name + "-other")
    other.mkdir(mode=0o700)
    try:
        yield other
    finally:
        shutil.rmtree(other, ignore_errors=True)


# ------------------------------------------------------------------- basics
@pytest.mark.parametrize(
    ("shape", "dtype", "order"),
    [
        ((3, 4), "f4", "C"),
        ((3, 4), ">i8", "F"),
        (7, "u1", "C"),
        ((), "c16", "C"),
        ((2, 0, 3), "f8", "C"),
        ((2, 2), "M8[ns]", "C"),
        ((4,), "U5", "C"),
        ((2,), [("a", "<i4"), ("b", "<f8", (2,)), ("c", "S3")], "C"),
        ((2,), np.dtype([("x", "u1"), ("y", "<f4")], align=True), "C"),
    ],
)
def test_attach_restores_shape_dtype_order(shape: object, dtype: object, order: str) -> None:
    a = shmstore.create("arr", shape, dtype, order=order)
    b = shmstore.attach("arr")
    assert isinstance(b, shmstore.NamedArray)
    assert b.shape == a.shape and b.dtype == np.dtype(dtype)
    if b.ndim > 1 and b.size:
        assert b.flags.f_contiguous == (order == "F")
    assert not b.any() if b.dtype.names is None else True  # fresh arrays are zeros
    assert b.name == "arr"
    shmstore.delete("arr")


def test_subarray_dtype_adds_dimensions_like_numpy() -> None:
    a = shmstore.create("sub", 3, ("f4", (2,)))
    assert a.shape == (3, 2) and a.dtype == np.float32
    assert shmstore.attach("sub").shape == (3, 2)


@pytest.mark.parametrize(
    ("fill", "expected"),
    [
        (None, np.zeros((3, 4), "i4")),
        (7, np.full((3, 4), 7, "i4")),
        (2.9, np.full((3, 4), 2, "i4")),  # np.full casting
        (np.arange(12, dtype="i4").reshape(3, 4), np.arange(12).reshape(3, 4)),
        (np.arange(4), np.tile(np.arange(4), (3, 1))),  # broadcast
        (np.arange(12.0).reshape(3, 4), np.arange(12).reshape(3, 4)),  # cast
    ],
)
def test_fill(fill: object, expected: np.ndarray) -> None:
    a = shmstore.create("filled", (3, 4), "i4", fill=fill)
    np.testing.assert_array_equal(shmstore.attach("filled"), expected)
    np.testing.assert_array_equal(a, expected)


def test_fill_fortran_order_and_large_scalar_fill() -> None:
    src = np.asfortranarray(np.arange(12, dtype="i2").reshape(3, 4))
    a = shmstore.create("fort", (3, 4), "i2", order="F", fill=src)
    np.testing.assert_array_equal(shmstore.attach("fort"), src)
    big = shmstore.create("big", 3_000_000, "f8", fill=1.5)  # > the 4 MiB pattern
    assert float(big.sum()) == 4_500_000.0
    assert a.flags.f_contiguous


def test_fill_shape_mismatch_creates_nothing(shm_root: Path) -> None:
    with pytest.raises(ValueError):
        shmstore.create("bad", (3, 4), "i4", fill=np.arange(5))
    assert _entries(shm_root) == []


def test_populate_gives_the_same_array() -> None:
    a = shmstore.create("pop", 1000, "f8", populate=True)
    a[:] = 3
    assert float(shmstore.attach("pop").sum()) == 3000.0


def test_object_dtype_refused(shm_root: Path) -> None:
    with pytest.raises(ValueError, match="object"):
        shmstore.create("obj", 3, object)
    assert _entries(shm_root) == []


def test_bad_shape_and_order() -> None:
    with pytest.raises(ValueError, match="negative"):
        shmstore.create("neg", (2, -1))
    with pytest.raises(TypeError):
        shmstore.create("flt", 2.5)
    with pytest.raises(ValueError, match="order"):
        shmstore.create("ord", 3, order="K")


def test_views_stay_named_and_computations_are_plain() -> None:
    a = shmstore.create("v", (4, 4), "f8", fill=1.0)
    assert type(a[1:]) is shmstore.NamedArray and a[1:].name == "v"
    assert type(a.T) is shmstore.NamedArray and type(a.reshape(16)) is shmstore.NamedArray
    assert type(a + 1) is np.ndarray
    assert type(a[[0, 2]]) is np.ndarray
    assert type(a.sum(axis=0)) is np.ndarray
    assert isinstance(a.sum(), np.floating)
    np.add(a, 1, out=a)  # in place on the segment keeps the array
    assert float(shmstore.attach("v")[0, 0]) == 2.0
    assert a.copy().name is None


# ------------------------------------------------------------ cross-process
def test_writes_visible_both_ways() -> None:
    a = shmstore.create("both", (1000,), "i8")
    a[:] = np.arange(1000)
    code = textwrap.dedent(
        """
        import sys, shmstore
        b = shmstore.attach("both")
        assert b[999] == 999, b[999]
        print("attached", flush=True)
        sys.stdin.readline()          # the parent writes meanwhile
        assert b[0] == -5, b[0]       # seen through the same mapping
        b[1] = -7
        print("done", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "attached", proc.stderr.read()
        a[0] = -5
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done", proc.stderr.read()
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert a[1] == -7


@pytest.mark.parametrize("how", ["attach", "read_only", "pickle", "multiprocessing"])
def test_child_attaches_and_exits_data_intact(how: str, shm_root: Path) -> None:
    """PITFALLS 1: no process that merely attached may unlink on exit."""
    a = shmstore.create("durable", 100, "f8", fill=np.arange(100.0))
    blob = pickle.dumps(a[10:20]).hex()
    code = {
        "attach": "import shmstore; b = shmstore.attach('durable'); print(b.sum())",
        "read_only": "import shmstore; print(shmstore.attach('durable', read_only=True).sum())",
        "pickle": "import pickle, sys; print(pickle.loads(bytes.fromhex(sys.argv[1])).sum())",
        # A process that also uses multiprocessing (and so may run its
        # resource tracker) must not unlink either.
        "multiprocessing": (
            "import multiprocessing.shared_memory as sm, shmstore\n"
            "s = sm.SharedMemory(create=True, size=10); s.close(); s.unlink()\n"
            "print(shmstore.attach('durable').sum())"
        ),
    }[how]
    out = run_python(code, blob).stdout
    assert float(out) == (145.0 if how == "pickle" else 4950.0)
    assert "durable" in _entries(shm_root)
    np.testing.assert_array_equal(shmstore.attach("durable"), np.arange(100.0))
    assert float(run_python(code, blob).stdout) == float(out)  # and once more


def test_deleted_array_keeps_working_where_mapped(shm_root: Path) -> None:
    a = shmstore.create("gone", 10, "i8", fill=3)
    shmstore.delete("gone")
    assert _entries(shm_root) == []
    a[0] = 11  # the mapping outlives the name
    assert int(a.sum()) == 3 * 9 + 11
    with pytest.raises(FileNotFoundError, match="gone"):
        shmstore.attach("gone")
    with pytest.raises(FileNotFoundError, match="gone"):
        pickle.loads(pickle.dumps(a))  # by name: the name is gone


def test_child_mapping_survives_delete_by_parent() -> None:
    shmstore.create("held", 5, "i8", fill=2)
    code = textwrap.dedent(
        """
        import sys, shmstore
        b = shmstore.attach("held")
        print("attached", flush=True)
        sys.stdin.readline()   # the parent deletes the array meanwhile
        b[0] = 40
        print(int(b.sum()), flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "attached"
        shmstore.delete("held")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == str(40 + 2 * 4)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_fork_child_shares_the_mapping() -> None:
    a = shmstore.create("forked", 4, "i8")
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_write_first, args=(a, 99))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert a[0] == 99


def _write_first(arr: np.ndarray, value: int) -> None:
    arr[0] = value


# ------------------------------------------------------------------ pickling
def test_one_gib_array_pickles_under_one_kib() -> None:
    a = shmstore.create("gib", (1 << 30,), "u1")
    assert a.nbytes == 1 << 30
    assert len(pickle.dumps(a)) < 1024
    assert len(pickle.dumps(a, protocol=5)) < 1024
    assert len(pickle.dumps(a[::7])) < 1024
    shmstore.delete("gib")


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a,
        lambda a: a[2:5],
        lambda a: a[1:, ::2],
        lambda a: a[::-1, ::-3],
        lambda a: a.T,
        lambda a: a[3],
        lambda a: a.reshape(-1)[5:9],
        lambda a: a.view("u1")[:, 4:12],
    ],
)
def test_slices_pickle_as_views_of_the_same_segment(view: object) -> None:
    a = shmstore.create("slices", (6, 8), "i8", fill=np.arange(48).reshape(6, 8))
    v = view(a)  # type: ignore[operator]
    blob = pickle.dumps(v)
    assert b"slices" in blob and len(blob) < 1024
    w = pickle.loads(blob)
    assert type(w) is shmstore.NamedArray
    assert w.shape == v.shape and w.dtype == v.dtype and w.strides == v.strides
    np.testing.assert_array_equal(w, v)
    assert np.shares_memory(w, a)  # the same mapping of this process: zero copy
    # and in another process, writes land in the same segment
    code = "import pickle, sys; w = pickle.loads(bytes.fromhex(sys.argv[1])); w[...] = 7"
    run_python(code, blob.hex())
    assert (v == 7).all()


def test_computed_arrays_pickle_their_data_as_plain_ndarrays() -> None:
    a = shmstore.create("calc", 1000, "f8", fill=2.0)
    for derived in (a + 1, a.copy(), a.astype("f4"), a[[1, 2, 3]]):
        blob = pickle.dumps(derived)
        back = pickle.loads(blob)
        assert type(back) is np.ndarray
        np.testing.assert_array_equal(back, derived)
        assert not np.shares_memory(back, a)
    assert len(pickle.dumps(a + 1)) > a.nbytes  # the bytes travel, as they must


def test_read_only_views_pickle_read_only() -> None:
    a = shmstore.create("ro-pickle", 10, "i4")
    r = shmstore.attach("ro-pickle", read_only=True)
    assert not pickle.loads(pickle.dumps(r)).flags.writeable
    v = a[2:]
    v.flags.writeable = False
    assert not pickle.loads(pickle.dumps(v)).flags.writeable
    assert pickle.loads(pickle.dumps(a)).flags.writeable


def test_stale_pickle_after_recreate_is_refused() -> None:
    blob = pickle.dumps(shmstore.create("stale", 10, "i4"))
    shmstore.delete("stale")
    shmstore.create("stale", 10, "i4")
    with pytest.raises(FileNotFoundError, match="since this view of it was pickled"):
        pickle.loads(blob)


def _sum(arr: np.ndarray) -> float:
    return float(arr.sum())


def _negate(arr: np.ndarray) -> bool:
    arr *= -1  # in the worker, on the shared segment
    return type(arr).__name__ == "NamedArray"


def test_multiprocessing_pool_spawn_gets_zero_copy_views() -> None:
    a = shmstore.create("pool", (4, 250), "f8", fill=np.arange(1000.0).reshape(4, 250))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert sum(pool.map(_sum, list(a))) == float(np.arange(1000.0).sum())
        assert all(pool.map(_negate, [a[0], a[1]]))
    assert float(a[:2].sum()) == -float(np.arange(500.0).sum())


_KEPT: list[np.ndarray] = []


def _keep_attached(name: str) -> None:
    _KEPT.append(shmstore.attach(name))


def _shares_kept_mapping(view: np.ndarray) -> bool:
    return type(view).__name__ == "NamedArray" and view.base is _KEPT[0].base


def test_pool_worker_that_keeps_the_array_attached_reuses_its_mapping() -> None:
    a = shmstore.create("kept", (4, 250), "f8", fill=1.0)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2, initializer=_keep_attached, initargs=("kept",)) as pool:
        assert all(pool.map(_shares_kept_mapping, list(a), chunksize=1))


def test_process_pool_executor_gets_zero_copy_views() -> None:
    a = shmstore.create("ppe", 100, "i8", fill=1)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert list(ex.map(_negate, [a[:50], a[50:]])) == [True, True]
    assert int(a.sum()) == -100


def _bump_block(block: np.ndarray) -> np.ndarray:
    block += 1  # dask hands the worker a view of the named array
    return block


def test_dask_processes_scheduler() -> None:
    da = pytest.importorskip("dask.array")
    a = shmstore.create("dask", (400, 300), "f8", fill=1.0)
    # from_array works (dask copies its input first: a private copy)
    x = da.from_array(a, chunks=(100, 300))
    assert float(x.sum().compute(scheduler="processes", num_workers=2)) == 120_000.0
    # to_dask hands the workers the named array itself
    y = a.to_dask(chunks=(100, 300))
    assert y.chunks == ((100,) * 4, (300,))
    assert float(y.sum().compute(scheduler="processes", num_workers=2)) == 120_000.0
    y.map_blocks(_bump_block).sum().compute(scheduler="processes", num_workers=2)
    assert float(a.sum()) == 240_000.0  # the workers wrote into the segment
    graph = dict(y.__dask_graph__())
    assert len(pickle.dumps(graph)) < 8 * 1024  # names, not 960 kB of data
    np.testing.assert_array_equal(y[::7, 3].compute(scheduler="sync"), a[::7, 3])


def test_dask_tokenize_is_by_identity() -> None:
    dask_base = pytest.importorskip("dask.base")
    a = shmstore.create("tok", 1000, "f8")
    b = shmstore.attach("tok")
    assert dask_base.tokenize(a) == dask_base.tokenize(b)
    assert dask_base.tokenize(a[1:]) != dask_base.tokenize(a)


# ---------------------------------------------------------------- read only
def test_read_only_enforcement() -> None:
    shmstore.create("ro", 10, "f8", fill=1.0)
    r = shmstore.attach("ro", read_only=True)
    assert not r.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        r[0] = 2.0
    with pytest.raises(ValueError):
        r.flags.writeable = True
    with pytest.raises(ValueError, match="read-only"):
        r[1:][0] = 2.0
    out = run_python(
        "import shmstore\nr = shmstore.attach('ro', read_only=True)\n"
        "try:\n    r[0] = 5\nexcept ValueError as e:\n    print('refused', e)\n",
        check=True,
    ).stdout
    assert out.startswith("refused")
    assert float(shmstore.attach("ro")[0]) == 1.0


# ------------------------------------------ attach again: what it re-checks
# A second attach of a name in a process reuses the header it parsed the first
# time, after one open (O_NOFOLLOW) and fstat show the very same file. Each
# test attaches once first (so that the reuse is in play), drops every view,
# changes what the name holds, and attaches again.
def _attach_once_and_drop(name: str, **kwargs: object) -> None:
    a = shmstore.attach(name, **kwargs)  # type: ignore[arg-type]
    b = shmstore.attach(name, **kwargs)  # type: ignore[arg-type]
    assert b.shape == a.shape
    del a, b


def test_attach_again_after_recreate_in_this_process() -> None:
    shmstore.create("again", 10, "f8", fill=1.0)
    _attach_once_and_drop("again")
    shmstore.delete("again")
    with pytest.raises(FileNotFoundError):
        shmstore.attach("again")
    shmstore.create("again", (2, 3), "i4", fill=7, order="F")
    b = shmstore.attach("again")
    assert (b.shape, b.dtype, b.flags.f_contiguous) == ((2, 3), np.dtype("i4"), True)
    assert int(b.sum()) == 42


def test_attach_again_after_recreate_by_another_process() -> None:
    shmstore.create("theirs", 10, "f8", fill=1.0)
    _attach_once_and_drop("theirs")
    _child(
        """
        import shmstore
        shmstore.delete("theirs")
        shmstore.create("theirs", (4, 4), "u1", fill=3)
        """
    )
    b = shmstore.attach("theirs")
    assert (b.shape, b.dtype, int(b.sum())) == ((4, 4), np.dtype("u1"), 48)


def test_attach_again_reports_what_replaced_the_name(shm_root: Path, tmp_path: Path) -> None:
    shmstore.create("swap", 1000, "f8")
    _attach_once_and_drop("swap")
    os.rename(shm_root / "swap", shm_root / "elsewhere")
    (shm_root / "swap").symlink_to(shm_root / "elsewhere")
    with pytest.raises(ForeignEntryError, match="symbolic link"):
        shmstore.attach("swap")
    (shm_root / "swap").unlink()
    (shm_root / "swap").write_bytes(b"\0" * 8192)
    with pytest.raises(ForeignEntryError, match="swap"):
        shmstore.attach("swap")
    (shm_root / "swap").unlink()
    os.rename(shm_root / "elsewhere", shm_root / "swap")
    assert shmstore.attach("swap").shape == (1000,)  # the same file again
    os.truncate(shm_root / "swap", 4096 + 100)
    with pytest.raises(ForeignEntryError, match="truncated"):
        shmstore.attach("swap")


def test_attach_again_read_only_and_writes_share_one_mapping() -> None:
    shmstore.create("perm", 5, "i8", fill=2)
    _attach_once_and_drop("perm", read_only=True)
    r = shmstore.attach("perm", read_only=True)
    assert not r.flags.writeable
    with pytest.raises(ValueError):
        r.flags.writeable = True
    w = shmstore.attach("perm")
    w[0] = 9  # a write through a mapping changes the file's ctime, not its identity
    assert int(r[0]) == 9
    assert shmstore.attach("perm").base is w.base  # a view is alive: its mapping is shared
    assert shmstore.attach("perm", read_only=True).base is r.base


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_attach_again_refuses_an_array_given_to_another_user(shm_root: Path) -> None:
    shmstore.create("given", 5)
    _attach_once_and_drop("given")
    os.chown(shm_root / "given", 12345, 12345)
    with pytest.raises(PermissionError, match="uid 12345"):
        shmstore.attach("given")


def test_attach_follows_the_environment_and_root(
    shm_root: Path, other_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shmstore.create("same", 3, fill=1)
    shmstore.create("same", 3, fill=2, root=other_root)
    for _ in range(2):
        monkeypatch.setenv("SHMSTORE_ROOT", str(shm_root))
        assert float(shmstore.attach("same").sum()) == 3.0
        monkeypatch.setenv("SHMSTORE_ROOT", str(other_root))
        assert float(shmstore.attach("same").sum()) == 6.0
        assert float(shmstore.attach("same", root=shm_root).sum()) == 3.0
        assert float(shmstore.attach("same", root=str(shm_root)).sum()) == 3.0


def test_file_backed_root_parses_the_header_on_every_attach(tmp_path: Path) -> None:
    # A disk filesystem reuses a freed inode number at once, so (inode, ctime,
    # size) does not identify a file there: every attach must read the header.
    root = str(tmp_path / "file-backed")
    os.mkdir(root, 0o700)  # a root is never created for you
    with pytest.warns(RuntimeWarning, match="not tmpfs"):
        shmstore.create("probe", 1, root=root)
    for i in range(1, 30):
        shmstore.delete("probe" if i == 1 else "re", root=root)
        shmstore.create("re", 1024, "u1" if i % 2 else "i1", fill=i, root=root)
        _attach_once_and_drop("re", root=root)
        b = shmstore.attach("re", root=root)
        assert (b.dtype, int(b[0])) == (np.dtype("u1" if i % 2 else "i1"), i)
        del b


# ------------------------------------------------------------ names, errors
@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x\0y", "é" * 150, ".hidden", "a\nb"])
@pytest.mark.parametrize("func", ["create", "attach", "delete"])
def test_invalid_names(name: str, func: str) -> None:
    call = {
        "create": lambda: shmstore.create(name, 3),
        "attach": lambda: shmstore.attach(name),
        "delete": lambda: shmstore.delete(name),
    }[func]
    with pytest.raises(ValueError, match="array name") as info:
        call()
    if name:
        assert repr(name)[:20] in str(info.value)


def test_create_existing_and_exist_ok() -> None:
    a = shmstore.create("dup", (2, 3), "f4", fill=5)
    with pytest.raises(FileExistsError, match=r"'dup' already exists.*exist_ok"):
        shmstore.create("dup", (2, 3), "f4")
    b = shmstore.create("dup", (2, 3), "f4", exist_ok=True, fill=9)  # fill not applied
    assert np.shares_memory(a, b) and float(b[0, 0]) == 5.0
    with pytest.raises(FileExistsError, match=r"shape \(2, 3\).*asked for \(3, 2\)"):
        shmstore.create("dup", (3, 2), "f4", exist_ok=True)
    with pytest.raises(FileExistsError, match="dtype"):
        shmstore.create("dup", (2, 3), "f8", exist_ok=True)


def test_missing_array(shm_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no named array 'nope'"):
        shmstore.attach("nope")
    with pytest.raises(FileNotFoundError, match=r"no named array 'nope' .* to delete; "):
        shmstore.delete("nope")
    a = shmstore.create("once", 2)
    shmstore.delete("once")
    with pytest.raises(FileNotFoundError):
        shmstore.delete("once")
    assert a.name == "once"


def test_files_are_owner_only_and_mode_is_honoured(shm_root: Path) -> None:
    shmstore.create("private", 10)
    assert stat.S_IMODE(os.stat(shm_root / "private").st_mode) == 0o600
    old = os.umask(0o077)
    try:
        shmstore.create("shared", 10, mode=0o640)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(shm_root / "shared").st_mode) == 0o640


def test_planted_symlink_is_never_followed(
    shm_root: Path, tmp_path: Path, other_root: Path
) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    (shm_root / "trap").symlink_to(target)
    with pytest.raises(ForeignEntryError, match="symbolic link"):
        shmstore.create("trap", 10)
    with pytest.raises(ForeignEntryError, match="symbolic link"):
        shmstore.create("trap", 10, exist_ok=True)
    with pytest.raises(ForeignEntryError, match="symbolic link"):
        shmstore.attach("trap")
    with pytest.raises(ForeignEntryError, match="symbolic link"):
        shmstore.delete("trap")
    assert target.read_bytes() == b"precious"
    assert (shm_root / "trap").is_symlink()
    # even a symlink to a genuine named array elsewhere
    shmstore.create("real", 4, root=other_root)
    (shm_root / "alias").symlink_to(other_root / "real")
    with pytest.raises(ForeignEntryError, match="symbolic link"):
        shmstore.attach("alias")
    assert [r.name for r in shmstore.list()] == []


def test_foreign_and_corrupt_files_are_reported_not_trusted(shm_root: Path) -> None:
    (shm_root / "psm_other").write_bytes(b"\0" * 8192)
    with pytest.raises(ForeignEntryError, match="psm_other"):
        shmstore.attach("psm_other")
    with pytest.raises(ForeignEntryError):
        shmstore.delete("psm_other")
    with pytest.raises(FileExistsError):
        shmstore.create("psm_other", 3, exist_ok=True)
    assert (shm_root / "psm_other").read_bytes() == b"\0" * 8192
    # a genuine array, truncated, and one with a mangled header
    shmstore.create("trunc", 1000, "f8")
    os.truncate(shm_root / "trunc", 4096 + 100)
    with pytest.raises(ForeignEntryError, match="truncated"):
        shmstore.attach("trunc")
    shmstore.create("mangled", 10)
    with open(shm_root / "mangled", "r+b") as f:
        f.seek(64)
        f.write(b"{not json")
    with pytest.raises(ForeignEntryError, match="corrupt"):
        shmstore.attach("mangled")
    (shm_root / "fifo").parent.joinpath("fifo")
    os.mkfifo(shm_root / "fifo")
    with pytest.raises(ForeignEntryError, match="not a regular file"):
        shmstore.attach("fifo")
    assert [r.name for r in shmstore.list()] == []


def test_names_are_shared_with_namespaces(shm_root: Path) -> None:
    from shmstore._namespace import Namespace

    Namespace.open("ns", create=True)
    with pytest.raises(ForeignEntryError, match="namespace"):
        shmstore.create("ns", 3)
    with pytest.raises(ForeignEntryError, match="namespace"):
        shmstore.attach("ns")
    with pytest.raises(ForeignEntryError, match="namespace"):
        shmstore.delete("ns")
    assert (shm_root / "ns").is_dir()
    shmstore.create("arr", 3)
    with pytest.raises(ForeignEntryError, match="named array"):
        Namespace.open("arr", create=True)


def test_list_records(shm_root: Path) -> None:
    import time

    from shmstore._namespace import Namespace

    before = time.time()
    shmstore.create("b-second", (2, 3), "i2")
    shmstore.create("a-first", 5, "f8", order="F")
    Namespace.open("a-namespace", create=True)
    (shm_root / "foreign").write_bytes(b"x" * 100)
    records = shmstore.list()
    assert [r.name for r in records] == ["a-first", "b-second"]
    a, b = records
    assert (b.shape, b.dtype, b.nbytes, b.order) == ((2, 3), np.dtype("i2"), 12, "C")
    assert (a.shape, a.dtype, a.nbytes, a.order) == ((5,), np.dtype("f8"), 40, "F")
    assert before <= a.created <= time.time()
    assert a.pid == os.getpid()
    assert a.path == str(shm_root / "a-first")
    assert shmstore.attach("a-first").info == a


def test_scoped_array_deletes_on_exit(shm_root: Path) -> None:
    with shmstore.scoped_array("tmp", 10, "i4", fill=1) as a:
        assert int(shmstore.attach("tmp").sum()) == 10
    assert _entries(shm_root) == []
    assert int(a.sum()) == 10  # the view outlives the name
    with pytest.raises(RuntimeError), shmstore.scoped_array("tmp", 10):
        raise RuntimeError("boom")
    assert _entries(shm_root) == []
    # a new array under the same name made inside the block is not deleted
    with shmstore.scoped_array("tmp", 10):
        shmstore.delete("tmp")
        shmstore.create("tmp", 3)
    assert [r.shape for r in shmstore.list()] == [(3,)]
    with pytest.raises(ValueError, match="exist_ok"), shmstore.scoped_array("x", 1, exist_ok=True):
        pass


def test_root_argument_and_environment(shm_root: Path, other_root: Path) -> None:
    other = other_root
    shmstore.create("here", 3, fill=1)
    shmstore.create("there", 3, fill=2, root=other)
    assert _entries(shm_root) == ["here"]
    assert _entries(other) == ["there"]
    with pytest.raises(FileNotFoundError):
        shmstore.attach("there")
    assert float(shmstore.attach("there", root=str(other)).sum()) == 6.0
    assert [r.name for r in shmstore.list(root=other)] == ["there"]
    out = run_python("import shmstore; print(shmstore.attach('here').sum())").stdout
    assert float(out) == 3.0
    out = run_python(
        "import shmstore; print(shmstore.attach('there').sum())",
        env={"SHMSTORE_ROOT": str(other)},
    ).stdout
    assert float(out) == 6.0
    shmstore.delete("there", root=other)
    assert _entries(other) == []


def test_nothing_is_left_behind(shm_root: Path) -> None:
    for i in range(5):
        shmstore.create(f"n{i}", 100, fill=i)
    with pytest.raises(FileExistsError):
        shmstore.create("n0", 100)
    for i in range(5):
        shmstore.delete(f"n{i}")
    assert _entries(shm_root) == []


def test_import_does_not_load_zarr_or_dask() -> None:
    out = run_python(
        "import sys, shmstore\n"
        "a = shmstore.create('light', 3); a.lock.acquire(); a.lock.release()\n"
        "shmstore.delete('light')\n"
        "print(sorted(m for m in ('zarr', 'dask', 'fsspec') if m in sys.modules))"
    ).stdout
    assert out.strip() == "[]"


def test_full_tmpfs_is_a_clear_error_not_sigbus(tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        for fill in (None, 1.0, np.ones(1 << 18)):
            with pytest.raises(shmstore.SharedMemoryFullError, match="'big'") as info:
                shmstore.create("big", 1 << 18, "f8", fill=fill, root=mnt)
            assert info.value.requested > 1 << 20
            assert _entries(mnt) == []  # nothing left behind
        small = shmstore.create("small", 1000, root=mnt)
        small[:] = 1
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# ------------------------------------------------------------------ examples
def test_example_named_array(shm_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "named_array.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "child saw the parent's data" in proc.stdout
    assert "parent sees the child's write" in proc.stdout
    assert _entries(shm_root) == []
