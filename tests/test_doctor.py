"""``shmstore doctor`` and the huge-page line of ``shmstore du``, on real tmpfs mounts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shmstore import _mounts
from shmstore._cli import main
from shmstore._doctor import DOCUMENTED_GAINS, diagnose, logind_remove_ipc, measured_gains


def doctor(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["doctor", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def finding(report: dict[str, Any], check: str) -> dict[str, Any]:
    (found,) = [f for f in report["findings"] if f["check"] == check]
    return found


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Any]:
    """Mount private 8 MiB tmpfs instances with the options asked; unmount them after."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a test tmpfs needs root and mount(8); run as root to test doctor")
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size=8m,mode=0700,{options}", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs with {options} here ({proc.stderr.strip()})")
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in mounted:
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(mnt)], check=False)


# ------------------------------------------------------------------- mounts
def test_mountinfo_parsing_takes_the_longest_and_topmost_mount(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / / rw,relatime - ext4 /dev/vda rw\n"
        "25 22 0:23 / /dev/shm rw,nosuid - tmpfs tmpfs rw,size=65536k\n"
        "30 25 0:27 / /dev/shm rw - tmpfs shm rw,size=1g,huge=within_size\n"
        "31 22 0:28 / /mnt/with\\040space rw - tmpfs tmpfs rw,huge=always\n"
        "garbage line\n"
    )
    top = _mounts.mount_of("/dev/shm/ns/t", mountinfo=str(info))
    assert top is not None
    assert (top.mountpoint, top.source, top.huge, top.size) == (
        "/dev/shm",
        "shm",
        "within_size",
        1 << 30,
    )
    spaced = _mounts.mount_of("/mnt/with space/x", mountinfo=str(info))
    assert spaced is not None and spaced.mountpoint == "/mnt/with space"
    disk = _mounts.mount_of("/home", mountinfo=str(info))
    assert disk is not None and (disk.fstype, disk.huge, disk.size) == ("ext4", None, None)
    assert _mounts.mount_of("/x", mountinfo=str(tmp_path / "missing")) is None


def test_shmem_enabled_force_and_deny_override_the_mount(tmp_path: Path) -> None:
    (tmp_path / "shmem_enabled").write_text("always within_size advise never [deny] force\n")
    assert _mounts.shmem_enabled(str(tmp_path)) == "deny"
    assert _mounts.shmem_enabled(str(tmp_path / "none")) is None
    never = _mounts.Mount("/m", "tmpfs", "tmpfs", {"size": "8m"})
    within = _mounts.Mount("/m", "tmpfs", "tmpfs", {"huge": "within_size"})
    advise = _mounts.Mount("/m", "tmpfs", "tmpfs", {"huge": "advise"})
    assert never.huge == "never"
    assert _mounts.huge_pages(never, "never") == "small"
    assert _mounts.huge_pages(advise, "never") == "small"  # write() is no madvise
    assert _mounts.huge_pages(within, "never") == "huge"
    assert _mounts.huge_pages(within, "deny") == "small"
    assert _mounts.huge_pages(never, "force") == "huge"
    assert _mounts.huge_pages(_mounts.Mount("/", "ext4", "/dev/vda", {}), "force") is None


# ------------------------------------------------------------------- doctor
def test_doctor_on_a_huge_within_size_tmpfs(mount_tmpfs: Any) -> None:
    mnt = mount_tmpfs("huge=within_size")
    mount = _mounts.mount_of(mnt)
    assert mount is not None
    assert (mount.mountpoint, mount.fstype, mount.huge, mount.size) == (
        str(mnt),
        "tmpfs",
        "within_size",
        8 << 20,
    )
    code, report = doctor("--root", str(mnt))
    assert code == 0
    assert report["mount"]["huge"] == "within_size"
    huge = finding(report, "huge-pages")
    if report["shmem_enabled"] == "deny":  # the kernel refuses every tmpfs huge pages
        assert huge["level"] == "advice" and "shmem_enabled" in huge["message"]
    else:
        assert huge["level"] == "ok" and "huge=within_size" in huge["message"]
    # 8 MiB is a Docker-sized tmpfs: the space check says how to grow it.
    space = finding(report, "space")
    assert space["level"] == "warning" and "--shm-size" in space["message"]
    assert space["details"]["size"] == 8 << 20

    du = CliRunner().invoke(main, ["du", "--root", str(mnt)])
    assert du.exit_code == 0, du.output
    if report["shmem_enabled"] != "deny":
        assert "pages: huge pages (huge=within_size)" in du.stdout


