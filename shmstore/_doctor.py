"""``shmstore doctor``: how fit a root and this host are for shared memory, and what to change.

Each check returns :class:`Finding` records that name the thing looked at,
what was found and what to do about it:

- ``root``: the root exists, is a directory and is writable;
- ``filesystem``: it is a tmpfs (elsewhere shmstore runs file-backed);
- ``space``: the tmpfs's size and free space (Docker's 64 MiB default);
- ``huge-pages``: whether writes get huge pages (the mount's ``huge=`` and the
  kernel's ``shmem_enabled``, :mod:`shmstore._mounts`), with the gain measured
  by the benchmarks when a result file says so, else the documented figures;
- ``max-map-count``: ``vm.max_map_count`` against the per-process mapping bound
  of the read cache (``SHMSTORE_MAX_MAPPINGS``);
- ``open-files``: the soft ``RLIMIT_NOFILE``;
- ``remove-ipc``: systemd-logind's ``RemoveIPC=``, which deletes a user's files
  in ``/dev/shm`` when their last session ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import resource
import shutil
from pathlib import Path
from typing import Any

from shmstore._errors import _human
from shmstore._inventory import DOCKER_DEFAULT_SHM
from shmstore._mounts import Mount, huge_pages, mount_of, shmem_enabled
from shmstore._names import DEFAULT_ROOT, ENV_ROOT, MEMORY_FILESYSTEMS
from shmstore._readcache import MAX_MAPPINGS

__all__ = [
    "DOCUMENTED_GAINS",
    "Finding",
    "Report",
    "diagnose",
    "huge_page_finding",
    "measured_gains",
]

#: Levels of a finding, mildest first.
LEVELS = ("ok", "info", "advice", "warning", "error")
#: Environment variable naming a benchmark result file or directory for the gains.
ENV_RESULTS = "SHMSTORE_BENCH_RESULTS"
#: Where a source checkout's benchmarks write their results.
_CHECKOUT_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
#: The gains of huge pages measured on the project's benchmark machine (2-vCPU
#: VM, Linux 6.18; docs/performance.md), used when no result file has any.
DOCUMENTED_GAINS: tuple[dict[str, Any], ...] = (
    {
        "what": "first write vs zarr MemoryStore, 1 MiB chunks",
        "small": "~0.5x",
        "huge": "0.87x",
        "source": "docs/performance.md",
    },
    {
        "what": "create(fill=) vs ray.put",
        "small": "0.19-0.24x",
        "huge": "0.77-0.96x",
        "source": "docs/performance.md",
    },
)
#: Mappings a Python process with NumPy and zarr loaded holds besides shmstore's.
_OTHER_MAPPINGS = 2048
#: Below this soft limit of open files, a process with many threads and stores runs short.
_MIN_NOFILE = 1024
#: systemd's lowest regular-user uid (SYS_UID_MAX + 1): RemoveIPC spares those below.
_FIRST_USER_UID = 1000
_LOGIND_CONFS = (
    "/usr/lib/systemd/logind.conf.d/*.conf",
    "/usr/local/lib/systemd/logind.conf.d/*.conf",
    "/etc/systemd/logind.conf",
    "/etc/systemd/logind.conf.d/*.conf",
    "/run/systemd/logind.conf.d/*.conf",
)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One check's verdict.

    Attributes
    ----------
    check
        What was checked (``"huge-pages"``, ``"space"``, ...).
    level
        ``"ok"``, ``"info"``, ``"advice"`` (works, could be faster),
        ``"warning"`` (may fail) or ``"error"`` (will fail).
    message
        The thing, what was found and, unless ``ok``, what to do.
    details
        The facts behind it, for ``--json``.
    """

    check: str
    level: str
    message: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`diagnose` found about one root."""

    root: str
    mount: Mount | None
    shmem_enabled: str | None
    findings: list[Finding]

    @property
    def worst(self) -> str:
        """The highest level of any finding."""
        return max((f.level for f in self.findings), key=LEVELS.index, default="ok")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {
            "root": self.root,
            "mount": None if self.mount is None else self.mount.to_dict(),
            "shmem_enabled": self.shmem_enabled,
            "worst": self.worst,
            "findings": [f.to_dict() for f in self.findings],
        }


# -------------------------------------------------------------- huge pages
def _result_files(results: str | os.PathLike[str] | None) -> list[Path]:
    where = results or os.environ.get(ENV_RESULTS) or _CHECKOUT_RESULTS
    path = Path(where)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = [p for p in path.glob("*.json") if p.is_file()]
        return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)
    return []


def measured_gains(results: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The huge-page gains that benchmark results report, newest file first per figure.

    A result JSON (``benchmarks/bench_rewrite.py``,
    ``bench_arrays.py``, ``bench_pipeline.py``) carries them as ``"huge_gain"``:
    a list of ``{"what": ..., "small": ratio, "huge": ratio}``, the same ratio on
    a 4 KiB-page root and on a huge-page root of one run.

    Parameters
    ----------
    results
        A result file or a directory of them. Default: ``$SHMSTORE_BENCH_RESULTS``,
        else ``benchmarks/results`` of a source checkout.

    Returns
    -------
    list of dict
        ``{"what", "small", "huge", "source"}`` with the ratios as text
        (``"0.87x"``); empty where no result has any.
    """
    out: dict[str, dict[str, Any]] = {}
    for path in _result_files(results):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a half-written or foreign file: not evidence
        gains = doc.get("huge_gain") if isinstance(doc, dict) else None
        for g in gains if isinstance(gains, list) else ():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                what = str(g["what"])
                if what not in out:
                    small, huge = float(g["small"]), float(g["huge"])
                    out[what] = {
                        "what": what,
                        "small": f"{small:.2f}x",
                        "huge": f"{huge:.2f}x",
                        "source": str(path),
                    }
    return list(out.values())


