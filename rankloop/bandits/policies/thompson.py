"""Thompson sampling: Bernoulli (Beta posteriors) and linear (Gaussian posteriors, disjoint arms)."""

from __future__ import annotations

import numpy as np

from rankloop.bandits.policies.base import register_policy
from rankloop.bandits.policies.context_free import CountingPolicy
from rankloop.bandits.policies.linucb import RidgeArms
from rankloop.errors import ConfigError, RankloopError


@register_policy("bts")
class BernoulliTS(CountingPolicy):
    """Bernoulli Thompson sampling: arm a's click rate ~ Beta(alpha + s_a, beta + n_a - s_a).

    Each row draws its own posterior sample per candidate and picks the largest. Rewards must
    lie in [0, 1] (fractional rewards update the Beta counts fractionally).
    """

    def __init__(
        self,
        n_arms: int,
        alpha: float = 1.0,
        beta: float = 1.0,
        *,
        batch_size: int = 1,
        random_state: int = 0,
        tie_break: str = "random",
    ) -> None:
        if alpha <= 0 or beta <= 0:
            raise ConfigError(f"Beta prior needs alpha, beta > 0, got ({alpha}, {beta})")
        super().__init__(
            n_arms, batch_size=batch_size, random_state=random_state, tie_break=tie_break
        )
        self.alpha = float(alpha)
        self.beta = float(beta)
        self._init_state()

    def _apply(self, x: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        if reward.min() < 0 or reward.max() > 1:
            raise RankloopError("BernoulliTS needs rewards in [0, 1]")
        super()._apply(x, action, reward)

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) parameters of each arm's Beta posterior."""
        return self.alpha + self.sums_, self.beta + self.counts_ - self.sums_

    def _scores(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        a, b = self.posterior()
        n = x.shape[0]
        return self._rng.beta(self._gather(a, n, cands), self._gather(b, n, cands))


@register_policy("lints")
class LinearTS(RidgeArms):
    """Linear Thompson sampling (Agrawal & Goyal 2013) with a disjoint model per arm.

    Posterior θ_a ~ N(A_a⁻¹b_a, alpha² A_a⁻¹). A row only needs xᵀθ̃_a, whose distribution is
    N(xᵀθ̂_a, alpha² xᵀA_a⁻¹x), so that scalar is sampled directly: the same policy as drawing
    θ̃_a per round, at the cost of LinUCB.
    """

    def _scores(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        mean, var = self.mean_and_variance(x, cands)
        return mean + self.alpha * np.sqrt(var) * self._rng.standard_normal(mean.shape)
