"""Doubly robust joint learning (DR-JL, Wang et al., ICML 2019) for clicks with a logged exposure.

When only clicks are known, a doubly robust estimator of the ideal pointwise loss collapses to
IPS: the correction term needs to know which pairs were exposed. It does not collapse when the
exposure is logged (the items shown or rated, as in Coat's MNAR ratings, a search log's
impressions or `rankloop serve`'s). With exposure O, exposure propensity θ = P(O = 1), the
click Y (relevance among exposed pairs), prediction ŷ and an imputation model's relevance r̂:

    e  = Y·δ1(ŷ) + (1 − Y)·δ0(ŷ)           the loss where the label is seen (O = 1)
    ê  = r̂·δ1(ŷ) + (1 − r̂)·δ0(ŷ)           the imputed loss, every pair
    L  = mean over pairs [ ê + (O/θ)(e − ê) ]            the prediction model's loss
    Lᵢ = mean over pairs [ (O/θ)(Y − r̂)² ]                the imputation model's loss

L is unbiased if θ is right or if ê is (double robustness). The two models are learnt jointly
(one Adam step on both per batch; r̂ is held fixed in L), as DR-JL alternates them. DR-JL's
imputation loss is (O/θ)(e − ê)²; since e − ê = (Y − r̂)(δ1 − δ0), that loss has no gradient
for r̂ where δ1 = δ0, i.e. at ŷ = 1/2, where every freshly initialised MF starts, and the two
models stay there (measured on Coat: both stuck at 0.5). Imputing the label, (Y − r̂)², has
the same minimiser where ŷ is informative and no such fixed point.
δ1 = (1 − ŷ)², δ0 = ŷ² (Rel-MF's squared loss). θ is per item, (n_i / n_users)^η from the
exposure log (`theta="exposure_log"`), or the exposure propensity passed to `fit`
(`theta="given"`, e.g. the true one in a simulation), clipped below at `clip`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError
from rankloop.recsys.propensity import Propensity, check_propensity, propensity_at
from rankloop.recsys.relmf import L2Scope, Score, TorchMF, check_clip


def exposure_propensity(exposure: Interactions, eta: float = 1.0) -> np.ndarray:
    """θ_i = (n_i / n_users)^η per item, n_i the users exposed to item i (floored at 1e-6)."""
    if not np.isfinite(eta) or eta < 0:
        raise RankloopError(f"eta must be a finite number >= 0, got {eta}")
    share = exposure.item_counts().astype(np.float64) / max(1, exposure.n_users)
    return np.clip(share**eta, 1e-6, 1.0).astype(np.float32)


def dr_loss(
    pred: torch.Tensor,
    imputed: torch.Tensor,
    clicks: torch.Tensor,
    exposed: torch.Tensor,
    theta: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, Lᵢ) of the module docstring for one batch; gradients of L reach `pred` only and those
    of Lᵢ reach `imputed` only."""
    r_hat = imputed.detach()
    d1, d0 = (1.0 - pred) ** 2, pred**2
    e = clicks * d1 + (1.0 - clicks) * d0
    e_hat = r_hat * d1 + (1.0 - r_hat) * d0
    w = exposed / theta
    pred_loss = (e_hat + w * (e - e_hat)).mean()
    imp_loss = (w * (clicks - imputed) ** 2).mean()
    return pred_loss, imp_loss


class DRJL(TorchMF):
    """DR-JL: sigmoid(⟨u, i⟩) learnt with the doubly robust loss and an MF imputation model of
    the same size, from clicks and the exposure log they came from (`fit(clicks, exposure=...)`).
    """

    def __init__(
        self,
        factors: int = 64,
        *,
        eta: float = 1.0,
        clip: float = 0.05,
        theta: Literal["exposure_log", "given"] = "exposure_log",
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

    def fit(
        self,
        clicks: Interactions,
        *,
        exposure: Interactions,
        propensity: Propensity | None = None,
    ) -> DRJL:
        """Fit on clicks and the exposure log (every shown or rated pair; clicks must lie in it);
        `propensity` is the exposure propensity, used when `theta="given"`."""
        self._check(clicks)
        check_clip(self.clip)
        if self.theta not in ("exposure_log", "given"):
            raise RankloopError(f"theta must be 'exposure_log' or 'given', got {self.theta!r}")
        if self.theta == "given":
            if propensity is None:
                raise RankloopError('theta="given" needs the exposure propensity (propensity=...)')
            check_propensity(propensity, clicks.shape)
        if not isinstance(exposure, Interactions) or exposure.shape != clicks.shape:
            raise RankloopError(
                f"DR-JL needs the exposure log as Interactions of shape {clicks.shape}"
            )
        cu, ci, _ = clicks.to_triples()
        outside = int((~exposure.contains(cu, ci)).sum())
        if outside:
            raise RankloopError(
                f"{outside:,} of {len(cu):,} clicks are on pairs the exposure log does not hold; "
                "pass the log the clicks came from"
            )
        per_item = self.theta == "exposure_log"
        base = exposure_propensity(exposure, self.eta) if per_item else None
        rng = np.random.default_rng(self.random_state)
        size = self.batch_size

        def draw(n: int) -> tuple[torch.Tensor, ...]:
            u = rng.integers(0, clicks.n_users, (n, size))
            i = rng.integers(0, clicks.n_items, (n, size))
            y = clicks.contains(u, i).astype(np.float32)
            o = exposure.contains(u, i).astype(np.float32)
            th = (
                base[i]
                if base is not None
                else propensity_at(propensity, u.ravel(), i.ravel(), clicks.shape)
            )
            th = np.maximum(th.reshape(u.shape), self.clip).astype(np.float32)
            return self._to(u, i, y, o, th)

        def step_loss(score: Score, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            u, i, y, o, th = batch
            imputed = torch.sigmoid(score(u, i, model=1))  # the imputation model
            pred_loss, imp_loss = dr_loss(torch.sigmoid(score(u, i)), imputed, y, o, th)
            return pred_loss + imp_loss

        self._train(clicks, draw, step_loss, extra_models=1)
        return self
