"""BISER: fits planted clicks, scores as the average U-AE / I-AE logit, reproducible, validated."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError
from rankloop.recsys.biser import BISER

FAST = dict(factors=8, iterations=40, batch_size=16, learning_rate=0.02, device="cpu")


@pytest.fixture(scope="module")
def planted_fit() -> tuple[Interactions, BISER]:
    rng = np.random.default_rng(7)
    n_u, n_i = 40, 30
    group_u, group_i = np.arange(n_u) % 2, np.arange(n_i) % 2
    y = (rng.random((n_u, n_i)) < np.where(group_u[:, None] == group_i, 0.5, 0.03)).astype(
        np.float32
    )
    y[np.arange(n_u), np.arange(n_u) % n_i] = 1.0
    clicks = Interactions.from_dense(ratings=y, kind="implicit", name="planted")
    return clicks, BISER(**FAST).fit(clicks)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_fit_beats_random_on_planted_groups(planted_fit: tuple[Interactions, BISER]) -> None:
    clicks, model = planted_fit
    assert np.isfinite(model.loss_curve_).all() and model.loss_curve_[-1] < model.loss_curve_[0]
    users = np.arange(clicks.n_users)
    items, _ = model.recommend(users, k=3)
    same = (items % 2) == (users[:, None] % 2)  # a random ranking gets about half right
    assert same.mean() > 0.8


def test_score_is_the_average_of_the_two_autoencoder_logits(
    planted_fit: tuple[Interactions, BISER],
) -> None:
    clicks, model = planted_fit
    x = clicks.user_items.toarray() > 0
    uae, iae = model.user_ae_, model.item_ae_
    h = _sigmoid(x @ uae["E"] + uae["a"])  # U-AE codes of each user's click row
    g = _sigmoid(x.T @ iae["E"] + iae["a"])  # I-AE codes of each item's click column
    logit_u = h @ uae["D"].T + uae["c"]  # (users, items)
    logit_i = (g @ iae["D"].T + iae["c"]).T  # (users, items)
    uu, ii = np.meshgrid(np.arange(clicks.n_users), np.arange(clicks.n_items), indexing="ij")
    got = model.score(uu, ii)
    np.testing.assert_allclose(got, (logit_u + logit_i) / 2, rtol=1e-4, atol=1e-4)
    assert model.user_factors_.shape[1] == 2 * FAST["factors"] + 2


def test_same_seed_same_factors_other_seed_differs() -> None:
    rng = np.random.default_rng(0)
    m = sp.random(30, 20, density=0.2, random_state=rng, format="csr")
    m.data[:] = 1
    clicks = Interactions(user_items=m, kind="implicit")
    kw = dict(FAST, iterations=5)
    a, b = BISER(**kw, random_state=3).fit(clicks), BISER(**kw, random_state=3).fit(clicks)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    c = BISER(**kw, random_state=4).fit(clicks)
    assert not np.array_equal(a.item_factors_, c.item_factors_)
    d = BISER(**kw, random_state=3, propensity_gradient=True).fit(clicks)
    assert np.isfinite(d.user_factors_).all() and not np.array_equal(
        a.user_factors_, d.user_factors_
    )


def test_recommend_excludes_seen(planted_fit: tuple[Interactions, BISER]) -> None:
    clicks, model = planted_fit
    users = np.array([0, 5, 39])
    items, scores = model.recommend(users, k=4, exclude_seen=True)
    assert items.shape == scores.shape == (3, 4)
    assert not clicks.contains(np.repeat(users[:, None], 4, axis=1), np.maximum(items, 0)).any()
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    np.testing.assert_allclose(
        scores, model.score(np.repeat(users[:, None], 4, 1), items), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "bad",
    [
        dict(factors=0),
        dict(iterations=0),
        dict(batch_size=2.5),
        dict(learning_rate=0.0),
        dict(learning_rate=float("nan")),
        dict(regularization=-1e-3),
        dict(user_bu_weight=-0.1),
        dict(item_bu_weight="big"),
        dict(clip=0.0),
        dict(clip=1.5),
        dict(propensity_gradient="yes"),
        dict(random_state=1.5),
    ],
)
def test_bad_parameters_fail_clearly(bad: dict, planted_fit: tuple[Interactions, BISER]) -> None:
    clicks, _ = planted_fit
    with pytest.raises(RankloopError):
        BISER(**{**FAST, "iterations": 1, **bad}).fit(clicks)


def test_bad_inputs_fail_clearly() -> None:
    ratings = Interactions.from_dense(ratings=np.array([[5.0, 0.0], [0.0, 3.0]]), kind="explicit")
    with pytest.raises(RankloopError, match="implicit"):
        BISER(**FAST).fit(ratings)
    empty = Interactions(user_items=sp.csr_matrix((3, 2), dtype=np.float32), kind="implicit")
    with pytest.raises(RankloopError, match="no clicks"):
        BISER(**FAST).fit(empty)
    with pytest.raises(RankloopError, match="not fitted"):
        BISER().score(np.array([0]), np.array([0]))
