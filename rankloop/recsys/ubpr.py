"""UBPR (Saito, ICTIR 2020): unbiased pairwise learning from biased implicit feedback, in torch.

For a user, a clicked item i and another item j, the loss

    −(Y_i/θ_i)·(1 − Y_j/θ_j)·log σ(ŷ_i − ŷ_j)

is unbiased for the ideal pairwise loss on relevance. A clicked j gives a negative weight;
the non-negative variant floors each term at −β, trading bias for variance.
"""

from __future__ import annotations

import numpy as np
import torch

from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError
from rankloop.recsys.propensity import Propensity, check_propensity, propensity_at
from rankloop.recsys.relmf import L2Scope, Score, TorchMF, check_clip, resolve_device


def ubpr_loss(
    score_i: torch.Tensor,
    score_j: torch.Tensor,
    click_i: torch.Tensor,
    click_j: torch.Tensor,
    theta_i: torch.Tensor,
    theta_j: torch.Tensor,
    *,
    clip: float = 0.0,
    beta: float | None = None,
) -> torch.Tensor:
    """mean of −(Y_i/θ_i)(1 − Y_j/θ_j) log σ(s_i − s_j), θ → max(θ, clip), terms floored at −β.

    `beta=None` keeps the plain unbiased estimator; θ is read only where the click is 1.
    """

    def ratio(y: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
        th = torch.clamp(th, min=clip) if clip > 0 else th
        return torch.where(y > 0, y / th, torch.zeros_like(y))

    local = (
        -ratio(click_i, theta_i)
        * (1.0 - ratio(click_j, theta_j))
        * torch.nn.functional.logsigmoid(score_i - score_j)
    )
    if beta is not None:
        local = torch.clamp(local, min=-beta)
    return local.mean()


class UBPR(TorchMF):
    """Unbiased BPR: ⟨u, i⟩ trained on (clicked i, any other j) pairs with `ubpr_loss`.

    Each Adam step draws `batch_size` clicked (user, i) pairs and, for each, an item j ≠ i
    uniformly from the whole catalogue (clicked or not), as in the authors' sampler. With
    `bias`, the item bias enters the score difference (user and global biases cancel).
    """

    def __init__(
        self,
        factors: int = 64,
        *,
        clip: float = 0.0,
        beta: float | None = None,
        learning_rate: float = 0.005,
        regularization: float = 0.01,
        iterations: int = 1000,
        batch_size: int = 2048,
        bias: bool = False,
        l2_scope: L2Scope = "example",
        random_state: int = 0,
        device: str = "auto",
        num_threads: int | None = 1,
    ) -> None:
        self._keep(locals())

    def fit(self, clicks: Interactions, *, propensity: Propensity) -> UBPR:
        """Fit on implicit clicks with exposure propensities θ."""
        self._check(clicks)
        if clicks.n_items < 2:
            raise RankloopError("UBPR needs at least two items")
        if self.beta is not None and not (np.isfinite(self.beta) and self.beta >= 0):
            raise RankloopError(f"beta must be a finite number >= 0 or None, got {self.beta}")
        check_clip(self.clip)
        check_propensity(propensity, clicks.shape)
        pos_u, pos_i, _ = clicks.to_triples()
        theta_pos = propensity_at(propensity, pos_u, pos_i, clicks.shape)
        rng = np.random.default_rng(self.random_state)
        ones = torch.ones(self.batch_size, device=resolve_device(self.device))

        def draw(n: int) -> tuple[torch.Tensor, ...]:
            shape = (n, self.batch_size)
            pick = rng.integers(0, len(pos_u), shape)
            u, i = pos_u[pick], pos_i[pick]
            j = rng.integers(0, clicks.n_items - 1, shape)
            j = j + (j >= i)  # uniform over the items other than i
            yj = clicks.contains(u, j).astype(np.float32)
            theta_j = np.ones(shape, np.float32)
            hit = yj > 0
            theta_j[hit] = propensity_at(propensity, u[hit], j[hit], clicks.shape)
            return self._to(u, i, j, yj, theta_pos[pick], theta_j)

        def step_loss(score: Score, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            u, i, j, yj, th_i, th_j = batch
            return ubpr_loss(
                score(u, i),
                score(u, j),
                ones,
                yj,
                th_i,
                th_j,
                clip=self.clip,
                beta=self.beta,
            )

        self._train(clicks, draw, step_loss)
        return self
