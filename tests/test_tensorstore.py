"""Interoperability with an independent Zarr v3 implementation: tensorstore.

A namespace is a standard Zarr v3 directory layout, so tensorstore's ``zarr3``
driver over its ``file`` kvstore must read, at ``<root>/<ns>/<path>``, exactly
what shmstore wrote, and shmstore must read exactly what tensorstore wrote into
a namespace directory: same values bit for bit, same fill value where chunks
were never written, same dimension names and attributes, and no stray keys.
"""

from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec
from zarr.core.sync import sync

import shmstore

ts = pytest.importorskip(
    "tensorstore",
    reason="tensorstore is not installed (no wheel for this platform or Python); "
    "pip install 'shmstore[test]' where one exists",
)


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One array layout, expressed for both zarr-python and tensorstore."""

    id: str
    dtype: str
    codec: str  # "none", "zstd", "blosc" or "gzip"
    fill: Any
    shape: tuple[int, ...] = (20, 18)
    chunks: tuple[int, ...] = (4, 6)
    shards: tuple[int, ...] | None = None
    dims: tuple[str | None, ...] | None = None
    endian: str = "little"
    # The fill value as tensorstore's metadata spells it, where it is not the
    # plain JSON form of ``fill`` (a NaN with a payload, in hex).
    ts_fill: Any = None

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def grid(self) -> tuple[int, ...]:
        """The shape of what one stored key holds: a shard where sharded."""
        return self.shards or self.chunks

    @property
    def region(self) -> tuple[slice, ...]:
        """What the tests write: a corner that ends mid-chunk and leaves whole
        chunks (and, sharded, whole shards and inner chunks) never written."""
        return tuple(slice(0, n // 2 + 1) for n in self.shape)

    @property
    def tail(self) -> tuple[slice, ...]:
        """Whole stored keys (chunks, or shards) along the first axis that
        writing ``region`` never touches."""
        stop, step = self.region[0].stop, self.grid[0]
        return (slice(-(-stop // step) * step, None),)

    def fill_scalar(self) -> np.ndarray:
        return np.asarray(self.fill, dtype=self.np_dtype)


CASES = [
    Case("bool-raw", "bool", "none", fill=True),
    Case("int8-zstd-dims", "int8", "zstd", fill=-7, dims=("y", "x")),
    Case("uint16-blosc-sharded", "uint16", "blosc", fill=65535, shards=(8, 12)),
    Case("int32-gzip-bigendian", "int32", "gzip", fill=-123456, endian="big"),
    Case("int64-zstd-sharded", "int64", "zstd", fill=-(2**63), shards=(8, 12), dims=("t", None)),
    Case("float32-blosc-nan", "float32", "blosc", fill=np.nan, dims=("lat", "lon")),
    Case("float64-raw-sharded-negzero", "float64", "none", fill=-0.0, shards=(8, 12)),
    Case("complex64-gzip", "complex64", "gzip", fill=1 - 2j),
    Case(
        "complex128-zstd-sharded", "complex128", "zstd", fill=complex(np.nan, -0.0), shards=(4, 12)
    ),
    Case(
        "float32-gzip-sharded-3d",
        "float32",
        "gzip",
        fill=np.inf,
        shape=(6, 20, 18),
        chunks=(2, 4, 6),
        shards=(2, 8, 12),
        dims=("t", "y", "x"),
    ),
]

# Only tensorstore writes this one: zarr-python spells every NaN fill as "NaN",
# dropping a payload, so it cannot round-trip the other way.
NAN_PAYLOAD = Case(
    "float32-raw-nan-payload",
    "float32",
    "none",
    fill=np.array(0x7FC00001, dtype="<u4").view("<f4")[()],
    ts_fill="0x7fc00001",
)

case_params = [pytest.param(c, id=c.id) for c in CASES]


def values(case: Case) -> np.ndarray:
    """Deterministic data for ``case.region``, no chunk of it all fill (so
    every chunk it touches is stored), with awkward values where the dtype
    has them."""
    shape = tuple(s.stop for s in case.region)
    dtype = case.np_dtype
    rng = np.random.default_rng(sum(map(ord, case.id)))
    if dtype == np.bool_:
        out = np.indices(shape).sum(axis=0) % 3 == 1
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        out = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        out.flat[:2] = [info.min + 1, info.max - 1]
    elif dtype.kind == "f":
        out = (rng.standard_normal(shape) * 1e3).astype(dtype)
        info = np.finfo(dtype)
        out.flat[:5] = [-np.inf, info.max, info.smallest_subnormal, -0.0, 0.0]
    else:
        part = np.dtype(f"f{dtype.itemsize // 2}")
        out = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
        out.flat[0] = complex(np.inf, np.finfo(part).smallest_subnormal)
    return out


def expected(case: Case) -> np.ndarray:
    out = np.full(case.shape, case.fill_scalar(), dtype=case.np_dtype)
    out[case.region] = values(case)
    return out


def stored_chunk_keys(case: Case) -> set[str]:
    """The chunk (or shard) keys that writing ``case.region`` stores."""
    ranges = [range(0, -(-s.stop // g)) for s, g in zip(case.region, case.grid, strict=True)]
    return {"c/" + "/".join(map(str, idx)) for idx in itertools.product(*ranges)}


# ---------------------------------------------------------------- zarr-python side


def zarr_codecs(case: Case) -> dict[str, Any]:
    compressor = {
        "none": None,
        "zstd": ZstdCodec(level=3),
        "blosc": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        "gzip": GzipCodec(level=5),
    }[case.codec]
    return {
        "compressors": compressor,
        "serializer": BytesCodec(endian=case.endian if case.np_dtype.itemsize > 1 else None),
    }


def zarr_write(store: Any, path: str, case: Case) -> zarr.Array:
    z = zarr.create_array(
        store,
        name=path,
        shape=case.shape,
        chunks=case.chunks,
        shards=case.shards,
        dtype=case.dtype,
        fill_value=case.fill,
        dimension_names=case.dims,
        **zarr_codecs(case),
    )
    z[case.region] = values(case)
    return z


# ---------------------------------------------------------------- tensorstore side


def ts_scalar(value: Any) -> Any:
    """A float as Zarr v3 JSON writes it."""
    if np.isnan(value):
        return "NaN"
    if np.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float(value)


def ts_fill(case: Case) -> Any:
    if case.ts_fill is not None:
        return case.ts_fill
    fill = case.fill_scalar().item()
    kind = case.np_dtype.kind
    if kind == "b":
        return bool(fill)
    if kind in "iu":
        return int(fill)
    if kind == "f":
        return ts_scalar(fill)
    return [ts_scalar(fill.real), ts_scalar(fill.imag)]


def ts_codecs(case: Case) -> list[dict[str, Any]]:
    itemsize = case.np_dtype.itemsize
    chain: list[dict[str, Any]] = [
        {"name": "bytes", "configuration": {"endian": case.endian}}
        if itemsize > 1
        else {"name": "bytes"}
    ]
    if case.codec == "zstd":
        chain.append({"name": "zstd", "configuration": {"level": 3}})
    elif case.codec == "blosc":
        chain.append(
            {
                "name": "blosc",
                "configuration": {
                    "cname": "lz4",
                    "clevel": 5,
                    "shuffle": "shuffle",
                    "typesize": itemsize,
                },
            }
        )
    elif case.codec == "gzip":
        chain.append({"name": "gzip", "configuration": {"level": 5}})
    if case.shards is None:
        return chain
    return [
        {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": list(case.chunks),
                "codecs": chain,
                "index_codecs": [
                    {"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "crc32c"},
                ],
            },
        }
    ]


def ts_spec(directory: Path, **extra: Any) -> dict[str, Any]:
    return {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": f"{directory}/"},
        **extra,
    }


def ts_write(directory: Path, case: Case, attributes: dict[str, Any] | None = None) -> Any:
    metadata: dict[str, Any] = {
        "shape": list(case.shape),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(case.grid)}},
        "chunk_key_encoding": {"name": "default"},
        "data_type": case.dtype,
        "fill_value": ts_fill(case),
        "codecs": ts_codecs(case),
    }
    if case.dims is not None:
        metadata["dimension_names"] = list(case.dims)
    if attributes is not None:
        metadata["attributes"] = attributes
    t = ts.open(ts_spec(directory, create=True, metadata=metadata)).result()
    t[case.region] = values(case)
    return t


def ts_read_json(path: Path, pointer: str = "") -> Any:
    """A member of a ``zarr.json``, read by tensorstore's own JSON driver."""
    spec = {"driver": "json", "kvstore": {"driver": "file", "path": str(path)}}
    if pointer:
        spec["json_pointer"] = pointer
    return ts.open(spec).result().read().result()[()]


# ------------------------------------------------------------------------ helpers


def assert_identical(actual: Any, want: np.ndarray) -> None:
    """Equal bit for bit (NaN payloads and signed zeros included), whatever
    the byte order either side hands back."""
    actual = np.asarray(actual)
    native = want.dtype.newbyteorder("=")
    assert actual.shape == want.shape
    assert actual.dtype.newbyteorder("=") == native
    raw = np.dtype(f"V{native.itemsize}")
    a = np.array(actual, dtype=native, order="C").view(raw)
    b = np.array(want, dtype=native, order="C").view(raw)
    mismatch = a != b
    if mismatch.any():
        first = tuple(int(i) for i in np.unravel_index(np.flatnonzero(mismatch)[0], a.shape))
        raise AssertionError(
            f"{int(mismatch.sum())} of {a.size} elements differ; first at {first}: "
            f"got {actual[first]!r} ({a[first].tobytes().hex()}), "
            f"want {want[first]!r} ({b[first].tobytes().hex()})"
        )


def namespace_files(directory: Path) -> set[str]:
    """Every non-directory entry below a namespace directory, bookkeeping excluded."""
    out: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(directory):
        rel = Path(dirpath).relative_to(directory)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d != ".shmstore"]
        out.update((rel / name).as_posix() for name in filenames)
    return out


