"""shmstore: share NumPy, Zarr and Dask arrays between processes through shared memory.

The public names are imported lazily, so ``import shmstore`` stays cheap for
processes that only attach a named array: zarr, dask and fsspec load when
their part of the API is first used.
"""

from __future__ import annotations

import builtins
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
    "SharedMemoryCacheFileSystem": "shmstore._cachefs",
    # a Dask distributed worker plugin (distributed loads only when it is used;
    # not imported for type checkers below: it sits beside _cli, which imports us)
    "HostTierPlugin": "shmstore._distributed",
    "save": "shmstore._transfer",
    "load": "shmstore._transfer",
    "ForeignEntryError": "shmstore._errors",
    "NamespaceDestroyedError": "shmstore._errors",
    "SharedMemoryFileSystem": "shmstore._fs",
    "open_store": "shmstore._urls",
    "persist": "shmstore._dask",
    # named arrays and locks ("module:attribute" where the names differ: the
    # public name becomes the function's name, for help(), reprs and pickle)
    "NamedArray": "shmstore._arrays",
    "ArrayInfo": "shmstore._arrays",
    "create": "shmstore._arrays",
    "attach": "shmstore._arrays",
    "delete": "shmstore._arrays",
    "list": "shmstore._arrays:list_arrays",
    "scoped_array": "shmstore._arrays",
    "Lock": "shmstore._lock",
    "LockTimeoutError": "shmstore._lock",
    # namespaces by name
    "namespaces": "shmstore._inventory",
    "destroy": "shmstore._inventory",
}

__all__ = [
    "ArrayInfo",
    "CachingStore",
    "CapacityExceededError",
    "ForeignEntryError",
    "HostTierPlugin",
    "Lock",
    "LockTimeoutError",
    "NamedArray",
    "NamespaceDestroyedError",
    "SharedMemoryCacheFileSystem",
    "SharedMemoryFileSystem",
    "SharedMemoryFullError",
    "SharedMemoryStore",
    "__version__",
    "attach",
    "create",
    "delete",
    "destroy",
    "list",
    "load",
    "namespaces",
    "open_store",
    "persist",
    "save",
    "scoped",
    "scoped_array",
]

if TYPE_CHECKING:
    from shmstore._arrays import ArrayInfo, NamedArray, attach, create, delete, scoped_array
    from shmstore._arrays import list_arrays as list
    from shmstore._cache import CachingStore
    from shmstore._cachefs import SharedMemoryCacheFileSystem
    from shmstore._dask import persist
    from shmstore._errors import (
        CapacityExceededError,
        ForeignEntryError,
        NamespaceDestroyedError,
        SharedMemoryFullError,
    )
    from shmstore._fs import SharedMemoryFileSystem
    from shmstore._inventory import destroy, namespaces
    from shmstore._lock import Lock, LockTimeoutError
    from shmstore._store import SharedMemoryStore, scoped
    from shmstore._transfer import load, save
    from shmstore._urls import open_store


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'shmstore' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    if attr and callable(value):
        # Public name and module: help() and reprs say shmstore.list, and pickle
        # finds the function again by that name.
        value.__name__ = value.__qualname__ = name
        value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> builtins.list[str]:
    return sorted(set(globals()) | set(_LAZY))
