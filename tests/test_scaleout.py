"""Two simulated hosts: one scheduler, two groups of worker processes, two roots.

Each group's workers get their own ``$SHMSTORE_ROOT`` (a private directory
stands in for each host's ``/dev/shm``) and read real sources on 127.0.0.1
through ``shmcache::``: the standard library's HTTP server and moto's S3
server, both counting what they serve. What must hold (docs/multihost.md):
results equal NumPy's; each host fetches each chunk from the source once,
however many of its workers read it; each host's cache lives in its own root;
a write-through on one host is read on the other once the expiry has passed.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import dask.array as da
import fsspec
import numpy as np
import pytest
import zarr
from conftest import _BASE, run_python
from sources import HTTPSource, S3Source

import shmstore
from shmstore._names import transient_name

distributed = pytest.importorskip("distributed")
pytest.importorskip("aiohttp", reason="fsspec's HTTP filesystem needs aiohttp")

# Functions of this module run inside the workers, where it is not importable.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

DATA = np.arange(80 * 60, dtype="f8").reshape(80, 60)
CHUNKS = (20, 20)  # 4 x 3 = 12 chunks
N_CHUNKS = 12
HOSTS = ("a", "b")
WORKERS_PER_HOST = 2
EXPIRY = 3.0  # seconds, for the write-through test


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def host_roots() -> Iterator[dict[str, Path]]:
    """One private root per simulated host."""
    roots = {}
    for host in HOSTS:
        root = Path(_BASE) / f"shmstore-test-host-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        root.mkdir(mode=0o700)
        roots[host] = root
    try:
        yield roots
    finally:
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def leftover(host_roots: dict[str, Path]) -> Path:
    """What a crashed process left in host a's root before the cluster started."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    pid = int(dead.stdout)
    name = transient_name("new").replace(f".{os.getpid()}.", f".{pid}.")
    path = host_roots["a"] / name
    path.mkdir(mode=0o700)
    return path


@pytest.fixture(scope="module")
def cluster(host_roots: dict[str, Path], leftover: Path) -> Iterator[distributed.Client]:
    """One scheduler; worker processes a0, a1 on host a's root and b0, b1 on host b's."""
    workers = {
        f"{host}{i}": {
            "cls": distributed.Nanny,
            "options": {
                "nthreads": 1,
                "env": {"SHMSTORE_ROOT": str(host_roots[host])},
                "silence_logs": logging.ERROR,
            },
        }
        for host in HOSTS
        for i in range(WORKERS_PER_HOST)
    }
    spec = distributed.SpecCluster(
        scheduler={
            "cls": distributed.Scheduler,
            "options": {"dashboard_address": None},
        },
        workers=workers,
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(spec)
    try:
        yield client
    finally:
        client.close()
        spec.close()


def _by_host(client: distributed.Client) -> dict[str, list[str]]:
    """Worker addresses of each simulated host, by worker name."""
    out: dict[str, list[str]] = {host: [] for host in HOSTS}
    for address, info in client.scheduler_info()["workers"].items():
        out[str(info["name"])[0]].append(address)
    return out


def _chunk_files(root: Path, namespace: str, array: str = "a") -> set[str]:
    base = root / namespace / array / "c"
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}


# ---------------------------------------------------- functions run in workers
def _read_all(url: str, options: dict[str, Any]) -> tuple[str, np.ndarray]:
    z = zarr.open_array(url, path="a", mode="r", storage_options=options)
    return os.environ["SHMSTORE_ROOT"], z[:]


def _read_row(url: str, options: dict[str, Any], row: int) -> np.ndarray:
    return zarr.open_array(url, path="a", mode="r", storage_options=options)[row]


def _discard(url: str, options: dict[str, Any], key: str) -> None:
    fs, _ = fsspec.url_to_fs(url, **options)
    fs.host_cache.discard(key)


def _write_row(url: str, options: dict[str, Any], row: int, value: float) -> None:
    z = zarr.open_array(url, path="a", mode="r+", storage_options=options)
    z[row] = value


def _check_everyone_reads_once(
    client: distributed.Client,
    url: str,
    options: dict[str, Any],
    gets: Any,
    host_roots: dict[str, Path],
    shm_root: Path,
    namespace: str,
    *,
    with_dask: bool,
) -> None:
    # every worker of both hosts reads every chunk, all at once
    replies = client.run(_read_all, url, options)
    assert len(replies) == len(HOSTS) * WORKERS_PER_HOST
    for _, got in replies.values():
        np.testing.assert_array_equal(got, DATA)
    assert {root for root, _ in replies.values()} == {str(r) for r in host_roots.values()}
    # a dask graph over the same URL, spread over both hosts: from shared memory
    if with_dask:
        x = da.from_zarr(url, component="a", storage_options=options)
        np.testing.assert_allclose(x.sum().compute(), DATA.sum())
    # each host holds every chunk in its own root; the client (a process of a
    # third host, here) read the metadata only, into its own root, for dask
    for root in host_roots.values():
        assert len(_chunk_files(root, namespace)) == N_CHUNKS
    assert (shm_root / namespace / "a" / "zarr.json").is_file() is with_dask
    assert not _chunk_files(shm_root, namespace)
    # and the source served each chunk twice: once to each host (each holds it)
    chunks = {k: n for k, n in gets().items() if "/a/c/" in k}
    assert len(chunks) == N_CHUNKS and set(chunks.values()) == {len(HOSTS)}, chunks


