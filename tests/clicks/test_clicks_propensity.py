"""Propensity estimation: swap interventions, EM on a PBM, intervention harvesting (AllPairs)."""

from __future__ import annotations

import numpy as np
import pytest

from rankloop.clicks.models import PBM
from rankloop.clicks.propensity import (
    em_propensities,
    harvest_propensities,
    interventional_sets,
    swap_interventions,
    swap_propensities,
)
from rankloop.clicks.simulate import pbm_examination, sessions_from_lists, simulate_log
from rankloop.data.clicklogs import ClickLog, concat_logs
from rankloop.errors import ConfigError


def _counts_log(
    rows: list[tuple[list[int], tuple[int, int]]], k: int = 3
) -> tuple[ClickLog, np.ndarray]:
    """A log whose sessions have the given clicked positions, with the given randomised pairs."""
    log = ClickLog.from_lists(
        ["q"] * len(rows), [[f"d{j}" for j in range(k)]] * len(rows), [c for c, _ in rows]
    )
    return log, np.array([p for _, p in rows])


def test_swap_first_ratios_by_hand() -> None:
    """Pair (1,2): 4 clicks at rank 1, 2 at rank 2 -> 1/2. Pair (1,3): 4 vs 1 -> 1/4."""
    rows = [([0], (0, 1))] * 4 + [([1], (0, 1))] * 2 + [([0], (0, 2))] * 4 + [([2], (0, 2))]
    log, pairs = _counts_log(rows)
    np.testing.assert_allclose(swap_propensities(log, pairs), [1, 1 / 2, 1 / 4])


def test_adjacent_ratios_chain_by_hand() -> None:
    """Pair (1,2): 4 vs 2 -> 1/2; pair (2,3): 2 vs 1 -> theta_3 = 1/2 * 1/2."""
    rows = [([0], (0, 1))] * 4 + [([1], (0, 1))] * 2 + [([1], (1, 2))] * 2 + [([2], (1, 2))]
    log, pairs = _counts_log(rows)
    np.testing.assert_allclose(swap_propensities(log, pairs), [1, 1 / 2, 1 / 4])
    # A rank never randomised against a reachable one is not identified.
    log, pairs = _counts_log(rows[:6])
    est = swap_propensities(log, pairs)
    assert est[1] == pytest.approx(0.5) and np.isnan(est[2])


@pytest.mark.parametrize("design", ["swap-first", "adjacent", "random-pair"])
def test_swap_interventions_permute_one_pair(design: str) -> None:
    lists = {"q": ["a", "b", "c", "d"], "r": ["e", "f"]}
    sessions, rel = sessions_from_lists(lists, 2_000, 0, {"q": [4, 3, 2, 1], "r": [1, 0]})
    out, rel2, pairs = swap_interventions(sessions, design, 1, rel)
    a, b = pairs[:, 0], pairs[:, 1]
    assert np.all(a < b) and np.all(b < sessions.lengths)
    if design == "swap-first":
        assert np.all(a == 0)
    if design == "adjacent":
        assert np.all(b == a + 1)
    changed = (out.doc_ids != sessions.doc_ids).sum(axis=1)
    assert set(changed.tolist()) <= {0, 2}
    assert 0.45 < (changed == 2).mean() < 0.55
    rows = np.flatnonzero(changed == 2)
    assert np.all(out.doc_ids[rows, a[rows]] == sessions.doc_ids[rows, b[rows]])
    # Grades travel with their documents.
    np.testing.assert_array_equal(np.sort(rel2, axis=1), np.sort(rel, axis=1))
    assert not out.clicks.any()
    with pytest.raises(ConfigError):
        swap_interventions(sessions, "nope", 0)  # type: ignore[arg-type]


def test_interventional_sets_by_hand() -> None:
    """(q, A): rank 1 twice (1 click), rank 2 once; (q, B): rank 2 twice, rank 1 once, no clicks."""
    log = ClickLog.from_lists(["q"] * 3, [["A", "B"], ["A", "B"], ["B", "A"]], [[0], [], []])
    c, nc, size = interventional_sets(log)
    np.testing.assert_allclose(size, [[0, 2], [2, 0]])  # A and B were both shown at ranks 1 and 2
    assert c[0, 1] == pytest.approx(0.5 + 0.0)  # CTR_1(A) + CTR_1(B)
    assert c[1, 0] == pytest.approx(0.0)  # CTR_2(A) + CTR_2(B)
    assert nc[0, 1] == pytest.approx(1.5) and nc[1, 0] == pytest.approx(2.0)


def _world(seed: int, n_queries: int = 80, n_docs: int = 15, k: int = 8) -> tuple:
    rng = np.random.default_rng(seed)
    grades = {
        f"q{i}": rng.choice(5, n_docs, p=[0.5, 0.25, 0.13, 0.08, 0.04]) for i in range(n_queries)
    }

    def ranker(noise: float) -> tuple[dict, dict]:
        lists, glist = {}, {}
        for q, g in grades.items():
            order = np.argsort(-(g + rng.normal(0, noise, n_docs)))[:k]
            lists[q], glist[q] = [f"{q}/{j}" for j in order], g[order].tolist()
        return lists, glist

    return rng, ranker


@pytest.mark.parametrize("eta", [0.5, 2.0])
def test_estimators_recover_pbm_propensities(eta: float) -> None:
    rng, ranker = _world(0)
    truth = PBM(eta=eta)
    true = pbm_examination(8, eta)
    lists, glist = ranker(1.0)
    sessions, rel = sessions_from_lists(lists, 60_000, rng, glist)
    randomised, rel2, pairs = swap_interventions(sessions, "swap-first", rng, rel)
    est = swap_propensities(simulate_log(truth, randomised, rng, rel2), pairs)
    np.testing.assert_allclose(est, true, atol=0.05)
    # Harvesting and EM use logs of three rankers with different noise.
    parts = []
    for noise in (0.5, 1.0, 2.0):
        lists, glist = ranker(noise)
        s, g = sessions_from_lists(lists, 12_000, rng, glist)
        parts.append(simulate_log(truth, s, rng, g))
    log = concat_logs(parts)
    np.testing.assert_allclose(harvest_propensities(log), true, atol=0.05)
    np.testing.assert_allclose(em_propensities(log), true, atol=0.05)
