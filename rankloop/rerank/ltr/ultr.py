"""Unbiased learning to rank from click logs: Naive, IPS, DLA, regression-EM, PairD, two-tower.

Sessions are first aggregated (`aggregate_clicks`) per displayed list (query + ranking): the
number of sessions `N_l`, the clicks per position `C_lk`, and the pair counts `P_lij` = sessions
with a click at position i and none at position j. Every estimator's objective is a sum over
sessions of terms that are linear in the session's clicks, with weights that depend only on the
list and the position, so these counts give exactly the same objective (and gradients) as
iterating over sessions, and training cost does not grow with the log size. What each estimator
trains on:

- `NaiveEstimator`: clicks as relevance labels. loss="listnet": `-sum_k C_lk log softmax(f)_k`;
  "pointwise": sigmoid cross-entropy with `C_lk` positives and `N_l - C_lk` negatives;
  "ranknet": RankNet on clicked-over-unclicked pairs weighted by `P_lij`; "lambdarank": click
  rates `C_lk / N_l` as labels, lists weighted by `N_l` (an approximation: per-session deltas
  of nDCG are not linear in the clicks).
- `IPSEstimator`: the same with each click weighted by `min(1 / theta_k, clip)` (Joachims et al.,
  WSDM 2017; listwise as ULTRA's IPW); for pairs, the clicked document's propensity.
- `DLAEstimator`: dual learning algorithm (Ai et al., SIGIR 2018): a propensity tower (one logit
  per position) learnt jointly with the ranker; the ranker's softmax loss weights clicks by
  `softmax(g)_1 / softmax(g)_k`, the propensity tower's softmax loss by the ranker's
  `softmax(f)_1 / softmax(f)_k` (both treated as constants, optionally clipped); each loss is
  divided by its total weighted click mass in the batch, as in ULTRA.
- `RegressionEMEstimator`: regression EM (Wang et al., WSDM 2018): P(click) = theta_k gamma(x)
  with gamma = sigmoid(f(x)). E-step: expected relevant and examined counts per (list, position)
  (`rem_e_step`); M-step: theta in closed form (`rem_update_theta`) and one epoch of sigmoid
  cross-entropy on the expected relevance counts for f.
- `PairDEstimator`: pairwise debiasing (Hu et al., WWW 2019, "Unbiased LambdaMART"): RankNet on
  clicked-over-unclicked pairs weighted by `P_lij / (t+_i t-_j)`, with the position biases of
  clicks t+ and of non-clicks t- re-estimated after every epoch from the pairwise losses
  (normalised at rank 1, exponent `1 / (1 + regularization)`).
- `TwoTowerEstimator`: additive two-tower model: P(click) = sigmoid(f(x) + b_k), a relevance tower
  f and a position tower b (one logit per position) trained jointly with sigmoid cross-entropy
  on `C_lk` / `N_l - C_lk`; documents are ranked by f alone.

All rank by the relevance model; `predict`/`rerank` come from `ListModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rankloop._runtime import Registry
from rankloop.data.clicklogs import ClickLog
from rankloop.errors import ConfigError, RankloopError
from rankloop.rerank.ltr.features import LtrData
from rankloop.rerank.ltr.losses import (
    LOSSES,
    lambdarank_loss,
    listnet_loss,
    pairwise_logistic,
    pointwise_loss,
    ranknet_loss,
)
from rankloop.rerank.ltr.train import ListModel

# Short names (as configs spell them) -> click estimator classes.
ESTIMATORS: Registry[ClickEstimator] = Registry("ULTR estimator")


@dataclass(frozen=True, eq=False)
class ClickData:
    """Click sessions aggregated per displayed list (see the module docstring).

    features: (L, K, d) float32 of the document shown at each position. mask: (L, K) bool.
    impressions: (L,) sessions per list. clicks: (L, K) click counts. pair_clicks: (L, K, K)
    sessions with a click at i and none at j, or None. qids: (L,) str. doc_ids: (L, K) str
    ("" on padding).
    """

    features: np.ndarray
    mask: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    pair_clicks: np.ndarray | None
    qids: np.ndarray
    doc_ids: np.ndarray

    def __post_init__(self) -> None:
        n, k = self.mask.shape
        ok = (
            self.features.ndim == 3
            and self.features.shape[:2] == (n, k)
            and self.impressions.shape == (n,)
            and self.clicks.shape == (n, k)
            and self.qids.shape == (n,)
            and self.doc_ids.shape == (n, k)
            and (self.pair_clicks is None or self.pair_clicks.shape == (n, k, k))
        )
        if not ok:
            raise RankloopError("ClickData: array shapes do not agree")

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    @property
    def n_sessions(self) -> int:
        return int(self.impressions.sum())

    @property
    def max_rank(self) -> int:
        return int(self.mask.shape[1])


def _list_ids(log: ClickLog) -> np.ndarray:
    """(n,) id of each session's displayed list (query + ranking), 0..L-1 in first-seen order."""
    q = log.query_ids
    _, first, q_inv = np.unique(q, return_index=True, return_inverse=True)
    if np.array_equal(log.doc_ids, log.doc_ids[first[q_inv]]):  # one ranking per query
        keys = q_inv
    else:
        rows = np.column_stack([q, log.doc_ids])
        _, keys = np.unique(rows, axis=0, return_inverse=True)
        keys = keys.ravel()
    _, first_seen, inv = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first_seen), np.int64)
    rank[np.argsort(first_seen, kind="stable")] = np.arange(len(first_seen))
    return rank[inv.ravel()]


