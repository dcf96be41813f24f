"""Context-free policies: ε-greedy, UCB1, and the random and popularity baselines.

Each keeps per-arm counts and reward sums; selection is vectorised over rows and candidates.
(Bernoulli Thompson sampling lives in `thompson.py`.)
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from rankloop.bandits.policies.base import Policy, register_policy
from rankloop.errors import ConfigError


class CountingPolicy(Policy):
    """Per-arm pull counts `counts_` and reward sums `sums_`, updated with `np.bincount`."""

    _state: ClassVar[tuple[str, ...]] = ("counts_", "sums_")

    def _init_state(self) -> None:
        self.counts_ = np.zeros(self.n_arms)
        self.sums_ = np.zeros(self.n_arms)

    def _apply(self, x: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        self.counts_ += np.bincount(action, minlength=self.n_arms)
        self.sums_ += np.bincount(action, weights=reward, minlength=self.n_arms)

    def means(self, default: float = 0.0) -> np.ndarray:
        """(n_arms,) empirical mean reward; `default` for arms never pulled."""
        return np.divide(
            self.sums_,
            self.counts_,
            out=np.full(self.n_arms, float(default)),
            where=self.counts_ > 0,
        )

    def _gather(self, values: np.ndarray, n: int, cands: np.ndarray | None) -> np.ndarray:
        """(n, N) per-candidate values from a per-arm vector."""
        if cands is None:
            return np.broadcast_to(values, (n, self.n_arms)).copy()
        return values[cands]


@register_policy("random")
class RandomPolicy(CountingPolicy):
    """Uniformly random choice among the candidates (the exploration-only baseline)."""

    def __init__(
        self, n_arms: int, *, batch_size: int = 1, random_state: int = 0, tie_break: str = "random"
    ) -> None:
        super().__init__(
            n_arms, batch_size=batch_size, random_state=random_state, tie_break=tie_break
        )
        self._init_state()

    def _scores(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        n = x.shape[0]
        return self._rng.random((n, self.n_arms if cands is None else cands.shape[1]))


@register_policy("popularity")
class Popularity(CountingPolicy):
    """Pick the arm with the most reward so far (total clicks): the rich-get-richer baseline."""

    def __init__(
        self, n_arms: int, *, batch_size: int = 1, random_state: int = 0, tie_break: str = "random"
    ) -> None:
        super().__init__(
            n_arms, batch_size=batch_size, random_state=random_state, tie_break=tie_break
        )
        self._init_state()

    def _scores(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        return self._gather(self.sums_, x.shape[0], cands)


@register_policy("egreedy")
class EpsilonGreedy(CountingPolicy):
    """With probability `epsilon` a row explores (random candidate), else the best mean reward.

    Unpulled arms have mean `initial` (optimistic initial values when > the rewards' scale).
    """

    def __init__(
        self,
        n_arms: int,
        epsilon: float = 0.1,
        *,
        initial: float = 0.0,
        batch_size: int = 1,
        random_state: int = 0,
        tie_break: str = "random",
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"epsilon must be in [0, 1], got {epsilon}")
        super().__init__(
            n_arms, batch_size=batch_size, random_state=random_state, tie_break=tie_break
        )
        self.epsilon = float(epsilon)
        self.initial = float(initial)
        self._init_state()

    def _scores(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        n = x.shape[0]
        s = self._gather(self.means(self.initial), n, cands)
        explore = self._rng.random(n) < self.epsilon
        if explore.any():
            s[explore] = self._rng.random((int(explore.sum()), s.shape[1]))
        return s


@register_policy("ucb1")
class UCB1(CountingPolicy):
    """UCB1 (Auer et al. 2002): mean + sqrt(2 ln t / n_a), t = total pulls; unpulled arms first.

    `alpha` scales the bonus (1 = the textbook UCB1).
    """

    def __init__(
        self,
        n_arms: int,
        alpha: float = 1.0,
        *,
        batch_size: int = 1,
        random_state: int = 0,
        tie_break: str = "random",
    ) -> None:
        if alpha < 0:
            raise ConfigError(f"alpha must be >= 0, got {alpha}")
        super().__init__(
            n_arms, batch_size=batch_size, random_state=random_state, tie_break=tie_break
        )
        self.alpha = float(alpha)
        self._init_state()

    def ucb(self) -> np.ndarray:
        """(n_arms,) upper confidence bounds; +inf for arms never pulled."""
        t = max(float(self.counts_.sum()), 1.0)
        pulled = self.counts_ > 0
        bonus = np.full(self.n_arms, np.inf)
        bonus[pulled] = self.alpha * np.sqrt(2.0 * np.log(t) / self.counts_[pulled])
        return np.where(pulled, self.means() + bonus, np.inf)

    def _scores(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        return self._gather(self.ucb(), x.shape[0], cands)


@register_policy("candidate_order")
class CandidateOrder(CountingPolicy):
    """Keep the candidate generator's order (the first candidates are the embedding's best):
    the no-learning retrieval baseline."""

    def __init__(
        self, n_arms: int, *, batch_size: int = 1, random_state: int = 0, tie_break: str = "first"
    ) -> None:
        super().__init__(
            n_arms, batch_size=batch_size, random_state=random_state, tie_break=tie_break
        )
        self._init_state()

    def _scores(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        width = self.n_arms if cands is None else cands.shape[1]
        return np.broadcast_to(-np.arange(width, dtype=np.float64), (x.shape[0], width)).copy()
