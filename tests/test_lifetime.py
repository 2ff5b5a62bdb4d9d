"""Lifetime rules: who creates and destroys a namespace, and what clearing keeps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import run_python
from zarr.core.buffer import cpu

import shmstore
from shmstore import SharedMemoryStore


def _meta(root: Path, ns: str) -> dict:
    return json.loads((root / ns / ".shmstore" / "state" / "meta.json").read_text())


def _put(store: SharedMemoryStore, key: str, data: bytes) -> None:
    store.set_sync(key, cpu.Buffer.from_bytes(data))


# ---------------------------------------------------------------- scoped
def test_scoped_refuses_a_namespace_it_did_not_create(shm_root: Path) -> None:
    precious = SharedMemoryStore("precious")
    _put(precious, "k", b"keep me")
    with pytest.raises(FileExistsError, match="precious"):
        shmstore.scoped("precious")
    with pytest.raises(FileExistsError, match="precious"):
        SharedMemoryStore("precious", scoped=True)
    assert precious.get_sync("k").to_bytes() == b"keep me"  # type: ignore[union-attr]


def test_two_scoped_blocks_never_destroy_each_other(shm_root: Path) -> None:
    with shmstore.scoped("scratch") as mine:
        _put(mine, "k", b"mine")
        # Another script asks for the same scratch space: refused, nothing lost.
        out = run_python(
            "import shmstore\n"
            "try:\n"
            "    shmstore.scoped('scratch')\n"
            "except FileExistsError as e:\n"
            "    print('refused', 'scratch' in str(e))\n"
        )
        assert out.stdout.split() == ["refused", "True"]
        assert mine.get_sync("k").to_bytes() == b"mine"  # type: ignore[union-attr]
    assert not (shm_root / "scratch").exists()


def test_scoped_exit_spares_a_namespace_made_since_by_someone_else(shm_root: Path) -> None:
    with shmstore.scoped("turnover") as mine:
        _put(mine, "k", b"first")
        run_python(
            "import shmstore\n"
            "shmstore.destroy('turnover')\n"
            "s = shmstore.SharedMemoryStore('turnover')\n"
            "from zarr.core.buffer import cpu\n"
            "s.set_sync('k', cpu.Buffer.from_bytes(b'theirs'))\n"
        )
    # The block destroyed only what it created: the new namespace is someone else's.
    again = SharedMemoryStore("turnover", read_only=True)
    assert again.get_sync("k").to_bytes() == b"theirs"  # type: ignore[union-attr]


# ----------------------------------------------------------- mode="w"
@pytest.mark.parametrize("route", ["store", "url", "xarray"])
def test_mode_w_clears_and_keeps_the_namespace(shm_root: Path, tmp_path: Path, route: str) -> None:
    spill = tmp_path / "spill"
    store = SharedMemoryStore("keep", capacity="1 MiB", spill=spill, mode=0o640)
    _put(store, "old/zarr.json", b"{}")
    inode = (shm_root / "keep").stat().st_ino
    if route == "store":
        zarr.open_group(store, mode="w").create_array("a", shape=(4,), dtype="i4")
    elif route == "url":
        zarr.open_group("shm://keep", mode="w").create_array("a", shape=(4,), dtype="i4")
    else:
        xr.Dataset({"a": ("x", np.arange(4, dtype="i4"))}).to_zarr(
            "shm://keep", mode="w", consolidated=False
        )
    assert (shm_root / "keep").stat().st_ino == inode  # the same namespace
    meta = _meta(shm_root, "keep")
    assert meta["mode"] == 0o640
    assert meta["tiering"]["capacity"] == 1 << 20
    assert meta["tiering"]["spill"]["url"] == str(spill)
    assert store.get_sync("old/zarr.json") is None  # cleared
    assert store.get_sync("a/zarr.json") is not None  # the handle opened before still works
    store.destroy()
    assert not (shm_root / "keep").exists()


def test_clear_keeps_settings_and_handles(shm_root: Path) -> None:
    store = SharedMemoryStore("cleared", capacity=4096)
    other = SharedMemoryStore("cleared")
    _put(store, "a", b"1" * 100)
    zarr.core.sync.sync(store.clear())
    assert other.get_sync("a") is None
    _put(other, "b", b"2")
    assert store.get_sync("b").to_bytes() == b"2"  # type: ignore[union-attr]
    assert _meta(shm_root, "cleared")["tiering"]["capacity"] == 4096


# ------------------------------------------------------- namespaces by name
def test_namespaces_and_destroy_by_name(shm_root: Path) -> None:
    a = SharedMemoryStore("ns-a")
    _put(a, "k", b"x" * 1000)
    SharedMemoryStore("ns-b")
    shmstore.create("an-array", 10)  # named arrays are not namespaces
    records = shmstore.namespaces()
    assert [r.name for r in records] == ["ns-a", "ns-b"]
    assert records[0].nbytes == 1000 and records[1].nbytes == 0
    shmstore.destroy("ns-b")
    assert [r.name for r in shmstore.namespaces()] == ["ns-a"]
    with pytest.raises(FileNotFoundError, match="climte"):
        shmstore.destroy("climte")
    assert not (shm_root / "climte").exists()  # a typo creates nothing
    shmstore.delete("an-array")


def test_destroy_by_name_refuses_a_named_array(shm_root: Path) -> None:
    shmstore.create("frames", 4)
    with pytest.raises(FileExistsError, match=r"shmstore\.delete\('frames'\)"):
        shmstore.destroy("frames")
    shmstore.delete("frames")


# --------------------------------------------------------------- the root
def test_a_missing_root_is_refused_never_created(
    shm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    typo = shm_root / "no" / "such-root"
    with pytest.raises(FileNotFoundError, match="root=") as err:
        SharedMemoryStore("x", root=typo)
    assert str(typo) in str(err.value) and "mkdir" in str(err.value)
    monkeypatch.setenv("SHMSTORE_ROOT", str(typo))
    with pytest.raises(FileNotFoundError, match=r"\$SHMSTORE_ROOT"):
        shmstore.create("a", 3)
    assert not (shm_root / "no").exists()


# ---------------------------------------------------------------- limits
@pytest.mark.parametrize(
    "key", ["/".join(["d"] * 300) + "/k", "k" * 200 + "/" + "/".join(["x" * 200] * 12)]
)
def test_keys_the_filesystem_cannot_hold_are_refused(shm_root: Path, key: str) -> None:
    store = SharedMemoryStore("limits")
    with pytest.raises(ValueError, match="the limit is"):
        _put(store, key, b"1")
    with pytest.raises(ValueError, match="the limit is"):
        shmstore.SharedMemoryFileSystem().pipe_file(f"shm://limits/{key}", b"1")
    assert os.listdir(shm_root / "limits") == [".shmstore"]
    store.destroy()


def test_mappings_are_bounded_per_process_across_namespaces(shm_root: Path) -> None:
    code = """
