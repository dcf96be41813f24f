"""Exploration layers: what a round shows given the policy's ranking.

- `none`: the policy's top `k` (greedy).
- `randpair`: with probability `rate`, the top result swaps places with a uniformly drawn
  position 2..k (a swap intervention, Joachims et al., WSDM 2017): the randomisation from which
  `rankloop.clicks.swap_propensities` estimates the examination propensities IPS needs.
- `epsilon`: each shown position after the first is, with probability `epsilon`, given to a
  candidate drawn uniformly from those the policy ranked below the top `k` (exploration of
  items the greedy policy never shows).
- `interleave`: team-draft interleaving (two rankers) or multileaving (more) of the policy with
  the world's fixed reference rankers (`against`), so every round also compares them.
"""

from __future__ import annotations

import numpy as np

from rankloop.errors import ConfigError
from rankloop.loop.base import EXPLORERS, Explorer, LoopWorld
from rankloop.loop.interleave import team_draft

__all__ = ["EpsilonSlots", "Greedy", "Interleave", "RandPair"]


@EXPLORERS.register("none")
class Greedy(Explorer):
    """The policy's own top `k`."""

    def show(self, world: LoopWorld, users: np.ndarray, ranked: np.ndarray, k: int,
             rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
        return _top(ranked, k), {}


@EXPLORERS.register("randpair")
class RandPair(Explorer):
    """Swap the top result with a uniformly drawn lower position, in a share `rate` of lists."""

    def __init__(self, rate: float = 1.0) -> None:
        if not 0.0 < rate <= 1.0:
            raise ConfigError(f"randpair: rate must be in (0, 1], got {rate}")
        self.rate = rate

    def show(self, world: LoopWorld, users: np.ndarray, ranked: np.ndarray, k: int,
             rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
        shown = _top(ranked, k)
        n = len(shown)
        length = (shown >= 0).sum(axis=1)
        other = 1 + np.floor(rng.random(n) * np.maximum(length - 1, 1)).astype(np.int64)
        swap = (rng.random(n) < self.rate) & (length > 1)
        rows = np.flatnonzero(swap)
        first, second = shown[rows, 0].copy(), shown[rows, other[rows]].copy()
        shown[rows, 0], shown[rows, other[rows]] = second, first
        swaps = np.full((n, 2), -1, np.int64)
        swaps[rows, 0], swaps[rows, 1] = 0, other[rows]
        return shown, {"swaps": swaps}


@EXPLORERS.register("epsilon")
class EpsilonSlots(Explorer):
    """Positions 2..k go, each with probability `epsilon`, to a random lower-ranked candidate."""

    def __init__(self, epsilon: float = 0.1) -> None:
        if not 0.0 < epsilon <= 1.0:
            raise ConfigError(f"epsilon: epsilon must be in (0, 1], got {epsilon}")
        self.epsilon = epsilon

    def show(self, world: LoopWorld, users: np.ndarray, ranked: np.ndarray, k: int,
             rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
        shown = _top(ranked, k)
        rest = ranked[:, k:]
        n_rest = (rest >= 0).sum(axis=1)
        # a random order of each row's lower-ranked candidates (valid ones first)
        keys = np.where(rest >= 0, rng.random(rest.shape), 2.0)
        pool = np.take_along_axis(rest, np.argsort(keys, axis=1), axis=1)
        swap = (rng.random(shown.shape) < self.epsilon) & (shown >= 0)
        swap[:, 0] = False
        used = np.cumsum(swap, axis=1) - 1  # the j-th replaced slot takes the j-th pool item
        ok = swap & (used < n_rest[:, None])
        rows, cols = np.nonzero(ok)
        shown[rows, cols] = pool[rows, used[rows, cols]]
        return shown, {}


@EXPLORERS.register("interleave")
class Interleave(Explorer):
    """Team-draft interleave (or multileave) the policy with the world's reference rankers;
    team 0 is the policy, team i the i-th name of `against`."""

    def __init__(self, against: list[str] | None = None) -> None:
        if against is not None and (not against or len(set(against)) != len(against)):
            raise ConfigError(f"interleave: against must name distinct rankers, got {against}")
        self.against = against

    def show(self, world: LoopWorld, users: np.ndarray, ranked: np.ndarray, k: int,
             rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
        refs = world.reference_rankings(users, ranked)
        names = self.against or sorted(refs)
        missing = [a for a in names if a not in refs]
        if missing:
            raise ConfigError(
                f"interleave: unknown reference ranker(s) {missing}; this world has "
                f"{', '.join(sorted(refs))}"
            )
        width = max(ranked.shape[1], *(refs[a].shape[1] for a in names))
        stack = np.stack([_pad(r, width) for r in (ranked, *(refs[a] for a in names))])
        lists, teams = team_draft(stack, k, rng)
        return lists, {"teams": teams}


def _top(ranked: np.ndarray, k: int) -> np.ndarray:
    return _pad(ranked[:, :k], k).copy()


def _pad(x: np.ndarray, width: int) -> np.ndarray:
    if x.shape[1] >= width:
        return x
    return np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=-1)
