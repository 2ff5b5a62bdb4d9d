"""A chunked array in shared memory, Dask on top, spill to disk.

The stdlib/ecosystem way is Zarr on disk plus Dask: every worker process reads
every chunk from disk. Here the chunks live in a shared-memory namespace with a
capacity; what does not fit spills to an on-disk Zarr store recorded in the
namespace, so any process that opens the namespace by name sees every chunk.

    python examples/store_dask_spill.py [--size-mib 64] [--capacity-mib 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import dask
import dask.array as da
import numpy as np
import zarr

import shmstore


def count_files(directory: str) -> int:
    return sum(len(files) for _, _, files in os.walk(directory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64, help="array size (default 64)")
    parser.add_argument(
        "--capacity-mib", type=int, default=16, help="shared-memory capacity (default 16)"
    )
    args = parser.parse_args()

    rows = args.size_mib * (1 << 20) // (1024 * 8)
    namespace = f"example-store-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="example-spill-") as spill:
        spill_path = os.path.join(spill, "spill.zarr")
        with shmstore.scoped(
            namespace, capacity=f"{args.capacity_mib} MiB", spill=spill_path
        ) as store:
            z = zarr.create_array(
                store,
                name="t",
                shape=(rows, 1024),
                chunks=(256, 1024),  # 2 MiB chunks
                dtype="f8",
                compressors=None,
            )
            # Dask writes the array chunk by chunk; what exceeds the capacity spills.
            x = da.random.default_rng(0).standard_normal((rows, 1024), chunks=(256, 1024))
            x.to_zarr(z)

            # Both tiers are plain Zarr directory layouts: count the chunk files.
            in_shm = count_files(os.path.join(store.path, "t", "c"))
            spilled = count_files(os.path.join(spill_path, "t", "c"))
            print(
                f"shm://{namespace}/t: {z.nchunks} chunks, {in_shm} in shared memory "
                f"(capacity {args.capacity_mib} MiB), {spilled} spilled to {spill_path}"
            )

            # Any process opens it by name alone; here Dask's process workers do.
            y = da.from_zarr(shmstore.SharedMemoryStore(namespace, read_only=True), component="t")
            with dask.config.set(scheduler="processes", num_workers=2):
                mean, std = dask.compute(y.mean(), y.std())
            expected = np.asarray(x)
            print(
                f"mean={float(mean):+.6f} std={float(std):.6f} (NumPy: "
                f"{expected.mean():+.6f} {expected.std():.6f})"
            )
            assert np.isclose(mean, expected.mean()) and np.isclose(std, expected.std())
    print(f"namespace {namespace} destroyed and spill directory removed")


if __name__ == "__main__":
    main()
