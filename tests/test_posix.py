"""The POSIX helpers: no-follow opens, read-only maps, root descriptors."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from shmstore import _posix as px


def test_a_failed_map_raises_and_leaves_nothing_to_complain_about(tmp_path: Path) -> None:
    # Mapping a directory fails (ENODEV): an OSError, and no "Exception ignored in
    # __del__" afterwards (pytest turns unraisable exceptions into errors here).
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError):
            px._map_readonly_libc(fd, 4096)
        with pytest.raises(OSError):
            px.map_readonly(fd, 4096)
    finally:
        os.close(fd)
    gc.collect()


def test_root_descriptors_are_bounded(tmp_path: Path) -> None:
    roots = []
    for i in range(px._ROOT_FDS + 10):
        root = tmp_path / f"r{i}"
        root.mkdir()
        roots.append(str(root))
        px.root_fd(str(root))
    assert len(px._root_fds) <= px._ROOT_FDS
    assert os.path.samestat(os.fstat(px.root_fd(roots[-1])), os.stat(roots[-1]))


def test_open_beneath_never_follows_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("secret")
    (tmp_path / "ns").mkdir()
    (tmp_path / "ns" / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "ns" / "dir").symlink_to(tmp_path)
    dfd = os.open(tmp_path / "ns", px.O_DIR)
    try:
        with pytest.raises(OSError):
            px.open_beneath(dfd, "link")
        with pytest.raises((NotADirectoryError, OSError)):
            px.open_beneath(dfd, "dir/outside")
    finally:
        os.close(dfd)
