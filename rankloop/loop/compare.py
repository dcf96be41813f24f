"""How many impressions an online comparison needs: team-draft interleaving against an A/B test
of clicks per impression (Chapelle, Joachims, Radlinski and Yue, TOIS 2012).

Both are simulated on the same world and click model. Impressions are independent (a query
drawn uniformly, its list, its clicks), so the outcome of one impression has a fixed discrete
distribution: interleaving's preference in {-1, 0, +1}, an A/B arm's click count in {0..k}. The
distributions are estimated from `impressions` simulated impressions each; the sum over n
impressions is then multinomial, and the error rate at n (the worse ranker wins; a tie counts
half) is computed from `repeats` multinomial draws, cheaply for any n.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rankloop._runtime import check_random_state
from rankloop.errors import ConfigError
from rankloop.loop.base import LoopWorld, rank_candidates
from rankloop.loop.interleave import interleaving_outcome, team_draft

__all__ = ["impressions_needed", "interleaving_vs_ab"]


def _error_curve(values: np.ndarray, probs: np.ndarray, grid: np.ndarray, repeats: int,
                 rng: np.random.Generator, paired: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> np.ndarray:  # fmt: skip
    """P(decision for the worse ranker) at each n of `grid`; the better ranker has positive
    expected outcome. `paired` = (probs of arm A, probs of arm B) for an A/B test."""
    out = np.empty(len(grid))
    for i, n in enumerate(grid.tolist()):
        if paired is None:
            total = rng.multinomial(n, probs, size=repeats) @ values
        else:
            half = max(n // 2, 1)
            a = rng.multinomial(half, paired[0], size=repeats) @ values
            b = rng.multinomial(half, paired[1], size=repeats) @ values
            total = b - a
        out[i] = np.mean(total < 0) + 0.5 * np.mean(total == 0)
    return out


def impressions_needed(grid: np.ndarray, errors: np.ndarray, target: float) -> float:
    """The smallest n of the grid from which the error stays at or below `target` (inf if none)."""
    bad = np.flatnonzero(errors > target)
    first = 0 if not len(bad) else bad[-1] + 1
    return float(grid[first]) if first < len(grid) else float("inf")


def interleaving_vs_ab(world: LoopWorld, scores_a: np.ndarray, scores_b: np.ndarray, *,
                       k: int = 10, impressions: int = 100_000, target: float = 0.05,
                       repeats: int = 4000, max_impressions: int = 10_000_000,
                       random_state: int = 0) -> dict[str, Any]:  # fmt: skip
    """Error rate against impressions for team-draft interleaving and for an A/B test of clicks
    per impression, comparing rankers A and B (scores (n_users, N) over the world's candidates
    of every traffic user); B should be the better one. Returns the curves, the impressions each
    needs to reach `target` and their ratio."""
    if impressions < 1000 or not 0 < target < 0.5 or repeats < 100:
        raise ConfigError("need impressions >= 1000, 0 < target < 0.5 and repeats >= 100")
    rng = check_random_state(random_state)
    users = world.draw_users(impressions, rng)
    cands = world.candidates(users)
    lists_a = rank_candidates(scores_a[users], cands)
    lists_b = rank_candidates(scores_b[users], cands)
    model = world.click_model
    # interleaving: one team-draft list per impression
    lists, teams = team_draft(np.stack([lists_a, lists_b]), k, rng)
    clicks = model.simulate_attractiveness(world.attractiveness(users, lists, 0), rng) & (
        lists >= 0
    )
    outcome = interleaving_outcome(teams, clicks)
    # A/B: each arm's own top k for the same query stream
    counts = []
    for arm in (lists_a[:, :k], lists_b[:, :k]):
        c = model.simulate_attractiveness(world.attractiveness(users, arm, 0), rng) & (arm >= 0)
        counts.append(c.sum(axis=1))
    values_i = np.array([-1, 0, 1])
    p_i = np.bincount(outcome + 1, minlength=3) / len(outcome)
    values_ab = np.arange(k + 1)
    p_a = np.bincount(counts[0], minlength=k + 1)[: k + 1] / impressions
    p_b = np.bincount(counts[1], minlength=k + 1)[: k + 1] / impressions
    grid = np.unique(np.geomspace(10, max_impressions, 120).astype(np.int64))
    err_i = _error_curve(values_i, p_i, grid, repeats, rng)
    err_ab = _error_curve(values_ab, p_a, grid, repeats, rng, paired=(p_a, p_b))
    n_i = impressions_needed(grid, err_i, target)
    n_ab = impressions_needed(grid, err_ab, target)
    return {
        "interleaving_mean_outcome": float(outcome.mean()),
        "interleaving_win_share": float((outcome > 0).sum() / max((outcome != 0).sum(), 1)),
        "ctr_a": float((counts[0] > 0).mean()),
        "ctr_b": float((counts[1] > 0).mean()),
        "clicks_a": float(counts[0].mean()),
        "clicks_b": float(counts[1].mean()),
        "grid": grid.tolist(),
        "error_interleaving": err_i.round(5).tolist(),
        "error_ab": err_ab.round(5).tolist(),
        "target": target,
        "impressions_interleaving": n_i,
        "impressions_ab": n_ab,
        "ratio": n_ab / n_i if np.isfinite(n_i) and n_i > 0 else float("nan"),
    }
