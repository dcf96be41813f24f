"""MultiVectorIndex: MaxSim equals a brute-force numpy MaxSim; token stats; atomic I/O."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

import rankloop.embed.multivector as mv_mod
from rankloop.embed import MultiVectorIndex, TokenEmbeddings
from rankloop.errors import IndexCorruptError, RankloopError

DIM = 12


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def pack(lengths: list[int], rng: np.random.Generator, vocab: int = 50) -> TokenEmbeddings:
    total = sum(lengths)
    v = rng.normal(size=(total, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = rng.integers(0, vocab, total).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenEmbeddings(v, ids, offsets)


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], TokenEmbeddings, TokenEmbeddings]:
    rng = np.random.default_rng(3)
    lengths = [int(n) for n in rng.integers(1, 30, 60)]
    lengths[7] = 0  # an empty document
    docs = pack(lengths, rng)
    queries = pack([4, 1, 6, 0], rng)
    return [f"doc{i}" for i in range(60)], docs, queries


def brute_maxsim(q: np.ndarray, w: np.ndarray, docs: TokenEmbeddings) -> np.ndarray:
    out = []
    for i in range(len(docs)):
        d, _ = docs[i]
        out.append(-np.inf if len(d) == 0 else float(w @ (q @ d.T).max(axis=1)))
    return np.array(out)


def test_token_embeddings_validation_and_concat(corpus):
    _, docs, queries = corpus
    both = TokenEmbeddings.concat([docs, queries])
    assert len(both) == len(docs) + len(queries)
    np.testing.assert_array_equal(both[len(docs)][0], queries[0][0])
    assert both.lengths.tolist() == docs.lengths.tolist() + queries.lengths.tolist()
    with pytest.raises(RankloopError, match="offsets"):
        TokenEmbeddings(docs.vectors, docs.token_ids, docs.offsets[:-1])
    with pytest.raises(RankloopError, match="token_ids"):
        TokenEmbeddings(docs.vectors, docs.token_ids.astype(np.int64), docs.offsets)


def test_maxsim_equals_brute_force(corpus):
    ids, docs, queries = corpus
    index = MultiVectorIndex(DIM)
    index.add(ids, docs)
    q, _ = queries[0]
    w = np.array([1.0, 0.5, 2.0, 0.0], np.float32)
    for weights in (None, w):
        ref = brute_maxsim(q, np.ones(4) if weights is None else w, docs)
        got = index.maxsim(q, ids, weights=weights)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert np.isneginf(index.maxsim(q, ["doc7"]))[0]
    sub = ["doc9", "doc2"]
    np.testing.assert_allclose(
        index.maxsim(q, sub), brute_maxsim(q, np.ones(4), docs)[[9, 2]], rtol=1e-5
    )


def test_search_with_all_candidates_is_exact(corpus, monkeypatch):
    ids, docs, queries = corpus
    monkeypatch.setattr(mv_mod, "_SCORE_ROWS", 40)  # force several scoring chunks
    index = MultiVectorIndex(DIM)
    index.add(ids[:30], _slice(docs, 0, 30))
    index.add(ids[30:], _slice(docs, 30, 60))
    weights = np.linspace(0.5, 1.5, queries.vectors.shape[0]).astype(np.float32)
    scores, got = index.search(
        queries, 5, candidates_per_token=docs.vectors.shape[0], weights=weights
    )
    for i in range(len(queries)):
        q, _ = queries[i]
        lo, hi = queries.offsets[i], queries.offsets[i + 1]
        if len(q) == 0:
            assert got[i] == [] and np.isneginf(scores[i]).all()
            continue
        ref = brute_maxsim(q, weights[lo:hi], docs)
        top = np.argsort(-ref, kind="stable")[:5]
        assert got[i] == [ids[t] for t in top]
        np.testing.assert_allclose(scores[i], ref[top], rtol=1e-5, atol=1e-5)


def _slice(t: TokenEmbeddings, a: int, b: int) -> TokenEmbeddings:
    lo, hi = t.offsets[a], t.offsets[b]
    return TokenEmbeddings(t.vectors[lo:hi], t.token_ids[lo:hi], t.offsets[a : b + 1] - lo)


def test_ann_candidates_return_docs(corpus):
    ids, docs, queries = corpus
    index = MultiVectorIndex(DIM, "HNSW16")
    index.add(ids, docs)
    scores, got = index.search(queries, 3, candidates_per_token=5, efSearch=32)
    assert [len(g) for g in got[:3]] == [3, 3, 3] and got[3] == []
    # candidates are scored exactly: scores equal MaxSim of the returned docs
    np.testing.assert_allclose(scores[0], index.maxsim(queries[0][0], got[0]), rtol=1e-6)


def test_token_statistics(corpus):
    ids, docs, _ = corpus
    index = MultiVectorIndex(DIM)
    index.add(ids, docs)
    assert (index.n_docs, index.n_tokens) == (60, docs.vectors.shape[0])
    ref = np.zeros(50, np.int64)
    for i in range(len(docs)):
        for t in set(docs[i][1].tolist()):
            ref[t] += 1
    np.testing.assert_array_equal(index.token_df[: len(ref)], ref[: len(index.token_df)])
    assert index.df([3, 10_000, -1]).tolist() == [ref[3], 0, 0]
    v, t = index.doc_tokens("doc5")
    np.testing.assert_array_equal(v, docs[5][0])
    np.testing.assert_array_equal(t, docs[5][1])
    assert index.doc_tokens("doc7")[0].shape == (0, DIM)
    scores, tok, rows = index.nearest_tokens(docs.vectors[[4, 9]], 1)
    assert rows[:, 0].tolist() == [4, 9] and tok[:, 0].tolist() == docs.token_ids[[4, 9]].tolist()
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
    assert index.token_doc()[docs.offsets[5]] == 5


def test_bad_input(corpus):
    ids, docs, queries = corpus
    index = MultiVectorIndex(DIM)
    with pytest.raises(RankloopError, match="59 doc ids for 60"):
        index.add(ids[:59], docs)
    with pytest.raises(RankloopError, match="duplicate"):
        index.add(["x"] * 60, docs)
    index.add(ids, docs)
    with pytest.raises(RankloopError, match="already in the index"):
        index.add(ids[:1], _slice(docs, 0, 1))
    wrong = TokenEmbeddings(np.zeros((2, 5), np.float32), np.zeros(2, np.int32), np.array([0, 2]))
    with pytest.raises(RankloopError, match="dimension"):
        index.search(wrong, 3)
    with pytest.raises(RankloopError, match="one value per query token"):
        index.search(queries, 3, weights=[1.0])
    with pytest.raises(RankloopError, match="not in the index"):
        index.maxsim(queries[0][0], ["nope"])


def test_save_load_and_corruption(tmp_path, corpus, monkeypatch):
    ids, docs, queries = corpus
    index = MultiVectorIndex(DIM, "IVF4,Flat")
    index.add(ids, docs)
    index.save(tmp_path / "mv")
    loaded = MultiVectorIndex.load(tmp_path / "mv", verify=True)
    assert loaded.doc_ids == ids and loaded.factory == "IVF4,Flat"
    s0, i0 = index.search(queries, 4, nprobe=4)
    s1, i1 = loaded.search(queries, 4, nprobe=4)
    assert i0 == i1
    np.testing.assert_array_equal(s0, s1)
    np.testing.assert_array_equal(loaded.token_df, index.token_df)

    # an interrupted save leaves the previous index loadable
    bigger = MultiVectorIndex(DIM)
    bigger.add([f"z{i}" for i in range(60)], docs)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mv_mod, "file_records", crash)
    with pytest.raises(KeyboardInterrupt):
        bigger.save(tmp_path / "mv")
    monkeypatch.undo()
    assert MultiVectorIndex.load(tmp_path / "mv").doc_ids == ids

    # truncation of any file fails loudly
    for victim in ["token_ids.npy", "tokens/vectors.npy"]:
        index.save(tmp_path / "t")
        path = tmp_path / "t" / victim
        path.write_bytes(path.read_bytes()[:-8])
        with pytest.raises(IndexCorruptError, match="truncated"):
            MultiVectorIndex.load(tmp_path / "t")
