"""Rel-MF (Saito et al., WSDM 2020): matrix factorisation trained with the IPS loss, in torch.

Clicks are Y = O·R, exposure O has propensity θ. The IPS loss

    mean over pairs of  (Y/θ)·δ1(ŷ) + (1 − Y/θ)·δ0(ŷ)

is unbiased for the ideal loss mean[R·δ1(ŷ) + (1 − R)·δ0(ŷ)]; the clipped estimator uses
max(θ, M) instead of θ, trading bias for variance. Runs on "cuda" when present, else the CPU,
where a fixed `random_state` reproduces results bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from rankloop._runtime import check_random_state
from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError
from rankloop.recsys.base import FactorRecommender
from rankloop.recsys.propensity import Propensity, check_propensity, propensity_at

Delta = Literal["square", "log"]
# "example": λ/2 · the batch mean of the squared norms of the factor rows each example touches,
# so the penalty is on the scale of the (mean) loss and a tuned λ means the same at any data size;
# "matrix": λ/2 · ‖U‖² + λ/2 · ‖V‖² at every step (tf.nn.l2_loss of the whole matrices, as in
# the Rel-MF / UBPR authors' code), whose weight against the loss grows with the catalogue size.
L2Scope = Literal["example", "matrix"]
_EPS = 1e-7
_CHUNK_PAIRS = 1 << 21  # sampled training pairs held in memory at once


def resolve_device(device: str) -> torch.device:
    """The torch device for a name; "auto" is CUDA when torch sees a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RankloopError(f"device {device!r} requested but torch sees no CUDA GPU")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch CPU ops with `n` threads (None: leave as is), restoring the old count after.

    Small factor models are fastest single-threaded, and a fixed count keeps CPU results
    bit-for-bit reproducible.
    """
    if n is None:
        yield
        return
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise RankloopError(f"num_threads must be a positive int or None, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather rows with a deterministic backward (plain indexing accumulates in arbitrary order)."""
    return F.embedding(index, table)


def _deltas(pred: torch.Tensor, delta: Delta) -> tuple[torch.Tensor, torch.Tensor]:
    """δ1 (loss if relevant) and δ0 (loss if not) of predicted relevance probabilities."""
    if delta == "square":
        return (1.0 - pred) ** 2, pred**2
    if delta == "log":
        p = pred.clamp(_EPS, 1.0 - _EPS)
        return -torch.log(p), -torch.log1p(-p)
    raise RankloopError(f"delta must be 'square' or 'log', got {delta!r}")


def ips_loss(
    pred: torch.Tensor,
    clicks: torch.Tensor,
    propensity: torch.Tensor,
    *,
    clip: float = 0.0,
    neg_weight: float = 1.0,
    delta: Delta = "square",
) -> torch.Tensor:
    """IPS pointwise loss: Σ[(Y/θ')δ1 + w(1 − Y/θ')δ0] / Σ[Y + w(1 − Y)], θ' = max(θ, clip).

    With `neg_weight` w = 1 this is mean[(Y/θ)δ1(ŷ) + (1 − Y/θ)δ0(ŷ)], the paper's estimator;
    `clip` = M > 0 gives the clipped estimator. `pred` are probabilities in (0, 1); all
    arguments share one shape. θ is only read where Y = 1, so θ elsewhere may be anything > 0.
    """
    if not (pred.shape == clicks.shape == propensity.shape):
        raise RankloopError(
            f"ips_loss: shapes differ {pred.shape}, {clicks.shape}, {propensity.shape}"
        )
    theta = torch.clamp(propensity, min=clip) if clip > 0 else propensity
    ratio = torch.where(clicks > 0, clicks / theta, torch.zeros_like(clicks))
    d1, d0 = _deltas(pred, delta)
    local = ratio * d1 + neg_weight * (1.0 - ratio) * d0
    return local.sum() / (clicks + neg_weight * (1.0 - clicks)).sum()


