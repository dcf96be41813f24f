"""Fixtures for the bandit tests: the data mirror's OBD sample and a tiny synthetic world."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    value = os.environ.get("RANKLOOP_DATA", "").strip()
    return Path(value) if value else _REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def obd_root() -> Path:
    """The OBD small sample of the data mirror; skip when absent."""
    root = data_root() / "bandits" / "obd-small"
    if not (root / "random" / "all" / "all.csv").is_file():
        pytest.skip(f"OBD sample not found under {root} (set RANKLOOP_DATA)")
    return root


@pytest.fixture(scope="session")
def coat_dir() -> Path:
    root = data_root() / "recsys" / "coat"
    if not (root / "train.ascii").is_file():
        pytest.skip(f"Coat not found under {root} (set RANKLOOP_DATA)")
    return root


@pytest.fixture(scope="session")
def world():
    from rankloop.bandits.envs import synthetic_world

    return synthetic_world(n_users=30, n_items=25, dim=4, random_state=3)
