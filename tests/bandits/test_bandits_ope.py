"""OPE estimators on hand-computed logs, exact unbiasedness of the slate estimators, bootstrap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rankloop.bandits.ope import (
    ESTIMATORS,
    bootstrap_ci,
    cascade_pscores,
    dm_terms,
    dr_terms,
    estimate,
    evaluate_policy,
    independent_ips_terms,
    ips_terms,
    relative_error,
    replay_terms,
    reward_interaction_ips_terms,
    snips_terms,
)
from rankloop.errors import RankloopError

REWARD = np.array([1.0, 0.0, 1.0])
ACTION = np.array([0, 1, 0])
PSCORE = np.array([0.5, 0.5, 0.25])
PI_E = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
Q_HAT = np.array([[0.5, 0.2], [0.4, 0.1], [0.6, 0.3]])


def _value(terms):
    num, den = terms
    return num.sum() / den.sum()


def test_ips_and_snips_by_hand():
    # weights 2, 1, 0.8
    assert _value(ips_terms(REWARD, ACTION, PSCORE, PI_E)) == pytest.approx(2.8 / 3)
    assert _value(snips_terms(REWARD, ACTION, PSCORE, PI_E)) == pytest.approx(2.8 / 3.8)
    clipped = ips_terms(REWARD, ACTION, PSCORE, PI_E, max_weight=1.0)
    assert _value(clipped) == pytest.approx(1.8 / 3)


def test_dm_dr_and_switch_dr_by_hand():
    assert _value(dm_terms(PI_E, Q_HAT)) == pytest.approx((0.5 + 0.25 + 0.36) / 3)
    # DR rows: 0.5 + 2(1 - .5), 0.25 + 1(0 - .1), 0.36 + .8(1 - .6)
    assert _value(dr_terms(REWARD, ACTION, PSCORE, PI_E, Q_HAT)) == pytest.approx(2.33 / 3)
    # Switch-DR with tau = 1 drops row 0's correction (weight 2)
    switch = dr_terms(REWARD, ACTION, PSCORE, PI_E, Q_HAT, switch_tau=1.0)
    assert _value(switch) == pytest.approx((0.5 + 0.15 + 0.68) / 3)
    dm = _value(dm_terms(PI_E, Q_HAT))
    # tau = 0 keeps no correction (DM); a huge tau keeps all of them (DR)
    assert _value(dr_terms(REWARD, ACTION, PSCORE, PI_E, Q_HAT, switch_tau=0.0)) == pytest.approx(
        dm
    )
    big = dr_terms(REWARD, ACTION, PSCORE, PI_E, Q_HAT, switch_tau=1e9)
    assert _value(big) == pytest.approx(2.33 / 3)


def test_replay_by_hand():
    terms = replay_terms(REWARD, ACTION, np.array([0, 0, 0]))
    assert _value(terms) == pytest.approx(1.0)  # rows 0 and 2 match, both clicked
    assert terms[1].tolist() == [1.0, 0.0, 1.0]


def test_slate_estimators_by_hand():
    r = np.array([[1.0, 1.0]])
    pb = np.array([[0.5, 0.5]])
    pe = np.array([[1.0, 0.5]])
    assert _value(independent_ips_terms(r, pb, pe)) == pytest.approx(1 / 0.5 + 0.5 / 0.5)
    rips = reward_interaction_ips_terms(r, cascade_pscores(pb), cascade_pscores(pe))
    assert _value(rips) == pytest.approx(1 / 0.5 + 0.5 / 0.25)


def _slate_expectations(attr, model):
    """Expected reward per position for every ordered 2-slate of 3 items."""
    slates = list(itertools.permutations(range(3), 2))
    exp_r = []
    for s in slates:
        a = attr[list(s)]
        if model == "pbm":
            exp_r.append(a * np.array([1.0, 0.5]))
        else:
            exp_r.append(np.array([a[0], (1 - a[0]) * a[1]]))
    return slates, np.array(exp_r)


@pytest.mark.parametrize("model", ["pbm", "cascade"])
def test_slate_estimators_exact_expectation_under_uniform_logging(model):
    attr = np.array([0.6, 0.3, 0.8])
    target = (2, 0)
    slates, exp_r = _slate_expectations(attr, model)
    truth = exp_r[slates.index(target)].sum()
    # uniform logging over the 6 ordered slates: marginal 1/3 per position, prefix 1/3 then 1/6
    pb_marg = np.full((6, 2), 1 / 3)
    pb_prefix = cascade_pscores(np.array([[1 / 3, 1 / 2]] * 6))
    s = np.array(slates)
    pe_marg = (s == np.array(target)).astype(float)
    pe_prefix = np.cumprod(pe_marg, axis=1)
    # the expectation over logging = the mean over the 6 equally likely slates
    iips = _value(independent_ips_terms(exp_r, pb_marg, pe_marg))
    rips = _value(reward_interaction_ips_terms(exp_r, pb_prefix, pe_prefix))
    assert rips == pytest.approx(truth)  # unbiased under both click models
    if model == "pbm":
        assert iips == pytest.approx(truth)
    else:
        assert iips != pytest.approx(truth)  # IIPS ignores the items above: biased


def test_bootstrap_interval_contains_the_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    r = (rng.random(500) < 0.2).astype(float)
    terms = (r, np.ones(500))
    lo, hi, draws = bootstrap_ci(terms, n_boot=300, random_state=1)
    assert lo < r.mean() < hi and len(draws) == 300
    assert bootstrap_ci(terms, n_boot=300, random_state=1)[:2] == (lo, hi)
    # the standard error of a mean, roughly
    assert hi - lo == pytest.approx(2 * 1.96 * r.std() / np.sqrt(500), rel=0.25)
    e = estimate("ips", terms, n_boot=200)
    assert e.value == pytest.approx(r.mean()) and e.n == 500


def test_evaluate_policy_runs_every_estimator_and_recovers_a_simulated_value():
    rng = np.random.default_rng(3)
    n, a = 20000, 4
    q = np.array([0.1, 0.3, 0.5, 0.2])
    action = rng.integers(0, a, n)
    reward = (rng.random(n) < q[action]).astype(float)
    pscore = np.full(n, 1 / a)
    pi_e = np.tile([0.1, 0.2, 0.6, 0.1], (n, 1))
    truth = float(pi_e[0] @ q)
    q_hat = np.tile(q + 0.05, (n, 1))  # a slightly wrong reward model
    out = evaluate_policy(reward, action, pscore, pi_e, q_hat=q_hat, n_boot=200, random_state=0)
    assert set(out) == set(ESTIMATORS)
    for name, est in out.items():
        assert est.ci_low - 1e-9 <= est.value <= est.ci_high + 1e-9
        if name != "dm":  # DM inherits the model's bias
            assert relative_error(est.value, truth) < 0.08, name
    assert relative_error(out["dm"].value, truth) > 0.1
    assert out["replay"].effective < n


def test_ope_input_errors():
    with pytest.raises(RankloopError, match="probabilit"):
        ips_terms(REWARD, ACTION, np.array([0.5, 0.0, 0.2]), PI_E)
    with pytest.raises(RankloopError, match="actions"):
        ips_terms(REWARD, np.array([0, 5, 0]), PSCORE, PI_E)
    with pytest.raises(RankloopError, match="q_hat"):
        evaluate_policy(REWARD, ACTION, PSCORE, PI_E, estimators=("dm",))
    with pytest.raises(RankloopError, match="distribution"):
        evaluate_policy(REWARD, ACTION, PSCORE, PI_E * 2)
    with pytest.raises(RankloopError, match="unknown"):
        evaluate_policy(REWARD, ACTION, PSCORE, PI_E, estimators=("magic",))
    with pytest.raises(RankloopError):
        relative_error(0.1, 0.0)
