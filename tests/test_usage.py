"""The shared byte counter: reservations owned by live processes, recounts from the files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from zarr.core.buffer import cpu

from shmstore import SharedMemoryStore
from shmstore._cli import main
from shmstore._usage import parse_capacity

# A writer that stops after copying its value, before installing it: its
# reservation is taken, the value is not in place. The parent kills it there.
PAUSED_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from zarr.core.buffer import cpu
    from shmstore import SharedMemoryStore
    from shmstore._namespace import Namespace

    install = Namespace.install

    def paused(self, tmp, key, *, exclusive=False):
        print("reserved", flush=True)
        sys.stdin.readline()
        return install(self, tmp, key, exclusive=exclusive)

    Namespace.install = paused
    store = SharedMemoryStore("cap", spill=sys.argv[1])
    store.set_sync("k/dead", cpu.Buffer.from_bytes(np.zeros(200_000, np.uint8).tobytes()))
    """
)


def _value(n: int, fill: int = 1) -> cpu.Buffer:
    return cpu.Buffer.from_bytes(np.full(n, fill, np.uint8).tobytes())


def _shm_bytes(ns_dir: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(ns_dir):
        if Path(dirpath) == ns_dir:
            dirnames[:] = [d for d in dirnames if d != ".shmstore"]
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():  # a spilled key: its bytes are in the spill store
                total += path.stat().st_size
    return total


def _kill_while_reserved(spill: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_WRITER, str(spill)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "reserved"  # type: ignore[union-attr]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.stdin.close()  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]


def test_a_killed_writers_reservation_is_given_back(shm_root: Path, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    store = SharedMemoryStore("cap", capacity=300_000, spill=spill)
    tiers = store._keyspace().tiers
    assert tiers is not None
    for _ in range(3):  # each kill would leak 200 kB of a 300 kB tier
        _kill_while_reserved(spill)
    store.set_sync("k/live", _value(200_000))
    # It fits: the dead writers' reservations went back when the tier looked full.
    assert not (spill / "k" / "live").exists()
    assert (shm_root / "cap" / "k" / "live").stat().st_size == 200_000
    with tiers.usage.locked() as st:
        assert st.used == 200_000 == _shm_bytes(shm_root / "cap")
        assert st.pending == 0
    assert store.get_sync("k/dead") is None  # never installed


def test_recount_heals_a_count_that_drifted(shm_root: Path, tmp_path: Path) -> None:
    store = SharedMemoryStore("drift", capacity=1 << 20, spill=tmp_path / "spill")
    for i in range(4):
        store.set_sync(f"c/{i}", _value(10_000, i))
    tiers = store._keyspace().tiers
    assert tiers is not None
    with tiers.usage.locked() as st:
        st.used += 123_456  # what a kill inside a critical section could leave
    assert tiers.usage.recount() == 40_000 == _shm_bytes(shm_root / "drift")


def test_many_writers_never_pass_the_capacity(shm_root: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from zarr.core.buffer import cpu
        from shmstore import SharedMemoryStore
        store = SharedMemoryStore("many", spill=sys.argv[1])
        for i in range(40):
            store.set_sync(f"{sys.argv[2]}/{i}", cpu.Buffer.from_bytes(bytes(8192)))
        """
    )
    spill = tmp_path / "spill"
    store = SharedMemoryStore("many", capacity=100 * 8192, spill=spill)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(spill), f"w{w}"]) for w in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert _shm_bytes(shm_root / "many") == 100 * 8192  # full, and never past it
    tiers = store._keyspace().tiers
    assert tiers is not None
    with tiers.usage.locked() as st:
        assert st.used == 100 * 8192 and st.pending == 0


@pytest.mark.parametrize(("text", "value"), [("4 GiB", 4 << 30), ("512 MB", 512 * 10**6), (7, 7)])
def test_parse_capacity(text: str | int, value: int) -> None:
    assert parse_capacity(text) == value


def test_gc_gives_back_what_killed_writers_held(shm_root: Path, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    store = SharedMemoryStore("cap", capacity=300_000, spill=spill)
    _kill_while_reserved(spill)
    tiers = store._keyspace().tiers
    assert tiers is not None
    with tiers.usage.locked() as st:
        assert st.used + st.pending == 200_000  # held by a dead writer
    result = CliRunner().invoke(main, ["gc", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["recounted"] == [{"namespace": "cap", "before": 200_000, "after": 0}]
    assert out["reclaimed"] and out["reclaimed"][0]["kind"] == "partial-write"
    with tiers.usage.locked() as st:
        assert st.used + st.pending == 0
