"""xarray Datasets round-trip through shm:// URLs and the direct store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_python

import shmstore

xr = pytest.importorskip("xarray")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = [
    # Zarr v3 has no consolidated metadata nor fixed-length strings in its
    # specification yet; zarr says so, and that is not what is tested here.
    pytest.mark.filterwarnings("ignore:Consolidated metadata"),
    pytest.mark.filterwarnings("ignore:The data type"),
]


def _dataset() -> xr.Dataset:
    rng = np.random.default_rng(0)
    return xr.Dataset(
        {
            "t": (("time", "lat", "lon"), rng.random((6, 4, 5)).astype("f4"), {"units": "K"}),
            "p": (("time",), np.arange(6.0), {"long_name": "pressure"}),
            "mask": (("lat", "lon"), rng.random((4, 5)) > 0.5),
        },
        coords={
            "time": pd.date_range("2026-01-01", periods=6, freq="D"),
            "lat": [-45.0, -15.0, 15.0, 45.0],
            "lon": np.arange(5) * 72.0,
            "station": ("lon", ["a", "b", "c", "d", "e"]),
        },
        attrs={"title": "shared", "version": 3},
    )


@pytest.mark.parametrize("consolidated", [True, False])
def test_round_trip_by_url(shm_root: Path, consolidated: bool) -> None:
    ds = _dataset()
    url = f"shm://xr/ds-{consolidated}.zarr"
    ds.to_zarr(url, consolidated=consolidated)
    back = xr.open_zarr(url, consolidated=consolidated)
    xr.testing.assert_identical(back.load(), ds)
    assert back["t"].attrs == {"units": "K"}
    xr.testing.assert_identical(xr.open_dataset(url, engine="zarr", consolidated=consolidated), ds)


def test_round_trip_chunked_and_appended(shm_root: Path) -> None:
    ds = _dataset()
    url = "shm://xr/chunked.zarr"
    ds.isel(time=slice(0, 3)).chunk({"time": 1}).to_zarr(url, consolidated=False)
    ds.isel(time=slice(3, 6)).to_zarr(url, append_dim="time", consolidated=False)
    back = xr.open_zarr(url, consolidated=False)
    assert back["t"].chunks is not None  # read lazily, through dask
    xr.testing.assert_identical(back.compute(), ds)
    np.testing.assert_allclose(
        back["t"].mean("time").values, ds["t"].mean("time").values, rtol=1e-6
    )


def test_direct_store_and_url_see_the_same_dataset(shm_root: Path) -> None:
    ds = _dataset()
    ds.to_zarr(shmstore.open_store("shm://xrs"), group="ds.zarr", consolidated=False)
    xr.testing.assert_identical(xr.open_zarr("shm://xrs/ds.zarr", consolidated=False).load(), ds)
    store = shmstore.open_store("shm://xrs", read_only=True)
    xr.testing.assert_identical(xr.open_zarr(store, group="ds.zarr", consolidated=False).load(), ds)


def test_unrelated_process_opens_by_url(shm_root: Path) -> None:
    ds = _dataset()
    ds.to_zarr("shm://xrp/ds.zarr")
    code = (
        "import warnings, xarray as xr\n"
        "warnings.simplefilter('ignore')\n"
        "ds = xr.open_zarr('shm://xrp/ds.zarr')\n"
        "print(float(ds['t'].sum()), ds.attrs['title'], ds['station'].values.tolist())\n"
    )
    total, title, stations = run_python(code).stdout.split(" ", 2)
    assert float(total) == pytest.approx(float(ds["t"].sum()), rel=1e-6)
    assert title == "shared"
    assert stations.strip() == "['a', 'b', 'c', 'd', 'e']"


def test_missing_namespace_names_it(shm_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        xr.open_zarr("shm://nowhere/ds.zarr")


def test_example_xarray_dataset(shm_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "xarray_dataset.py"), "--size-mib", "4"],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "reopened identical: True" in proc.stdout
    assert "results equal: True" in proc.stdout
    assert "namespace destroyed: True" in proc.stdout
    assert list(shm_root.iterdir()) == []
