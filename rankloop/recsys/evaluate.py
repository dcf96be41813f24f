"""Evaluation of recommenders on a MAR test set: the papers' protocol and the standard measures.

Both protocols rank, for every test user, only that user's own MAR test items (items drawn
uniformly at random, so the ranking is not confounded by exposure). They differ in gains and
normalisation:

- `authors_metrics` is the protocol of Saito et al.'s released code (the one behind the
  published Coat/Yahoo! numbers): DCG@K = Σ_{rank≤K} g / log2(max(rank, 2)) / Σ g, so ranks 1
  and 2 are undiscounted and the normaliser is the user's total gain, not the ideal DCG;
  Recall@K = Σ_{rank≤K} g / Σ g; MAP@K = Σ_{rank≤K, g>0} (Σ_{r≤rank} g_r / rank) / Σ g. Users
  whose test items all have gain 0 score 0 and are kept in the mean.
- `standard_metrics` goes through `rankloop.eval` (trec_eval semantics): nDCG@k, Recall@k and
  MAP@k with rating >= threshold as grade 1; users with no relevant test item are dropped unless
  asked otherwise.

Ties are broken as trec_eval does: score descending, then item descending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from rankloop.data.interactions import Interactions, graded_relevance
from rankloop.errors import RankloopError
from rankloop.recsys.propensity import Propensity, propensity_at

Relevance = Literal["authors", "graded", "binary"]

RELEVANCE_NOTES = {
    "authors": "gain 1 for 5-star test ratings, else 0: what the authors' released code computes "
    "(its graded transform (2^(r-1)-1)/15 is written into an integer array, so only r = 5 survives)",
    "graded": "gain (2^(r-1)-1)/15 (the graded transform the authors' code intends)",
    "binary": "gain 1 for test ratings >= threshold, else 0",
}


class Scorer(Protocol):
    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class UserMetrics:
    """Per-user values (aligned with `users`, user rows) of each measure, their means and the protocol."""

    users: np.ndarray
    values: dict[str, np.ndarray]
    protocol: dict[str, object] = field(default_factory=dict)

    @property
    def mean(self) -> dict[str, float]:
        return {m: float(v.mean()) if len(v) else 0.0 for m, v in self.values.items()}


def mar_gains(
    ratings: np.ndarray, relevance: Relevance = "authors", threshold: float = 4
) -> np.ndarray:
    """Gain of each MAR test rating under a protocol (see `RELEVANCE_NOTES`)."""
    r = np.asarray(ratings, np.float64)
    if relevance == "authors":
        return (r == 5).astype(np.float64)
    if relevance == "graded":
        return graded_relevance(r, eps=0.0).astype(np.float64)
    if relevance == "binary":
        return (r >= threshold).astype(np.float64)
    raise RankloopError(f"relevance must be one of {sorted(RELEVANCE_NOTES)}, got {relevance!r}")


def _ranks(
    users: np.ndarray, items: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sort pairs by user, then score desc, then item desc; return (order, 1-based rank in user)."""
    order = np.lexsort((-items, -scores, users))
    u = users[order]
    first = np.searchsorted(u, u, side="left")
    return order, np.arange(len(u)) - first + 1


