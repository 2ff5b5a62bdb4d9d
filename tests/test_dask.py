"""Dask on shm:// arrays: threads, processes (spawn) and a real LocalCluster."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import _BASE, run_python
from zarr.codecs import TransposeCodec, ZstdCodec

import shmstore
from shmstore import SharedMemoryFileSystem, SharedMemoryStore
from shmstore._dask import RawChunks

distributed = pytest.importorskip("distributed")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Functions of this module run inside spawned worker processes, where the test
# module is not importable: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _data(shape: tuple[int, ...] = (400, 300), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype="f8")


def _write(url: str, data: np.ndarray, chunks: tuple[int, ...] = (100, 100)) -> zarr.Array:
    z = zarr.create_array(url, shape=data.shape, chunks=chunks, dtype=data.dtype)
    z[:] = data
    return z


# ------------------------------------------------------------------- routes
# The main read/write tests run on every route to a namespace:
#   store:  a plain namespace, handed to zarr and dask as a SharedMemoryStore;
#   url:    a plain namespace, reached by shm:// URL;
#   tiered: a namespace created first with a capacity and a spill directory,
#           small enough that most chunks spill, then reached by shm:// URL
#           alone (the tiering is recorded in the namespace).

TIER_CAPACITY = 100_000  # bytes: one 100x100 f8 chunk (80 kB) fits, the rest spill


class Route:
    def __init__(self, kind: str, spill_base: Path) -> None:
        self.kind = kind
        self.spill_base = spill_base

    def __repr__(self) -> str:
        return f"Route({self.kind!r})"

    def namespace(self, ns: str) -> str:
        """Create namespace *ns* as this route's tests find it; return its name."""
        if self.kind == "tiered":
            SharedMemoryStore(ns, capacity=TIER_CAPACITY, spill=self.spill_base / ns)
        return ns

    def from_zarr(self, ns: str, path: str) -> da.Array:
        if self.kind == "store":
            return da.from_zarr(SharedMemoryStore(ns), component=path)
        return da.from_zarr(f"shm://{ns}/{path}")

    def to_zarr(self, x: da.Array, ns: str, path: str) -> None:
        if self.kind == "store":
            x.to_zarr(SharedMemoryStore(ns), component=path)
        else:
            x.to_zarr(f"shm://{ns}/{path}")

    def create_array(self, ns: str, path: str, **kwargs: Any) -> zarr.Array:
        if self.kind == "store":
            return zarr.create_array(SharedMemoryStore(ns), name=path, **kwargs)
        return zarr.create_array(f"shm://{ns}/{path}", **kwargs)

    def open_array(self, ns: str, path: str) -> zarr.Array:
        if self.kind == "store":
            return zarr.open_array(SharedMemoryStore(ns, read_only=True), path=path, mode="r")
        return zarr.open_array(f"shm://{ns}/{path}", mode="r")

    def check_spilled(self, ns: str, path: str) -> None:
        """On the tiered route, some chunks of array *path* are files in the spill directory."""
        if self.kind != "tiered":
            return
        chunks = self.spill_base / ns / path / "c"
        assert chunks.is_dir() and any(p.is_file() for p in chunks.rglob("*")), (
            f"no chunk of {path!r} spilled to {chunks}"
        )


@pytest.fixture(params=["store", "url", "tiered"])
def route(request: pytest.FixtureRequest, tmp_path: Path) -> Route:
    return Route(request.param, tmp_path / "spill")


