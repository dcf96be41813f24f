"""BM25 through pyserini: built in tmp dirs, one JVM for the whole module (it starts once per
process and takes a few seconds). Skipped, with the reason, where Java or pyserini is missing."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest

from rankloop.data.types import Corpus, Queries, Run
from rankloop.errors import IndexCorruptError, RankloopError

pytestmark = pytest.mark.usefixtures("require_bm25")


@pytest.fixture(scope="module")
def tiny_index(tiny_corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rankloop.retrieval.sparse import BM25Retriever

    path = tmp_path_factory.mktemp("bm25") / "tiny"
    BM25Retriever.build(tiny_corpus, path, show_progress=False).close()
    return path


@pytest.fixture(scope="module")
def slice_bm25(scifact_slice, tmp_path_factory: pytest.TempPathFactory):
    from rankloop.retrieval.sparse import BM25Retriever

    path = tmp_path_factory.mktemp("bm25") / "scifact-slice"
    return BM25Retriever.build(scifact_slice.corpus, path, show_progress=False)


def _lucene_bm25(freq: int, dl: int, df: int, n: int, avgdl: float, k1: float, b: float) -> float:
    """Lucene 9's BM25Similarity (no (k1 + 1) factor in the numerator)."""
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * freq / (freq + k1 * (1 - b + b * dl / avgdl))


@pytest.mark.parametrize(("k1", "b"), [(0.9, 0.4), (1.2, 0.75)])
def test_scores_follow_bm25_with_k1_b(tiny_index: Path, k1: float, b: float) -> None:
    from rankloop.retrieval.sparse import BM25Retriever

    run = BM25Retriever(tiny_index, k1=k1, b=b).search(Queries(["a"], ["cat"]), k=10)
    # Analysed lengths (title + text): d1 "cat cat cat fish" = 4, d3 "dog dog cat" = 3; 21 tokens / 6 docs.
    avgdl = 21 / 6
    expected = {
        "d1": _lucene_bm25(3, 4, 2, 6, avgdl, k1, b),
        "d3": _lucene_bm25(1, 3, 2, 6, avgdl, k1, b),
    }
    assert list(run["a"]) == ["d1", "d3"]
    for doc, score in expected.items():  # Anserini rounds scores to 4 decimals (tie handling)
        assert run["a"][doc] == pytest.approx(score, abs=5e-5 + 1e-7)


def test_k_cut_blank_query_and_order(tiny_index: Path) -> None:
    from rankloop.retrieval.sparse import BM25Retriever

    bm25 = BM25Retriever(tiny_index)
    queries = Queries(["a", "blank", "none"], ["dog fish", "   ", "the of and"])
    with pytest.warns(UserWarning, match="1 blank queries"):
        run = bm25.search(queries, k=2)
    assert isinstance(run, Run) and run.name == "bm25"
    assert run.query_ids == ["a", "blank", "none"]
    assert len(run["a"]) == 2
    assert run["blank"] == {} and run["none"] == {}  # stopwords only: an empty Lucene query
    scores = list(run["a"].values())
    assert scores == sorted(scores, reverse=True)


def test_remove_query_id_keeps_k(tiny_index: Path) -> None:
    from rankloop.retrieval.sparse import BM25Retriever

    bm25 = BM25Retriever(tiny_index)
    queries = Queries(["q1"], ["violin concert hall cat"])
    plain = bm25.search(queries, k=2)
    assert next(iter(plain["q1"])) == "q1"
    removed = bm25.search(queries, k=2, remove_query_id=True)
    assert "q1" not in removed["q1"] and len(removed["q1"]) == 2


def test_reopen_via_open_index_and_meta(tiny_index: Path) -> None:
    from rankloop.retrieval.base import read_meta
    from rankloop.retrieval.open import open_index
    from rankloop.retrieval.sparse import BM25Retriever

    meta = read_meta(tiny_index)
    assert meta["kind"] == "bm25" and meta["n_docs"] == 6 and meta["k1"] == 0.9
    a = open_index(tiny_index).search(Queries(["a"], ["fish"]), k=5)
    b = BM25Retriever(tiny_index / "lucene").search(
        Queries(["a"], ["fish"]), k=5
    )  # plain Lucene dir
    assert a.data == b.data and set(a["a"]) == {"d1", "d5"}


def test_rm3_and_rocchio_hooks(scifact_slice, slice_bm25) -> None:
    from rankloop.retrieval.sparse import BM25Retriever

    # Anserini's feedback ignores terms in > 10% of docs, so this needs more than a toy corpus.
    queries = scifact_slice.queries
    plain = slice_bm25.search(queries, k=20)
    rm3 = BM25Retriever(slice_bm25.index_dir, rm3={"fb_terms": 10, "fb_docs": 5})
    assert rm3.name == "bm25+rm3"
    rocchio = BM25Retriever(slice_bm25.index_dir, rocchio={"top_fb_terms": 10, "top_fb_docs": 5})
    for fb in (rm3, rocchio):
        run = fb.search(queries, k=20)
        assert set(run.query_ids) == set(plain.query_ids)
        assert run.data != plain.data
    with pytest.raises(RankloopError, match="not both"):
        BM25Retriever(slice_bm25.index_dir, rm3={}, rocchio={})
    with pytest.raises(RankloopError, match="feedback settings rejected"):
        BM25Retriever(slice_bm25.index_dir, rm3={"no_such_option": 1})