def authors_metrics(
    users: np.ndarray,
    items: np.ndarray,
    scores: np.ndarray,
    gains: np.ndarray,
    ks: tuple[int, ...] = (1, 3, 5),
    *,
    drop_users_without_relevant: bool = False,
) -> UserMetrics:
    """DCG@K, Recall@K, MAP@K of the authors' protocol over parallel (user, item, score, gain) arrays.

    Each user's pairs are ranked by score; see the module docstring for the formulas. Vectorised
    over all users at once.
    """
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    scores, gains = np.asarray(scores, np.float64), np.asarray(gains, np.float64)
    if not (users.shape == items.shape == scores.shape == gains.shape):
        raise RankloopError("authors_metrics: users, items, scores and gains must have one shape")
    if np.isnan(scores).any():
        raise RankloopError("authors_metrics: NaN scores")
    order, rank = _ranks(users, items, scores)
    u_sorted, g = users[order], gains[order]
    uniq, inv = np.unique(u_sorted, return_inverse=True)
    n = len(uniq)
    total = np.bincount(inv, g, n)
    safe = np.where(total > 0, total, 1.0)
    cum = np.cumsum(g)
    start = np.searchsorted(u_sorted, u_sorted, side="left")
    cum_in_user = cum - np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
    disc = 1.0 / np.log2(np.maximum(rank, 2))
    values: dict[str, np.ndarray] = {}
    for k in ks:
        top = rank <= k
        values[f"DCG@{k}"] = np.bincount(inv[top], (g * disc)[top], n) / safe
        values[f"Recall@{k}"] = np.bincount(inv[top], g[top], n) / safe
        hit = top & (g > 0)
        values[f"MAP@{k}"] = np.bincount(inv[hit], (cum_in_user / rank)[hit], n) / safe
    keep = total > 0 if drop_users_without_relevant else np.ones(n, bool)
    protocol = {
        "name": "authors",
        "ranking": "each user's own MAR test items",
        "dcg": "sum_{rank<=K} gain/log2(max(rank,2)) / sum(gain)  (ranks 1 and 2 undiscounted)",
        "users_without_relevant": "dropped" if drop_users_without_relevant else "kept, scoring 0",
        "n_users": int(keep.sum()),
    }
    return UserMetrics(uniq[keep], {m: v[keep] for m, v in values.items()}, protocol)


def evaluate_authors(
    model: Scorer,
    test: Interactions,
    *,
    ks: tuple[int, ...] = (1, 3, 5),
    relevance: Relevance = "authors",
    threshold: float = 4,
    items_mask: np.ndarray | None = None,
    gain_mask: np.ndarray | None = None,
    drop_users_without_relevant: bool = False,
) -> UserMetrics:
    """The authors' protocol for a fitted model on explicit MAR `test` ratings.

    `items_mask` (n_items,) bool restricts the test pairs to some items, the per-user ranking
    being over what is left (the authors' rare-item evaluation). `gain_mask` instead keeps the
    full per-user ranking and zeroes the gains of items outside the mask, so the metric asks
    where the relevant masked items land among all of the user's test items.
    """
    if test.kind != "explicit":
        raise RankloopError(
            "the MAR test set must hold explicit ratings (all test items, relevant or not)"
        )
    u, i, r = test.to_triples()
    if items_mask is not None:
        sel = np.asarray(items_mask, bool)[i]
        u, i, r = u[sel], i[sel], r[sel]
    gains = mar_gains(r, relevance, threshold)
    if gain_mask is not None:
        gains = np.where(np.asarray(gain_mask, bool)[i], gains, 0.0)
    res = authors_metrics(
        u,
        i,
        model.score(u, i),
        gains,
        ks,
        drop_users_without_relevant=drop_users_without_relevant,
    )
    note = RELEVANCE_NOTES[relevance].replace("threshold", f"{threshold:g}")
    return UserMetrics(
        res.users, res.values, {**res.protocol, "relevance": relevance, "gain": note}
    )


def standard_metrics(
    model: Scorer,
    test: Interactions,
    *,
    ks: tuple[int, ...] = (1, 3, 5),
    threshold: float = 4,
    keep_users_without_relevant: bool = False,
) -> UserMetrics:
    """nDCG@k, Recall@k, MAP@k from `rankloop.eval` (trec_eval semantics) on each user's MAR items.

    Qrels: user → test item → 1 if rating >= `threshold` else 0 (judged non-relevant). Run: the
    model's scores of the same items. Users with no relevant item are dropped (trec_eval would
    score them 0) unless `keep_users_without_relevant`.
    """
    from rankloop.data.types import Qrels, Run
    from rankloop.eval.metrics import Evaluator

    if test.kind != "explicit":
        raise RankloopError(
            "the MAR test set must hold explicit ratings (all test items, relevant or not)"
        )
    u, i, r = test.to_triples()
    s = model.score(u, i)
    grade = (r >= threshold).astype(int)
    uids, iids = np.asarray(test.user_ids, dtype=object), np.asarray(test.item_ids, dtype=object)
    bounds = np.flatnonzero(np.diff(u)) + 1
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for uu, ii, gg, ss in zip(
        np.split(u, bounds), np.split(i, bounds), np.split(grade, bounds), np.split(s, bounds)
    ):
        if not len(uu) or (not keep_users_without_relevant and gg.sum() == 0):
            continue
        q = uids[uu[0]]
        names = iids[ii].tolist()
        qrels[q] = dict(zip(names, gg.tolist()))
        run[q] = dict(zip(names, ss.astype(float).tolist()))
    measures = [f"{m}_{k}" for k in ks for m in ("ndcg_cut", "recall", "map_cut")]
    res = Evaluator(Qrels(qrels), measures).evaluate(Run(run))
    pos = {q: n for n, q in enumerate(test.user_ids)}
    rename = {f"ndcg_cut_{k}": f"nDCG@{k}" for k in ks} | {f"recall_{k}": f"R@{k}" for k in ks}
    rename |= {f"map_cut_{k}": f"AP@{k}" for k in ks}
    protocol = {
        "name": "standard (rankloop.eval, trec_eval semantics)",
        "ranking": "each user's own MAR test items",
        "relevance": f"rating >= {threshold:g} is grade 1, other test items grade 0",
        "users_without_relevant": "kept, scoring 0" if keep_users_without_relevant else "dropped",
        "n_users": len(res.query_ids),
    }
    return UserMetrics(
        np.array([pos[q] for q in res.query_ids], np.int64),
        {rename[m]: np.asarray(v, np.float64) for m, v in res.values.items()},
        protocol,
    )