# --------------------------------------------------------------------- tests
def test_two_hosts_over_http(
    cluster: distributed.Client,
    host_roots: dict[str, Path],
    leftover: Path,
    shm_root: Path,
    tmp_path: Path,
) -> None:
    zarr.create_array(str(tmp_path / "data.zarr"), name="a", data=DATA, chunks=CHUNKS)
    with HTTPSource(tmp_path) as server:
        source = f"{server.url}/data.zarr"
        plugin = shmstore.HostTierPlugin(capacity="64 MiB", sources=[source])
        cluster.register_plugin(plugin)
        # the plugin reclaimed the dead process's leftover and opened each host's cache
        assert not leftover.exists()
        namespace = shmstore.SharedMemoryCacheFileSystem(source).namespace
        for root in host_roots.values():
            assert (root / namespace).is_dir()
        _check_everyone_reads_once(
            cluster,
            f"shmcache::{source}",
            {},
            server.gets,
            host_roots,
            shm_root,
            namespace,
            with_dask=True,
        )
        report = shmstore.HostTierPlugin.report(cluster)
    assert sorted(report) == sorted(f"{os.uname().nodename}:{r}" for r in host_roots.values())
    for caches in report.values():
        stats = caches[namespace]
        assert stats["capacity"] == 64 << 20 and stats["source"] == source
        # both workers of the host read every chunk; one of them fetched it
        assert stats["misses"] >= N_CHUNKS and stats["hits"] >= N_CHUNKS
        assert stats["bytes_fetched"] == stats["cached_bytes"] > 0


def test_two_hosts_over_s3_and_a_write_through(
    cluster: distributed.Client, host_roots: dict[str, Path], shm_root: Path
) -> None:
    pytest.importorskip("s3fs", reason="the S3 source needs s3fs")
    pytest.importorskip("moto.server", reason="the S3 source is moto's server (moto[server])")
    import s3fs

    with S3Source() as server:
        s3 = server.storage_options
        s3fs.S3FileSystem(**s3).call_s3("create_bucket", Bucket="bucket")
        z = zarr.create_array(
            "s3://bucket/data.zarr/a",
            shape=DATA.shape,
            chunks=CHUNKS,
            dtype=DATA.dtype,
            storage_options=s3,
        )
        z[:] = DATA
        server.reset()
        url = "shmcache::s3://bucket/data.zarr"
        options = {"s3": s3, "shmcache": {"expiry": EXPIRY}}
        namespace = shmstore.SharedMemoryCacheFileSystem("s3://bucket/data.zarr").namespace
        _check_everyone_reads_once(
            cluster, url, options, server.gets, host_roots, shm_root, namespace, with_dask=False
        )
        # host b drops its copy of row 0's chunk and reads it again: a fresh copy
        hosts = _by_host(cluster)
        b0 = hosts["b"][:1]
        cluster.submit(_discard, url, options, "a/c/0/0", workers=b0, pure=False).result()
        np.testing.assert_array_equal(
            cluster.submit(_read_row, url, options, 0, workers=b0, pure=False).result(), DATA[0]
        )
        copy = host_roots["b"] / namespace / "a" / "c" / "0" / "0"
        filled = copy.stat().st_mtime
        # host a writes row 0 through its cache: to the source and to host a's tier
        cluster.submit(
            _write_row, url, options, 0, -1.0, workers=hosts["a"][:1], pure=False
        ).result()
        got_a = cluster.submit(
            _read_row, url, options, 0, workers=hosts["a"][1:], pure=False
        ).result()
        assert (got_a == -1.0).all()
        # host b serves its copy until it is older than the expiry, then fetches again
        got_b = cluster.submit(_read_row, url, options, 0, workers=b0, pure=False).result()
        if time.time() - filled < EXPIRY:  # (a slow machine may have let it expire)
            np.testing.assert_array_equal(got_b, DATA[0])
        time.sleep(max(0.0, filled + EXPIRY - time.time()) + 0.05)  # the expiry itself
        for worker in hosts["b"]:
            got_b = cluster.submit(
                _read_row, url, options, 0, workers=[worker], pure=False
            ).result()
            assert (got_b == -1.0).all()
        # the durable store has the write
        np.testing.assert_array_equal(
            zarr.open_array("s3://bucket/data.zarr", path="a", storage_options=s3)[0], -1.0
        )


def test_pickled_cache_layer_opens_the_workers_host(
    cluster: distributed.Client, host_roots: dict[str, Path], tmp_path: Path
) -> None:
    # A filesystem made here (the client's root) travels to each host by name and
    # opens that host's shared memory there; an explicit root travels as given.
    zarr.create_array(str(tmp_path / "d.zarr"), name="a", data=DATA, chunks=CHUNKS)
    fs = shmstore.SharedMemoryCacheFileSystem(f"file://{tmp_path}/d.zarr")
    blob = pickle.dumps(fs)
    code = (
        "import os, pickle, sys\n"
        "fs = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
        "fs.cat_file(sys.argv[2])\n"
        "print(fs.root)\n"
    )
    for root in host_roots.values():
        out = run_python(
            code, blob.hex(), f"{tmp_path}/d.zarr/a/zarr.json", env={"SHMSTORE_ROOT": str(root)}
        )
        assert out.stdout.strip() == str(root)
        assert (root / fs.namespace / "a" / "zarr.json").is_file()


def test_import_shmstore_stays_light() -> None:
    code = (
        "import sys, shmstore\n"
        "shmstore.SharedMemoryCacheFileSystem\n"
        "print('distributed' in sys.modules, 'shmstore._distributed' in sys.modules)\n"
    )
    assert run_python(code).stdout.split() == ["False", "False"]
