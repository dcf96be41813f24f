"""Off-policy evaluation: Replay, IPS, SNIPS, DM, DR, Switch-DR, and the slate estimators
independent-IPS and reward-interaction IPS, each with a bootstrap confidence interval.

Notation (n logged rounds, A actions):
- `reward` (n,), `action` (n,) logged action ids, `pscore` (n,) the logging policy's
  probability of the logged action;
- `pi_e` (n, A) the evaluation policy's action distribution per round (a position, when the
  log has several, is part of the round's context: pass the distribution for that position);
- `q_hat` (n, A) a reward model's prediction for every action (DM, DR, Switch-DR).

Every estimator is a ratio of sums of per-round terms, `Σ num_i / Σ den_i` (den_i = 1 for the
plain averages), which is what makes the bootstrap vectorised: a resample is a vector of
multiplicities, and the estimate on it is `(counts @ num) / (counts @ den)`. The reward model
is held fixed across resamples (cross-fit it once, outside).

Slate estimators take (n, K) rewards per position:
- independent IPS (Li et al., WSDM 2018): position k's reward weighted by
  `π_e(a_k at k) / π_b(a_k at k)`; unbiased when a position's reward depends only on its own
  item (PBM-like);
- reward-interaction IPS (McInerney et al., KDD 2020): position k's reward weighted by the
  ratio of the probabilities of the whole prefix `a_1..a_k`; unbiased under cascade-like
  interactions, where a reward depends on the items above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rankloop.errors import RankloopError

ESTIMATORS = ("replay", "ips", "snips", "dm", "dr", "switch_dr")


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its bootstrap (percentile) confidence interval."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    effective: int  # rounds that carry weight (replay: matches; otherwise n)
    draws: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # bootstrap values

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "estimator": self.estimator,
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.n,
            "effective": self.effective,
        }


# ---- validation ---------------------------------------------------------------------------
def _vec(x: np.ndarray, n: int | None, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or (n is not None and len(a) != n):
        raise RankloopError(f"{what} must be a 1-D array of length {n}, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise RankloopError(f"{what} contains NaN or infinity")
    return a


def _actions(action: np.ndarray, n: int, n_actions: int | None) -> np.ndarray:
    a = np.asarray(action)
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
        raise RankloopError(f"action must be (n={n},) ints, got {a.dtype} {a.shape}")
    if n_actions is not None and n and (a.min() < 0 or a.max() >= n_actions):
        raise RankloopError(f"actions must be in [0, {n_actions}), got {a.min()}..{a.max()}")
    return a.astype(np.int64)


def _pscore(pscore: np.ndarray, n: int, what: str = "pscore") -> np.ndarray:
    p = _vec(pscore, n, what)
    if (p <= 0).any() or (p > 1).any():
        raise RankloopError(f"{what} must be probabilities in (0, 1]")
    return p


def _dist(pi: np.ndarray, n: int, what: str) -> np.ndarray:
    d = np.asarray(pi, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != n:
        raise RankloopError(f"{what} must be (n={n}, n_actions), got shape {d.shape}")
    if not np.isfinite(d).all():
        raise RankloopError(f"{what} contains NaN or infinity")
    return d


def _check_distribution(pi_e: np.ndarray) -> None:
    if (pi_e < 0).any() or not np.allclose(pi_e.sum(axis=1), 1.0, atol=1e-6):
        raise RankloopError("pi_e rows must be probability distributions (>= 0, summing to 1)")


# ---- per-round terms: (numerator, denominator) ---------------------------------------------
Terms = tuple[np.ndarray, np.ndarray]


def _weights(
    action: np.ndarray, pscore: np.ndarray, pi_e: np.ndarray, max_weight: float | None
) -> np.ndarray:
    w = pi_e[np.arange(len(action)), action] / pscore
    return w if max_weight is None else np.minimum(w, max_weight)


def _ips_weights(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    pi_e: np.ndarray,
    max_weight: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validated rewards and importance weights `π_e(a_i|x_i) / π_b(a_i|x_i)` (IPS and SNIPS)."""
    r = _vec(reward, None, "reward")
    n = len(r)
    pi_e = _dist(pi_e, n, "pi_e")
    w = _weights(_actions(action, n, pi_e.shape[1]), _pscore(pscore, n), pi_e, max_weight)
    return r, w


def replay_terms(reward: np.ndarray, action: np.ndarray, eval_action: np.ndarray) -> Terms:
    """Replay (Li et al., WSDM 2011): mean reward over the rounds where the evaluation policy's
    action (sampled for a stochastic policy) equals the logged one. Unbiased for uniformly
    random logging."""
    r = _vec(reward, None, "reward")
    n = len(r)
    match = (_actions(action, n, None) == _actions(eval_action, n, None)).astype(np.float64)
    return match * r, match