def test_bad_inputs(tmp_path: Path) -> None:
    from rankloop.retrieval.sparse import BM25Retriever

    with pytest.raises(RankloopError, match="empty corpus"):
        BM25Retriever.build(Corpus([], [], []), tmp_path / "empty")
    assert not (tmp_path / "empty").exists()
    (tmp_path / "junk").mkdir()
    with pytest.raises(IndexCorruptError, match="not a Lucene index"):
        BM25Retriever(tmp_path / "junk")


def test_k_must_be_positive(tiny_index: Path) -> None:
    from rankloop.retrieval.sparse import BM25Retriever

    with pytest.raises(RankloopError, match="k must be a positive integer"):
        BM25Retriever(tiny_index).search(Queries(["a"], ["cat"]), k=0)


def test_rebuild_replaces_atomically(tiny_corpus: Corpus, tmp_path: Path) -> None:
    from rankloop.retrieval.sparse import BM25Retriever

    path = tmp_path / "idx"
    BM25Retriever.build(tiny_corpus, path, show_progress=False).close()
    small = Corpus(["x"], [""], ["zebra"], "one")
    BM25Retriever.build(small, path, show_progress=False)
    assert BM25Retriever(path).num_docs == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".idx")]


def test_cached_builds_once_and_rebuilds_for_another_corpus(
    tiny_corpus: Corpus, tmp_path: Path, monkeypatch
) -> None:
    from rankloop.retrieval.sparse import BM25Retriever, bm25_index_dir

    first = BM25Retriever.cached(tiny_corpus, cache_dir=tmp_path, rm3={"fb_terms": 5})
    assert first.num_docs == 6 and first.rm3 == {"fb_terms": 5}
    built: list[str] = []
    real = BM25Retriever.build.__func__

    def counting_build(cls, corpus, *args, **kwargs):
        built.append(corpus.name)
        return real(cls, corpus, *args, **kwargs)

    monkeypatch.setattr(BM25Retriever, "build", classmethod(counting_build))
    BM25Retriever.cached(tiny_corpus, cache_dir=tmp_path)
    assert built == []
    # A stale index at the corpus's path (built from other documents) is rebuilt.
    BM25Retriever.build(
        Corpus(["x"], [""], ["zebra"], "one"), bm25_index_dir(tiny_corpus, tmp_path)
    )
    assert BM25Retriever.cached(tiny_corpus, cache_dir=tmp_path).num_docs == 6
    assert len(built) == 2


def test_truncated_index_is_a_clear_error(tiny_index: Path, tmp_path: Path) -> None:
    import shutil

    from rankloop.retrieval.sparse import BM25Retriever

    copy = shutil.copytree(tiny_index, tmp_path / "copy")
    tim = next((copy / "lucene").glob("*.tim"))
    with open(tim, "r+b") as fh:
        fh.truncate(tim.stat().st_size // 2)
    with pytest.raises(IndexCorruptError, match="cannot open Lucene index"):
        BM25Retriever(copy)


def test_failed_rebuild_keeps_previous_index(
    tiny_corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rankloop.retrieval import sparse

    path = tmp_path / "idx"
    sparse.BM25Retriever.build(tiny_corpus, path, show_progress=False).close()
    before = sparse.BM25Retriever(path).search(Queries(["a"], ["cat"]), k=5)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process were interrupted mid-save

    monkeypatch.setattr(sparse, "write_meta", crash)
    with pytest.raises(KeyboardInterrupt):
        sparse.BM25Retriever.build(Corpus(["x"], [""], ["zebra"]), path, show_progress=False)
    assert sparse.BM25Retriever(path).search(Queries(["a"], ["cat"]), k=5).data == before.data
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_slice_runs(scifact_slice, slice_bm25) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = slice_bm25.search(scifact_slice.queries, k=100)
    assert set(run.query_ids) == set(scifact_slice.queries.ids)
    assert all(0 < len(d) <= 100 for d in run.data.values())


def test_hybrid_rrf_on_real_runs(scifact_slice, slice_bm25, dense_slice) -> None:
    from rankloop.eval.fusion import fuse
    from rankloop.retrieval.hybrid import HybridRetriever

    hybrid = HybridRetriever(dense_slice, slice_bm25, method="rrf", depth=50)
    run = hybrid.search(scifact_slice.queries, k=20)
    d = dense_slice.search(scifact_slice.queries, 50)
    s = slice_bm25.search(scifact_slice.queries, 50)
    expected = fuse([d, s], method="rrf", rrf_k=60).top_k(20)
    assert run.data == expected.data
    q = scifact_slice.queries.ids[0]
    top_doc, top_score = run.ranked(q)[0]
    ranks = [[doc for doc, _ in r.ranked(q)] for r in (d, s)]
    manual = sum(1 / (60 + r.index(top_doc) + 1) for r in ranks if top_doc in r)
    assert top_score == pytest.approx(manual)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "anchor"), [("scifact", 0.6789), ("nfcorpus", 0.3218)])
def test_bm25_flat_reproduces_pyserini_2cr(
    name: str, anchor: float, beir_root: Path, tmp_path: Path
) -> None:
    from rankloop.data.beir import load_beir
    from rankloop.eval import evaluate
    from rankloop.retrieval.sparse import BM25Retriever

    ds = load_beir(beir_root / name, split="test")
    run = BM25Retriever.build(ds.corpus, tmp_path / "idx", show_progress=False).search(ds.queries)
    ndcg = evaluate(ds.qrels, run, ["ndcg_cut_10"], complete=True)["ndcg_cut_10"]
    assert abs(ndcg - anchor) <= 0.005
