"""BM25Retriever.search against pyserini's own `batch_search`: same doc ids, same float32 scores,
same order (ties included), for plain BM25, RM3 and Rocchio, in small bounded batches too.

The index is the 200-doc SciFact slice (conftest) searched with 30 SciFact test queries, so the
JVM and a few small searches are the whole cost."""

from __future__ import annotations

import itertools
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from rankloop.data.types import Queries, Run

pytestmark = pytest.mark.usefixtures("require_bm25")

FEEDBACK = {
    "bm25": {},
    "rm3": {"rm3": {"fb_terms": 10, "fb_docs": 5, "original_query_weight": 0.5}},
    "rocchio": {"rocchio": {"top_fb_terms": 10, "top_fb_docs": 5}},
}


@pytest.fixture(scope="module")
def slice_index(scifact_slice, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rankloop.retrieval.sparse import BM25Retriever

    path = tmp_path_factory.mktemp("bm25-fast") / "scifact-slice"
    BM25Retriever.build(scifact_slice.corpus, path, show_progress=False).close()
    return path


@pytest.fixture(scope="module")
def queries30(scifact_full) -> Queries:
    """30 SciFact test queries (more than the slice's 20; their judged docs need not be there)."""
    return Queries(scifact_full.queries.ids[:30], scifact_full.queries.texts[:30])


def _retriever(index: Path, kind: str):
    from rankloop.retrieval.sparse import BM25Retriever

    return BM25Retriever(index, **FEEDBACK[kind])


def _pyserini(bm25, queries: Queries, k: int) -> dict[str, list[tuple[str, float]]]:
    """(doc id, score) per hit, in rank order, from pyserini's LuceneSearcher.batch_search."""
    hits = bm25._searcher.batch_search(list(queries.texts), list(queries.ids), k=k, threads=2)
    return {q: [(h.docid, h.score) for h in hits.get(q, [])] for q in queries.ids}


def _ranked(run: Run) -> dict[str, list[tuple[str, float]]]:
    return {q: list(hits.items()) for q, hits in run.data.items()}


@pytest.mark.parametrize("kind", list(FEEDBACK))
@pytest.mark.parametrize("k", [1000, 10])
def test_equals_pyserini_batch_search(slice_index: Path, queries30: Queries, kind, k) -> None:
    bm25 = _retriever(slice_index, kind)
    try:
        assert (bm25._fast is not None) == (kind == "bm25")  # feedback goes through pyserini
        run = bm25.search(queries30, k=k)
        expected = _pyserini(bm25, queries30, k)
    finally:
        bm25.close()
    assert _ranked(run) == expected  # exact: ids, order and float scores
    assert sum(len(v) for v in expected.values()) >= 30 * min(k, 50)  # not vacuous


def test_ties_are_adjusted_like_anserini(slice_index: Path, queries30: Queries) -> None:
    """The slice's runs hold score ties; the adjusted scores are still strictly decreasing."""
    bm25 = _retriever(slice_index, "bm25")
    try:
        run = bm25.search(queries30, k=1000)
    finally:
        bm25.close()
    for hits in run.data.values():
        scores = list(hits.values())
        assert all(a > b for a, b in itertools.pairwise(scores))
        assert all(s == float(np.float32(s)) for s in scores)  # float32 values, like pyserini


def test_adjust_ties_matches_java_reranker(slice_index: Path) -> None:
    """`_adjust_ties` against Anserini's ScoreTiesAdjusterReranker on adversarial scores."""
    from rankloop.retrieval import _java
    from rankloop.retrieval.sparse import _adjust_ties

    cls = _java.autoclass
    reranker = cls("io.anserini.rerank.lib.ScoreTiesAdjusterReranker")()
    score_doc = cls("org.apache.lucene.search.ScoreDoc")
    top_docs, total = (
        cls("org.apache.lucene.search.TopDocs"),
        cls("org.apache.lucene.search.TotalHits"),
    )
    equal_to = cls("org.apache.lucene.search.TotalHits$Relation").EQUAL_TO
    scored_docs = cls("io.anserini.search.ScoredDocs")
    bm25 = _retriever(slice_index, "bm25")
    rng = np.random.default_rng(0)
    cases = [np.array([5.0] * 10 + [4.9999, 4.9998, 3.0, 3.0, 2.99995, 2.9999, 0.0], np.float32)]
    for _ in range(40):
        values = np.round(rng.uniform(0, 30, 30), int(rng.integers(2, 5)))
        scores = rng.choice(values, int(rng.integers(1, 300)))
        scores = scores + rng.choice([0, 1e-5, 5e-5, 1e-4, -1e-4], len(scores))
        cases.append(np.sort(scores.astype(np.float32))[::-1].copy())
    try:
        for scores in cases:
            hits = top_docs(total(len(scores), equal_to), [score_doc(0, float(s)) for s in scores])
            java = reranker.rerank(scored_docs.fromTopDocs(hits, bm25._fast._searcher), None)
            expected = np.array(java.scores, dtype=np.float32)
            assert np.array_equal(_adjust_ties(scores).view(np.int32), expected.view(np.int32))
    finally:
        bm25.close()


@pytest.mark.parametrize("kind", ["bm25", "rm3"])
def test_small_batches_give_identical_runs(
    slice_index: Path, queries30: Queries, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rankloop.retrieval import sparse

    bm25 = _retriever(slice_index, kind)
    try:
        whole = bm25.search(queries30, k=100)
        monkeypatch.setattr(sparse, "_SEARCH_BATCH_HITS", 250)  # 2 queries in flight at a time
        batched = bm25.search(queries30, k=100, threads=2)
        single = bm25.search(queries30, k=100, threads=1)
    finally:
        bm25.close()
    assert _ranked(batched) == _ranked(whole) == _ranked(single)


def test_ordered_parallel_bounds_pending_results() -> None:
    """Workers never run more than `window` results ahead of the consumer; order is kept."""
    from rankloop.retrieval.sparse import _ordered_parallel

    lock, pending, peak = threading.Lock(), [0], [0]

    def work(i: int) -> int:
        with lock:
            pending[0] += 1
            peak[0] = max(peak[0], pending[0])
        return i * i

    out = []
    for ok, value in _ordered_parallel(work, 50, threads=4, window=3):
        assert ok
        time.sleep(0.001)  # a slow consumer: workers would race ahead if unbounded
        with lock:
            pending[0] -= 1
        out.append(value)
    assert out == [i * i for i in range(50)] and peak[0] <= 3


def test_ordered_parallel_passes_errors_and_stops() -> None:
    from rankloop.retrieval.sparse import _ordered_parallel

    def work(i: int) -> int:
        if i == 5:
            raise ValueError("boom")
        return i

    results = list(_ordered_parallel(work, 20, threads=2, window=4))
    assert [v for ok, v in results if ok] == [i for i in range(20) if i != 5]
    assert isinstance(results[5][1], ValueError) and not results[5][0]
    before = threading.active_count()
    gen = _ordered_parallel(work, 1000, threads=2, window=4)
    next(gen)
    gen.close()  # the consumer stops early: the workers end too
    assert threading.active_count() <= before


def test_blank_and_stopword_queries(slice_index: Path, queries30: Queries) -> None:
    bm25 = _retriever(slice_index, "bm25")
    ids = ["blank", *queries30.ids[:3], "stop", "tabs"]
    texts = ["  ", *queries30.texts[:3], "the of and", "\t\n"]
    try:
        with pytest.warns(UserWarning, match="2 blank queries"):
            run = bm25.search(Queries(ids, texts), k=50)
        expected = _pyserini(bm25, Queries(queries30.ids[:3], queries30.texts[:3]), 50)
    finally:
        bm25.close()
    assert run.query_ids == ids
    assert run["blank"] == {} and run["tabs"] == {} and run["stop"] == {}
    assert {q: _ranked(run)[q] for q in queries30.ids[:3]} == expected


def test_remove_query_id_and_k_cut(slice_index: Path, scifact_slice) -> None:
    """Queries that are corpus docs: their own id is dropped, k remain, as from pyserini's k+1."""
    from rankloop.retrieval.base import ranked_to_dict

    docs = scifact_slice.corpus
    queries = Queries(list(docs.ids[:10]), [t[:300] for t in docs.doc_texts()[:10]])
    bm25 = _retriever(slice_index, "bm25")
    try:
        run = bm25.search(queries, k=5, remove_query_id=True)
        plain = bm25.search(queries, k=5)
        fetched = _pyserini(bm25, queries, 6)
    finally:
        bm25.close()
    for q in queries.ids:
        ids, scores = [d for d, _ in fetched[q]], [s for _, s in fetched[q]]
        assert list(run[q].items()) == list(ranked_to_dict(q, ids, scores, 5, True).items())
        assert q not in run[q] and len(run[q]) == 5
        assert list(plain[q].items()) == fetched[q][:5]
    assert sum(q in plain[q] for q in queries.ids) >= 8  # a doc finds itself first, mostly


def test_unparsable_hits_fall_back_to_pyserini(
    slice_index: Path, queries30: Queries, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query whose hits lack doc-id sort values is searched through pyserini instead."""
    from rankloop.retrieval import sparse

    bm25 = _retriever(slice_index, "bm25")
    try:
        expected = _pyserini(bm25, queries30, 20)
        monkeypatch.setattr(sparse, "_parse_top_docs", lambda js: None)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            run = bm25.search(queries30, k=20)
    finally:
        bm25.close()
    assert _ranked(run) == expected


def test_parse_top_docs_reads_hex_ids_and_float32_scores() -> None:
    from rankloop.retrieval.sparse import _parse_top_docs

    js = (
        '{"totalHits":{"value":2,"relation":"EQUAL_TO"},"scoreDocs":['
        '{"score":2.7033978,"doc":1170,"shardIndex":-1,"fields":[2.7033978,"[36 33 c3 a9]"]},'
        '{"score":0.1,"doc":3,"shardIndex":-1,"fields":[0.1,"[]"]}],'
        '"fields":[{"field":null,"type":"SCORE"},{"field":"id","type":"STRING_VAL"}]}'
    )
    ids, scores = _parse_top_docs(js)
    assert ids == ["63é", ""] and scores.dtype == np.float32
    assert scores.tolist() == [float(np.float32(2.7033978)), float(np.float32(0.1))]
    assert _parse_top_docs(js.replace('"[]"', "null")) is None  # a hit without its id
