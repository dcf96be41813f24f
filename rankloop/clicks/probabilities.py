"""ULTRA's parameterisation of simulated clicks: grade -> click probability, rank -> examination.

Both the click models (`rankloop.clicks.models`) and the session builders
(`rankloop.clicks.simulate`) use these, so they live apart from either.

ULTRA's standard settings (Ai et al., "Unbiased Learning to Rank: Online or Offline?", and the
ULTRA toolbox):
- click probability of a document with grade g: `eps + (1 - eps) (2^g - 1) / (2^gmax - 1)`,
  so a non-relevant document is still clicked with probability `eps` (click noise);
- PBM examination at rank r (1-based): `(1 / r) ** eta`.
"""

from __future__ import annotations

import numpy as np

from rankloop.errors import ConfigError

__all__ = [
    "attractiveness_from_grades",
    "pbm_examination",
    "satisfaction_from_grades",
    "ubm_examination",
]


def _check_grades(grades: np.ndarray, max_grade: int) -> np.ndarray:
    g = np.asarray(grades)
    if g.size and (np.nanmin(g) < 0 or np.nanmax(g) > max_grade):
        raise ConfigError(
            f"relevance grades must lie in [0, max_grade={max_grade}], got range "
            f"[{np.nanmin(g)}, {np.nanmax(g)}] (clip negative qrels grades to 0 first)"
        )
    if max_grade < 1:
        raise ConfigError(f"max_grade must be >= 1, got {max_grade}")
    return g.astype(float)


def attractiveness_from_grades(
    grades: np.ndarray, eps: float = 0.1, max_grade: int = 4
) -> np.ndarray:
    """Click (attractiveness) probability per grade: `eps + (1-eps)(2^g-1)/(2^gmax-1)`."""
    if not 0.0 <= eps <= 1.0:
        raise ConfigError(f"eps must be in [0, 1], got {eps}")
    g = _check_grades(grades, max_grade)
    return eps + (1.0 - eps) * (np.exp2(g) - 1.0) / (2.0**max_grade - 1.0)


def satisfaction_from_grades(grades: np.ndarray, max_grade: int = 4) -> np.ndarray:
    """Satisfaction probability after a click (DBN/SDBN): `(2^g-1)/(2^gmax-1)`, no noise floor."""
    g = _check_grades(grades, max_grade)
    return (np.exp2(g) - 1.0) / (2.0**max_grade - 1.0)


def pbm_examination(k: int, eta: float = 1.0) -> np.ndarray:
    """PBM examination probabilities `(1/r)^eta` for ranks r = 1..k, shape (k,)."""
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    return (1.0 / np.arange(1, k + 1)) ** float(eta)


def ubm_examination(k: int, eta: float = 1.0) -> np.ndarray:
    """UBM examination `gamma[r, r']` = `(1/(r - r'))^eta`, shape (k, k).

    Row r (0-based rank r+1), column r' = 1-based rank of the previous click (0 = none); entries
    with r' > r are unused (set to 0). With no earlier click this is PBM's `(1/r)^eta`.
    """
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    r = np.arange(1, k + 1)[:, None]
    prev = np.arange(k)[None, :]
    dist = (r - prev).astype(float)
    return np.where(dist > 0, (1.0 / np.maximum(dist, 1.0)) ** float(eta), 0.0)
