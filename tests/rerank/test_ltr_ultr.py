"""ULTR estimators: hand-computed IPS weights and one regression-EM step, exact click aggregation,
and recovery of the ranking / propensities on a small synthetic PBM log."""

from __future__ import annotations

import numpy as np
import pytest

from rankloop.clicks import PBM, pbm_examination, sessions_from_lists, simulate_log
from rankloop.data.clicklogs import ClickLog
from rankloop.data.types import Qrels
from rankloop.errors import ConfigError, RankloopError
from rankloop.eval import evaluate
from rankloop.rerank.ltr import (
    IPSEstimator,
    LtrData,
    NaiveEstimator,
    aggregate_clicks,
    ips_weights,
    make_estimator,
    rem_e_step,
    rem_update_theta,
)


def test_ips_weight_is_inverse_propensity_clipped() -> None:
    np.testing.assert_allclose(ips_weights(np.array([1.0, 0.5, 0.1])), [1.0, 2.0, 10.0])
    np.testing.assert_allclose(ips_weights(np.array([1.0, 0.5, 0.1]), clip=5.0), [1.0, 2.0, 5.0])
    with pytest.raises(ConfigError):
        ips_weights(np.array([1.0, 0.0]))
    with pytest.raises(ConfigError):
        ips_weights(np.array([1.0, 0.5]), clip=0.0)


def test_one_regression_em_step_by_hand() -> None:
    # one list shown 4 times; position 1 clicked twice, position 2 never
    clicks, shown = np.array([[2.0, 0.0]]), np.array([4.0])
    theta, gamma = np.array([0.8, 0.5]), np.array([[0.5, 0.4]])
    relevant, examined = rem_e_step(clicks, shown, theta, gamma)
    # position 1: 2 clicks + 2 non-clicks x P(R=1 | C=0) = 0.2*0.5/0.6, x P(E=1 | C=0) = 0.8*0.5/0.6
    # position 2: 4 non-clicks x 0.5*0.4/0.8 (relevant), x 0.5*0.6/0.8 (examined)
    np.testing.assert_allclose(relevant, [[2 + 2 * 0.1 / 0.6, 4 * 0.2 / 0.8]])
    np.testing.assert_allclose(examined, [[2 + 2 * 0.4 / 0.6, 4 * 0.3 / 0.8]])
    new_theta = rem_update_theta(examined, shown, np.ones((1, 2), bool))
    np.testing.assert_allclose(new_theta, [(2 + 0.8 / 0.6) / 4, 1.2 / 0.8 / 4])


def _tiny_features() -> LtrData:
    docs = np.array(["a", "b", "c"])
    return LtrData(
        np.arange(9, dtype=np.float32).reshape(3, 3), np.zeros(3), np.array(["q"] * 3), docs
    )


