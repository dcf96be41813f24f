"""Ranking losses on tiny hand-computed lists, and their sanity (padding, gradient direction)."""

from __future__ import annotations

import math

import pytest
import torch

from rankloop.errors import ConfigError
from rankloop.rerank.ltr import (
    get_loss,
    lambdarank_loss,
    listnet_loss,
    pointwise_loss,
    ranknet_loss,
)


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def m(*rows: list[bool]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def test_pointwise_hand_values() -> None:
    s, y, mask = t([0.0, 2.0]), t([1.0, 0.0]), m([True, True])
    bce = pointwise_loss(s, y, mask)
    assert bce.item() == pytest.approx(math.log(2) + math.log(1 + math.exp(2)))
    mse = pointwise_loss(s, y, mask, kind="mse")
    assert mse.item() == pytest.approx(1.0 + 4.0)
    weighted = pointwise_loss(s, y, mask, kind="mse", weights=t([2.0, 0.5]))
    assert weighted.item() == pytest.approx(2.0 + 2.0)
    with pytest.raises(ConfigError):
        pointwise_loss(s, y, mask, kind="hinge")


def test_ranknet_hand_value_and_pair_weights() -> None:
    s, y, mask = t([1.0, 0.0, 5.0]), t([1.0, 0.0, 0.0]), m([True, True, False])
    # one pair (0 over 1); the padded third document is ignored
    assert ranknet_loss(s, y, mask).item() == pytest.approx(math.log(1 + math.exp(-1)))
    w = torch.zeros(1, 3, 3, dtype=torch.float64)
    w[0, 1, 0] = 3.0  # "1 preferred to 0", three times
    assert ranknet_loss(s, y, mask, pair_weights=w).item() == pytest.approx(
        3 * math.log(1 + math.exp(1))
    )


def test_listnet_hand_values() -> None:
    s, mask = t([0.0, 0.0, 9.0]), m([True, True, False])
    assert listnet_loss(s, t([1.0, 0.0, 0.0]), mask).item() == pytest.approx(math.log(2))
    assert listnet_loss(s, t([2.0, 1.0, 0.0]), mask).item() == pytest.approx(3 * math.log(2))
    assert listnet_loss(s, t([0.0, 0.0, 0.0]), mask).item() == 0.0


def test_lambdarank_weights_pairs_by_delta_ndcg() -> None:
    # labels (1, 0): swapping ranks 1 and 2 changes DCG by 1 - 1/log2(3); IDCG = 1
    s, y, mask = t([0.0, 1.0]), t([1.0, 0.0]), m([True, True])
    delta = 1.0 - 1.0 / math.log2(3)
    assert lambdarank_loss(s, y, mask).item() == pytest.approx(delta * math.log(1 + math.e))
    # with a cut-off of 1 the pair still straddles rank 1: only rank 1's discount counts
    assert lambdarank_loss(s, y, mask, k=1).item() == pytest.approx(math.log(1 + math.e))
    # no relevant document: nothing to learn
    assert lambdarank_loss(s, t([0.0, 0.0]), mask).item() == 0.0


@pytest.mark.parametrize("name", ["pointwise", "ranknet", "listnet", "lambdarank"])
def test_gradient_pushes_the_relevant_document_up(name: str) -> None:
    s = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    y, mask = t([0.0, 1.0, 0.0]), m([True, True, True])
    get_loss(name)(s, y, mask).sum().backward()
    assert s.grad is not None
    assert s.grad[0, 1] < 0  # descent raises the relevant score
    assert s.grad[0, 0] >= 0 and s.grad[0, 2] >= 0


@pytest.mark.parametrize("name", ["ranknet", "listnet", "lambdarank"])
def test_better_ranking_has_lower_loss(name: str) -> None:
    y, mask = t([2.0, 1.0, 0.0]), m([True, True, True])
    good = get_loss(name)(t([3.0, 2.0, 1.0]), y, mask)
    bad = get_loss(name)(t([1.0, 2.0, 3.0]), y, mask)
    assert good.item() < bad.item()


def test_padding_never_changes_a_loss() -> None:
    y = t([1.0, 0.0, 0.0], [1.0, 0.0, 7.0])
    s = t([0.3, -0.2, 0.0], [0.3, -0.2, 100.0])
    mask = m([True, True, False], [True, True, False])
    for name in ("pointwise", "ranknet", "listnet", "lambdarank"):
        out = get_loss(name)(s, y, mask)
        assert out[0].item() == pytest.approx(out[1].item()), name


def test_unknown_loss() -> None:
    with pytest.raises(ConfigError, match="unknown loss"):
        get_loss("hinge")
