"""Significance tests and p-value corrections, against scipy and hand-computed values."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from scipy import stats

from rankloop.errors import RankloopError
from rankloop.eval.significance import (
    bonferroni,
    correct_pvalues,
    fisher_randomization_test,
    holm,
    paired_bootstrap_test,
    paired_t_test,
    paired_test,
)

RNG = np.random.default_rng(7)
A = RNG.uniform(size=40)
B = np.clip(A - 0.05 + RNG.normal(0, 0.1, size=40), 0, 1)


def test_t_test_matches_scipy():
    assert paired_t_test(A, B) == pytest.approx(stats.ttest_rel(A, B).pvalue, abs=1e-12)
    assert paired_t_test(A, A) == 1.0  # zero variance, zero mean
    assert paired_t_test(np.arange(5.0) + 1, np.arange(5.0)) == 0.0  # zero variance, mean 1
    # Differences that are zero up to float rounding: no scipy cancellation warning, p = 1.
    a = np.array([0.1 + 0.2, 0.7, 0.3 + 0.6])
    b = np.array([0.3, 0.7 + 1e-17, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert paired_t_test(a, b) == 1.0


def test_fisher_exact_enumeration_by_hand():
    d = np.array([0.3, 0.1, -0.2, 0.4])
    obs = abs(d.sum())
    sums = [abs(np.dot(s, d)) for s in itertools.product([1, -1], repeat=4)]
    want = sum(s >= obs - 1e-12 for s in sums) / 16
    assert fisher_randomization_test(d, np.zeros(4)) == pytest.approx(want)
    # |sum| = |1.0 - 2 * flipped mass| >= 0.6 when the flipped mass is 0, 0.1 or 0.2, or mirrored.
    assert want == 6 / 16


def test_fisher_monte_carlo_close_to_exact_and_seeded():
    a, b = A[:14], B[:14]  # 2**14 assignments: exact with enough permutations
    exact = fisher_randomization_test(a, b, n_permutations=2**14)
    mc = fisher_randomization_test(a, b, n_permutations=20_000, random_state=1)
    assert mc == pytest.approx(exact, abs=0.015)
    assert fisher_randomization_test(A, B, random_state=3) == fisher_randomization_test(
        A, B, random_state=3
    )
    assert fisher_randomization_test(A, A) == 1.0


def test_bootstrap_agrees_with_t_test_roughly_and_is_seeded():
    p_t = paired_t_test(A, B)
    p_b = paired_bootstrap_test(A, B, n_resamples=20_000, random_state=0)
    assert p_b == pytest.approx(p_t, abs=0.02)
    assert paired_bootstrap_test(A, B, random_state=5) == paired_bootstrap_test(
        A, B, random_state=5, n_resamples=10_000
    )
    assert paired_bootstrap_test(A, A) == 1.0
    big = paired_bootstrap_test(A + 0.5, A, n_resamples=1000)
    assert big == pytest.approx(1 / 1001)


def test_dispatch_and_errors():
    assert paired_test(A, B, "t") == paired_t_test(A, B)
    assert paired_test(A, B, "fisher", random_state=2) == fisher_randomization_test(
        A, B, random_state=2
    )
    with pytest.raises(RankloopError):
        paired_test(A, B, "wilcoxon")
    with pytest.raises(RankloopError):
        paired_t_test(A, B[:-1])
    with pytest.raises(RankloopError):
        paired_t_test([1.0], [0.0])


def test_holm_and_bonferroni_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone max: 0.06
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert bonferroni(p).tolist() == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert bonferroni([0.5, 0.6]).tolist() == [1.0, 1.0]
    assert correct_pvalues(p, None).tolist() == p
    with pytest.raises(RankloopError):
        correct_pvalues(p, "fdr")
