"""A named N-d NumPy array that another process attaches by name.

The standard library way (``multiprocessing.shared_memory``) hands you a raw
block: you pass its name, shape and dtype to the child by hand, build the
``np.ndarray(shape, dtype, buffer=shm.buf)`` view on both sides, must
``unlink()`` it yourself, and before Python 3.13 the child's resource tracker
unlinks it (and warns) when the child exits. Its documentation's example even
passes the ndarray itself to ``Process``, which pickles a copy.

Here the shape, dtype and order live with the array, so the child needs only
the name; passing the array to a process or a ``Pool`` pickles its name (a few
hundred bytes), never its bytes; nothing is unlinked until the parent deletes
it; and ``scoped_array`` deletes it when the block ends.

Run: ``python examples/named_array.py`` (honours ``$SHMSTORE_ROOT``).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys

import numpy as np

import shmstore


def child(name: str) -> None:
    """Attach by name alone, check the parent's data, write a reply into it."""
    frames = shmstore.attach(name)  # shape, dtype, order come with the array
    assert frames.shape == (16, 256, 256) and frames.dtype == np.float32
    ok = bool((frames[:, 0, 0] == np.arange(16)).all())
    print(f"child saw the parent's data: {ok}", flush=True)
    frames[:, 1, 1] = -1.0  # lands in the parent's memory: nothing was copied


def frame_mean(frame: np.ndarray) -> float:
    """A Pool task: *frame* arrives as a view of the named array, by name."""
    return float(frame.mean())


def main() -> int:
    name = f"example-frames-{os.getpid()}"
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter, as on macOS/Windows
    with shmstore.scoped_array(name, (16, 256, 256), "f4") as frames:
        frames[:] = np.arange(16, dtype="f4")[:, None, None]
        print(f"created {name!r}: {frames.shape} {frames.dtype}, {frames.nbytes >> 20} MiB")

        p = ctx.Process(target=child, args=(name,))
        p.start()
        p.join()
        ok = bool((frames[:, 1, 1] == -1.0).all())
        print(f"parent sees the child's write: {ok}")

        print(f"pickled size of the whole array: {len(pickle.dumps(frames))} bytes")
        with ctx.Pool(2) as pool:
            means = pool.map(frame_mean, list(frames))  # each frame pickled by name
        print(f"frame means from 2 pool workers: {[round(m, 3) for m in means[:4]]} ...")
        # The child and the workers have exited: the array is intact.
        intact = shmstore.attach(name)[5, 0, 0] == 5.0
        print(f"array intact after the children exited: {bool(intact)}")
    left = [r.name for r in shmstore.list()]
    print(f"array deleted at the end of the block: {name not in left}")
    return 0 if p.exitcode == 0 and ok and intact and name not in left else 1


if __name__ == "__main__":
    sys.exit(main())
