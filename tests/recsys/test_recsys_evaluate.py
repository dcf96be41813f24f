"""MAR evaluation: the authors' protocol by hand, standard measures via rankloop.eval, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError
from rankloop.recsys.evaluate import (
    authors_metrics,
    evaluate_authors,
    mar_gains,
    popularity_buckets,
    standard_metrics,
    unbiased_dcg,
)


class Fixed:
    """Scores from a dense (n_users, n_items) matrix."""

    def __init__(self, scores: np.ndarray) -> None:
        self.s = np.asarray(scores, float)

    def score(self, users, items):
        return self.s[np.asarray(users), np.asarray(items)]


def test_authors_metrics_hand_computed():
    # user 0: scores .9 .8 .7 .1 with gains 0 1 1 0 -> relevant at ranks 2 and 3, total gain 2
    # user 1: no relevant item; user 2: a score tie, broken by item id descending (item 7 first)
    users = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 2, 3, 0, 1, 5, 7])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.5, 1.0, 1.0])
    gains = np.array([0, 1, 1, 0, 0, 0, 1, 0], float)
    res = authors_metrics(users, items, scores, gains, (1, 2, 3))
    assert res.users.tolist() == [0, 1, 2]
    v = {m: x.tolist() for m, x in res.values.items()}
    # DCG: ranks 1 and 2 are undiscounted (log2(max(rank, 2))); normalised by the total gain
    assert v["DCG@1"] == [0.0, 0.0, 0.0]
    assert v["DCG@2"] == pytest.approx([0.5, 0.0, 1.0])
    assert v["DCG@3"] == pytest.approx([(1 + 1 / math.log2(3)) / 2, 0.0, 1.0])
    assert v["Recall@3"] == pytest.approx([1.0, 0.0, 1.0])
    # MAP@3 = (1/2 + 2/3) / 2 for user 0; user 2: hit at rank 2 -> (1/2) / 1
    assert v["MAP@3"] == pytest.approx([(0.5 + 2 / 3) / 2, 0.0, 0.5])
    assert res.protocol["users_without_relevant"].startswith("kept")
    dropped = authors_metrics(users, items, scores, gains, (3,), drop_users_without_relevant=True)
    assert dropped.users.tolist() == [0, 2]
    assert dropped.mean["DCG@3"] == pytest.approx(((1 + 1 / math.log2(3)) / 2 + 1) / 2)


def test_authors_graded_gains_and_masks():
    assert mar_gains(np.array([1, 4, 5]), "authors").tolist() == [0, 0, 1]
    assert mar_gains(np.array([1, 4, 5]), "binary").tolist() == [0, 1, 1]
    np.testing.assert_allclose(mar_gains(np.array([1, 3, 5]), "graded"), [0, 3 / 15, 1])
    with pytest.raises(RankloopError):
        mar_gains(np.array([1]), "nope")  # type: ignore[arg-type]
    test = Interactions.from_dense(ratings=np.array([[5, 1, 5, 2]]), kind="explicit")
    model = Fixed([[4.0, 3.0, 2.0, 1.0]])
    # all items: 5-star items at ranks 1 and 3
    full = evaluate_authors(model, test, ks=(1,))
    assert full.mean["DCG@1"] == pytest.approx(0.5)
    # restricted to items {2, 3}: the 5-star item 2 is now first
    only = evaluate_authors(model, test, ks=(1,), items_mask=np.array([False, False, True, True]))
    assert only.mean["DCG@1"] == pytest.approx(1.0)
    # gains only from item 2, full ranking: it sits at rank 3
    masked = evaluate_authors(model, test, ks=(3,), gain_mask=np.array([False, False, True, False]))
    assert masked.mean["DCG@3"] == pytest.approx(1 / math.log2(3))


def test_standard_metrics_through_rankloop_eval():
    ratings = np.array([[2, 5, 4, 1], [1, 2, 0, 0], [4, 0, 0, 3]])
    test = Interactions.from_dense(ratings=ratings, kind="explicit")
    model = Fixed([[0.9, 0.8, 0.7, 0.1], [0.5, 0.2, 0, 0], [0.1, 0, 0, 0.2]])
    res = standard_metrics(model, test, ks=(3,))
    assert res.users.tolist() == [0, 2]  # user 1 has no rating >= 4: dropped
    # user 0: relevant at ranks 2, 3 -> DCG (1/log2 3 + 1/log2 4), ideal (1 + 1/log2 3)
    ndcg0 = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    # user 2: relevant item ranked 2nd of 2 -> 1/log2(3)
    assert res.values["nDCG@3"].tolist() == pytest.approx([ndcg0, 1 / math.log2(3)])
    assert res.values["R@3"].tolist() == pytest.approx([1.0, 1.0])
    assert res.values["AP@3"].tolist() == pytest.approx([(1 / 2 + 2 / 3) / 2, 0.5])
    kept = standard_metrics(model, test, ks=(3,), keep_users_without_relevant=True)
    assert kept.users.tolist() == [0, 1, 2] and kept.values["nDCG@3"][1] == 0.0
    with pytest.raises(RankloopError, match="explicit"):
        standard_metrics(model, test.binarize())


def test_popularity_buckets():
    bucket, labels = popularity_buckets(np.array([5, 1, 3, 0]), 2)
    assert bucket.tolist() == [1, 0, 1, 0] and labels == ["0-1", "3-5"]
    with pytest.raises(RankloopError):
        popularity_buckets(np.array([1, 2]), 3)


def test_unbiased_dcg_ranks_perfect_above_reversed():
    rng = np.random.default_rng(1)
    y = (rng.random((30, 40)) < 0.15).astype(float)
    y[np.arange(30), np.arange(30)] = 1
    clicks = Interactions.from_dense(ratings=y, kind="implicit")
    train, val = clicks.split(0.3, random_state=0)
    theta = np.full(40, 0.5)
    perfect = Fixed(val.user_items.toarray())
    reverse = Fixed(-val.user_items.toarray())
    good = unbiased_dcg(perfect, train, val, theta, k=5, n_negatives=10)
    bad = unbiased_dcg(reverse, train, val, theta, k=5, n_negatives=10)
    assert good > 0.9 and bad < 0.05
    assert unbiased_dcg(perfect, train, val, theta, k=5, n_negatives=10) == good  # seeded