def ips_terms(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    pi_e: np.ndarray,
    *,
    max_weight: float | None = None,
) -> Terms:
    """IPS: `w_i r_i` with `w_i = π_e(a_i|x_i) / π_b(a_i|x_i)` (clipped at `max_weight`)."""
    r, w = _ips_weights(reward, action, pscore, pi_e, max_weight)
    return w * r, np.ones(len(r))


def snips_terms(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    pi_e: np.ndarray,
    *,
    max_weight: float | None = None,
) -> Terms:
    """Self-normalised IPS: `Σ w_i r_i / Σ w_i`."""
    r, w = _ips_weights(reward, action, pscore, pi_e, max_weight)
    return w * r, w


def dm_terms(pi_e: np.ndarray, q_hat: np.ndarray) -> Terms:
    """Direct method: `Σ_a π_e(a|x_i) q̂(x_i, a)`."""
    pi_e = np.asarray(pi_e, dtype=np.float64)
    n = pi_e.shape[0] if pi_e.ndim == 2 else -1
    pi_e = _dist(pi_e, n, "pi_e")
    q = _dist(q_hat, n, "q_hat")
    if q.shape != pi_e.shape:
        raise RankloopError(f"q_hat {q.shape} and pi_e {pi_e.shape} differ in shape")
    return np.einsum("na,na->n", pi_e, q), np.ones(n)


def dr_terms(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    pi_e: np.ndarray,
    q_hat: np.ndarray,
    *,
    max_weight: float | None = None,
    switch_tau: float | None = None,
) -> Terms:
    """Doubly robust (Dudík et al. 2011): DM + `w_i (r_i - q̂(x_i, a_i))`.

    With `switch_tau`, Switch-DR (Wang et al. 2017, as in obp): the correction is kept only for
    rounds whose weight is <= tau (tau = 0 gives DM, tau = inf gives DR).
    """
    r = _vec(reward, None, "reward")
    n = len(r)
    pi_e = _dist(pi_e, n, "pi_e")
    a = _actions(action, n, pi_e.shape[1])
    q = _dist(q_hat, n, "q_hat")
    if q.shape != pi_e.shape:
        raise RankloopError(f"q_hat {q.shape} and pi_e {pi_e.shape} differ in shape")
    w = _weights(a, _pscore(pscore, n), pi_e, max_weight)
    correction = w * (r - q[np.arange(n), a])
    if switch_tau is not None:
        if switch_tau < 0:
            raise RankloopError(f"switch_tau must be >= 0, got {switch_tau}")
        correction = np.where(w <= switch_tau, correction, 0.0)
    return np.einsum("na,na->n", pi_e, q) + correction, np.ones(n)


def independent_ips_terms(
    reward: np.ndarray, behavior_pscore: np.ndarray, eval_pscore: np.ndarray
) -> Terms:
    """Slate independent IPS: `Σ_k r_ik π_e(a_ik at k) / π_b(a_ik at k)` per round.

    reward, behavior_pscore, eval_pscore: (n, K) per position (marginal position-wise
    probabilities of the logged item at that position).
    """
    r, pb, pe = _slate_arrays(reward, behavior_pscore, eval_pscore)
    return (r * pe / pb).sum(axis=1), np.ones(len(r))


def reward_interaction_ips_terms(
    reward: np.ndarray, behavior_pscore_cascade: np.ndarray, eval_pscore_cascade: np.ndarray
) -> Terms:
    """Slate reward-interaction IPS: `Σ_k r_ik π_e(a_i1..a_ik) / π_b(a_i1..a_ik)` per round.

    The pscores are (n, K) probabilities of each logged prefix (see `cascade_pscores`).
    """
    r, pb, pe = _slate_arrays(reward, behavior_pscore_cascade, eval_pscore_cascade)
    return (r * pe / pb).sum(axis=1), np.ones(len(r))


def cascade_pscores(position_pscores: np.ndarray) -> np.ndarray:
    """(n, K) prefix probabilities from per-position conditional probabilities
    `P(a_k | a_1..a_k-1)` (a policy that fills a slate position by position)."""
    p = np.asarray(position_pscores, dtype=np.float64)
    if p.ndim != 2:
        raise RankloopError(f"position_pscores must be (n, K), got shape {p.shape}")
    return np.cumprod(p, axis=1)


