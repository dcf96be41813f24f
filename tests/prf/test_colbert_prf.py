"""ColBERT-PRF on a tiny hand-checkable token index, and the ColBERT checkpoint loader."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from rankloop.data.types import Queries, Run
from rankloop.embed.encoders import TokenEmbeddings
from rankloop.embed.multivector import MultiVectorIndex
from rankloop.errors import ConfigError, ModelNotAvailableError
from rankloop.prf.colbert_prf import (
    ColBERTPRF,
    Expansion,
    append_expansion,
    centroid_labels,
    idf,
    kmeans_centroids,
)

E = np.eye(4, dtype=np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _pack(docs: list[list[tuple[np.ndarray, int]]]) -> TokenEmbeddings:
    vecs = [v for d in docs for v, _ in d]
    ids = [t for d in docs for _, t in d]
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    return TokenEmbeddings(
        _unit(np.stack(vecs)) if vecs else np.zeros((0, 4), np.float32),
        np.array(ids, dtype=np.int32),
        offsets,
    )


# "f" is the feedback doc: two tight groups of tokens, around e0 (id 10) and e1 (id 20).
# df: token 10 in f, b, c (3 docs); token 20 in f only (1 doc); token 30 in b, c, d (3 docs).
_EPS = 0.05
_F = [
    (E[0] + _EPS * E[2], 10),
    (E[0] - _EPS * E[2], 10),
    (E[0], 10),
    (E[1] + _EPS * E[3], 20),
    (E[1] - _EPS * E[3], 20),
    (E[1], 20),
]
_DOCS = {
    "f": _F,
    "b": [(E[0], 10), (E[2], 30)],
    "c": [(E[0], 10), (E[2], 30)],
    "d": [(E[2], 30), (E[3], 40)],
}


@pytest.fixture
def index() -> MultiVectorIndex:
    idx = MultiVectorIndex(4)
    idx.add(list(_DOCS), _pack(list(_DOCS.values())))
    return idx


def test_kmeans_step_labels_idf_and_weights(index: MultiVectorIndex) -> None:
    prf = ColBERTPRF(fb_docs=1, n_clusters=2, fb_embs=1, beta=0.5, k_nearest=3)
    exp = prf.expand(index, [["f", "b"]])  # fb_docs=1: only "f" is feedback
    # Two clusters: the e0 group (label 10, idf log(5/4)) and the e1 group (label 20, idf
    # log(5/2)); fb_embs=1 keeps the rarer one, weighted beta * idf.
    assert exp.tokens.offsets.tolist() == [0, 1]
    assert exp.tokens.token_ids.tolist() == [20]
    np.testing.assert_allclose(exp.idf, [np.log(5 / 2)], rtol=1e-6)
    np.testing.assert_allclose(exp.weights, [0.5 * np.log(5 / 2)], rtol=1e-6)
    group = _unit(np.stack([v for v, t in _F if t == 20]))
    np.testing.assert_allclose(exp.tokens.vectors[0], group.mean(axis=0), atol=1e-5)
    # fb_embs=2 keeps both, highest IDF first.
    both = ColBERTPRF(fb_docs=1, n_clusters=2, fb_embs=2, k_nearest=3).expand(index, [["f"]])
    assert both.tokens.token_ids.tolist() == [20, 10]
    np.testing.assert_allclose(both.weights, np.log([5 / 2, 5 / 4]), rtol=1e-6)


def test_kmeans_centroids_are_group_means_and_seeded() -> None:
    x = _unit(np.stack([v for v, _ in _F]))
    c = kmeans_centroids(x, 2, random_state=3)
    c = c[np.argsort(-c[:, 0])]
    np.testing.assert_allclose(c, [x[:3].mean(0), x[3:].mean(0)], atol=1e-5)
    np.testing.assert_array_equal(kmeans_centroids(x, 2, random_state=3), kmeans_centroids(x, 2, random_state=3))
    np.testing.assert_array_equal(kmeans_centroids(x[:2], 5), x[:2])  # fewer points than k


def test_centroid_labels_mode_and_ties() -> None:
    ids = np.array([[7, 3, 3, 9], [5, 6, 6, 5], [-1, -1, 4, -1], [-1, -1, -1, -1]])
    # row 1: 5 and 6 tie twice each -> 5 (seen nearest first); -1 is never a label.
    assert centroid_labels(ids).tolist() == [3, 5, 4, -1]


def test_idf_formula() -> None:
    np.testing.assert_allclose(idf(np.array([0, 3, 9]), 9), np.log([10, 10 / 4, 1]), rtol=1e-6)


def test_append_expansion_order_and_weights() -> None:
    q = _pack([[(E[0], 1), (E[1], 2)], [(E[2], 3)]])
    exp = Expansion(
        _pack([[(E[3], 40)], [(E[0], 10), (E[1], 20)]]),
        np.array([1.0, 2.0, 3.0], np.float32),
        np.array([0.5, 1.0, 1.5], np.float32),
    )
    tokens, w = append_expansion(q, exp)
    assert tokens.offsets.tolist() == [0, 3, 6]
    assert tokens.token_ids.tolist() == [1, 2, 40, 3, 10, 20]
    np.testing.assert_allclose(w, [1, 1, 0.5, 1, 1.0, 1.5])
    np.testing.assert_allclose(tokens.vectors[2], E[3])


def test_reranker_scores_are_weighted_maxsim(index: MultiVectorIndex) -> None:
    prf = ColBERTPRF(fb_docs=1, n_clusters=2, fb_embs=1, k_nearest=3, mode="reranker")
    query = _pack([[(E[0] + E[2], 1)]])
    scores, ids = prf.rerank(index, query, [["f", "b", "d"]])
    # Expanded query: q = (e0 + e2)/√2 with weight 1, centroid ≈ e1 with weight log(2.5).
    w = np.log(5 / 2)
    q = _unit(E[0] + E[2])
    cent = _unit(np.stack([v for v, t in _F if t == 20])).mean(0)
    expect = {}
    for d in ("f", "b", "d"):
        toks = _unit(np.stack([v for v, _ in _DOCS[d]]))
        expect[d] = (toks @ q).max() + w * (toks @ cent).max()
    assert ids[0] == sorted(expect, key=lambda d: -expect[d])
    np.testing.assert_allclose(scores[0], [expect[d] for d in ids[0]], rtol=1e-5)


def test_ranker_retrieves_with_expanded_query(index: MultiVectorIndex) -> None:
    prf = ColBERTPRF(fb_docs=1, n_clusters=2, fb_embs=1, beta=2.0, k_nearest=3)
    prf.candidates_per_token = 8
    query = _pack([[(E[2], 1)]])
    _, plain_ids = index.search(query, 4)
    scores, ids = prf.rank(index, query, [["f"]], 4)
    # Plain MaxSim ranks f last (its tokens barely touch e2); the e1 expansion, weighted
    # 2 log 2.5, lifts f to the top with score max<e2, f> + 2 log 2.5 <centroid, e1-ish>.
    assert plain_ids[0][-1] == "f"
    assert ids[0][0] == "f"
    toks = _unit(np.stack([v for v, _ in _F]))
    cent = toks[3:].mean(0)
    expect = (toks @ E[2]).max() + 2 * np.log(5 / 2) * (toks @ cent).max()
    np.testing.assert_allclose(scores[0][0], expect, rtol=1e-5)


def test_queries_without_feedback_keep_their_tokens(index: MultiVectorIndex) -> None:
    query = _pack([[(E[0], 1)], [(E[2], 2)]])
    exp = ColBERTPRF(n_clusters=2, k_nearest=3).expand(index, [[], ["d"]])
    assert exp.tokens.offsets.tolist()[:2] == [0, 0]
    tokens, w = append_expansion(query, exp)
    assert tokens.offsets[1] == 1 and w[0] == 1.0


def test_run_end_to_end(index: MultiVectorIndex) -> None:
    class _Enc:
        name, dim = "toy", 4

        def encode_tokens(self, texts, kind="doc"):
            return _pack([[(E[2], 1)] for _ in texts])

    ret = SimpleNamespace(encoder=_Enc(), index=index)
    first = Run({"q1": {"b": 3.0, "f": 2.0, "d": 1.0}, "q2": {}})
    qs = Queries(["q1", "q2", "q3"], ["x", "y", "  "])
    with pytest.warns(UserWarning, match="blank"):
        rr = ColBERTPRF(fb_docs=1, n_clusters=2, k_nearest=3, mode="reranker").run(
            ret, qs, first, k=2
        )
    assert list(rr["q1"]) and set(rr["q1"]) <= {"b", "f"} and rr["q3"] == {}
    ranker = ColBERTPRF(fb_docs=2, n_clusters=2, k_nearest=3, candidates_per_token=8)
    with pytest.warns(UserWarning, match="blank"):
        r = ranker.run(ret, qs, first, k=3)
    assert len(r["q1"]) == 3 and len(r["q2"]) == 3 and ranker.timings_["queries"] == 2


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError):
        ColBERTPRF(n_clusters=0)
    with pytest.raises(ConfigError):
        ColBERTPRF(mode="both")
    with pytest.raises(ConfigError):
        ColBERTPRF(beta=-1.0)


# -- the ColBERT checkpoint loader ------------------------------------------------------------
_VOCAB = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","]
_VOCAB += ["the", "cat", "sat", "on", "mat", "dog", "ran", "a", "fast"]


def _tiny_colbert(path, dim: int = 8, hidden: int = 16):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    BertTokenizer(vocab={w: i for i, w in enumerate(_VOCAB)}).save_pretrained(path)
    cfg = BertConfig(
        vocab_size=len(_VOCAB), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, architectures=["HF_ColBERT"],
    )  # fmt: skip
    cfg.save_pretrained(path)
    bert = BertModel(cfg, add_pooling_layer=False).eval()
    linear = torch.randn(dim, hidden)
    state = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
    state["linear.weight"] = linear
    save_file(state, str(path / "model.safetensors"))
    return bert, linear


def test_colbert_loader_on_a_tiny_checkpoint(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from rankloop.embed.colbert import ColBERTEncoder

    bert, linear = _tiny_colbert(tmp_path)
    enc = ColBERTEncoder(str(tmp_path), device="cpu", query_maxlen=8, doc_maxlen=10)
    assert enc.dim == 8 and enc.max_length == 10
    docs = enc.encode_tokens(["the cat sat, on the mat.", "a dog ran fast"], kind="doc")
    # [CLS] [unused1] the cat sat on the mat [SEP] (punctuation dropped) / 4 words + 3 specials.
    assert docs.lengths.tolist() == [9, 7]
    assert (
        docs.token_ids[:2].tolist() == [4, 2]
        and 7 not in docs.token_ids
        and 8 not in docs.token_ids
    )
    np.testing.assert_allclose(np.linalg.norm(docs.vectors, axis=1), 1.0, atol=1e-5)
    q = enc.encode_tokens(["cat", "the dog ran"], kind="query")
    assert q.lengths.tolist() == [8, 8]  # padded with [MASK] to query_maxlen
    assert q.token_ids[:4].tolist() == [4, 1, 10, 5] and (q.token_ids[4:8] == 6).all()
    # Same numbers as BERT + projection by hand (the [MASK] rows are not attended to).
    ids = torch.tensor([[4, 2, 16, 14, 15, 17, 5]])
    with torch.no_grad():
        ref = torch.nn.functional.normalize(
            bert(input_ids=ids).last_hidden_state @ linear.T, dim=-1
        )
    np.testing.assert_allclose(docs.vectors[9:], ref[0].numpy(), atol=1e-4)
    no_special = enc.encode_tokens(["a dog ran fast"], keep_special=False)
    assert no_special.token_ids.tolist() == [16, 14, 15, 17]
    assert enc.fingerprint.startswith(enc.name + "@")


def test_colbert_loader_rejects_a_plain_bert(tmp_path) -> None:
    pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    from rankloop.embed.colbert import ColBERTEncoder

    _tiny_colbert(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["linear.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelNotAvailableError, match=r"linear\.weight"):
        ColBERTEncoder(str(tmp_path), device="cpu")
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["HF_ColBERT"]


@pytest.mark.network
def test_colbertv2_from_the_hub() -> None:
    from rankloop.embed.colbert import ColBERTEncoder, hub_available

    if not hub_available("colbert-ir/colbertv2.0"):
        pytest.skip("colbert-ir/colbertv2.0 is not cached and the hub cannot be reached")
    enc = ColBERTEncoder("colbert-ir/colbertv2.0", device="cpu")
    q = enc.encode_tokens(["what causes fever"], kind="query")
    d = enc.encode_tokens(["Fever is caused by infection.", "Stock markets fell."])
    assert enc.dim == 128 and q.lengths.tolist() == [32]
    idx = MultiVectorIndex(enc.dim)
    idx.add(["rel", "off"], d)
    _, ids = idx.search(q, 2)
    assert ids[0][0] == "rel"
