"""LoL: the comparative regularisation, the loss, training and save/load on synthetic vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rankloop.errors import ConfigError
from rankloop.prf.lol import (
    LoL,
    LoLConfig,
    comparative_regularization,
    positive_rows,
    prf_loss,
    training_candidates,
)


def test_l_cr_is_zero_when_more_feedback_never_raises_the_loss() -> None:
    sizes = torch.tensor([[0, 2, 5], [3, 1, 4]])
    losses = torch.tensor([[2.0, 1.5, 1.0], [0.7, 0.9, 0.7]])  # non-increasing in feedback size
    assert comparative_regularization(losses, sizes).item() == 0.0


def test_l_cr_penalises_a_revision_with_more_feedback_and_higher_loss() -> None:
    sizes = torch.tensor([[0, 5]])
    losses = torch.tensor([[1.0, 1.5]])
    assert comparative_regularization(losses, sizes).item() == pytest.approx(0.5)
    # equal sizes form no pair
    assert comparative_regularization(losses, torch.tensor([[2, 2]])).item() == 0.0


def test_prf_loss_is_multi_positive_cross_entropy() -> None:
    scores = torch.tensor([[2.0, 1.0, 0.0, float("-inf")]])
    pos = torch.tensor([[True, True, False, False]])
    expect = -np.log((np.exp(2) + np.exp(1)) / (np.exp(2) + np.exp(1) + 1))
    assert prf_loss(scores, pos).item() == pytest.approx(expect, rel=1e-5)


def test_untrained_model_is_identity() -> None:
    m = LoL(dim=8, heads=2, hidden=16, fb_docs=3)
    q = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    fb = np.random.default_rng(1).normal(size=(4, 3, 8)).astype(np.float32)
    np.testing.assert_allclose(m(q, fb, np.ones((4, 3), bool)), q, atol=1e-6)


def _synthetic(n: int = 64, d: int = 8, seed: int = 0):
    """Queries are noisy copies of their relevant doc; feedback holds that doc at rank 1."""
    rng = np.random.default_rng(seed)
    docs = rng.normal(size=(n, d)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    q = docs + 1.5 * rng.normal(size=docs.shape).astype(np.float32)
    fb = np.stack([docs, docs[rng.permutation(n)], docs[rng.permutation(n)]], axis=1)
    rows = np.argsort(-(q @ docs.T), axis=1)
    crow, cmask, cpos = training_candidates(rows, [[i] for i in range(n)], 10)
    return docs, q, fb, crow, cmask, cpos


def test_training_lowers_the_loss_and_save_load_round_trips(tmp_path) -> None:
    docs, q, fb, crow, cmask, cpos = _synthetic()
    cand = docs[np.where(crow >= 0, crow, 0)]
    m = LoL(dim=8, heads=2, hidden=32, fb_docs=3, epochs=15, batch_size=16, lr=3e-3, lambda_cr=0.5)
    m.fit(q, fb, np.ones(fb.shape[:2], bool), cand, cmask, cpos)
    assert m.history_[-1]["l_pr"] < m.history_[0]["l_pr"]
    out = m(q, fb, np.ones(fb.shape[:2], bool))
    loaded = LoL.load(m.save(tmp_path / "lol"))
    np.testing.assert_allclose(loaded(q, fb, np.ones(fb.shape[:2], bool)), out, atol=1e-6)
    assert loaded.config == m.config


def test_candidates_put_positives_first_then_hard_negatives() -> None:
    rows, mask, pos = training_candidates(np.array([[4, 2, 7, 1]]), [[2, 9]], 2)
    assert rows.tolist() == [[2, 9, 4, 7]] and pos.tolist() == [[True, True, False, False]]
    assert mask.all()
    assert positive_rows({"q": {"a": 1, "b": 0, "z": 2}}, ["q", "r"], {"a": 0, "b": 1}) == [[0], []]


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        LoLConfig(dim=10, heads=4)
    with pytest.raises(ConfigError):
        LoL(LoLConfig(), fb_docs=3)


def test_validation_keeps_the_identity_when_training_never_helps() -> None:
    docs, q, fb, crow, cmask, cpos = _synthetic()
    cand = docs[np.where(crow >= 0, crow, 0)]
    scores = iter([1.0, 0.5, 0.4, 0.3])  # epoch 0 (identity) is best
    m = LoL(dim=8, heads=2, hidden=32, fb_docs=3, epochs=5, patience=2, batch_size=16, lr=3e-3)
    m.fit(q, fb, np.ones(fb.shape[:2], bool), cand, cmask, cpos, validate=lambda _: next(scores))
    assert m.best_epoch_ == 0 and [h["epoch"] for h in m.history_] == [0, 1, 2]  # stopped early
    np.testing.assert_allclose(m(q, fb, np.ones(fb.shape[:2], bool)), q, atol=1e-6)


def test_in_batch_negatives_train_and_respect_shared_positives() -> None:
    docs, q, fb, crow, cmask, cpos = _synthetic()
    cand = docs[np.where(crow >= 0, crow, 0)]
    m = LoL(dim=8, heads=2, hidden=32, fb_docs=3, epochs=10, batch_size=16, lr=3e-3)
    m.fit(q, fb, np.ones(fb.shape[:2], bool), cand, cmask, cpos, candidate_ids=crow)
    assert m.config.in_batch_negatives and m.history_[-1]["l_pr"] < m.history_[0]["l_pr"]


def test_max_positives_keeps_the_highest_grades_first() -> None:
    rows = positive_rows({"q": {"a": 1, "b": 2, "c": 1}}, ["q"], {"a": 0, "b": 1, "c": 2})
    assert rows == [[1, 0, 2]]
    crow, _, cpos = training_candidates(np.array([[5, 0, 6]]), rows, 2, max_positives=1)
    assert crow.tolist() == [[1, 5, 0]] and cpos.tolist() == [[True, False, False]]
