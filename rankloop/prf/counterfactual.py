"""Counterfactual Rocchio (CoRocchio): Rocchio from clicked documents, IPS-weighted.

A click log (simulated through `rankloop.clicks`, e.g. a PBM over the dense run) gives, per
query, the clicked documents and the ranks where they were shown. Plain Rocchio averages the
clicked vectors, which over-weights documents that were clicked because they sat high (position
bias). CoRocchio weights each click by its inverse propensity 1 / P(examined at rank r) =
r^η (PBM), giving q' = α q + β Σ w_i d_i / Σ w_i.

Protocol ("seen queries"): clicks for a query are simulated from its own qrels and then the same
query is re-ranked, as in "Implicit Feedback for Dense Passage Retrieval: A Counterfactual
Approach".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rankloop.data.clicklogs import ClickLog
from rankloop.data.types import Qrels, Queries, Run
from rankloop.embed.index import VectorIndex
from rankloop.errors import ConfigError, RankloopError

__all__ = ["click_feedback", "corocchio", "seen_query_runs"]


def click_feedback(
    log: ClickLog,
    index: VectorIndex,
    query_ids: Sequence[str],
    *,
    eta: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the weighted sum of clicked doc vectors (n, d) and the weight total (n,).

    Every click counts once per session; with `eta` each click at rank r weighs r^eta (IPS
    under a PBM with examination (1/r)^eta), without it every click weighs 1 (plain Rocchio).
    Queries without clicks get zeros.
    """
    if eta is not None and eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    qpos = {q: i for i, q in enumerate(query_ids)}
    sess_q = np.array([qpos.get(str(q), -1) for q in log.query_vocab], np.int64)[log.query_ids]
    s, r = np.nonzero(log.clicks & (sess_q[:, None] >= 0))
    if s.size == 0:
        return np.zeros((len(query_ids), index.dim), np.float32), np.zeros(len(query_ids))
    doc_codes = log.doc_ids[s, r]
    vocab_rows = index.rows([str(d) for d in log.doc_vocab])  # unknown docs raise here
    vecs = index.vectors_at(vocab_rows[doc_codes])
    w = np.ones(s.size) if eta is None else (r + 1.0) ** float(eta)
    q = sess_q[s]
    sums = np.zeros((len(query_ids), index.dim), np.float64)
    np.add.at(sums, q, w[:, None] * vecs)
    total = np.bincount(q, w, minlength=len(query_ids))
    return sums.astype(np.float32), total


def corocchio(
    queries: np.ndarray,
    weighted_sum: np.ndarray,
    total: np.ndarray,
    *,
    alpha: float = 1.0,
    beta: float = 0.5,
) -> np.ndarray:
    """α q + β (weighted mean of clicked vectors); queries without clicks keep α q."""
    q = np.asarray(queries, np.float32)
    if weighted_sum.shape != q.shape or total.shape != (q.shape[0],):
        raise RankloopError(
            f"corocchio: shapes disagree: queries {q.shape}, sums {weighted_sum.shape}, totals {total.shape}"
        )
    mean = np.divide(
        weighted_sum, total[:, None], out=np.zeros_like(weighted_sum), where=total[:, None] > 0
    )
    return (alpha * q + beta * mean).astype(np.float32)


def seen_query_runs(
    index: VectorIndex,
    queries: Queries,
    qvecs: np.ndarray,
    first_pass: Run,
    qrels: Qrels,
    *,
    n_sessions: int,
    eta: float = 1.0,
    alpha: float = 1.0,
    beta: float = 0.5,
    list_k: int = 10,
    k: int = 1000,
    random_state: np.random.Generator | int = 0,
) -> dict[str, Run]:
    """The seen-query protocol: PBM clicks on the top `list_k` of `first_pass`, drawn from the
    qrels, then the same queries re-ranked by Rocchio from the clicks. Returns three runs:
    `clicks-unbiased` (η = 0 clicks, plain Rocchio), `clicks-biased-rocchio` (η clicks, plain)
    and `clicks-biased-corocchio` (η clicks, IPS weights r^η)."""
    from rankloop._runtime import check_random_state
    from rankloop.clicks import PBM
    from rankloop.clicks.simulate import sessions_from_run, simulate_log
    from rankloop.prf.rocchio import run_from_rows

    gen = check_random_state(random_state)
    sessions, grades = sessions_from_run(first_pass, qrels, n_sessions, gen, k=list_k)
    unbiased = simulate_log(PBM(eta=0.0), sessions, gen, grades)
    biased = simulate_log(PBM(eta=eta), sessions, gen, grades)
    out = {}
    for name, log, weight_eta in (
        ("clicks-unbiased", unbiased, None),
        ("clicks-biased-rocchio", biased, None),
        ("clicks-biased-corocchio", biased, eta),
    ):
        sums, total = click_feedback(log, index, queries.ids, eta=weight_eta)
        new_q = corocchio(qvecs, sums, total, alpha=alpha, beta=beta)
        scores, rows = index.search_rows(new_q, k)
        out[name] = run_from_rows(index, queries.ids, scores, rows, name)
    return out