def aggregate_clicks(log: ClickLog, features: LtrData, *, pairs: bool = True) -> ClickData:
    """Aggregate `log` per displayed list and attach each shown document's feature row.

    Every shown (query, doc) must have a row in `features` (matched by query id and doc id).
    `pairs=False` skips the (L, K, K) pair counts (only RankNet/PairD losses need them).
    """
    if len(log) == 0:
        raise RankloopError("aggregate_clicks: the click log has no sessions")
    k = log.max_rank
    lid = _list_ids(log)
    n_lists = int(lid.max()) + 1
    first = np.zeros(n_lists, np.int64)
    first[lid[::-1]] = np.arange(len(lid))[::-1]
    mask = log.mask[first]
    docs = np.where(mask, log.doc_vocab[np.maximum(log.doc_ids[first], 0)], "")
    qids = log.query_vocab[log.query_ids[first]]
    impressions = np.bincount(lid, minlength=n_lists).astype(np.float64)
    cell = (lid[:, None] * k + np.arange(k)[None, :]).ravel()
    clicks = np.bincount(cell, log.clicks.ravel(), n_lists * k).reshape(n_lists, k)
    pair_clicks = None
    if pairs:
        pair_clicks = np.zeros((n_lists, k, k))
        busy = np.flatnonzero(log.clicks.any(axis=1))
        c, lb = log.clicks[busy], lid[busy]
        for i in range(k):
            for j in range(k):
                if i != j:
                    pair_clicks[:, i, j] = np.bincount(lb, c[:, i] & ~c[:, j], n_lists)
    rows = features.row_index(np.broadcast_to(qids[:, None], mask.shape)[mask], docs[mask])
    if np.any(rows < 0):
        bad = int(np.flatnonzero(rows < 0)[0])
        q = np.broadcast_to(qids[:, None], mask.shape)[mask][bad]
        raise RankloopError(
            f"aggregate_clicks: no feature row for query {q!r}, doc {docs[mask][bad]!r}"
        )
    x = np.zeros((n_lists, k, features.n_features), np.float32)
    x[mask] = features.features[rows]
    return ClickData(x, mask, impressions, clicks, pair_clicks, qids.astype(str), docs)


def ips_weights(propensities: np.ndarray, clip: float | None = None) -> np.ndarray:
    """(K,) inverse propensity weights `min(1 / theta_k, clip)` (theta relative to rank 1)."""
    theta = np.asarray(propensities, dtype=np.float64)
    if theta.ndim != 1 or not np.all(np.isfinite(theta)) or np.any(theta <= 0):
        raise ConfigError(f"propensities must be positive and finite, got {theta.tolist()}")
    if clip is not None and clip <= 0:
        raise ConfigError(f"clip must be > 0, got {clip}")
    w = 1.0 / theta
    return w if clip is None else np.minimum(w, clip)


