"""Interactions: orientation and shape checks, label transforms, membership and splits."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from rankloop.data.interactions import Interactions, graded_relevance
from rankloop.errors import RankloopError


def test_named_arguments_only_and_orientation():
    m = sp.csr_matrix(np.array([[5, 0, 3], [0, 1, 0]], np.float32))
    with pytest.raises(TypeError):
        Interactions(m, "explicit")  # positional use is refused: orientation must be named
    x = Interactions(user_items=m, kind="explicit", user_ids=["a", "b"], item_ids=["i", "j", "k"])
    assert (x.n_users, x.n_items, x.nnz) == (2, 3, 3)
    assert x.item_users.shape == (3, 2)
    assert x.item_users[2, 0] == 3


def test_id_lists_must_match_the_matrix_sides():
    m = sp.csr_matrix(np.ones((2, 3), np.float32))
    with pytest.raises(RankloopError, match="3 user ids for 2 users"):
        Interactions(user_items=m, kind="implicit", user_ids=["a", "b", "c"])
    with pytest.raises(RankloopError, match="item ids"):
        Interactions(
            user_items=m, kind="implicit", item_ids=["x", "y"]
        )  # an item_users matrix, say
    with pytest.raises(RankloopError, match="kind"):
        Interactions(user_items=m, kind="ratings")  # type: ignore[arg-type]


def test_from_triples_checks_ranges_and_duplicates():
    x = Interactions.from_triples(
        users=np.array([0, 2]), items=np.array([1, 0]), n_users=3, n_items=2, kind="implicit"
    )
    assert x.shape == (3, 2) and x.user_items[2, 0] == 1
    with pytest.raises(RankloopError, match="out of range"):
        Interactions.from_triples(
            users=np.array([3]), items=np.array([0]), n_users=3, n_items=2, kind="implicit"
        )
    with pytest.raises(RankloopError, match="more than once"):
        Interactions.from_triples(users=np.array([1, 1]), items=np.array([0, 0]), kind="implicit")
    with pytest.raises(RankloopError, match="negative"):
        Interactions.from_triples(users=np.array([-1]), items=np.array([0]), kind="implicit")


def test_binarize_ratings_ge_4():
    x = Interactions.from_dense(ratings=np.array([[5, 4, 3], [1, 0, 2]]), kind="explicit")
    b = x.binarize(4)
    assert b.kind == "implicit"
    np.testing.assert_array_equal(b.user_items.toarray(), [[1, 1, 0], [0, 0, 0]])


def test_graded_relevance_values():
    # eps + (1 - eps) (2^(r-1) - 1) / 15
    np.testing.assert_allclose(
        graded_relevance(np.array([1, 2, 3, 4, 5]), eps=0.1),
        [0.1, 0.16, 0.28, 0.52, 1.0],
        rtol=1e-6,
    )
    np.testing.assert_allclose(graded_relevance(np.array([1, 5]), eps=0.0), [0.0, 1.0])
    x = Interactions.from_dense(ratings=np.array([[1, 5]]), kind="explicit")
    assert x.relevance_probability(eps=0.0).nnz == 1  # probability 0 is not stored
    with pytest.raises(RankloopError, match="explicit"):
        x.binarize().relevance_probability()


def test_sample_clicks_is_seeded_and_graded():
    rng = np.random.default_rng(0)
    r = rng.integers(1, 6, (50, 40))
    x = Interactions.from_dense(ratings=r, kind="explicit")
    a = x.sample_clicks(0.1, random_state=3)
    b = x.sample_clicks(0.1, random_state=3)
    assert (a.user_items != b.user_items).nnz == 0
    assert x.sample_clicks(1.0, random_state=0).nnz == x.nnz  # eps = 1: every rating is a click
    rate5 = a.values_at(*np.nonzero(r == 5)).mean()
    rate1 = a.values_at(*np.nonzero(r == 1)).mean()
    assert rate5 == 1.0 and 0.02 < rate1 < 0.25


def test_values_at_contains_and_split():
    x = Interactions.from_dense(ratings=np.array([[0, 2, 0], [3, 0, 4]]), kind="explicit")
    np.testing.assert_array_equal(
        x.values_at(np.array([0, 1, 1, 0]), np.array([1, 0, 1, 0])), [2, 3, 0, 0]
    )
    assert x.contains(np.array([[1, 1]]), np.array([[2, 1]])).tolist() == [[True, False]]
    big = Interactions.from_dense(ratings=np.ones((30, 30)), kind="implicit")
    kept, held = big.split(0.2, random_state=0)
    assert kept.nnz + held.nnz == 900 and 100 < held.nnz < 260
    assert (kept.user_items.multiply(held.user_items)).nnz == 0
    assert kept.union(held).nnz == 900


def test_split_users_keeps_each_users_entries_together():
    rng = np.random.default_rng(1)
    ratings = (rng.random((40, 12)) < 0.4) * rng.integers(1, 6, (40, 12))
    ratings[5] = 0  # a user with no entries is never chosen
    x = Interactions.from_dense(ratings=ratings, kind="explicit")
    sample, rest = x.split_users(0.25, random_state=3)
    chosen = np.flatnonzero(sample.user_counts())
    assert len(chosen) == round(0.25 * 39) and 5 not in chosen
    assert not np.intersect1d(chosen, np.flatnonzero(rest.user_counts())).size
    assert sample.union(rest).nnz == x.nnz and sample.shape == x.shape
    again, _ = x.split_users(0.25, random_state=3)
    assert (again.user_items != sample.user_items).nnz == 0
    with pytest.raises(RankloopError, match="fraction"):
        x.split_users(1.0, random_state=0)
