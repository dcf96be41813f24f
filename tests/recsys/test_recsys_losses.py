"""IPS, clipped IPS and UBPR losses on hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from rankloop.errors import RankloopError
from rankloop.recsys.relmf import ips_loss, naive_loss
from rankloop.recsys.ubpr import ubpr_loss

# 3 users x 3 items. Clicks Y, item propensities θ = (0.5, 0.25, 0.1), predictions ŷ.
Y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
THETA = torch.tensor([0.5, 0.25, 0.1]).expand(3, 3)
PRED = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])


def test_ips_loss_hand_computed_3x3():
    # Square loss: δ1 = (1-ŷ)², δ0 = ŷ². Clicked cells give (1/θ)δ1 + (1 - 1/θ)δ0:
    #   (0,0) θ=.5, ŷ=1: 2·0 + (1-2)·1 = -1      (1,1) θ=.25, ŷ=1: 4·0 + (1-4)·1 = -3
    #   (2,0) θ=.5, ŷ=0: 2·1 + (1-2)·0 =  2      (2,2) θ=.1,  ŷ=0: 10·1 + (1-10)·0 = 10
    # Unclicked cells give δ0 = ŷ²: (0,1) .25, (1,2) 1, the rest 0.
    # Sum = -1 - 3 + 2 + 10 + .25 + 1 = 9.25, over 9 cells.
    assert ips_loss(PRED, Y, THETA).item() == pytest.approx(9.25 / 9)


def test_clipped_ips_loss_hand_computed_3x3():
    # M = 0.4: θ' = max(θ, .4) = (.5, .4, .4).
    #   (0,0): -1 (θ=.5 unchanged)   (1,1): 2.5·0 + (1-2.5)·1 = -1.5
    #   (2,0): 2                      (2,2): 2.5·1 + (1-2.5)·0 = 2.5
    # Sum = -1 - 1.5 + 2 + 2.5 + .25 + 1 = 3.25, over 9 cells.
    assert ips_loss(PRED, Y, THETA, clip=0.4).item() == pytest.approx(3.25 / 9)
    # M at or below every θ changes nothing.
    assert ips_loss(PRED, Y, THETA, clip=0.1).item() == pytest.approx(9.25 / 9)


def test_ips_with_full_exposure_is_the_naive_loss_and_unbiased_in_expectation():
    ones = torch.ones(3, 3)
    assert ips_loss(PRED, Y, ones).item() == pytest.approx(naive_loss(PRED, Y).item())
    # E_O[IPS] = ideal loss: enumerate exposure of one relevant cell with θ = 0.25.
    pred = torch.tensor([0.3])
    ideal = (1 - 0.3) ** 2
    expected = 0.25 * ips_loss(pred, torch.tensor([1.0]), torch.tensor([0.25])) + 0.75 * ips_loss(
        pred, torch.tensor([0.0]), torch.tensor([0.25])
    )
    assert expected.item() == pytest.approx(ideal)


def test_ips_negative_weight_and_log_loss():
    # w = 2 on the unclicked part: Σ[(Y/θ)δ1 + 2(1 - Y/θ)δ0] / Σ[Y + 2(1 - Y)]
    pred = torch.tensor([0.5, 0.5])
    y = torch.tensor([1.0, 0.0])
    th = torch.tensor([0.5, 1.0])
    # cell 1: 2·.25 + 2·(1-2)·.25 = 0; cell 2: 2·.25 = .5; normaliser 1 + 2 = 3
    assert ips_loss(pred, y, th, neg_weight=2.0).item() == pytest.approx(0.5 / 3)
    # log loss: δ1 = -log ŷ, δ0 = -log(1-ŷ); at ŷ = .5 both are log 2
    assert ips_loss(pred, y, th, delta="log").item() == pytest.approx(math.log(2) * (2 - 1 + 1) / 2)
    with pytest.raises(RankloopError):
        ips_loss(pred, y, th, delta="hinge")  # type: ignore[arg-type]
    with pytest.raises(RankloopError, match="shapes"):
        ips_loss(pred, y[:1], th)


def test_ubpr_loss_hand_computed():
    # Equal scores: -log σ(0) = log 2. Pairs: (Y_j=0, θ_i=.5) weight 2·1 = 2;
    # (Y_j=1, θ_i=.5, θ_j=.25) weight 2·(1-4) = -6.
    s = torch.zeros(2)
    yi, yj = torch.ones(2), torch.tensor([0.0, 1.0])
    ti, tj = torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.25])
    log2 = math.log(2)
    assert ubpr_loss(s, s, yi, yj, ti, tj).item() == pytest.approx((2 - 6) * log2 / 2)
    # non-negative variant: each term floored at -β
    assert ubpr_loss(s, s, yi, yj, ti, tj, beta=1.0).item() == pytest.approx((2 * log2 - 1.0) / 2)
    # clipping θ at .5: second weight 2·(1-2) = -2
    assert ubpr_loss(s, s, yi, yj, ti, tj, clip=0.5).item() == pytest.approx((2 - 2) * log2 / 2)