def listed(store: shmstore.SharedMemoryStore, prefix: str = "") -> set[str]:
    """The keys the store lists under *prefix*."""

    async def collect() -> set[str]:
        if prefix:
            return {key async for key in store.list_prefix(prefix)}
        return {key async for key in store.list()}

    return sync(collect())


def labels(case: Case) -> tuple[str, ...]:
    return tuple(name or "" for name in case.dims) if case.dims else ("",) * len(case.shape)


# ------------------------------------------------- tensorstore reads shmstore's data


@pytest.mark.parametrize("route", ["store", "url"])
@pytest.mark.parametrize("case", case_params)
def test_tensorstore_reads_what_shmstore_wrote(shm_root: Path, case: Case, route: str) -> None:
    ns, path = "tsread", f"level1/level2/{case.id}"
    store = shmstore.SharedMemoryStore(ns)
    zarr_write(store if route == "store" else f"shm://{ns}", path, case)
    directory = shm_root / ns / path

    # The chunks never written are absent, not stored as fill.
    chunk_files = {k for k in namespace_files(directory) if k.startswith("c/")}
    assert chunk_files == stored_chunk_keys(case)

    t = ts.open(ts_spec(directory), read=True).result()
    assert t.dtype.numpy_dtype == case.np_dtype.newbyteorder("=")
    assert t.domain.shape == case.shape
    assert t.domain.labels == labels(case)
    assert_identical(t.fill_value, case.fill_scalar())
    assert_identical(t.read().result(), expected(case))
    # Reading only never-written chunks gives the fill value exactly.
    want_tail = expected(case)[case.tail]
    assert want_tail.size
    assert_identical(t[case.tail].read().result(), want_tail)

    codecs = t.spec().to_json()["metadata"]["codecs"]
    if case.shards:
        assert [c["name"] for c in codecs] == ["sharding_indexed"]
        assert codecs[0]["configuration"]["chunk_shape"] == list(case.chunks)
        codecs = codecs[0]["configuration"]["codecs"]
    names = [c["name"] for c in codecs]
    assert names == ["bytes"] + ([] if case.codec == "none" else [case.codec])
    if case.np_dtype.itemsize > 1:
        assert codecs[0]["configuration"]["endian"] == case.endian


