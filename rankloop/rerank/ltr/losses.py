"""Ranking losses on padded lists (torch).

Every loss takes `scores` (B, K), `labels` (B, K) and a bool `mask` (B, K) of real positions, and
returns the loss of each list, shape (B,), so callers can weight lists (e.g. by the sessions
behind an aggregated click list) before reducing. Labels may be graded relevance, click counts,
or propensity-weighted click counts; nothing assumes they are integers.

- `pointwise_loss`: per-document squared error, or sigmoid cross-entropy with soft labels.
- `ranknet_loss`: RankNet's logistic loss on preferred pairs (label_i > label_j), or on pairs
  with explicit weights (e.g. click/no-click co-occurrence counts).
- `listnet_loss`: the listwise softmax cross-entropy -sum_i y_i log softmax(s)_i (ListNet's top-one
  form with unnormalised targets, as ULTRA's `softmax_loss`).
- `lambdarank_loss`: RankNet pairs weighted by |delta nDCG| of swapping the pair in the current
  ranking (LambdaRank; the LambdaLoss framework's NDCG-Loss1-style weighting).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from rankloop._runtime import Registry
from rankloop.errors import ConfigError

_NEG = -1e4  # stands in for -inf in padded scores: finite, so no 0 * inf = NaN


LossFn = Callable[..., torch.Tensor]
# Loss names (as `Ranker(loss=...)` and the click estimators spell them) -> loss functions.
LOSSES: Registry[torch.Tensor] = Registry("loss")


def _masked(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(~mask, _NEG)


@LOSSES.register("pointwise")
def pointwise_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    *,
    kind: str = "bce",
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) sum over documents of `weights * l(s, y)`.

    kind="bce": `-(y log sigmoid(s) + (1 - y) log sigmoid(-s))`, soft labels allowed (also > 1,
    as in unbiased pointwise IPS); kind="mse": `(s - y)^2`.
    """
    if kind == "bce":
        per = -(labels * F.logsigmoid(scores) + (1.0 - labels) * F.logsigmoid(-scores))
    elif kind == "mse":
        per = (scores - labels) ** 2
    else:
        raise ConfigError(f"pointwise kind must be 'bce' or 'mse', got {kind!r}")
    if weights is not None:
        per = per * weights
    return (per * mask).sum(dim=1)


def preference_pairs(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, K, K) float: 1 where both positions are real and label_i > label_j."""
    valid = mask[:, :, None] & mask[:, None, :]
    return ((labels[:, :, None] > labels[:, None, :]) & valid).to(labels.dtype)


def pairwise_logistic(scores: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, K, K) `log(1 + exp(-sigma (s_i - s_j)))`."""
    return F.softplus(-sigma * (scores[:, :, None] - scores[:, None, :]))


@LOSSES.register("ranknet")
def ranknet_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    *,
    pair_weights: torch.Tensor | None = None,
    sigma: float = 1.0,
) -> torch.Tensor:
    """(B,) sum over pairs (i preferred to j) of `w_ij log(1 + exp(-sigma (s_i - s_j)))`.

    `pair_weights` (B, K, K) replaces the default pairs `label_i > label_j` (weight 1).
    """
    w = preference_pairs(labels, mask) if pair_weights is None else pair_weights
    valid = mask[:, :, None] & mask[:, None, :]
    return (pairwise_logistic(scores, sigma) * w * valid).sum(dim=(1, 2))


@LOSSES.register("listnet")
def listnet_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) `-sum_i y_i log softmax(s)_i` over the real positions (0 for an all-zero list)."""
    logp = torch.log_softmax(_masked(scores, mask), dim=1)
    return -(labels * logp * mask).sum(dim=1)


def _discounts(scores: torch.Tensor, mask: torch.Tensor, k: int | None) -> torch.Tensor:
    """(B, K) `1 / log2(1 + rank)` of each position's rank under `scores`, 0 past `k` or padding."""
    order = torch.argsort(_masked(scores, mask), dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ar = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    ranks.scatter_(1, order, ar)
    disc = mask / torch.log2(ranks.to(scores.dtype) + 2.0)
    return disc if k is None else torch.where(ranks < k, disc, 0.0)


def ideal_dcg(labels: torch.Tensor, mask: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """(B,) DCG of the ideal ordering with gains `2^y - 1`, cut at `k`."""
    gains = torch.sort((torch.exp2(labels) - 1.0) * mask, dim=1, descending=True).values
    disc = 1.0 / torch.log2(torch.arange(labels.shape[1], device=labels.device) + 2.0)
    if k is not None:
        disc = torch.where(torch.arange(labels.shape[1], device=labels.device) < k, disc, 0.0)
    return (gains * disc).sum(dim=1)


@LOSSES.register("lambdarank")
def lambdarank_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    *,
    sigma: float = 1.0,
    k: int | None = None,
) -> torch.Tensor:
    """(B,) RankNet loss on pairs `label_i > label_j` weighted by |delta nDCG@k| of swapping them.

    The weights use the current ranking and are not differentiated (LambdaRank's lambdas).
    """
    with torch.no_grad():
        disc = _discounts(scores, mask, k)
        gains = (torch.exp2(labels) - 1.0) * mask
        idcg = ideal_dcg(labels, mask, k)
        delta = (gains[:, :, None] - gains[:, None, :]).abs() * (
            disc[:, :, None] - disc[:, None, :]
        ).abs()
        delta = delta / torch.where(idcg > 0, idcg, 1.0)[:, None, None]
    w = preference_pairs(labels, mask) * delta
    return (pairwise_logistic(scores, sigma) * w).sum(dim=(1, 2))


def get_loss(name: str) -> LossFn:
    """A loss by name: pointwise, ranknet, listnet or lambdarank (unknown: `ConfigError`)."""
    return LOSSES.get(name)
