"""Online learning to rank (PDGD, DBGD): learning on a synthetic world, the Plackett-Luce
logging policy, PDGD's rho, determinism, checkpoints and input checks."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest

from rankloop.errors import ConfigError, RankloopError
from rankloop.loop.online import DBGD, PDGD, LinearOnlineRanker, reversed_pair_weights

N_QUERIES, N_DOCS, N_FEATURES, K = 200, 50, 8, 10


@pytest.fixture(scope="module")
def world() -> tuple[np.ndarray, np.ndarray]:
    """(features (Q, N, d), grades (Q, N) in 0..2) from a fixed linear relevance function."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_QUERIES, N_DOCS, N_FEATURES))
    w = rng.normal(size=N_FEATURES)
    z = x @ (w / np.linalg.norm(w))
    return x, (z > 0.75).astype(np.int64) + (z > 1.5)


def _ndcg10(scores: np.ndarray, grades: np.ndarray) -> float:
    """Mean nDCG@10 (gain 2^g - 1, ties by row index) of ranking each query by `scores`."""
    discount = 1.0 / np.log2(np.arange(2, K + 2))
    gain = 2.0**grades - 1
    order = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    dcg = (np.take_along_axis(gain, order, axis=1) * discount).sum(axis=1)
    ideal = (-np.sort(-gain, axis=1)[:, :K] * discount).sum(axis=1)
    return float((dcg / ideal).mean())


def _simulate(
    learner: LinearOnlineRanker, x: np.ndarray, grades: np.ndarray, n: int, seed: int
) -> None:
    """`n` sessions: a random query, the learner's top K, position-based clicks, an update."""
    rng = np.random.default_rng(seed)
    attract = 0.1 + 0.9 * (2.0**grades - 1) / 3
    for _ in range(n):
        q = rng.integers(len(x))
        shown = learner.rank(x[q], K)
        clicks = rng.random(len(shown)) < attract[q, shown] / np.arange(1, len(shown) + 1)
        learner.update(x[q], shown, clicks)


@pytest.mark.parametrize(("cls", "floor"), [(PDGD, 0.8), (DBGD, 0.6)])
def test_learns_from_clicks(world: tuple[np.ndarray, np.ndarray], cls: type, floor: float) -> None:
    x, grades = world
    learner = cls(N_FEATURES, random_state=1)
    start = _ndcg10(x @ learner.weights, grades)
    _simulate(learner, x, grades, 3000, seed=2)
    end = _ndcg10(x @ learner.weights, grades)
    rng = np.random.default_rng(3)
    random_ranker = np.mean([_ndcg10(rng.random(grades.shape), grades) for _ in range(20)])
    assert end > floor > start + 0.3
    assert end > random_ranker + 0.3


def test_plackett_luce_sampling_frequencies() -> None:
    learner = PDGD(3, random_state=0)
    learner.weights[:] = [1.0, 0.0, -0.5]
    x = np.eye(3)
    e = np.exp(learner.weights)
    rng = np.random.default_rng(4)
    n = 30_000
    seen = [tuple(learner.rank(x, 3, rng)) for _ in range(n)]
    for perm in itertools.permutations(range(3)):
        exact = e[perm[0]] / e.sum() * e[perm[1]] / (e[perm[1]] + e[perm[2]])
        freq = seen.count(perm) / n
        assert abs(freq - exact) < 4 * math.sqrt(exact * (1 - exact) / n)
    assert all(len(learner.rank(x, 10)) == 3 for _ in range(3))  # k' = min(k, N)


def _pl_probability(scores: np.ndarray, ranking: list[int]) -> float:
    """Plackett-Luce probability of the prefix `ranking` of all candidates, by its definition."""
    left = list(range(len(scores)))
    p = 1.0
    for row in ranking:
        p *= math.exp(scores[row]) / sum(math.exp(scores[r]) for r in left)
        left.remove(row)
    return p


def test_rho_matches_enumeration_and_is_half_for_equal_scores() -> None:
    rng = np.random.default_rng(5)
    scores = rng.normal(size=7) * 2
    shown = rng.permutation(7)[:4]
    upper, lower = np.array(list(itertools.combinations(range(4), 2))).T
    rho = reversed_pair_weights(scores, shown, upper, lower)
    for u, lo, r in zip(upper, lower, rho):
        swapped = list(shown)
        swapped[u], swapped[lo] = swapped[lo], swapped[u]
        p, q = _pl_probability(scores, list(shown)), _pl_probability(scores, swapped)
        assert r == pytest.approx(q / (p + q), abs=1e-12)

    scores[shown[0]] = scores[shown[3]]
    assert reversed_pair_weights(scores, shown, np.array([0]), np.array([3]))[0] == 0.5
    flat = reversed_pair_weights(
        np.zeros(5), np.arange(3), np.array([0, 0, 1]), np.array([1, 2, 2])
    )
    assert (flat == 0.5).all()
    extreme = reversed_pair_weights(
        np.array([900.0, -900.0, 0.0]), np.array([1, 0, 2]), [0, 0], [1, 2]
    )
    assert np.isfinite(extreme).all() and extreme == pytest.approx([1.0, 1.0])


