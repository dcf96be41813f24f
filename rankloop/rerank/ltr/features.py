"""Learning-to-rank data: the query-grouped `LtrData` container and feature extraction from the
toolkit's own signals (candidate-run score and rank, other runs such as dense or RM3 PRF, document
length, query-term overlap with title and body).

Every feature is computed for all (query, doc) pairs at once with numpy / scipy.sparse; the only
per-document Python work is tokenising text, done once per distinct document.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from rankloop.data.types import Corpus, Qrels, Queries, Run
from rankloop.errors import RankloopError

_TOKEN = r"(?u)\b\w+\b"
_KEY_SEP = "\x1f"


@dataclass(frozen=True, eq=False)
class LtrData:
    """Query-grouped learning-to-rank rows; each query's rows are contiguous.

    features: (n, d) float32. labels: (n,) float64 (graded relevance, or 0 when unknown).
    qids: (n,) str. doc_ids: (n,) str or None. feature_names: d names or None.
    comments: n trailing svmlight comments (without `#`) or None.
    """

    features: np.ndarray
    labels: np.ndarray
    qids: np.ndarray
    doc_ids: np.ndarray | None = None
    feature_names: list[str] | None = None
    comments: list[str] | None = None
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        x, y, q = self.features, self.labels, self.qids
        if x.ndim != 2 or y.shape != (x.shape[0],) or q.shape != (x.shape[0],):
            raise RankloopError(
                f"LtrData: want features (n, d), labels (n,), qids (n,); got {x.shape}, "
                f"{y.shape}, {q.shape}"
            )
        n = x.shape[0]
        if self.doc_ids is not None and self.doc_ids.shape != (n,):
            raise RankloopError(f"LtrData: doc_ids has shape {self.doc_ids.shape}, want ({n},)")
        if self.feature_names is not None and len(self.feature_names) != x.shape[1]:
            raise RankloopError(
                f"LtrData: {len(self.feature_names)} feature names for {x.shape[1]} features"
            )
        if self.comments is not None and len(self.comments) != n:
            raise RankloopError(f"LtrData: {len(self.comments)} comments for {n} rows")
        if n > 1:
            starts = np.flatnonzero(q[1:] != q[:-1]) + 1
            if len(np.unique(q)) != len(starts) + 1:
                raise RankloopError("LtrData: each query's rows must be contiguous")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    def group_offsets(self) -> np.ndarray:
        """(n_queries + 1,) row offsets: query `i` owns rows `offsets[i]:offsets[i + 1]`."""
        n = len(self)
        if n == 0:
            return np.zeros(1, np.int64)
        starts = np.flatnonzero(self.qids[1:] != self.qids[:-1]) + 1
        return np.concatenate([[0], starts, [n]]).astype(np.int64)

    @property
    def query_ids(self) -> list[str]:
        """Distinct query ids in row order."""
        return [str(q) for q in self.qids[self.group_offsets()[:-1]]]

    def subset_queries(self, qids: Sequence[str]) -> LtrData:
        """The rows of the given queries (in this data's order); unknown ids are ignored."""
        keep = np.isin(self.qids, np.asarray(list(qids), dtype=self.qids.dtype))
        rows = np.flatnonzero(keep)
        return LtrData(
            self.features[rows],
            self.labels[rows],
            self.qids[rows],
            None if self.doc_ids is None else self.doc_ids[rows],
            self.feature_names,
            None if self.comments is None else [self.comments[r] for r in rows],
            dict(self.meta),
        )

    def to_lists(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded per-query arrays: features (Q, K, d), labels (Q, K) and mask (Q, K).

        K is the longest group (or `k`, cutting longer groups to their first `k` rows).
        """
        off = self.group_offsets()
        sizes = np.diff(off)
        kk = int(sizes.max()) if k is None and sizes.size else int(k or 0)
        sizes = np.minimum(sizes, kk)
        mask = np.arange(kk)[None, :] < sizes[:, None]
        rows = (off[:-1, None] + np.arange(kk)[None, :])[mask]
        x = np.zeros((len(sizes), kk, self.n_features), np.float32)
        y = np.zeros((len(sizes), kk))
        x[mask] = self.features[rows]
        y[mask] = self.labels[rows]
        return x, y, mask

    def row_index(self, qids: np.ndarray, doc_ids: np.ndarray) -> np.ndarray:
        """Row of each (query id, doc id) pair; -1 where the pair has no row. Needs doc_ids."""
        if self.doc_ids is None:
            raise RankloopError("LtrData.row_index needs doc ids")
        keys = np.char.add(np.char.add(self.qids.astype(str), _KEY_SEP), self.doc_ids.astype(str))
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        want = np.char.add(np.char.add(np.asarray(qids, str), _KEY_SEP), np.asarray(doc_ids, str))
        if not len(sorted_keys):
            return np.full(want.shape, -1, np.int64)
        pos = np.searchsorted(sorted_keys, want).clip(0, len(sorted_keys) - 1)
        return np.where(sorted_keys[pos] == want, order[pos], -1).astype(np.int64)


def concat_ltr(parts: Sequence[LtrData]) -> LtrData:
    """Rows of several `LtrData` one after another (feature names must agree; qids must not clash)."""
    if not parts:
        raise RankloopError("concat_ltr: nothing to concatenate")
    names = parts[0].feature_names
    if any(p.feature_names != names or p.n_features != parts[0].n_features for p in parts):
        raise RankloopError("concat_ltr: parts have different features")
    docs = None
    if all(p.doc_ids is not None for p in parts):
        docs = np.concatenate([p.doc_ids for p in parts])  # type: ignore[misc]
    comments = None
    if all(p.comments is not None for p in parts):
        comments = [c for p in parts for c in p.comments]  # type: ignore[union-attr]
    return LtrData(
        np.concatenate([p.features for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.qids.astype(str) for p in parts]),
        docs,
        names,
        comments,
    )


def _binary_terms(texts: Sequence[str], vocab: dict[str, int]) -> sp.csr_matrix:
    """(len(texts), |vocab|) 0/1 matrix of which vocabulary terms each text contains."""
    from sklearn.feature_extraction.text import CountVectorizer

    if not vocab:
        return sp.csr_matrix((len(texts), 0))
    vec = CountVectorizer(token_pattern=_TOKEN, vocabulary=vocab, binary=True, dtype=np.float64)
    return vec.transform(texts).tocsr()


def _query_vocab(texts: Sequence[str]) -> tuple[dict[str, int], sp.csr_matrix]:
    """Vocabulary of the query texts (stopwords removed) and the (queries, V) binary matrix."""
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(token_pattern=_TOKEN, stop_words="english", binary=True)
    try:
        m = vec.fit_transform(texts).tocsr().astype(np.float64)
    except ValueError:  # every query is empty or only stopwords
        return {}, sp.csr_matrix((len(texts), 0))
    return dict(vec.vocabulary_), m


def _token_counts(texts: Sequence[str]) -> np.ndarray:
    pat = re.compile(_TOKEN)
    return np.fromiter((len(pat.findall(t.lower())) for t in texts), np.float64, len(texts))


def _group_stats(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Per-row z-score of `values` within its group (0 where the group has no spread)."""
    cnt = np.bincount(group, minlength=n_groups).astype(float)
    mean = np.bincount(group, values, n_groups) / np.maximum(cnt, 1.0)
    var = np.bincount(group, (values - mean[group]) ** 2, n_groups) / np.maximum(cnt, 1.0)
    std = np.sqrt(var)[group]
    return np.where(std > 1e-12, (values - mean[group]) / np.where(std > 1e-12, std, 1.0), 0.0)


def _run_lookup(
    run: Run, qids: list[str], group: np.ndarray, docs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score, 1/rank and a missing flag of every (group query, doc) row in `run`.

    A doc the run did not retrieve gets the run's lowest score for that query (it scored at most
    that) and reciprocal rank 0; a query absent from the run gets score 0.
    """
    ranked = [run.ranked(q) for q in qids]
    floor = np.array([r[-1][1] if r else 0.0 for r in ranked])
    sizes = np.fromiter((len(r) for r in ranked), np.int64, len(ranked))
    sig_d = np.array([d for r in ranked for d, _ in r], dtype=str)
    sig_s = np.fromiter((s for r in ranked for _, s in r), np.float64, len(sig_d))
    sig_rank = np.arange(len(sig_d)) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1
    keys = np.char.add(
        np.char.add(np.repeat(np.arange(len(ranked)), sizes).astype(str), _KEY_SEP), sig_d
    )
    order = np.argsort(keys)
    keys = keys[order]
    want = np.char.add(np.char.add(group.astype(str), _KEY_SEP), docs.astype(str))
    if not len(keys):
        return floor[group], np.zeros(len(want)), np.ones(len(want))
    pos = np.searchsorted(keys, want).clip(0, len(keys) - 1)
    found = keys[pos] == want
    hit = order[pos]
    score = np.where(found, sig_s[hit], floor[group])
    rr = np.where(found, 1.0 / sig_rank[hit], 0.0)
    return score, rr, (~found).astype(np.float64)


def feature_names(candidate: str = "cand", signals: Sequence[str] = ()) -> list[str]:
    """Names of the columns `build_features` returns, in order."""
    names = [f"{candidate}_score", f"{candidate}_znorm", f"{candidate}_rr"]
    for s in signals:
        names += [f"{s}_score", f"{s}_znorm", f"{s}_rr", f"{s}_missing"]
    return [
        *names,
        "log_doc_len",
        "log_title_len",
        "log_query_len",
        "title_overlap",
        "doc_overlap",
        "idf_overlap",
    ]


def build_features(
    candidates: Run,
    queries: Queries,
    corpus: Corpus,
    *,
    k: int | None = None,
    signals: Mapping[str, Run] | None = None,
    qrels: Qrels | None = None,
    candidate_name: str = "cand",
) -> LtrData:
    """Features of each query's top-`k` candidates (all when None), in the candidates' order.

    Columns (see `feature_names`): the candidate run's score, its per-query z-score and 1/rank;
    for every extra run in `signals` (e.g. {"dense": run, "rm3": run}) the same three plus a
    not-retrieved flag; log document, title and query lengths (tokens); the fraction of distinct
    query terms (stopwords removed) in the title and in title + text, and that fraction IDF-weighted
    over `corpus`. Labels come from `qrels` (unjudged = 0, negative grades clipped to 0).
    """
    signals = dict(signals or {})
    text_of = dict(queries.items())
    qids = [q for q in candidates.query_ids if q in text_of and candidates[q]]
    lists = [candidates.ranked(q, k) for q in qids]
    sizes = np.fromiter((len(r) for r in lists), np.int64, len(lists))
    group = np.repeat(np.arange(len(qids)), sizes)
    docs = np.array([d for r in lists for d, _ in r], dtype=str)
    cand_score = np.fromiter((s for r in lists for _, s in r), np.float64, len(docs))
    rank = np.concatenate([np.arange(1, n + 1) for n in sizes] or [np.zeros(0, np.int64)])
    if not len(docs):
        raise RankloopError("build_features: the candidate run has no documents for these queries")
    pos = {d: i for i, d in enumerate(corpus.ids)}
    uniq_docs, doc_inv = np.unique(docs, return_inverse=True)
    try:
        doc_rows = np.fromiter((pos[d] for d in uniq_docs), np.int64, len(uniq_docs))
    except KeyError as e:
        raise RankloopError(
            f"build_features: candidate doc {e.args[0]!r} is not in corpus {corpus.name!r}"
        ) from None

    cols = [cand_score, _group_stats(cand_score, group, len(qids)), 1.0 / rank]
    for run in signals.values():
        s, rr, missing = _run_lookup(run, qids, group, docs)
        cols += [s, _group_stats(s, group, len(qids)), rr, missing]

    titles = [corpus.titles[r] for r in doc_rows]
    full = [(corpus.titles[r] + " " + corpus.texts[r]).strip() for r in doc_rows]
    qtexts = [text_of[q] for q in qids]
    vocab, qm = _query_vocab(qtexts)
    tm = _binary_terms(titles, vocab)
    dm = _binary_terms(full, vocab)
    df = np.asarray(_binary_terms(corpus.doc_texts(), vocab).sum(axis=0)).ravel()
    idf = np.log((len(corpus) + 1.0) / (df + 0.5))
    q_rows = qm[group]
    n_terms = np.asarray(q_rows.sum(axis=1)).ravel()
    denom = np.maximum(n_terms, 1.0)
    title_overlap = np.asarray(q_rows.multiply(tm[doc_inv]).sum(axis=1)).ravel() / denom
    shared = q_rows.multiply(dm[doc_inv]).tocsr()
    doc_overlap = np.asarray(shared.sum(axis=1)).ravel() / denom
    q_idf = np.maximum(np.asarray(q_rows @ idf).ravel(), 1e-12)
    idf_overlap = np.asarray(shared @ idf).ravel() / q_idf
    cols += [
        np.log1p(_token_counts(full))[doc_inv],
        np.log1p(_token_counts(titles))[doc_inv],
        np.log1p(_token_counts(qtexts))[group],
        title_overlap,
        doc_overlap,
        idf_overlap,
    ]
    labels = np.zeros(len(docs))
    if qrels is not None:
        judged = [qrels.data.get(q, {}) for q in qids]
        labels = np.fromiter(
            (max(judged[g].get(d, 0), 0) for g, d in zip(group.tolist(), docs.tolist())),
            np.float64,
            len(docs),
        )
    return LtrData(
        np.column_stack(cols).astype(np.float32),
        labels,
        np.array(qids, dtype=str)[group],
        docs,
        feature_names(candidate_name, list(signals)),
        meta={"k": k, "signals": list(signals)},
    )
