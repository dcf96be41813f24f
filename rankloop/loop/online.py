"""Online learning to rank for linear rankers, one interaction at a time: PDGD and DBGD.

- `PDGD`: Pairwise Differentiable Gradient Descent (Oosterhuis and de Rijke, "Differentiable
  Unbiased Online Learning to Rank", CIKM 2018). Shows a Plackett-Luce sample of the softmax of
  its scores and learns from click-inferred document-pair preferences, each weighted by the
  reversed-pair ratio rho that makes the gradient unbiased w.r.t. pair preferences.
- `DBGD`: Dueling Bandit Gradient Descent (Yue and Joachims, ICML 2009) with team-draft
  interleaving as the comparison, in the OLTR literature's setting: a candidate `w + delta * u`
  for a uniform unit vector `u` duels the current weights, and `w += lr * u` when it wins.

A session is `shown = learner.rank(x, k)`, the user's clicks on `shown`, then
`learner.update(x, shown, clicks)`. Learners are plain objects holding numpy arrays, floats and
their Generator, so `pickle.dumps(learner)` is a checkpoint that continues identically.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from rankloop._runtime import check_random_state
from rankloop.errors import ConfigError, RankloopError
from rankloop.loop.interleave import _check_positive_int, credit, team_draft

__all__ = ["DBGD", "PDGD", "LinearOnlineRanker", "reversed_pair_weights"]


def _check_positive_float(name: str, value: object) -> float:
    """`value` as a finite float > 0, or a ConfigError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class LinearOnlineRanker(ABC):
    """Base of the online linear rankers: weights (d,) start at zero, a document scores `x @ w`.

    Subclasses implement `rank` (what to show, possibly randomised) and `update` (learn from the
    clicks on it). `rank` draws from the `rng` it is given, or from the learner's own Generator
    (seeded by `random_state`) when `rng` is None."""

    def __init__(
        self, n_features: int, *, lr: float, random_state: np.random.Generator | int = 0
    ) -> None:
        self.n_features = _check_positive_int("n_features", n_features)
        self.lr = _check_positive_float("lr", lr)
        self.weights = np.zeros(self.n_features)
        self._rng = check_random_state(random_state)

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        """`x` as a float64 (N, d) array with at least one row."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features or x.shape[0] < 1:
            raise RankloopError(
                f"x must be an (N, {self.n_features}) feature array with N >= 1, got {x.shape}"
            )
        return x

    def _check_feedback(
        self, x: np.ndarray, shown: np.ndarray, clicks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`x`, `shown` (k',) distinct row indices into x and `clicks` (k',) as bool."""
        x = self._check_x(x)
        shown = np.asarray(shown)
        clicks = np.asarray(clicks)
        if shown.ndim != 1 or not np.issubdtype(shown.dtype, np.integer):
            raise RankloopError(f"shown must be a 1-D int array, got {shown.dtype} {shown.shape}")
        if clicks.shape != shown.shape:
            raise RankloopError(
                f"clicks must have the shape of shown {shown.shape}, got {clicks.shape}"
            )
        if shown.size and (shown.min() < 0 or shown.max() >= len(x)):
            raise RankloopError(f"shown must index rows of x, in [0, {len(x)})")
        if np.unique(shown).size != shown.size:
            raise RankloopError("shown must not repeat a row")
        if clicks.dtype != np.bool_:
            if not np.isin(clicks, (0, 1)).all():
                raise RankloopError("clicks must be bool or 0/1")
            clicks = clicks.astype(bool)
        return x, shown, clicks

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(N,) scores `x @ weights` of the (N, d) candidates: the deterministic ranking key."""
        return self._check_x(x) @ self.weights

    @abstractmethod
    def rank(
        self, x: np.ndarray, k: int, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        """(min(k, N),) row indices of `x` to show, best position first."""

    @abstractmethod
    def update(self, x: np.ndarray, shown: np.ndarray, clicks: np.ndarray) -> None:
        """Learn from the clicks (bool, per shown position) on the rows `shown` of `x`."""


def reversed_pair_weights(
    scores: np.ndarray, shown: np.ndarray, upper: np.ndarray, lower: np.ndarray
) -> np.ndarray:
    """PDGD's rho for each pair of shown positions `upper[i] < lower[i]`: P(R*) / (P(R) + P(R*)).

    R is the shown ranking (rows `shown` of the N candidates with `scores`), R* the same with the
    two positions swapped, and P the Plackett-Luce probability of that top-k prefix under the
    softmax of `scores` over all N candidates (the logging policy). Computed in log space, so it
    is exactly 0.5 for equal scores and never overflows."""
    scores = np.asarray(scores, dtype=np.float64)
    shown = np.asarray(shown)
    upper = np.asarray(upper)
    lower = np.asarray(lower)
    if scores.ndim != 1 or not np.isfinite(scores).all():
        raise RankloopError(f"scores must be a 1-D finite array, got shape {scores.shape}")
    for name, a in (("shown", shown), ("upper", upper), ("lower", lower)):
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise RankloopError(f"{name} must be a 1-D int array, got {a.dtype} {a.shape}")
    if shown.size and (shown.min() < 0 or shown.max() >= len(scores)):
        raise RankloopError(f"shown must index scores, in [0, {len(scores)})")
    if np.unique(shown).size != shown.size:
        raise RankloopError("shown must not repeat a row")
    if upper.shape != lower.shape or not (
        (upper >= 0).all() and (upper < lower).all() and (lower < len(shown)).all()
    ):
        raise RankloopError("pairs must satisfy 0 <= upper < lower < len(shown), same lengths")
    return _rho(scores, shown, upper, lower)


def _rho(scores: np.ndarray, shown: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """`reversed_pair_weights` without the input checks (PDGD's per-update path)."""
    rest = np.ones(len(scores), dtype=bool)
    rest[shown] = False
    f = scores[shown]
    # log Z_p: log of the softmax denominator when position p is drawn (rows not yet placed).
    log_rest = _logsumexp(scores[rest])
    log_z = np.logaddexp.accumulate(np.concatenate(([log_rest], f[::-1])))[:0:-1]
    # P(R*)/P(R) = prod over upper < p <= lower of Z_p / Z*_p, Z*_p = Z_p + e^{f_u} - e^{f_l} (the
    # only factors that differ); log(Z*_p / Z_p) = log1p(e^{f_u - log Z_p} - e^{f_l - log Z_p}),
    # bounded below by f_u - log Z_p (Z*_p >= e^{f_u}) where rounding cancels the difference.
    p = np.arange(len(f))
    in_range = (p > upper[:, None]) & (p <= lower[:, None])
    log_u = f[upper][:, None] - log_z
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        log_swap = np.fmax(np.log1p(np.exp(log_u) - np.exp(f[lower][:, None] - log_z)), log_u)
    log_inv_ratio = np.where(in_range, log_swap, 0.0).sum(axis=1)  # log P(R) / P(R*)
    return 0.5 * (1.0 - np.tanh(0.5 * log_inv_ratio))  # 1 / (1 + P(R) / P(R*))


def _logsumexp(v: np.ndarray) -> float:
    """log(sum(exp(v))) with max subtraction; -inf for an empty `v`."""
    if v.size == 0:
        return -math.inf
    top = v.max()
    return float(top + np.log(np.exp(v - top).sum()))


class PDGD(LinearOnlineRanker):
    """Pairwise Differentiable Gradient Descent (Oosterhuis and de Rijke, CIKM 2018), linear.

    `rank` samples a Plackett-Luce ranking from softmax(scores) without replacement (Gumbel
    top-k), the paper's logging policy. `update` infers clicked > unclicked for every clicked
    document and every unclicked one ranked above the last click or directly below it, weights
    each pair by `reversed_pair_weights` and ascends sum rho * grad P(d_clicked > d_unclicked),
    P = e^{f_i} / (e^{f_i} + e^{f_j}), as in the paper (lr 0.1 is the paper's rate)."""

    def __init__(
        self, n_features: int, *, lr: float = 0.1, random_state: np.random.Generator | int = 0
    ) -> None:
        super().__init__(n_features, lr=lr, random_state=random_state)

    def rank(
        self, x: np.ndarray, k: int, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        """(min(k, N),) rows of `x` in a Plackett-Luce sample of softmax(x @ weights)."""
        s = self.scores(x)
        k = _check_positive_int("k", k)
        rng = self._rng if rng is None else check_random_state(rng)
        keys = s + rng.gumbel(size=len(s))  # Gumbel top-k: an exact PL sample, no exp needed
        return np.argsort(-keys)[:k]

    def update(self, x: np.ndarray, shown: np.ndarray, clicks: np.ndarray) -> None:
        """One PDGD step from the clicks on `shown` (a no-op when nothing was clicked)."""
        x, shown, clicks = self._check_feedback(x, shown, clicks)
        clicked = np.flatnonzero(clicks)
        if clicked.size == 0:
            return
        considered = np.arange(len(shown)) <= clicked[-1] + 1
        unclicked = np.flatnonzero(considered & ~clicks)
        if unclicked.size == 0:
            return
        pos = np.repeat(clicked, unclicked.size)
        neg = np.tile(unclicked, clicked.size)
        s = x @ self.weights
        rho = _rho(s, shown, np.minimum(pos, neg), np.maximum(pos, neg))
        # grad P(i > j) = sigma(f_i - f_j) * sigma(f_j - f_i) * (x_i - x_j); t = e^{-|f_i - f_j|}
        t = np.exp(-np.abs(s[shown[pos]] - s[shown[neg]]))
        pair_w = rho * t / (1.0 + t) ** 2
        doc_w = np.bincount(pos, pair_w, len(shown)) - np.bincount(neg, pair_w, len(shown))
        self.weights += self.lr * (doc_w @ x[shown])


class DBGD(LinearOnlineRanker):
    """Dueling Bandit Gradient Descent (Yue and Joachims, ICML 2009) with team-draft interleaving.

    `rank` draws a uniform unit vector u, interleaves the rankings of the current weights (team
    0) and of `weights + delta * u` (team 1), and keeps u and the teams for `update`, which
    moves `weights += lr * u` when the candidate's team earned strictly more clicks. Defaults
    (delta 1.0, lr 0.01, zero start) are the OLTR literature's."""

    def __init__(
        self,
        n_features: int,
        *,
        lr: float = 0.01,
        delta: float = 1.0,
        random_state: np.random.Generator | int = 0,
    ) -> None:
        super().__init__(n_features, lr=lr, random_state=random_state)
        self.delta = _check_positive_float("delta", delta)
        self._direction: np.ndarray | None = None
        self._shown: np.ndarray | None = None
        self._teams: np.ndarray | None = None

    def rank(
        self, x: np.ndarray, k: int, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        """(min(k, N),) rows of `x`: the team-draft interleaving of current and candidate weights.

        Each ranking sorts by score, ties by row index; only their top k can be drawn from."""
        x = self._check_x(x)
        k = _check_positive_int("k", k)
        rng = self._rng if rng is None else check_random_state(rng)
        u = rng.standard_normal(self.n_features)
        u /= np.linalg.norm(u)
        both = x @ np.stack([self.weights, self.weights + self.delta * u], axis=1)
        k = min(k, len(x))
        top = np.argsort(-both.T, axis=1, kind="stable")[:, :k]
        lists, teams = team_draft(top[:, None, :], k, rng)
        self._direction, self._shown, self._teams = u, lists[0], teams[0]
        return lists[0]

    def update(self, x: np.ndarray, shown: np.ndarray, clicks: np.ndarray) -> None:
        """Step towards the candidate when its team won the interleaved comparison on `shown`."""
        x, shown, clicks = self._check_feedback(x, shown, clicks)
        if self._shown is None or not np.array_equal(shown, self._shown):
            raise RankloopError("DBGD.update needs the list that the last DBGD.rank returned")
        wins = credit(self._teams[None, :], clicks[None, :], 2)[0]
        if wins[1] > wins[0]:
            self.weights += self.lr * self._direction
        self._direction = self._shown = self._teams = None
