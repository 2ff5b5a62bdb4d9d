"""Write the object inventories that link the API reference to Python, NumPy, Dask and zarr.

The documentation builds without network access, so mkdocstrings cannot fetch
each project's ``objects.inv`` at build time (a failed fetch is an error under
``mkdocs build --strict``). Instead ``docs/hooks.py`` reads the inventories in
this directory and registers each object's URL with mkdocs-autorefs, and this
script writes them: the objects shmstore's signatures and docstrings name,
each with its page in that project's documentation (stable versions).

Where the network is reachable, a project's real inventory can replace one of
these files as it is (same name, same Sphinx v2 format)::

    curl -o docs/inventories/numpy.inv https://numpy.org/doc/stable/objects.inv

Run: ``python docs/inventories/make_inventories.py`` (rewrites ``*.inv`` here).
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# file -> (project, objects); docs/hooks.py holds each file's base URL
# Each object: (name, "domain:role", uri relative to the base; "$" stands for the name).
INVENTORIES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "python.inv": (
        "Python",
        [
            *(
                (exc, "py:exception", "library/exceptions.html#$")
                for exc in (
                    "OSError",
                    "FileNotFoundError",
                    "FileExistsError",
                    "PermissionError",
                    "TimeoutError",
                    "ValueError",
                    "TypeError",
                    "RuntimeError",
                    "RuntimeWarning",
                )
            ),
            *(
                (name, "py:class", "library/stdtypes.html#$")
                for name in ("str", "list", "dict", "tuple", "bytes", "memoryview")
            ),
            *(
                (name, "py:class", "library/functions.html#$")
                for name in ("int", "float", "bool", "object")
            ),
            ("os.PathLike", "py:class", "library/os.html#$"),
            ("typing.Any", "py:data", "library/typing.html#$"),
            ("collections.abc.Iterator", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Iterable", "py:class", "library/collections.abc.html#$"),
            ("contextlib.contextmanager", "py:function", "library/contextlib.html#$"),
            ("threading.Lock", "py:class", "library/threading.html#$"),
            ("multiprocessing.Array", "py:function", "library/multiprocessing.html#$"),
            ("multiprocessing.pool.Pool", "py:class", "library/multiprocessing.html#$"),
            (
                "multiprocessing.shared_memory.SharedMemory",
                "py:class",
                "library/multiprocessing.shared_memory.html#$",
            ),
            ("mmap.mmap", "py:class", "library/mmap.html#$"),
            ("fcntl.flock", "py:function", "library/fcntl.html#$"),
            ("pickle", "py:module", "library/pickle.html#module-$"),
        ],
    ),
    "numpy.inv": (
        "NumPy",
        [
            ("numpy.ndarray", "py:class", "reference/generated/$.html#$"),
            ("numpy.dtype", "py:class", "reference/generated/$.html#$"),
            ("numpy.memmap", "py:class", "reference/generated/$.html#$"),
            ("numpy.full", "py:function", "reference/generated/$.html#$"),
            ("numpy.typing.ArrayLike", "py:data", "reference/typing.html#$"),
            ("numpy.typing.DTypeLike", "py:data", "reference/typing.html#$"),
        ],
    ),
    "dask.inv": (
        "Dask",
        [
            ("dask.array.Array", "py:class", "generated/$.html#$"),
            ("dask.array.from_zarr", "py:function", "generated/$.html#$"),
            ("dask.array.to_zarr", "py:function", "generated/$.html#$"),
            ("dask.array.from_array", "py:function", "generated/$.html#$"),
            ("dask.array.store", "py:function", "generated/$.html#$"),
            ("dask.utils.parse_bytes", "py:function", "generated/$.html#$"),
        ],
    ),
    "zarr.inv": (
        "zarr",
        [
            ("zarr.abc.store.Store", "py:class", "api/zarr/abc/store/#$"),
            ("zarr.storage.LocalStore", "py:class", "api/zarr/storage/#$"),
            ("zarr.storage.FsspecStore", "py:class", "api/zarr/storage/#$"),
            ("zarr.storage.MemoryStore", "py:class", "api/zarr/storage/#$"),
            ("zarr.Array", "py:class", "api/zarr/array/#$"),
            ("zarr.open_array", "py:function", "api/zarr/open/#$"),
            ("zarr.create_array", "py:function", "api/zarr/create/#$"),
        ],
    ),
    "fsspec.inv": (
        "fsspec",
        [
            ("fsspec.spec.AbstractFileSystem", "py:class", "api.html#$"),
            ("fsspec.asyn.AsyncFileSystem", "py:class", "api.html#$"),
            ("fsspec.filesystem", "py:function", "api.html#$"),
            ("fsspec.open", "py:function", "api.html#$"),
        ],
    ),
}


def sphinx_inventory(project: str, objects: list[tuple[str, str, str]]) -> bytes:
    """A Sphinx v2 ``objects.inv`` of *objects* (what intersphinx and mkdocstrings read)."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        "# Version: stable\n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    body = "".join(
        f"{name} {role} 1 {uri.replace('$', name)} -\n" for name, role, uri in sorted(objects)
    )
    return header + zlib.compress(body.encode())


def main() -> None:
    for filename, (project, objects) in INVENTORIES.items():
        (HERE / filename).write_bytes(sphinx_inventory(project, objects))
        print(f"wrote {HERE / filename} ({len(objects)} objects)")


if __name__ == "__main__":
    main()