def test_aggregation_counts_sessions_clicks_and_pairs() -> None:
    log = ClickLog.from_lists(
        ["q", "q", "q", "q"],
        [["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"], ["b", "a", "c"]],
        [[0], [0, 2], [], [1]],
    )
    data = aggregate_clicks(log, _tiny_features())
    assert len(data) == 2 and data.n_sessions == 4
    np.testing.assert_array_equal(data.impressions, [3, 1])
    np.testing.assert_array_equal(data.clicks, [[2, 0, 1], [0, 1, 0]])
    assert data.doc_ids.tolist() == [["a", "b", "c"], ["b", "a", "c"]]
    np.testing.assert_array_equal(data.features[1, 0], [3, 4, 5])  # doc b's row
    p = data.pair_clicks
    assert p is not None
    # list 1: position 1 clicked & 2 not: sessions 1, 2; 1 & not 3: session 1; 3 & not 2: session 2
    np.testing.assert_array_equal(p[0], [[0, 2, 1], [0, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(p[1], [[0, 0, 0], [1, 0, 1], [0, 0, 0]])


def test_aggregation_needs_a_feature_row_per_shown_doc() -> None:
    log = ClickLog.from_lists(["q"], [["a", "zzz"]], [[0]])
    with pytest.raises(RankloopError, match="zzz"):
        aggregate_clicks(log, _tiny_features())


def _synthetic(rank_feature: bool, n_queries: int = 300, k: int = 8, seed: int = 0):
    """Linear relevance, a noisy logging ranker, and (optionally) its reciprocal rank as a feature."""
    rng = np.random.default_rng(seed)
    d = 5
    x = rng.normal(size=(n_queries, k, d)).astype(np.float32)
    util = x[:, :, :3] @ np.array([1.0, -0.7, 0.5]) + rng.normal(scale=0.3, size=(n_queries, k))
    grades = np.digitize(util, [0.5, 1.5])
    order = np.argsort(-(util + rng.normal(scale=1.5, size=util.shape)), axis=1)
    x = np.take_along_axis(x, order[:, :, None], axis=1)
    grades = np.take_along_axis(grades, order, axis=1)
    x[:, :, 4] = 1.0 / np.arange(1, k + 1) if rank_feature else 0.0
    qids = np.repeat([f"q{i}" for i in range(n_queries)], k)
    docs = np.array([f"q{i}d{j}" for i in range(n_queries) for j in range(k)])
    data = LtrData(x.reshape(-1, d), grades.ravel().astype(float), qids, docs)
    split = n_queries * 2 // 3
    train = data.subset_queries([f"q{i}" for i in range(split)])
    test = data.subset_queries([f"q{i}" for i in range(split, n_queries)])
    qrels = Qrels(
        {
            q: {
                d: int(g) for d, g in zip(test.doc_ids[test.qids == q], test.labels[test.qids == q])
            }
            for q in test.query_ids
        }
    )
    off = train.group_offsets()
    lists = {q: list(train.doc_ids[a:b]) for q, a, b in zip(train.query_ids, off[:-1], off[1:])}
    g = {
        q: train.labels[a:b].astype(int).tolist()
        for q, a, b in zip(train.query_ids, off[:-1], off[1:])
    }
    return train, test, qrels, lists, g


def _ndcg(model, test: LtrData, qrels: Qrels) -> float:
    return evaluate(qrels, model.rerank(test), "ndcg_cut_10")["ndcg_cut_10"]


@pytest.fixture(scope="module")
def pbm_world():
    train, test, qrels, lists, grades = _synthetic(rank_feature=True)
    sessions, rel = sessions_from_lists(lists, 30_000, random_state=1, grades=grades)
    log = simulate_log(PBM(eta=1.0, max_grade=2), sessions, 2, relevance=rel)
    return aggregate_clicks(log, train), test, qrels


def test_ips_beats_naive_when_the_logging_rank_is_a_feature(pbm_world) -> None:
    data, test, qrels = pbm_world
    params = {"epochs": 30, "lr": 0.05, "device": "cpu", "random_state": 0}
    naive = NaiveEstimator(**params).fit(data)
    ips = IPSEstimator(pbm_examination(data.max_rank, 1.0), **params).fit(data)
    np.testing.assert_allclose(ips.weights_, np.arange(1, data.max_rank + 1))
    assert _ndcg(ips, test, qrels) > _ndcg(naive, test, qrels) + 0.02


@pytest.mark.parametrize("loss", ["pointwise", "ranknet", "lambdarank"])
def test_ips_losses_train(pbm_world, loss: str) -> None:
    data, test, qrels = pbm_world
    model = IPSEstimator(
        pbm_examination(data.max_rank, 1.0), loss=loss, epochs=10, lr=0.05, device="cpu"
    ).fit(data)
    assert _ndcg(model, test, qrels) > 0.5
    assert np.isfinite(model.loss_history_).all()


@pytest.mark.parametrize("name", ["dla", "rem", "pairdebias", "two_tower"])
def test_estimators_recover_position_bias_without_rank_features(name: str) -> None:
    train, test, qrels, lists, grades = _synthetic(rank_feature=False)
    sessions, rel = sessions_from_lists(lists, 30_000, random_state=3, grades=grades)
    data = aggregate_clicks(simulate_log(PBM(eta=1.0, max_grade=2), sessions, 4, rel), train)
    model = make_estimator(name, epochs=30, lr=0.05, device="cpu", random_state=0).fit(data)
    if name == "two_tower":
        bias = model.position_logits_
        assert bias[0] > bias[1] > bias[3]  # clicks fall with rank beyond relevance
    else:
        theta = model.propensities_
        assert theta[0] == pytest.approx(1.0)
        # true 1/r: 0.5 at rank 2, 0.25 at rank 4
        assert 0.3 < theta[1] < 0.7 and 0.12 < theta[3] < 0.4, theta
    assert _ndcg(model, test, qrels) > 0.6


def test_training_is_seeded_and_reproducible(pbm_world) -> None:
    data, test, _ = pbm_world
    a = make_estimator("dla", epochs=3, device="cpu", random_state=5).fit(data)
    b = make_estimator("dla", epochs=3, device="cpu", random_state=5).fit(data)
    c = make_estimator("dla", epochs=3, device="cpu", random_state=6).fit(data)
    np.testing.assert_array_equal(a.predict(test.features), b.predict(test.features))
    assert not np.array_equal(a.predict(test.features), c.predict(test.features))


def test_bad_estimator_settings() -> None:
    with pytest.raises(ConfigError, match="unknown ULTR estimator"):
        make_estimator("magic")
    with pytest.raises(ConfigError):
        make_estimator("dla", no_such_param=1)
    with pytest.raises(RankloopError, match="not fitted"):
        NaiveEstimator().predict(np.zeros((1, 3)))
