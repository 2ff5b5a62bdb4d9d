"""Shared fixtures: every test runs against a private shared-memory root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

_BASE = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


@pytest.fixture(autouse=True)
def shm_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh private root for the test, exported as ``$SHMSTORE_ROOT``.

    Removed afterwards whatever the test left, so nothing leaks into the host's
    ``/dev/shm``.
    """
    root = Path(_BASE) / f"shmstore-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o700)
    monkeypatch.setenv("SHMSTORE_ROOT", str(root))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Path:
    """A real 8 MiB tmpfs, mounted for the test and unmounted after."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a test tmpfs needs root and mount(8); run as root to test ENOSPC")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); needs CAP_SYS_ADMIN")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def run_python(
    code: str,
    *args: str,
    timeout: float = 120,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run *code* in an unrelated Python process (not a fork of the test)."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"subprocess failed ({proc.returncode}):\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc
