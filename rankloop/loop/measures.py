"""What a loop does to quality and to exposure, per round, and confidence intervals over seeds.

- exposure Gini and item coverage of the shown items (Gini from `rankloop.bandits.simulate`);
- popularity lift: the exposure share of the 20% most popular items (by the world's a-priori
  popularity) divided by their share when every user sees the truth's best list;
- homogenisation: the mean Jaccard similarity between the shown sets of pairs of sessions of
  different users (Chaney, Stewart and Engelhardt, RecSys 2018);
- regret: expected clicks of the truth's best list minus the shown list's, per session.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from rankloop.bandits.simulate import gini

__all__ = ["coverage", "exposure_gini", "homogenisation", "mean_ci", "popularity_lift"]


def _counts(items: np.ndarray, n_items: int) -> np.ndarray:
    shown = items[items >= 0]
    return np.bincount(shown, minlength=n_items).astype(np.float64)


def exposure_gini(items: np.ndarray, n_items: int) -> float:
    """Gini coefficient of how often each item was shown (0 = equal exposure)."""
    return gini(_counts(items, n_items))


def coverage(items: np.ndarray, n_items: int) -> float:
    """Share of the items shown at least once."""
    return float(np.count_nonzero(_counts(items, n_items)) / max(n_items, 1))


def top_items(popularity: np.ndarray, share: float = 0.2) -> np.ndarray:
    """(n_items,) bool: the `share` most popular items (ties by item row)."""
    n = len(popularity)
    top = np.zeros(n, bool)
    top[np.argsort(-np.asarray(popularity), kind="stable")[: max(1, round(share * n))]] = True
    return top


def popularity_lift(items: np.ndarray, ideal: np.ndarray, popular: np.ndarray) -> float:
    """Exposure share of the `popular` items in `items` over their share in the `ideal` lists
    (1 = as under the truth; above 1 = the loop over-exposes popular items)."""

    def share(x: np.ndarray) -> float:
        s = x[x >= 0]
        return float(popular[s].mean()) if len(s) else 0.0

    base = share(ideal)
    return share(items) / base if base > 0 else float("nan")


def homogenisation(
    users: np.ndarray, items: np.ndarray, rng: np.random.Generator, n_pairs: int = 2000
) -> float:
    """Mean Jaccard similarity of the shown sets of random session pairs of different users."""
    n = len(users)
    if n < 2:
        return float("nan")
    a = rng.integers(0, n, n_pairs)
    b = rng.integers(0, n, n_pairs)
    keep = users[a] != users[b]
    a, b = a[keep], b[keep]
    if not len(a):
        return float("nan")
    x, y = items[a], items[b]
    valid_x, valid_y = x >= 0, y >= 0
    # |X ∩ Y|: for every slot of x, whether that item appears anywhere in y
    inter = (
        ((x[:, :, None] == y[:, None, :]) & valid_x[:, :, None] & valid_y[:, None, :])
        .any(axis=2)
        .sum(axis=1)
    )
    union = valid_x.sum(axis=1) + valid_y.sum(axis=1) - inter
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 0.0)))


def mean_ci(
    values: np.ndarray, axis: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of the Student-t `level` confidence interval over `axis` (NaN-free
    inputs; the half-width is 0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[axis]
    mean = v.mean(axis=axis)
    if n < 2:
        return mean, np.zeros_like(mean)
    sem = v.std(axis=axis, ddof=1) / np.sqrt(n)
    return mean, stats.t.ppf(0.5 + level / 2, n - 1) * sem
