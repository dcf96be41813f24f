"""Environments: FAISS candidates, click models, oracle, drift, cold start, delays, worlds."""

from __future__ import annotations

import numpy as np
import pytest

from rankloop.bandits.envs import (
    EnvConfig,
    FeedbackQueue,
    SlateEnv,
    World,
    build_world,
    ratings_world,
)
from rankloop.clicks.simulate import pbm_examination
from rankloop.errors import ConfigError, RankloopError


def test_candidates_are_the_exact_top_n_by_inner_product(world):
    env = SlateEnv(world, EnvConfig(n_candidates=6, slate_size=3), rounds=100, random_state=0)
    users = env.arrive(8)
    cands = env.candidates(users)
    scores = world.user_vectors[users].astype(np.float64) @ world.item_vectors.T.astype(np.float64)
    want = np.argsort(-scores, axis=1)[:, :6]
    np.testing.assert_array_equal(np.sort(cands, axis=1), np.sort(want, axis=1))


def test_pbm_expected_clicks_and_oracle_by_hand(world):
    env = SlateEnv(world, EnvConfig(n_candidates=5, slate_size=3, eta=1.0), 100, 0)
    users = np.array([0, 1])
    cands = env.candidates(users)
    slates = cands[:, [2, 0, 1]]
    attr = world.attractiveness[users[:, None], slates]
    _, expected = env.feedback(users, slates)
    np.testing.assert_allclose(expected, attr @ pbm_examination(3, 1.0))
    best = -np.sort(-world.attractiveness[users[:, None], cands], axis=1)[:, :3]
    np.testing.assert_allclose(env.oracle(users, cands), best @ [1.0, 0.5, 1 / 3])
    assert (env.oracle(users, cands) >= expected - 1e-12).all()


def test_cascade_expected_clicks_and_at_most_one_click(world):
    env = SlateEnv(world, EnvConfig(n_candidates=5, slate_size=3, click_model="cascade"), 100, 0)
    users = env.arrive(400)
    slates = env.candidates(users)[:, :3]
    clicks, expected = env.feedback(users, slates)
    attr = world.attractiveness[users[:, None], slates]
    np.testing.assert_allclose(expected, 1.0 - np.prod(1.0 - attr, axis=1))
    assert clicks.sum(axis=1).max() <= 1


def test_empty_slots_never_click(world):
    env = SlateEnv(world, EnvConfig(n_candidates=5, slate_size=3), 100, 0)
    clicks, expected = env.feedback(np.array([0, 1]), np.array([[-1, -1, -1], [-1, -1, -1]]))
    assert clicks.sum() == 0 and expected.sum() == 0


def test_cold_start_items_join_the_index_over_time(world):
    env = SlateEnv(world, EnvConfig(n_candidates=5, slate_size=2, cold_start=0.4), 1000, 1)
    start = env.n_available
    assert start == world.n_items - 10
    env.advance(500)
    mid = env.n_available
    env.advance(500)
    assert start <= mid <= env.n_available == world.n_items
    assert set(env.candidates(np.arange(5)).ravel()) <= set(range(world.n_items))


def test_drift_moves_attractiveness_and_is_seeded(world):
    a = SlateEnv(world, EnvConfig(n_candidates=5, slate_size=2, drift=2.0), 1000, 7)
    b = SlateEnv(world, EnvConfig(n_candidates=5, slate_size=2, drift=2.0), 1000, 7)
    users, items = np.array([0, 1]), np.array([[0, 1], [2, 3]])
    before = a.attractiveness(users, items)
    a.advance(1000)
    b.advance(1000)
    after = a.attractiveness(users, items)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, b.attractiveness(users, items))


def test_same_seed_same_users_and_click_noise(world):
    cfg = EnvConfig(n_candidates=5, slate_size=3)
    a, b = SlateEnv(world, cfg, 100, 3), SlateEnv(world, cfg, 100, 3)
    ua, ub = a.arrive(50), b.arrive(50)
    np.testing.assert_array_equal(ua, ub)
    sa = a.candidates(ua)[:, :3]
    np.testing.assert_array_equal(a.feedback(ua, sa)[0], b.feedback(ub, sa)[0])


def test_feedback_queue_delays():
    q = FeedbackQueue(delay=250)
    q.push(100, "a")
    q.push(200, "b")
    assert q.pop_ready(300) == []
    assert q.pop_ready(350) == ["a"]
    assert q.drain() == ["b"] and len(q) == 0
    assert FeedbackQueue(0).pop_ready(0) == []


def test_config_and_world_validation(world):
    with pytest.raises(ConfigError):
        EnvConfig(n_candidates=3, slate_size=5)
    with pytest.raises(ConfigError, match="unknown env option"):
        EnvConfig.from_dict({"bogus": 1})
    with pytest.raises(ConfigError):
        SlateEnv(world, EnvConfig(n_candidates=500, slate_size=3), 10, 0)
    with pytest.raises(ConfigError, match="world type"):
        build_world({"type": "nope"})
    with pytest.raises(RankloopError, match="rows"):
        World(
            name="bad",
            item_ids=["a"],
            attractiveness=np.full((2, 1), 0.5),
            user_vectors=np.zeros((2, 2), np.float32),
            item_vectors=np.zeros((2, 2), np.float32),
            user_features=np.zeros((2, 1)),
            arm_features=np.zeros((1, 1)),
            popularity=np.zeros(1),
        )


def test_coat_world_from_wmf(coat_dir):
    w = ratings_world("coat", path=str(coat_dir), factors=8, arm_dim=4, base_ctr=0.1)
    assert w.attractiveness.shape == (290, 300)
    assert abs(w.attractiveness.mean() - 0.1) < 1e-6
    assert w.user_features.shape == (290, 9) and w.arm_features.shape == (300, 4)
    assert w.popularity.sum() == 6960  # the self-selected (logged) ratings