def test_doctor_on_a_huge_never_tmpfs_advises_a_remount(mount_tmpfs: Any) -> None:
    mnt = mount_tmpfs("huge=never")
    code, report = doctor("--root", str(mnt), "--results", str(mnt))  # no results there
    assert code == 0
    huge = finding(report, "huge-pages")
    if report["shmem_enabled"] == "force":
        assert huge["level"] == "ok"
        return
    assert huge["level"] == "advice"
    assert huge["details"]["huge"] == "never"
    assert f"mount -o remount,huge=within_size {mnt}" in huge["message"]
    assert "docker run --tmpfs /dev/shm:size=" in huge["message"]
    # No benchmark result: the documented figures, named as such.
    assert huge["details"]["gains"] == list(DOCUMENTED_GAINS)
    assert "0.87x with huge pages" in huge["message"]

    du = CliRunner().invoke(main, ["du", "--root", str(mnt), "--json"])
    assert du.exit_code == 0, du.output
    assert json.loads(du.stdout)["huge_pages"]["level"] == "advice"
    human = CliRunner().invoke(main, ["du", "--root", str(mnt)])
    assert "4 KiB pages (huge=never); `shmstore doctor`" in human.stdout


def test_doctor_quotes_the_gains_of_a_benchmark_result(mount_tmpfs: Any, tmp_path: Path) -> None:
    mnt = mount_tmpfs("huge=never")
    result = tmp_path / "bench_store-roots.json"
    gain = {"what": "first write vs MemoryStore, 1 MiB", "small": 0.48, "huge": 0.91}
    result.write_text(json.dumps({"meta": {}, "huge_gain": [gain]}))
    (tmp_path / "broken.json").write_text("{not json")
    assert measured_gains(tmp_path) == [
        {
            "what": gain["what"],
            "small": "0.48x",
            "huge": "0.91x",
            "source": str(result),
        }
    ]
    report = diagnose(mnt, results=result)
    (huge,) = [f for f in report.findings if f.check == "huge-pages"]
    if report.shmem_enabled != "force":
        assert "first write vs MemoryStore, 1 MiB: 0.91x with huge pages vs 0.48x" in huge.message


def test_doctor_on_a_missing_root_fails_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    code, report = doctor("--root", str(missing))
    assert code == 1
    root = finding(report, "root")
    assert root["level"] == "error"
    assert str(missing) in root["message"] and "SHMSTORE_ROOT" in root["message"]
    human = CliRunner().invoke(main, ["doctor", "--root", str(missing)])
    assert human.exit_code == 1 and "does not exist" in human.stdout


def test_doctor_checks_the_host_limits(shm_root: Path) -> None:
    code, report = doctor()  # $SHMSTORE_ROOT: the test's private root
    assert code == 0 and report["root"] == str(shm_root)
    checks = {f["check"] for f in report["findings"]}
    assert {"root", "filesystem", "space", "open-files"} <= checks
    if os.path.exists("/proc/sys/vm/max_map_count"):
        mmc = finding(report, "max-map-count")
        assert mmc["details"]["max_mappings"] == 16384 or "SHMSTORE_MAX_MAPPINGS" in os.environ
        assert mmc["details"]["max_map_count"] == int(
            Path("/proc/sys/vm/max_map_count").read_text()
        )
    nofile = finding(report, "open-files")
    assert nofile["details"]["soft"] > 0
    for f in report["findings"]:
        assert f["level"] in ("ok", "info", "advice", "warning", "error")
        if f["level"] not in ("ok", "info"):
            assert f["message"]  # each names the thing and what to do


def test_logind_remove_ipc_reads_the_last_setting(tmp_path: Path) -> None:
    assert logind_remove_ipc((str(tmp_path / "none.conf"),)) == (True, None)  # systemd's default
    main_conf = tmp_path / "logind.conf"
    main_conf.write_text("[Login]\n#RemoveIPC=no\nKillUserProcesses=no\n")
    assert logind_remove_ipc((str(main_conf),)) == (True, None)
    drop_in = tmp_path / "d" / "shmstore.conf"
    drop_in.parent.mkdir()
    drop_in.write_text("[Login]\nRemoveIPC=no\n")
    patterns = (str(main_conf), str(tmp_path / "d" / "*.conf"))
    assert logind_remove_ipc(patterns) == (False, str(drop_in))
