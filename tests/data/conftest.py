"""Fixtures for the data-layer tests: the shared real-data mirror and a local HTTP server."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]


def _shared_data() -> Path:
    value = os.environ.get("RANKLOOP_DATA", "").strip()
    return Path(value) if value else _REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real-data mirror (`RANKLOOP_DATA`, default ../shared/data); skip when absent."""
    root = _shared_data()
    if not (root / "beir" / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"real data mirror not found at {root} (set RANKLOOP_DATA)")
    return root


@pytest.fixture
def mirror(shared_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """RANKLOOP_DATA pointing at the shared mirror, with an empty private cache."""
    monkeypatch.setenv("RANKLOOP_DATA", str(shared_data))
    monkeypatch.setenv("RANKLOOP_CACHE", str(tmp_path / "cache"))
    return shared_data


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No mirror and an empty private cache: every fetch must download (or fail)."""
    monkeypatch.delenv("RANKLOOP_DATA", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("RANKLOOP_CACHE", str(cache))
    return cache


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder) of a throwaway HTTP server on localhost serving that folder."""
    root = tmp_path / "www"
    root.mkdir()

    def handler(*args: object, **kwargs: object) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """URL of a TCP server that accepts connections and never answers (a hung host)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/data.zip"
    finally:
        with contextlib.suppress(OSError):
            sock.close()
