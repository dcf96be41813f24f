"""ColBERT-PRF: pseudo-relevance feedback for multi-vector (late-interaction) retrieval.

After a first pass, the token embeddings of the top `fb_docs` documents are clustered with
KMeans (k = `n_clusters`). Each centroid is labelled with the most frequent vocabulary id among
its `k_nearest` nearest document tokens in the index (ties: the label seen nearest first), and
scored by that token's IDF, log((N + 1) / (df + 1)). The `fb_embs` centroids with the highest
IDF are appended to the query's token embeddings with weight β·idf (query tokens weigh 1), and
documents are scored by weighted MaxSim, either by a new ANN retrieval (`mode="ranker"`) or by
re-scoring the first-pass candidates (`mode="reranker"`).

Centroids are the raw cluster means (not re-normalised), as in the ColBERT-PRF paper's
faiss KMeans.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import faiss
import numpy as np

from rankloop.data.types import Queries, Run
from rankloop.embed.encoders import TokenEmbeddings
from rankloop.embed.multivector import MultiVectorIndex
from rankloop.errors import ConfigError, RankloopError
from rankloop.retrieval.base import check_k, split_empty
from rankloop.retrieval.multivector import MultiVectorRetriever

__all__ = [
    "ColBERTPRF",
    "Expansion",
    "append_expansion",
    "centroid_labels",
    "idf",
    "kmeans_centroids",
    "select_expansion",
]

Mode = Literal["ranker", "reranker"]


def kmeans_centroids(vectors: np.ndarray, n_clusters: int, *, random_state: int = 0) -> np.ndarray:
    """(min(n_clusters, n), d) float32 KMeans centroids of `vectors` (n, d) (faiss, seeded).

    With no more points than clusters every point is its own centroid.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise RankloopError(f"kmeans_centroids: vectors must be (n, d), got {x.shape}")
    if n_clusters < 1:
        raise ConfigError(f"n_clusters must be >= 1, got {n_clusters}")
    if x.shape[0] <= n_clusters:
        return x.copy()
    km = faiss.Kmeans(
        x.shape[1], n_clusters, niter=20, seed=random_state, min_points_per_centroid=1, verbose=False
    )
    # One feedback set is a few hundred points: OpenMP threads only add overhead (60x slower
    # on a busy 2-core machine), so train single-threaded and restore the setting after.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        km.train(x)
    finally:
        faiss.omp_set_num_threads(threads)
    return np.asarray(km.centroids, dtype=np.float32).copy()


def centroid_labels(neighbour_ids: np.ndarray) -> np.ndarray:
    """Most frequent id per row of (c, k) `neighbour_ids` (-1 = no neighbour, never chosen).

    Ties go to the id that appears first in the row (the nearest). Rows with no neighbour get -1.
    """
    ids = np.asarray(neighbour_ids, dtype=np.int64)
    if ids.ndim != 2:
        raise RankloopError(f"centroid_labels: expected (c, k) ids, got {ids.shape}")
    if ids.shape[1] == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    valid = ids >= 0
    counts = ((ids[:, :, None] == ids[:, None, :]) & valid[:, None, :]).sum(axis=2)
    best = np.argmax(np.where(valid, counts, 0), axis=1)  # argmax keeps the first (nearest) tie
    label = ids[np.arange(len(ids)), best]
    return np.where(valid.any(axis=1), label, -1)


def idf(df: np.ndarray, n_docs: int) -> np.ndarray:
    """ColBERT-PRF's token IDF: log((N + 1) / (df + 1)), float32."""
    return np.log((n_docs + 1) / (np.asarray(df, dtype=np.float64) + 1)).astype(np.float32)


