"""Knowledge distillation from a small uniformly random slice (label-based KD, after Liu et al.,
SIGIR 2020, "A general knowledge distillation framework for counterfactual recommendation via
uniform data"; AutoDebias, Chen et al., SIGIR 2021, uses the same slice).

A teacher, logistic MF with user, item and global biases, is fitted on the uniform ratings
(label 1 for a rating >= `threshold`): it sees no selection bias, only very little data. The
student is pointwise MF on the MNAR clicks in which an unclicked pair's target is not 0 but the
teacher's relevance, scaled by `alpha`:

    target = Y + (1 − Y)·α·σ(teacher logit),     loss = mean over pairs (ŷ − target)²

α = 0 is the plain pointwise MF on clicks; α = 1 trusts the teacher fully on the unclicked
pairs (the positive-unlabeled part, where exposure bias hides relevant items).
"""

from __future__ import annotations

import numpy as np
import torch

from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError
from rankloop.recsys.relmf import L2Scope, Score, TorchMF, pair_sampler


class RatingTeacher(TorchMF):
    """Logistic MF with biases on explicit ratings, label rating >= `threshold` (the teacher)."""

    def __init__(
        self,
        factors: int = 4,
        *,
        threshold: float = 4.0,
        learning_rate: float = 0.02,
        regularization: float = 0.1,
        iterations: int = 300,
        batch_size: int = 256,
        random_state: int = 0,
        device: str = "auto",
        num_threads: int | None = 1,
    ) -> None:
        self._keep(locals())
        self.bias, self.l2_scope = True, "example"

    def fit(self, ratings: Interactions) -> RatingTeacher:
        """Fit on explicit ratings (every stored pair is a labelled example)."""
        if not isinstance(ratings, Interactions) or ratings.kind != "explicit" or ratings.nnz == 0:
            raise RankloopError("the teacher needs a non-empty slice of explicit (MAR) ratings")
        u, i, r = ratings.to_triples()
        label = (r >= self.threshold).astype(np.float32)
        if label.min() == label.max():
            raise RankloopError(
                f"the uniform slice's ratings are all {'>=' if label[0] else '<'} {self.threshold:g}: "
                "the teacher needs relevant and non-relevant examples"
            )
        rng = np.random.default_rng(self.random_state)

        def draw(n: int) -> tuple[torch.Tensor, ...]:
            pick = rng.integers(0, len(u), (n, self.batch_size))
            return self._to(u[pick], i[pick], label[pick])

        def step_loss(score: Score, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            bu, bi, y = batch
            return torch.nn.functional.binary_cross_entropy_with_logits(score(bu, bi), y)

        self._train(ratings, draw, step_loss)
        return self


class UniformKD(TorchMF):
    """Pointwise MF on clicks whose unclicked targets come from a teacher fitted on a uniform
    slice (`fit(clicks, uniform=ratings)`); see the module docstring."""

    def __init__(
        self,
        factors: int = 64,
        *,
        alpha: float = 0.5,
        threshold: float = 4.0,
        teacher_factors: int = 4,
        teacher_regularization: float = 0.1,
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

    def fit(self, clicks: Interactions, *, uniform: Interactions) -> UniformKD:
        """Fit the teacher on `uniform` (explicit ratings on uniformly random pairs, same shape
        as `clicks`), then the student on `clicks`."""
        self._check(clicks)
        if isinstance(self.alpha, bool) or not 0.0 <= float(self.alpha) <= 1.0:
            raise RankloopError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if not isinstance(uniform, Interactions) or uniform.shape != clicks.shape:
            raise RankloopError(
                f"UniformKD needs the uniform slice as Interactions of shape {clicks.shape}"
            )
        teacher = RatingTeacher(
            self.teacher_factors,
            threshold=self.threshold,
            regularization=self.teacher_regularization,
            random_state=self.random_state,
            device=self.device,
            num_threads=self.num_threads,
        ).fit(uniform)
        self.teacher_ = teacher
        ones = np.ones(clicks.n_items, np.float32)  # θ is not used: no inverse weighting here
        draw = pair_sampler(self, clicks, ones, "uniform")
        tu = torch.from_numpy(teacher.user_factors_)
        ti = torch.from_numpy(teacher.item_factors_)

        def step_loss(score: Score, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            u, i, y, _ = batch
            soft = torch.sigmoid((tu.to(u.device)[u] * ti.to(u.device)[i]).sum(1))
            target = y + (1.0 - y) * float(self.alpha) * soft
            return ((torch.sigmoid(score(u, i)) - target) ** 2).mean()

        self._train(clicks, draw, step_loss)
        return self