def _gain_text(gains: list[dict[str, Any]]) -> str:
    figures = "; ".join(f"{g['what']}: {g['huge']} with huge pages vs {g['small']}" for g in gains)
    sources = ", ".join(dict.fromkeys(str(g["source"]) for g in gains))
    return f"{figures}; from {sources}"


def huge_page_finding(
    root: str,
    mount: Mount | None = None,
    shmem: str | None = None,
    *,
    results: str | os.PathLike[str] | None = None,
) -> Finding | None:
    """Whether writes into *root* get huge pages, and how to give them some.

    *mount* and *shmem* default to what the host says (:func:`mount_of`,
    :func:`shmem_enabled`). ``None`` where *root* is not on a tmpfs (huge
    pages are a tmpfs matter).
    """
    mount = mount_of(root) if mount is None else mount
    shmem = shmem_enabled() if shmem is None else shmem
    verdict = huge_pages(mount, shmem)
    if mount is None or verdict is None:
        return None
    details = {"mountpoint": mount.mountpoint, "huge": mount.huge, "shmem_enabled": shmem}
    if verdict == "huge":
        why = "shmem_enabled is 'force'" if shmem == "force" else f"huge={mount.huge}"
        return Finding(
            "huge-pages",
            "ok",
            f"{mount.mountpoint} (tmpfs, {why}) gives writes huge pages",
            details,
        )
    gains = measured_gains(results) or list(DOCUMENTED_GAINS)
    details["gains"] = gains
    if shmem == "deny":
        return Finding(
            "huge-pages",
            "advice",
            f"{mount.mountpoint} gets 4 KiB pages: /sys/kernel/mm/transparent_hugepage/"
            "shmem_enabled is 'deny', which no mount option overrides; as root, "
            "`echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled`, then "
            f"`mount -o remount,huge=within_size {mount.mountpoint}` ({_gain_text(gains)})",
            details,
        )
    size = mount.options.get("size") or "4g"
    return Finding(
        "huge-pages",
        "advice",
        f"{mount.mountpoint} (tmpfs, huge={mount.huge}) gives writes 4 KiB pages; huge pages "
        f"would speed up writes into shared memory ({_gain_text(gains)}). As root: "
        f"`mount -o remount,huge=within_size {mount.mountpoint}` (add huge=within_size to its "
        "/etc/fstab line to keep it); in a container: "
        f"`docker run --tmpfs /dev/shm:size={size},huge=within_size` instead of --shm-size",
        details,
    )


