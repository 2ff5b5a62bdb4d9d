"""The filesystem under a root: its mount, its ``huge=`` option, and the kernel's say.

A write into a tmpfs pays for every fresh page it touches (PITFALLS 13): with
4 KiB pages that is 256 page allocations per MiB, which no ``fallocate`` or
``MAP_POPULATE`` removes. A tmpfs mounted with ``huge=within_size`` (or
``always``) hands out huge pages (and, on Linux 6.14 and later, large folios
of any size that fits) instead. Whether a root gets them depends on two
things, both read here:

- the ``huge=`` option of the tmpfs mount that holds the root (the longest
  mount point in ``/proc/self/mountinfo`` that is a prefix of the resolved
  root; the last such line when mounts are stacked on one point);
- ``/sys/kernel/mm/transparent_hugepage/shmem_enabled``, whose ``force`` and
  ``deny`` override every mount's option (and whose other values only govern
  the kernel's internal mount: SysV shm, memfd, shared anonymous memory).

Nothing here knows what a namespace is; it imports neither zarr nor NumPy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

__all__ = [
    "HUGE_VALUES",
    "Mount",
    "huge_pages",
    "mount_of",
    "parse_mountinfo",
    "shmem_enabled",
]

MOUNTINFO = "/proc/self/mountinfo"
THP_DIR = "/sys/kernel/mm/transparent_hugepage"
#: The values of tmpfs's ``huge=`` mount option (tmpfs(5)).
HUGE_VALUES = ("never", "always", "within_size", "advise")


@dataclasses.dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mountinfo``.

    Attributes
    ----------
    mountpoint
        Where it is mounted.
    fstype
        Filesystem type (``"tmpfs"``, ``"ext4"``, ...).
    source
        The mount source (``"tmpfs"``, ``"/dev/sda1"``, ...).
    options
        Mount and superblock options, ``{"size": "8192k", "huge": "within_size",
        "rw": ""}``; a flag without a value maps to ``""``.
    """

    mountpoint: str
    fstype: str
    source: str
    options: dict[str, str]

    @property
    def huge(self) -> str | None:
        """The ``huge=`` option of a tmpfs (``"never"`` where unset); ``None`` for others."""
        if self.fstype != "tmpfs":
            return None
        return self.options.get("huge", "never")

    @property
    def size(self) -> int | None:
        """The ``size=`` of a tmpfs in bytes, ``None`` where unset (or not a tmpfs)."""
        text = self.options.get("size")
        if not text:
            return None
        mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
        with contextlib.suppress(ValueError):
            if text[-1].lower() in mult:
                return int(text[:-1]) * mult[text[-1].lower()]
            return int(text)
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record, ``huge`` and ``size`` included."""
        return {**dataclasses.asdict(self), "huge": self.huge, "size": self.size}


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \040, \011, \012, \134.
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _options(*fields: str) -> dict[str, str]:
    opts: dict[str, str] = {}
    for field in fields:
        for opt in field.split(","):
            if opt:
                name, _, value = opt.partition("=")
                opts[name] = value
    return opts


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``/proc/<pid>/mountinfo`` text, in its order (lines it cannot parse skipped).

    A line is ``id parent major:minor root mountpoint options [tags...] -
    fstype source super-options`` (proc(5)).
    """
    mounts = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 6 or len(rest) < 2:
            continue
        mounts.append(
            Mount(
                mountpoint=_unescape(fields[4]),
                fstype=rest[0],
                source=_unescape(rest[1]),
                options=_options(fields[5], *rest[2:3]),
            )
        )
    return mounts


def mount_of(path: str | os.PathLike[str], *, mountinfo: str = MOUNTINFO) -> Mount | None:
    """The mount that holds *path*, or ``None`` where *mountinfo* cannot be read (not Linux).

    The longest mount point that is *path* (resolved) or one of its parents;
    of mounts stacked on one point, the last listed (the one on top).
    """
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            mounts = parse_mountinfo(f.read())
    except OSError:
        return None
    real = os.path.realpath(path)
    best: Mount | None = None
    for m in mounts:
        point = m.mountpoint
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mountpoint)):
            best = m
    return best


def shmem_enabled(thp_dir: str = THP_DIR) -> str | None:
    """The selected value of ``shmem_enabled`` (``"never"``, ``"force"``, ...), else ``None``.

    ``None`` where the kernel has no transparent huge pages (or does not say).
    """
    try:
        with open(os.path.join(thp_dir, "shmem_enabled")) as f:
            text = f.read()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def huge_pages(mount: Mount | None, shmem: str | None) -> str | None:
    """What a write into *mount* gets, given the kernel's *shmem* setting.

    Returns
    -------
    str or None
        ``"huge"`` (the mount's ``huge=always``/``within_size``, or
        ``shmem_enabled`` is ``force``), ``"small"`` (4 KiB pages: ``huge=never``
        or ``advise``, which only ``madvise`` users get and shmstore writes with
        ``write()``; or ``shmem_enabled`` is ``deny``), or ``None`` when *mount*
        is not a tmpfs or unknown.
    """
    if mount is None or mount.fstype != "tmpfs":
        return None
    if shmem == "deny":
        return "small"
    if shmem == "force":
        return "huge"
    return "huge" if mount.huge in ("always", "within_size") else "small"
