"""Paired significance tests over per-query scores, and multiple-comparison corrections.

Every test is two-sided and takes two aligned arrays of per-query values (system, baseline).
The randomised tests are seeded through `random_state` and vectorised over resamples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rankloop.errors import RankloopError

__all__ = [
    "TESTS",
    "bonferroni",
    "correct_pvalues",
    "fisher_randomization_test",
    "holm",
    "paired_bootstrap_test",
    "paired_t_test",
    "paired_test",
]

TESTS = ("t", "fisher", "bootstrap")
CORRECTIONS = ("holm", "bonferroni")
_CHUNK_CELLS = 2_000_000  # resamples x queries held in memory at once


def _diffs(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise RankloopError(
            f"paired test needs two 1-d arrays of equal length, got {a.shape} and {b.shape}"
        )
    if len(a) < 2:
        raise RankloopError(f"paired test needs at least 2 queries, got {len(a)}")
    return a - b


def _rng(random_state: int | np.random.Generator) -> np.random.Generator:
    return (
        random_state
        if isinstance(random_state, np.random.Generator)
        else np.random.default_rng(random_state)
    )


def paired_t_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided paired Student t-test (scipy's `ttest_rel`). Identical systems give p = 1."""
    from scipy import stats  # lazy: scipy.stats costs ~1 s to import

    d = _diffs(a, b)
    # Zero variance (up to float rounding, e.g. 0.1 + 0.2 - 0.3): t is 0/0 or infinite, and
    # scipy would warn about catastrophic cancellation and return noise.
    tol = 1e-12 * max(1.0, float(np.max(np.abs(np.asarray(a, float)))))
    if np.ptp(d) <= tol:
        return 1.0 if abs(float(np.mean(d))) <= tol else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def _at_least_as_extreme(sums: np.ndarray, observed: float, scale: float) -> int:
    # Tolerance absorbs summation-order rounding, so the identity permutation always counts.
    return int(np.count_nonzero(np.abs(sums) >= abs(observed) - 1e-10 * scale))


def fisher_randomization_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_permutations: int = 10_000,
    random_state: int | np.random.Generator = 0,
) -> float:
    """Two-sided Fisher randomisation (sign-flip permutation) test on the mean difference.

    With 2**n <= `n_permutations` every sign assignment is enumerated and p is exact; otherwise
    `n_permutations` random assignments are drawn and p = (1 + #as extreme) / (1 + draws).
    """
    d = _diffs(a, b)
    n, observed, scale = len(d), float(d.sum()), float(np.abs(d).sum()) or 1.0
    if n_permutations < 1:
        raise RankloopError(f"n_permutations must be >= 1, got {n_permutations}")
    if n < 63 and 2**n <= n_permutations:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        sums = (1.0 - 2.0 * bits) @ d
        return _at_least_as_extreme(sums, observed, scale) / 2**n
    rng = _rng(random_state)
    chunk = max(1, _CHUNK_CELLS // n)
    hits, done = 0, 0
    while done < n_permutations:
        m = min(chunk, n_permutations - done)
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(m, n), dtype=np.int8)
        hits += _at_least_as_extreme(signs @ d, observed, scale)
        done += m
    return (hits + 1) / (n_permutations + 1)


def paired_bootstrap_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 10_000,
    random_state: int | np.random.Generator = 0,
) -> float:
    """Two-sided paired bootstrap test (Sakai 2006): resample queries from the differences
    shifted to mean 0; p = (1 + #|resampled mean| >= |observed mean|) / (1 + resamples)."""
    d = _diffs(a, b)
    if n_resamples < 1:
        raise RankloopError(f"n_resamples must be >= 1, got {n_resamples}")
    n, observed = len(d), float(d.mean())
    z = d - observed
    scale = float(np.abs(d).mean()) or 1.0
    rng = _rng(random_state)
    chunk = max(1, _CHUNK_CELLS // n)
    hits, done = 0, 0
    while done < n_resamples:
        m = min(chunk, n_resamples - done)
        means = z[rng.integers(0, n, size=(m, n))].mean(axis=1)
        hits += _at_least_as_extreme(means, observed, scale)
        done += m
    return (hits + 1) / (n_resamples + 1)


def paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    test: str = "t",
    *,
    n_resamples: int = 10_000,
    random_state: int | np.random.Generator = 0,
) -> float:
    """Dispatch to `paired_t_test` ("t"), `fisher_randomization_test` ("fisher") or
    `paired_bootstrap_test` ("bootstrap"); `n_resamples` is the permutation/resample count."""
    if test == "t":
        return paired_t_test(a, b)
    if test == "fisher":
        return fisher_randomization_test(
            a, b, n_permutations=n_resamples, random_state=random_state
        )
    if test == "bootstrap":
        return paired_bootstrap_test(a, b, n_resamples=n_resamples, random_state=random_state)
    raise RankloopError(f"unknown test {test!r}; choose one of {', '.join(TESTS)}")


def bonferroni(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Bonferroni-adjusted p-values: min(1, m * p)."""
    p = np.asarray(pvalues, np.float64)
    return np.minimum(1.0, p * len(p))


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values: the i-th smallest becomes max over j <= i of
    min(1, (m - j + 1) * p_(j)), returned in the input order."""
    p = np.asarray(pvalues, np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def correct_pvalues(pvalues: Sequence[float] | np.ndarray, method: str | None) -> np.ndarray:
    """Adjust a family of p-values: None (unchanged), "holm" or "bonferroni"."""
    if method is None:
        return np.asarray(pvalues, np.float64).copy()
    if method == "holm":
        return holm(pvalues)
    if method == "bonferroni":
        return bonferroni(pvalues)
    raise RankloopError(f"unknown correction {method!r}; choose None, 'holm' or 'bonferroni'")