def test_tensorstore_reads_groups_and_attributes(shm_root: Path) -> None:
    ns = "tsattrs"
    store = shmstore.SharedMemoryStore(ns)
    root = zarr.open_group(store, mode="w", attributes={"title": "root", "n": [1, 2, 3]})
    outer = root.create_group("outer", attributes={"level": 1})
    inner = outer.create_group("inner", attributes={"level": 2, "nested": {"a": None}})
    z = inner.create_array(
        "temperature",
        shape=(6, 4),
        chunks=(3, 2),
        dtype="float32",
        fill_value=-999.0,
        dimension_names=("time", "station"),
        attributes={"units": "K", "scale": 0.5},
    )
    data = np.arange(12, dtype="float32").reshape(3, 4)
    z[:3] = data

    directory = shm_root / ns
    for group, attrs in [
        ("", {"title": "root", "n": [1, 2, 3]}),
        ("outer", {"level": 1}),
        ("outer/inner", {"level": 2, "nested": {"a": None}}),
    ]:
        meta = directory / group / "zarr.json"
        assert ts_read_json(meta, "/node_type") == "group"
        assert ts_read_json(meta, "/attributes") == attrs

    t = ts.open(ts_spec(directory / "outer/inner/temperature"), read=True).result()
    assert t.spec().to_json()["metadata"]["attributes"] == {"units": "K", "scale": 0.5}
    assert t.domain.labels == ("time", "station")
    want = np.full((6, 4), -999.0, dtype="float32")
    want[:3] = data
    assert_identical(t.read().result(), want)


# ------------------------------------------------- shmstore reads tensorstore's data


@pytest.mark.parametrize("case", [*case_params, pytest.param(NAN_PAYLOAD, id=NAN_PAYLOAD.id)])
def test_shmstore_reads_what_tensorstore_wrote(shm_root: Path, case: Case) -> None:
    ns, path = "tswrite", f"from-ts/{case.id}"
    shmstore.SharedMemoryStore(ns)  # creates the namespace
    ts_write(shm_root / ns / path, case)

    store = shmstore.SharedMemoryStore(ns, read_only=True)
    for z in (
        zarr.open_array(store, path=path),
        zarr.open_array(f"shm://{ns}/{path}"),
    ):
        assert z.shape == case.shape
        assert z.dtype == case.np_dtype.newbyteorder("=")
        assert z.chunks == case.chunks
        assert z.shards == case.shards
        assert z.metadata.dimension_names == case.dims
        assert_identical(z.fill_value, case.fill_scalar())
        assert_identical(z[...], expected(case))
        assert (z.compressors[0].__class__.__name__ if z.compressors else "none") == {
            "none": "none",
            "zstd": "ZstdCodec",
            "blosc": "BloscCodec",
            "gzip": "GzipCodec",
        }[case.codec]
        assert_identical(z[case.tail], expected(case)[case.tail])

    # The store lists exactly what tensorstore wrote: metadata and the stored chunks.
    want = {f"{path}/zarr.json"} | {f"{path}/{k}" for k in stored_chunk_keys(case)}
    assert namespace_files(shm_root / ns) == want
    assert listed(store) == want


