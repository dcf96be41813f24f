"""Models: implicit wrappers, torch models (seeded, bit-for-bit), recommend through VectorIndex."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError
from rankloop.recsys.baselines import BPR, WMF
from rankloop.recsys.evaluate import authors_metrics
from rankloop.recsys.expomf import ExpoMF
from rankloop.recsys.propensity import popularity_propensity
from rankloop.recsys.relmf import RelMF
from rankloop.recsys.ubpr import UBPR

SMALL = {"factors": 8, "iterations": 150, "batch_size": 256, "learning_rate": 0.02}


def _heldout_dcg(model, truth: np.ndarray) -> float:
    u, i = np.nonzero(np.ones_like(truth))
    return authors_metrics(u, i, model.score(u, i), truth[u, i].astype(float), (5,)).mean["DCG@5"]


def test_wmf_is_implicit_als_with_a_checked_input(planted):
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    ours = WMF(8, iterations=5, random_state=3).fit(planted)
    with threadpool_limits(1, "blas"):
        ref = AlternatingLeastSquares(factors=8, iterations=5, random_state=3, num_threads=1)
        ref.fit(planted.user_items, show_progress=False)
    np.testing.assert_array_equal(ours.user_factors_, ref.user_factors)
    np.testing.assert_array_equal(ours.item_factors_, ref.item_factors)
    assert ours.user_factors_.shape == (40, 8) and ours.item_factors_.shape == (30, 8)


def test_implicit_wrappers_refuse_ambiguous_input(planted):
    with pytest.raises(RankloopError, match="Interactions"):
        WMF(4).fit(planted.item_users)  # a bare matrix: which side is the user?
    explicit = Interactions(user_items=planted.user_items * 5, kind="explicit")
    with pytest.raises(RankloopError, match="implicit"):
        BPR(4).fit(explicit)


def test_bpr_factors_carry_the_item_bias(planted):
    m = BPR(8, iterations=20, random_state=0).fit(planted)
    assert m.user_factors_.shape[1] == m.item_factors_.shape[1]
    np.testing.assert_array_equal(m.user_factors_[:, -1], 1.0)  # implicit's constant user column


@pytest.mark.parametrize(
    "make",
    [
        lambda: RelMF(**SMALL),
        lambda: RelMF(clip=0.3, **SMALL),
        lambda: UBPR(**SMALL),
        lambda: UBPR(beta=0.1, **SMALL),
        lambda: RelMF(bias=True, **SMALL),
        lambda: UBPR(bias=True, clip=0.3, **SMALL),
        lambda: ExpoMF(8, iterations=4),
    ],
)
def test_torch_models_reproduce_bit_for_bit_and_learn(planted, make):
    prop = popularity_propensity(planted)
    kw = {} if isinstance(make(), ExpoMF) else {"propensity": prop}
    a = make().fit(planted, **kw)
    b = make().fit(planted, **kw)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    group = (np.arange(40)[:, None] % 2) == (np.arange(30)[None, :] % 2)
    rand = np.random.default_rng(0)

    class Random:
        def score(self, u, i):
            return rand.random(len(u))

    assert _heldout_dcg(a, group) > _heldout_dcg(Random(), group) + 0.1


def test_bias_columns_reproduce_the_biased_logit(planted):
    prop = popularity_propensity(planted)
    m = RelMF(bias=True, **SMALL).fit(planted, propensity=prop)
    assert m.user_factors_.shape == (40, 10) and m.item_factors_.shape == (30, 10)
    np.testing.assert_array_equal(m.user_factors_[:, -1], 1.0)  # constant column for b_i
    np.testing.assert_array_equal(m.item_factors_[:, -2], 1.0)  # constant column for b_u + b
    u, i = np.array([0, 3, 7]), np.array([2, 2, 9])
    core = (m.user_factors_[u, :8] * m.item_factors_[i, :8]).sum(1)
    biases = m.user_factors_[u, -2] + m.item_factors_[i, -1]
    np.testing.assert_allclose(m.score(u, i), core + biases, rtol=1e-5)
    assert np.abs(m.item_factors_[:, -1]).max() > 0  # the item bias was learned
    plain = RelMF(**SMALL).fit(planted, propensity=prop)
    assert plain.user_factors_.shape == (40, 8)
    with pytest.raises(RankloopError, match="bias"):
        RelMF(bias="yes", **SMALL).fit(planted, propensity=prop)  # type: ignore[arg-type]


def test_relmf_clip_and_propensity_checks(planted):
    with pytest.raises(RankloopError, match="clip"):
        RelMF(clip=2.0, **SMALL).fit(planted, propensity=popularity_propensity(planted))
    with pytest.raises(RankloopError, match=r"zero of .* usually means it is missing"):
        RelMF(**SMALL).fit(planted, propensity=sp.csr_matrix(planted.shape))
    with pytest.raises(RankloopError, match="factors"):
        RelMF(factors=0).fit(planted, propensity=popularity_propensity(planted))
    with pytest.raises(RankloopError, match="cuda"):
        if __import__("torch").cuda.is_available():
            raise RankloopError("cuda present: nothing to check")
        RelMF(device="cuda", **SMALL).fit(planted, propensity=popularity_propensity(planted))


def test_recommend_matches_brute_force_and_excludes_seen(planted):
    m = WMF(8, iterations=5).fit(planted)
    users = np.array([0, 5, 39])
    items, scores = m.recommend(users, k=6)
    full = m.user_factors_[users] @ m.item_factors_.T
    seen = planted.user_items[users].toarray() > 0
    full[seen] = -np.inf
    expect = np.argsort(-full, axis=1, kind="stable")[:, :6]
    np.testing.assert_array_equal(items, expect)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expect, 1), rtol=1e-5)
    assert not planted.contains(np.repeat(users[:, None], 6, 1), items).any()
    all_items, _ = m.recommend(users, k=6, exclude_seen=False)
    assert planted.contains(np.repeat(users[:, None], 6, 1), all_items).any()


def test_recommend_pads_when_the_catalogue_runs_out():
    y = np.array([[1, 1, 0], [0, 1, 0]], np.float32)
    x = Interactions.from_dense(ratings=y, kind="implicit")
    m = ExpoMF(2, iterations=1).fit(x)
    items, scores = m.recommend([0, 1], k=3)
    assert items[0].tolist() == [2, -1, -1] and np.isneginf(scores[0, 1:]).all()
    assert sorted(items[1, :2].tolist()) == [0, 2] and items[1, 2] == -1
    with pytest.raises(RankloopError, match="users"):
        m.recommend([2], k=1)
    with pytest.raises(RankloopError, match="not fitted"):
        WMF().recommend([0], k=1)


def test_the_family_by_name(planted):
    from rankloop.errors import ConfigError
    from rankloop.recsys.baselines import PopularityScorer, RandomScorer
    from rankloop.recsys.models import RECOMMENDERS, fit_recommender, make_recommender

    assert {
        "wmf",
        "bpr",
        "expomf",
        "relmf",
        "ubpr",
        "mfdu",
        "dr",
        "uniform_kd",
        "biser",
        "popularity",
        "random",
    } == set(RECOMMENDERS)
    model = make_recommender("relmf", {**SMALL, "random_state": 1}, random_state=5)
    assert isinstance(model, RelMF) and model.random_state == 5  # the seed argument wins
    fit_recommender(model, planted, popularity_propensity(planted))  # gets the propensity
    assert model.user_factors_.shape == (40, 8)
    pop = fit_recommender(make_recommender("popularity", random_state=3), planted, None)
    assert isinstance(pop, PopularityScorer)
    n_1 = planted.item_counts()[1]  # users who clicked item 1: its score for everyone
    np.testing.assert_array_equal(pop.score(np.array([0, 9]), np.array([1, 1])), [n_1, n_1])
    rand = fit_recommender(make_recommender("random", random_state=2), planted, None)
    assert isinstance(rand, RandomScorer) and rand.random_state == 2
    with pytest.raises(ConfigError, match="unknown recommender 'svd'; valid names: biser, bpr"):
        make_recommender("svd")
    with pytest.raises(ConfigError, match="here: recommender 'wmf' has no parameter 'factorz'"):
        make_recommender("wmf", {"factorz": 3}, where="here")


@pytest.mark.parametrize(
    ("value", "what"),
    [(np.nan, "NaN"), (np.inf, "infinite"), (0.0, "zero"), (-0.2, "negative"), (1.5, "above 1")],
)
@pytest.mark.parametrize("model", [RelMF, UBPR])
def test_bad_propensities_are_refused_before_training(planted, model, value, what):
    prop = popularity_propensity(planted)
    prop[3] = value  # one item, clicked or not: refused either way
    with pytest.raises(RankloopError, match=f"1 {what} of 30 values"):
        model(**SMALL).fit(planted, propensity=prop)
    dense = np.full(planted.shape, 0.5)
    dense[1, 2] = value
    with pytest.raises(RankloopError, match=f"1 {what} of 1,200 values"):
        model(**SMALL).fit(planted, propensity=dense)
    with pytest.raises(RankloopError, match=r"\(30,\) per item"):
        model(**SMALL).fit(planted, propensity=prop[:5])


@pytest.mark.parametrize("clip", [-0.1, 1.5, np.nan, "0.2", True])
@pytest.mark.parametrize("model", [RelMF, UBPR])
def test_clipping_bounds_are_validated(planted, model, clip):
    with pytest.raises(RankloopError, match="clip"):
        model(clip=clip, **SMALL).fit(planted, propensity=popularity_propensity(planted))
