"""Late-interaction retrieval on a 25-doc slice: equals exact MaxSim over every doc."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rankloop.data.types import Queries


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
