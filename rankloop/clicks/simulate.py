"""Click simulation: builders for the sessions a click model is run on, and `simulate_log`.

The grade -> click probability and rank -> examination parameterisation (ULTRA's) lives in
`rankloop.clicks.probabilities` and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rankloop._runtime import check_random_state
from rankloop.clicks.models import ClickModel
from rankloop.clicks.probabilities import (
    attractiveness_from_grades,
    pbm_examination,
    satisfaction_from_grades,
    ubm_examination,
)
from rankloop.data.clicklogs import ClickLog
from rankloop.data.types import Qrels, Run
from rankloop.errors import ConfigError, RankloopError

__all__ = [
    "attractiveness_from_grades",
    "pbm_examination",
    "satisfaction_from_grades",
    "sessions_from_lists",
    "sessions_from_log",
    "sessions_from_run",
    "simulate_log",
    "ubm_examination",
]


def sessions_from_run(
    run: Run,
    qrels: Qrels,
    n_sessions: int,
    random_state: np.random.Generator | int,
    k: int = 10,
    name: str = "simulated",
) -> tuple[ClickLog, np.ndarray]:
    """Sessions (no clicks yet) showing each run query's top `k`, queries drawn uniformly.

    Returns the click-free log and the (n, k) grade per position from `qrels` (unjudged and
    negative grades count as 0; padded positions hold 0).
    """
    qids = [q for q in run.query_ids if run[q]]
    if not qids:
        raise RankloopError("sessions_from_run: the run has no ranked documents")
    lists = [[d for d, _ in run.ranked(q, k)] for q in qids]
    grades = [
        [max(qrels.data.get(q, {}).get(d, 0), 0) for d in docs] for q, docs in zip(qids, lists)
    ]
    return _sample(qids, lists, grades, n_sessions, check_random_state(random_state), name)


def sessions_from_lists(
    lists: Mapping[str, Sequence[str]],
    n_sessions: int,
    random_state: np.random.Generator | int,
    grades: Mapping[str, Sequence[int]] | None = None,
    name: str = "simulated",
) -> tuple[ClickLog, np.ndarray]:
    """Sessions drawn uniformly over the queries of `lists` (query -> ranked doc ids).

    `grades` (query -> grade per listed doc) is optional; the returned (n, K) grade array is 0
    where it is absent.
    """
    qids = list(lists)
    if not qids or any(not lists[q] for q in qids):
        raise RankloopError("sessions_from_lists: every query needs a non-empty list")
    docs = [list(lists[q]) for q in qids]
    g = [list(grades[q]) if grades is not None else [0] * len(d) for q, d in zip(qids, docs)]
    if any(len(a) != len(b) for a, b in zip(g, docs)):
        raise RankloopError("sessions_from_lists: grades must have one entry per listed doc")
    return _sample(qids, docs, g, n_sessions, check_random_state(random_state), name)


def _sample(
    qids: list[str],
    lists: list[list[str]],
    grades: list[list[int]],
    n_sessions: int,
    rng: np.random.Generator,
    name: str,
) -> tuple[ClickLog, np.ndarray]:
    """Build one session per query, then draw `n_sessions` of them uniformly by index."""
    if n_sessions < 1:
        raise ConfigError(f"n_sessions must be >= 1, got {n_sessions}")
    base = ClickLog.from_lists(qids, lists, [[] for _ in qids], name=name)
    k = base.max_rank
    g = np.zeros((len(qids), k), dtype=np.int64)
    g[base.mask] = np.fromiter((x for row in grades for x in row), np.int64, int(base.mask.sum()))
    pick = rng.integers(0, len(qids), size=n_sessions)
    log = base.subset(pick)
    return ClickLog(
        log.query_ids, log.doc_ids, log.clicks, log.query_vocab, log.doc_vocab, name=name
    ), g[pick]


def sessions_from_log(
    log: ClickLog, n_sessions: int, random_state: np.random.Generator | int
) -> ClickLog:
    """`n_sessions` result lists resampled with replacement from `log` (clicks cleared)."""
    if n_sessions < 1:
        raise ConfigError(f"n_sessions must be >= 1, got {n_sessions}")
    pick = check_random_state(random_state).integers(0, len(log), size=n_sessions)
    out = log.subset(pick)
    return out.with_clicks(np.zeros_like(out.clicks), name=f"{log.name}:resampled")


def simulate_log(
    model: ClickModel,
    sessions: ClickLog,
    random_state: np.random.Generator | int,
    relevance: np.ndarray | None = None,
) -> ClickLog:
    """`sessions` with clicks drawn from `model` (see `ClickModel.simulate` for `relevance`)."""
    clicks = model.simulate(sessions, relevance, random_state)
    return sessions.with_clicks(clicks, name=f"{sessions.name}:{type(model).__name__}")
