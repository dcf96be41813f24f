"""The recommendation loop: `RecWorld` and the recommender and bandit learners, run by hand the
way the runner runs them (greedy top k, PBM clicks), on a small synthetic world and on Coat."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from rankloop.errors import ConfigError
from rankloop.loop.base import LEARNERS, WORLDS, Learner, LoopLog, Shown, round_rng
from rankloop.loop.recommend import BanditLearner, RecommenderLearner, RecWorld

K = 4
SYNTH = {"dataset": "synthetic", "n_users": 30, "n_items": 25, "factors": 4, "random_state": 3}
LEARNER_SPECS = [
    ("recommender", {"model": "wmf", "params": {"factors": 8}}),
    ("recommender", {"model": "relmf", "params": {"factors": 8, "iterations": 20}}),
    ("recommender", {"model": "bpr", "params": {"factors": 8}, "retrain_every": 2}),
    ("bandit", {"policy": "linucb"}),
    ("bandit", {"policy": "inslate_ts"}),
    ("bandit", {"policy": "bts"}),
]


def coat_available() -> bool:
    root = Path(os.environ.get("RANKLOOP_DATA", "").strip() or "../shared/data")
    return (root / "recsys" / "coat" / "test.ascii").is_file()


def world_of(**params: object) -> RecWorld:
    return WORLDS.create("recommend", {**SYNTH, **params})  # type: ignore[return-value]


def play(world: RecWorld, learner: Learner, rounds: range, log: LoopLog, n: int = 12,
         seed: int = 5) -> list[dict[str, float]]:  # fmt: skip
    """The runner's protocol for `rounds`: traffic, ranking (or online serving), PBM clicks,
    log, learn, evaluate; returns the measures of each round."""
    measures = []
    for r in rounds:
        users = world.draw_users(n, round_rng(seed, r, "traffic"))
        cands = world.candidates(users)
        click_rng = round_rng(seed, r, "clicks")
        if learner.online:
            serve_rng = round_rng(seed, r, "serve")
            shown, clicks = np.full((n, K), -1), np.zeros((n, K), bool)
            for j, (u, c) in enumerate(zip(users, cands)):
                shown[j] = learner.serve_one(world, int(u), c, K, serve_rng)
                attr = world.attractiveness(users[j : j + 1], shown[j : j + 1], r)
                clicks[j] = world.click_model.simulate_attractiveness(attr, click_rng)[0]
                learner.update_one(world, int(u), c, shown[j], clicks[j])
        else:
            scores = learner.scores(world, users, cands)
            assert scores.shape == cands.shape
            order = np.argsort(-scores, axis=1, kind="stable")[:, :K]
            shown = np.take_along_axis(cands, order, axis=1)
            attr = world.attractiveness(users, shown, r)
            clicks = world.click_model.simulate_attractiveness(attr, click_rng)
        prop = np.broadcast_to(world.examination(K), shown.shape).copy()
        log.append(r, Shown(users, shown, clicks, prop))
        learner.learn(world, log, r, round_rng(seed, r, "learn"))
        measures.append(world.evaluate(learner, round_=r))
    return measures


def run(spec: tuple[str, dict], world: RecWorld, rounds: int = 3) -> tuple[LoopLog, list]:
    learner = LEARNERS.create(*spec)
    learner.start(world, 11)
    log = LoopLog(K)
    return log, play(world, learner, range(rounds), log)


def same_logs(a: LoopLog, b: LoopLog) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f))
        for f in ("rounds", "users", "items", "clicks", "propensities")
    )


@pytest.fixture(scope="module")
def synth() -> RecWorld:
    return world_of(n_candidates=15, drift=0.2)


@pytest.mark.parametrize("spec", LEARNER_SPECS, ids=lambda s: str(s))
def test_loop_shapes_and_determinism(spec: tuple[str, dict], synth: RecWorld) -> None:
    log, measures = run(spec, synth)
    assert len(log) == 3 * 12 and log.items.shape == (36, K)
    assert ((log.items >= 0) & (log.items < synth.n_items)).all()
    for i in range(len(log)):  # shown items are distinct candidates of the user
        row = log.items[i]
        assert len(set(row)) == K and set(row) <= set(synth.candidates(log.users[i : i + 1])[0])
    assert [set(m) for m in measures] == [{"true_dcg@5"}] * 3  # no MAR test in this world
    assert all(0.0 < m["true_dcg@5"] <= 1.0 for m in measures)
    log2, measures2 = run(spec, world_of(n_candidates=15, drift=0.2))  # a fresh, equal world
    assert same_logs(log, log2) and measures == measures2


@pytest.mark.parametrize("spec", LEARNER_SPECS[:2] + LEARNER_SPECS[3:5], ids=lambda s: str(s))
def test_resume_from_pickle(spec: tuple[str, dict], synth: RecWorld) -> None:
    full_log, full = run(spec, synth)
    learner = LEARNERS.create(*spec)
    learner.start(synth, 11)
    log = LoopLog(K)
    first = play(synth, learner, range(2), log)
    blob = pickle.dumps(learner)
    assert b"RecWorld" not in blob  # the world is never part of the learner
    fresh = world_of(n_candidates=15, drift=0.2)  # a resumed run rebuilds the world
    rest = play(fresh, pickle.loads(blob), range(2, 3), log)
    assert first + rest == full and same_logs(log, full_log)


def test_candidates_are_the_platforms_top_n() -> None:
    every = world_of()
    cands = every.candidates(np.arange(every.n_users))
    assert cands.shape == (30, 25) and (np.sort(cands, axis=1) == np.arange(25)).all()
    top = world_of(n_candidates=10).candidates(np.array([0, 3, 3]))
    assert top.shape == (3, 10) and np.array_equal(top[1], top[2])
    assert np.array_equal(top[0], cands[0, :10])  # the platform's order, best first
    u, v = every.base.user_vectors, every.base.item_vectors
    s = u[0] @ v.T
    assert (np.diff(s[top[0]]) <= 1e-6).all() and s[top[0]].min() >= np.delete(s, top[0]).max()


def test_drift_moves_attractiveness_deterministically() -> None:
    a, b = world_of(drift=0.5), world_of(drift=0.5)
    users, items = np.arange(30), np.tile(np.arange(25), (30, 1))
    r0 = a.attractiveness(users, items, 0)
    assert np.array_equal(r0, a.truth)
    assert np.array_equal(world_of().attractiveness(users, items, 7), a.truth)  # no drift
    later = [a.attractiveness(users, items, r) for r in (1, 2, 5)]
    assert all(not np.allclose(x, r0) for x in later) and not np.allclose(later[0], later[1])
    assert np.array_equal(b.attractiveness(users, items, 5), later[2])  # asked out of order
    assert np.array_equal(b.attractiveness(users, items, 2), later[1])
    assert ((0 < later[2]) & (later[2] < 1)).all()
    padded = a.attractiveness(users[:2], np.array([[0, -1], [-1, 3]]), 2)
    assert padded[0, 1] == 0 and padded[1, 0] == 0


def test_popularity_attention_keeps_the_mean() -> None:
    plain, tilted = world_of(), world_of(popularity_attention=2.0)
    assert tilted.truth.mean() == pytest.approx(plain.truth.mean(), rel=1e-9)
    assert tilted.truth.min() >= 0 and tilted.truth.max() <= 1
    pop = plain.popularity

    def corr(t: np.ndarray) -> float:
        return float(np.corrcoef(pop, t.mean(axis=0))[0, 1])

    assert corr(tilted.truth) > corr(plain.truth)
    hard = world_of(popularity_attention=6.0)  # strong enough to clip at 1
    assert hard.truth.max() == 1.0
    assert hard.truth.mean() == pytest.approx(plain.truth.mean(), rel=1e-9)


class Truth(Learner):
    """Ranks by the true round-0 attractiveness."""

    def scores(self, world, users, candidates):  # type: ignore[no-untyped-def]
        return world.attractiveness(users, candidates, 0)


def test_oracle_and_true_dcg() -> None:
    world = world_of(n_candidates=12)
    users = np.arange(world.n_users)
    cands = world.candidates(users)
    best = world.oracle_items(users, cands, 3)
    attr = world.attractiveness(users, cands, 0)
    assert np.allclose(world.attractiveness(users, best, 0), -np.sort(-attr, axis=1)[:, :3])
    assert world.evaluate(Truth()) == {"true_dcg@5": pytest.approx(1.0)}
    padded = world.oracle_items(users[:1], np.array([[cands[0, 0], -1]]), 2)
    assert padded.tolist() == [[cands[0, 0], -1]]


@pytest.mark.parametrize(
    ("factory", "params", "name"),
    [
        (WORLDS, {"dataset": "yahoo"}, "dataset"),
        (WORLDS, {"factors": 0}, "factors"),
        (WORLDS, {"temperature": -1.0}, "temperature"),
        (WORLDS, {"base_ctr": 1.0}, "base_ctr"),
        (WORLDS, {"like_threshold": float("nan")}, "like_threshold"),
        (WORLDS, {"n_candidates": 0}, "n_candidates"),
        (WORLDS, {"n_candidates": 99}, "n_candidates"),
        (WORLDS, {"click_model": "dbn"}, "click_model"),
        (WORLDS, {"eta": -0.5}, "eta"),
        (WORLDS, {"drift": -0.1}, "drift"),
        (WORLDS, {"popularity_attention": "high"}, "popularity_attention"),
        (WORLDS, {"n_users": 1}, "n_users"),
        (WORLDS, {"random_state": -1}, "random_state"),
        (WORLDS, {"bogus": 1}, "bogus"),
        (LEARNERS, {"model": "svd"}, "svd"),
        (LEARNERS, {"params": {"factorz": 8}}, "factorz"),
        (LEARNERS, {"propensity": "oracle"}, "propensity"),
        (LEARNERS, {"retrain_every": 0}, "retrain_every"),
        (LEARNERS, {"include_initial": "yes"}, "include_initial"),
    ],
)
def test_bad_parameters_name_themselves(factory, params: dict, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=name):
        if factory is WORLDS:
            WORLDS.create("recommend", {**SYNTH, **params})
        else:
            LEARNERS.create("recommender", params)


@pytest.mark.parametrize(
    ("params", "name"),
    [({"policy": "exp3"}, "exp3"), ({"feedback": "first"}, "feedback"),
     ({"params": {"slate_size": 3}}, "slate_size"), ({"params": {"alpha": "x"}}, "alpha")],
)  # fmt: skip
def test_bad_bandit_parameters(params: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        LEARNERS.create("bandit", params)


def test_registered_names() -> None:
    assert WORLDS.get("recommend") is RecWorld
    assert LEARNERS.get("recommender") is RecommenderLearner
    assert LEARNERS.get("bandit") is BanditLearner and BanditLearner.online


@pytest.fixture(scope="module")
def coat() -> RecWorld:
    if not coat_available():
        pytest.skip("Coat (recsys/coat/test.ascii) not under RANKLOOP_DATA")
    return WORLDS.create("recommend", {"dataset": "coat", "n_candidates": 50})  # type: ignore[return-value]


def test_coat_world_and_measures(coat: RecWorld) -> None:
    assert (coat.n_users, coat.n_items) == (290, 300) and coat.user_ids.dtype.kind == "U"
    assert coat.initial_likes.nnz == int((coat.data.train.user_items.data >= 4).sum())
    wmf = LEARNERS.create("recommender", {"model": "wmf"})
    wmf.start(coat, 0)
    m = coat.evaluate(wmf)
    assert set(m) == {"dcg@5", "true_dcg@5"}
    assert 0.05 < m["dcg@5"] < 0.3  # the recsys module's WMF on Coat: about 0.1
    assert 0.3 < m["true_dcg@5"] < 1.0
    bandit = LEARNERS.create("bandit", {"policy": "linucb"})
    bandit.start(coat, 0)
    log = LoopLog(K)
    measures = play(coat, bandit, range(1), log, n=50)
    assert 0.0 < measures[0]["dcg@5"] < 1.0 and len(log) == 50
