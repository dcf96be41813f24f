"""Team-draft interleaving and multileaving: validity, fairness, outcomes and input checks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rankloop.errors import ConfigError, RankloopError
from rankloop.loop.interleave import (
    credit,
    interleaving_outcome,
    preferences,
    team_draft,
    win_rate,
)


def _random_rankings(m: int, n: int, length: int, n_items: int, seed: int = 0) -> np.ndarray:
    """(m, n, L) lists of distinct items drawn from `n_items`, one random list per ranker."""
    rng = np.random.default_rng(seed)
    keys = rng.random((m, n, n_items))
    return np.argsort(keys, axis=2)[:, :, :length]


@pytest.mark.parametrize("m", [2, 3, 5])
def test_lists_are_distinct_items_from_the_union(m: int) -> None:
    rankings = _random_rankings(m, 300, 8, 20)
    lists, teams = team_draft(rankings, 8, 1)
    assert lists.shape == teams.shape == (300, 8)
    for s in range(300):
        assert len(set(lists[s])) == 8
        assert set(lists[s]) <= set(rankings[:, s].ravel())
        # each position came from the team that claims it
        for item, team in zip(lists[s], teams[s]):
            assert item in rankings[team, s]


@pytest.mark.parametrize("m", [2, 3, 4])
def test_each_pick_is_the_rankers_best_unshown_item(m: int) -> None:
    rankings = _random_rankings(m, 200, 12, 15, seed=3)
    lists, teams = team_draft(rankings, 10, 2)
    for s in range(200):
        shown: set[int] = set()
        for item, team in zip(lists[s], teams[s]):
            best = next(i for i in rankings[team, s] if i not in shown)
            assert item == best
            shown.add(int(item))


@pytest.mark.parametrize("m", [2, 3, 4])
def test_contributions_differ_by_at_most_one_in_every_prefix(m: int) -> None:
    rankings = _random_rankings(m, 500, 10, 12, seed=4)
    _, teams = team_draft(rankings, 10, 5)
    counts = np.cumsum(teams[:, :, None] == np.arange(m), axis=1)  # (n, k, m) per prefix
    spread = counts.max(axis=2) - counts.min(axis=2)
    assert spread.max() <= 1


def test_first_pick_is_uniform_over_rankers() -> None:
    rankings = _random_rankings(3, 6000, 5, 10, seed=5)
    _, teams = team_draft(rankings, 3, 6)
    share = np.bincount(teams[:, 0], minlength=3) / 6000
    assert np.allclose(share, 1 / 3, atol=0.03)
    # within the first round every ranker contributes exactly once
    assert (np.sort(teams[:, :3], axis=1) == np.arange(3)).all()


def test_identical_rankers_give_their_list_and_tie_on_average() -> None:
    rng = np.random.default_rng(7)
    one = np.argsort(rng.random((4000, 30)), axis=1)[:, :10]
    lists, teams = team_draft(np.stack([one, one]), 10, 8)
    assert (lists == one).all()
    clicks = rng.random((4000, 10)) < 0.3
    outcome = interleaving_outcome(teams, clicks)
    assert abs(outcome.mean()) < 0.05
    rate, low, high = win_rate(outcome)
    assert low < 0.5 < high and 0.4 < rate < 0.6


def test_ranker_that_puts_the_clicked_item_first_wins() -> None:
    n, length = 200, 10
    target = 0
    others = np.arange(1, length)
    ranker0 = np.tile(np.concatenate([others, [target]]), (n, 1))  # clickable item last
    ranker1 = np.tile(np.concatenate([[target], others]), (n, 1))  # clickable item first
    lists, teams = team_draft(np.stack([ranker0, ranker1]), 4, 9)
    clicks = lists == target  # only this item is ever clicked
    assert clicks.sum(axis=1).min() == 1
    assert (interleaving_outcome(teams, clicks) == 1).all()
    rate, low, high = win_rate(interleaving_outcome(teams, clicks))
    assert rate == 1.0 and high == pytest.approx(1.0) and 0.95 < low < 1.0


def test_padding_and_too_few_items() -> None:
    rankings = np.array(
        [
            [[0, 1, -1, -1], [5, -1, -1, -1], [-1, -1, -1, -1]],
            [[1, 2, -1, -1], [5, 6, 7, -1], [-1, -1, -1, -1]],
        ]
    )
    lists, teams = team_draft(rankings, 5, 0)
    assert sorted(lists[0, :3]) == [0, 1, 2] and (lists[0, 3:] == -1).all()
    assert sorted(lists[1, :3]) == [5, 6, 7] and (lists[1, 3:] == -1).all()
    assert (lists[2] == -1).all()
    assert ((lists == -1) == (teams == -1)).all()
    # once ranker 0 runs out in session 1, ranker 1 keeps filling the list
    assert (teams[1, 1:3] == 1).all()
    clicks = np.ones_like(lists, dtype=bool)  # clicks on padding count for nobody
    assert (credit(teams, clicks, 2).sum(axis=1) == [3, 3, 0]).all()


def test_multileaving_credit_and_preferences() -> None:
    teams = np.array([[0, 1, 2, 0, 1, 2], [2, 0, 1, 2, 0, 1], [0, 1, 2, -1, -1, -1]])
    clicks = np.array([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1]], dtype=bool)
    c = credit(teams, clicks, 3)
    assert c.tolist() == [[2, 1, 0], [0, 0, 0], [0, 1, 1]]
    p = preferences(teams, clicks, 3)
    assert p.shape == (3, 3, 3)
    assert p[0].tolist() == [[0, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert (p[1] == 0).all()  # no clicks: no preference
    assert p[2].tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 0]]
    wins = p - p.transpose(0, 2, 1)
    assert (wins == -wins.transpose(0, 2, 1)).all()


def test_multileaving_three_rankers_end_to_end() -> None:
    rankings = _random_rankings(3, 1000, 10, 30, seed=11)
    lists, teams = team_draft(rankings, 6, 12)
    good = rankings[2, :, 0]  # ranker 2's top item is the only one users click
    clicks = lists == good[:, None]
    p = preferences(teams, clicks, 3)
    assert p[:, 2, 0].mean() > 0.6 and p[:, 2, 1].mean() > 0.6
    assert p[:, 0, 2].mean() < 0.2 and p[:, 1, 2].mean() < 0.2


def test_same_seed_same_lists() -> None:
    rankings = _random_rankings(3, 100, 10, 20, seed=13)
    a = team_draft(rankings, 7, 42)
    b = team_draft(rankings, 7, np.random.default_rng(42))
    c = team_draft(rankings, 7, 43)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert not (a[1] == c[1]).all()


def test_fast_on_a_thousand_sessions() -> None:
    rankings = _random_rankings(2, 1000, 100, 150, seed=14)
    team_draft(rankings, 10, 0)
    start = time.perf_counter()
    team_draft(rankings, 10, 0)
    assert time.perf_counter() - start < 0.05


def test_win_rate_interval() -> None:
    outcomes = np.array([1] * 30 + [-1] * 10 + [0] * 50)
    rate, low, high = win_rate(outcomes)
    assert rate == pytest.approx(0.75)
    assert low == pytest.approx(0.5981, abs=1e-3) and high == pytest.approx(0.8581, abs=1e-3)
    assert all(np.isnan(win_rate(np.zeros(5, dtype=int))))


def test_bad_inputs_raise() -> None:
    good = _random_rankings(2, 3, 4, 6)
    with pytest.raises(RankloopError, match="at least 2 rankers"):
        team_draft(good[:1], 3, 0)
    with pytest.raises(RankloopError, match="int array"):
        team_draft(good[0], 3, 0)
    with pytest.raises(RankloopError, match="int array"):
        team_draft(good.astype(float), 3, 0)
    with pytest.raises(RankloopError, match=">= 0"):
        team_draft(good - 5, 3, 0)
    for k in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="k must be"):
            team_draft(good, k, 0)
    with pytest.raises(ConfigError, match="random_state"):
        team_draft(good, 3, -1)
    teams = np.array([[0, 1], [1, 0]])
    with pytest.raises(RankloopError, match="shape"):
        credit(teams, np.ones((2, 3), dtype=bool), 2)
    with pytest.raises(RankloopError, match="teams must be in"):
        credit(teams, np.ones((2, 2), dtype=bool), 1)
    with pytest.raises(RankloopError, match="teams must be in"):
        interleaving_outcome(np.array([[0, 2]]), np.array([[1, 1]]))
    with pytest.raises(RankloopError, match="0/1"):
        credit(teams, np.full((2, 2), 2), 2)
    with pytest.raises(ConfigError, match="m must be"):
        preferences(teams, np.ones((2, 2), dtype=bool), 0)
    with pytest.raises(RankloopError, match="outcomes"):
        win_rate(np.array([2, 0]))
