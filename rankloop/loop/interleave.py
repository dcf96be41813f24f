"""Team-draft interleaving and multileaving, vectorised over sessions, and their outcomes.

`team_draft` builds one shown list per session from m >= 2 rankers' lists: team-draft
interleaving (Radlinski, Kurup and Joachims, CIKM 2008) for m = 2 and team-draft multileaving
(Schuth et al., CIKM 2014) for m > 2. Clicks on the shown list are credited to the ranker
(team) that contributed the clicked position; `credit`, `preferences`, `interleaving_outcome`
and `win_rate` turn those clicks into per-session and overall comparisons.
"""

from __future__ import annotations

import math

import numpy as np

from rankloop._runtime import check_random_state
from rankloop.errors import ConfigError, RankloopError

__all__ = ["credit", "interleaving_outcome", "preferences", "team_draft", "win_rate"]

_Z95 = 1.959963984540054  # standard normal quantile for a two-sided 95% interval


def _check_positive_int(name: str, value: object) -> int:
    """`value` as an int >= 1, or a ConfigError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def team_draft(
    rankings: np.ndarray, k: int, random_state: np.random.Generator | int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Interleave m >= 2 rankers' lists into one list of length k per session, by team draft.

    `rankings` is (m, n, L): for each ranker and session, item codes best first, -1 padding at
    the end. In every round the rankers with the fewest contributions so far pick in a random
    order, each taking its highest-ranked item not yet shown; a ranker with nothing left drops
    out, and the list is -1 padded once no ranker has an item left. Returns `lists` (n, k) item
    codes and `teams` (n, k), the ranker that contributed each position (-1 on padding).
    """
    rankings = np.asarray(rankings)
    if rankings.ndim != 3 or not np.issubdtype(rankings.dtype, np.integer):
        raise RankloopError(
            f"rankings must be an (m, n, L) int array, got {rankings.dtype} {rankings.shape}"
        )
    m, n, length = rankings.shape
    if m < 2:
        raise RankloopError(f"team draft needs at least 2 rankers (axis 0), got {m}")
    if length < 1:
        raise RankloopError("rankings must hold at least one position per list (L >= 1)")
    if rankings.size and rankings.min() < -1:
        raise RankloopError(f"item codes must be >= 0 (or -1 for padding), got {rankings.min()}")
    k = _check_positive_int("k", k)
    rng = check_random_state(random_state)

    # free[r, s, p]: item p of ranker r's list is still available; a last always-free sentinel
    # column makes argmax land on L (and `padded` give -1) once a ranker has nothing left.
    free = np.ones((m, n, length + 1), dtype=bool)
    free[:, :, :length] = rankings >= 0
    padded = np.full((m, n, length + 1), -1, dtype=np.int64)
    padded[:, :, :length] = rankings
    # Fewest contributions first; a uniform draw in [0, 1) orders the tied rankers, and picking
    # one uniformly at random per step makes a uniformly random order within each round.
    draws = rng.random((k, n, m))
    counts = np.zeros((n, m), dtype=np.int64)
    lists = np.full((n, k), -1, dtype=np.int64)
    teams = np.full((n, k), -1, dtype=np.int64)
    sessions = np.arange(n)
    for t in range(k):
        pos = free.argmax(axis=2).T  # (n, m): each ranker's best item not shown yet
        picker = np.where(pos < length, counts + draws[t], np.inf).argmin(axis=1)
        item = padded[picker, sessions, pos[sessions, picker]]
        if item.max(initial=-1) < 0:
            break
        lists[:, t] = item
        teams[:, t] = picker
        counts[sessions, picker] += 1  # an exhausted session never picks again: no harm
        free[:, :, :length] &= rankings != item[None, :, None]  # -1 only hits padding
    teams[lists < 0] = -1
    return lists, teams


def _check_feedback(teams: np.ndarray, clicks: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """`teams` as an (n, k) int array with values in [-1, m) and `clicks` as a matching bool one."""
    teams = np.asarray(teams)
    clicks = np.asarray(clicks)
    if teams.ndim != 2 or not np.issubdtype(teams.dtype, np.integer):
        raise RankloopError(f"teams must be an (n, k) int array, got {teams.dtype} {teams.shape}")
    if clicks.shape != teams.shape:
        raise RankloopError(
            f"clicks must have the shape of teams {teams.shape}, got {clicks.shape}"
        )
    if teams.size and (teams.min() < -1 or teams.max() >= m):
        raise RankloopError(
            f"teams must be in [0, {m}) (or -1 for padding), got {teams.min()}..{teams.max()}"
        )
    if clicks.dtype != np.bool_:
        if not np.isin(clicks, (0, 1)).all():
            raise RankloopError("clicks must be bool or 0/1")
        clicks = clicks.astype(bool)
    return teams, clicks


def credit(teams: np.ndarray, clicks: np.ndarray, m: int) -> np.ndarray:
    """(n, m) number of clicks each ranker's team earned per session; clicks on padding count
    for nobody. The raw tallies from which team-draft comparisons are decided."""
    m = _check_positive_int("m", m)
    teams, clicks = _check_feedback(teams, clicks, m)
    onehot = teams[:, :, None] == np.arange(m)
    return (onehot & clicks[:, :, None]).sum(axis=1)


def preferences(teams: np.ndarray, clicks: np.ndarray, m: int) -> np.ndarray:
    """(n, m, m) int: 1 at [s, i, j] when ranker i earned strictly more clicks than ranker j in
    session s, else 0 (all zeros for sessions without clicks). The multileaving outcome matrix."""
    c = credit(teams, clicks, m)
    return (c[:, :, None] > c[:, None, :]).astype(np.int64)


def interleaving_outcome(teams: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    """(n,) outcome of two-ranker interleaving: +1 when ranker 1 earned more clicks, -1 when
    ranker 0 did, 0 for a tie or no click."""
    c = credit(teams, clicks, 2)
    return np.sign(c[:, 1] - c[:, 0])


def win_rate(outcomes: np.ndarray) -> tuple[float, float, float]:
    """Share of the non-tied sessions that ranker 1 won, with its 95% Wilson score interval.

    Returns (rate, low, high); the Wilson interval stays inside [0, 1] and behaves at rates near
    0 or 1 and for few sessions. All three are NaN when no session has a winner."""
    outcomes = np.asarray(outcomes)
    if outcomes.ndim != 1 or not np.isin(outcomes, (-1, 0, 1)).all():
        raise RankloopError("outcomes must be a 1-D array of -1, 0 and +1")
    wins = int((outcomes == 1).sum())
    total = wins + int((outcomes == -1).sum())
    if total == 0:
        return math.nan, math.nan, math.nan
    rate = wins / total
    z2 = _Z95 * _Z95
    denom = 1.0 + z2 / total
    center = (rate + z2 / (2 * total)) / denom
    half = _Z95 * math.sqrt(rate * (1 - rate) / total + z2 / (4 * total * total)) / denom
    return rate, max(0.0, center - half), min(1.0, center + half)
