"""The per-process mapping cache and the generation page of a namespace.

A read maps a value read-only and keeps the mapping, with the buffer zarr
wraps around it, so that a repeated read costs no system call. Two things
bound and invalidate what is kept:

- **The bound is per process**, not per namespace (``vm.max_map_count`` is a
  process limit, 65,530 by default: PITFALLS 4 and 15). Every namespace handle
  of the process has a :class:`ReadCache`; together they keep at most
  :data:`MAX_MAPPINGS` mappings, the oldest going first.
- **The generation page** (``.shmstore/gen``: 512 random 64-bit tokens that
  every process of the namespace maps) says whether a cached mapping may be
  stale: a shmstore writer stores a fresh token in a key's slot after each
  replace or delete, and in slot 0 after removing a subtree. A cached mapping
  whose two tokens are unchanged is served as it is; otherwise one ``stat``
  checks it. Writers that bypass shmstore are caught by
  :data:`REVALIDATE_SECONDS`.

See docs/design.md ("Consistency").
"""

from __future__ import annotations

import mmap
import os
import random
import stat
import time
import weakref
import zlib
from typing import Any

__all__ = [
    "MAX_MAPPINGS",
    "REVALIDATE_SECONDS",
    "Entry",
    "Generations",
    "ReadCache",
]

#: Upper bound on cached chunk mappings per process, across every namespace.
MAX_MAPPINGS = int(os.environ.get("SHMSTORE_MAX_MAPPINGS", "16384"))
#: Longest time a cached mapping is trusted on the generation page alone; after
#: that a read checks it with a ``stat``, which also sees writers that bypass
#: shmstore. Each check is a system call, and under zarr's fused pipeline a GIL
#: hand-off between its threads: at 1 s, chunks read every few seconds paid it
#: on every read (docs/performance.md), hence 10 s. 0 checks on every read.
REVALIDATE_SECONDS = float(os.environ.get("SHMSTORE_REVALIDATE_SECONDS", "10"))

_monotonic = time.monotonic
_SLOTS = 512
_PAGE_BYTES = _SLOTS * 8


# Slots of recent keys (a chunk is written and read again and again).
_slots: dict[str, int] = {}
_SLOTS_MEMO = 1 << 16


class Generations:
    """The generation page of one namespace, mapped read-write (or absent).

    Parameters
    ----------
    page
        The mapped page as 512 unsigned 64-bit tokens, or ``None`` where it
        could not be mapped (a full or read-only filesystem): every read then
        checks its cached mapping with a ``stat``, always correct, only slower.
    """

    __slots__ = ("page",)

    def __init__(self, page: memoryview | None) -> None:
        self.page = page

    @staticmethod
    def slot(key: str) -> int:
        """The slot of *key* (the same in every process, unlike ``hash``)."""
        slot = _slots.get(key)
        if slot is None:
            slot = 1 + zlib.crc32(key.encode("utf-8", "surrogateescape")) % (_SLOTS - 1)
            if len(_slots) >= _SLOTS_MEMO:
                _slots.clear()
            _slots[key] = slot
        return slot

    @classmethod
    def open(cls, dir_fd: int, name: str, mode: int, *, create: bool = False) -> Generations:
        """Map the page file *name* under *dir_fd* (made on first open if missing)."""
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(name, flags, mode, dir_fd=dir_fd)
        except FileNotFoundError:
            return cls(None) if create else cls.open(dir_fd, name, mode, create=True)
        except OSError:
            return cls(None)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return cls(None)
            if st.st_size < _PAGE_BYTES:
                # Extends with zeros and never truncates: safe beside a concurrent opener.
                os.posix_fallocate(fd, 0, _PAGE_BYTES)
                if mode & ~0o600 and st.st_uid == os.geteuid():
                    os.fchmod(fd, mode)
            page = memoryview(mmap.mmap(fd, _PAGE_BYTES, flags=mmap.MAP_SHARED)).cast("Q")
            return cls(page)
        except OSError:
            return cls(None)
        finally:
            os.close(fd)

    def bump(self, key: str | None) -> None:
        """Tell every process's cache that *key* (``None``: any key) changed.

        Random, not incremented: two writers that bump one slot at once can
        never leave the value a reader saw before either of them (no ABA).
        """
        page = self.page
        if page is not None:
            page[0 if key is None else self.slot(key)] = random.getrandbits(64)

    def tokens(self, slot: int) -> tuple[Any, Any]:
        """The tokens (slot 0, *slot*) a mapping validated now is valid under."""
        page = self.page
        return (page[0], page[slot]) if page is not None else (None, None)