def select_expansion(scores: np.ndarray, fb_embs: int) -> np.ndarray:
    """Positions of the `fb_embs` highest `scores` (IDF), best first; ties keep cluster order."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return order[:fb_embs]


@dataclass(frozen=True)
class Expansion:
    """Expansion embeddings of `n` queries, packed like `TokenEmbeddings`, with their weights.

    `tokens.token_ids` are the centroid labels, `idf` their IDF, `weights` = β·idf.
    """

    tokens: TokenEmbeddings
    idf: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


def append_expansion(
    queries: TokenEmbeddings, expansion: Expansion
) -> tuple[TokenEmbeddings, np.ndarray]:
    """Each query's tokens followed by its expansion embeddings, and per-row weights.

    Query tokens weigh 1, expansion rows their `expansion.weights`. Vectorised: one stable
    sort of all rows by (query, source).
    """
    if len(queries) != len(expansion):
        raise RankloopError(f"{len(queries)} queries but expansion embeddings for {len(expansion)}")
    exp = expansion.tokens
    if exp.vectors.shape[0] and exp.dim != queries.dim:
        raise RankloopError(
            f"expansion embeddings are {exp.dim}-d but query tokens are {queries.dim}-d"
        )
    n = len(queries)
    q_owner = np.repeat(np.arange(n, dtype=np.int64), queries.lengths)
    e_owner = np.repeat(np.arange(n, dtype=np.int64), exp.lengths)
    order = np.argsort(np.concatenate([2 * q_owner, 2 * e_owner + 1]), kind="stable")
    vectors = np.concatenate([queries.vectors, exp.vectors.reshape(-1, queries.dim)])[order]
    ids = np.concatenate([queries.token_ids, exp.token_ids])[order]
    weights = np.concatenate(
        [np.ones(queries.vectors.shape[0], np.float32), expansion.weights.astype(np.float32)]
    )[order]
    return TokenEmbeddings(vectors, ids, queries.offsets + exp.offsets), weights


@dataclass
class ColBERTPRF:
    """ColBERT-PRF over a `MultiVectorIndex` (see the module docstring for the algorithm).

    `k_nearest` document tokens label each centroid; `candidates_per_token` drives the ranker's
    ANN candidate generation; `search_params` (e.g. `nprobe`) go to the token index's search.
    """

    fb_docs: int = 3
    n_clusters: int = 24
    fb_embs: int = 10
    beta: float = 1.0
    k_nearest: int = 10
    mode: Mode = "ranker"
    candidates_per_token: int = 100
    random_state: int = 0
    search_params: dict[str, Any] = field(default_factory=dict)
    timings_: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("fb_docs", "n_clusters", "fb_embs", "k_nearest", "candidates_per_token"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"ColBERTPRF: {name} must be a positive int, got {value!r}")
        if not np.isfinite(self.beta) or self.beta < 0:
            raise ConfigError(f"ColBERTPRF: beta must be finite and >= 0, got {self.beta!r}")
        if self.mode not in ("ranker", "reranker"):
            raise ConfigError(f"ColBERTPRF: mode must be 'ranker' or 'reranker', got {self.mode!r}")

    @property
    def name(self) -> str:
        return f"colbert-prf-{self.mode}(fb_docs={self.fb_docs},fb_embs={self.fb_embs},beta={self.beta:g})"

    # -- expansion ---------------------------------------------------------------------------
    def expand(self, index: MultiVectorIndex, feedback: Sequence[Sequence[str]]) -> Expansion:
        """Expansion embeddings per query from its feedback doc ids (first `fb_docs` used).

        KMeans runs per query; the nearest-token search for all centroids is one batched call.
        A query with no feedback (or feedback docs without tokens) gets no expansion.
        """
        if index.n_docs == 0:
            raise RankloopError("ColBERTPRF: the index is empty")
        cents: list[np.ndarray] = []
        for docs in feedback:
            if isinstance(docs, str):
                raise RankloopError("ColBERTPRF: feedback must be a list of doc-id lists per query")
            parts = [index.doc_tokens(d)[0] for d in list(docs)[: self.fb_docs]]
            toks = np.concatenate(parts) if parts else np.zeros((0, index.dim), np.float32)
            cents.append(
                kmeans_centroids(toks, self.n_clusters, random_state=self.random_state)
                if len(toks)
                else toks
            )
        counts = np.array([len(c) for c in cents], dtype=np.int64)
        owner = np.repeat(np.arange(len(cents)), counts)
        allc = np.concatenate(cents) if cents else np.zeros((0, index.dim), np.float32)
        if len(allc):
            _, nn_ids, _ = index.nearest_tokens(allc, self.k_nearest, **self.search_params)
            labels = centroid_labels(nn_ids)
        else:
            labels = np.zeros(0, np.int64)
        scores = idf(index.df(np.maximum(labels, 0)), index.n_docs)
        scores = np.where(labels >= 0, scores, -np.inf)
        # Top fb_embs per query, vectorised: sort by (query, -idf) and keep each query's first rows.
        order = np.lexsort((np.arange(len(scores)), -scores, owner))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else counts
        rank = np.arange(len(order)) - np.repeat(starts, counts)
        keep = order[(rank < self.fb_embs) & np.isfinite(scores[order])]
        kept_counts = np.bincount(owner[keep], minlength=len(cents))
        offsets = np.zeros(len(cents) + 1, dtype=np.int64)
        np.cumsum(kept_counts, out=offsets[1:])
        tokens = TokenEmbeddings(
            np.ascontiguousarray(allc[keep], dtype=np.float32).reshape(-1, index.dim),
            labels[keep].astype(np.int32),
            offsets,
        )
        chosen = scores[keep].astype(np.float32)
        return Expansion(tokens, chosen, (self.beta * chosen).astype(np.float32))

    # -- scoring -----------------------------------------------------------------------------
    def rank(
        self,
        index: MultiVectorIndex,
        query_tokens: TokenEmbeddings,
        feedback: Sequence[Sequence[str]],
        k: int,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Ranker mode: a new ANN retrieval with the expanded queries (scores, doc ids)."""
        check_k(k)
        expanded, weights = append_expansion(query_tokens, self.expand(index, feedback))
        return index.search(
            expanded,
            k,
            candidates_per_token=self.candidates_per_token,
            weights=weights,
            **self.search_params,
        )

    def rerank(
        self,
        index: MultiVectorIndex,
        query_tokens: TokenEmbeddings,
        candidates: Sequence[Sequence[str]],
    ) -> tuple[list[np.ndarray], list[list[str]]]:
        """Reranker mode: re-score each query's `candidates` (first pass, best first) with the
        expanded query; feedback is its first `fb_docs` candidates. Returns sorted (scores, ids).
        """
        expanded, weights = append_expansion(query_tokens, self.expand(index, candidates))
        out_scores: list[np.ndarray] = []
        out_ids: list[list[str]] = []
        for i, docs in enumerate(candidates):
            lo, hi = int(expanded.offsets[i]), int(expanded.offsets[i + 1])
            docs = list(docs)
            if not docs or lo == hi:
                out_scores.append(np.zeros(0, np.float32))
                out_ids.append([])
                continue
            s = index.maxsim(expanded.vectors[lo:hi], docs, weights[lo:hi])
            top = np.argsort(-s, kind="stable")
            out_scores.append(s[top])
            out_ids.append([docs[j] for j in top])
        return out_scores, out_ids

    def run(
        self, retriever: MultiVectorRetriever, queries: Queries, first_pass: Run, k: int = 1000
    ) -> Run:
        """A `Run` for `queries` with feedback from `first_pass` (a MaxSim run, say).

        Ranker mode retrieves `k` new documents; reranker mode re-scores the first pass's top
        `k`. Blank queries get no results. Wall time of the PRF stage is in `timings_`.
        """
        check_k(k)
        keep, _ = split_empty(queries, "ColBERTPRF.run")
        qids = [queries.ids[i] for i in keep]
        data: dict[str, dict[str, float]] = {q: {} for q in queries.ids}
        if qids:
            t0 = time.perf_counter()
            tokens = retriever.encoder.encode_tokens([queries.texts[i] for i in keep], "query")
            t1 = time.perf_counter()
            ranked = [
                [d for d, _ in first_pass.ranked(q, k)] if q in first_pass else [] for q in qids
            ]
            if self.mode == "ranker":
                fb = [r[: self.fb_docs] for r in ranked]
                scores, ids = self.rank(retriever.index, tokens, fb, k)
                found = scores > -np.inf
                rows = [s[f].tolist() for s, f in zip(scores, found)]
            else:
                score_list, ids = self.rerank(retriever.index, tokens, ranked)
                rows = [s.tolist() for s in score_list]
            t2 = time.perf_counter()
            for q, d, s in zip(qids, ids, rows):
                data[q] = dict(zip(d, s))
            self.timings_ = {"encode_s": t1 - t0, "prf_s": t2 - t1, "queries": float(len(qids))}
        return Run(data, self.name, {"fb_docs": self.fb_docs, "fb_embs": self.fb_embs,
                                     "beta": self.beta, "mode": self.mode, "k": k})  # fmt: skip
