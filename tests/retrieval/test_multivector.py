"""Late-interaction retrieval on a 25-doc slice: equals exact MaxSim over every doc."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rankloop.data.types import Queries
from rankloop.errors import RankloopError


@pytest.fixture(scope="module")
def small(scifact_slice):
    corpus = scifact_slice.corpus.head(25)
    return corpus, Queries(scifact_slice.queries.ids[:5], scifact_slice.queries.texts[:5])


def test_maxsim_search_matches_exact(small, encoder, tmp_path: Path) -> None:
    from rankloop.retrieval.multivector import MultiVectorRetriever
    from rankloop.retrieval.open import open_index

    corpus, queries = small
    retriever = MultiVectorRetriever.build(corpus, encoder)
    run = retriever.search(queries, k=10, candidates_per_token=100_000)  # every token: exact
    docs = [retriever.index.doc_tokens(d)[0] for d in corpus.ids]
    qtok = encoder.encode_tokens(queries.texts, kind="query")
    for i, qid in enumerate(queries.ids):
        q, _ = qtok[i]
        exact = np.array([(q @ d.T).max(axis=1).sum() for d in docs])
        top = np.argsort(-exact, kind="stable")[:10]
        assert list(run[qid]) == [corpus.ids[j] for j in top]
        np.testing.assert_allclose(list(run[qid].values()), exact[top], rtol=1e-4)
    retriever.save(tmp_path / "mv")
    again = open_index(tmp_path / "mv", encoder=encoder).search(
        queries, k=10, candidates_per_token=100_000
    )
    assert again.data == run.data


def test_cached_builds_once_then_loads(small, encoder, tmp_path: Path, monkeypatch) -> None:
    from rankloop.retrieval.multivector import MultiVectorRetriever

    corpus, queries = small
    first = MultiVectorRetriever.cached(corpus, encoder, cache_dir=tmp_path)
    path = MultiVectorRetriever.cache_path(corpus, encoder, cache_dir=tmp_path)
    assert path.parent == tmp_path and (path / "retriever.json").is_file()

    def no_build(*args, **kwargs):
        raise AssertionError("a cached index was rebuilt")

    monkeypatch.setattr(MultiVectorRetriever, "build", no_build)
    again = MultiVectorRetriever.cached(corpus, encoder, cache_dir=tmp_path)
    assert again.search(queries, k=5).data == first.search(queries, k=5).data
    other = MultiVectorRetriever.cache_path(corpus.head(24), encoder, cache_dir=tmp_path)
    assert other != path  # a different corpus never reuses the index


def test_prf_pipeline_token_stages(small, encoder) -> None:
    """The `maxsim` and `colbert_prf` stages: MaxSim first pass, then ColBERT-PRF re-ranking
    that pass (same documents, re-scored), and at a swept feedback depth."""
    import rankloop.stages  # noqa: F401 - registers the stages
    from rankloop.experiments.prf import _at_depth
    from rankloop.pipeline import parse
    from rankloop.retrieval.context import Context
    from rankloop.retrieval.multivector import MultiVectorRetriever

    corpus, queries = small
    ctx = Context(corpus, encoder=encoder, verbose=False)
    ctx._tokens["Flat"] = MultiVectorRetriever.build(corpus, encoder)
    first = parse("maxsim(k=10, candidates_per_token=50)", ctx)
    cprf = parse("maxsim(k=10, candidates_per_token=50) >> "
                 "colbert_prf(mode='reranker', n_clusters=4, fb_embs=2, k=10)", ctx)  # fmt: skip
    a, b = first(queries), cprf(queries)
    for q in queries.ids:
        assert set(b[q]) == set(a[q]) and len(a[q]) == 10
    swept = _at_depth(cprf, 1, ctx)
    assert swept.stages[-1].fb_docs == 1 and swept(queries).meta["fb_docs"] == 1
    with pytest.raises(RankloopError, match="re-ranks the run of the stage before it"):
        parse("colbert_prf", ctx)(queries)
