"""Hybrid retrieval arithmetic with stub retrievers (no model, no Java)."""

from __future__ import annotations

import pytest

from rankloop.data.types import Queries, Run
from rankloop.errors import RankloopError


class _Fixed:
    """A retriever that returns a fixed run, cut to k, and records its calls."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.calls: list[tuple[int, dict]] = []

    def search(self, queries: Queries, k: int = 1000, **kwargs) -> Run:
        self.calls.append((k, kwargs))
        return self.run.top_k(k)


DENSE = Run.from_dict({"q": {"a": 0.9, "b": 0.8, "c": 0.1}, "r": {"x": 0.5}}, "dense")
SPARSE = Run.from_dict({"q": {"c": 12.0, "a": 7.0, "d": 3.0}, "r": {}}, "bm25")
QUERIES = Queries(["q", "r"], ["some text", "other"])


def test_rrf_scores_and_order() -> None:
    from rankloop.retrieval.hybrid import HybridRetriever

    dense, sparse = _Fixed(DENSE), _Fixed(SPARSE)
    run = HybridRetriever(dense, sparse, depth=100).search(QUERIES, k=3, remove_query_id=True)
    expected = {
        "a": 1 / 61 + 1 / 62,
        "c": 1 / 63 + 1 / 61,
        "b": 1 / 62,
        "d": 1 / 63,
    }
    top3 = sorted(expected.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:3]
    assert [d for d, _ in run.ranked("q")] == [d for d, _ in top3]
    for d, s in top3:
        assert run["q"][d] == pytest.approx(s)
    assert list(run["r"]) == ["x"]
    assert run.name == "hybrid:rrf"
    assert dense.calls == [(100, {"remove_query_id": True})] == sparse.calls


def test_normalised_combsum_with_weights() -> None:
    from rankloop.retrieval.hybrid import HybridRetriever

    hybrid = HybridRetriever(
        _Fixed(DENSE), _Fixed(SPARSE), method="combsum", norm="minmax", weights=[2.0, 1.0]
    )
    run = hybrid.search(QUERIES, k=10)
    # min-max per query: dense a=1, b=0.875, c=0; sparse c=1, a=4/9, d=0.
    assert run["q"]["a"] == pytest.approx(2 * 1 + 4 / 9)
    assert run["q"]["b"] == pytest.approx(2 * 0.875)
    assert run["q"]["c"] == pytest.approx(1.0)
    assert run.name == "hybrid:combsum-minmax"


def test_bad_weights() -> None:
    from rankloop.retrieval.hybrid import HybridRetriever

    with pytest.raises(RankloopError, match="2 numbers"):
        HybridRetriever(_Fixed(DENSE), _Fixed(SPARSE), weights=[1.0])
