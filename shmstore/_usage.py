"""The shared byte counter of a namespace's shared-memory tier, and capacity parsing.

The bytes held by the shared-memory tier of a tiered namespace (or a host
cache) live in the bookkeeping file ``usage``, read and updated under an
exclusive ``flock`` on it (the kernel releases it when a holder dies):

- ``used``: the bytes of the values installed in shared memory;
- one *reservation* slot per writing process, ``(pid, start time, bytes)``:
  bytes a write has claimed before copying them, moved into ``used`` when the
  value is installed (under the lock) and given back if the copy fails.

A writer killed between its reservation and its install leaves its slot
behind; any process that finds the tier full (and ``shmstore gc``) gives back
the slots of dead processes, recognised by pid and start time (a reused pid is
a process that started later). And because the namespace directory is the
index of its keys, the count can always be rebuilt from the files
(:meth:`Usage.recount`): a full tier recounts at most once a second, which
heals what a kill inside a critical section left. So SIGKILL never leaks
capacity for good (PITFALLS 16). See docs/design.md ("Tiering").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from shmstore._posix import creator_alive, process_start_time

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from shmstore._namespace import Namespace

__all__ = ["CACHE_COUNTERS", "CacheCounters", "Usage", "parse_capacity"]

_USAGE = "usage"
# used, time of the last recount (ns), 1 once valid, number of slots
_HEADER = struct.Struct("<4q")
# pid, start time of that process (ns since the epoch), bytes reserved
_SLOT = struct.Struct("<3q")
_SLOTS = 64
_SIZE = _HEADER.size + _SLOTS * _SLOT.size
#: A tier found full recounts its files at most this often (seconds).
RECOUNT_INTERVAL = 1.0

_me: tuple[int, int] | None = None


def _identity() -> tuple[int, int]:
    """``(pid, start time in ns)`` of this process, as its reservations record it."""
    global _me
    pid = os.getpid()
    if _me is None or _me[0] != pid:  # a forked child is another process
        started = process_start_time(pid)
        _me = (pid, int((started if started is not None else time.time()) * 1e9))
    return _me


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
    """The counter as read under the lock; changes are saved when the lock is let go."""

    __slots__ = ("last_recount", "slots", "used")

    def __init__(self, used: int, last_recount: int, slots: list[list[int]]) -> None:
        self.used = used
        self.last_recount = last_recount
        self.slots = slots

    @property
    def pending(self) -> int:
        """Bytes reserved by writers that have not installed their values yet."""
        return sum(s[2] for s in self.slots)

    def _mine(self, *, make: bool) -> list[int] | None:
        pid, start = _identity()
        free = None
        for slot in self.slots:
            if slot[0] == pid and slot[1] == start:
                return slot
            if free is None and slot[0] == 0:
                free = slot
        if free is not None and make:
            free[0], free[1], free[2] = pid, start, 0
        return free if make else None

    def reserve(self, n: int) -> bool:
        """Reserve *n* bytes for this process; False if every slot is taken (count it now)."""
        slot = self._mine(make=True)
        if slot is None:
            return False
        slot[2] += n
        return True

    def release(self, n: int) -> None:
        """Give back *n* bytes this process reserved."""
        slot = self._mine(make=False)
        if slot is not None:
            slot[2] = max(0, slot[2] - n)
            if slot[2] == 0:
                slot[0] = slot[1] = 0

    def reclaim_dead(self) -> int:
        """Give back the reservations of processes that died; return the bytes freed."""
        freed = 0
        for slot in self.slots:
            pid, start, n = slot
            if pid and creator_alive(pid, None, start / 1e9) is False:
                freed += n
                slot[0] = slot[1] = slot[2] = 0
        return freed


class _BookkeepingFile:
    """A bookkeeping file of a namespace, opened once per process and locked with ``flock``."""

    _FILE: str

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
            self._fd = self.ns.open_bookkeeping(self._FILE)
            self._pid = pid
        return self._fd

    def __del__(self) -> None:
        # Only this process's own descriptor: a forked child that never used
        # the file holds the parent's number, which _fileno replaces.
        if self._fd >= 0 and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)


class Usage(_BookkeepingFile):
    """The bytes a namespace's shared-memory tier holds, shared by every process.

    Changed only under an exclusive ``flock`` on the bookkeeping file ``usage``
    (plus a thread lock: ``flock`` does not exclude threads that share one
    descriptor). Critical sections are a few syscalls long.

    Parameters
    ----------
    ns
        The namespace handle.
    """

    _FILE = _USAGE

    @contextlib.contextmanager
    def locked(self) -> Iterator[_State]:
        """Hold the namespace's accounting lock; yield its state, saved on exit.

        The state is saved even if the block raises, with whatever it changed.
        """
        fd = self._fileno()
        with self._tlock:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, _SIZE, 0)
                state = self._parse(raw)
                if state is None:  # new or damaged: rebuild from the files
                    state = _State(self.ns.value_bytes(), time.time_ns(), _empty_slots())
                    before = None
                else:
                    before = raw
                try:
                    yield state
                finally:
                    after = self._pack(state)
                    if after != before:
                        os.pwrite(fd, after, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    @staticmethod
    def _parse(raw: bytes) -> _State | None:
        if len(raw) != _SIZE:
            return None
        used, last, valid, nslots = _HEADER.unpack_from(raw, 0)
        if valid != 1 or nslots != _SLOTS:
            return None
        slots = [list(_SLOT.unpack_from(raw, _HEADER.size + i * _SLOT.size)) for i in range(_SLOTS)]
        return _State(used, last, slots)

    @staticmethod
    def _pack(state: _State) -> bytes:
        head = _HEADER.pack(max(0, state.used), state.last_recount, 1, _SLOTS)
        return head + b"".join(_SLOT.pack(*s) for s in state.slots)

    def used(self) -> int:
        """Bytes the shared-memory tier holds, as accounted (installed values)."""
        with self.locked() as st:
            return st.used

    def heal(self, st: _State, *, force: bool = False) -> None:
        """Under the lock: give back dead writers' reservations and, at most once a
        second and a twentieth of the time (or if *force*), recount the installed
        values from the files."""
        st.reclaim_dead()
        now = time.time_ns()
        if force or now - st.last_recount >= RECOUNT_INTERVAL * 1e9:
            st.used = self.ns.value_bytes()
            # A walk of many files is slow: keep recounts to a twentieth of the time.
            st.last_recount = now + 20 * (time.time_ns() - now)

    def write(
        self,
        key: str,
        data: Any,
        *,
        exclusive: bool,
        room: Callable[[_State, int], bool],
    ) -> tuple[bool | None, os.stat_result | None]:
        """Write *data* to *key* in shared memory if *room* makes room for it.

        The protocol that keeps the count right through crashes: reserve under
        the lock (``room(state, delta)`` says whether *delta* more bytes fit,
        evicting or healing as it likes), copy outside it (writers of several
        processes copy at once), install under it (a recount never sees a
        value the count does not, nor the reverse).

        Returns
        -------
        (placed, old)
            *placed* is True (written), False (no room) or None (*exclusive*
            and the key exists); *old* is the key's entry before (an ``lstat``).

        Raises
        ------
        SharedMemoryFullError
            If the filesystem itself is full; nothing is left behind.
        """
        ns = self.ns
        n = memoryview(data).nbytes
        with self.locked() as st:
            old = ns.lstat(key)
            if exclusive and old is not None:
                return None, old
            delta = n - _value_size(old)
            if not room(st, delta):
                return False, old
            reserved = max(0, delta)
            if reserved and not st.reserve(reserved):
                st.used += reserved  # every slot taken: counted at once instead
                reserved = -reserved
        try:
            tmp = ns.prepare(data)
            with self.locked() as st:
                cur = ns.lstat(key)
                written = ns.install(tmp, key, exclusive=exclusive)
                if written:
                    st.used += n - _value_size(cur)
                _unreserve(st, reserved)
                reserved = 0
        finally:
            if reserved:
                with self.locked() as st:
                    _unreserve(st, reserved)
        return (True if written else None), old

    def recount(self) -> int:
        """Rebuild the count from the files and drop dead reservations; return it."""
        with self.locked() as st:
            self.heal(st, force=True)
            return st.used


#: The host-wide counters of a read-through cache, in the order the file keeps them.
CACHE_COUNTERS = ("hits", "misses", "bytes_fetched", "expired", "evictions", "writes")
_COUNTERS = "counters"
# format version (1), then one signed 64-bit count per name of CACHE_COUNTERS
_COUNTERS_FMT = struct.Struct(f"<q{len(CACHE_COUNTERS)}q")


class CacheCounters(_BookkeepingFile):
    """The hit, miss and byte counters of a host cache, shared by every process.

    The bookkeeping file ``counters`` holds one 64-bit count per name of
    :data:`CACHE_COUNTERS`, added to under an exclusive ``flock`` (a few
    syscalls). A damaged or foreign file reads as zeros and is rewritten whole
    by the next addition. Counts are statistics: a process killed between its
    read of the source and its addition leaves one fetch uncounted.

    Parameters
    ----------
    ns
        The namespace handle of the cache.
    """

    _FILE = _COUNTERS

    @staticmethod
    def parse(raw: bytes) -> dict[str, int]:
        """The counts in the file's bytes *raw* (zeros if it is new or damaged)."""
        if len(raw) == _COUNTERS_FMT.size:
            version, *counts = _COUNTERS_FMT.unpack(raw)
            if version == 1:
                return dict(zip(CACHE_COUNTERS, counts, strict=True))
        return dict.fromkeys(CACHE_COUNTERS, 0)

    def add(self, **deltas: int) -> None:
        """Add *deltas* (names of :data:`CACHE_COUNTERS`) to the host-wide counts."""
        unknown = set(deltas) - set(CACHE_COUNTERS)
        if unknown:
            raise ValueError(f"unknown cache counters {sorted(unknown)}; known: {CACHE_COUNTERS}")
        fd = self._fileno()
        with self._tlock:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                counts = self.parse(os.pread(fd, _COUNTERS_FMT.size, 0))
                for name, n in deltas.items():
                    counts[name] += n
                os.pwrite(fd, _COUNTERS_FMT.pack(1, *counts.values()), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def read(self) -> dict[str, int]:
        """The host-wide counts now."""
        fd = self._fileno()
        with self._tlock:
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                return self.parse(os.pread(fd, _COUNTERS_FMT.size, 0))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def reset(self) -> None:
        """Set every count to zero."""
        fd = self._fileno()
        with self._tlock:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                os.pwrite(fd, _COUNTERS_FMT.pack(1, *([0] * len(CACHE_COUNTERS))), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


def _empty_slots() -> list[list[int]]:
    return [[0, 0, 0] for _ in range(_SLOTS)]


def _value_size(st: os.stat_result | None) -> int:
    """Bytes a key's entry holds in shared memory (a spill marker or nothing: 0)."""
    return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0


def _unreserve(st: _State, reserved: int) -> None:
    if reserved > 0:
        st.release(reserved)
    elif reserved < 0:
        st.used += reserved  # counted when it was reserved