def rem_e_step(
    clicks: np.ndarray, impressions: np.ndarray, theta: np.ndarray, gamma: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Regression-EM E-step on counts: expected (relevant, examined) sessions per (list, pos).

    clicks (L, K), impressions (L,), theta (K,) examination, gamma (L, K) relevance. A click means
    examined and relevant; a non-click is relevant-but-unexamined with probability
    `(1 - theta) gamma / (1 - theta gamma)` and examined-but-irrelevant with
    `theta (1 - gamma) / (1 - theta gamma)`.
    """
    no_click = impressions[:, None] - clicks
    denom = np.maximum(1.0 - theta[None, :] * gamma, 1e-12)
    relevant = clicks + no_click * (1.0 - theta[None, :]) * gamma / denom
    examined = clicks + no_click * theta[None, :] * (1.0 - gamma) / denom
    return relevant, examined


def rem_update_theta(examined: np.ndarray, impressions: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Regression-EM M-step for theta: expected examined sessions / sessions, per position."""
    shown = (impressions[:, None] * mask).sum(axis=0)
    exam = (examined * mask).sum(axis=0)
    return np.clip(exam / np.maximum(shown, 1e-12), 1e-6, 1.0 - 1e-6)


def _evaluate(scorer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Scores without gradients in eval mode (no dropout), restoring the training mode after."""
    was = scorer.training
    scorer.eval()
    with torch.no_grad():
        out = scorer(x)
    scorer.train(was)
    return out


class ClickEstimator(ListModel):
    """Shared set-up of the click estimators: data on the device, loss normalisation."""

    def _prepare(self, data: ClickData) -> dict[str, torch.Tensor]:
        if not isinstance(data, ClickData):
            raise RankloopError(f"expected ClickData, got {type(data).__name__}")
        if len(data) == 0 or data.n_sessions == 0:
            raise RankloopError("no click sessions to train on")
        self._init_scorer(data.features.shape[2], data.features[data.mask])
        t = {
            "x": self._tensor(data.features),
            "mask": self._tensor(data.mask, torch.bool),
            "n": self._tensor(data.impressions),
            "c": self._tensor(data.clicks),
        }
        if data.pair_clicks is not None:
            t["p"] = self._tensor(data.pair_clicks)
        return t

    @staticmethod
    def _need_pairs(t: dict[str, torch.Tensor], who: str) -> torch.Tensor:
        if "p" not in t:
            raise RankloopError(f"{who} needs pair counts: aggregate_clicks(..., pairs=True)")
        return t["p"]


def _click_loss(
    loss: str,
    s: torch.Tensor,
    t: dict[str, torch.Tensor],
    idx: torch.Tensor,
    w: torch.Tensor,
    who: str,
) -> torch.Tensor:
    """Sum over lists `idx` of the (propensity-weighted, `w` (K,)) click loss."""
    m, n, c = t["mask"][idx], t["n"][idx], t["c"][idx]
    if loss == "listnet":
        return listnet_loss(s, c * w, m).sum()
    if loss == "pointwise":
        return pointwise_loss(s, c * w / n[:, None], m, kind="bce", weights=n[:, None]).sum()
    if loss == "ranknet":
        p = ClickEstimator._need_pairs(t, who)[idx]
        return ranknet_loss(s, c, m, pair_weights=p * w[None, :, None]).sum()
    return (lambdarank_loss(s, c * w / n[:, None], m) * n).sum()


@ESTIMATORS.register("naive")
class NaiveEstimator(ClickEstimator):
    """Clicks as relevance labels (no debiasing). See the module docstring for `loss`."""

    def __init__(self, loss: str = "listnet", **params: Any) -> None:
        super().__init__(**params)
        self.loss = loss

    def _weights(self, k: int) -> np.ndarray:
        return np.ones(k)

    def fit(self, data: ClickData) -> NaiveEstimator:
        """Train on the aggregated clicks; returns self."""
        LOSSES.get(self.loss)  # an unknown name is a ConfigError naming the valid ones
        t = self._prepare(data)
        w = self._tensor(self._weights(data.max_rank))
        scorer, who = self.scorer_, type(self).__name__

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            s = scorer(t["x"][idx])
            return _click_loss(self.loss, s, t, idx, w, who) / t["n"][idx].sum()

        self._train(list(scorer.parameters()), batch_loss, len(data))
        return self


@ESTIMATORS.register("ips")
class IPSEstimator(NaiveEstimator):
    """Inverse propensity scoring: clicks at position k weighted by `min(1 / theta_k, clip)`.

    `propensities` (K,) are examination probabilities relative to rank 1 (true, or estimated,
    e.g. by `rankloop.clicks.swap_propensities`).
    """

    def __init__(
        self,
        propensities: np.ndarray,
        clip: float | None = None,
        loss: str = "listnet",
        **params: Any,
    ) -> None:
        super().__init__(loss=loss, **params)
        self.propensities = propensities
        self.clip = clip

    def _weights(self, k: int) -> np.ndarray:
        w = ips_weights(self.propensities, self.clip)
        if len(w) < k:
            raise ConfigError(f"{len(w)} propensities for lists of {k} positions")
        self.weights_ = w[:k]
        return self.weights_


def _softmax_ratio(logits: torch.Tensor, mask: torch.Tensor, clip: float | None) -> torch.Tensor:
    """(B, K) `softmax_1 / softmax_k` over each list's real positions (constant, clipped).

    Computed as `exp(z_1 - z_k)` with the exponent capped at 30, so it stays finite.
    """
    with torch.no_grad():
        z = logits.masked_fill(~mask, 0.0)
        w = torch.exp((z[:, :1] - z).clamp(max=30.0)) * mask
        return w if clip is None else w.clamp(max=clip)


def _normalised_listnet(s: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Listwise softmax loss divided by the total (weighted) label mass, as ULTRA's DLA does."""
    return listnet_loss(s, labels, mask).sum() / labels.sum().clamp(min=1e-12)


@ESTIMATORS.register("dla")
class DLAEstimator(ClickEstimator):
    """Dual learning algorithm: a propensity tower learnt jointly with the ranker (listwise)."""

    def __init__(self, clip: float | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.clip = clip

    def fit(self, data: ClickData) -> DLAEstimator:
        """Train ranker and propensity tower on the aggregated clicks; returns self."""
        t = self._prepare(data)
        scorer = self.scorer_
        g = torch.nn.Parameter(torch.zeros(data.max_rank, device=self.device_))

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            m, c = t["mask"][idx], t["c"][idx]
            s = scorer(t["x"][idx])
            gl = g.expand_as(s)
            rank_loss = _normalised_listnet(s, c * _softmax_ratio(gl, m, self.clip), m)
            exam_loss = _normalised_listnet(gl, c * _softmax_ratio(s, m, self.clip), m)
            return rank_loss + exam_loss

        self._train([*scorer.parameters(), g], batch_loss, len(data))
        logits = g.detach().cpu().numpy().astype(np.float64)
        self.propensities_ = np.exp(logits - logits[0])
        return self


@ESTIMATORS.register("rem")
class RegressionEMEstimator(ClickEstimator):
    """Regression EM: examination theta per position and relevance sigmoid(f(x)), by EM."""

    def __init__(self, theta_init: float = 0.5, **params: Any) -> None:
        super().__init__(**params)
        self.theta_init = theta_init

    def fit(self, data: ClickData) -> RegressionEMEstimator:
        """Alternate E-steps, closed-form theta and one epoch of regression on f; returns self."""
        if not 0.0 < self.theta_init < 1.0:
            raise ConfigError(f"theta_init must be in (0, 1), got {self.theta_init}")
        t = self._prepare(data)
        scorer = self.scorer_
        self.theta_ = np.full(data.max_rank, float(self.theta_init))
        target = {"rel": t["c"]}

        def e_step(_epoch: int = -1) -> None:
            gamma = torch.sigmoid(_evaluate(scorer, t["x"])).cpu().numpy().astype(np.float64)
            rel, exam = rem_e_step(data.clicks, data.impressions, self.theta_, gamma)
            self.theta_ = rem_update_theta(exam, data.impressions, data.mask)
            target["rel"] = self._tensor(rel)

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            s = scorer(t["x"][idx])
            n = t["n"][idx][:, None]
            per = pointwise_loss(s, target["rel"][idx] / n, t["mask"][idx], kind="bce", weights=n)
            return per.sum() / t["n"][idx].sum()

        e_step()
        self._train(list(scorer.parameters()), batch_loss, len(data), on_epoch=e_step)
        self.propensities_ = self.theta_ / self.theta_[0]
        return self


@ESTIMATORS.register("pairdebias")
class PairDEstimator(ClickEstimator):
    """Pairwise debiasing: RankNet on click pairs over estimated click / non-click biases."""

    def __init__(self, regularization: float = 0.0, **params: Any) -> None:
        super().__init__(**params)
        self.regularization = regularization

    def fit(self, data: ClickData) -> PairDEstimator:
        """Train with pairs weighted by `1 / (t+_i t-_j)`, updating t+ and t- per epoch."""
        if self.regularization < 0:
            raise ConfigError(f"regularization must be >= 0, got {self.regularization}")
        t = self._prepare(data)
        p = self._need_pairs(t, "PairDEstimator")
        scorer = self.scorer_
        k = data.max_rank
        bias = {
            "plus": torch.ones(k, device=self.device_),
            "minus": torch.ones(k, device=self.device_),
        }

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            s = scorer(t["x"][idx])
            w = p[idx] / (bias["plus"][None, :, None] * bias["minus"][None, None, :])
            return (pairwise_logistic(s, 1.0) * w).sum() / t["n"][idx].sum()

        def update(_epoch: int) -> None:
            with torch.no_grad():
                pair_loss = (pairwise_logistic(_evaluate(scorer, t["x"]), 1.0) * p).sum(dim=0)
                plus = (pair_loss / bias["minus"][None, :]).sum(dim=1)
                minus = (pair_loss / bias["plus"][:, None]).sum(dim=0)
                power = 1.0 / (1.0 + self.regularization)
                if plus[0] > 0 and minus[0] > 0:
                    bias["plus"] = (plus / plus[0]).clamp(min=1e-6) ** power
                    bias["minus"] = (minus / minus[0]).clamp(min=1e-6) ** power

        self._train(list(scorer.parameters()), batch_loss, len(data), on_epoch=update)
        self.propensities_ = bias["plus"].cpu().numpy().astype(np.float64)
        self.nonclick_bias_ = bias["minus"].cpu().numpy().astype(np.float64)
        return self


@ESTIMATORS.register("two_tower")
class TwoTowerEstimator(ClickEstimator):
    """Additive two-tower model: click logit = relevance tower f(x) + position tower b_k."""

    def fit(self, data: ClickData) -> TwoTowerEstimator:
        """Train both towers with sigmoid cross-entropy on the click counts; returns self."""
        t = self._prepare(data)
        scorer = self.scorer_
        b = torch.nn.Parameter(torch.zeros(data.max_rank, device=self.device_))

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            s = scorer(t["x"][idx]) + b[None, :]
            n = t["n"][idx][:, None]
            per = pointwise_loss(s, t["c"][idx] / n, t["mask"][idx], kind="bce", weights=n)
            return per.sum() / t["n"][idx].sum()

        self._train([*scorer.parameters(), b], batch_loss, len(data))
        self.position_logits_ = b.detach().cpu().numpy().astype(np.float64)
        return self


def make_estimator(name: str, **params: Any) -> ClickEstimator:
    """A click estimator by short name (naive, ips, dla, rem, pairdebias, two_tower); an unknown
    name or parameter is a `ConfigError` naming the valid ones."""
    return ESTIMATORS.create(name, params)
