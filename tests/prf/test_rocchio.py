"""Vector PRF on a tiny hand-checkable index."""

from __future__ import annotations

import numpy as np
import pytest

from rankloop.data.types import Queries, Run
from rankloop.embed import VectorIndex
from rankloop.errors import ConfigError, RankloopError
from rankloop.prf.rocchio import (
    Rocchio,
    VectorPRF,
    average_prf,
    feedback_from_run,
    gather_feedback,
    rocchio,
    run_from_rows,
)


def _index(factory: str = "Flat") -> VectorIndex:
    # 4 docs on the axes of R^3 plus a diagonal one.
    vecs = np.array(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0], [0.5, 0.5, 0.7071]], np.float32
    )
    index = VectorIndex(3, factory)
    index.add(["a", "b", "c", "d", "e"], vecs)
    return index


def test_average_is_mean_of_query_and_feedback() -> None:
    q = np.array([[1.0, 0.0]], np.float32)
    fb = np.array([[[0.0, 1.0], [1.0, 1.0], [9.0, 9.0]]], np.float32)
    mask = np.array([[True, True, False]])
    out = average_prf(q, fb, mask)
    np.testing.assert_allclose(out, [[2 / 3, 2 / 3]])


def test_rocchio_positives_and_negatives_by_hand() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    fb = np.array([[[0, 2], [2, 0], [4, 4], [0, 8]], [[2, 2], [0, 0], [0, 0], [0, 0]]], np.float32)
    mask = np.array([[True] * 4, [True, False, False, False]])
    out = rocchio(q, fb, mask, alpha=0.5, beta=1.0, gamma=0.25, fb_docs=2, bottom_fb_docs=1)
    # query 0: .5 q + mean(d1, d2) - .25 d4 = (.5,0) + (1,1) - (0,2) = (1.5, -1)
    # query 1: one valid doc is both the top positive and the bottom negative.
    np.testing.assert_allclose(out[0], [1.5, -1.0])
    np.testing.assert_allclose(out[1], [0.0 + 2 - 0.5, 0.5 + 2 - 0.5])


def test_rocchio_without_feedback_keeps_scaled_query() -> None:
    q = np.ones((1, 2), np.float32)
    out = rocchio(q, np.zeros((1, 3, 2), np.float32), np.zeros((1, 3), bool), alpha=0.7, beta=1.0)
    np.testing.assert_allclose(out, 0.7 * q)


def test_average_equals_rocchio_special_case() -> None:
    rng = np.random.default_rng(0)
    q, fb = (
        rng.normal(size=(4, 8)).astype(np.float32),
        rng.normal(size=(4, 3, 8)).astype(np.float32),
    )
    mask = np.ones((4, 3), bool)
    np.testing.assert_allclose(
        average_prf(q, fb, mask), rocchio(q, fb, mask, alpha=0.25, beta=0.75, fb_docs=3), atol=1e-6
    )


@pytest.mark.parametrize("factory", ["Flat", "HNSW8", "PQ1x2"])
def test_feedback_uses_stored_vectors_for_any_index(factory: str) -> None:
    index = _index(factory)
    fb, mask = gather_feedback(index, np.array([[3, 0, -1]]))
    np.testing.assert_allclose(fb[0, 0], [0.6, 0.8, 0.0], atol=1e-6)  # exact, not a PQ decoding
    assert mask.tolist() == [[True, True, False]]
    assert not fb[0, 2].any()


def test_vector_prf_one_round_by_hand() -> None:
    index = _index()
    q = np.array([[1.0, 0.1, 0.0]], np.float32)
    prf = VectorPRF(index, Rocchio.averaged(2))
    # first pass: a (1.0), d (0.68); q' = (q + a + d) / 3 = (0.867, 0.3, 0)
    expect = (q[0] + [1, 0, 0] + [0.6, 0.8, 0]) / 3
    np.testing.assert_allclose(prf.reformulate(q)[0], expect, atol=1e-6)
    scores, rows = prf.search_vectors(q, 2)
    assert rows[0].tolist() == [0, 3]
    np.testing.assert_allclose(scores[0], [expect[0], expect @ [0.6, 0.8, 0]], atol=1e-5)


def test_multi_iteration_applies_feedback_repeatedly() -> None:
    index = _index()
    q = np.array([[1.0, 0.1, 0.0]], np.float32)
    one = VectorPRF(index, Rocchio(alpha=1, beta=1, fb_docs=1)).reformulate(q)
    two = VectorPRF(index, Rocchio(alpha=1, beta=1, fb_docs=1), iterations=2).reformulate(q)
    top = index.search_rows(one, 1)[1][0, 0]
    np.testing.assert_allclose(two, one + index.vectors_at([top]), atol=1e-6)


def test_feedback_from_another_run_and_run_output() -> None:
    index = _index()
    sparse = Run.from_dict({"q1": {"c": 3.0, "zz": 2.0, "b": 1.0}})
    fb, mask = feedback_from_run(index, sparse, ["q1", "q2"], 3)
    assert mask.tolist() == [[True, True, False], [False, False, False]]  # unknown doc skipped
    np.testing.assert_allclose(fb[0, :2], [[0, 0, 1], [0, 1, 0]])
    queries = Queries(["q1", "q2"], ["x", "y"])
    qv = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    run = VectorPRF(index, Rocchio(alpha=1, beta=1, fb_docs=1)).search(
        queries, qv, 2, feedback_run=sparse
    )
    assert set(run.query_ids) == {"q1", "q2"}
    assert next(iter(run["q2"])) == "b"


def test_bad_settings_raise() -> None:
    with pytest.raises(ConfigError):
        Rocchio(fb_docs=0)
    with pytest.raises(ConfigError):
        Rocchio(fb_docs=5, fb_window=3)
    with pytest.raises(RankloopError):
        rocchio(np.zeros((2, 3)), np.zeros((1, 2, 3)))
    with pytest.raises(ConfigError):
        VectorPRF(_index(), Rocchio(), iterations=0)


def test_run_from_rows_drops_missing_results() -> None:
    index = VectorIndex(2)
    index.add(["a", "b", "c"], np.eye(3, 2, dtype=np.float32))
    scores = np.array([[0.9, 0.5, -np.inf], [0.7, 0.2, 0.1]], np.float32)
    rows = np.array([[2, 0, -1], [1, 2, 0]])
    run = run_from_rows(index, ["q1", "q2"], scores, rows, "r")
    assert run.name == "r"
    assert run["q1"] == pytest.approx({"c": 0.9, "a": 0.5})
    assert list(run["q2"]) == ["b", "c", "a"]
