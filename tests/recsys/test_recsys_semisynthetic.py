"""The semi-synthetic MNAR world: exposure, the exact truth-based metrics and the study."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from rankloop.errors import ConfigError, RankloopError
from rankloop.recsys.baselines import PopularityScorer, RandomScorer
from rankloop.recsys.semisynthetic import (
    SCHNABEL_MARGINALS,
    StudyModel,
    StudySettings,
    exposure_propensity,
    make_world,
    mar_dcg,
    mar_test_items,
    run_study,
    sample_feedback,
    true_dcg,
)

_REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world():
    return make_world(120, 50, n_topics=5, random_state=3)


@pytest.fixture(scope="module")
def feedback(world):
    return sample_feedback(
        world, exposure_propensity(world, 1.0, exposure_rate=0.2), random_state=1
    )


class Oracle:
    """Scores by the true relevance probability."""

    def __init__(self, relevance: np.ndarray) -> None:
        self.relevance = relevance

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.relevance[users, items]


class Anti(Oracle):
    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return -self.relevance[users, items]


def test_world_matches_its_generator(world):
    assert world.shape == (120, 50)
    counts = np.bincount(world.ratings.ravel(), minlength=6)[1:] / world.ratings.size
    assert np.allclose(counts, SCHNABEL_MARGINALS, atol=2 / world.ratings.size)
    assert set(np.unique(world.relevance).round(4)) <= {0.1, 0.16, 0.28, 0.52, 1.0}
    assert world.popularity.max() == 1.0 and (world.popularity > 0).all()


def test_same_seed_same_world_and_feedback(world):
    again = make_world(120, 50, n_topics=5, random_state=3)
    other = make_world(120, 50, n_topics=5, random_state=4)
    for name in ("utility", "ratings", "relevance", "popularity"):
        assert np.array_equal(getattr(world, name), getattr(again, name))
    assert not np.array_equal(world.utility, other.utility)
    theta = exposure_propensity(world, 1.0)
    a = sample_feedback(world, theta, random_state=5)
    b = sample_feedback(again, theta, random_state=5)
    assert (a.clicks.user_items != b.clicks.user_items).nnz == 0


def test_strength_zero_is_uniform_exposure(world):
    theta = exposure_propensity(world, 0.0, exposure_rate=0.15)
    assert np.allclose(theta, 0.15)


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.6])
def test_expected_exposures_fixed_across_strengths(world, rate):
    n = world.n_users * world.n_items
    sums = [exposure_propensity(world, s, exposure_rate=rate).sum() for s in (0, 0.5, 1, 2, 5)]
    assert np.allclose(sums, rate * n, rtol=1e-9)
    strong = exposure_propensity(world, 2.0, exposure_rate=rate)
    assert strong.max() <= 1.0 and strong.min() > 0
    # the bias leans on relevance and popularity: more exposure for rating 5 than rating 1
    assert strong[world.ratings == 5].mean() > strong[world.ratings == 1].mean()


def test_common_random_numbers_across_strengths(world):
    weak, strong = exposure_propensity(world, 0.5), exposure_propensity(world, 2.0)
    a = sample_feedback(world, weak, random_state=9).exposure
    b = sample_feedback(world, strong, random_state=9).exposure
    more = strong >= weak  # the same uniforms: exposed under weak => exposed under strong here
    assert not (a & ~b & more).any()


def test_oracle_scores_one_and_beats_everything(world, feedback):
    clicks = feedback.clicks
    oracle = true_dcg(Oracle(world.relevance), world, clicks)
    assert np.allclose(oracle["nDCG@5"], 1.0)
    others = [
        RandomScorer(0).fit(clicks),
        PopularityScorer().fit(clicks),
        Anti(world.relevance),
    ]
    for model in others:
        res = true_dcg(model, world, clicks)
        assert (res["DCG@5"] <= oracle["DCG@5"] + 1e-12).all()
        assert (res["nDCG@5"] <= 1.0 + 1e-12).all()
    users, items = mar_test_items(world, 16, random_state=0)
    best = mar_dcg(Oracle(world.relevance), world, users, items)
    for model in others:
        assert (mar_dcg(model, world, users, items) <= best + 1e-12).all()


def test_random_scorer_matches_its_expectation(world, feedback):
    clicks = feedback.clicks
    clicked = clicks.user_items.toarray() > 0
    disc = 1.0 / np.log2(np.arange(2, 7))
    cand = np.where(clicked, np.nan, world.relevance)
    expected_dcg = disc.sum() * np.nanmean(cand, axis=1)
    ideal = -np.sort(-np.nan_to_num(cand, nan=-1.0), axis=1)[:, :5] @ disc
    got = np.mean(
        [true_dcg(RandomScorer(s).fit(clicks), world, clicks)["DCG@5"] for s in range(8)], 0
    )
    assert got.mean() == pytest.approx(expected_dcg.mean(), rel=0.03)
    ndcg = np.mean(
        [true_dcg(RandomScorer(s).fit(clicks), world, clicks)["nDCG@5"] for s in range(8)], 0
    )
    assert ndcg.mean() == pytest.approx((expected_dcg / ideal).mean(), rel=0.03)


def test_clicked_items_are_never_ranked(world, feedback):
    clicks = feedback.clicks

    class LovesClicks:
        def score(self, users, items):
            return clicks.values_at(users, items) * 10.0 + world.relevance[users, items]

    # scoring clicked items first changes nothing: they are not candidates
    a = true_dcg(LovesClicks(), world, clicks)["DCG@5"]
    b = true_dcg(Oracle(world.relevance), world, clicks)["DCG@5"]
    assert np.allclose(a, b)


def test_ties_are_broken_by_item_descending(world, feedback):
    class Flat:
        def score(self, users, items):
            return np.zeros(len(users))

    res = true_dcg(Flat(), world, feedback.clicks, k=1)["DCG@1"]
    clicked = feedback.clicks.user_items.toarray() > 0
    last = [max(np.flatnonzero(~clicked[u])) for u in range(world.n_users)]
    assert np.allclose(res, world.relevance[np.arange(world.n_users), last])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"strengths": (-1.0,)}, "strengths"),
        ({"strengths": (0.0, 0.0)}, "distinct"),
        ({"strengths": ()}, "at least one"),
        ({"strengths": (float("nan"),)}, "strengths"),
        ({"n_users": 1}, "n_users"),
        ({"n_users": 100_000, "n_items": 1_000}, "dense"),
        ({"exposure_rate": 0.0}, "exposure_rate"),
        ({"rating_alpha": 1.5}, "rating_alpha"),
        ({"rating_marginals": (0.5, 0.5, 0.1, 0.1, 0.1)}, "sum to 1"),
        ({"rating_marginals": (0.5, 0.5)}, "5 positive"),
        ({"n_test_items": 3}, "n_test_items"),
        ({"seeds": (1, 1)}, "seeds"),
        ({"exposure_rate": 0.001}, "expected clicks"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_bad_settings_fail_clearly(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        StudySettings(**kwargs)


def test_bad_inputs_fail_clearly(world):
    with pytest.raises(ConfigError, match="strength"):
        exposure_propensity(world, math.inf)
    with pytest.raises(ConfigError, match="strength"):
        exposure_propensity(world, 25.0)
    with pytest.raises(ConfigError, match="n_items"):
        make_world(10, 1)
    with pytest.raises(RankloopError, match="theta has shape"):
        sample_feedback(world, np.full((3, 3), 0.1), random_state=0)
    with pytest.raises(RankloopError, match="no clicks"):
        sample_feedback(world, np.zeros(world.shape), random_state=0)
    settings = StudySettings(n_users=100, n_items=60, exposure_rate=0.3)
    wmf = StudyModel("WMF", "wmf")
    with pytest.raises(ConfigError, match="baseline"):
        settings.check_models([StudyModel("Pop", "popularity")])
    with pytest.raises(ConfigError, match="unique"):
        settings.check_models([wmf, wmf])
    with pytest.raises(ConfigError, match="unknown recommender"):
        settings.check_models([wmf, StudyModel("X", "nope")])
    with pytest.raises(ConfigError, match="propensity"):
        StudyModel("X", "relmf", propensity="true")  # type: ignore[arg-type]


def test_tiny_study_end_to_end():
    settings = StudySettings(
        strengths=(0.0, 1.5), seeds=(0, 1), n_users=60, n_items=50, n_topics=4,
        exposure_rate=0.3, val_negatives=20,
    )  # fmt: skip
    models = [
        StudyModel("WMF", "wmf", ({"factors": 8, "iterations": 3, "alpha": 1.0},
                                  {"factors": 8, "iterations": 3, "alpha": 10.0})),
        StudyModel("Rel-MF (oracle θ)", "relmf",
                   ({"factors": 8, "iterations": 10, "batch_size": 256, "device": "cpu"},),
                   "oracle"),
        StudyModel("Popularity", "popularity"),
        StudyModel("Random", "random"),
    ]  # fmt: skip
    res = run_study(settings, models, progress=False)
    assert set(res.summary) == {"0", "1.5"}
    assert set(res.tuning["0"]["WMF"]["best_params"]) >= {"alpha"}
    for key, rows in res.summary.items():
        assert rows["WMF"]["delta"]["nDCG@5"] == 0.0
        for name, row in rows.items():
            assert 0.0 < row["nDCG@5"]["mean"] <= 1.0
            if name != "WMF":
                assert row["p"]["nDCG@5"] is not None
        assert res.worlds[key]["0"]["exposures"] > 0
    table = res.table_markdown()
    assert table.count("\n") == 1 + len(models) and "Δ" in table


def _benchmark():
    path = _REPO / "benchmarks" / "mnar_semisynthetic.py"
    spec = importlib.util.spec_from_file_location("bench_mnar_semisynthetic", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_config_loads_and_errors_name_the_line(tmp_path):
    bench = _benchmark()
    config = bench.SemiSyntheticConfig.from_yaml(_REPO / "configs" / "mnar_semisynthetic.yaml")
    assert config.baseline == "WMF" and len(config.seeds) == 5
    models = config.study_models()
    assert {m.propensity for m in models} == {"estimated", "oracle"}
    text = (_REPO / "configs" / "mnar_semisynthetic.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("strengths: [0.0,", "strengths: [-1.0,"))
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: strengths"):
        bench.SemiSyntheticConfig.from_yaml(bad)
    bad.write_text(text.replace("baseline: WMF", "baseline: ALS"))
    with pytest.raises(ConfigError, match="baseline 'ALS'"):
        bench.SemiSyntheticConfig.from_yaml(bad)
    bad.write_text(text.replace("    propensity: oracle", "    propensity: truth", 1))
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+.*propensity"):
        bench.SemiSyntheticConfig.from_yaml(bad)


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_observed_strength_recovers_the_rating_bias_of_a_simulated_sample(strength):
    from rankloop.data.interactions import Interactions
    from rankloop.recsys.semisynthetic import exposure_propensity, observed_strength

    big = make_world(600, 200, n_topics=5, random_state=1)
    theta = exposure_propensity(big, strength, exposure_rate=0.05)  # few θ capped at 1
    rng = np.random.default_rng(0)
    exposed = rng.random(big.shape) < theta
    mnar = Interactions.from_dense(ratings=np.where(exposed, big.ratings, 0.0), kind="explicit")
    mar = Interactions.from_dense(
        ratings=np.where(rng.random(big.shape) < 0.2, big.ratings, 0.0), kind="explicit"
    )
    got = observed_strength(mnar, mar)
    # the popularity factor is independent of the ratings, so the rating part comes back
    assert got["rating_strength"] == pytest.approx(strength, abs=0.12)
    assert got["popularity_strength"] >= -0.1
