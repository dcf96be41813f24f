"""Click models: hand-computed fits, probability consistency, simulate -> fit recovery."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rankloop.clicks.models import (
    DBN,
    DCM,
    MODELS,
    PBM,
    PROB_EPS,
    SDBN,
    UBM,
    CascadeModel,
    ClickModel,
    make_model,
)
from rankloop.clicks.simulate import (
    attractiveness_from_grades,
    pbm_examination,
    satisfaction_from_grades,
    sessions_from_lists,
    simulate_log,
    ubm_examination,
)
from rankloop.data.clicklogs import ClickLog
from rankloop.errors import ConfigError, RankloopError


def _alpha(model: ClickModel, query: str, doc: str, param: str = "attractiveness_") -> float:
    log = ClickLog.from_lists([query], [[doc]], [[]])
    slot = model.pairs_.lookup(log)[0, 0]
    table = getattr(model, param)
    assert slot < len(table), f"({query}, {doc}) was not in training"
    return float(table[slot])


def test_pbm_one_em_step_by_hand() -> None:
    """Two sessions: [A,B] click A; [B,A] no click. From alpha = theta = 0.5:
    P(A=1 | C=0) = P(E=1 | C=0) = .5*.5 / (1 - .25) = 1/3, so
    alpha_A = (1 + 1/3)/2 = 2/3, alpha_B = (1/3 + 1/3)/2 = 1/3,
    theta_1 = (1 + 1/3)/2 = 2/3, theta_2 = (1/3 + 1/3)/2 = 1/3.
    """
    log = ClickLog.from_lists(["q", "q"], [["A", "B"], ["B", "A"]], [[0], []])
    m = PBM(alpha_prior=(0, 0), max_iter=1).fit(log)
    assert m.n_iter_ == 1
    np.testing.assert_allclose(m.examination_, [2 / 3, 1 / 3])
    assert _alpha(m, "q", "A") == pytest.approx(2 / 3)
    assert _alpha(m, "q", "B") == pytest.approx(1 / 3)
    # With Beta(1, 1) pseudo-counts: alpha_A = (4/3 + 1) / (2 + 2).
    m = PBM(max_iter=1).fit(log)
    assert _alpha(m, "q", "A") == pytest.approx(7 / 12)


# Sessions for the closed-form fits: [A,B,C] clicks B,C; [A,B,C] none; [B,A,C] click B.
_CASCADE_LOG = ClickLog.from_lists(
    ["q"] * 3, [["A", "B", "C"], ["A", "B", "C"], ["B", "A", "C"]], [[1, 2], [], [0]]
)


def test_cascade_mle_by_hand() -> None:
    """Examined down to the first click: A 0/2, B 2/3, C 0/1; with Beta(1,1): 1/4, 3/5, 1/3."""
    m = CascadeModel().fit(_CASCADE_LOG)
    assert [_alpha(m, "q", d) for d in "ABC"] == pytest.approx([1 / 4, 3 / 5, 1 / 3])
    m = CascadeModel(alpha_prior=(0, 0)).fit(_CASCADE_LOG)
    assert [_alpha(m, "q", d) for d in "ABC"] == pytest.approx([PROB_EPS, 2 / 3, PROB_EPS])


def test_dcm_and_sdbn_closed_forms_by_hand() -> None:
    """Down to the last click: A 0/2, B 2/3, C 1/2. DCM lambda_r = 1 - last_r / clicks_r:
    rank 1: 1 - 1/1, rank 2: 1 - 0/1, rank 3: 1 - 1/1. SDBN sigma: B 1/2, C 1/1."""
    m = DCM(alpha_prior=(0, 0)).fit(_CASCADE_LOG)
    assert [_alpha(m, "q", d) for d in "ABC"] == pytest.approx([PROB_EPS, 2 / 3, 1 / 2])
    np.testing.assert_allclose(m.continuation_, [PROB_EPS, 1 - PROB_EPS, PROB_EPS])
    s = SDBN(alpha_prior=(0, 0), sigma_prior=(0, 0)).fit(_CASCADE_LOG)
    assert [_alpha(s, "q", d) for d in "ABC"] == pytest.approx([PROB_EPS, 2 / 3, 1 / 2])
    assert _alpha(s, "q", "B", "satisfaction_") == pytest.approx(1 / 2)
    assert _alpha(s, "q", "C", "satisfaction_") == pytest.approx(1 - PROB_EPS)


def _random_log(seed: int, n: int = 400, k: int = 3) -> ClickLog:
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(5)]
    rankings = [list(rng.choice(docs, k, replace=False)) for _ in range(n)]
    clicked = [[p for p in range(k) if rng.random() < 0.4 / (p + 1)] for _ in range(n)]
    return ClickLog.from_lists(["q"] * n, rankings, clicked)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_probabilities_are_consistent(name: str) -> None:
    """Over all 2^K click patterns of one list, exp(session LL) sums to 1 and the marginal click
    probabilities equal the pattern-weighted clicks: the conditional and marginal formulas agree."""
    model = make_model(name).fit(_random_log(1))
    k = 3
    patterns = [list(p) for p in itertools.product([False, True], repeat=k)]
    log = ClickLog.from_lists(
        ["q"] * len(patterns),
        [["d0", "d1", "d2"]] * len(patterns),
        [[r for r in range(k) if p[r]] for p in patterns],
    )
    prob = np.exp(model.session_log_likelihood(log))
    assert prob.sum() == pytest.approx(1.0, abs=1e-4)
    marginal = model.predict_click_probs(log)
    np.testing.assert_allclose(marginal, np.broadcast_to(marginal[0], marginal.shape))
    np.testing.assert_allclose(prob @ log.clicks.astype(float), marginal[0], atol=1e-4)


def test_perplexity_formula() -> None:
    log = _random_log(2, n=50)
    m = UBM().fit(log)
    p = np.clip(m.predict_click_probs(log), PROB_EPS, 1 - PROB_EPS)
    obs = np.where(log.clicks, p, 1 - p)
    expected = 2.0 ** (-np.log2(obs).mean(axis=0))
    ppl = m.perplexity(log)
    np.testing.assert_allclose(ppl.per_rank, expected)
    assert ppl.overall == pytest.approx(expected.mean())
    q = np.clip(m.predict_click_probs(log, conditional=True), PROB_EPS, 1 - PROB_EPS)
    ll = np.log(np.where(log.clicks, q, 1 - q)).sum(axis=1).mean()
    assert m.log_likelihood(log) == pytest.approx(ll)


def test_unseen_pairs_get_the_prior_mean() -> None:
    m = PBM(max_iter=5).fit(_random_log(3))
    log = ClickLog.from_lists(["q", "other"], [["d0", "new"], ["d0", "d1"]], [[], []])
    probs = m.predict_click_probs(log)
    theta = m.examination_
    assert probs[0, 1] == pytest.approx(theta[1] * 0.5)
    assert probs[1, 0] == pytest.approx(theta[0] * 0.5)
    assert probs[0, 0] == pytest.approx(theta[0] * _alpha(m, "q", "d0"))


def test_ultra_parameterisation() -> None:
    np.testing.assert_allclose(
        attractiveness_from_grades(np.arange(5), eps=0.1, max_grade=4),
        0.1 + 0.9 * np.array([0, 1, 3, 7, 15]) / 15,
    )
    np.testing.assert_allclose(satisfaction_from_grades(np.array([0, 1]), max_grade=1), [0, 1])
    np.testing.assert_allclose(pbm_examination(3, eta=2), [1, 1 / 4, 1 / 9])
    np.testing.assert_allclose(ubm_examination(3, eta=1)[:, 0], [1, 1 / 2, 1 / 3])
    assert ubm_examination(3, eta=1)[2, 2] == 1.0 and ubm_examination(3, eta=1)[0, 1] == 0.0
    with pytest.raises(ConfigError):
        attractiveness_from_grades(np.array([5]), max_grade=4)
    with pytest.raises(ConfigError):
        attractiveness_from_grades(np.array([-1]))


def test_pbm_simulation_ctr_matches_eta() -> None:
    grades = np.full((40_000, 5), 4)
    clicks = PBM(eta=1.0).simulate(None, grades, np.random.default_rng(0))
    np.testing.assert_allclose(clicks.mean(axis=0), 1 / np.arange(1, 6), atol=0.01)
    noise = PBM(eta=0.0, eps=0.2).simulate(None, np.zeros((40_000, 2), int), 1)
    np.testing.assert_allclose(noise.mean(axis=0), [0.2, 0.2], atol=0.01)


def test_simulate_respects_padding_and_errors() -> None:
    rankings = np.array([[3, 4, -1], [1, -1, -1]])
    clicks = PBM(eta=0).simulate(rankings, np.full((2, 3), 4), 0)
    assert clicks.tolist() == [[True, True, False], [True, False, False]]
    with pytest.raises(RankloopError, match="not fitted"):
        PBM().simulate(_random_log(0), None, 0)
    with pytest.raises(RankloopError, match="ClickLog"):
        PBM().fit(_random_log(0)).simulate(rankings, None, 0)
    with pytest.raises(RankloopError, match="random_state"):
        PBM().simulate(None, np.ones((1, 2), int), "0")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        make_model("nope")


def _simulated(model: ClickModel, seed: int, n: int = 20_000) -> tuple[ClickLog, np.ndarray]:
    """Sessions over 6 queries x 8 docs (fixed grades 0..3), each showing a random top 6 of 8."""
    grade_rng = np.random.default_rng(0)
    grades = {f"q{i}": grade_rng.integers(0, 4, 8) for i in range(6)}
    rng = np.random.default_rng(seed)
    lists, glist = {}, {}
    for q, g in grades.items():  # several random orders per query, so positions vary
        for v in range(8):
            order = rng.permutation(8)[:6]
            lists[f"{q}|{v}"] = [f"{q}d{j}" for j in order]
            glist[f"{q}|{v}"] = g[order].tolist()
    sessions, rel = sessions_from_lists(lists, n, rng, glist)
    # Use the real query id (strip the order variant) so pairs are (query, doc).
    qv = np.array([q.split("|")[0] for q in sessions.query_vocab])
    sessions = ClickLog(
        sessions.query_ids, sessions.doc_ids, sessions.clicks, qv, sessions.doc_vocab
    )
    return simulate_log(model, sessions, rng, rel), rel


@pytest.mark.parametrize(
    "truth",
    [PBM(eta=1.0), UBM(eta=1.0), CascadeModel(), DCM(continuation=0.6), DBN(gamma=0.8), SDBN()],
    ids=lambda m: type(m).__name__,
)
def test_simulate_then_fit_recovers_click_probabilities(truth: ClickModel) -> None:
    log, rel = _simulated(truth, seed=7)
    fitted = type(truth)(method="em") if isinstance(truth, DCM | SDBN) else type(truth)()
    fitted.fit(log)
    true_p = truth._probs(
        truth._qd_from_grades(rel, log.mask), truth._rank_params(6), log.clicks, True
    )
    fit_p = fitted.predict_click_probs(log, conditional=True)
    assert np.abs(fit_p - true_p)[log.mask].mean() < 0.02
    # The fitted model explains held-out clicks about as well as the truth does.
    held, rel2 = _simulated(truth, seed=8, n=5_000)
    qd = truth._qd_from_grades(rel2, held.mask)
    q = np.clip(truth._probs(qd, truth._rank_params(6), held.clicks, True), PROB_EPS, 1 - PROB_EPS)
    true_ll = np.log(np.where(held.clicks, q, 1 - q)).sum(axis=1).mean()
    assert fitted.log_likelihood(held) == pytest.approx(true_ll, rel=0.03)


def test_recovered_rank_parameters() -> None:
    log, _ = _simulated(PBM(eta=1.0), seed=3)
    theta = PBM().fit(log).examination_
    np.testing.assert_allclose(theta / theta[0], pbm_examination(6, 1.0), atol=0.04)
    log, _ = _simulated(DBN(gamma=0.7), seed=4)
    assert DBN().fit(log).gamma_ == pytest.approx(0.7, abs=0.04)
    log, _ = _simulated(DCM(continuation=0.6), seed=5)
    np.testing.assert_allclose(DCM(method="em").fit(log).continuation_[:5], 0.6, atol=0.05)
    # Guo et al.'s counting estimate assumes the user stops at the last click: it underestimates.
    assert np.all(DCM().fit(log).continuation_[:5] < 0.55)


def test_fit_on_log_with_short_lists_and_summary() -> None:
    log = ClickLog.from_lists(
        ["q"] * 4, [["a", "b", "c"], ["b"], ["c", "a"], ["a"]], [[1], [0], [], [0]]
    )
    for name in MODELS:
        m = make_model(name).fit(log)
        ll = m.session_log_likelihood(log)
        assert ll.shape == (4,) and np.all(np.isfinite(ll)) and np.all(ll <= 0)
        assert m.summary()["pairs"] == 3
        ppl = m.perplexity(log)
        assert np.all(ppl.per_rank >= 1)
