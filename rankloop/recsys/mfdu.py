"""MF-DU (Lee, Park and Lee, SIGIR 2021): dual unbiased learning from clicks and non-clicks.

Rel-MF corrects only the clicked pairs. MF-DU weights both sides: a click by the inverse of its
exposure propensity θ+ (item popularity^η, the shared estimator), a non-click by the inverse of
θ− = (1 − n_i / max_j n_j)^η−, the propensity that a pair is left unclicked, each clipped below
at `clip` (the authors: η = η− = 0.5, clip 0.1). Each side is self-normalised within the batch,
as in the authors' code:

    Σ_{Y=1} (1/θ+)(1 − ŷ)² / Σ_{Y=1} 1/θ+  +  Σ_{Y=0} (1/θ−) ŷ² / Σ_{Y=0} 1/θ−

The authors divide this by the batch size as well; that constant is left out, so `regularization`
(per example, see `L2Scope`) is on the scale of the loss.
"""

from __future__ import annotations

import numpy as np
import torch

from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError
from rankloop.recsys.propensity import Propensity, check_propensity
from rankloop.recsys.relmf import (
    L2Scope,
    Sampling,
    Score,
    TorchMF,
    check_clip,
    pair_sampler,
)


def du_loss(
    pred: torch.Tensor,
    clicks: torch.Tensor,
    theta_pos: torch.Tensor,
    theta_neg: torch.Tensor,
    *,
    clip: float = 0.1,
) -> torch.Tensor:
    """The dual unbiased loss above, over one batch; θ± are clipped below at `clip`."""
    if not (pred.shape == clicks.shape == theta_pos.shape == theta_neg.shape):
        raise RankloopError("du_loss: pred, clicks and both propensities must share one shape")
    w_pos = clicks / torch.clamp(theta_pos, min=clip)
    w_neg = (1.0 - clicks) / torch.clamp(theta_neg, min=clip)
    eps = 1e-6
    return (w_pos * (1.0 - pred) ** 2).sum() / (w_pos.sum() + eps) + (w_neg * pred**2).sum() / (
        w_neg.sum() + eps
    )


def unclicked_propensity(clicks: Interactions, eta: float = 0.5) -> np.ndarray:
    """θ−_i = (1 − n_i / max_j n_j)^η per item, n_i the item's clicks (MF-DU's non-click side)."""
    if not np.isfinite(eta) or eta < 0:
        raise RankloopError(f"neg_eta must be a finite number >= 0, got {eta}")
    counts = clicks.item_counts().astype(np.float64)
    top = counts.max() if counts.max() > 0 else 1.0
    return ((1.0 - counts / top) ** eta).astype(np.float32)


class MFDU(TorchMF):
    """MF-DU: sigmoid(⟨u, i⟩) fitted with the dual unbiased loss (`du_loss`).

    `propensity` (θ+, the clicked side) comes from the shared estimators; θ− is computed from
    the clicks with exponent `neg_eta`. Pairs are drawn as `sampling` says (uniform over all
    pairs by default, which is what the authors' epochs over the full grid do on average).
    """

    def __init__(
        self,
        factors: int = 64,
        *,
        clip: float = 0.1,
        neg_eta: float = 0.5,
        learning_rate: float = 0.005,
        regularization: float = 0.01,
        iterations: int = 1000,
        batch_size: int = 2048,
        sampling: Sampling = "uniform",
        bias: bool = False,
        l2_scope: L2Scope = "example",
        random_state: int = 0,
        device: str = "auto",
        num_threads: int | None = 1,
    ) -> None:
        self._keep(locals())

    def fit(self, clicks: Interactions, *, propensity: Propensity) -> MFDU:
        """Fit on implicit clicks with the clicked side's exposure propensities θ+."""
        self._check(clicks)
        check_clip(self.clip)
        check_propensity(propensity, clicks.shape)
        theta_neg = torch.from_numpy(unclicked_propensity(clicks, self.neg_eta))
        draw = pair_sampler(self, clicks, propensity, self.sampling)

        def step_loss(score: Score, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            u, i, y, th = batch
            pred = torch.sigmoid(score(u, i))
            neg = theta_neg.to(i.device)[i]
            return du_loss(pred, y, th, neg, clip=self.clip)

        self._train(clicks, draw, step_loss)
        return self
