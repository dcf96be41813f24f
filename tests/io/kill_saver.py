"""Kill-test helper (not a test): a pre-warmed parent that forks one saving child per request.

Each stdin line is `TARGET SEED DELAY`. The parent builds the small index of SEED, forks a
child that saves it over TARGET and exits, then (if DELAY >= 0) sleeps DELAY seconds from the
moment the child starts its save and SIGKILLs the child. It reaps the child before answering, so the child's pid is dead by then,
and prints `killed`, `done` or `failed` and the seconds from the save's start to the reap. Forking from a warm parent
keeps each trial at milliseconds instead of a second of imports; the parent kills only its
own children, which cannot have been reaped (so their pids cannot be reused) before the kill.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback

import numpy as np

from rankloop.embed.index import VectorIndex

DIM = 8
ROWS = 64


def build(seed: int) -> VectorIndex:
    """The index a trial saves: ids and vectors are a function of `seed` only."""
    index = VectorIndex(DIM, "Flat")
    vectors = np.random.default_rng(seed).normal(size=(ROWS, DIM)).astype(np.float32)
    index.add([f"s{seed}-{i}" for i in range(ROWS)], vectors)
    return index


def main() -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        target, seed, delay = line.split()
        index = build(int(seed))
        ready, go = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(go, b"s")  # the save starts now: the kill delay counts from here
                index.save(target)
                os._exit(0)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        os.close(go)
        os.read(ready, 1)
        os.close(ready)
        start = time.perf_counter()
        if float(delay) >= 0:
            time.sleep(float(delay))
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - start
        if os.WIFSIGNALED(status):
            outcome = "killed"
        else:
            outcome = "done" if os.WEXITSTATUS(status) == 0 else "failed"
        print(outcome, f"{elapsed:.6f}", flush=True)


if __name__ == "__main__":
    main()