import numpy as np, shmstore
from zarr.core.buffer import cpu
from shmstore import _readcache
for n in range(6):
    s = shmstore.SharedMemoryStore(f"m{n}")
    for i in range(150):
        s.set_sync(f"c/{i}", cpu.Buffer.from_bytes(bytes([i]) * 64))
peak = 0
stores = [shmstore.SharedMemoryStore(f"m{n}") for n in range(6)]
for s in stores:
    for i in range(150):
        assert s.get_sync(f"c/{i}").to_bytes() == bytes([i]) * 64
    peak = max(peak, _readcache.cached_mappings())
print(peak)
"""
    peak = int(run_python(code, env={"SHMSTORE_MAX_MAPPINGS": "256"}).stdout)
    assert 0 < peak <= 256  # 900 chunks read, 6 namespaces held: one bound for all


# --------------------------------------------------------------- messages
def test_a_full_tmpfs_refuses_a_new_namespace_clearly(tiny_tmpfs: Path) -> None:
    filler = tiny_tmpfs / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    try:
        with pytest.raises(shmstore.SharedMemoryFullError, match="namespace 'late'"):
            SharedMemoryStore("late", root=tiny_tmpfs)
        assert not (tiny_tmpfs / "late").exists()
        assert [p.name for p in tiny_tmpfs.iterdir()] == ["filler"]  # nothing half made
    finally:
        filler.unlink()


def test_a_full_tmpfs_message_for_a_named_array(tiny_tmpfs: Path) -> None:
    with pytest.raises(shmstore.SharedMemoryFullError) as err:
        shmstore.create("huge", 16 << 20, "u1", root=tiny_tmpfs)
    message = str(err.value)
    assert "array 'huge'" in message and "spill" not in message
    # what was left before the create, not after it took every page
    assert err.value.available > (4 << 20)
    assert list(tiny_tmpfs.iterdir()) == []


def test_attach_of_a_namespace_says_what_it_is(shm_root: Path) -> None:
    SharedMemoryStore("climate")
    for call in (shmstore.attach, shmstore.delete):
        with pytest.raises(FileExistsError) as err:
            call("climate")
        assert "namespace" in str(err.value) and "shmstore.destroy('climate')" in str(err.value)


# ------------------------------------------------------------- shm:// URLs
def test_an_array_opened_by_url_fails_after_a_destroy(shm_root: Path) -> None:
    z = zarr.create_array("shm://byurl/t", shape=(4, 4), chunks=(2, 2), dtype="i4", fill_value=-1)
    z[:] = 7
    run_python("import shmstore; shmstore.destroy('byurl')")
    with pytest.raises(shmstore.NamespaceDestroyedError, match="byurl"):
        z[:]  # never the fill value
    with pytest.raises(shmstore.NamespaceDestroyedError, match="byurl"):
        z[0, 0] = 5  # never a stray chunk in a re-created namespace
    assert not (shm_root / "byurl").exists()
    # Writing a new hierarchy by URL creates the namespace, which old arrays follow.
    z2 = zarr.create_array("shm://byurl/t", shape=(4, 4), chunks=(2, 2), dtype="i4")
    z2[:] = 3
    assert int(z[:].sum()) == 48
