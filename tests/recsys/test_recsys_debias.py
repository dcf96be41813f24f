"""The debiasing estimators on simulated data with known propensities, and the models built on
them (MF-DU, DR-JL, uniform-slice KD): unbiasedness in expectation, clipping bounds, the
per-example L2 that means the same at any data size, and clear errors on missing inputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from rankloop.data.interactions import Interactions
from rankloop.errors import ConfigError, RankloopError
from rankloop.recsys.dr import DRJL, dr_loss
from rankloop.recsys.evaluate import authors_metrics
from rankloop.recsys.kd import UniformKD
from rankloop.recsys.mfdu import MFDU, du_loss, unclicked_propensity
from rankloop.recsys.models import fit_recommender, make_recommender
from rankloop.recsys.propensity import popularity_propensity
from rankloop.recsys.relmf import RelMF, ips_loss
from rankloop.recsys.ubpr import ubpr_loss

SMALL = {"factors": 8, "iterations": 150, "batch_size": 256, "learning_rate": 0.02}
DRAWS = 10_000


def _world(seed: int = 0, n_u: int = 6, n_i: int = 5):
    """Relevance probabilities R, exposure propensities θ and fixed predictions ŷ."""
    rng = np.random.default_rng(seed)
    rel = rng.uniform(0.05, 0.95, (n_u, n_i))
    theta = rng.uniform(0.1, 0.9, (n_u, n_i))
    pred = rng.uniform(0.05, 0.95, (n_u, n_i))
    return rel, theta, pred


def _draws(rel: np.ndarray, theta: np.ndarray, seed: int = 1):
    """DRAWS independent (exposure O, relevance, click Y = O·relevance) draws, stacked."""
    rng = np.random.default_rng(seed)
    o = rng.random((DRAWS, *rel.shape)) < theta
    r = rng.random((DRAWS, *rel.shape)) < rel
    return torch.tensor(o, dtype=torch.float64), torch.tensor(o & r, dtype=torch.float64)


def _mean_and_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v)))


def test_ips_loss_equals_the_full_information_loss_in_expectation():
    rel, theta, pred = _world()
    _, clicks = _draws(rel, theta)
    p, th = torch.tensor(pred), torch.tensor(theta)
    ideal = float(np.mean(rel * (1 - pred) ** 2 + (1 - rel) * pred**2))
    mean, se = _mean_and_se([ips_loss(p, y, th).item() for y in clicks])
    assert abs(mean - ideal) < 4 * se
    # and the naive loss (θ = 1) is biased: it is off by many standard errors
    naive, _ = _mean_and_se([ips_loss(p, y, torch.ones_like(th)).item() for y in clicks[:4000]])
    assert abs(naive - ideal) > 20 * se


def test_clipping_bounds_the_weights_as_the_paper_defines():
    # a clicked cell with ŷ = 0 has δ1 = 1, δ0 = 0, so its loss is its weight 1/max(θ, M)
    pred, click = torch.zeros(4), torch.ones(4)
    theta = torch.tensor([0.01, 0.05, 0.2, 0.9])
    for m in (0.0, 0.1, 0.3):
        weights = [
            ips_loss(pred[j : j + 1], click[:1], theta[j : j + 1], clip=m).item() for j in range(4)
        ]
        np.testing.assert_allclose(weights, 1 / np.maximum(theta.numpy(), m), rtol=1e-6)
        if m:
            assert max(weights) <= 1 / m + 1e-6


def test_ubpr_weight_is_unbiased_for_the_pairwise_ideal():
    rel, theta, _ = _world(2, n_u=1, n_i=2)
    _, clicks = _draws(rel, theta, seed=3)
    yi, yj = clicks[:, 0, 0], clicks[:, 0, 1]
    ti, tj = (torch.full((DRAWS,), float(theta[0, k])) for k in (0, 1))
    # with equal scores, -log σ(0) = log 2 per unit weight; only draws with Y_i = 1 count
    s = torch.zeros(DRAWS)
    per_draw = torch.where(yi > 0, 1.0 / ti, torch.zeros_like(ti)) * (1 - yj / tj)
    assert ubpr_loss(s, s, yi.clamp(min=0), yj, ti, tj).item() == pytest.approx(
        -float((per_draw * torch.nn.functional.logsigmoid(s)).mean()), rel=1e-5
    )
    mean, se = _mean_and_se(per_draw.tolist())
    assert abs(mean - rel[0, 0] * (1 - rel[0, 1])) < 4 * se


def test_doubly_robust_loss_is_unbiased_if_either_model_is_right():
    rel, theta, pred = _world(4)
    exposed, clicks = _draws(rel, theta, seed=5)
    p = torch.tensor(pred)
    ideal = float(np.mean(rel * (1 - pred) ** 2 + (1 - rel) * pred**2))
    wrong_imputation = torch.full_like(p, 0.5)
    wrong_theta = torch.full_like(p, 0.5)
    cases = {
        "true θ, wrong imputation": (wrong_imputation, torch.tensor(theta)),
        "wrong θ, true imputation": (torch.tensor(rel), wrong_theta),
    }
    for what, (imputed, th) in cases.items():
        losses = [dr_loss(p, imputed, y, o, th)[0].item() for o, y in zip(exposed[:8000], clicks)]
        mean, se = _mean_and_se(losses)
        assert abs(mean - ideal) < 4 * se, what
    # both wrong: biased
    losses = [
        dr_loss(p, wrong_imputation, y, o, wrong_theta)[0].item()
        for o, y in zip(exposed[:8000], clicks)
    ]
    mean, se = _mean_and_se(losses)
    assert abs(mean - ideal) > 10 * se


def test_dr_loss_sends_each_gradient_to_its_own_model():
    pred = torch.tensor([0.3, 0.6], requires_grad=True)
    imputed = torch.tensor([0.5, 0.2], requires_grad=True)
    y, o, th = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5])
    pred_loss, imp_loss = dr_loss(pred, imputed, y, o, th)
    (g_imp,) = torch.autograd.grad(pred_loss, imputed, allow_unused=True)
    assert g_imp is None
    (g_pred,) = torch.autograd.grad(imp_loss, pred, allow_unused=True)
    assert g_pred is None


def test_du_loss_self_normalises_each_side():
    pred = torch.tensor([0.5, 0.5, 0.2, 0.8])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    pos, neg = torch.tensor([0.5, 0.25, 1.0, 1.0]), torch.tensor([1.0, 1.0, 0.5, 0.25])
    # clicked side: weights 2, 4 on (1-.5)² = .25 -> .25; unclicked: weights 2, 4 on .04, .64
    expected = 0.25 + (2 * 0.04 + 4 * 0.64) / 6
    assert du_loss(pred, y, pos, neg, clip=0.1).item() == pytest.approx(expected, rel=1e-5)
    # clipping at .5 makes the unclicked weights equal (2, 2)
    assert du_loss(pred, y, pos, neg, clip=0.5).item() == pytest.approx(0.25 + (0.04 + 0.64) / 2)


def test_unclicked_propensity(planted):
    theta = unclicked_propensity(planted, 0.5)
    counts = planted.item_counts()
    np.testing.assert_allclose(theta, np.sqrt(1 - counts / counts.max()), rtol=1e-6)
    assert theta.min() == 0.0  # the top item: clipped at `clip` inside the loss
    with pytest.raises(RankloopError, match="neg_eta"):
        unclicked_propensity(planted, -1.0)


def _beats_random(model, clicks: Interactions, truth: np.ndarray) -> None:
    u, i = np.nonzero(np.ones_like(truth))
    got = authors_metrics(u, i, model.score(u, i), truth[u, i].astype(float), (5,)).mean["DCG@5"]
    rand = authors_metrics(
        u, i, np.random.default_rng(0).random(len(u)), truth[u, i].astype(float), (5,)
    )
    assert got > rand.mean["DCG@5"] + 0.08  # the best possible is .237, random .125


def _truth() -> np.ndarray:
    g_u, g_i = np.arange(40) % 2, np.arange(30) % 2
    return (g_u[:, None] == g_i[None, :]).astype(float)


def test_mfdu_and_dr_and_kd_learn_the_planted_groups(planted):
    prop = popularity_propensity(planted)
    _beats_random(MFDU(**SMALL).fit(planted, propensity=prop), planted, _truth())
    exposure = Interactions(user_items=sp.csr_matrix(np.ones(planted.shape)), kind="implicit")
    _beats_random(DRJL(**SMALL).fit(planted, exposure=exposure), planted, _truth())
    rng = np.random.default_rng(0)
    cells = rng.choice(40 * 30, 200, replace=False)
    u, i = cells // 30, cells % 30
    ratings = np.where(_truth()[u, i] > 0, 5.0, 1.0)
    uniform = Interactions.from_triples(
        users=u, items=i, values=ratings, n_users=40, n_items=30, kind="explicit"
    )
    kd = UniformKD(**SMALL, alpha=0.5).fit(planted, uniform=uniform)
    _beats_random(kd, planted, _truth())
    assert kd.teacher_.item_factors_.shape[1] == 4 + 2  # factors + the two bias columns


def test_same_seed_same_factors(planted):
    prop = popularity_propensity(planted)
    a = MFDU(**SMALL, random_state=3).fit(planted, propensity=prop)
    b = MFDU(**SMALL, random_state=3).fit(planted, propensity=prop)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)


def test_dr_and_kd_refuse_inputs_that_do_not_fit(planted):
    exposure = Interactions(user_items=sp.csr_matrix(planted.shape), kind="implicit")
    with pytest.raises(RankloopError, match="clicks are on pairs the exposure log does not hold"):
        DRJL(**SMALL).fit(planted, exposure=exposure)
    one_class = Interactions.from_triples(
        users=np.array([0, 1]), items=np.array([0, 1]), values=np.array([5.0, 5.0]), n_users=40, n_items=30,
        kind="explicit",
    )  # fmt: skip
    with pytest.raises(RankloopError, match="relevant and non-relevant"):
        UniformKD(**SMALL).fit(planted, uniform=one_class)
    with pytest.raises(RankloopError, match="alpha"):
        UniformKD(**SMALL, alpha=1.5).fit(planted, uniform=one_class)


def test_fit_recommender_says_which_input_is_missing(planted):
    with pytest.raises(RankloopError, match="exposure log"):
        fit_recommender(make_recommender("dr"), planted, None)
    with pytest.raises(RankloopError, match="uniformly random pairs"):
        fit_recommender(make_recommender("uniform_kd"), planted, popularity_propensity(planted))
    with pytest.raises(RankloopError, match="propensities"):
        fit_recommender(make_recommender("relmf"), planted, None)


def _user_norm(model) -> float:
    return float(np.linalg.norm(model.user_factors_, axis=1).mean())


def test_per_example_l2_means_the_same_at_any_number_of_users(planted):
    """Copying every user 8 times changes nothing a user sees; with per-example L2 the fitted
    user factors keep their size, with whole-matrix L2 they shrink (the penalty per row is the
    same every step while each row's data gradient comes 8 times less often)."""
    big = Interactions(user_items=sp.vstack([planted.user_items] * 8).tocsr(), kind="implicit")
    prop_s, prop_b = popularity_propensity(planted), popularity_propensity(big)
    params = {**SMALL, "iterations": 400, "regularization": 0.05}
    ratio = {}
    for scope in ("example", "matrix"):
        small_fit = RelMF(**params, l2_scope=scope).fit(planted, propensity=prop_s)
        big_fit = RelMF(**params, l2_scope=scope).fit(big, propensity=prop_b)
        ratio[scope] = _user_norm(big_fit) / _user_norm(small_fit)
    assert 0.7 < ratio["example"] < 1.4
    assert ratio["matrix"] < 0.5 * ratio["example"]


def test_recsys_config_refuses_a_uniform_model_without_a_slice(tmp_path):
    from rankloop.experiments.recsys import ModelSpec, RecsysConfig, run_recsys

    cfg = RecsysConfig(
        models=[ModelSpec("KD", "uniform_kd"), ModelSpec("WMF", "wmf")], seeds=[0], baseline="WMF"
    )
    with pytest.raises(ConfigError, match="uniform_fraction"):
        run_recsys(cfg, verbose=False)


def test_tuning_drops_held_out_clicks_from_the_exposure_log(planted, monkeypatch):
    from rankloop.recsys import tuning

    exposure = Interactions(user_items=sp.csr_matrix(np.ones(planted.shape)), kind="implicit")
    splits = tuning.validation_splits(planted, popularity_propensity, fraction=0.2, repeats=1)
    seen = []

    def spy(model, clicks, propensity, *, exposure=None, uniform=None):
        seen.append(exposure)
        return model.fit(clicks, exposure=exposure)

    monkeypatch.setattr("rankloop.recsys.models.fit_recommender", spy)
    tuning.tune_recommender("dr", [dict(SMALL, iterations=5)], splits, exposure=exposure)
    held = splits[0][1]
    hu, hi, _ = held.to_triples()
    assert held.nnz > 0 and not seen[0].contains(hu, hi).any()
    assert seen[0].nnz == exposure.nnz - held.nnz


def test_dr_imputation_learns_from_a_fresh_start():
    """DR-JL's error-imputation loss (O/θ)(e − ê)² has no gradient for r̂ at ŷ = 1/2, where a
    fresh MF starts; the label imputation used here does."""
    pred = torch.full((4,), 0.5)
    imputed = torch.tensor([0.2, 0.4, 0.6, 0.8], requires_grad=True)
    y, o, th = torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.ones(4), torch.full((4,), 0.5)
    _, imp_loss = dr_loss(pred, imputed, y, o, th)
    (grad,) = torch.autograd.grad(imp_loss, imputed)
    assert (grad.abs() > 1e-3).all()


def test_uniform_pair_sampler_draws_every_pair_alike(planted):
    """The estimator is a mean over all pairs, so the default batches must sample pairs
    uniformly: clicked pairs appear at the clicks' share, not at the half of balanced batches."""
    from rankloop.recsys.relmf import pair_sampler

    prop = popularity_propensity(planted)
    share = planted.nnz / (planted.n_users * planted.n_items)
    for sampling, expected in (("uniform", share), ("balanced", 0.5)):
        model = RelMF(**{**SMALL, "batch_size": 4096}, sampling=sampling)
        u, i, y, th = pair_sampler(model, planted, prop, sampling)(8)
        assert float(y.mean()) == pytest.approx(expected, abs=0.02)
        assert (th[y == 0] == 1).all() and (th[y > 0] <= 1).all()
        if sampling == "uniform":  # 32,768 draws over 1,200 pairs: about 27 each, none missing
            counts = np.bincount((u * planted.n_items + i).ravel().numpy(), minlength=1200)
            assert counts.min() > 5 and counts.max() < 3 * counts.mean()
