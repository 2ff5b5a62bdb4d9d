"""save / load: whole namespaces to and from any Zarr store, verified."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from test_tiering import files
from zarr.codecs import ZstdCodec
from zarr.core.buffer import cpu
from zarr.storage import LocalStore, WrapperStore

import shmstore
from shmstore import SharedMemoryStore
from shmstore._dask import RawChunks
from shmstore._transfer import TransferReport


def build(store: zarr.abc.store.Store) -> dict[str, np.ndarray]:
    """A small hierarchy: attributes on the root, a group, arrays at two depths."""
    rng = np.random.default_rng(1)
    root = zarr.open_group(store, mode="w")
    root.attrs["title"] = "climate"
    t = root.create_array("t", shape=(40, 30), chunks=(16, 16), dtype="f4")
    t[:] = rng.random((40, 30), dtype="f4")
    t.attrs["units"] = "K"
    sub = root.create_group("model/run1")
    sub.attrs["seed"] = 1
    u = sub.create_array("u", shape=(100,), chunks=(7,), dtype="i8", fill_value=-1)
    u[:50] = np.arange(50)
    return {"t": t[:], "model/run1/u": u[:]}


def check(store: zarr.abc.store.Store, arrays: dict[str, np.ndarray]) -> None:
    root = zarr.open_group(store, mode="r")
    assert root.attrs["title"] == "climate"
    assert root["t"].attrs["units"] == "K"
    assert root["model/run1"].attrs["seed"] == 1
    for path, data in arrays.items():
        np.testing.assert_array_equal(root[path][:], data)


def test_save_then_load_round_trips_every_key(shm_root: Path, tmp_path: Path) -> None:
    arrays = build(SharedMemoryStore("climate"))
    disk = tmp_path / "climate.zarr"
    report = shmstore.save("shm://climate", str(disk))
    original = files(shm_root / "climate")
    saved = files(disk)
    assert saved == original  # every key, every size
    assert report.keys == len(original) and report.nbytes == sum(original.values())
    assert report.verified == "size" and report.gib_per_s > 0
    assert "copied" in str(report)
    check(LocalStore(disk, read_only=True), arrays)
    for key in original:
        assert (disk / key).read_bytes() == (shm_root / "climate" / key).read_bytes()

    back = shmstore.load(disk, "shm://climate-again", verify="content", compressors="keep")
    assert files(shm_root / "climate-again") == original
    assert back.verified == "content" and back.keys == report.keys
    check(SharedMemoryStore("climate-again", read_only=True), arrays)


def test_destination_with_keys_needs_overwrite(tmp_path: Path) -> None:
    build(SharedMemoryStore("src"))
    disk = tmp_path / "x.zarr"
    shmstore.save("shm://src", disk)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        shmstore.save("shm://src", disk)
    (disk / "stale").write_bytes(b"old")
    shmstore.save("shm://src", disk, overwrite=True)
    assert not (disk / "stale").exists()
    SharedMemoryStore("dst").set_sync("k", cpu.Buffer.from_bytes(b"v"))
    with pytest.raises(FileExistsError):
        shmstore.load(disk, "shm://dst")
    shmstore.load(disk, SharedMemoryStore("dst"), overwrite=True)
    assert SharedMemoryStore("dst").get_sync("k") is None


def test_missing_sources_and_bad_urls(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        shmstore.save("shm://no-such-namespace", tmp_path / "x.zarr")
    with pytest.raises(FileNotFoundError):
        shmstore.load(tmp_path / "no-such.zarr", "shm://fresh")
    with pytest.raises(ValueError, match="whole namespace"):
        shmstore.save("shm://ns/sub/path", tmp_path / "x.zarr")
    with pytest.raises(ValueError, match="verify"):
        shmstore.save(SharedMemoryStore("ok"), tmp_path / "y.zarr", verify="sometimes")  # type: ignore[arg-type]


def test_tiered_namespace_saves_both_tiers(shm_root: Path, tmp_path: Path) -> None:
    store = SharedMemoryStore("tiered", capacity="8 KiB", spill=tmp_path / "spill")
    arrays = build(store)
    assert files(tmp_path / "spill")  # some chunks spilled
    disk = tmp_path / "all.zarr"
    report = shmstore.save(store, disk)
    check(LocalStore(disk, read_only=True), arrays)
    in_both = set(files(shm_root / "tiered")) | set(files(tmp_path / "spill"))
    assert set(files(disk)) == in_both and report.keys == len(in_both)
    # and back into a namespace that is itself too small for it
    small = SharedMemoryStore("small", capacity="8 KiB", spill=tmp_path / "spill2")
    shmstore.load(disk, small)
    check(SharedMemoryStore("small", read_only=True), arrays)


def test_fsspec_url_round_trip() -> None:
    arrays = build(SharedMemoryStore("url"))
    shmstore.save("shm://url", "memory://saved/url.zarr")
    shmstore.load("memory://saved/url.zarr", "shm://url-back")
    check(SharedMemoryStore("url-back", read_only=True), arrays)


class DroppingStore(WrapperStore):
    """A real LocalStore that loses one key and shortens another on the way in."""

    async def set(self, key: str, value: object) -> None:
        if key == "t/c/0/0":
            return
        if key == "t/c/1/1":
            value = value[:-1]  # type: ignore[index]
        await self._store.set(key, value)


class FlippingStore(WrapperStore):
    """A real LocalStore that flips one byte of one value (same size)."""

    async def set(self, key: str, value: object) -> None:
        if key == "t/c/0/1":
            raw = bytearray(value.to_bytes())  # type: ignore[attr-defined]
            raw[0] ^= 0xFF
            value = cpu.Buffer.from_bytes(bytes(raw))
        await self._store.set(key, value)


def test_verification_catches_lost_short_and_changed_values(tmp_path: Path) -> None:
    build(SharedMemoryStore("v"))
    with pytest.raises(OSError, match="did not verify") as info:
        shmstore.save("shm://v", DroppingStore(LocalStore(tmp_path / "a")))
    assert info.value.errno == errno.EIO
    assert "missing: 't/c/0/0'" in str(info.value)
    assert "'t/c/1/1'" in str(info.value)
    flipped = FlippingStore(LocalStore(tmp_path / "b"))
    shmstore.save("shm://v", flipped)  # same sizes: the default check passes
    with pytest.raises(OSError, match="other bytes: 't/c/0/1'"):
        shmstore.save("shm://v", flipped, overwrite=True, verify="content")
    report = shmstore.save("shm://v", flipped, overwrite=True, verify=False)
    assert report.verified is None


def test_progress_quiet_off_a_terminal(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    build(SharedMemoryStore("quiet"))
    shmstore.save("shm://quiet", tmp_path / "a.zarr")  # stderr is not a TTY here
    shmstore.save("shm://quiet", tmp_path / "b.zarr", progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    shmstore.save("shm://quiet", tmp_path / "c.zarr", progress=True, concurrency=2)
    out, err = capfd.readouterr()
    assert out == "" and "copy" in err and "verify" in err


def test_report_is_a_value() -> None:
    r = TransferReport("a", "b", keys=2, nbytes=1 << 30, seconds=0.5, verified="size")
    assert r.gib_per_s == 2.0


def codec_names(path: Path) -> list[str]:
    return [c["name"] for c in json.loads((path / "zarr.json").read_text())["codecs"]]


def test_load_writes_raw_chunks_by_default(shm_root: Path, tmp_path: Path) -> None:
    disk = tmp_path / "climate.zarr"
    arrays = build(LocalStore(disk))  # zarr's default codecs: Zstandard
    assert codec_names(disk / "t") == ["bytes", "zstd"]
    report = shmstore.load(disk, "shm://raw", verify="content")
    ns = shm_root / "raw"
    assert report.reencoded == ("model/run1/u", "t")
    assert "2 arrays re-encoded" in str(report)
    assert set(files(ns)) == set(files(disk))  # the same keys, edge chunks included
    for path in arrays:
        assert codec_names(ns / path) == ["bytes"]  # no compressor, no filter
    check(SharedMemoryStore("raw", read_only=True), arrays)
    # A chunk file is the chunk's raw bytes; an edge chunk is padded with the fill value.
    assert (ns / "t/c/0/0").read_bytes() == arrays["t"][:16, :16].astype("<f4").tobytes()
    tail = np.zeros((16, 16), "<f4")
    tail[: 40 - 32, : 30 - 16] = arrays["t"][32:, 16:]
    assert (ns / "t/c/2/1").read_bytes() == tail.tobytes()
    # Reads are views of the shared pages, as for any raw chunk.
    store = SharedMemoryStore("raw", read_only=True)
    a = store.get_sync("t/c/0/0").as_numpy_array()
    b = store.get_sync("t/c/0/0").as_numpy_array()
    assert np.shares_memory(a, b) and not a.flags.writeable
    assert RawChunks.of(zarr.open_array(store, path="t", mode="r"), str(shm_root), "raw")
    # Loading what is already raw copies it as it is.
    again = shmstore.load("shm://raw", "shm://raw2")
    assert again.reencoded == () and files(shm_root / "raw2") == files(ns)


def test_save_compresses_only_when_asked(shm_root: Path, tmp_path: Path) -> None:
    data = np.zeros((64, 64))
    data[::7] = np.arange(64)
    shmstore.persist(data, "shm://pz/x", chunks=(16, 64))
    plain = shmstore.save("shm://pz", tmp_path / "plain.zarr")  # default: as it is
    assert plain.reencoded == ()
    assert files(tmp_path / "plain.zarr") == files(shm_root / "pz")
    packed = shmstore.save("shm://pz", tmp_path / "z.zarr", compressors=ZstdCodec())
    assert packed.reencoded == ("x",)
    assert codec_names(tmp_path / "z.zarr" / "x") == ["bytes", "zstd"]
    assert packed.nbytes < plain.nbytes
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "z.zarr", path="x")[:], data)
    with pytest.raises(ValueError, match="'gzip'"):
        shmstore.save("shm://pz", tmp_path / "bad.zarr", compressors="gzip")
