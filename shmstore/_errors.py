"""Exception classes of shmstore.

Errors subclass the builtins that callers already catch (``OSError``,
``ValueError``), carry the objects they are about, and say what to do.
"""

from __future__ import annotations

import errno

__all__ = [
    "CapacityExceededError",
    "ForeignEntryError",
    "NamespaceDestroyedError",
    "SharedMemoryFullError",
]


def _human(n: int) -> str:
    """Format a byte count for a message (``"3.2 MiB"``)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class SharedMemoryFullError(OSError):
    """The shared-memory filesystem (or the namespace's capacity) has no room.

    Subclasses ``OSError`` with ``errno.ENOSPC`` so code that already handles a
    full disk handles this too.

    Parameters
    ----------
    namespace
        The namespace (or named array) being written.
    requested
        Bytes the write asked for.
    available
        Bytes left where the write was going.
    where
        The directory or tier that is full.
    kind
        ``"namespace"`` or ``"array"`` (a named array has no spill tier to suggest).
    """

    def __init__(
        self, namespace: str, requested: int, available: int, where: str, kind: str = "namespace"
    ) -> None:
        self.namespace = namespace
        self.requested = requested
        self.available = available
        self.where = where
        self.kind = kind
        super().__init__(errno.ENOSPC, str(self))

    def __str__(self) -> str:
        spill = "give the namespace a spill tier (spill=...), " if self.kind == "namespace" else ""
        asked, left = _human(self.requested), _human(self.available)
        if asked == left:  # rounded alike: the bytes say why it does not fit
            asked, left = f"{self.requested:,} B", f"{self.available:,} B"
        return (
            f"no room in shared memory for {self.kind} {self.namespace!r}: asked for "
            f"{asked}, {left} left in {self.where}. "
            f"Free space with `shmstore rm`/`shmstore gc`, {spill}or enlarge the tmpfs "
            "(Docker: --shm-size=4g)."
        )

    def __reduce__(self) -> tuple[type, tuple[str, int, int, str, str]]:
        return (
            type(self),
            (self.namespace, self.requested, self.available, self.where, self.kind),
        )


class CapacityExceededError(SharedMemoryFullError):
    """A write would take a namespace's shared-memory tier past its capacity.

    Raised only by namespaces with a ``capacity=`` and no spill tier (with one,
    the write spills instead). A :class:`SharedMemoryFullError`, so ``ENOSPC``.

    Parameters
    ----------
    namespace
        The namespace being written.
    requested
        Bytes the write asked for.
    available
        Bytes left under the capacity.
    capacity
        The namespace's capacity in bytes.
    """

    def __init__(self, namespace: str, requested: int, available: int, capacity: int) -> None:
        self.capacity = capacity
        super().__init__(namespace, requested, available, f"capacity of {namespace!r}")

    def __str__(self) -> str:
        return (
            f"namespace {self.namespace!r} is at its capacity of {_human(self.capacity)}: "
            f"asked for {_human(self.requested)}, {_human(self.available)} left. Give it a "
            "spill tier (spill=...), raise its capacity (capacity=...), or delete keys."
        )

    def __reduce__(self) -> tuple[type, tuple[str, int, int, int]]:  # type: ignore[override]
        return (type(self), (self.namespace, self.requested, self.available, self.capacity))


class NamespaceDestroyedError(OSError):
    """The namespace a ``shm://`` path refers to was destroyed behind this process's back.

    Raised for a value read or a chunk written through a filesystem that was
    using the namespace, so that a zarr array opened by URL before the destroy
    fails instead of reading fill values (zarr's ``FsspecStore`` takes a
    ``FileNotFoundError`` for a missing key) or re-creating the namespace with
    a stray chunk. Not a ``FileNotFoundError`` for that reason; ``errno`` is
    ``ENOENT``.
    """

    def __init__(self, namespace: str, root: str) -> None:
        self.namespace = namespace
        self.root = root
        super().__init__(errno.ENOENT, str(self))

    def __str__(self) -> str:
        return (
            f"namespace {self.namespace!r} in {self.root} was destroyed while this process "
            "was using it; create it again (write its zarr.json, fs.mkdir, or "
            "SharedMemoryStore(...)) and reopen the array"
        )

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.namespace, self.root))


class ForeignEntryError(FileExistsError):
    """An entry in the shared-memory directory is not shmstore's.

    Raised instead of trusting (or overwriting) a file or directory that some
    other program, or another user, put where a namespace or array should be.
    """

    def __init__(self, path: str, reason: str, hint: str | None = None) -> None:
        self.path = path
        self.reason = reason
        self.hint = hint
        super().__init__(errno.EEXIST, str(self))

    def __str__(self) -> str:
        if self.hint:  # a shmstore entry of the other kind: say what to do with it
            return f"{self.path!r} is {self.reason}; {self.hint}"
        return (
            f"{self.path!r} is not a shmstore entry ({self.reason}); "
            "remove it yourself if it is stale, or choose another name"
        )

    def __reduce__(self) -> tuple[type, tuple[str, str, str | None]]:
        return (type(self), (self.path, self.reason, self.hint))