# ------------------------------------------------------------------ checks
def _check_root(root: str) -> Finding:
    if not os.path.exists(root):
        return Finding(
            "root",
            "error",
            f"root {root} does not exist; create it or point --root / ${ENV_ROOT} at an "
            f"existing shared-memory directory (default {DEFAULT_ROOT})",
            {"exists": False},
        )
    if not os.path.isdir(root):
        return Finding(
            "root",
            "error",
            f"root {root} is not a directory; point --root / ${ENV_ROOT} at a directory",
            {"exists": True, "directory": False},
        )
    if not os.access(root, os.W_OK | os.X_OK):
        return Finding(
            "root",
            "error",
            f"root {root} is not writable by uid {os.geteuid()}; fix its permissions "
            f"(/dev/shm is mode 1777) or choose another with --root / ${ENV_ROOT}",
            {"exists": True, "directory": True, "writable": False},
        )
    return Finding(
        "root",
        "ok",
        f"root {root} exists and is writable",
        {"exists": True, "directory": True, "writable": True},
    )


def _check_filesystem(root: str, mount: Mount | None) -> Finding:
    if mount is None:
        return Finding(
            "filesystem",
            "info",
            f"cannot tell which filesystem holds {root} (no /proc/self/mountinfo)",
        )
    details = {"mountpoint": mount.mountpoint, "fstype": mount.fstype}
    if mount.fstype in MEMORY_FILESYSTEMS:
        return Finding(
            "filesystem", "ok", f"{root} is on {mount.fstype} {mount.mountpoint}", details
        )
    return Finding(
        "filesystem",
        "warning",
        f"{root} is on {mount.fstype} ({mount.mountpoint}), not tmpfs: shmstore runs "
        "file-backed there, at the speed of that filesystem; point --root / "
        f"${ENV_ROOT} at a tmpfs such as /dev/shm",
        details,
    )


def _check_space(root: str, mount: Mount | None) -> Finding:
    st = os.statvfs(root)
    size, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    details = {"size": size, "free": free}
    where = mount.mountpoint if mount is not None else root
    tmpfs = mount is not None and mount.fstype == "tmpfs"
    if tmpfs and 0 < size <= DOCKER_DEFAULT_SHM:
        return Finding(
            "space",
            "warning",
            f"{where} is only {_human(size)} ({_human(free)} free), like Docker's default "
            "/dev/shm: raise it (`docker run --shm-size=4g`, compose `shm_size: 4gb`, or "
            "`mount -o remount,size=4g` as root) or give namespaces a spill tier",
            details,
        )
    if size and free < size // 10:
        return Finding(
            "space",
            "warning",
            f"{where} has {_human(free)} free of {_human(size)}: writes will spill or fail "
            "with ENOSPC soon; free some with `shmstore du` / `shmstore rm` / `shmstore gc`, "
            "or grow it (`mount -o remount,size=...` as root)",
            details,
        )
    return Finding("space", "ok", f"{where}: {_human(size)} total, {_human(free)} free", details)


def _check_max_map_count() -> Finding | None:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return None
    need = MAX_MAPPINGS + _OTHER_MAPPINGS
    details = {"max_map_count": limit, "max_mappings": MAX_MAPPINGS, "needed": need}
    if limit < need:
        return Finding(
            "max-map-count",
            "warning",
            f"vm.max_map_count is {limit}, below the {MAX_MAPPINGS} chunk mappings a process "
            f"may cache (SHMSTORE_MAX_MAPPINGS) plus {_OTHER_MAPPINGS} for the rest: mmap "
            f"would fail with ENOMEM; `sysctl -w vm.max_map_count={max(65530, need)}` as "
            f"root, or set SHMSTORE_MAX_MAPPINGS={max(256, limit - _OTHER_MAPPINGS)}",
            details,
        )
    return Finding(
        "max-map-count",
        "ok",
        f"vm.max_map_count {limit} holds the {MAX_MAPPINGS} cached mappings a process may keep",
        details,
    )


