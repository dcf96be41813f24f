"""Click models: PBM, Cascade (CM), DCM, UBM, DBN and SDBN.

Every model can `simulate` clicks (from graded relevance with ULTRA's parameterisation, or from
its fitted parameters) and `fit` a `ClickLog` (EM for PBM, UBM and DBN; closed-form MLE for CM,
DCM and SDBN), then score a held-out log with `log_likelihood` and `perplexity` as in Chuklin,
Markov and de Rijke, "Click Models for Web Search" (2015).

Conventions
- Query-document parameters (attractiveness `alpha`, DBN satisfaction `sigma`) are keyed by the
  (query id, doc id) strings, so a model fitted on one log scores another. Fits smooth them with
  Beta pseudo-counts `(a, b)`: `(successes + a) / (trials + a + b)`, default `(1, 1)` (Laplace).
  A pair never seen in training gets the prior mean `a / (a + b)` (0.5 with `(0, 0)`, as PyClick).
- Rank parameters (PBM/UBM examination, DCM continuation, DBN gamma) are global.
- EM starts every parameter at 0.5 and stops after `max_iter` iterations or when the mean
  log-likelihood per shown position changes by less than `tol` (relative).
- Probabilities are clipped to `[PROB_EPS, 1 - PROB_EPS]` before taking logs. The cascade model
  gives a second click probability 0; on logs with several clicks per session its
  log-likelihood is therefore dominated by `log(PROB_EPS)` terms, as the model deserves.
- `simulate` uses the fitted rank parameters once a model is fitted, otherwise those given to
  `__init__` (e.g. `PBM(eta=1)`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from rankloop._runtime import Registry, check_random_state
from rankloop.clicks.probabilities import (
    attractiveness_from_grades,
    pbm_examination,
    satisfaction_from_grades,
    ubm_examination,
)
from rankloop.data.clicklogs import ClickLog
from rankloop.errors import ConfigError, RankloopError

PROB_EPS = 1e-6

# Short names (as configs and the CLI spell them) -> click model classes.
MODELS: Registry[ClickModel] = Registry("click model")


class Perplexity(NamedTuple):
    """Click perplexity: `per_rank[r] = 2 ** -mean_s log2 P(C_r = c_sr)`; overall = mean over ranks."""

    overall: float
    per_rank: np.ndarray


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(p, PROB_EPS, 1.0 - PROB_EPS)


def _prior_mean(prior: tuple[float, float]) -> float:
    a, b = prior
    return a / (a + b) if a + b > 0 else 0.5


def _check_prior(prior: tuple[float, float], what: str) -> tuple[float, float]:
    a, b = (float(x) for x in prior)
    if a < 0 or b < 0:
        raise ConfigError(f"{what} pseudo-counts must be >= 0, got {prior}")
    return a, b


def _smoothed(successes: np.ndarray, trials: np.ndarray, prior: tuple[float, float]) -> np.ndarray:
    a, b = prior
    out = np.full(len(trials), _prior_mean(prior))
    ok = trials + a + b > 0
    out[ok] = (successes[ok] + a) / (trials[ok] + a + b)
    return _clip(out)


class _PairIndex:
    """(query id, doc id) pairs seen in a training log -> parameter slots 0..n-1; else slot n."""

    def __init__(self, log: ClickLog) -> None:
        self.queries, q_inv = np.unique(log.query_vocab, return_inverse=True)
        self.docs, d_inv = np.unique(log.doc_vocab, return_inverse=True)
        mask = log.mask
        q = np.broadcast_to(q_inv[log.query_ids][:, None], mask.shape)[mask]
        self.keys = np.unique(q.astype(np.int64) * len(self.docs) + d_inv[log.doc_ids[mask]])

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, log: ClickLog) -> np.ndarray:
        """(n, K) slot per shown position; `len(self)` for unseen pairs and padding."""

        def codes(sorted_vocab: np.ndarray, vocab: np.ndarray) -> np.ndarray:
            pos = np.searchsorted(sorted_vocab, vocab).clip(0, max(len(sorted_vocab) - 1, 0))
            found = sorted_vocab[pos] == vocab if len(sorted_vocab) else np.zeros(len(vocab), bool)
            return np.where(found, pos, -1)

        qmap, dmap = codes(self.queries, log.query_vocab), codes(self.docs, log.doc_vocab)
        q = qmap[log.query_ids][:, None]
        d = np.where(log.mask, dmap[np.maximum(log.doc_ids, 0)], -1)
        valid = log.mask & (q >= 0) & (d >= 0)
        key = q.astype(np.int64) * len(self.docs) + d
        pos = np.searchsorted(self.keys, key).clip(0, len(self.keys) - 1)
        found = valid & (self.keys[pos] == key)
        return np.where(found, pos, len(self.keys))

    def pair_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(query ids, doc ids) of the slots, as strings."""
        nd = len(self.docs)
        return self.queries[self.keys // nd], self.docs[self.keys % nd]


def _prev_click_rank(clicks: np.ndarray) -> np.ndarray:
    """(n, K): 1-based rank of the last click above each position, 0 if none."""
    k = clicks.shape[1]
    ranks = np.where(clicks, np.arange(1, k + 1), 0)
    prev = np.zeros_like(ranks)
    if k > 1:
        prev[:, 1:] = np.maximum.accumulate(ranks, axis=1)[:, :-1]
    return prev


def _positions(mask: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.arange(mask.shape[1]), mask.shape)


class ClickModel(ABC):
    """Shared API: fit / predict_click_probs / log_likelihood / perplexity / simulate."""

    def __init__(
        self,
        *,
        eps: float = 0.1,
        max_grade: int = 4,
        alpha_prior: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        self.eps = eps
        self.max_grade = max_grade
        self.alpha_prior = alpha_prior

    # --- what subclasses provide ------------------------------------------------------------
    @abstractmethod
    def fit(self, log: ClickLog) -> ClickModel:
        """Learn the parameters from `log`; returns self."""

    @abstractmethod
    def _rank_params(self, k: int) -> dict[str, np.ndarray]:
        """Rank-level parameters for lists of length k (fitted if fitted, else configured)."""

    @abstractmethod
    def _probs(
        self, qd: dict[str, np.ndarray], rank: dict, clicks: np.ndarray, conditional: bool
    ) -> np.ndarray:
        """(n, K) click probabilities, conditional on earlier clicks or marginal."""

    @abstractmethod
    def _sample(
        self, qd: dict[str, np.ndarray], rank: dict, rng: np.random.Generator
    ) -> np.ndarray:
        """(n, K) bool clicks; qd arrays are 0 at padded positions."""

    def _qd_from_grades(self, grades: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        attr = attractiveness_from_grades(np.where(mask, grades, 0), self.eps, self.max_grade)
        return {"attr": np.where(mask, attr, 0.0)}

    def _qd_fitted(self, log: ClickLog) -> dict[str, np.ndarray]:
        slot = self.pairs_.lookup(log)
        table = np.append(self.attractiveness_, _prior_mean(self.alpha_prior))
        return {"attr": np.where(log.mask, table[slot], 0.0)}

    # --- public API ----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "pairs_"):
            raise RankloopError(f"{type(self).__name__} is not fitted; call fit(log) first")

    def _check_log(self, log: ClickLog) -> None:
        if not isinstance(log, ClickLog):
            raise RankloopError(f"expected a ClickLog, got {type(log).__name__}")
        if len(log) == 0:
            raise RankloopError("the click log has no sessions")

    def predict_click_probs(self, log: ClickLog, conditional: bool = False) -> np.ndarray:
        """(n, K) P(C_r = 1): marginal, or given the session's observed clicks above r."""
        self._check_fitted()
        self._check_log(log)
        probs = self._probs(
            self._qd_fitted(log), self._rank_params(log.max_rank), log.clicks, conditional
        )
        return np.where(log.mask, probs, 0.0)

    def _observed_probs(self, log: ClickLog, conditional: bool) -> np.ndarray:
        p = _clip(self.predict_click_probs(log, conditional))
        return np.where(log.clicks, p, 1.0 - p)

    def session_log_likelihood(self, log: ClickLog) -> np.ndarray:
        """(n,) natural-log likelihood of each session's clicks (chain of conditional probs)."""
        return np.where(log.mask, np.log(self._observed_probs(log, True)), 0.0).sum(axis=1)

    def log_likelihood(self, log: ClickLog) -> float:
        """Mean log-likelihood per session (natural log), as PyClick reports it."""
        return float(self.session_log_likelihood(log).mean())

    def perplexity(self, log: ClickLog, conditional: bool = False) -> Perplexity:
        """Perplexity per rank and overall; `conditional=True` uses P(C_r | clicks above r)."""
        logp = np.where(log.mask, np.log2(self._observed_probs(log, conditional)), 0.0)
        shown = log.mask.sum(axis=0)
        per_rank = np.full(log.max_rank, np.nan)
        ok = shown > 0
        per_rank[ok] = np.exp2(-logp.sum(axis=0)[ok] / shown[ok])
        return Perplexity(float(np.mean(per_rank[ok])), per_rank)

    def simulate(
        self,
        rankings: ClickLog | np.ndarray | None,
        relevance: np.ndarray | None,
        random_state: np.random.Generator | int,
    ) -> np.ndarray:
        """(n, K) bool clicks for result lists.

        rankings: a ClickLog, an (n, K) int array of doc codes (-1 = no document), or None (every
                  position of `relevance` is shown).
        relevance: (n, K) integer grades in [0, max_grade] -> attractiveness via
                  `eps + (1-eps)(2^g-1)/(2^gmax-1)` (and DBN satisfaction `(2^g-1)/(2^gmax-1)`).
                  None: use the fitted (query, doc) parameters; `rankings` must be a ClickLog.
        random_state: an int seed or a numpy Generator (see `rankloop._runtime.check_random_state`).
        """
        rng = check_random_state(random_state)
        if relevance is None:
            if not isinstance(rankings, ClickLog):
                raise RankloopError(
                    "simulate without relevance needs a ClickLog to look parameters up"
                )
            self._check_fitted()
            qd, mask = self._qd_fitted(rankings), rankings.mask
        else:
            relevance = np.asarray(relevance)
            if relevance.ndim != 2:
                raise RankloopError(f"relevance must be (n, K), got shape {relevance.shape}")
            if rankings is None:
                mask = np.ones(relevance.shape, bool)
            else:
                mask = (
                    rankings.mask if isinstance(rankings, ClickLog) else np.asarray(rankings) >= 0
                )
            if mask.shape != relevance.shape:
                raise RankloopError(
                    f"rankings {mask.shape} and relevance {relevance.shape} differ in shape"
                )
            qd = self._qd_from_grades(relevance, mask)
        clicks = self._sample(qd, self._rank_params(mask.shape[1]), rng)
        return clicks & mask

    def click_probs(self, attractiveness: np.ndarray) -> np.ndarray:
        """(n, K) marginal click probabilities for lists with these per-position attractiveness
        values (0 = no document); for callers whose relevance is continuous, e.g. bandit worlds."""
        attr = np.asarray(attractiveness, dtype=np.float64)
        qd = {"attr": attr}
        return self._probs(qd, self._rank_params(attr.shape[1]), np.zeros(attr.shape, bool), False)

    def simulate_attractiveness(
        self, attractiveness: np.ndarray, random_state: np.random.Generator | int
    ) -> np.ndarray:
        """(n, K) bool clicks for lists with these per-position attractiveness values."""
        attr = np.asarray(attractiveness, dtype=np.float64)
        rng = check_random_state(random_state)
        return self._sample({"attr": attr}, self._rank_params(attr.shape[1]), rng)

    def _fit_index(self, log: ClickLog) -> tuple[np.ndarray, np.ndarray]:
        """Build `pairs_`; return the flat slot and 0-based rank of every shown position."""
        self._check_log(log)
        self.alpha_prior = _check_prior(self.alpha_prior, "alpha_prior")
        self.pairs_ = _PairIndex(log)
        mask = log.mask
        return self.pairs_.lookup(log)[mask], _positions(mask)[mask]

    def summary(self) -> dict[str, object]:
        """Fitted parameters in brief: pair count, attractiveness spread, rank parameters."""
        self._check_fitted()
        a = self.attractiveness_
        out: dict[str, object] = {
            "model": type(self).__name__,
            "pairs": len(a),
            "attractiveness": {
                "mean": round(float(a.mean()), 4),
                "median": round(float(np.median(a)), 4),
                "min": round(float(a.min()), 4),
                "max": round(float(a.max()), 4),
            },
        }
        out.update(
            {k: np.round(v, 4).tolist() for k, v in self._rank_params(self.max_rank_).items()}
        )
        return out


# --- position models ------------------------------------------------------------------------
def _em_position_model(
    slot: np.ndarray,
    pos: np.ndarray,
    clicks: np.ndarray,
    n_pairs: int,
    n_pos: int,
    prior: tuple[float, float],
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """EM for P(C=1) = theta[pos] * alpha[slot] over flat shown positions (PBM, and UBM with
    pos = (rank, previous click) codes). Returns alpha, theta and the iteration count.
    """
    alpha = np.full(n_pairs, 0.5)
    theta = np.full(n_pos, 0.5)
    n_pos_seen = np.bincount(pos, minlength=n_pos)
    n_pair_seen = np.bincount(slot, minlength=n_pairs)
    prev_ll = -np.inf
    it = 0
    while it < max_iter:
        it += 1
        a, t = alpha[slot], theta[pos]
        no_click = 1.0 - a * t
        post_attr = np.where(clicks, 1.0, a * (1.0 - t) / no_click)
        post_exam = np.where(clicks, 1.0, t * (1.0 - a) / no_click)
        alpha = _smoothed(np.bincount(slot, post_attr, n_pairs), n_pair_seen, prior)
        seen = n_pos_seen > 0
        theta = theta.copy()
        theta[seen] = _clip(np.bincount(pos, post_exam, n_pos)[seen] / n_pos_seen[seen])
        p = alpha[slot] * theta[pos]
        ll = float(np.mean(np.where(clicks, np.log(p), np.log1p(-p))))
        if abs(ll - prev_ll) <= tol * abs(ll):
            break
        prev_ll = ll
    return alpha, theta, it


class _PositionModel(ClickModel):
    """PBM and UBM: examination (fitted by EM, given, or from `eta`) times attractiveness."""

    def __init__(
        self,
        eta: float = 1.0,
        examination: np.ndarray | None = None,
        *,
        eps: float = 0.1,
        max_grade: int = 4,
        alpha_prior: tuple[float, float] = (1.0, 1.0),
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> None:
        super().__init__(eps=eps, max_grade=max_grade, alpha_prior=alpha_prior)
        self.eta = eta
        self.examination = examination
        self.max_iter = max_iter
        self.tol = tol

    def _examination_table(
        self, k: int, from_eta: Callable[[int, float], np.ndarray]
    ) -> np.ndarray:
        """The fitted table, else the given `examination`, else `from_eta(k, eta)`."""
        if hasattr(self, "examination_"):
            return self.examination_
        if self.examination is not None:
            return np.asarray(self.examination, dtype=float)
        return from_eta(k, self.eta)


@MODELS.register("pbm")
class PBM(_PositionModel):
    """Position-based model: P(C_r = 1) = theta_r * alpha_qd.

    Simulation: theta_r = `examination[r]` if given, else `(1/r) ** eta` (ULTRA's PBM).
    Fitted: `examination_` (K,), `attractiveness_` (pairs,), `pairs_`, `n_iter_`.
    """

    def fit(self, log: ClickLog) -> PBM:
        slot, pos = self._fit_index(log)
        self.max_rank_ = log.max_rank
        self.attractiveness_, self.examination_, self.n_iter_ = _em_position_model(
            slot,
            pos,
            log.clicks[log.mask],
            len(self.pairs_),
            log.max_rank,
            self.alpha_prior,
            self.max_iter,
            self.tol,
        )
        return self

    def _rank_params(self, k: int) -> dict[str, np.ndarray]:
        theta = self._examination_table(k, pbm_examination)
        if len(theta) < k:
            raise RankloopError(
                f"PBM has examination probabilities for {len(theta)} ranks, lists have {k}"
            )
        return {"examination": theta[:k]}

    def _probs(self, qd: dict, rank: dict, clicks: np.ndarray, conditional: bool) -> np.ndarray:
        return rank["examination"][None, :] * qd["attr"]

    def _sample(self, qd: dict, rank: dict, rng: np.random.Generator) -> np.ndarray:
        return rng.random(qd["attr"].shape) < rank["examination"][None, :] * qd["attr"]


@MODELS.register("ubm")
class UBM(_PositionModel):
    """User browsing model: P(C_r = 1 | last click above at r') = gamma[r, r'] * alpha_qd.

    `gamma` is (K, K): row = rank (0-based), column = 1-based rank of the previous click (0 =
    none). Simulation: `examination` if given, else `(1/(r - r')) ** eta`.
    Fitted: `examination_` (K, K), `attractiveness_`, `pairs_`, `n_iter_`.
    """

    def fit(self, log: ClickLog) -> UBM:
        slot, pos = self._fit_index(log)
        k = log.max_rank
        self.max_rank_ = k
        prev = _prev_click_rank(log.clicks)[log.mask]
        self.attractiveness_, theta, self.n_iter_ = _em_position_model(
            slot,
            pos * k + prev,
            log.clicks[log.mask],
            len(self.pairs_),
            k * k,
            self.alpha_prior,
            self.max_iter,
            self.tol,
        )
        used = np.arange(k)[None, :] <= np.arange(k)[:, None]
        self.examination_ = np.where(used, theta.reshape(k, k), 0.0)
        return self

    def _rank_params(self, k: int) -> dict[str, np.ndarray]:
        gamma = self._examination_table(k, ubm_examination)
        if gamma.ndim != 2 or min(gamma.shape) < k:
            raise RankloopError(f"UBM examination has shape {gamma.shape}, lists need ({k}, {k})")
        return {"examination": gamma[:k, :k]}

    def _probs(self, qd: dict, rank: dict, clicks: np.ndarray, conditional: bool) -> np.ndarray:
        gamma, attr = rank["examination"], qd["attr"]
        n, k = attr.shape
        if conditional:
            return gamma[np.arange(k)[None, :], _prev_click_rank(clicks)] * attr
        last = np.zeros((n, k))  # P(last click above the current rank is at 1-based rank j)
        last[:, 0] = 1.0
        out = np.zeros((n, k))
        for r in range(k):
            joint = last[:, : r + 1] * gamma[r, : r + 1] * attr[:, r : r + 1]
            out[:, r] = joint.sum(axis=1)
            last[:, : r + 1] -= joint
            if r + 1 < k:
                last[:, r + 1] = out[:, r]
        return out

    def _sample(self, qd: dict, rank: dict, rng: np.random.Generator) -> np.ndarray:
        gamma, attr = rank["examination"], qd["attr"]
        n, k = attr.shape
        u = rng.random((n, k))
        clicks = np.zeros((n, k), bool)
        prev = np.zeros(n, np.int64)
        for r in range(k):
            clicks[:, r] = u[:, r] < gamma[r, prev] * attr[:, r]
            prev = np.where(clicks[:, r], r + 1, prev)
        return clicks


# --- cascade family -------------------------------------------------------------------------
def _cascade_conditional(
    attr: np.ndarray, c_click: np.ndarray, c_skip: np.ndarray, clicks: np.ndarray
) -> np.ndarray:
    """P(C_r = 1 | C_<r) by forward filtering of P(E_r = 1 | C_<r)."""
    n, k = attr.shape
    out = np.zeros((n, k))
    e = np.ones(n)
    for r in range(k):
        p = e * attr[:, r]
        out[:, r] = p
        examined_no_click = e * (1.0 - attr[:, r]) / np.maximum(1.0 - p, PROB_EPS)
        e = np.where(clicks[:, r], c_click[:, r], examined_no_click * c_skip[:, r])
    return out


def _cascade_marginal(attr: np.ndarray, c_click: np.ndarray, c_skip: np.ndarray) -> np.ndarray:
    """P(C_r = 1) = P(E_r = 1) * alpha_r with P(E_r+1) = P(E_r)(alpha c_click + (1-alpha) c_skip)."""
    n, k = attr.shape
    out = np.zeros((n, k))
    u = np.ones(n)
    for r in range(k):
        out[:, r] = u * attr[:, r]
        u = u * (attr[:, r] * c_click[:, r] + (1.0 - attr[:, r]) * c_skip[:, r])
    return out


def _cascade_sample(
    attr: np.ndarray, c_click: np.ndarray, c_skip: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    n, k = attr.shape
    u_click, u_cont = rng.random((n, k)), rng.random((n, k))
    clicks = np.zeros((n, k), bool)
    examining = np.ones(n, bool)
    for r in range(k):
        clicks[:, r] = examining & (u_click[:, r] < attr[:, r])
        go_on = np.where(clicks[:, r], u_cont[:, r] < c_click[:, r], u_cont[:, r] < c_skip[:, r])
        examining &= go_on
    return clicks


def _first_last_click(log: ClickLog) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n,) 0-based rank of the first and last click (list length - 1 if none) and has-click."""
    c = log.clicks
    any_click = c.any(axis=1)
    first = np.where(any_click, c.argmax(axis=1), log.lengths - 1)
    last = np.where(any_click, c.shape[1] - 1 - c[:, ::-1].argmax(axis=1), log.lengths - 1)
    return first, last, any_click


class _Cascade(ClickModel):
    """Cascade family: scan top-down; continue with `c_click` after a click, `c_skip` after none."""

    @abstractmethod
    def _continuation(self, qd: dict, rank: dict) -> tuple[np.ndarray, np.ndarray]:
        """(n, K) continuation probabilities after a click and after a skip."""

    def _probs(self, qd: dict, rank: dict, clicks: np.ndarray, conditional: bool) -> np.ndarray:
        c_click, c_skip = self._continuation(qd, rank)
        if conditional:
            return _cascade_conditional(qd["attr"], c_click, c_skip, clicks)
        return _cascade_marginal(qd["attr"], c_click, c_skip)

    def _sample(self, qd: dict, rank: dict, rng: np.random.Generator) -> np.ndarray:
        c_click, c_skip = self._continuation(qd, rank)
        return _cascade_sample(qd["attr"], c_click, c_skip, rng)

    def _examined_until(self, log: ClickLog, last: np.ndarray) -> np.ndarray:
        return log.mask & (np.arange(log.max_rank)[None, :] <= last[:, None])


@MODELS.register("cm")
class CascadeModel(_Cascade):
    """Cascade model (Craswell et al. 2008): the user stops at the first click.

    MLE: alpha_qd = clicks / examinations, counting positions down to the first click (all of
    the list if none); later clicks are ignored in fitting. Fitted: `attractiveness_`, `pairs_`.
    """

    def fit(self, log: ClickLog) -> CascadeModel:
        self._fit_index(log)
        self.max_rank_ = log.max_rank
        first, _, _ = _first_last_click(log)
        exam = self._examined_until(log, first)
        slot = self.pairs_.lookup(log)[exam]
        is_first = (np.arange(log.max_rank)[None, :] == first[:, None]) & log.clicks
        n = len(self.pairs_)
        self.attractiveness_ = _smoothed(
            np.bincount(slot, is_first[exam], n), np.bincount(slot, minlength=n), self.alpha_prior
        )
        return self

    def _rank_params(self, k: int) -> dict[str, np.ndarray]:
        return {}

    def _continuation(self, qd: dict, rank: dict) -> tuple[np.ndarray, np.ndarray]:
        shape = qd["attr"].shape
        return np.zeros(shape), np.ones(shape)


class _LastClick(NamedTuple):
    """Where each session's last click is, for the DCM/SDBN fits."""

    slots: np.ndarray  # (n, K) parameter slot per position
    last: np.ndarray  # (n,) 0-based rank of the last click (list length - 1 if none)
    any_click: np.ndarray  # (n,) bool
    upto: np.ndarray  # (n, K) shown at or above the last click: examined for sure
    below: np.ndarray  # (n, K) shown below the last click: examined iff the user went on


def _last_click(model: ClickModel, log: ClickLog) -> _LastClick:
    _, last, any_click = _first_last_click(log)
    pos = np.arange(log.max_rank)[None, :]
    upto = log.mask & (pos <= last[:, None])
    return _LastClick(model.pairs_.lookup(log), last, any_click, upto, log.mask & ~upto)


def _went_on(attr: np.ndarray, c_last: np.ndarray, lc: _LastClick) -> np.ndarray:
    """(n,) P(the user went on after the last click | clicks): c * prod(1 - alpha below) / P(no
    click below), where the user stops after the last click w.p. 1 - c."""
    rest = np.prod(np.where(lc.below, 1.0 - attr, 1.0), axis=1)
    went = c_last * rest
    return np.where(lc.any_click, went / np.maximum(1.0 - c_last + went, 1e-300), 0.0)


def _alpha_given_went_on(
    lc: _LastClick, clicks: np.ndarray, went_on: np.ndarray, n: int, prior: tuple[float, float]
) -> np.ndarray:
    """alpha = clicks / expected examinations (sure above the last click, went_on below it)."""
    weight = np.where(lc.upto, 1.0, np.where(lc.below, went_on[:, None], 0.0))
    shown = lc.upto | lc.below
    trials = np.bincount(lc.slots[shown], weight[shown], n)
    return _smoothed(np.bincount(lc.slots[clicks], minlength=n), trials, prior)


def _check_method(method: str) -> None:
    if method not in ("counting", "em"):
        raise ConfigError(f"method must be 'counting' or 'em', got {method!r}")


@MODELS.register("dcm")
class DCM(_Cascade):
    """Dependent click model (Guo et al. 2009): after a click at rank r continue w.p. lambda_r.

    method="counting" (default; Guo et al.'s closed form, as in the click-model literature):
    alpha_qd = clicks / impressions down to the last click (the whole list if none),
    lambda_r = 1 - (#sessions whose last click is at r) / (#clicks at r); it assumes the user
    stopped at the last click. method="em": the exact MLE by EM, which also weighs the chance
    that the user went on after the last click and found nothing (started from the counts).
    Simulation: `continuation` (float or (K,)). Fitted: `continuation_` (K,), `attractiveness_`,
    `pairs_`, `n_iter_` (0 for counting). lambda at the last rank is not identified by either.
    """

    def __init__(
        self,
        continuation: float | np.ndarray = 0.5,
        *,
        method: str = "counting",
        eps: float = 0.1,
        max_grade: int = 4,
        alpha_prior: tuple[float, float] = (1.0, 1.0),
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> None:
        super().__init__(eps=eps, max_grade=max_grade, alpha_prior=alpha_prior)
        self.continuation = continuation
        self.method = method
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, log: ClickLog) -> DCM:
        _check_method(self.method)
        self._fit_index(log)
        k = self.max_rank_ = log.max_rank
        n = len(self.pairs_)
        lc = _last_click(self, log)
        clicks_at = log.clicks.sum(axis=0)
        ok = clicks_at > 0
        not_last_at = clicks_at - np.bincount(lc.last[lc.any_click], minlength=k)
        lam = np.broadcast_to(np.asarray(self.continuation, dtype=float), (k,)).copy()
        went_on = np.zeros(len(log))
        it = 0
        while True:
            alpha = _alpha_given_went_on(lc, log.clicks, went_on, n, self.alpha_prior)
            went_at = np.bincount(lc.last[lc.any_click], went_on[lc.any_click], k)
            new_lam = lam.copy()
            new_lam[ok] = _clip((not_last_at[ok] + went_at[ok]) / clicks_at[ok])
            change = np.abs(new_lam - lam).max() if it else np.inf
            lam = new_lam
            if self.method == "counting" or it >= self.max_iter or change < self.tol:
                break
            it += 1
            attr = np.append(alpha, 0.0)[lc.slots]
            went_on = _went_on(attr, lam[lc.last], lc)
        self.attractiveness_, self.continuation_, self.n_iter_ = alpha, lam, it
        return self

    def _rank_params(self, k: int) -> dict[str, np.ndarray]:
        if hasattr(self, "continuation_"):
            lam = self.continuation_
        else:
            lam = np.asarray(self.continuation, dtype=float)
            lam = np.full(k, float(lam)) if lam.ndim == 0 else lam
        if len(lam) < k:
            raise RankloopError(
                f"DCM has continuation probabilities for {len(lam)} ranks, lists have {k}"
            )
        return {"continuation": lam[:k]}

    def _continuation(self, qd: dict, rank: dict) -> tuple[np.ndarray, np.ndarray]:
        shape = qd["attr"].shape
        return np.broadcast_to(rank["continuation"][None, :], shape), np.ones(shape)


class _SatisfactionModel(_Cascade):
    """DBN-style models with a per-pair satisfaction probability sigma_qd after a click."""

    def __init__(
        self,
        *,
        eps: float = 0.1,
        max_grade: int = 4,
        alpha_prior: tuple[float, float] = (1.0, 1.0),
        sigma_prior: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        super().__init__(eps=eps, max_grade=max_grade, alpha_prior=alpha_prior)
        self.sigma_prior = sigma_prior

    def _qd_from_grades(self, grades: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        out = super()._qd_from_grades(grades, mask)
        out["sat"] = np.where(
            mask, satisfaction_from_grades(np.where(mask, grades, 0), self.max_grade), 0.0
        )
        return out

    def _qd_fitted(self, log: ClickLog) -> dict[str, np.ndarray]:
        out = super()._qd_fitted(log)
        slot = self.pairs_.lookup(log)
        table = np.append(self.satisfaction_, _prior_mean(self.sigma_prior))
        out["sat"] = np.where(log.mask, table[slot], 0.0)
        return out

    def summary(self) -> dict[str, object]:
        out = super().summary()
        s = self.satisfaction_
        out["satisfaction"] = {
            "mean": round(float(s.mean()), 4),
            "median": round(float(np.median(s)), 4),
        }
        return out


@MODELS.register("sdbn")
class SDBN(_SatisfactionModel):
    """Simplified DBN (Chapelle & Zhang 2009): DBN with gamma = 1.

    method="counting" (default; the paper's estimator): alpha_qd = clicks / impressions down to
    the last click (whole list if none); sigma_qd = (#times qd was the last click) / (#clicks on
    qd). method="em": exact MLE by EM, allowing an unsatisfied last click (started from the
    counts). Fitted: `attractiveness_`, `satisfaction_`, `pairs_`, `n_iter_` (0 for counting).
    """

    def __init__(
        self,
        *,
        method: str = "counting",
        eps: float = 0.1,
        max_grade: int = 4,
        alpha_prior: tuple[float, float] = (1.0, 1.0),
        sigma_prior: tuple[float, float] = (1.0, 1.0),
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> None:
        super().__init__(
            eps=eps, max_grade=max_grade, alpha_prior=alpha_prior, sigma_prior=sigma_prior
        )
        self.method = method
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, log: ClickLog) -> SDBN:
        _check_method(self.method)
        self._fit_index(log)
        self.sigma_prior = _check_prior(self.sigma_prior, "sigma_prior")
        self.max_rank_ = log.max_rank
        n = len(self.pairs_)
        lc = _last_click(self, log)
        rows = np.flatnonzero(lc.any_click)
        last_slot = lc.slots[rows, lc.last[rows]]
        clicked = np.bincount(lc.slots[log.clicks], minlength=n)
        went_on = np.zeros(len(log))
        sigma = np.full(n, _prior_mean(self.sigma_prior))
        it = 0
        while True:
            alpha = _alpha_given_went_on(lc, log.clicks, went_on, n, self.alpha_prior)
            new_sigma = _smoothed(
                np.bincount(last_slot, 1.0 - went_on[rows], n), clicked, self.sigma_prior
            )
            change = np.abs(new_sigma - sigma).max() if it else np.inf
            sigma = new_sigma
            if self.method == "counting" or it >= self.max_iter or change < self.tol:
                break
            it += 1
            attr = np.append(alpha, 0.0)[lc.slots]
            c_last = np.zeros(len(log))
            c_last[rows] = 1.0 - sigma[last_slot]
            went_on = _went_on(attr, c_last, lc)
        self.attractiveness_, self.satisfaction_, self.n_iter_ = alpha, sigma, it
        return self

    def _rank_params(self, k: int) -> dict[str, np.ndarray]:
        return {}

    def _continuation(self, qd: dict, rank: dict) -> tuple[np.ndarray, np.ndarray]:
        return 1.0 - qd["sat"], np.ones(qd["attr"].shape)


@MODELS.register("dbn")
class DBN(_SatisfactionModel):
    """Dynamic Bayesian network (Chapelle & Zhang 2009), fitted by EM (forward-backward over ranks).

    E_1 = 1; C_r = E_r * A_r with A_r ~ alpha_qd; after a click the user is satisfied w.p.
    sigma_qd and stops; otherwise continues w.p. gamma. Simulation uses `gamma` and grade-based
    alpha/sigma. Fitted: `attractiveness_`, `satisfaction_`, `gamma_`, `pairs_`, `n_iter_`.
    """

    def __init__(
        self,
        gamma: float = 0.9,
        *,
        eps: float = 0.1,
        max_grade: int = 4,
        alpha_prior: tuple[float, float] = (1.0, 1.0),
        sigma_prior: tuple[float, float] = (1.0, 1.0),
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> None:
        super().__init__(
            eps=eps, max_grade=max_grade, alpha_prior=alpha_prior, sigma_prior=sigma_prior
        )
        self.gamma = gamma
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, log: ClickLog) -> DBN:
        self._fit_index(log)
        self.sigma_prior = _check_prior(self.sigma_prior, "sigma_prior")
        self.max_rank_ = k = log.max_rank
        mask, c = log.mask, log.clicks
        slots = self.pairs_.lookup(log)
        n_pairs = len(self.pairs_)
        pad = slots == n_pairs
        alpha, sigma, gamma = np.full(n_pairs + 1, 0.5), np.full(n_pairs + 1, 0.5), 0.5
        shown = np.bincount(slots[mask], minlength=n_pairs)
        clicked = np.bincount(slots[c], minlength=n_pairs)
        has_next = np.zeros_like(mask)
        has_next[:, :-1] = mask[:, 1:]
        prev_ll = -np.inf
        it = 0
        while it < self.max_iter:
            it += 1
            a = np.where(pad, 0.0, alpha[slots])
            s = np.where(pad, 0.0, sigma[slots])
            emit1 = np.where(c, a, 1.0 - a)  # P(C_r | E_r = 1)
            emit0 = (~c).astype(float)  # P(C_r | E_r = 0)
            t1 = np.where(c, gamma * (1.0 - s), gamma)  # P(E_r+1 = 1 | E_r = 1, C_r)
            f1, f0 = np.zeros((len(log), k)), np.zeros((len(log), k))
            f1[:, 0] = 1.0
            for r in range(k - 1):
                f1[:, r + 1] = f1[:, r] * emit1[:, r] * t1[:, r]
                f0[:, r + 1] = f0[:, r] * emit0[:, r] + f1[:, r] * emit1[:, r] * (1.0 - t1[:, r])
            b1, b0 = np.ones((len(log), k + 1)), np.ones((len(log), k + 1))
            for r in range(k - 1, -1, -1):
                b0[:, r] = emit0[:, r] * b0[:, r + 1]
                b1[:, r] = emit1[:, r] * (t1[:, r] * b1[:, r + 1] + (1.0 - t1[:, r]) * b0[:, r + 1])
            z = np.maximum(b1[:, 0], 1e-300)[:, None]
            ll = float(np.log(z).mean())
            # E-step: posteriors of attraction (non-clicks), satisfaction (clicks), continuation.
            p_unexamined = f0 * b0[:, :k] / z
            post_attr = np.where(c, 1.0, p_unexamined * a)
            post_sat = np.where(c, f1 * a * s * b0[:, 1:] / z, 0.0)
            not_sat = np.where(c, 1.0 - s, 1.0)
            common = f1 * emit1 * not_sat / z
            go_on = common * gamma * b1[:, 1:]
            stay_or_go = common * (gamma * b1[:, 1:] + (1.0 - gamma) * b0[:, 1:])
            # M-step.
            alpha[:n_pairs] = _smoothed(
                np.bincount(slots[mask], post_attr[mask], n_pairs), shown, self.alpha_prior
            )
            sigma[:n_pairs] = _smoothed(
                np.bincount(slots[c], post_sat[c], n_pairs), clicked, self.sigma_prior
            )
            denom = stay_or_go[has_next].sum()
            if denom > 0:
                gamma = float(_clip(go_on[has_next].sum() / denom))
            if abs(ll - prev_ll) <= self.tol * abs(ll):
                break
            prev_ll = ll
        self.attractiveness_, self.satisfaction_, self.gamma_ = (
            alpha[:n_pairs],
            sigma[:n_pairs],
            gamma,
        )
        self.n_iter_ = it
        return self

    def _rank_params(self, k: int) -> dict[str, np.ndarray]:
        return {"gamma": np.asarray(getattr(self, "gamma_", self.gamma), dtype=float)}

    def _continuation(self, qd: dict, rank: dict) -> tuple[np.ndarray, np.ndarray]:
        g = float(rank["gamma"])
        return g * (1.0 - qd["sat"]), np.full(qd["attr"].shape, g)


def make_model(name: str, **params: object) -> ClickModel:
    """A click model by short name (pbm, cm, dcm, ubm, dbn, sdbn) with its hyper-parameters;
    an unknown name or parameter is a `ConfigError` naming the valid ones."""
    return MODELS.create(name.lower(), params)
