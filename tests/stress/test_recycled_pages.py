"""A writer recycling pages races readers that hold views: no view ever changes.

One process rewrites six 64 KiB keys as fast as it can, every value tagged
with its key and version in every word, so that its displaced files are
reused (``shmstore._pool``). Readers of three kinds run meanwhile, each in its
own process:

- shmstore as it is, holding the last 64 views it read and checking them all
  again and again;
- shmstore as released before recycled pages (an older reader, without the
  re-check after mapping), holding views the same way;
- zarr's own ``LocalStore`` over the namespace directory (plain reads).

Every value read must be whole and be its key's; every view held must show,
to its end, the value it showed when it was read. Zero exceptions allowed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The last commit whose writers never reused a file: its readers are "today's".
RELEASE = "64b1dee"
SECONDS = float(os.environ.get("SHMSTORE_STRESS_SECONDS", "4"))
KEYS = 6

WRITER = r"""
import os, sys, time, numpy as np, shmstore
from zarr.core.buffer.cpu import Buffer
seconds, keys = float(sys.argv[1]), int(sys.argv[2])
s = shmstore.SharedMemoryStore("race")
words = 65536 // 8
v, end, inodes = 0, time.monotonic() + seconds, set()
while time.monotonic() < end:
    v += 1
    for i in range(keys):
        tagged = np.full(words, (i << 40) | v, "<u8").view(np.uint8)  # writable, as zarr's
        s.set_sync(f"a/c/{i}", Buffer.from_array_like(tagged))
    inodes.add(os.stat(s.path + "/a/c/0").st_ino)
print(v, len(inodes), flush=True)
"""

READER = r"""
import collections, json, os, sys, time, numpy as np
seconds, keys, kind = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
bad = []
reads = checks = 0
held = collections.deque(maxlen=64)

def check(i, arr, where):
    first = int(arr[0])
    if first >> 40 != i or not (arr == first).all():
        bad.append(f"{where}: key {i} shows {sorted(set(int(x) for x in arr[:: 512]))[:4]}")
    return first

if kind == "localstore":
    import asyncio, zarr.storage
    from zarr.core.buffer import default_buffer_prototype
    root = os.environ["SHMSTORE_ROOT"]
    st = zarr.storage.LocalStore(os.path.join(root, "race"), read_only=True)
    proto = default_buffer_prototype()
    async def get(k):
        return await st.get(k, prototype=proto)
    loop = asyncio.new_event_loop()
    read = lambda k: loop.run_until_complete(get(k))
else:
    import shmstore
    from zarr.core.buffer import default_buffer_prototype
    st = shmstore.SharedMemoryStore("race", read_only=True)
    proto = default_buffer_prototype()
    read = lambda k: st.get_sync(k, prototype=proto)

end = time.monotonic() + seconds
while time.monotonic() < end:
    for i in range(keys):
        buf = read(f"a/c/{i}")
        if buf is None:
            continue
        arr = np.frombuffer(buf.as_numpy_array(), "<u8")
        reads += 1
        tag = check(i, arr, "read")
        if kind != "localstore":
            held.append((i, tag, arr))
    for i, tag, arr in held:
        checks += 1
        if int(arr[0]) != tag or not (arr == tag).all():
            bad.append(f"held view of key {i} (version {tag & 0xFFFFFFFFFF}) changed")
module = sys.modules["shmstore"].__file__ if "shmstore" in sys.modules else None
print(json.dumps({"reads": reads, "checks": checks, "bad": bad[:20], "nbad": len(bad),
                  "module": module}))
"""


def _release_copy(dest: Path) -> Path:
    """The package as released at :data:`RELEASE`, extracted under *dest*."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot extract the released reader")
    probe = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{RELEASE}^{{commit}}"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(
            f"commit {RELEASE} is not in this checkout (a shallow clone?): no release reader"
        )
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", RELEASE, "shmstore"], capture_output=True, check=True
    )
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def test_views_held_while_a_writer_recycles_never_change(shm_root: Path, tmp_path: Path) -> None:
    import numpy as np
    from zarr.core.buffer.cpu import Buffer

    import shmstore

    # The namespace exists (with its keys) before anyone reads.
    store = shmstore.SharedMemoryStore("race")
    for i in range(KEYS):
        store.set_sync(f"a/c/{i}", Buffer.from_bytes(np.full(8192, i << 40, "<u8").tobytes()))
    release = _release_copy(tmp_path / "release")
    env = {**os.environ, "SHMSTORE_ROOT": str(shm_root)}
    args = [str(SECONDS), str(KEYS)]
    readers = {
        "current": subprocess.Popen(
            [sys.executable, "-c", READER, *args, "current"], env=env, stdout=subprocess.PIPE
        ),
        "release": subprocess.Popen(
            [sys.executable, "-c", READER, *args, "release"],
            env={**env, "PYTHONPATH": f"{release}{os.pathsep}{env.get('PYTHONPATH', '')}"},
            stdout=subprocess.PIPE,
            cwd=tmp_path,
        ),
        "localstore": subprocess.Popen(
            [sys.executable, "-c", READER, *args, "localstore"], env=env, stdout=subprocess.PIPE
        ),
    }
    time.sleep(0.3)
    writer = subprocess.run(
        [sys.executable, "-c", WRITER, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120 + SECONDS,
    )
    results = {}
    for name, proc in readers.items():
        out, _ = proc.communicate(timeout=120 + SECONDS)
        assert proc.returncode == 0, f"the {name} reader failed"
        results[name] = json.loads(out)
    assert writer.returncode == 0, writer.stderr
    versions, inodes = map(int, writer.stdout.split())
    try:
        assert versions > 10, "the writer made too few versions to race anyone"
        assert results["release"]["module"].startswith(str(release))
        for name, res in results.items():
            assert res["reads"] > 0, f"the {name} reader read nothing"
            assert res["nbad"] == 0, f"{name} reader: {res['bad']}"
        # The writer did recycle (fresh files would give one inode per version),
        # though the readers' views kept some files from it.
        assert inodes < versions, (inodes, versions)
    finally:
        store.destroy()