def _slate_arrays(
    reward: np.ndarray, pb: np.ndarray, pe: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = np.asarray(reward, dtype=np.float64)
    b = np.asarray(pb, dtype=np.float64)
    e = np.asarray(pe, dtype=np.float64)
    if r.ndim != 2 or b.shape != r.shape or e.shape != r.shape:
        raise RankloopError(
            f"slate reward and pscores must share an (n, K) shape, got {r.shape}, {b.shape}, {e.shape}"
        )
    if not (np.isfinite(r).all() and np.isfinite(b).all() and np.isfinite(e).all()):
        raise RankloopError("slate arrays contain NaN or infinity")
    if (b <= 0).any() or (b > 1).any() or (e < 0).any() or (e > 1).any():
        raise RankloopError("behaviour pscores must be in (0, 1] and evaluation pscores in [0, 1]")
    return r, b, e


# ---- estimates and bootstrap ---------------------------------------------------------------
def _ratio(num: np.ndarray, den: np.ndarray) -> float:
    d = den.sum()
    return float(num.sum() / d) if d > 0 else float("nan")


def bootstrap_ci(
    terms: Terms,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    random_state: int | np.random.Generator = 0,
) -> tuple[float, float, np.ndarray]:
    """Percentile interval of `Σ num / Σ den` over `n_boot` resamples of the rounds.

    Returns (low, high, the bootstrap estimates). Resamples with a zero denominator (e.g. no
    replay match) are dropped.
    """
    num, den = (np.asarray(t, dtype=np.float64) for t in terms)
    if not 0 < level < 1 or n_boot < 1:
        raise RankloopError(f"need 0 < level < 1 and n_boot >= 1, got {level}, {n_boot}")
    rng = np.random.default_rng(random_state)
    n = len(num)
    if n == 0:
        raise RankloopError("cannot bootstrap an empty log")
    out = np.empty(n_boot)
    step = max(1, (1 << 22) // max(n, 1))
    for s in range(0, n_boot, step):
        b = min(step, n_boot - s)
        draws = rng.integers(0, n, (b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        d = counts @ den
        out[s : s + b] = np.divide(counts @ num, d, out=np.full(b, np.nan), where=d > 0)
    ok = out[np.isfinite(out)]
    if not len(ok):
        return float("nan"), float("nan"), out
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(ok, [tail, 1.0 - tail])
    return float(lo), float(hi), out


def estimate(
    name: str,
    terms: Terms,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    random_state: int | np.random.Generator = 0,
) -> Estimate:
    """The point estimate `Σ num / Σ den` of `terms` with its bootstrap interval."""
    num, den = terms
    lo, hi, draws = bootstrap_ci(terms, n_boot=n_boot, level=level, random_state=random_state)
    effective = int((np.asarray(den) > 0).sum())
    value = _ratio(np.asarray(num), np.asarray(den))
    return Estimate(name, value, lo, hi, len(num), effective, draws)


def evaluate_policy(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    pi_e: np.ndarray,
    *,
    q_hat: np.ndarray | None = None,
    estimators: tuple[str, ...] = ESTIMATORS,
    switch_tau: float = 100.0,
    max_weight: float | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    random_state: int = 0,
) -> dict[str, Estimate]:
    """Run the named estimators on one log; DM/DR/Switch-DR need `q_hat`.

    Replay draws the evaluation policy's action per round from `pi_e` (seeded by
    `random_state`), so a stochastic policy is replayed as it would act.
    """
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise RankloopError(f"unknown estimator(s) {unknown}; choose from {ESTIMATORS}")
    n = len(np.asarray(reward))
    pi = _dist(pi_e, n, "pi_e")
    _check_distribution(pi)
    if q_hat is None and any(e in ("dm", "dr", "switch_dr") for e in estimators):
        raise RankloopError("DM, DR and Switch-DR need q_hat, a reward model's (n, A) predictions")
    rng = np.random.default_rng(random_state)
    out: dict[str, Estimate] = {}
    for i, name in enumerate(estimators):
        if name == "replay":
            cdf = np.cumsum(pi, axis=1)
            draws = (rng.random((n, 1)) > cdf).sum(axis=1).clip(max=pi.shape[1] - 1)
            terms = replay_terms(reward, action, draws)
        elif name == "ips":
            terms = ips_terms(reward, action, pscore, pi, max_weight=max_weight)
        elif name == "snips":
            terms = snips_terms(reward, action, pscore, pi, max_weight=max_weight)
        elif name == "dm":
            terms = dm_terms(pi, q_hat)  # type: ignore[arg-type]
        elif name == "dr":
            terms = dr_terms(reward, action, pscore, pi, q_hat, max_weight=max_weight)  # type: ignore[arg-type]
        else:
            terms = dr_terms(
                reward,
                action,
                pscore,
                pi,
                q_hat,
                max_weight=max_weight,
                switch_tau=switch_tau,  # type: ignore[arg-type]
            )
        out[name] = estimate(
            name, terms, n_boot=n_boot, level=level, random_state=random_state + 1 + i
        )
    return out


def relative_error(estimate_value: float, truth: float) -> float:
    """|V̂ - V| / V: the relative estimation error reported by the Open Bandit Pipeline paper."""
    if truth == 0:
        raise RankloopError("relative error is undefined for a true value of 0")
    return abs(estimate_value - truth) / abs(truth)
