"""Few-shot re-ranking from known relevant documents (kNN relevance feedback).

For a query whose relevant documents are already known, judged (`fit(queries, qrels)`) or
clicked (`fit_clicks(log)`), each of the incoming top `depth` candidates is scored by the `agg`
("max" or "mean") of its cosine similarities to the known documents, on the stored vectors of
the context's dense index, and that score is interpolated with the normalised incoming score:

    score = (1 - weight) * norm(first-stage score) + weight * knn score

as in the few-shot document re-ranking of Baumgartner et al. (2022), "Incorporating Relevance
Feedback for Information-Seeking Retrieval using Few-Shot Document Re-Ranking". Queries with no
known document keep their incoming ranking. `exclude_known=True` drops the known documents from
the output (residual ranking), so feedback is not simply copied to the top.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

from rankloop.data.clicklogs import ClickLog
from rankloop.data.types import Qrels, Queries, Run
from rankloop.embed.index import VectorIndex
from rankloop.errors import ConfigError, RankloopError
from rankloop.pipeline import STAGES, Stage
from rankloop.retrieval.context import Context
from rankloop.retrieval.stages import check_positive

__all__ = ["KNNFeedback", "clicked_docs", "knn_scores"]

AGGS = ("max", "mean")
NORMS = ("minmax", "zscore")
_CHUNK_FLOATS = 1 << 24  # candidate vectors gathered per block of queries (64 MiB of float32)


def clicked_docs(log: ClickLog, *, min_clicks: int = 1) -> dict[str, list[str]]:
    """Query id -> documents clicked at least `min_clicks` times in `log` (most clicked first,
    then by doc id)."""
    check_positive("clicked_docs", min_clicks=min_clicks)
    s, r = np.nonzero(log.clicks)
    if s.size == 0:
        return {}
    q = log.query_ids[s].astype(np.int64)
    d = log.doc_ids[s, r].astype(np.int64)
    pairs, counts = np.unique(np.stack([q, d], axis=1), axis=0, return_counts=True)
    out: dict[str, list[tuple[int, str]]] = {}
    for (qc, dc), c in zip(pairs.tolist(), counts.tolist()):
        if c >= min_clicks:
            out.setdefault(str(log.query_vocab[qc]), []).append((-c, str(log.doc_vocab[dc])))
    return {qid: [doc for _, doc in sorted(docs)] for qid, docs in out.items()}


def knn_scores(candidates: np.ndarray, known: np.ndarray, agg: str = "max") -> np.ndarray:
    """(b, L) aggregate cosine similarity of candidate vectors (b, L, d) to known vectors
    (b, m, d); rows of zeros in `known` are padding and ignored (a row of only padding: 0)."""
    if agg not in AGGS:
        raise ConfigError(f"knn_feedback: agg must be one of {', '.join(AGGS)}, got {agg!r}")
    c = candidates / np.maximum(np.linalg.norm(candidates, axis=2, keepdims=True), 1e-12)
    kn = np.linalg.norm(known, axis=2)  # (b, m)
    valid = kn > 0
    k = known / np.maximum(kn, 1e-12)[:, :, None]
    sims = np.matmul(c, k.transpose(0, 2, 1))  # (b, L, m)
    count = valid.sum(axis=1)[:, None]  # (b, 1)
    if agg == "max":
        best = np.where(valid[:, None, :], sims, -np.inf).max(axis=2, initial=-np.inf)
        return np.where(count > 0, best, 0.0)
    total = np.where(valid[:, None, :], sims, 0.0).sum(axis=2)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def _normalise(scores: np.ndarray, mask: np.ndarray, norm: str | None) -> np.ndarray:
    """Per-row min-max or z-score of `scores` over the `mask`ed entries (a constant row: 0)."""
    if norm is None:
        return np.where(mask, scores, 0.0)
    x = np.where(mask, scores, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        if norm == "minmax":
            lo, hi = np.nanmin(x, axis=1, keepdims=True), np.nanmax(x, axis=1, keepdims=True)
            out = (x - lo) / (hi - lo)
        else:
            mu, sd = np.nanmean(x, axis=1, keepdims=True), np.nanstd(x, axis=1, keepdims=True)
            out = (x - mu) / sd
    return np.where(mask & np.isfinite(out), out, 0.0)


@STAGES.register("knn_feedback")
class KNNFeedback(Stage):
    """Re-rank the incoming top `depth` by similarity to the query's known relevant documents
    (see the module docstring): `weight` of the kNN score against the `norm`alised incoming
    score, `agg` over the known documents, `exclude_known` drops them, output cut to `k`.
    Known documents come from `fit` (judged), `fit_clicks` (clicked) or `set_feedback`; they
    do not depend on the hyper-parameters, so `set_params` keeps them."""

    ALIAS = "knn_feedback"
    NEEDS_INPUT = True
    _feedback: dict[str, list[str]] | None = None  # set by fit / fit_clicks / set_feedback

    def __init__(self, ctx: Context, weight: float = 0.5, agg: Literal["max", "mean"] = "max",
                 norm: Literal["minmax", "zscore"] | None = "minmax", depth: int = 100,
                 exclude_known: bool = False, k: int = 1000) -> None:  # fmt: skip
        check_positive("knn_feedback", depth=depth, k=k)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            raise ConfigError(f"knn_feedback: weight must lie in [0, 1], got {weight!r}")
        if agg not in AGGS:
            raise ConfigError(f"knn_feedback: agg must be one of {', '.join(AGGS)}, got {agg!r}")
        if norm is not None and norm not in NORMS:
            raise ConfigError(f"knn_feedback: norm must be None or one of {', '.join(NORMS)}, "
                              f"got {norm!r}")  # fmt: skip
        if not isinstance(exclude_known, bool):
            raise ConfigError(f"knn_feedback: exclude_known must be a bool, got {exclude_known!r}")
        self.ctx, self.weight, self.agg, self.norm = ctx, float(weight), agg, norm
        self.depth, self.exclude_known, self.k = depth, exclude_known, k

    # -- feedback -------------------------------------------------------------------------------
    def memo_key(self) -> str | None:
        return None  # the known documents change with fit / fit_clicks / set_feedback

    def set_feedback(self, known: Mapping[str, Iterable[str]]) -> KNNFeedback:
        """Use `known` (query id -> relevant doc ids) as the feedback; replaces any earlier."""
        self._feedback = {str(q): list(dict.fromkeys(map(str, docs))) for q, docs in known.items()}
        return self

    def fit(self, queries: Queries, qrels: Qrels, run: Run | None = None) -> KNNFeedback:
        """Judged feedback: the docs `qrels` grades >= 1 for each of `queries`."""
        return self.set_feedback({q: sorted(qrels.relevant(q)) for q in queries.ids if q in qrels})

    def fit_clicks(self, log: ClickLog, *, min_clicks: int = 1) -> KNNFeedback:
        """Click feedback: the docs clicked at least `min_clicks` times for each query of `log`."""
        return self.set_feedback(clicked_docs(log, min_clicks=min_clicks))

    @property
    def feedback(self) -> dict[str, list[str]] | None:
        """Query id -> known relevant doc ids (None before any fit)."""
        return None if self._feedback is None else {q: list(d) for q, d in self._feedback.items()}

    # -- re-ranking -----------------------------------------------------------------------------
    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        if run is None:
            raise RankloopError(f"{self.ALIAS} re-ranks a run: write `first >> {self}`")
        if self._feedback is None:
            raise RankloopError(f"{self.ALIAS} needs known relevant documents: call "
                                "fit(queries, qrels), fit_clicks(log) or set_feedback first")  # fmt: skip
        index = self.ctx.index
        known = self._known_rows(index, run.query_ids)
        out: dict[str, dict[str, float]] = {}
        fed: list[str] = []
        lists: dict[str, list[tuple[str, float]]] = {}
        for q in run.query_ids:
            ranked = run.ranked(q)
            if self.exclude_known and q in self._feedback:
                drop = set(self._feedback[q])
                ranked = [(d, s) for d, s in ranked if d not in drop]
            if q in known and ranked:
                fed.append(q)
                lists[q] = ranked
            else:
                out[q] = dict(ranked[: self.k])
        if fed:
            out.update(self._rerank(index, fed, lists, known))
        return Run(out, self.name).top_k(self.k)

    def _known_rows(self, index: VectorIndex, query_ids: list[str]) -> dict[str, np.ndarray]:
        """Index rows of each query's known docs that the index holds (queries with none: absent)."""
        feedback = self._feedback or {}
        wanted = {q: feedback[q] for q in query_ids if feedback.get(q)}
        flat = [d for docs in wanted.values() for d in docs]
        try:
            rows = index.rows(flat)
        except RankloopError:  # some known docs are not in the index: keep those that are
            have = set(index.ids)
            wanted = {q: [d for d in docs if d in have] for q, docs in wanted.items()}
            flat = [d for docs in wanted.values() for d in docs]
            rows = index.rows(flat)
        out, at = {}, 0
        for q, docs in wanted.items():
            if docs:
                out[q] = rows[at : at + len(docs)]
            at += len(docs)
        return out

    def _rerank(self, index: VectorIndex, qids: list[str], lists: dict[str, list[tuple[str, float]]],
                known: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:  # fmt: skip
        heads = [lists[q][: self.depth] for q in qids]
        lens = np.array([len(h) for h in heads])
        width, m = int(lens.max()), max(len(known[q]) for q in qids)
        mask = np.arange(width)[None, :] < lens[:, None]
        ids = [d for h in heads for d, _ in h]
        try:
            flat_rows = index.rows(ids)
        except RankloopError as e:
            raise RankloopError(f"{self.ALIAS}: a doc of the incoming run is not in the dense "
                                f"index: {e}") from None  # fmt: skip
        cand = np.zeros((len(qids), width), np.int64)
        cand[mask] = flat_rows
        first = np.zeros((len(qids), width))
        first[mask] = np.fromiter((s for h in heads for _, s in h), float, len(ids))
        kmask = np.arange(m)[None, :] < np.array([len(known[q]) for q in qids])[:, None]
        krows = np.zeros((len(qids), m), np.int64)
        krows[kmask] = np.concatenate([known[q] for q in qids])
        knn = np.zeros((len(qids), width))
        step = max(1, _CHUNK_FLOATS // max(1, (width + m) * index.dim))
        for s in range(0, len(qids), step):
            c = index.vectors_at(cand[s : s + step].ravel()).reshape(-1, width, index.dim)
            kv = index.vectors_at(krows[s : s + step].ravel()).reshape(-1, m, index.dim)
            kv[~kmask[s : s + step]] = 0.0  # padding: ignored by knn_scores
            knn[s : s + step] = knn_scores(c, kv, self.agg)
        score = (1.0 - self.weight) * _normalise(first, mask, self.norm) + self.weight * knn
        out: dict[str, dict[str, float]] = {}
        for i, q in enumerate(qids):
            head = dict(zip((d for d, _ in heads[i]), score[i, : lens[i]].tolist()))
            low = min(head.values())
            rest = lists[q][self.depth : self.k]
            out[q] = {**head, **{d: low - 1.0 - j for j, (d, _) in enumerate(rest)}}
        return out
