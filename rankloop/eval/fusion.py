"""Rank fusion of several runs: RRF, CombSUM and CombMNZ, with score normalisation.

Ranks follow trec_eval's order (float32 score descending, then doc id descending), so a fused
run does not depend on dict order. Everything is vectorised over all (query, doc) pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np

from rankloop.data.types import Run
from rankloop.errors import ConfigError, RankloopError

__all__ = ["METHODS", "NORMS", "fuse", "normalize"]

METHODS = ("rrf", "combsum", "combmnz")
NORMS = ("minmax", "zscore", "rank")


def _flatten(
    run: Run, qindex: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(query code, doc ids, scores, trec rank) for every pair, sorted by query then rank."""
    qids = list(run.data)
    lens = np.fromiter((len(run.data[q]) for q in qids), np.int64, len(qids))
    n = int(lens.sum())
    qc = np.repeat(np.fromiter((qindex[q] for q in qids), np.int64, len(qids)), lens)
    docs = np.array(list(chain.from_iterable(run.data[q] for q in qids)), dtype=str)
    scores = np.fromiter(chain.from_iterable(run.data[q].values() for q in qids), np.float64, n)
    with np.errstate(over="ignore"):
        key32 = scores.astype(np.float32)
    # Ascending (query, score, id) reversed within a query is trec_eval's descending order.
    order = np.lexsort((docs, key32, -qc))[::-1]
    qc, docs, scores = qc[order], docs[order], scores[order]
    start = np.searchsorted(qc, qc)  # first position of each pair's query
    rank = np.arange(n) - start + 1
    return qc, docs, scores, rank


def _segment_stats(qc: np.ndarray, x: np.ndarray, nq: int) -> tuple[np.ndarray, ...]:
    count = np.bincount(qc, minlength=nq)
    total = np.bincount(qc, x, nq)
    mean = total / np.maximum(count, 1)
    var = np.bincount(qc, (x - mean[qc]) ** 2, nq) / np.maximum(count, 1)
    lo = np.full(nq, np.inf)
    hi = np.full(nq, -np.inf)
    np.minimum.at(lo, qc, x)
    np.maximum.at(hi, qc, x)
    return count, mean, np.sqrt(var), lo, hi


def normalize(
    qc: np.ndarray, scores: np.ndarray, rank: np.ndarray, norm: str, nq: int
) -> np.ndarray:
    """Per-query normalised scores: `minmax` to [0, 1], `zscore` (population std), or `rank`
    (1 - (rank - 1) / n). A query whose scores are all equal normalises to 0 (minmax, zscore)."""
    count, mean, std, lo, hi = _segment_stats(qc, scores, nq)
    if norm == "minmax":
        span = (hi - lo)[qc]
        return np.where(span > 0, (scores - lo[qc]) / np.where(span > 0, span, 1.0), 0.0)
    if norm == "zscore":
        sd = std[qc]
        return np.where(sd > 0, (scores - mean[qc]) / np.where(sd > 0, sd, 1.0), 0.0)
    if norm == "rank":
        return 1.0 - (rank - 1) / count[qc]
    raise RankloopError(f"unknown norm {norm!r}; choose None or one of {', '.join(NORMS)}")


def check_fusion(
    n_runs: int,
    method: str,
    *,
    norm: str | None = None,
    rrf_k: float = 60.0,
    weights: Sequence[float] | None = None,
    depth: int | None = None,
) -> None:
    """Raise `ConfigError` unless these fusion settings are valid for `n_runs` runs (shared by
    `fuse` and the pipeline's `Fuse` stage, which checks them before any run exists)."""
    if n_runs < 1:
        raise ConfigError("fuse needs at least one run")
    if method not in METHODS:
        raise ConfigError(f"unknown fusion method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "rrf" and norm is not None:
        raise ConfigError("norm does not apply to rrf, which fuses ranks; use norm=None")
    if norm is not None and norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; choose None or one of {', '.join(NORMS)}")
    if method == "rrf" and rrf_k < 0:
        raise ConfigError(f"rrf_k must be >= 0, got {rrf_k}")
    if depth is not None and depth < 1:
        raise ConfigError(f"depth must be >= 1, got {depth}")
    if weights is not None and len(weights) != n_runs:
        raise ConfigError(f"{n_runs} runs but {len(weights)} weights")


def fuse(
    runs: Sequence[Run] | Mapping[str, Run],
    method: str = "rrf",
    *,
    norm: str | None = None,
    rrf_k: float = 60.0,
    weights: Sequence[float] | None = None,
    depth: int | None = None,
    name: str | None = None,
) -> Run:
    """Fuse runs into one over the union of their queries and docs.

    - `rrf`: sum of w / (rrf_k + rank) (Cormack et al. 2009; rrf_k = 60);
    - `combsum`: sum of w * score; `combmnz`: combsum times the number of runs retrieving
      the doc (Fox & Shaw 1994). A doc missing from a run contributes 0 there.
    `norm` ("minmax", "zscore", "rank") normalises each run's scores per query first (CombSUM
    and CombMNZ only; RRF uses ranks). `depth` keeps each run's top `depth` docs per query.
    `weights` default to 1 per run.
    """
    run_list = list(runs.values()) if isinstance(runs, Mapping) else list(runs)
    check_fusion(len(run_list), method, norm=norm, rrf_k=rrf_k, weights=weights, depth=depth)
    w = np.ones(len(run_list)) if weights is None else np.asarray(weights, np.float64)

    qids = list(dict.fromkeys(chain.from_iterable(r.data for r in run_list)))
    qindex = {q: i for i, q in enumerate(qids)}
    nq = len(qids)
    parts_q, parts_d, parts_v = [], [], []
    for r, wi in zip(run_list, w.tolist()):
        qc, docs, scores, rank = _flatten(r, qindex)
        if depth is not None:
            top = rank <= depth
            qc, docs, scores, rank = qc[top], docs[top], scores[top], rank[top]
        if method == "rrf":
            value = wi / (rrf_k + rank)
        else:
            value = wi * (scores if norm is None else normalize(qc, scores, rank, norm, nq))
        parts_q.append(qc)
        parts_d.append(docs)
        parts_v.append(value)
    import pandas as pd  # lazy: only fusion needs its hash-based factorize

    qc = np.concatenate(parts_q)
    dcode, dnames = pd.factorize(np.concatenate(parts_d))
    value = np.concatenate(parts_v)
    key = qc * max(len(dnames), 1) + dcode
    ukey, inv = np.unique(key, return_inverse=True)
    fused = np.bincount(inv, value)
    if method == "combmnz":
        fused = fused * np.bincount(inv)
    uq, ud = ukey // max(len(dnames), 1), ukey % max(len(dnames), 1)
    bounds = np.searchsorted(uq, np.arange(nq + 1))
    doc_names = np.asarray(dnames, dtype=object)[ud].tolist()
    scores_out = fused.tolist()
    data = {
        q: dict(zip(doc_names[a:b], scores_out[a:b]))
        for q, a, b in zip(qids, bounds[:-1].tolist(), bounds[1:].tolist())
    }
    label = (
        name or f"{method}(" + ",".join(r.name or f"run{i}" for i, r in enumerate(run_list)) + ")"
    )
    return Run(data, label, {"fusion": method, "norm": norm, "rrf_k": rrf_k, "depth": depth})
