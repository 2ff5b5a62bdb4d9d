"""An xarray Dataset in shared memory, opened by URL from other processes.

1. Build a small climate-like Dataset (two variables, coordinates, attributes).
2. Write it to ``shm://<namespace>/climate.zarr`` with ``Dataset.to_zarr``.
3. Hand only the URL to a pool of spawned processes; each opens the dataset
   with ``xr.open_zarr`` and computes the time mean of its band of latitudes.
4. Check the bands against the same computation in memory, print the result,
   then destroy the namespace.

Run it with ``python examples/xarray_dataset.py --size-mib 64``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import time
import warnings

import numpy as np
import pandas as pd
import xarray as xr

import shmstore

LAT, LON = 90, 180


def band_mean(url: str, lat0: int, lat1: int) -> np.ndarray:
    """Worker: open the dataset by URL and average its band of latitudes over time."""
    ds = xr.open_zarr(url)
    return ds["t2m"].isel(lat=slice(lat0, lat1)).mean("time").values


def build(size_mib: int) -> xr.Dataset:
    ntime = max(2, size_mib * (1 << 20) // (LAT * LON * 4 * 2))
    rng = np.random.default_rng(0)
    return xr.Dataset(
        {
            "t2m": (
                ("time", "lat", "lon"),
                (280 + 10 * rng.standard_normal((ntime, LAT, LON))).astype("f4"),
                {"units": "K", "long_name": "2 m temperature"},
            ),
            "tp": (
                ("time", "lat", "lon"),
                rng.gamma(2.0, 1.0, (ntime, LAT, LON)).astype("f4"),
                {"units": "mm", "long_name": "total precipitation"},
            ),
        },
        coords={
            "time": pd.date_range("2026-01-01", periods=ntime, freq="h"),
            "lat": np.linspace(-89, 89, LAT),
            "lon": np.linspace(0, 358, LON),
        },
        attrs={"title": "shmstore example", "source": "random"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64, help="dataset size (default 64)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args()
    # Zarr v3 has no consolidated metadata in its specification yet; zarr warns.
    warnings.filterwarnings("ignore", message="Consolidated metadata")

    ds = build(args.size_mib)
    namespace = f"example-xarray-{os.getpid()}"
    url = f"shm://{namespace}/climate.zarr"
    print(f"dataset: {ds.nbytes / 2**20:.0f} MiB, variables {sorted(ds.data_vars)}")
    try:
        t0 = time.perf_counter()
        ds.chunk({"time": 24}).to_zarr(url, consolidated=True, mode="w")
        t1 = time.perf_counter()
        back = xr.open_zarr(url)
        print(f"written to {url} in {t1 - t0:.3f} s; reopened identical: {back.identical(ds)}")

        edges = np.linspace(0, LAT, args.workers + 1).astype(int)
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
            bands = list(pool.map(band_mean, [url] * args.workers, edges[:-1], edges[1:]))
        t2 = time.perf_counter()
        shared = np.concatenate(bands)
        expected = ds["t2m"].mean("time").values
        print(f"{args.workers} processes opened it by URL and averaged it in {t2 - t1:.3f} s")
        print(f"results equal: {bool(np.allclose(shared, expected))}")
    finally:
        shmstore.open_store(f"shm://{namespace}").destroy()
    print(f"namespace destroyed: {namespace not in shmstore.SharedMemoryFileSystem().ls('')}")


if __name__ == "__main__":
    main()