def test_pdgd_update_pairs() -> None:
    learner = PDGD(5, lr=0.1)
    clicks = np.array([False, False, True, False, False])
    learner.update(np.eye(5), np.arange(5), clicks)
    # clicked position 2 beats positions 0, 1 (above) and 3 (directly below); rho 0.5 and
    # grad P = 0.25 at equal scores give each pair weight 0.125; position 4 is not inferred.
    assert learner.weights == pytest.approx(0.1 * np.array([-0.125, -0.125, 0.375, -0.125, 0.0]))
    before = learner.weights.copy()
    learner.update(np.eye(5), np.arange(5), np.zeros(5, dtype=bool))
    assert (learner.weights == before).all()


def test_dbgd_moves_towards_a_winning_candidate() -> None:
    learner = DBGD(4, random_state=6)
    x = np.random.default_rng(7).normal(size=(20, 4))
    for _ in range(50):
        shown = learner.rank(x, 5)
        direction = learner._direction.copy()
        before = learner.weights.copy()
        teams = learner._teams
        clicks = teams == 1  # every candidate-team position is clicked: the candidate wins
        learner.update(x, shown, clicks)
        assert learner.weights == pytest.approx(before + 0.01 * direction)
    assert np.linalg.norm(direction) == pytest.approx(1.0)
    shown = learner.rank(x, 5)
    before = learner.weights.copy()
    learner.update(x, shown, np.zeros(5, dtype=bool))  # a tie leaves the weights alone
    assert (learner.weights == before).all()


@pytest.mark.parametrize("cls", [PDGD, DBGD])
def test_same_seed_same_run(world: tuple[np.ndarray, np.ndarray], cls: type) -> None:
    x, grades = world
    a, b, c = (
        cls(N_FEATURES, random_state=8),
        cls(N_FEATURES, random_state=8),
        cls(N_FEATURES, random_state=9),
    )
    for learner in (a, b, c):
        _simulate(learner, x, grades, 300, seed=10)
    assert (a.weights == b.weights).all()
    assert not (a.weights == c.weights).all()


@pytest.mark.parametrize("cls", [PDGD, DBGD])
def test_pickle_round_trip_continues_identically(
    world: tuple[np.ndarray, np.ndarray], cls: type
) -> None:
    x, grades = world
    learner = cls(N_FEATURES, random_state=11)
    _simulate(learner, x, grades, 200, seed=12)
    shown = learner.rank(x[0], K)  # checkpoint between rank and update
    restored = pickle.loads(pickle.dumps(learner))
    clicks = np.arange(len(shown)) % 3 == 0
    for one in (learner, restored):
        one.update(x[0], shown, clicks)
        _simulate(one, x, grades, 200, seed=13)
    assert (learner.weights == restored.weights).all()
    assert not (learner.weights == 0).all()


def test_bad_parameters_and_inputs_raise() -> None:
    for bad in (0, -0.1, math.nan, math.inf, "0.1", True):
        with pytest.raises(ConfigError, match="lr must be"):
            PDGD(3, lr=bad)
        with pytest.raises(ConfigError, match="lr must be"):
            DBGD(3, lr=bad)
    for bad in (0, -1.0, math.nan):
        with pytest.raises(ConfigError, match="delta must be"):
            DBGD(3, delta=bad)
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ConfigError, match="n_features must be"):
            PDGD(bad)
    with pytest.raises(ConfigError, match="random_state"):
        DBGD(3, random_state=-1)
    x = np.zeros((6, 3))
    for learner in (PDGD(3), DBGD(3)):
        with pytest.raises(RankloopError, match=r"\(N, 3\)"):
            learner.scores(np.zeros((6, 4)))
        with pytest.raises(RankloopError, match=r"\(N, 3\)"):
            learner.rank(np.zeros(3), 2)
        with pytest.raises(RankloopError, match=r"N >= 1"):
            learner.rank(np.zeros((0, 3)), 2)
        with pytest.raises(ConfigError, match="k must be"):
            learner.rank(x, 0)
        shown = learner.rank(x, 3)
        with pytest.raises(RankloopError, match=r"\(N, 3\)"):
            learner.update(np.zeros((6, 2)), shown, np.zeros(3, dtype=bool))
        with pytest.raises(RankloopError, match="shape of shown"):
            learner.update(x, shown, np.zeros(4, dtype=bool))
        with pytest.raises(RankloopError, match="repeat"):
            learner.update(x, np.array([1, 1, 2]), np.zeros(3, dtype=bool))
        with pytest.raises(RankloopError, match="index rows"):
            learner.update(x, np.array([0, 1, 6]), np.zeros(3, dtype=bool))
        with pytest.raises(RankloopError, match="0/1"):
            learner.update(x, shown, np.full(3, 2))
    with pytest.raises(RankloopError, match=r"last DBGD\.rank"):
        DBGD(3).update(x, np.arange(3), np.zeros(3, dtype=bool))
    with pytest.raises(RankloopError, match="upper < lower"):
        reversed_pair_weights(np.zeros(4), np.arange(3), np.array([1]), np.array([1]))
