"""Position-bias (propensity) estimation: relative examination probabilities theta_k / theta_1.

Three estimators, all assuming a position-based model (clicks = examination(rank) x relevance):

- **Result randomisation** (`swap_interventions` + `swap_propensities`): each session picks a pair
  of positions (`swap-first`: rank 1 and a uniform rank k, as in Joachims et al., WSDM 2017;
  `adjacent`: ranks a and a+1; `random-pair`: any two ranks) and swaps their documents with
  probability 1/2. Within the sessions assigned pair (a, b), each of the two documents sits at a
  and at b equally often, so E[clicks at b] / E[clicks at a] = theta_b / theta_a. The log-ratios
  of all pairs are combined by weighted least squares on the graph of ranks (weight = inverse
  delta-method variance `1 / (1/C_a + 1/C_b)`), with log theta_1 = 0; for `swap-first` and
  `adjacent` this is exactly the direct ratio (and its running product).
- **EM on a PBM** (`em_propensities`): fit `PBM` (unsmoothed) on the log; theta / theta_1. Needs
  each (query, doc) pair at several ranks (several rankers, or lists that change over time).
- **Intervention harvesting** (`harvest_propensities`): Agarwal, Zaitsev, Wang, Li, Najork,
  Joachims, "Estimating Position Bias without Intrusive Interventions" (WSDM 2019), AllPairs.
  Several logging rankers put the same (query, doc) pair at different ranks. For ranks k != k',
  the interventional set S_kk' holds the pairs shown at both. With CTR_k(q, d) the click rate of
  the pair over its impressions at rank k (the paper's 1/w(q, d, k) weighting),
      c[k, k'] = sum_{(q,d) in S_kk'} CTR_k(q, d),   n[k, k'] = sum_{(q,d) in S_kk'} (1 - CTR_k(q, d)),
  and AllPairs maximises
      sum_{k != k'} c[k, k'] log(p_k r_kk') + n[k, k'] log(1 - p_k r_kk'),
  over propensities p and symmetric set relevances r_kk' = r_k'k (both sigmoid-parameterised,
  L-BFGS). Ranks not connected to rank 1 through non-empty sets are not identified (NaN).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.optimize import minimize

from rankloop._runtime import check_random_state
from rankloop.clicks.models import PBM
from rankloop.data.clicklogs import ClickLog
from rankloop.errors import ConfigError, RankloopError

SwapDesign = Literal["swap-first", "adjacent", "random-pair"]


def swap_interventions(
    sessions: ClickLog,
    design: SwapDesign,
    random_state: np.random.Generator | int,
    relevance: np.ndarray | None = None,
) -> tuple[ClickLog, np.ndarray | None, np.ndarray]:
    """Randomise every session's list by one swap (with probability 1/2) of a design-chosen pair.

    Returns the permuted sessions (clicks cleared), the permuted (n, K) `relevance` (if given)
    and the (n, 2) 0-based position pair each session randomised ((-1, -1) for lists of length 1).
    """
    rng = check_random_state(random_state)
    n, k = sessions.doc_ids.shape
    length = sessions.lengths
    u1, u2, coin = rng.random(n), rng.random(n), rng.random(n) < 0.5
    span = np.maximum(length - 1, 1)
    if design == "swap-first":
        a = np.zeros(n, np.int64)
        b = 1 + np.floor(u1 * span).astype(np.int64)
    elif design == "adjacent":
        a = np.floor(u1 * span).astype(np.int64)
        b = a + 1
    elif design == "random-pair":
        a = np.floor(u1 * length).astype(np.int64)
        b = np.floor(u2 * span).astype(np.int64)
        b = b + (b >= a)
        a, b = np.minimum(a, b), np.maximum(a, b)
    else:
        raise ConfigError(
            f"unknown swap design {design!r}; choose swap-first, adjacent or random-pair"
        )
    ok = length >= 2
    a, b = np.where(ok, a, -1), np.where(ok, b, -1)
    perm = np.broadcast_to(np.arange(k), (n, k)).copy()
    rows = np.flatnonzero(ok & coin)
    perm[rows, a[rows]], perm[rows, b[rows]] = b[rows], a[rows]
    doc_ids = np.take_along_axis(sessions.doc_ids, perm, axis=1)
    out = ClickLog(
        sessions.query_ids,
        doc_ids,
        np.zeros((n, k), bool),
        sessions.query_vocab,
        sessions.doc_vocab,
        sessions.timestamps,
        name=f"{sessions.name}:{design}",
    )
    rel = None if relevance is None else np.take_along_axis(np.asarray(relevance), perm, axis=1)
    return out, rel, np.stack([a, b], axis=1)


def _solve_on_graph(
    k: int, i: np.ndarray, j: np.ndarray, diff: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """Weighted least squares for x_j - x_i = diff with x_0 = 0; NaN where not connected to 0."""
    connected = np.zeros(k, bool)
    connected[0] = True
    for _ in range(k):
        grow = connected.copy()
        grow[j[connected[i]]] = True
        grow[i[connected[j]]] = True
        if np.array_equal(grow, connected):
            break
        connected = grow
    x = np.full(k, np.nan)
    x[0] = 0.0
    free = np.flatnonzero(connected)[1:]
    keep = connected[i] & connected[j]
    if free.size:
        col = np.full(k, -1)
        col[free] = np.arange(free.size)
        a = np.zeros((int(keep.sum()), free.size))
        rows = np.arange(a.shape[0])
        ii, jj, sw = i[keep], j[keep], np.sqrt(w[keep])
        has_j, has_i = col[jj] >= 0, col[ii] >= 0
        a[rows[has_j], col[jj[has_j]]] += sw[has_j]
        a[rows[has_i], col[ii[has_i]]] -= sw[has_i]
        x[free] = np.linalg.lstsq(a, diff[keep] * sw, rcond=None)[0]
    return x


def swap_propensities(log: ClickLog, pairs: np.ndarray) -> np.ndarray:
    """(K,) theta_k / theta_1 from a randomised log and the (n, 2) pairs of `swap_interventions`."""
    pairs = np.asarray(pairs)
    if pairs.shape != (len(log), 2):
        raise RankloopError(f"pairs must be (n_sessions, 2) = ({len(log)}, 2), got {pairs.shape}")
    k = log.max_rank
    valid = pairs[:, 0] >= 0
    a, b = pairs[valid, 0], pairs[valid, 1]
    rows = np.flatnonzero(valid)
    code = a * k + b
    clicks_a = np.bincount(code, log.clicks[rows, a], k * k)
    clicks_b = np.bincount(code, log.clicks[rows, b], k * k)
    use = (clicks_a > 0) & (clicks_b > 0)
    i, j = np.divmod(np.flatnonzero(use), k)
    ca, cb = clicks_a[use], clicks_b[use]
    return np.exp(_solve_on_graph(k, i, j, np.log(cb / ca), 1.0 / (1.0 / ca + 1.0 / cb)))


def em_propensities(log: ClickLog, **pbm_params: object) -> np.ndarray:
    """(K,) theta_k / theta_1 from a PBM fitted by EM (`pbm_params` go to `PBM`).

    Defaults differ from `PBM`'s: no smoothing of alpha (`alpha_prior=(0, 0)`, the plain MLE)
    and `max_iter=300`. Pseudo-counts pull rarely clicked pairs, mostly seen low in the list,
    towards 0.5 and so bias the low-rank propensities down (see benchmarks/propensity.py).
    """
    params: dict[str, object] = {"alpha_prior": (0.0, 0.0), "max_iter": 300, **pbm_params}
    theta = PBM(**params).fit(log).examination_  # type: ignore[arg-type]
    return theta / theta[0]


def interventional_sets(
    log: ClickLog, min_impressions: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, K) AllPairs statistics: c[k, k'], n[k, k'] (see the module docstring) and |S_kk'|.

    A (query, doc) pair counts at rank k when it was shown there at least `min_impressions` times.
    """
    if min_impressions < 1:
        raise ConfigError(f"min_impressions must be >= 1, got {min_impressions}")
    mask = log.mask
    k = log.max_rank
    q = np.broadcast_to(log.query_ids[:, None], mask.shape)[mask].astype(np.int64)
    key = q * len(log.doc_vocab) + log.doc_ids[mask]
    _, pair = np.unique(key, return_inverse=True)
    n_pairs = int(pair.max()) + 1
    cell = pair * k + np.broadcast_to(np.arange(k), mask.shape)[mask]
    shown = np.bincount(cell, minlength=n_pairs * k).reshape(n_pairs, k)
    clicked = np.bincount(cell, log.clicks[mask], n_pairs * k).reshape(n_pairs, k)
    seen = (shown >= min_impressions).astype(float)
    ctr = np.divide(clicked, shown, out=np.zeros_like(clicked), where=shown > 0) * seen
    off = 1.0 - np.eye(k)
    return (ctr.T @ seen) * off, ((seen - ctr).T @ seen) * off, (seen.T @ seen) * off


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def harvest_propensities(log: ClickLog, min_impressions: int = 1) -> np.ndarray:
    """(K,) theta_k / theta_1 by intervention harvesting, AllPairs (Agarwal et al., WSDM 2019)."""
    c, nc, size = interventional_sets(log, min_impressions)
    k = log.max_rank
    iu, ju = np.triu_indices(k, 1)
    use = size[iu, ju] > 0
    iu, ju = iu[use], ju[use]
    if not iu.size:
        raise RankloopError("intervention harvesting: no (query, doc) pair was shown at two ranks")
    scale = max(float((c + nc).sum()), 1.0)
    ci, ni, cj, nj = c[iu, ju], nc[iu, ju], c[ju, iu], nc[ju, iu]

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        p, r = _sigmoid(params[:k]), _sigmoid(params[k:])
        xi = np.clip(p[iu] * r, 1e-12, 1 - 1e-12)  # rank iu side of set (iu, ju)
        xj = np.clip(p[ju] * r, 1e-12, 1 - 1e-12)
        ll = ci @ np.log(xi) + ni @ np.log1p(-xi) + cj @ np.log(xj) + nj @ np.log1p(-xj)
        gi = (ci / xi - ni / (1 - xi)) * xi  # dLL/dlog x
        gj = (cj / xj - nj / (1 - xj)) * xj
        grad_u = (np.bincount(iu, gi, k) + np.bincount(ju, gj, k)) * (1 - p)
        grad_v = (gi + gj) * (1 - r)
        return -ll / scale, -np.concatenate([grad_u, grad_v]) / scale

    x0 = np.zeros(k + iu.size)
    res = minimize(objective, x0, jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    p = _sigmoid(res.x[:k])
    connected = np.exp(_solve_on_graph(k, iu, ju, np.zeros(iu.size), np.ones(iu.size)))
    return np.where(np.isnan(connected), np.nan, p / p[0])
