"""SIGKILL real saving processes at random instants: the index under the target name must
always load and hold the old or the new content, and no leftover may survive the next load
or save of that target."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rankloop.embed.index import VectorIndex
from rankloop.errors import RankloopError

sys.path.insert(0, str(Path(__file__).parent))
from kill_saver import build

TRIALS = 250
BUDGET_S = 35.0  # a very slow machine runs fewer trials rather than blowing the CI time


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A folder on tmpfs when there is one. A SIGKILL leaves the kernel's page cache as it is,
    so what survives a kill is the same as on disk, while fsync is free there (the fsyncs
    only matter for power loss): hundreds of trials fit in seconds."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(prefix="rankloop-kill-", dir=shm) as d:
            yield Path(d)
    else:
        yield tmp_path


def _content(index: VectorIndex) -> int:
    """The seed whose ids and vectors `index` holds exactly; -1 if it matches none."""
    seed = int(index.ids[0].split("-")[0][1:])
    expected = build(seed)
    rows = np.arange(len(expected))
    same = index.ids == expected.ids and np.array_equal(
        index.vectors_at(rows), expected.vectors_at(rows)
    )
    return seed if same else -1


def _load(path: Path) -> tuple[int, int]:
    """(seed of the content, -1 if unloadable or wrong; number of recovery warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            seed = _content(VectorIndex.load(path))
        except RankloopError:
            seed = -1
    return seed, sum("interrupted save" in str(w.message) for w in caught)


def test_sigkill_during_save_never_loses_the_index(scratch: Path) -> None:
    work = scratch / "work"
    target = work / "idx"
    build(0).save(target)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    saver = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("kill_saver.py"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    stdin, stdout = saver.stdin, saver.stdout
    assert stdin is not None and stdout is not None

    def trial(seed: int, delay: float) -> tuple[str, float]:
        stdin.write(f"{target} {seed} {delay}\n")
        stdin.flush()
        outcome, seconds = stdout.readline().split()
        return outcome, float(seconds)

    try:
        assert stdout.readline().strip() == "ready"
        # calibrate: how long one uninterrupted save takes (from its start to the reap)
        durations = [trial(seed, -1) for seed in (1, 2, 3, 4, 5)]
        assert all(outcome == "done" for outcome, _ in durations)
        span = 1.2 * float(np.median([s for _, s in durations]))  # covers the whole save
        current = 5
        rng = np.random.default_rng(12345)
        counts = dict.fromkeys(["trials", "killed", "old", "new", "lost", "recovered"], 0)
        start = time.perf_counter()
        while counts["trials"] < TRIALS and time.perf_counter() - start < BUDGET_S:
            new = current + 1
            outcome, _ = trial(new, float(rng.uniform(0, span)))
            assert outcome in {"killed", "done"}, "the saving child failed (see its stderr)"
            counts["trials"] += 1
            counts["killed"] += outcome == "killed"
            # judge a copy of the folder, so that the original's own clean-up is checked below
            copy = scratch / "copy"
            shutil.copytree(work, copy, symlinks=True)
            seed, recovered = _load(copy / "idx")
            shutil.rmtree(copy)
            counts["recovered"] += recovered
            if seed not in (current, new):
                counts["lost"] += 1
                continue
            counts["old" if seed == current else "new"] += 1
            if counts["trials"] % 2:  # the next load restores and cleans up ...
                assert _load(target)[0] == seed
                current = seed
            else:  # ... and so does the next save
                current = new + 1
                build(current).save(target)
                assert _load(target)[0] == current
            leftovers = sorted(os.listdir(work))
            assert leftovers == ["idx"], f"leftovers after trial {counts['trials']}: {leftovers}"
        print(f"\nkill test: {counts}, kill delays 0..{span * 1000:.1f} ms")
        assert counts["lost"] == 0, counts
        assert counts["trials"] >= 100, f"only {counts['trials']} trials in {BUDGET_S}s"
        # Many kills must hit a live save (how many depends on the machine's load: 33-82% here,
        # with the suite running beside it); `lost == 0` above is the promise under test.
        assert counts["killed"] >= counts["trials"] // 10, counts
    finally:
        stdin.close()
        try:
            saver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            saver.kill()
            saver.wait()
    assert saver.returncode == 0, f"the saving process exited with {saver.returncode}"
