"""shmstore: share NumPy, Zarr and Dask arrays between processes through shared memory.

The public names are imported lazily, so ``import shmstore`` stays cheap for
processes that only attach a named array: zarr, dask and fsspec load when
their part of the API is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> private module that defines it
_LAZY = {
    "SharedMemoryStore": "shmstore._store",
    "scoped": "shmstore._store",
    "SharedMemoryFullError": "shmstore._errors",
    "CapacityExceededError": "shmstore._errors",
    "CachingStore": "shmstore._cache",
    "save": "shmstore._transfer",
    "load": "shmstore._transfer",
    "ForeignEntryError": "shmstore._errors",
    "SharedMemoryFileSystem": "shmstore._fs",
    "open_store": "shmstore._urls",
    "persist": "shmstore._dask",
}

__all__ = [
    "CachingStore",
    "CapacityExceededError",
    "ForeignEntryError",
    "SharedMemoryFileSystem",
    "SharedMemoryFullError",
    "SharedMemoryStore",
    "__version__",
    "load",
    "open_store",
    "persist",
    "save",
    "scoped",
]

if TYPE_CHECKING:
    from shmstore._cache import CachingStore
    from shmstore._dask import persist
    from shmstore._errors import CapacityExceededError, ForeignEntryError, SharedMemoryFullError
    from shmstore._fs import SharedMemoryFileSystem
    from shmstore._store import SharedMemoryStore, scoped
    from shmstore._transfer import load, save
    from shmstore._urls import open_store


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shmstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