def popularity_buckets(item_counts: np.ndarray, n_buckets: int = 4) -> tuple[np.ndarray, list[str]]:
    """Split items into `n_buckets` equal-size groups by training popularity (0 = rarest).

    Returns (bucket per item, a label per bucket giving its count range).
    """
    c = np.asarray(item_counts)
    if n_buckets < 1 or n_buckets > len(c):
        raise RankloopError(f"n_buckets must be in [1, {len(c)}], got {n_buckets}")
    order = np.argsort(c, kind="stable")
    bucket = np.empty(len(c), np.int64)
    bucket[order] = np.arange(len(c)) * n_buckets // len(c)
    labels = [f"{int(c[bucket == b].min())}-{int(c[bucket == b].max())}" for b in range(n_buckets)]
    return bucket, labels


def unbiased_dcg(
    model: Scorer,
    train_clicks: Interactions,
    val_clicks: Interactions,
    propensity: Propensity,
    *,
    k: int = 5,
    n_negatives: int = 100,
    min_propensity: float = 1e-3,
    random_state: int = 0,
) -> float:
    """Self-normalised IPS DCG@k on MNAR validation clicks, for tuning without the MAR test.

    For each validation user, the held-out clicked items are ranked among `n_negatives` items
    drawn from those the user never clicked (train or validation); each held-out click has gain
    1/max(θ, min_propensity), and DCG is normalised by the user's total gain (the authors'
    unbiased evaluator).
    """
    if val_clicks.shape != train_clicks.shape:
        raise RankloopError(
            f"train {train_clicks.shape} and validation {val_clicks.shape} shapes differ"
        )
    vu, vi, _ = val_clicks.to_triples()
    if not len(vu):
        raise RankloopError("the validation split holds no clicks")
    users = np.unique(vu)
    rng = np.random.default_rng(random_state)
    n_items = train_clicks.n_items
    keys = rng.random((len(users), n_items))
    grid_u = np.repeat(users[:, None], n_items, axis=1)
    grid_i = np.broadcast_to(np.arange(n_items), keys.shape)
    clicked = train_clicks.contains(grid_u, grid_i) | val_clicks.contains(grid_u, grid_i)
    keys[clicked] = np.inf
    n_neg = min(n_negatives, n_items)
    neg = np.argsort(keys, axis=1, kind="stable")[:, :n_neg]
    ok = np.take_along_axis(keys, neg, axis=1) < np.inf
    nu = np.repeat(users, n_neg)[ok.ravel()]
    ni = neg.ravel()[ok.ravel()]
    theta = np.maximum(propensity_at(propensity, vu, vi, train_clicks.shape), min_propensity)
    all_u = np.concatenate([vu, nu])
    all_i = np.concatenate([vi, ni])
    gains = np.concatenate([1.0 / theta, np.zeros(len(nu))])
    res = authors_metrics(all_u, all_i, model.score(all_u, all_i), gains, (k,))
    return res.mean[f"DCG@{k}"]
