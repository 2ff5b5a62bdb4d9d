"""``shmcache::``: the host cache as an fsspec chained layer, over real HTTP and local sources."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import dask.array as da
import fsspec
import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from conftest import run_python
from sources import HTTPSource

import shmstore
from shmstore._cachefs import SharedMemoryCacheFileSystem
from shmstore._cli import main as cli

pytest.importorskip("aiohttp", reason="fsspec's HTTP filesystem needs aiohttp")

DATA = np.arange(60 * 40, dtype="i4").reshape(60, 40)


def make_source(path: Path, *, shards: tuple[int, int] | None = None) -> Path:
    """A Zarr on disk with array ``a`` (6x4 chunks of 10x10, or sharded)."""
    z = zarr.create_array(
        str(path), name="a", shape=DATA.shape, chunks=(10, 10), shards=shards, dtype="i4"
    )
    z[:] = DATA
    return path


def chunk_gets(gets: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in gets.items() if "/c/" in k}


@pytest.fixture
def http(tmp_path: Path):  # type: ignore[no-untyped-def]
    make_source(tmp_path / "data.zarr")
    with HTTPSource(tmp_path) as server:
        yield server


def test_entry_point_registers_the_protocol() -> None:
    assert fsspec.get_filesystem_class("shmcache") is SharedMemoryCacheFileSystem


def test_zarr_dask_and_processes_read_through_one_cache(http: HTTPSource) -> None:
    url = f"shmcache::{http.url}/data.zarr"
    z = zarr.open_array(url, path="a", mode="r")
    np.testing.assert_array_equal(z[:], DATA)
    first = chunk_gets(http.gets())
    assert len(first) == 24 and set(first.values()) == {1}
    np.testing.assert_array_equal(da.from_zarr(url, component="a").compute(), DATA)
    # two unrelated processes of the host read it all again: from shared memory
    code = (
        "import sys, zarr, numpy as np\n"
        "z = zarr.open_array(sys.argv[1], path='a', mode='r')\n"
        "print(int(z[:].sum()))\n"
    )
    for _ in range(2):
        assert int(run_python(code, url).stdout) == int(DATA.sum())
    assert chunk_gets(http.gets()) == first
    fs, _ = fsspec.url_to_fs(url)
    stats = fs.stats()
    assert stats["bytes_fetched"] > 0 and stats["hits"] >= 24  # the children's hits too
    assert stats["namespace"].startswith("cache-") and stats["source"].endswith("/data.zarr")
    fs.destroy()


def test_options_under_the_protocol(http: HTTPSource, shm_root: Path) -> None:
    options = {"shmcache": {"namespace": "web", "capacity": "1 MiB", "expiry": 30}}
    z = zarr.open_array(f"shmcache::{http.url}/data.zarr", path="a", storage_options=options)
    np.testing.assert_array_equal(z[10:30], DATA[10:30])
    assert (shm_root / "web" / "a" / "c" / "1" / "0").is_file()
    out = CliRunner().invoke(cli, ["info", "web", "--json"])
    assert out.exit_code == 0, out.output
    record = json.loads(out.output)
    assert record["capacity"] == 1 << 20
    stats = record["cache_stats"]
    assert stats["misses"] >= 8 and stats["expiry"] == 30 and stats["scratch"] is False
    out = CliRunner().invoke(cli, ["info", "web"])
    assert "misses" in out.output and "expiry 30 s" in out.output
    out = CliRunner().invoke(cli, ["du", "--json"])
    assert any(r.get("cache_stats") for r in json.loads(out.output)["entries"])


def test_xarray_opens_through_the_cache(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    ds = xr.Dataset({"t": (("y", "x"), DATA.astype("f8"))})
    ds.to_zarr(tmp_path / "ds.zarr", zarr_format=3, consolidated=False)
    with HTTPSource(tmp_path) as server:
        url = f"shmcache::{server.url}/ds.zarr"
        for _ in range(2):
            got = xr.open_zarr(url, consolidated=False)
            np.testing.assert_array_equal(got["t"].values, DATA)
        assert set(chunk_gets(server.gets()).values()) == {1}


def test_shard_ranges_fetch_the_shard_once(tmp_path: Path) -> None:
    make_source(tmp_path / "sharded.zarr", shards=(20, 20))
    with HTTPSource(tmp_path) as server:
        z = zarr.open_array(f"shmcache::{server.url}/sharded.zarr", path="a", mode="r")
        np.testing.assert_array_equal(z[:], DATA)
        for row in range(0, 60, 10):  # one inner chunk at a time
            np.testing.assert_array_equal(z[row : row + 10, :10], DATA[row : row + 10, :10])
        shards = chunk_gets(server.gets())
    assert len(shards) == 6 and set(shards.values()) == {1}


def test_expiry_sees_a_changed_source(tmp_path: Path) -> None:
    src = make_source(tmp_path / "data.zarr")
    url = f"shmcache::file://{src}"
    keep = {"shmcache": {"namespace": "keep"}}
    fresh = {"shmcache": {"namespace": "fresh", "expiry": 60}}
    for options in (keep, fresh):
        assert zarr.open_array(url, path="a", storage_options=options)[0, 0] == 0
    zarr.open_array(str(src), path="a", mode="r+")[:10, :10] = -7  # the source changes
    # within the expiry, both still serve what they cached
    for options in (keep, fresh):
        assert zarr.open_array(url, path="a", storage_options=options)[0, 0] == 0
    # once the cached copy is older than the expiry, the next read fetches it again
    root = Path(os.environ["SHMSTORE_ROOT"])
    old = os.stat(root / "fresh" / "a" / "c" / "0" / "0").st_mtime - 61
    os.utime(root / "fresh" / "a" / "c" / "0" / "0", (old, old))
    assert zarr.open_array(url, path="a", storage_options=fresh)[0, 0] == -7
    assert zarr.open_array(url, path="a", storage_options=keep)[0, 0] == 0
    fs, _ = fsspec.url_to_fs(url, shmcache={"namespace": "fresh", "expiry": 60})
    assert fs.stats()["expired"] == 1


def test_write_through_and_scratch(tmp_path: Path, shm_root: Path) -> None:
    src = make_source(tmp_path / "data.zarr")
    url = f"shmcache::file://{src}"
    x = da.from_array(DATA * 2, chunks=(10, 10))
    x.to_zarr(url, component="twice")
    # the source has it, and so has the host's cache
    np.testing.assert_array_equal(zarr.open_array(str(src), path="twice")[:], DATA * 2)
    fs, _ = fsspec.url_to_fs(url)
    assert fs.stats()["writes"] >= 24
    assert (shm_root / fs.namespace / "twice" / "c" / "0" / "0").is_file()
    # a scratch tier writes this host's shared memory only, and says so in its name
    scratch = {"shmcache": {"writes": "local-only"}}
    z = zarr.open_array(url, path="a", mode="r+", storage_options=scratch)
    z[:10, :10] = 5
    assert zarr.open_array(url, path="a", storage_options=scratch)[0, 0] == 5
    assert zarr.open_array(str(src), path="a")[0, 0] == 0
    sfs, _ = fsspec.url_to_fs(url, shmcache={"writes": "local-only"})
    assert sfs.namespace.startswith("scratch-")
    ro, _ = fsspec.url_to_fs(url, shmcache={"writes": None})
    with pytest.raises(PermissionError, match="read-only"):
        ro.pipe_file(f"{src}/a/zarr.json", b"{}")


def test_fsspec_file_api(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hello.txt").write_bytes(b"hello world")
    with fsspec.open(f"shmcache::file://{tmp_path}/src/hello.txt", "rb") as f:
        assert f.read() == b"hello world"
    fs, path = fsspec.url_to_fs(f"shmcache::file://{tmp_path}/src")
    # fsspec >= 2025.10 gives the source's root as the path; before, "" (paths relative to it)
    path = path or "."
    assert fs.cat_file(f"{path}/hello.txt", 6, 11) == b"world"
    assert fs.cat_ranges([f"{path}/hello.txt"], [0], [5]) == [b"hello"]
    with pytest.raises(FileNotFoundError, match=r"nothing\.txt"):
        fs.cat_file(f"{path}/nothing.txt")
    with pytest.raises(ValueError, match="not under the cached source"):
        fs.cat_file("/elsewhere/file")
    fs.pipe_file(f"{path}/new/file.bin", b"\x01\x02")
    assert (tmp_path / "src" / "new" / "file.bin").read_bytes() == b"\x01\x02"
    fs.rm(f"{path}/new", recursive=True)
    assert not (tmp_path / "src" / "new").exists() and not fs.exists(f"{path}/new/file.bin")


def test_pickled_layer_resolves_root_where_unpickled(tmp_path: Path, shm_root: Path) -> None:
    src = make_source(tmp_path / "data.zarr")
    other = tmp_path / "other-host"
    other.mkdir(mode=0o700)
    fs, path = fsspec.url_to_fs(f"shmcache::file://{src}")
    path = path or "."  # fsspec < 2025.10: paths relative to the source's root
    blob = pickle.dumps(fs)
    code = (
        "import pickle, sys\n"
        "fs = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
        "fs.cat_file(sys.argv[2] + '/a/zarr.json')\n"
        "print(fs.root, fs.namespace)\n"
    )
    out = run_python(code, blob.hex(), path, env={"SHMSTORE_ROOT": str(other)})
    assert out.stdout.split() == [str(other), fs.namespace]
    assert (other / fs.namespace / "a" / "zarr.json").is_file()
    assert not (shm_root / fs.namespace).exists()


def test_bad_options_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="writes='maybe'"):
        fsspec.url_to_fs(f"shmcache::file://{tmp_path}", shmcache={"writes": "maybe"})
    with pytest.raises(ValueError, match="expiry"):
        fs, _ = fsspec.url_to_fs(f"shmcache::file://{tmp_path}", shmcache={"expiry": -1})
        fs.host_cache  # noqa: B018
    assert shmstore.CachingStore is not None and sys.version_info >= (3, 11)


def test_capacity_evicts_cold_chunks(tmp_path: Path) -> None:
    src = tmp_path / "big.zarr"
    data = np.arange(64 * 1024, dtype="f8").reshape(64, 1024)
    zarr.create_array(str(src), name="a", data=data, chunks=(8, 1024), compressors=None)
    options = {"shmcache": {"capacity": 3 * 8 * 1024 * 8}}  # three of the eight chunks
    z = zarr.open_array(f"shmcache::file://{src}", path="a", storage_options=options)
    for _ in range(2):
        np.testing.assert_array_equal(z[:], data)
    fs, _ = fsspec.url_to_fs(f"shmcache::file://{src}", **options)
    stats = fs.stats()
    assert stats["evictions"] > 0 and stats["cached_bytes"] <= stats["capacity"]
    assert stats["bytes_fetched"] > data.nbytes  # the evicted ones came again


def test_a_source_url_is_required() -> None:
    with pytest.raises(ValueError, match="source's root URL"):
        fsspec.filesystem("shmcache", target_protocol="file")
