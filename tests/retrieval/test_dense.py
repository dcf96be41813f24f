"""Dense retrieval on a 200-doc SciFact slice: equals brute force, ids, blanks, errors, save/load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rankloop.data.types import Corpus, Queries
from rankloop.embed.index import VectorIndex
from rankloop.errors import IndexCorruptError, RankloopError


def test_search_equals_brute_force(scifact_slice, encoder, dense_slice) -> None:
    queries = scifact_slice.queries
    run = dense_slice.search(queries, k=50, batch_size=7)  # several query batches
    q = encoder.encode_queries(queries.texts)
    d = np.asarray(encoder.encode_corpus(scifact_slice.corpus))
    sims = q @ d.T
    for i, qid in enumerate(queries.ids):
        top = np.argsort(-sims[i], kind="stable")[:50]
        assert list(run[qid]) == [scifact_slice.corpus.ids[j] for j in top]
        np.testing.assert_allclose(list(run[qid].values()), sims[i, top], rtol=1e-5, atol=1e-6)
    assert run.name == "dense:all-MiniLM-L6-v2"


def test_k_larger_than_corpus(scifact_slice, dense_slice) -> None:
    run = dense_slice.search(scifact_slice.queries, k=1000)
    assert all(len(docs) == len(scifact_slice.corpus) for docs in run.data.values())


def test_remove_query_id_keeps_k(scifact_slice, dense_slice) -> None:
    corpus = scifact_slice.corpus
    doc_id, doc_text = corpus.ids[3], corpus.doc_texts()[3]
    queries = Queries([doc_id], [doc_text])  # a query that is one of the docs, same id
    plain = dense_slice.search(queries, k=5)
    assert next(iter(plain[doc_id])) == doc_id
    removed = dense_slice.search(queries, k=5, remove_query_id=True)
    assert doc_id not in removed[doc_id] and len(removed[doc_id]) == 5
    assert list(removed[doc_id])[:4] == list(plain[doc_id])[1:]


def test_blank_queries_get_no_results_with_warning(scifact_slice, dense_slice) -> None:
    queries = Queries(["a", "blank", "b"], [scifact_slice.queries.texts[0], " \t", "heart"])
    with pytest.warns(UserWarning, match=r"1 blank queries get no results \('blank'\)"):
        run = dense_slice.search(queries, k=3)
    assert run["blank"] == {} and len(run["a"]) == 3 and len(run["b"]) == 3
    with pytest.warns(UserWarning):
        only_blank = dense_slice.search(Queries(["x"], [""]), k=3)
    assert only_blank.data == {"x": {}}


def test_dimension_mismatch_is_clear(encoder) -> None:
    from rankloop.retrieval.dense import DenseRetriever

    with pytest.raises(RankloopError, match=r"384-d vectors but the index holds 8-d"):
        DenseRetriever(encoder, VectorIndex(8))


def test_empty_corpus_and_bad_k(encoder, dense_slice, scifact_slice) -> None:
    from rankloop.retrieval.dense import DenseRetriever

    with pytest.raises(RankloopError, match="empty corpus"):
        DenseRetriever.build(Corpus([], [], [], "nothing"), encoder)
    with pytest.raises(RankloopError, match="positive integer"):
        dense_slice.search(scifact_slice.queries, k=0)


def test_ann_factory_and_search_params(scifact_slice, encoder, dense_slice) -> None:
    from rankloop.retrieval.dense import DenseRetriever

    hnsw = DenseRetriever.build(scifact_slice.corpus, encoder, factory="HNSW32")
    a = hnsw.search(scifact_slice.queries, k=10, efSearch=256)
    b = dense_slice.search(scifact_slice.queries, k=10)
    overlap = np.mean([len(set(a[q]) & set(b[q])) / 10 for q in b.query_ids])
    assert overlap >= 0.95


def test_save_and_open_index(tmp_path: Path, scifact_slice, dense_slice) -> None:
    from rankloop.retrieval.base import read_meta
    from rankloop.retrieval.open import open_index

    dense_slice.save(tmp_path / "idx", corpus="slice")
    meta = read_meta(tmp_path / "idx")
    assert meta["kind"] == "dense" and meta["dim"] == 384 and meta["max_length"] == 128
    reopened = open_index(tmp_path / "idx", encoder=dense_slice.encoder)
    queries = scifact_slice.queries
    assert reopened.search(queries, k=10).data == dense_slice.search(queries, k=10).data
    with pytest.raises(IndexCorruptError, match=r"no retriever\.json"):
        open_index(tmp_path)


def test_interrupted_save_keeps_previous_index(
    tmp_path: Path, scifact_slice, dense_slice, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rankloop.retrieval import _encoded
    from rankloop.retrieval.open import open_index

    dense_slice.save(tmp_path / "idx")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process were interrupted mid-save

    monkeypatch.setattr(_encoded, "write_meta", crash)
    with pytest.raises(KeyboardInterrupt):
        dense_slice.save(tmp_path / "idx")
    reopened = open_index(tmp_path / "idx", encoder=dense_slice.encoder)
    assert len(reopened.index) == len(scifact_slice.corpus)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_dense_path_never_loads_java() -> None:
    code = (
        "import sys\n"
        "import rankloop.retrieval as r, rankloop.retrieval.cli, rankloop.retrieval.dense\n"
        "import rankloop.retrieval.hybrid, rankloop.retrieval.multivector\n"
        "r.DenseRetriever, r.HybridRetriever\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('jnius', 'pyserini', 'jnius_config')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "anchor"), [("scifact", 0.6451), ("nfcorpus", 0.3159)])
def test_minilm_flat_reproduces_mteb(name: str, anchor: float, beir_root: Path) -> None:
    """Full corpus through the default embedding cache (minutes on first run, then instant)."""
    from rankloop.data.beir import load_beir
    from rankloop.eval import evaluate
    from rankloop.retrieval.dense import DenseRetriever

    ds = load_beir(beir_root / name, split="test")
    run = DenseRetriever.build(ds.corpus).search(ds.queries)
    ndcg = evaluate(ds.qrels, run, ["ndcg_cut_10"], complete=True)["ndcg_cut_10"]
    assert abs(ndcg - anchor) <= 0.005
