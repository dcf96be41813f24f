"""Slate policies: top-k by any single-action policy's score, and in-slate Thompson sampling.

Feedback on a slate is a click (or reward) per position. `feedback="all"` treats every shown
position as examined; `feedback="cascade"` only the positions down to the first click (the
cascade model's assumption: the user did not look further), as in CascadeUCB/CascadeTS.

In-slate Thompson sampling follows "Dynamic Slate Recommendation with Gated Recurrent Units and
Thompson Sampling": the slate is filled slot by slot, and each slot
draws its own posterior sample over the items not placed yet. With `per_slot=True` every
(item, slot) pair has its own Beta posterior, so the position effect is learned rather than
ignored; `resample=False` with `per_slot=False` is marginal posterior sampling (one draw, top-k).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from rankloop.bandits.policies.base import (
    FEEDBACK,
    Policy,
    SlatePolicy,
    argmax_rows,
    examined_mask,
    register_policy,
    topk_rows,
)
from rankloop.errors import ConfigError, RankloopError


def _check_slate(slate_size: int, n_arms: int, feedback: str) -> None:
    if not isinstance(slate_size, int | np.integer) or not 1 <= slate_size <= n_arms:
        raise ConfigError(f"slate_size must be an int in [1, n_arms={n_arms}], got {slate_size!r}")
    if feedback not in FEEDBACK:
        raise ConfigError(f"feedback must be one of {FEEDBACK}, got {feedback!r}")


@register_policy("topk")
class TopK(SlatePolicy):
    """The `slate_size` best candidates by `base.scores` (UCB, posterior sample, ...), best first.

    Feedback is split into one (context, item, click) row per examined position and passed to
    `base.update`, so batching and delays are the base policy's.
    """

    def __init__(self, base: Policy, slate_size: int, *, feedback: str = "all") -> None:
        if not isinstance(base, Policy) or base.slate:
            raise ConfigError(f"TopK needs a single-action policy as base, got {base!r}")
        _check_slate(slate_size, base.n_arms, feedback)
        super().__init__(base.n_arms, random_state=base.random_state, tie_break=base.tie_break)
        self.base = base
        self.slate_size = int(slate_size)
        self.feedback = feedback
        self._rng = base._rng

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def n_pending(self) -> int:
        return self.base.n_pending

    def flush(self) -> None:
        self.base.flush()

    def _select_slate(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        s = self.base._masked_scores(x, cands)
        k = min(self.slate_size, s.shape[1])
        cols = topk_rows(s, k, self._rng, self.tie_break)
        top = np.take_along_axis(s, cols, axis=1)
        arms = cols if cands is None else np.take_along_axis(cands, cols, axis=1)
        out = np.where(np.isneginf(top), -1, arms)
        if k < self.slate_size:
            out = np.pad(out, ((0, 0), (0, self.slate_size - k)), constant_values=-1)
        return out

    def update(self, context: np.ndarray | None, action: np.ndarray, reward: np.ndarray) -> None:
        """Pass one row per examined position of each (n, k) slate to the base policy."""
        action = np.asarray(action)
        reward = np.asarray(reward, dtype=np.float64)
        self._check_feedback(action, reward)
        keep = examined_mask(reward, action, self.feedback)
        rows = np.nonzero(keep)[0]
        x = None
        if self.base.dim:
            if context is None:
                raise RankloopError(f"{self.base!r} needs the context in update")
            x = np.asarray(context, dtype=np.float64)[rows]
        self.base.update(x, action[keep], reward[keep])
        self.n_updates_ += len(rows)


@register_policy("inslate_ts")
class InSlateThompson(SlatePolicy):
    """In-slate Thompson sampling with Beta posteriors per item (or per item and slot).

    Slot j draws θ̃ ~ Beta(alpha + s, beta + n - s) for the candidates not placed yet (slot j's
    own posterior when `per_slot`) and places the best. `resample=False` draws once per row.
    """

    _state: ClassVar[tuple[str, ...]] = ("successes_", "trials_")

    def __init__(
        self,
        n_arms: int,
        slate_size: int,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        per_slot: bool = True,
        resample: bool = True,
        feedback: str = "all",
        batch_size: int = 1,
        random_state: int = 0,
        tie_break: str = "random",
    ) -> None:
        _check_slate(slate_size, n_arms, feedback)
        if alpha <= 0 or beta <= 0:
            raise ConfigError(f"Beta prior needs alpha, beta > 0, got ({alpha}, {beta})")
        super().__init__(
            n_arms, batch_size=batch_size, random_state=random_state, tie_break=tie_break
        )
        self.slate_size = int(slate_size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.per_slot = bool(per_slot)
        self.resample = bool(resample)
        self.feedback = feedback
        self._init_state()

    def _init_state(self) -> None:
        slots = self.slate_size if self.per_slot else 1
        self.successes_ = np.zeros((self.n_arms, slots))
        self.trials_ = np.zeros((self.n_arms, slots))

    def _sample(self, cands: np.ndarray, slot: int) -> np.ndarray:
        j = slot if self.per_slot else 0
        s, t = self.successes_[cands, j], self.trials_[cands, j]
        return self._rng.beta(self.alpha + s, self.beta + t - s)

    def _select_slate(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        n = x.shape[0]
        if cands is None:
            cands = np.broadcast_to(np.arange(self.n_arms), (n, self.n_arms))
        valid = cands >= 0
        safe = np.maximum(cands, 0)
        out = np.full((n, self.slate_size), -1, dtype=np.int64)
        rows = np.arange(n)
        theta = self._sample(safe, 0)
        for j in range(min(self.slate_size, cands.shape[1])):
            if j and (self.resample or self.per_slot):
                theta = self._sample(safe, j)
            theta = np.where(valid, theta, -np.inf)
            col = argmax_rows(theta, self._rng, self.tie_break)
            ok = valid[rows, col]
            out[ok, j] = cands[rows[ok], col[ok]]
            valid = valid.copy()
            valid[rows, col] = False
        return out

    def _apply(self, x: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        if reward.min() < 0 or reward.max() > 1:
            raise RankloopError("InSlateThompson needs rewards (clicks) in [0, 1]")
        keep = examined_mask(reward, action, self.feedback)
        slot = np.broadcast_to(np.arange(action.shape[1]), action.shape)[keep]
        j = slot if self.per_slot else np.zeros_like(slot)
        np.add.at(self.successes_, (action[keep], j), reward[keep])
        np.add.at(self.trials_, (action[keep], j), 1.0)