class Entry:
    """A cached mapping of one key, and what it was last validated against."""

    __slots__ = (
        "deadline",
        "gtok",
        "ino",
        "ktok",
        "mtime",
        "size",
        "slot",
        "view",
        "wrap",
        "wrapped",
    )

    def __init__(
        self, view: memoryview, st: os.stat_result, slot: int, gtok: Any, ktok: Any
    ) -> None:
        self.view = view
        self.ino, self.size, self.mtime = st.st_ino, st.st_size, st.st_mtime_ns
        self.slot, self.gtok, self.ktok = slot, gtok, ktok
        self.deadline = _monotonic() + REVALIDATE_SECONDS
        self.wrap: Any = None
        self.wrapped: Any = None

    def fresh(self, page: memoryview | None) -> bool:
        """Whether no shmstore writer touched the key's slot since it was validated."""
        return (
            page is not None
            and page[0] == self.gtok
            and page[self.slot] == self.ktok
            and _monotonic() < self.deadline
        )

    def same_file(self, st: os.stat_result) -> bool:
        """Whether *st* is the file this mapping was made of (replace changes all three)."""
        return self.ino == st.st_ino and self.size == st.st_size and self.mtime == st.st_mtime_ns

    def revalidated(self, gtok: Any, ktok: Any) -> Entry:
        """Mark the mapping valid under the tokens *gtok*, *ktok*; return it."""
        self.gtok, self.ktok = gtok, ktok
        self.deadline = _monotonic() + REVALIDATE_SECONDS
        return self


# Every live cache of the process, for the process-wide bound.
_caches: weakref.WeakSet[ReadCache] = weakref.WeakSet()
# Inserts since the bound was last checked. A check sums every cache's size, so
# it runs once per _check_every() inserts, and leaves room for that many more.
_inserts = 0


def _check_every() -> int:
    return max(1, min(256, MAX_MAPPINGS // 8))


class ReadCache:
    """The cached mappings of one namespace handle, within the process-wide bound.

    A plain ``dict`` from key to :class:`Entry`, oldest first. Views handed out
    keep their own mapping alive when the cache drops it: eviction only stops
    the cache from pinning them.
    """

    __slots__ = ("__weakref__", "entries")

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        _caches.add(self)

    def get(self, key: str) -> Entry | None:
        """The cached entry of *key*, if any."""
        return self.entries.get(key)

    def pop(self, key: str) -> None:
        """Forget *key*."""
        self.entries.pop(key, None)

    def clear(self) -> None:
        """Forget every key."""
        self.entries.clear()

    def put(self, key: str, entry: Entry) -> Entry:
        """Cache *entry* for *key*, evicting the oldest mappings of the process if full."""
        global _inserts
        _inserts += 1
        if _inserts >= _check_every():
            _inserts = 0
            _enforce_bound()
        self.entries[key] = entry
        return entry

    def __len__(self) -> int:
        return len(self.entries)


def _enforce_bound() -> None:
    """Keep the process's mappings under the bound until the next check.

    Room is left for the inserts before that check, and an eighth more is freed
    so that a process at the bound does not check on every insert.
    """
    caches = list(_caches)
    total = sum(len(c.entries) for c in caches)
    room = _check_every()
    if total <= MAX_MAPPINGS - room:
        return
    target = max(0, MAX_MAPPINGS - room - MAX_MAPPINGS // 8)
    # The oldest entries of the largest caches go first.
    caches.sort(key=lambda c: len(c.entries), reverse=True)
    for cache in caches:
        if total <= target:
            break
        entries = cache.entries
        drop = min(len(entries), total - target)
        for old in list(entries)[:drop]:
            entries.pop(old, None)
        total -= drop


def cached_mappings() -> int:
    """How many mappings every cache of this process holds together."""
    return sum(len(c.entries) for c in list(_caches))
