"""Each policy against a hand-computed step, plus batching, merging, and save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankloop.bandits.policies import (
    POLICIES,
    UCB1,
    BernoulliTS,
    CandidateOrder,
    DiagLinUCB,
    EpsilonGreedy,
    HybridLinUCB,
    InSlateThompson,
    LinearTS,
    LinUCB,
    Policy,
    Popularity,
    RandomPolicy,
    TopK,
    ridge_update,
    sherman_morrison,
)
from rankloop.errors import ConfigError, FormatError, RankloopError


# ---- Sherman–Morrison ------------------------------------------------------------------------
def test_one_sherman_morrison_update_equals_the_direct_inverse():
    a = np.array([[[2.0, 0.5], [0.5, 1.0]]])
    x = np.array([[1.0, -2.0]])
    a_inv = np.linalg.inv(a)
    sherman_morrison(a_inv, np.array([0]), x)
    np.testing.assert_allclose(a_inv[0], np.linalg.inv(a[0] + np.outer(x[0], x[0])), rtol=1e-12)


def test_ridge_update_batches_with_repeated_arms_match_direct_solutions():
    rng = np.random.default_rng(0)
    m, d = 4, 3
    a = np.broadcast_to(np.eye(d), (m, d, d)).copy()
    a_inv = a.copy()
    b = np.zeros((m, d))
    # arm 0 occurs 12 times (direct re-inversion), arms 1-2 a few times (waves), arm 3 never
    arms = np.array([0] * 12 + [1, 2, 1, 2, 1])
    rng.shuffle(arms)
    x = rng.normal(size=(len(arms), d))
    r = rng.random(len(arms))
    touched = ridge_update(a, a_inv, b, x, arms, r)
    assert touched.tolist() == [0, 1, 2]
    for arm in range(m):
        xa = x[arms == arm]
        np.testing.assert_allclose(a[arm], np.eye(d) + xa.T @ xa, atol=1e-12)
        np.testing.assert_allclose(a_inv[arm], np.linalg.inv(a[arm]), atol=1e-10)
        np.testing.assert_allclose(b[arm], (r[arms == arm, None] * xa).sum(axis=0), atol=1e-12)


# ---- context-free ----------------------------------------------------------------------------
def test_ucb1_hand_computed_scores():
    p = UCB1(3)
    p.update(None, np.array([0, 0, 1]), np.array([1.0, 0.0, 1.0]))
    t = 3
    want = [0.5 + math.sqrt(2 * math.log(t) / 2), 1.0 + math.sqrt(2 * math.log(t) / 1), math.inf]
    np.testing.assert_allclose(p.scores()[0], want)
    assert p.select().tolist() == [2]  # the never-pulled arm first


def test_epsilon_greedy_exploits_the_best_mean_and_explores_with_epsilon():
    greedy = EpsilonGreedy(3, epsilon=0.0)
    greedy.update(None, np.array([0, 1, 1]), np.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(greedy.means(), [1.0, 0.5, 0.0])
    assert greedy.select(candidates=np.array([[1, 2], [0, 2]])).tolist() == [1, 0]
    explorer = EpsilonGreedy(3, epsilon=1.0, random_state=1)
    explorer.update(None, np.array([0]), np.array([1.0]))
    picks = explorer.select(candidates=np.tile([0, 1, 2], (600, 1)))
    assert set(np.bincount(picks, minlength=3) > 150) == {True}


def test_bernoulli_ts_posterior_and_seeded_draw():
    p = BernoulliTS(2, alpha=1.0, beta=2.0, random_state=5)
    p.update(None, np.array([0, 0, 1]), np.array([1.0, 0.0, 1.0]))
    a, b = p.posterior()
    np.testing.assert_allclose(a, [2.0, 2.0])
    np.testing.assert_allclose(b, [3.0, 2.0])
    # the draw is rng.beta on the posterior, with the policy's own generator
    ref = np.random.default_rng(5).beta(a, b)
    np.testing.assert_allclose(p.scores()[0], ref)
    with pytest.raises(RankloopError, match=r"\[0, 1\]"):
        p.update(None, np.array([0]), np.array([2.0]))


def test_popularity_random_and_candidate_order():
    pop = Popularity(3)
    pop.update(None, np.array([2, 2, 1]), np.array([1.0, 1.0, 1.0]))
    assert pop.select().tolist() == [2]
    order = CandidateOrder(5)
    assert order.select(candidates=np.array([[4, 1, 3]])).tolist() == [4]
    rnd = RandomPolicy(4, random_state=0)
    picks = rnd.select(candidates=np.tile([0, 3], (200, 1)))
    assert set(picks.tolist()) == {0, 3}


# ---- linear ----------------------------------------------------------------------------------
def test_linucb_hand_computed_step():
    p = LinUCB(2, 2, alpha=2.0, reg=1.0)
    p.update(np.array([[1.0, 0.0]]), np.array([0]), np.array([1.0]))
    # A_0 = [[2, 0], [0, 1]], b_0 = [1, 0], theta_0 = [0.5, 0]
    np.testing.assert_allclose(p.A_[0], [[2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(p.theta_[0], [0.5, 0.0])
    s = p.scores(np.array([[1.0, 0.0]]))[0]
    np.testing.assert_allclose(s, [0.5 + 2.0 * math.sqrt(0.5), 0.0 + 2.0 * 1.0])
    assert p.select(np.array([[1.0, 0.0]])).tolist() == [1]


def test_linear_ts_samples_around_the_ridge_mean():
    p = LinearTS(2, 2, alpha=0.5, random_state=9)
    x = np.array([[1.0, 0.0]])
    p.update(x, np.array([0]), np.array([1.0]))
    z = np.random.default_rng(9).standard_normal((1, 2))
    want = np.array([0.5, 0.0]) + 0.5 * np.sqrt([0.5, 1.0]) * z[0]
    np.testing.assert_allclose(p.scores(x)[0], want)
    zero = LinearTS(2, 2, alpha=0.0)
    zero.update(x, np.array([0]), np.array([1.0]))
    np.testing.assert_allclose(zero.scores(x)[0], [0.5, 0.0])


def test_hybrid_linucb_hand_computed_step():
    # d = 1, one arm feature: arm 0 has f = 2, arm 1 has f = 1; one update (x=1, arm 0, r=1)
    p = HybridLinUCB(2, 1, np.array([[2.0], [1.0]]), alpha=1.0, reg=1.0)
    p.update(np.array([[1.0]]), np.array([0]), np.array([1.0]))
    # Algorithm 2 by hand: A0 = 1 + 4 - 2 = 3, b0 = 2 - 1 = 1, beta = 1/3
    np.testing.assert_allclose(p.A0_, [[3.0]])
    np.testing.assert_allclose(p.b0_, [1.0])
    np.testing.assert_allclose(p.beta_, [1 / 3])
    mean, var = p.mean_and_variance(np.array([[1.0]]), None)
    # arm 0: theta = (1 - 2/3)/2 = 1/6, mean = 2/3 + 1/6; s = 4/3 - 4/3 + 1/2 + 1/3
    # arm 1 (unseen): mean = 1/3, s = 1/3 + 1
    np.testing.assert_allclose(mean[0], [5 / 6, 1 / 3])
    np.testing.assert_allclose(var[0], [5 / 6, 4 / 3])


def _algorithm2_reference(arm_features, d, reg, rows):
    """Li et al. 2010, Algorithm 2, transcribed literally, one row at a time."""
    m, p = arm_features.shape
    k = d * p
    a0, b0 = reg * np.eye(k), np.zeros(k)
    a = [reg * np.eye(d) for _ in range(m)]
    bb = [np.zeros((d, k)) for _ in range(m)]
    b = [np.zeros(d) for _ in range(m)]
    for x, arm, r in rows:
        z = np.outer(x, arm_features[arm]).ravel()
        ai = np.linalg.inv(a[arm])
        a0 += bb[arm].T @ ai @ bb[arm]
        b0 += bb[arm].T @ ai @ b[arm]
        a[arm] += np.outer(x, x)
        bb[arm] += np.outer(x, z)
        b[arm] += r * x
        ai = np.linalg.inv(a[arm])
        a0 += np.outer(z, z) - bb[arm].T @ ai @ bb[arm]
        b0 += r * z - bb[arm].T @ ai @ b[arm]
    return a0, b0, a, bb, b


def test_hybrid_linucb_batched_update_matches_algorithm_2():
    rng = np.random.default_rng(4)
    m, d, pdim = 5, 3, 2
    feats = rng.normal(size=(m, pdim))
    x = rng.normal(size=(40, d))
    arms = rng.integers(0, m, 40)
    r = rng.random(40)
    pol = HybridLinUCB(m, d, feats, reg=1.0, batch_size=40)
    pol.update(x, arms, r)
    assert pol.n_pending == 0
    a0, b0, a, bb, b = _algorithm2_reference(feats, d, 1.0, zip(x, arms, r))
    np.testing.assert_allclose(pol.A0_, a0, atol=1e-9)
    np.testing.assert_allclose(pol.b0_, b0, atol=1e-9)
    for arm in range(m):
        np.testing.assert_allclose(pol.A_[arm], a[arm], atol=1e-9)
        np.testing.assert_allclose(pol.B_[arm], bb[arm], atol=1e-9)
        np.testing.assert_allclose(pol.b_[arm], b[arm], atol=1e-9)
    # scores against the paper's four-term formula
    xq = rng.normal(size=(2, d))
    mean, var = pol.mean_and_variance(xq, None)
    a0i = np.linalg.inv(a0)
    beta = a0i @ b0
    for i in range(2):
        for arm in range(m):
            z = np.outer(xq[i], feats[arm]).ravel()
            ai = np.linalg.inv(a[arm])
            theta = ai @ (b[arm] - bb[arm] @ beta)
            s = (
                z @ a0i @ z
                - 2 * z @ a0i @ bb[arm].T @ ai @ xq[i]
                + xq[i] @ ai @ xq[i]
                + xq[i] @ ai @ bb[arm] @ a0i @ bb[arm].T @ ai @ xq[i]
            )
            np.testing.assert_allclose(mean[i, arm], z @ beta + xq[i] @ theta, atol=1e-9)
            np.testing.assert_allclose(var[i, arm], s, atol=1e-9)


def test_diag_linucb_hand_computed_step():
    p = DiagLinUCB(1, 2, alpha=1.0, reg=1.0)
    x = np.array([[1.0, 2.0]])
    p.update(x, np.array([0]), np.array([1.0]))
    # precision = 1 + [1, 4]; theta = [1/2, 2/5]; mean = 1/2 + 4/5; width^2 = 1/2 + 4/5
    np.testing.assert_allclose(p.scores(x)[0], [1.3 + math.sqrt(1.3)])


def test_diag_linucb_merged_shards_equal_one_shard_with_all_data():
    rng = np.random.default_rng(2)
    m, d, n = 6, 4, 300
    x = rng.normal(size=(n, d))
    arms = rng.integers(0, m, n)
    r = (rng.random(n) < 0.3).astype(float)
    single = DiagLinUCB(m, d, alpha=0.7, random_state=11)
    single.update(x, arms, r)
    shard_a = DiagLinUCB(m, d, alpha=0.7, random_state=11)
    shard_b = DiagLinUCB(m, d, alpha=0.7, random_state=99)
    half = rng.random(n) < 0.5
    shard_a.update(x[half], arms[half], r[half])
    shard_b.update(x[~half], arms[~half], r[~half])
    merged = shard_a.merge(shard_b)
    for name, value in single.statistics().items():
        np.testing.assert_allclose(getattr(merged, name), value, atol=1e-12)
    xq = rng.normal(size=(50, d))
    cands = np.stack([rng.permutation(m)[:4] for _ in range(50)])
    np.testing.assert_allclose(merged.scores(xq, cands), single.scores(xq, cands), atol=1e-12)
    assert np.array_equal(merged.select(xq, cands), single.select(xq, cands))
    # statistics dicts merge the same way, and shards with other shapes are refused
    np.testing.assert_allclose(shard_a.merge(shard_b.statistics()).sq_, single.sq_, atol=1e-12)
    with pytest.raises(RankloopError, match="differ"):
        shard_a.merge(DiagLinUCB(m, d + 1))


# ---- slates ----------------------------------------------------------------------------------
def test_topk_takes_the_best_scores_and_cascade_feedback_stops_at_the_first_click():
    base = EpsilonGreedy(5, epsilon=0.0)
    base.update(None, np.arange(5), np.array([0.1, 0.9, 0.5, 0.7, 0.3]))
    top = TopK(base, 3, feedback="cascade")
    assert top.select(candidates=np.array([[0, 1, 2, 3, 4]])).tolist() == [[1, 3, 2]]
    # slate [0, 2, 4]; click on position 1 only: positions 0 and 1 are examined, 2 is not
    before = base.counts_.copy()
    top.update(None, np.array([[0, 2, 4]]), np.array([[0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(base.counts_ - before, [1, 0, 1, 0, 0])
    # too few candidates: the slate is padded with -1
    assert top.select(candidates=np.array([[4, -1, -1]])).tolist() == [[4, -1, -1]]


def test_in_slate_ts_per_slot_counts_and_distinct_items():
    p = InSlateThompson(4, 2, per_slot=True, random_state=0)
    p.update(None, np.array([[0, 1], [1, 2]]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(p.trials_, [[1, 0], [1, 1], [0, 1], [0, 0]])
    np.testing.assert_allclose(p.successes_, [[1, 0], [0, 0], [0, 1], [0, 0]])
    slates = p.select(candidates=np.tile(np.arange(4), (200, 1)))
    assert (slates[:, 0] != slates[:, 1]).all()
    # near-certain posteriors: slot 0 prefers item 3, slot 1 prefers item 0
    q = InSlateThompson(4, 2, per_slot=True, random_state=0)
    q.successes_[:] = [[0, 900], [0, 0], [0, 0], [900, 0]]
    q.trials_[:] = 1000
    assert q.select(candidates=np.array([[0, 1, 2, 3]])).tolist() == [[3, 0]]
    marginal = InSlateThompson(4, 2, per_slot=False, resample=False)
    assert marginal.successes_.shape == (4, 1)


# ---- batching, delays, persistence, errors ----------------------------------------------------
def test_batched_updates_wait_for_batch_size_and_equal_sequential_updates():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 3))
    arms = rng.integers(0, 4, 10)
    r = rng.random(10)
    batched = LinUCB(4, 3, batch_size=4)
    for i in range(10):
        batched.update(x[i : i + 1], arms[i : i + 1], r[i : i + 1])
    assert batched.n_pending == 2 and batched.n_updates_ == 8
    batched.flush()
    sequential = LinUCB(4, 3)
    for i in range(10):
        sequential.update(x[i : i + 1], arms[i : i + 1], r[i : i + 1])
    np.testing.assert_allclose(batched.A_inv_, sequential.A_inv_, atol=1e-12)
    np.testing.assert_allclose(batched.theta_, sequential.theta_, atol=1e-12)


def _make(name: str, m: int, d: int):
    cls = POLICIES.get(name)
    kwargs: dict = {"random_state": 3}
    if name == "topk":
        return cls(POLICIES.get("ucb1")(m, **kwargs), 3)
    if name in ("linucb", "lints", "diag_linucb"):
        return cls(m, d, **kwargs)
    if name == "hybrid_linucb":
        return cls(m, d, np.random.default_rng(0).normal(size=(m, 2)), **kwargs)
    if name == "inslate_ts":
        return cls(m, 3, batch_size=5, **kwargs)
    return cls(m, **kwargs)


@pytest.mark.parametrize("name", POLICIES.names())
def test_save_load_round_trip_continues_identically(name, tmp_path):
    m, d = 7, 3
    rng = np.random.default_rng(0)
    pol = _make(name, m, d)
    x = rng.normal(size=(20, d))
    if pol.slate:
        slates = pol.select(None, np.tile(np.arange(m), (20, 1)))
        pol.update(None, slates, (rng.random(slates.shape) < 0.5).astype(float))
        pol.update(None, slates[:2], np.zeros((2, 3)))  # left queued (batch_size=5)
    else:
        pol = TopK(pol, 2) if name == "egreedy" else pol
        if pol.slate:
            pol.update(x if pol.dim else None, np.tile([0, 1], (20, 1)), np.ones((20, 2)))
        else:
            pol.update(x if pol.dim else None, rng.integers(0, m, 20), (rng.random(20) < 0.5) * 1.0)
    loaded = Policy.load(pol.save(tmp_path / "p.npz"))
    assert type(loaded) is type(pol) and loaded.n_pending == pol.n_pending
    ctx = x[:5] if pol.dim else None
    cands = np.tile(np.arange(m), (5, 1))
    np.testing.assert_array_equal(loaded.select(ctx, cands), pol.select(ctx, cands))


def test_bad_inputs_raise_project_errors(tmp_path):
    with pytest.raises(ConfigError):
        LinUCB(0, 3)
    with pytest.raises(ConfigError):
        EpsilonGreedy(3, epsilon=1.5)
    p = LinUCB(3, 2)
    with pytest.raises(RankloopError, match="features"):
        p.select(np.zeros((1, 5)))
    with pytest.raises(RankloopError, match="candidate"):
        p.select(np.zeros((1, 2)), np.array([[0, 7]]))
    with pytest.raises(RankloopError, match="shape"):
        p.update(np.zeros((2, 2)), np.array([0, 1]), np.array([1.0]))
    with pytest.raises(RankloopError, match="needs"):
        p.select(None)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(FormatError):
        Policy.load(bad)
    with pytest.raises(RankloopError, match="no saved policy"):
        Policy.load(tmp_path / "missing.npz")
