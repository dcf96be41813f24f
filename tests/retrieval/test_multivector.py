"""Late-interaction retrieval on a 25-doc slice: equals exact MaxSim over every doc."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rankloop.data.types import Queries
from rankloop.errors import ConfigError


@pytest.fixture(scope="module")
def small(scifact_slice):
    corpus = scifact_slice.corpus.head(25)
    return corpus, Queries(scifact_slice.queries.ids[:5], scifact_slice.queries.texts[:5])


def test_maxsim_search_matches_exact(small, encoder, tmp_path: Path) -> None:
    from rankloop.retrieval.base import open_index
    from rankloop.retrieval.multivector import MultiVectorRetriever

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


def test_prf_experiment_token_kinds(small, encoder) -> None:
    """The PRF runner's `maxsim` and `colbert_prf` kinds: MaxSim first pass, then ColBERT-PRF
    reranking that pass (same documents, re-scored) and at a swept feedback depth."""
    from types import SimpleNamespace

    from rankloop.experiments.prf import PRFConfig, run_method
    from rankloop.retrieval.multivector import MultiVectorRetriever

    corpus, queries = small
    mv = MultiVectorRetriever.build(corpus, encoder)
    setting = SimpleNamespace(queries=queries, multivector=lambda factory="Flat": mv)
    methods = [
        {"name": "maxsim", "kind": "maxsim", "candidates_per_token": 50},
        {"name": "cprf", "kind": "colbert_prf", "mode": "reranker", "first_pass": "maxsim",
         "n_clusters": 4, "fb_embs": 2},
    ]  # fmt: skip
    PRFConfig(methods=methods)  # validates
    runs: dict = {}
    for spec in methods:
        runs[spec["name"]] = run_method(spec, setting, 10, runs, {})
    assert runs["cprf"].name == "cprf"
    for q in queries.ids:
        assert set(runs["cprf"][q]) == set(runs["maxsim"][q]) and len(runs["maxsim"][q]) == 10
    swept = run_method(methods[1], setting, 10, runs, {}, depth=1)
    assert swept.meta["fb_docs"] == 1
    with pytest.raises(ConfigError, match="first_pass"):
        PRFConfig(methods=[{"name": "c", "kind": "colbert_prf", "first_pass": "maxsim"}])
