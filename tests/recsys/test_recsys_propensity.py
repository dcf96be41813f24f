"""Propensity estimators: popularity^η, naive Bayes from a MAR sample, logistic on features."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError
from rankloop.recsys.propensity import (
    logistic_propensity,
    naive_bayes_propensity,
    naive_bayes_rating_propensity,
    popularity_propensity,
    propensity_at,
)


def test_popularity_propensity_hand_computed():
    # item click counts (4, 1, 0) over 4 users
    y = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]])
    x = Interactions.from_dense(ratings=y, kind="implicit")
    np.testing.assert_allclose(popularity_propensity(x, eta=0.5), [1.0, 0.5, 1e-6])
    np.testing.assert_allclose(popularity_propensity(x, eta=1.0), [1.0, 0.25, 1e-6])
    # the authors' Coat variant divides by the number of users: (4/4, 1/4)^.5
    np.testing.assert_allclose(popularity_propensity(x, normalize="users")[:2], [1.0, 0.5])
    y[:, 0] = [1, 1, 0, 0]
    x = Interactions.from_dense(ratings=y, kind="implicit")
    np.testing.assert_allclose(popularity_propensity(x, normalize="users")[:2], [np.sqrt(0.5), 0.5])
    with pytest.raises(RankloopError):
        popularity_propensity(x, normalize="items")  # type: ignore[arg-type]


def test_naive_bayes_hand_computed():
    # MNAR: 2 users x 4 items, 2 ratings observed (5 and 1): P(O=1) = 1/4, P(5|O) = P(1|O) = 1/2.
    # MAR sample: ratings 5, 1, 1, 1: P(5) = 1/4, P(1) = 3/4.
    # P(O=1|5) = (1/2)(1/4)/(1/4) = 1/2;  P(O=1|1) = (1/2)(1/4)/(3/4) = 1/6.
    mnar = Interactions.from_dense(ratings=np.array([[5, 0, 0, 0], [0, 0, 1, 0]]), kind="explicit")
    mar = Interactions.from_dense(ratings=np.array([[5, 1, 0, 0], [0, 0, 1, 1]]), kind="explicit")
    levels, prop = naive_bayes_rating_propensity(mnar, mar, smoothing=0.0)
    np.testing.assert_allclose(levels, [1, 5])
    np.testing.assert_allclose(prop, [1 / 6, 1 / 2])
    per_pair = naive_bayes_propensity(mnar, mar, smoothing=0.0)
    assert sp.issparse(per_pair)
    np.testing.assert_allclose(per_pair.toarray(), [[0.5, 0, 0, 0], [0, 0, 1 / 6, 0]], rtol=1e-6)


def test_naive_bayes_on_coat_favours_high_ratings(coat):
    levels, prop = naive_bayes_rating_propensity(coat.train, coat.test)
    assert levels.tolist() == [1, 2, 3, 4, 5]
    # users rate what they like: 5-star items are far more likely to be observed than 1-star ones
    assert prop[4] > 2 * prop[0] and np.all(np.diff(prop[1:]) > 0)


def test_logistic_propensity_recovers_feature_driven_exposure():
    rng = np.random.default_rng(0)
    n_u, n_i = 60, 50
    uf = rng.integers(0, 2, (n_u, 1)).astype(np.float32)
    itf = rng.integers(0, 2, (n_i, 1)).astype(np.float32)
    p_true = 0.05 + 0.5 * uf * itf.T  # exposure likely only when both features are on
    obs = Interactions.from_dense(
        ratings=(rng.random((n_u, n_i)) < p_true).astype(float), kind="implicit"
    )
    p = logistic_propensity(obs, user_features=uf, item_features=itf, pairwise=True)
    assert p.shape == (n_u, n_i)
    both = (uf * itf.T) > 0
    assert p[both].mean() > 0.4 and p[~both].mean() < 0.12
    with pytest.raises(RankloopError, match="user_features"):
        logistic_propensity(obs, user_features=uf[:3], item_features=itf)


def test_logistic_propensity_on_coat_features(coat):
    p = logistic_propensity(
        coat.train, user_features=coat.user_features, item_features=coat.item_features
    )
    observed = coat.train.user_items.toarray() > 0
    assert p.shape == (290, 300)
    assert p[observed].mean() > p[~observed].mean()
    assert abs(p.mean() - observed.mean()) < 0.01  # calibrated on average


def test_propensity_at_all_shapes():
    users, items = np.array([0, 1]), np.array([2, 0])
    per_item = np.array([0.1, 0.2, 0.3])
    dense = np.arange(1, 7, dtype=float).reshape(2, 3) / 10
    sparse = sp.csr_matrix(dense)
    np.testing.assert_allclose(propensity_at(per_item, users, items, (2, 3)), [0.3, 0.1])
    np.testing.assert_allclose(propensity_at(dense, users, items, (2, 3)), [0.3, 0.4])
    np.testing.assert_allclose(propensity_at(sparse, users, items, (2, 3)), [0.3, 0.4])
    with pytest.raises(RankloopError, match=r"2 zero of 2 .* usually means it is missing"):
        propensity_at(sp.csr_matrix((2, 3)), users, items, (2, 3))
    with pytest.raises(RankloopError, match="entries"):
        propensity_at(per_item[:2], users, items, (2, 3))


def test_estimate_propensity_by_name(coat):
    from rankloop.errors import ConfigError
    from rankloop.recsys.propensity import estimate_propensity

    clicks = coat.train.binarize(4)
    np.testing.assert_array_equal(
        estimate_propensity("popularity", coat, clicks, eta=1.0),
        popularity_propensity(clicks, eta=1.0),
    )
    assert estimate_propensity("shipped", coat, clicks) is coat.shipped_propensities
    sample, _ = coat.test.split_users(0.1, random_state=0)
    nb = estimate_propensity("naive_bayes", coat, clicks, mar_sample=sample)
    assert nb.shape == coat.train.shape
    with pytest.raises(RankloopError, match="MAR sample"):
        estimate_propensity("naive_bayes", coat, clicks)
    with pytest.raises(ConfigError, match="bad option"):
        estimate_propensity("popularity", coat, clicks, etta=1.0)
    with pytest.raises(ConfigError, match="valid names: popularity"):
        estimate_propensity("oracle", coat, clicks)
