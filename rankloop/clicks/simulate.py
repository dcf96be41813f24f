"""Click simulation: ULTRA's parameterisation (grade -> click probability, rank -> examination)
and builders for the sessions a click model is run on.

ULTRA's standard settings (Ai et al., "Unbiased Learning to Rank: Online or Offline?", and the
ULTRA toolbox):
- click probability of a document with grade g: `eps + (1 - eps) (2^g - 1) / (2^gmax - 1)`,
  so a non-relevant document is still clicked with probability `eps` (click noise);
- PBM examination at rank r (1-based): `(1 / r) ** eta`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from rankloop.data.clicklogs import ClickLog
from rankloop.data.types import Qrels, Run
from rankloop.errors import ConfigError, RankloopError

if TYPE_CHECKING:
    from rankloop.clicks.models import ClickModel


def as_rng(rng: np.random.Generator | int) -> np.random.Generator:
    """A numpy Generator from a Generator or an int seed (randomness is always explicit)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise RankloopError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _check_grades(grades: np.ndarray, max_grade: int) -> np.ndarray:
    g = np.asarray(grades)
    if g.size and (np.nanmin(g) < 0 or np.nanmax(g) > max_grade):
        raise ConfigError(
            f"relevance grades must lie in [0, max_grade={max_grade}], got range "
            f"[{np.nanmin(g)}, {np.nanmax(g)}] (clip negative qrels grades to 0 first)"
        )
    if max_grade < 1:
        raise ConfigError(f"max_grade must be >= 1, got {max_grade}")
    return g.astype(float)


def attractiveness_from_grades(
    grades: np.ndarray, eps: float = 0.1, max_grade: int = 4
) -> np.ndarray:
    """Click (attractiveness) probability per grade: `eps + (1-eps)(2^g-1)/(2^gmax-1)`."""
    if not 0.0 <= eps <= 1.0:
        raise ConfigError(f"eps must be in [0, 1], got {eps}")
    g = _check_grades(grades, max_grade)
    return eps + (1.0 - eps) * (np.exp2(g) - 1.0) / (2.0**max_grade - 1.0)


def satisfaction_from_grades(grades: np.ndarray, max_grade: int = 4) -> np.ndarray:
    """Satisfaction probability after a click (DBN/SDBN): `(2^g-1)/(2^gmax-1)`, no noise floor."""
    g = _check_grades(grades, max_grade)
    return (np.exp2(g) - 1.0) / (2.0**max_grade - 1.0)


def pbm_examination(k: int, eta: float = 1.0) -> np.ndarray:
    """PBM examination probabilities `(1/r)^eta` for ranks r = 1..k, shape (k,)."""
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    return (1.0 / np.arange(1, k + 1)) ** float(eta)


def ubm_examination(k: int, eta: float = 1.0) -> np.ndarray:
    """UBM examination `gamma[r, r']` = `(1/(r - r'))^eta`, shape (k, k).

    Row r (0-based rank r+1), column r' = 1-based rank of the previous click (0 = none); entries
    with r' > r are unused (set to 0). With no earlier click this is PBM's `(1/r)^eta`.
    """
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    r = np.arange(1, k + 1)[:, None]
    prev = np.arange(k)[None, :]
    dist = (r - prev).astype(float)
    return np.where(dist > 0, (1.0 / np.maximum(dist, 1.0)) ** float(eta), 0.0)


def sessions_from_run(
    run: Run,
    qrels: Qrels,
    n_sessions: int,
    rng: np.random.Generator | int,
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
    return _sample(qids, lists, grades, n_sessions, as_rng(rng), name)


def sessions_from_lists(
    lists: Mapping[str, Sequence[str]],
    n_sessions: int,
    rng: np.random.Generator | int,
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
    return _sample(qids, docs, g, n_sessions, as_rng(rng), name)


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


def sessions_from_log(log: ClickLog, n_sessions: int, rng: np.random.Generator | int) -> ClickLog:
    """`n_sessions` result lists resampled with replacement from `log` (clicks cleared)."""
    if n_sessions < 1:
        raise ConfigError(f"n_sessions must be >= 1, got {n_sessions}")
    pick = as_rng(rng).integers(0, len(log), size=n_sessions)
    out = log.subset(pick)
    return out.with_clicks(np.zeros_like(out.clicks), name=f"{log.name}:resampled")


def simulate_log(
    model: ClickModel,
    sessions: ClickLog,
    rng: np.random.Generator | int,
    relevance: np.ndarray | None = None,
) -> ClickLog:
    """`sessions` with clicks drawn from `model` (see `ClickModel.simulate` for `relevance`)."""
    clicks = model.simulate(sessions, relevance, rng)
    return sessions.with_clicks(clicks, name=f"{sessions.name}:{type(model).__name__}")