def test_listing_sees_exactly_the_keys_tensorstore_wrote(shm_root: Path) -> None:
    """Groups from zarr, arrays from tensorstore (which writes no group
    metadata); chunks overwritten and erased by tensorstore. The namespace
    lists exactly the live keys.

    tensorstore's file kvstore writes each key through a ``<key>.__lock`` file
    that it renames onto the key, so a listing taken during a tensorstore write
    can see those, and a tensorstore writer that dies mid-write leaves one
    behind. A completed write leaves none, which is what this checks."""
    ns = "tslist"
    store = shmstore.SharedMemoryStore(ns)
    root = zarr.open_group(store, mode="w")
    root.create_group("a", attributes={"from": "zarr"})
    root.create_group("b").create_group("c")

    plain = Case("plain", "int32", "zstd", fill=-1)
    sharded = next(c for c in CASES if c.id == "int64-zstd-sharded")
    arrays = {
        "a/x": plain,
        "b/c/y": sharded,
        "z": next(c for c in CASES if c.id == "complex64-gzip"),
    }
    handles = {
        path: ts_write(shm_root / ns / path, case, attributes={"path": path})
        for path, case in arrays.items()
    }
    # Rewrite a stored chunk, then write the fill value over a whole one:
    # tensorstore then deletes its key.
    t = handles["a/x"]
    t[0:4, 0:6] = np.full((4, 6), 7, dtype="int32")
    t[4:8, 0:6] = np.full((4, 6), -1, dtype="int32")

    want = {"zarr.json", "a/zarr.json", "b/zarr.json", "b/c/zarr.json"}
    for path, case in arrays.items():
        want.add(f"{path}/zarr.json")
        want.update(f"{path}/{k}" for k in stored_chunk_keys(case))
    want.discard("a/x/c/1/0")

    on_disk = namespace_files(shm_root / ns)
    assert not [k for k in on_disk if k.endswith(".__lock")], "tensorstore left lock files"
    assert on_disk == want
    assert listed(store) == want
    assert listed(store, "a/") == {k for k in want if k.startswith("a/")}

    async def children(prefix: str) -> set[str]:
        return {k async for k in store.list_dir(prefix)}

    assert sync(children("a/x/c")) == {"0", "1", "2"}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group = zarr.open_group(shmstore.SharedMemoryStore(ns, read_only=True), mode="r")
        members = dict(group.members(max_depth=None))
    assert set(members) == {"a", "b", "b/c", "a/x", "b/c/y", "z"}
    assert members["a"].attrs.asdict() == {"from": "zarr"}
    for path in arrays:
        assert isinstance(members[path], zarr.Array)
        assert members[path].attrs.asdict() == {"path": path}

    x = np.full(plain.shape, -1, dtype="int32")
    x[plain.region] = values(plain)
    x[0:4, 0:6] = 7
    x[4:8, 0:6] = -1
    assert_identical(members["a/x"][...], x)
    assert_identical(members["b/c/y"][...], expected(sharded))


# -------------------------------------------------------------- tiered namespaces


def test_tensorstore_reads_spilled_chunks_of_a_tiered_namespace(
    shm_root: Path, tmp_path: Path
) -> None:
    """A plain Zarr reader of a tiered namespace directory gets the spilled
    chunks' bytes, never the fill value (spilled keys are symbolic links to
    the spill files, which tensorstore's file kvstore follows)."""
    ns, path = "tstiered", "spilled"
    spill = tmp_path / "spill.zarr"
    store = shmstore.SharedMemoryStore(ns, capacity=4096, spill=str(spill))
    fill = -7.25
    z = zarr.create_array(
        store,
        name=path,
        shape=(16 * 256,),
        chunks=(256,),
        dtype="float32",
        fill_value=fill,
        compressors=None,
    )
    data = np.arange(1, 16 * 256 + 1, dtype="float32")
    z[:] = data
    assert_identical(zarr.open_array(store, path=path)[:], data)

    spilled = namespace_files(spill / path) if (spill / path).is_dir() else set()
    assert len({k for k in spilled if k.startswith("c/")}) >= 8, "most chunks should spill"

    t = ts.open(ts_spec(shm_root / ns / path), read=True).result()
    got = t.read().result()
    as_fill = [i for i in range(16) if (got[i * 256 : (i + 1) * 256] == fill).all()]
    assert not as_fill, f"tensorstore read chunks {as_fill} of {path} as the fill value"
    assert_identical(got, data)