def naive_loss(
    pred: torch.Tensor, clicks: torch.Tensor, *, delta: Delta = "square"
) -> torch.Tensor:
    """The biased loss that treats clicks as relevance: mean[Y·δ1 + (1 − Y)·δ0]."""
    d1, d0 = _deltas(pred, delta)
    return (clicks * d1 + (1.0 - clicks) * d0).mean()


def sample_unclicked(
    clicks: Interactions, n: int, random_state: int | np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`n` (user, item) pairs drawn uniformly from the pairs with no stored click (the negatives
    of the IPS losses); a Generator `random_state` is advanced, so repeated calls differ."""
    rng = check_random_state(random_state)
    n_u, n_i = clicks.shape
    if clicks.nnz >= n_u * n_i:
        raise RankloopError("every (user, item) pair is clicked: nothing unlabeled to sample")
    users = np.empty(0, np.int64)
    items = np.empty(0, np.int64)
    density = clicks.nnz / (n_u * n_i)
    while len(users) < n:
        m = int((n - len(users)) / (1.0 - density) * 1.1) + 16
        u = rng.integers(0, n_u, m)
        i = rng.integers(0, n_i, m)
        keep = ~clicks.contains(u, i)
        users = np.concatenate([users, u[keep]])
        items = np.concatenate([items, i[keep]])
    return users[:n], items[:n]


# `score(u, i)`: the logits of (user, item) rows; `score(u, i, model=m)` those of the m-th
# extra factor pair a model asked `TorchMF._train` for (e.g. DR-JL's imputation model).
Score = Callable[..., torch.Tensor]
# How the pointwise models draw a step's (user, item) pairs: "uniform" over all pairs, clicked or
# not, so the batch mean is the estimator's mean over pairs (the authors' code samples the full
# pair list); "balanced": half clicked pairs, half unclicked, which re-weights the loss towards
# the clicks (each half's mean counts equally), a different objective kept for comparison.
Sampling = Literal["uniform", "balanced"]


def check_clip(clip: float, name: str = "clip") -> None:
    """A propensity clipping bound M must be a number in [0, 1] (0: no clipping)."""
    if isinstance(clip, bool) or not isinstance(clip, (int, float, np.floating)):
        raise RankloopError(f"{name} must be a number in [0, 1], got {clip!r}")
    if not 0.0 <= float(clip) <= 1.0:
        raise RankloopError(f"{name} must be in [0, 1] (a propensity floor), got {clip}")


class TorchMF(FactorRecommender):
    """Shared parts of the torch factor models: seeded init, Adam loop, L2 (see `L2Scope`).

    With `bias`, the logit is ⟨u, i⟩ + b_u + b_i + b (user, item and global biases, zero at
    the start, as in the authors' MF); the fitted factors carry them as two extra columns,
    [u, b_u + b, 1]·[i, 1, b_i], so recommendation stays an inner product search.
    """

    factors: int
    learning_rate: float
    regularization: float
    iterations: int
    batch_size: int
    random_state: int
    device: str
    num_threads: int | None
    bias: bool
    l2_scope: L2Scope

    def _keep(self, params: dict[str, Any]) -> None:
        """Store a constructor's arguments unchanged as attributes (scikit-learn style: they
        are checked in `fit`); subclasses call `self._keep(locals())`."""
        for name, value in params.items():
            if name != "self":
                setattr(self, name, value)

    def _check(self, clicks: Interactions) -> None:
        if not isinstance(clicks, Interactions) or clicks.kind != "implicit":
            raise RankloopError(f"{type(self).__name__}.fit expects implicit Interactions (clicks)")
        if clicks.nnz == 0:
            raise RankloopError("cannot fit on interactions with no clicks")
        for name in ("factors", "iterations", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise RankloopError(f"{name} must be a positive int, got {v!r}")

    def _init(
        self, n_users: int, n_items: int, stream: int = 0
    ) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
        """Xavier-uniform factors from a seeded CPU generator (the same draw on every device);
        `stream` > 0 draws an independent second set (e.g. an imputation model's)."""
        dev = resolve_device(self.device)
        g = torch.Generator().manual_seed(int(self.random_state) + 1_000_003 * stream)

        def draw(n: int) -> torch.nn.Parameter:
            a = float(np.sqrt(6.0 / (n + self.factors)))
            w = (torch.rand(n, self.factors, generator=g) * 2.0 - 1.0) * a
            return torch.nn.Parameter(w.to(dev))

        return draw(n_users), draw(n_items)

    def _to(self, *arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
        dev = resolve_device(self.device)
        return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in arrays)

    def _train(
        self,
        clicks: Interactions,
        draw: Callable[[int], tuple[torch.Tensor, ...]],
        step_loss: Callable[[Score, tuple[torch.Tensor, ...]], torch.Tensor],
        *,
        extra_models: int = 0,
    ) -> None:
        """Adam on `step_loss(score, batch) + L2`, `score(u, i)` the logits of (user, item) rows.

        `draw(n)` samples the batches of the next n steps; they are drawn in chunks (vectorised,
        bounded memory) from one seeded generator, so the sample stream does not depend on the
        device. The biases, when on, are not regularised. `extra_models` more factor pairs (e.g.
        an imputation model, scored with `score(u, i, model=1)`) are drawn from their own seed
        streams, trained by the same optimiser and regularised by the same L2.
        """
        if not isinstance(self.bias, bool):
            raise RankloopError(f"bias must be True or False, got {self.bias!r}")
        if self.l2_scope not in ("example", "matrix"):
            raise RankloopError(f"l2_scope must be 'example' or 'matrix', got {self.l2_scope!r}")
        lam = float(self.regularization)
        if not np.isfinite(lam) or lam < 0:
            raise RankloopError(f"regularization must be a finite number >= 0, got {lam!r}")
        chunk = max(1, _CHUNK_PAIRS // self.batch_size)
        with torch_threads(self.num_threads):
            tables = [self._init(*clicks.shape, stream=m) for m in range(1 + extra_models)]
            U, V = tables[0]
            params = [p for pair in tables for p in pair]
            if self.bias:
                bu, bi, b0 = (
                    torch.nn.Parameter(torch.zeros(n, 1, device=U.device))
                    for n in (clicks.n_users, clicks.n_items, 1)
                )
                params += [bu, bi, b0]

            touched: list[torch.Tensor] = []  # per-example squared norms of this step's rows

            def score(u: torch.Tensor, i: torch.Tensor, model: int = 0) -> torch.Tensor:
                users, items = tables[model]
                fu, fi = rows(users, u), rows(items, i)
                if self.l2_scope == "example":
                    touched.append(fu.pow(2).sum(1) + fi.pow(2).sum(1))
                s = (fu * fi).sum(1)
                if self.bias and model == 0:
                    return s + (rows(bu, u) + rows(bi, i) + b0)[:, 0]
                return s

            def penalty() -> torch.Tensor:
                if self.l2_scope == "matrix":
                    return 0.5 * lam * sum(t.pow(2).sum() for pair in tables for t in pair)
                return 0.5 * lam * sum(t.mean() for t in touched)

            opt = torch.optim.Adam(params, lr=self.learning_rate)
            losses = torch.empty(self.iterations, device=U.device)
            for start in range(0, self.iterations, chunk):
                batches = draw(min(chunk, self.iterations - start))
                for b in range(batches[0].shape[0]):
                    opt.zero_grad(set_to_none=True)
                    touched.clear()
                    loss = step_loss(score, tuple(t[b] for t in batches))
                    loss = loss + penalty()
                    loss.backward()
                    opt.step()
                    losses[start + b] = loss.detach()
        self.loss_curve_ = losses.cpu().numpy()
        users, items = U.detach().cpu().numpy(), V.detach().cpu().numpy()
        if self.bias:
            ones_u, ones_i = (
                np.ones((len(users), 1), users.dtype),
                np.ones((len(items), 1), items.dtype),
            )
            users = np.hstack([users, (bu + b0).detach().cpu().numpy(), ones_u])
            items = np.hstack([items, ones_i, bi.detach().cpu().numpy()])
        self._set_factors(users, items, clicks)


def pair_sampler(
    model: TorchMF, clicks: Interactions, propensity: Propensity, sampling: Sampling
) -> Callable[[int], tuple[torch.Tensor, ...]]:
    """`draw(n)` for the pointwise models: n steps of (users, items, clicks, θ) batches of
    `model.batch_size` pairs, sampled as `sampling` says, θ = 1 where there is no click."""
    if sampling not in ("uniform", "balanced"):
        raise RankloopError(f"sampling must be 'uniform' or 'balanced', got {sampling!r}")
    pos_u, pos_i, _ = clicks.to_triples()
    theta = propensity_at(propensity, pos_u, pos_i, clicks.shape)
    rng = np.random.default_rng(model.random_state)
    size = model.batch_size

    def uniform(n: int) -> tuple[np.ndarray, ...]:
        u = rng.integers(0, clicks.n_users, (n, size))
        i = rng.integers(0, clicks.n_items, (n, size))
        y = clicks.contains(u, i)
        th = np.ones((n, size), np.float32)
        th[y] = propensity_at(propensity, u[y], i[y], clicks.shape)
        return u, i, y.astype(np.float32), th

    def balanced(n: int) -> tuple[np.ndarray, ...]:
        half = max(1, size // 2)
        pick = rng.integers(0, len(pos_u), (n, half))
        neg_u, neg_i = sample_unclicked(clicks, n * half, rng)
        y = np.concatenate([np.ones((n, half)), np.zeros((n, half))], axis=1)
        return (
            np.concatenate([pos_u[pick], neg_u.reshape(n, half)], axis=1),
            np.concatenate([pos_i[pick], neg_i.reshape(n, half)], axis=1),
            y.astype(np.float32),
            np.concatenate([theta[pick], np.ones((n, half), np.float32)], axis=1),
        )

    sample = uniform if sampling == "uniform" else balanced
    return lambda n: model._to(*sample(n))


class RelMF(TorchMF):
    """Rel-MF: sigmoid(⟨u, i⟩) fitted with the (clipped) IPS loss.

    Each Adam step draws `batch_size` pairs as `sampling` says (see `Sampling`); `neg_weight`
    w weights the unclicked pairs. `clip` = M: θ → max(θ, M); 0 is the unclipped IPS
    estimator. `bias` adds user, item and global biases to the logit (see `TorchMF`).
    """

    def __init__(
        self,
        factors: int = 64,
        *,
        clip: float = 0.0,
        learning_rate: float = 0.005,
        regularization: float = 0.01,
        iterations: int = 1000,
        batch_size: int = 2048,
        neg_weight: float = 1.0,
        delta: Delta = "square",
        sampling: Sampling = "uniform",
        bias: bool = False,
        l2_scope: L2Scope = "example",
        random_state: int = 0,
        device: str = "auto",
        num_threads: int | None = 1,
    ) -> None:
        self._keep(locals())

    def fit(self, clicks: Interactions, *, propensity: Propensity) -> RelMF:
        """Fit on implicit clicks with exposure propensities θ (see `rankloop.recsys.propensity`)."""
        self._check(clicks)
        check_clip(self.clip)
        check_propensity(propensity, clicks.shape)
        draw = pair_sampler(self, clicks, propensity, self.sampling)

        def step_loss(score: Score, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            u, i, y, th = batch
            pred = torch.sigmoid(score(u, i))
            return ips_loss(
                pred, y, th, clip=self.clip, neg_weight=self.neg_weight, delta=self.delta
            )

        self._train(clicks, draw, step_loss)
        return self
