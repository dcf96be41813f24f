"""Exploration layers and the interleaving-versus-A/B comparison."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from rankloop.errors import ConfigError
from rankloop.loop.compare import impressions_needed
from rankloop.loop.explore import EpsilonSlots, Greedy, Interleave, RandPair

RANKED = np.tile(np.arange(20), (500, 1))
WORLD = SimpleNamespace(reference_rankings=lambda users, ranked: {
    "first_stage": ranked, "reversed": ranked[:, ::-1].copy()})  # fmt: skip


def test_greedy_is_the_top_k() -> None:
    shown, rec = Greedy().show(WORLD, np.arange(500), RANKED, 5, np.random.default_rng(0))
    assert (shown == np.arange(5)).all() and rec == {}


def test_randpair_swaps_the_top_with_a_recorded_position() -> None:
    shown, rec = RandPair(rate=0.5).show(WORLD, np.arange(500), RANKED, 5, np.random.default_rng(0))
    swaps = rec["swaps"]
    done = swaps[:, 0] >= 0
    assert 0.4 < done.mean() < 0.6
    assert (shown[~done] == np.arange(5)).all()
    rows = np.flatnonzero(done)
    assert (shown[rows, 0] == swaps[rows, 1]).all() and (shown[rows, swaps[rows, 1]] == 0).all()
    assert set(swaps[rows, 1].tolist()) == {1, 2, 3, 4}
    with pytest.raises(ConfigError, match="rate"):
        RandPair(rate=0)


def test_epsilon_brings_in_lower_candidates_without_duplicates() -> None:
    shown, _ = EpsilonSlots(0.5).show(WORLD, np.arange(500), RANKED, 5, np.random.default_rng(1))
    assert (shown[:, 0] == 0).all()
    assert all(len(set(r.tolist())) == 5 for r in shown)
    assert (shown >= 5).mean() == pytest.approx(0.4, abs=0.05)  # 4 of 5 slots, half of them
    with pytest.raises(ConfigError, match="epsilon"):
        EpsilonSlots(1.5)


def test_interleave_against_named_rankers() -> None:
    _shown, rec = Interleave(["reversed"]).show(
        WORLD, np.arange(500), RANKED, 4, np.random.default_rng(2)
    )
    teams = rec["teams"]
    assert set(np.unique(teams)) == {0, 1}
    assert ((teams == 0).sum(axis=1) == 2).all()  # team draft: 2 picks each in 4 slots
    with pytest.raises(ConfigError, match="unknown reference ranker"):
        Interleave(["bm25"]).show(WORLD, np.arange(2), RANKED[:2], 4, np.random.default_rng(0))


def test_impressions_needed_takes_the_point_after_the_last_failure() -> None:
    grid = np.array([10, 20, 40, 80])
    assert impressions_needed(grid, np.array([0.3, 0.04, 0.06, 0.01]), 0.05) == 80
    assert impressions_needed(grid, np.array([0.01, 0.0, 0.0, 0.0]), 0.05) == 10
    assert impressions_needed(grid, np.array([0.3, 0.2, 0.1, 0.06]), 0.05) == float("inf")


def test_interleaving_needs_fewer_impressions(tiny_beir) -> None:
    """On a real (tiny) world, ranking by the qrels against the first stage: interleaving decides
    with fewer impressions than an A/B test of clicks."""
    from rankloop.loop.compare import interleaving_vs_ab
    from rankloop.loop.search import SearchWorld

    world = SearchWorld(str(tiny_beir), first_stage="bm25", signals=[])
    try:
        a = -np.arange(world.train.docs.shape[1], dtype=float)[None, :].repeat(world.n_users, 0)
        b = a + 3.0 * world.train.grades  # relevant documents moved up three places
        res = interleaving_vs_ab(world, a, b, impressions=20_000, repeats=500, random_state=0)
    finally:
        world.close()
    assert res["interleaving_mean_outcome"] > 0 and res["clicks_b"] > res["clicks_a"]
    assert res["impressions_interleaving"] < res["impressions_ab"]
    assert res["ratio"] > 1
