"""The main job's speed-ups keep its results: the encoder backend is a config key, a cached LoL
model encodes no training query, and the depth sweep retrieves less but scores the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rankloop.stages  # noqa: F401 - registers every stage
from rankloop.data.types import Corpus, Qrels, Queries
from rankloop.embed.index import VectorIndex
from rankloop.errors import ConfigError
from rankloop.experiments.prf import SWEEP_K, PRFConfig, _at_depth, _sweep_k
from rankloop.pipeline import parse
from rankloop.prf.lol import LoLConfig, train_lol
from rankloop.retrieval.context import Context

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CORPUS = Corpus(["d1", "d2", "d3"], ["", "", ""], ["a", "b", "c"], "toy")


def test_backend_is_a_checked_config_key() -> None:
    assert PRFConfig().backend == "auto"
    assert PRFConfig.from_yaml(CONFIGS / "prf_scifact.yaml").backend == "auto"
    assert PRFConfig.from_dict({"backend": "torch"}).backend == "torch"
    with pytest.raises(ConfigError, match="backend must be one of"):
        PRFConfig.from_dict({"backend": "cuda-fp8"})
    ctx = Context(CORPUS, backend="torch-bf16", verbose=False)
    assert ctx.encoder._requested_backend == "torch-bf16"
    assert Context(CORPUS, verbose=False).encoder._requested_backend == "torch"


def _toy(n_docs: int = 40, n_queries: int = 30, d: int = 8):
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(n_docs, d)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    index = VectorIndex(d)
    index.add([f"d{i}" for i in range(n_docs)], docs)
    rel = rng.integers(0, n_docs, n_queries)
    qvecs = docs[rel] + 0.8 * rng.normal(size=(n_queries, d)).astype(np.float32)
    ids = [f"q{i}" for i in range(n_queries)]
    queries = Queries(ids, [f"text {i}" for i in ids], "toy")
    qrels = Qrels({q: {f"d{r}": 1} for q, r in zip(ids, rel)})
    return index, qvecs, queries, qrels


def test_cached_lol_model_encodes_no_query(tmp_path: Path) -> None:
    index, qvecs, queries, qrels = _toy()
    cfg = LoLConfig(dim=8, heads=2, hidden=16, fb_docs=3, epochs=1, n_negatives=5)
    calls = []

    def lazy() -> np.ndarray:
        calls.append(1)
        return qvecs

    eager = train_lol(index, qvecs, queries, qrels, config=cfg, max_train_queries=20, verbose=False)
    first = train_lol(index, lazy, queries, qrels, config=cfg, max_train_queries=20,
                      cache=tmp_path, verbose=False)  # fmt: skip
    assert calls == [1]  # trained: the vectors were needed once
    again = train_lol(index, lazy, queries, qrels, config=cfg, max_train_queries=20,
                      cache=tmp_path, verbose=False)  # fmt: skip
    assert calls == [1]  # loaded from the cache: nothing encoded
    fb = index.vectors_at(np.arange(3))[None].repeat(4, 0)
    mask = np.ones((4, 3), bool)
    for model in (first, again):  # lazy vectors train the same model as eager ones
        np.testing.assert_array_equal(model(qvecs[:4], fb, mask), eager(qvecs[:4], fb, mask))


def test_sweep_clone_retrieves_less_and_shares_the_lol_model() -> None:
    ctx = Context(CORPUS, dataset="scifact", verbose=False)
    clone = _at_depth(parse("bm25 >> rocchio(fb_docs=3, beta=0.5)", ctx), 5, ctx, SWEEP_K)
    assert str(clone) == f"bm25 >> rocchio(fb_docs=5, beta=0.5, k={SWEEP_K})"
    lol = parse("lol(lambda_cr=1.0)", ctx)
    lol.model_, lol._trained_as = object(), lol._training_key()  # as if trained
    clone = _at_depth(lol, 2, ctx, SWEEP_K)
    assert clone.fb_limit == 2 and clone.k == SWEEP_K and clone.model_ is lol.model_
    assert _at_depth(lol, 10, ctx, SWEEP_K) is None  # deeper than the model reads
    # Negative feedback from the bottom of a first pass whose depth is k: the sweep keeps k.
    assert _sweep_k(parse("bm25_rocchio", ctx), 1000) == SWEEP_K  # gamma 0: no negative terms
    assert _sweep_k(parse("bm25_rocchio(gamma=0.1)", ctx), 1000) == 1000
    assert _sweep_k(parse("rocchio", ctx), 50) == 50
