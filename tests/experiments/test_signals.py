"""SIGTERM stops a rankloop command promptly, also while the JVM (BM25) is running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("RANKLOOP_DATA"), reason="needs RANKLOOP_DATA")


def test_sigterm_stops_a_bm25_run(tmp_path: Path) -> None:
    pytest.importorskip("pyserini")
    cmd = [sys.executable, "-m", "rankloop.cli", "pipeline", "bm25", "bm25_rm3(fb_docs=20)",
           "--dataset", "scifact", "--split", "train"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until Lucene is searching (the JVM is up)
            if "BM25" in line or time.monotonic() > deadline:
                break
        time.sleep(2)
        assert proc.poll() is None, "the command ended before it could be stopped"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        stopped = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert stopped < 15, f"took {stopped:.1f}s to stop"
