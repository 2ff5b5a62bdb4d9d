"""The shared byte counter of a namespace's shared-memory tier, and capacity parsing.

The bytes held by the shared-memory tier of a tiered namespace (or a host
cache) live in ``.shmstore/usage``: little-endian int64 ``(bytes used, 0,
valid flag)``, read and updated under an exclusive ``flock`` on that file (the
kernel releases it when a holder dies). A writer reserves its bytes under the
lock before it copies them and releases the reservation if the copy fails;
deletes subtract under the lock. Writers of different keys therefore never
take the tier past its capacity, whichever processes they run in. A record
that is missing or damaged is rebuilt from the files (:meth:`Usage.recount`).
See docs/design.md ("Tiering").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from shmstore._namespace import Namespace

__all__ = ["Usage", "parse_capacity"]

_USAGE = "usage"
# bytes used by the shared-memory tier, reserved (0), 1 once valid
_RECORD = struct.Struct("<3q")


def parse_capacity(value: int | str | None) -> int | None:
    """Return a capacity in bytes from an int or a human string such as ``"4 GiB"``.

    Strings are parsed by :func:`dask.utils.parse_bytes`, the notation of Dask's
    ``memory_limit``: IEC units are binary (``"4 GiB"`` is 4 x 2**30), SI units
    decimal (``"4 GB"`` is 4e9), and an unknown unit is an error.

    Raises
    ------
    ValueError
        If the value is negative or not a size; the message names it.
    TypeError
        If the value is neither ``None``, an int nor a str.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(
            f"capacity must be a number of bytes or a string such as '4 GiB', got "
            f"{type(value).__name__}: {value!r}"
        )
    if isinstance(value, str):
        # dask is a core dependency, imported here only: the bottom layers stay light.
        from dask.utils import parse_bytes

        try:
            if not value.strip():
                raise ValueError(value)
            value = int(parse_bytes(value))
        except ValueError as e:
            raise ValueError(
                f"capacity {value!r} is not a size; pass bytes (an int) or a string "
                "such as '4 GiB' or '512 MB'"
            ) from e
    if value < 0:
        raise ValueError(f"capacity {value!r} is negative; pass 0 or more bytes")
    return value


class _State:
    __slots__ = ("used",)

    def __init__(self, used: int) -> None:
        self.used = used


class Usage:
    """The bytes a namespace's shared-memory tier holds, shared by every process.

    Changed only under an exclusive ``flock`` on ``.shmstore/usage`` (plus a
    thread lock: ``flock`` does not exclude threads that share one
    descriptor). Critical sections are a few syscalls long.

    Parameters
    ----------
    ns
        The namespace handle.
    """

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self._fd = -1
        self._pid = -1
        self._tlock = threading.Lock()

    def _fileno(self) -> int:
        pid = os.getpid()
        if self._pid != pid:
            # A forked child must not share the parent's open file description:
            # flock locks belong to it, so both would "hold" the lock at once.
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._tlock = threading.Lock()
            self._fd = self.ns.open_bookkeeping(_USAGE)
            self._pid = pid
        return self._fd

    def __del__(self) -> None:
        # Only this process's own descriptor: a forked child that never used
        # the counter holds the parent's number, which _fileno replaces.
        if self._fd >= 0 and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[_State]:
        """Hold the namespace's accounting lock; yield its state, saved on exit."""
        fd = self._fileno()
        with self._tlock:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, _RECORD.size, 0)
                if len(raw) == _RECORD.size and _RECORD.unpack(raw)[2] == 1:
                    used = _RECORD.unpack(raw)[0]
                    valid = True
                else:
                    used, valid = self.ns.value_bytes(), False  # new or damaged: recount
                state = _State(used)
                yield state
                if not valid or state.used != used:
                    os.pwrite(fd, _RECORD.pack(max(0, state.used), 0, 1), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def used(self) -> int:
        """Bytes the shared-memory tier holds, as accounted."""
        with self.locked() as st:
            return st.used

    def recount(self) -> int:
        """Rebuild the count from the files (heals drift); return it."""
        with self.locked() as st:
            st.used = self.ns.value_bytes()
            return st.used

    def add(self, delta: int) -> None:
        """Add *delta* bytes (negative to release)."""
        if delta:
            with self.locked() as st:
                st.used += delta
