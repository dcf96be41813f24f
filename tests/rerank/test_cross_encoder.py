"""`cross_encoder` stage and `train_cross_encoder` on a tiny random BERT cross-encoder."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from rankloop.data.types import Corpus, Qrels, Queries, Run
from rankloop.embed.encoders import _default_model_dir
from rankloop.errors import ConfigError, ModelNotAvailableError, RankloopError
from rankloop.pipeline import parse
from rankloop.rerank.cross_encoder import (
    CrossEncoderStage,
    load_cross_encoder,
    read_training_record,
    train_cross_encoder,
    training_pairs,
)
from rankloop.retrieval.context import Context

pytest.importorskip("sentence_transformers")

N_DOCS = 12
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random 2-layer BERT (hidden 32) with one logit, and the bundled MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-ce")
    src = _default_model_dir()
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1,
                        max_position_embeddings=128)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    ids = [f"d{i}" for i in range(N_DOCS)]
    titles = [f"title {i}" for i in range(N_DOCS)]
    texts = [f"document number {i} about {'cells' if i % 2 else 'genes'} and protein {i * 7}"
             for i in range(N_DOCS)]  # fmt: skip
    return Corpus(ids, titles, texts, name="toy")


@pytest.fixture()
def ctx(corpus: Corpus) -> Context:
    return Context(corpus, verbose=False)


QUERIES = Queries(["q1", "q2"], ["which genes code protein", "cells in tissue"], name="toy")


def _run(n: int = N_DOCS) -> Run:
    return Run({q: {f"d{i}": float(n - i) for i in range(n)} for q in QUERIES.ids}, "first")


def test_rerank_keeps_docs_reorders_top_depth_and_cuts_to_k(ctx: Context, tiny_model: str) -> None:
    run = _run()
    stage = CrossEncoderStage(ctx, model=tiny_model, depth=5, k=9, max_length=64)
    out = stage(QUERIES, run)
    model = stage.cross_encoder
    for q, qtext in QUERIES.items():
        before = [d for d, _ in run.ranked(q)]
        after = [d for d, _ in out.ranked(q)]
        assert len(after) == 9
        assert set(after[:5]) == set(before[:5])  # the top depth is re-ordered among itself
        assert after[5:] == before[5:9]  # the rest follow in their old order
        # the head holds the model's raw logits for (query, title + " " + text)
        docs = [ctx.corpus.titles[int(d[1:])] + " " + ctx.corpus.texts[int(d[1:])] for d in after[:5]]
        expect = model.predict([(qtext, t) for t in docs])
        np.testing.assert_allclose([out[q][d] for d in after[:5]], expect, rtol=1e-4, atol=1e-5)
        assert after[:5] == [before[:5][i] for i in np.argsort(-np.array(
            [out[q][d] for d in before[:5]]), kind="stable")]  # fmt: skip
    # depth beyond the list: the whole list is re-scored, and the doc set is kept
    full = CrossEncoderStage(ctx, model=tiny_model, depth=100, max_length=64)(QUERIES, run)
    assert all(set(full[q]) == set(run[q]) for q in QUERIES.ids)


def test_model_and_scores_shared_within_context(ctx: Context, tiny_model: str) -> None:
    a = CrossEncoderStage(ctx, model=tiny_model, depth=4, max_length=64)
    b = CrossEncoderStage(ctx, model=tiny_model, depth=6, max_length=64)
    assert a.cross_encoder is b.cross_encoder  # loaded once, held by reference
    ra, rb = a(QUERIES, _run()), b(QUERIES, _run())
    for q in QUERIES.ids:  # pairs scored by `a` are reused by `b`, bit for bit
        assert all(rb[q][d] == ra[q][d] for d, _ in _run().ranked(q, 4))
    other = Context(ctx.corpus, verbose=False)
    assert CrossEncoderStage(other, model=tiny_model, max_length=64).cross_encoder is not a.cross_encoder


def test_blank_query_keeps_its_ranking(ctx: Context, tiny_model: str) -> None:
    queries = Queries(["q1", "qb"], ["genes", "   "])
    run = Run({q: {f"d{i}": float(-i) for i in range(6)} for q in queries.ids})
    out = CrossEncoderStage(ctx, model=tiny_model, depth=3, k=4, max_length=64)(queries, run)
    assert out.ranked("qb") == run.ranked("qb", 4)


def test_text_form_round_trip_and_set_params(ctx: Context, tiny_model: str) -> None:
    stage = CrossEncoderStage(ctx, model=tiny_model, depth=20, max_length=None)
    text = str(stage)
    assert text == f"cross_encoder(model={tiny_model!r}, depth=20, max_length=None)"
    again = parse(text, ctx)
    assert str(again) == text and again.get_params() == stage.get_params()
    assert str(parse(f"bm25 % 50 >> {text}", ctx)) == f"bm25 % 50 >> {text}"
    stage.set_params(depth=7, batch_size=4)
    assert (stage.depth, stage.batch_size) == (7, 4)
    assert str(stage) == f"cross_encoder(model={tiny_model!r}, depth=7, batch_size=4, max_length=None)"
    with pytest.raises(ConfigError):
        stage.set_params(depth=0)
    with pytest.raises(ConfigError, match="valid parameters"):
        stage.set_params(dept=3)
    for bad in ({"depth": 0}, {"k": -1}, {"batch_size": 1.5}, {"max_length": 0}, {"model": ""},
                {"model": None}):  # fmt: skip
        with pytest.raises(ConfigError):
            CrossEncoderStage(ctx, **{"model": tiny_model, **bad})
    with pytest.raises(ConfigError, match="needs a model"):
        parse("bm25 >> cross_encoder(depth=5)", ctx)


def test_needs_input(ctx: Context, tiny_model: str) -> None:
    stage = CrossEncoderStage(ctx, model=tiny_model)
    with pytest.raises(RankloopError, match="re-ranks"):
        stage(QUERIES)
    with pytest.raises(RankloopError, match="not among"):
        stage(Queries(["q1"], ["x"]), _run())


def test_hub_name_offline_fails_fast(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stage = CrossEncoderStage(ctx, model="cross-encoder/surely-not-cached-model-xyz")  # no I/O
    t0 = time.perf_counter()
    with pytest.raises(ModelNotAvailableError, match="HF_HUB_OFFLINE"):
        stage.check()
    with pytest.raises(ModelNotAvailableError):
        stage(QUERIES, _run())
    assert time.perf_counter() - t0 < 5.0


def test_bi_encoder_is_refused(ctx: Context) -> None:
    with pytest.raises(ConfigError, match="not a cross-encoder"):
        CrossEncoderStage(ctx, model="all-MiniLM-L6-v2").check()


def test_training_pairs_hard_negatives() -> None:
    queries = Queries(["a", "b", "c"], ["x", "y", "z"])
    qrels = Qrels({"a": {"d1": 1, "d2": 2, "d3": 0}, "b": {"d4": 1}, "c": {"d5": 0}})
    run = Run({"a": {f"d{i}": float(-i) for i in range(1, 9)}, "b": {"d4": 1.0, "d9": 0.5}})
    qs, ds, ys = training_pairs(queries, qrels, run, positives=1, negatives=3, negatives_depth=5)
    got = {(q, d): y for q, d, y in zip(qs, ds, ys)}
    assert got[("a", "d2")] == 1.0 and ("a", "d1") not in got  # the highest grade first
    assert sorted(d for (q, d), y in got.items() if q == "a" and y == 0.0) != []
    assert all(d in {"d3", "d4", "d5"} for (q, d), y in got.items() if q == "a" and y == 0.0)
    assert got[("b", "d4")] == 1.0 and got[("b", "d9")] == 0.0
    assert not any(q == "c" for q in qs)  # no relevant doc: no pairs


def test_train_two_steps_gives_loadable_model(corpus: Corpus, tiny_model: str, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    pytest.importorskip("datasets")
    qrels = Qrels({"q1": {"d2": 1}, "q2": {"d1": 1}})
    out = tmp_path / "ce"
    path = train_cross_encoder(corpus, QUERIES, qrels, run=_run(), out=out, base_model=tiny_model,
                               negatives=2, batch_size=2, max_steps=2, max_length=32,
                               device="cpu", verbose=False)  # fmt: skip
    assert path == out and (out / "config.json").is_file()
    assert not list(tmp_path.glob(".ce.*"))  # the atomic save left no temporary directory
    record = read_training_record(out)
    assert record is not None and record["steps"] == 2 and record["pairs"] == 6
    model = load_cross_encoder(str(out), device="cpu")
    assert np.isfinite(model.predict([("genes", "a gene")])).all()
    ctx = Context(corpus, verbose=False)
    stage = CrossEncoderStage(ctx, model=str(out), depth=3)
    assert set(stage(QUERIES, _run())["q1"]) == set(_run()["q1"])
    first = stage.cross_encoder
    train_cross_encoder(corpus, QUERIES, qrels, run=_run(), out=out, base_model=tiny_model,
                        negatives=1, batch_size=2, max_steps=1, max_length=32, device="cpu",
                        verbose=False)  # fmt: skip
    assert read_training_record(out)["steps"] == 1
    assert stage.cross_encoder is not first  # a model re-saved at the path is loaded afresh
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a model")
    with pytest.raises(RankloopError):  # refused before any training
        train_cross_encoder(corpus, QUERIES, qrels, run=_run(), out=mine, base_model=tiny_model,
                            max_steps=1, device="cpu", verbose=False)  # fmt: skip
    assert (mine / "notes.txt").read_text() == "not a model"
