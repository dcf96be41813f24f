"""Fixtures for the recsys tests: Coat from the shared data mirror and tiny synthetic clicks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rankloop.data.interactions import Interactions

_REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def coat(coat_dir: Path):
    from rankloop.data.ratings import load_coat

    return load_coat(coat_dir)


@pytest.fixture
def planted() -> Interactions:
    """40 users x 30 items with two taste groups: users click mostly their group's items."""
    rng = np.random.default_rng(7)
    n_u, n_i = 40, 30
    group_u = np.arange(n_u) % 2
    group_i = np.arange(n_i) % 2
    p = np.where(group_u[:, None] == group_i[None, :], 0.5, 0.03)
    y = (rng.random((n_u, n_i)) < p).astype(np.float32)
    y[np.arange(n_u), np.arange(n_u) % n_i] = 1.0  # every user and item has a click
    return Interactions.from_dense(ratings=y, kind="implicit", name="planted")