@pytest.fixture(scope="module")
def cluster_root() -> Iterator[Path]:
    """The shared-memory root of the cluster's host (client and workers alike)."""
    root = Path(_BASE) / f"shmstore-test-cluster-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o700)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def client(cluster_root: Path) -> Iterator[distributed.Client]:
    """One LocalCluster of 2 worker processes for the whole module (2 cores here).

    The workers are given ``$SHMSTORE_ROOT`` in their environment, as a host's
    workers would be: a store, cache or filesystem pickled without an explicit
    root resolves it where it is unpickled, in the worker.
    """
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        env={"SHMSTORE_ROOT": str(cluster_root)},
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture
def host_root(
    client: distributed.Client, cluster_root: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The test's root is the cluster host's: the client and its workers share it."""
    monkeypatch.setenv("SHMSTORE_ROOT", str(cluster_root))
    try:
        yield cluster_root
    finally:
        for entry in list(cluster_root.iterdir()):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()


# ------------------------------------------------------------------ threads


def test_from_zarr_and_to_zarr_threads(shm_root: Path, route: Route) -> None:
    data = _data()
    ns = route.namespace("thr")
    route.create_array(ns, "t", shape=data.shape, chunks=(100, 100), dtype=data.dtype)[:] = data
    x = route.from_zarr(ns, "t")
    assert x.chunks == ((100,) * 4, (100,) * 3)
    with dask.config.set(scheduler="threads"):
        assert np.allclose(x.mean().compute(), data.mean())
        route.to_zarr(x * 2, ns, "u")
        assert np.array_equal(route.from_zarr(ns, "u").compute(), data * 2)
        # da.store into an array created through the direct store
        store = shmstore.open_store(f"shm://{ns}")
        z = zarr.create_array(store, name="v", shape=data.shape, chunks=(50, 50), dtype="f8")
        da.store(x + 1, z, lock=False)
    assert np.array_equal(route.open_array(ns, "v")[:], data + 1)
    assert np.array_equal(zarr.open_array(f"shm://{ns}/u", mode="r")[:], data * 2)
    for path in ("t", "u", "v"):
        route.check_spilled(ns, path)


def test_unknown_namespace_names_it(shm_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        da.from_zarr("shm://nowhere/t")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        shmstore.open_store("shm://nowhere", read_only=True)
    assert SharedMemoryFileSystem().ls("") == []


def test_graph_carries_names_not_bytes(shm_root: Path) -> None:
    small = shmstore.persist(da.zeros((64, 64), chunks=32), "shm://g/small")
    big = shmstore.persist(da.zeros((2048, 2048), chunks=512), "shm://g/big")  # 32 MiB
    for y in (da.from_zarr("shm://g/big"), big):
        graph = dict(y.__dask_graph__())
        assert len(cloudpickle.dumps(graph)) < 64 * 1024
    # the graph of a 32 MiB array pickles as small as that of a 32 KiB one
    sizes = [len(cloudpickle.dumps(dict(y.sum().__dask_graph__()))) for y in (small, big)]
    assert sizes[1] < sizes[0] + 16 * 1024
    # and the zarr array inside it pickles by name
    z = zarr.open_array("shm://g/big")
    assert len(pickle.dumps(z)) < 16 * 1024
    assert len(pickle.dumps(shmstore.open_store("shm://g"))) < 1024


# ------------------------------------------------------------------ persist


def test_persist(shm_root: Path, route: Route) -> None:
    data = _data((300, 200))
    ns = route.namespace("per")
    x = da.from_array(data, chunks=((100, 150, 50), (200,)))  # irregular: rechunked
    y = shmstore.persist(x, f"shm://{ns}/x")
    assert y.chunks == ((150, 150), (200,))
    assert y.name.startswith("shm-persist-")
    assert np.array_equal(y.compute(scheduler="threads"), data)
    route.check_spilled(ns, "x")
    z = route.open_array(ns, "x")
    assert z.compressors == ()  # raw chunks: reads map the segments
    assert np.array_equal(z[:], data)
    with pytest.raises(ValueError, match="'x'"):  # zarr's ContainsArrayError
        shmstore.persist(x, f"shm://{ns}/x")
    y2 = shmstore.persist(data[:10], f"shm://{ns}/x", overwrite=True, chunks=(5, 200))
    assert y2.chunks == ((5, 5), (200,))
    assert np.array_equal(y2.compute(), data[:10])
    root_ns = route.namespace("per-root")
    root_array = shmstore.persist(np.arange(10), f"shm://{root_ns}")
    assert zarr.open_array(f"shm://{root_ns}").shape == (10,)
    assert root_array.sum().compute() == 45
    # an unrelated process reads it by name
    code = f"import dask.array as da; print(da.from_zarr('shm://{ns}/x').sum().compute())"
    assert float(run_python(code).stdout) == pytest.approx(data[:10].sum())


def test_persist_reads_chunks_as_views(shm_root: Path) -> None:
    data = _data((103, 57), seed=2)
    y = shmstore.persist(da.from_array(data, chunks=(20, 10)), "shm://raw/x")
    (raw,) = {v for v in y.dask.values() if isinstance(v, RawChunks)}
    assert len(pickle.dumps(raw)) < 2048
    a, b = raw[20:40, 10:20], raw[25:30, 12:15]
    assert not a.flags.writeable
    assert np.shares_memory(a, b)  # both views of the one mapped segment
    for sel in [
        np.s_[5:7, 3],
        np.s_[:, ::3],
        np.s_[-1],
        np.s_[10:90, 5:50],
        np.s_[[1, 5, 7]],
        np.s_[..., 4],
        np.s_[100:103, 50:57],
        np.s_[40:40],
    ]:
        assert np.array_equal(y[sel].compute(), data[sel]), sel
        assert np.array_equal(raw[sel], data[sel]), sel
    # a chunk never written reads as zarr's fill value
    shmstore.open_store("shm://raw").delete_sync("x/c/0/0")
    assert not raw[0:20, 0:10].any()


@pytest.mark.parametrize("dtype", [">f4", "<i8", "bool", "u1", "M8[s]", "c16"])
def test_persist_dtypes(shm_root: Path, route: Route, dtype: str) -> None:
    data = (np.random.default_rng(3).random((300, 70)) * 100).astype(dtype)
    ns = route.namespace("dt")
    y = shmstore.persist(data, f"shm://{ns}/a", chunks=(80, 30))
    assert any(isinstance(v, RawChunks) for v in y.dask.values())
    assert np.array_equal(y.compute(), data)
    assert np.array_equal(route.open_array(ns, "a")[:], data)
    if data.nbytes > 2 * TIER_CAPACITY:
        route.check_spilled(ns, "a")


def test_persist_compressed_goes_through_zarr(shm_root: Path) -> None:
    data = _data((60, 60))
    y = shmstore.persist(data, "shm://cmp/a", chunks=(25, 25), compressors=ZstdCodec())
    assert not any(isinstance(v, RawChunks) for v in y.dask.values())
    assert np.array_equal(y.compute(), data)
    z = zarr.open_array("shm://cmp/a", mode="r")
    assert [type(c) for c in z.compressors] == [ZstdCodec]  # the explicit compressor, honoured


def test_persist_writes_raw_chunks_by_default(shm_root: Path) -> None:
    data = _data((64, 48), seed=4)
    shmstore.persist(da.from_array(data, chunks=(16, 48)), "shm://rawdef/x")
    meta = json.loads((shm_root / "rawdef" / "x" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["bytes"]  # no filter, no compressor
    z = zarr.open_array("shm://rawdef/x", mode="r")
    assert z.compressors == () and z.filters == ()
    # Each chunk file is the chunk's raw bytes: what a zero-copy view maps.
    chunk = (shm_root / "rawdef" / "x" / "c" / "1" / "0").read_bytes()
    assert chunk == data[16:32].astype("<f8").tobytes()
    # An explicit filter is honoured too, and its reads go through zarr.
    y = shmstore.persist(data, "shm://rawdef/d", filters=[TransposeCodec(order=(1, 0))])
    filters = zarr.open_array("shm://rawdef/d", mode="r").filters
    assert [type(f) for f in filters] == [TransposeCodec]
    assert not any(isinstance(v, RawChunks) for v in y.dask.values())
    assert np.array_equal(y.compute(), data)


# ---------------------------------------------------------------- processes


# Spawned workers are slow to start on 2 cores: the plain URL route is what the
# tiered route does (by name), less the spill tier.
@pytest.mark.parametrize("route", ["store", "tiered"], indirect=True)
def test_processes_scheduler_spawn(shm_root: Path, route: Route) -> None:
    data = _data()
    ns = route.namespace("proc")
    route.create_array(ns, "t", shape=data.shape, chunks=(100, 100), dtype=data.dtype)[:] = data
    x = route.from_zarr(ns, "t")
    with dask.config.set({"scheduler": "processes", "multiprocessing.context": "spawn"}):
        total = (x.sum(axis=0) + x.max(axis=0)).compute(num_workers=2)
        np.testing.assert_allclose(total, data.sum(axis=0) + data.max(axis=0))
        # writes from spawned processes land in the same namespace
        da.store(
            x * 3,
            zarr.create_array(
                shmstore.open_store(f"shm://{ns}"),
                name="u",
                shape=data.shape,
                chunks=(100, 100),
                dtype="f8",
            ),
            lock=False,
            num_workers=2,
        )
    assert np.array_equal(route.open_array(ns, "u")[:], data * 3)
    route.check_spilled(ns, "t")
    route.check_spilled(ns, "u")


# -------------------------------------------------------------- distributed


def _pid() -> int:
    return os.getpid()


def _pipe(root: str, path: str, value: bytes) -> int:
    SharedMemoryFileSystem(root=root).pipe_file(path, value)
    return os.getpid()


def _cat(root: str, path: str) -> tuple[int, bytes]:
    return os.getpid(), SharedMemoryFileSystem(root=root).cat_file(path)


def _fill_region(url: str, root: str, row: int, value: float) -> int:
    z = zarr.open_array(url, mode="r+", storage_options={"root": root})
    z[row] = value
    return os.getpid()


def _read_row(url: str, root: str, row: int) -> tuple[int, list[float]]:
    z = zarr.open_array(url, mode="r", storage_options={"root": root})
    return os.getpid(), z[row].tolist()


def test_cluster_reductions_equal_numpy(client: distributed.Client, host_root: Path) -> None:
    data = _data((600, 400))
    _write("shm://cl/t", data, chunks=(150, 100))
    x = da.from_zarr("shm://cl/t")
    mean, std, colmax = dask.compute(x.mean(), x.std(), x.max(axis=0))
    assert np.allclose(mean, data.mean())
    assert np.allclose(std, data.std())
    assert np.array_equal(colmax, data.max(axis=0))
    # both workers took part, each reading by name
    assert len(set(client.run(_pid).values())) == 2


def test_cluster_to_zarr_store_and_persist(client: distributed.Client, host_root: Path) -> None:
    data = _data((400, 400), seed=1)
    x = da.from_array(data, chunks=100)
    (x + 1).to_zarr("shm://clw/plus")
    assert np.array_equal(zarr.open_array("shm://clw/plus")[:], data + 1)
    z = zarr.create_array(
        shmstore.open_store("shm://clw"),
        name="neg",
        shape=data.shape,
        chunks=(100, 100),
        dtype="f8",
    )
    da.store(-x, z, lock=False)
    assert np.array_equal(zarr.open_array("shm://clw/neg")[:], -data)
    y = shmstore.persist(da.from_zarr("shm://clw/plus") * 2, "shm://clw/twice")
    assert np.allclose(y.sum().compute(), (2 * (data + 1)).sum())
    # an unrelated process sees what the workers wrote
    code = "import zarr; print(zarr.open_array('shm://clw/twice')[:].sum())"
    assert float(run_python(code).stdout) == pytest.approx((2 * (data + 1)).sum())
    # a NumPy array is persisted from the client: no graph carries its bytes
    big = _data((2048, 1024), seed=4)  # 16 MiB: distributed warns of graphs over 10 MB
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        p = shmstore.persist(big, "shm://clw/big", chunks=(256, 1024))
        assert np.isclose(p.mean().compute(), big.mean())
    assert len(cloudpickle.dumps(dict(p.__dask_graph__()))) < 64 * 1024


def test_worker_write_visible_to_other_worker_and_client(
    client: distributed.Client, shm_root: Path
) -> None:
    # an explicit root travels as given (the workers' own is another directory)
    a, b = sorted(client.scheduler_info()["workers"])
    root = str(shm_root)
    pid_a = client.submit(_pipe, root, "vis/k", b"from worker a", workers=[a], pure=False).result()
    pid_b, got = client.submit(_cat, root, "vis/k", workers=[b], pure=False).result()
    assert pid_a != pid_b and got == b"from worker a"
    assert SharedMemoryFileSystem().cat_file("vis/k") == b"from worker a"
    # the same through a zarr array opened by URL in each worker
    zarr.create_array("shm://vis/z", shape=(4, 8), chunks=(1, 8), dtype="f8", fill_value=0)
    client.submit(_fill_region, "shm://vis/z", root, 2, 7.5, workers=[a], pure=False).result()
    pid_b, row = client.submit(_read_row, "shm://vis/z", root, 2, workers=[b], pure=False).result()
    assert row == [7.5] * 8
    assert zarr.open_array("shm://vis/z")[2].tolist() == [7.5] * 8


def _roots(objects: list[Any]) -> list[str]:
    return [obj.root for obj in objects]


def test_root_resolves_on_the_worker(
    client: distributed.Client, cluster_root: Path, shm_root: Path
) -> None:
    # made here, where $SHMSTORE_ROOT is the test's root; unpickled in a worker,
    # whose $SHMSTORE_ROOT is the cluster's
    SharedMemoryStore("hosted")
    implicit = [SharedMemoryStore("hosted"), SharedMemoryFileSystem()]
    explicit = [SharedMemoryStore("hosted", root=shm_root), SharedMemoryFileSystem(root=shm_root)]
    SharedMemoryStore("hosted", root=cluster_root)  # so that the worker finds it
    got = client.submit(_roots, implicit + explicit, pure=False).result()
    assert got == [str(cluster_root)] * 2 + [str(shm_root)] * 2
    shutil.rmtree(cluster_root / "hosted")


def test_cluster_unknown_namespace(client: distributed.Client, shm_root: Path) -> None:
    root = str(shm_root)
    fut = client.submit(_cat, root, "nowhere/k", pure=False)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        fut.result()


def test_example_dask_processes(shm_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "dask_processes.py"), "--size-mib", "16", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "results equal: True" in proc.stdout
    assert "shm://" in proc.stdout and "scattered" in proc.stdout
    assert list(shm_root.iterdir()) == []