def _check_open_files() -> Finding:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    details = {"soft": soft, "hard": hard}
    if soft != resource.RLIM_INFINITY and soft < _MIN_NOFILE:
        raise_to = hard if hard == resource.RLIM_INFINITY or hard >= _MIN_NOFILE else soft
        return Finding(
            "open-files",
            "warning",
            f"the open-files limit (RLIMIT_NOFILE) is {soft}: processes with many stores, "
            f"threads or dask workers may fail with EMFILE; raise it (`ulimit -n {raise_to}` "
            "in the shell that starts them, LimitNOFILE= for a systemd service)",
            details,
        )
    return Finding("open-files", "ok", f"open-files limit (RLIMIT_NOFILE) {soft}", details)


def logind_remove_ipc(patterns: tuple[str, ...] = _LOGIND_CONFS) -> tuple[bool, str | None]:
    """systemd-logind's ``RemoveIPC=`` (``True`` by systemd's default) and the file that set it."""
    value, source = True, None
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            with contextlib.suppress(OSError), open(path) as f:
                section = ""
                for line in f:
                    line = line.strip()
                    if line.startswith("["):
                        section = line
                    elif section == "[Login]" and line.startswith("RemoveIPC="):
                        text = line.partition("=")[2].strip().lower()
                        value, source = text in ("yes", "true", "1", "on"), path
    return value, source


def _check_remove_ipc(root: str) -> Finding | None:
    # RemoveIPC only matters where logind runs, for regular users, and for
    # files in /dev/shm (which it empties of the user's entries at logout).
    if not os.path.isdir("/run/systemd/system") or shutil.which("loginctl") is None:
        return None
    real = os.path.realpath(root)
    if not (real == DEFAULT_ROOT or real.startswith(DEFAULT_ROOT + "/")):
        return None
    uid = os.geteuid()
    remove, source = logind_remove_ipc()
    details = {"remove_ipc": remove, "set_in": source, "uid": uid}
    if not remove or uid < _FIRST_USER_UID:
        return Finding(
            "remove-ipc",
            "ok",
            "systemd-logind keeps this user's /dev/shm files after logout"
            + ("" if remove else f" (RemoveIPC=no in {source})"),
            details,
        )
    return Finding(
        "remove-ipc",
        "warning",
        f"systemd-logind's RemoveIPC=yes ({source or 'its default'}) deletes uid {uid}'s "
        "files in /dev/shm, namespaces included, when the user's last session ends; set "
        "RemoveIPC=no in /etc/systemd/logind.conf.d/shmstore.conf and restart "
        "systemd-logind, run the work as a system user, or keep a session "
        "(`loginctl enable-linger`)",
        details,
    )


def diagnose(
    root: str | os.PathLike[str] | None = None,
    *,
    results: str | os.PathLike[str] | None = None,
) -> Report:
    """Check *root* (default ``$SHMSTORE_ROOT``, else ``/dev/shm``) and this host.

    Never raises for what it checks: a missing root is an ``error`` finding.

    Parameters
    ----------
    root
        The shared-memory directory to check.
    results
        A benchmark result file or directory for the measured huge-page gains
        (see :func:`measured_gains`).

    Returns
    -------
    Report

    Examples
    --------
    >>> from shmstore._doctor import diagnose
    >>> report = diagnose("/dev/shm")
    >>> [f.check for f in report.findings][:2]
    ['root', 'filesystem']
    """
    path = os.path.abspath(os.fspath(root or os.environ.get(ENV_ROOT) or DEFAULT_ROOT))
    first = _check_root(path)
    mount = mount_of(path) if first.level != "error" else None
    shmem = shmem_enabled()
    findings = [first]
    if first.level != "error":
        findings += [_check_filesystem(path, mount), _check_space(path, mount)]
        huge = huge_page_finding(path, mount, shmem, results=results)
        findings += [huge] if huge is not None else []
    findings += [f for f in (_check_max_map_count(),) if f is not None]
    findings.append(_check_open_files())
    findings += [f for f in (_check_remove_ipc(path),) if f is not None]
    return Report(path, mount, shmem, findings)
