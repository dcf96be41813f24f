"""`knn_feedback`: kNN re-ranking from known relevant docs on a hand-made 2-d vector index."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

import rankloop.rerank.knn_feedback as knn_mod
from rankloop.data.clicklogs import ClickLog
from rankloop.data.types import Corpus, Qrels, Queries, Run
from rankloop.embed.index import VectorIndex
from rankloop.errors import ConfigError, RankloopError
from rankloop.pipeline import parse
from rankloop.rerank.knn_feedback import KNNFeedback, clicked_docs, knn_scores
from rankloop.retrieval.context import Context

R = 1 / math.sqrt(2)
VECS = {"d0": (1, 0), "d1": (0, 1), "d2": (R, R), "d3": (-1, 0), "d4": (0.6, 0.8), "d5": (0.8, 0.6)}
QUERIES = Queries(["q1", "q2"], ["first", "second"])


def _context(vecs: dict[str, tuple[float, ...]]) -> Context:
    ids = list(vecs)
    index = VectorIndex(len(next(iter(vecs.values()))), "Flat", metric="ip")
    index.add(ids, np.array([vecs[d] for d in ids], np.float32))
    ctx = Context(Corpus(ids, [""] * len(ids), ids, name="hand"), verbose=False)
    ctx._dense = SimpleNamespace(index=index)  # the context's dense index, prepared by hand
    return ctx


@pytest.fixture()
def ctx() -> Context:
    return _context(VECS)


def _run() -> Run:
    docs = {f"d{i}": float(5 - i) for i in range(6)}
    return Run({"q1": dict(docs), "q2": dict(docs)}, "first")


def _order(run: Run, q: str) -> list[str]:
    return [d for d, _ in run.ranked(q)]


def test_hand_checked_scores_and_unfed_query_unchanged(ctx: Context) -> None:
    stage = KNNFeedback(ctx, weight=0.5, depth=4, k=6).set_feedback({"q1": ["d1"]})
    out = stage(QUERIES, _run())
    # head d0..d3: min-max first-stage (1, 2/3, 1/3, 0), cosine to d1 (0, 1, R, 0)
    expect = {"d0": 0.5, "d1": 0.5 * 2 / 3 + 0.5, "d2": 0.5 / 3 + 0.5 * R, "d3": 0.0}
    for d, v in expect.items():
        assert out["q1"][d] == pytest.approx(v)
    assert _order(out, "q1") == ["d1", "d2", "d0", "d3", "d4", "d5"]  # d4, d5 follow, in order
    assert out.ranked("q2") == _run().ranked("q2")  # no feedback: incoming ranking, scores too


def test_mean_aggregate_zscore_and_weight_zero(ctx: Context) -> None:
    fed = {"q1": ["d0", "d1"]}
    out = KNNFeedback(ctx, agg="mean", norm=None, weight=1.0, depth=6).set_feedback(fed)(QUERIES, _run())
    assert out["q1"]["d2"] == pytest.approx(R)  # (R + R) / 2
    assert out["q1"]["d0"] == pytest.approx(0.5) and out["q1"]["d3"] == pytest.approx(-0.5)
    z = KNNFeedback(ctx, norm="zscore", weight=0.25, depth=6).set_feedback(fed)(QUERIES, _run())
    first = np.arange(5.0, -1.0, -1.0)
    zs = (first - first.mean()) / first.std()
    cos = np.array([max(np.dot(VECS[f"d{i}"], VECS[k]) for k in fed["q1"]) for i in range(6)])
    np.testing.assert_allclose([z["q1"][f"d{i}"] for i in range(6)], 0.75 * zs + 0.25 * cos)
    same = KNNFeedback(ctx, weight=0.0).set_feedback(fed)(QUERIES, _run())
    assert _order(same, "q1") == _order(_run(), "q1")


def test_exclude_known_drops_feedback_docs(ctx: Context) -> None:
    out = KNNFeedback(ctx, depth=4, exclude_known=True).set_feedback({"q1": ["d1"]})(QUERIES, _run())
    assert "d1" not in out["q1"]
    # head d0, d2, d3, d4: min-max (1, .5, .25, 0) + cosine to d1 (0, R, 0, .8), halved
    assert out["q1"]["d2"] == pytest.approx(0.25 + 0.5 * R)
    assert out["q1"]["d4"] == pytest.approx(0.4)
    assert _order(out, "q1") == ["d2", "d0", "d4", "d3", "d5"]
    assert out.ranked("q2") == _run().ranked("q2")


def test_cut_to_k_and_known_docs_outside_index(ctx: Context) -> None:
    out = KNNFeedback(ctx, depth=3, k=4).set_feedback({"q1": ["zz", "d1"], "q2": ["zz"]})(QUERIES, _run())
    assert len(out["q1"]) == 4 and _order(out, "q1")[:3] == ["d1", "d0", "d2"]
    assert out.ranked("q2") == _run().ranked("q2", 4)  # its only known doc is not indexed


def test_fit_from_qrels_and_clicks(ctx: Context) -> None:
    stage = KNNFeedback(ctx).fit(QUERIES, Qrels({"q1": {"d1": 1, "d3": 0}, "qx": {"d0": 2}}))
    assert stage.feedback == {"q1": ["d1"]}
    log = ClickLog.from_lists(["q1", "q1", "q2"], [["d0", "d1"], ["d0", "d1"], ["d2", "d4"]],
                              [[1], [0, 1], []])  # fmt: skip
    assert clicked_docs(log) == {"q1": ["d1", "d0"]}  # most clicked first
    assert clicked_docs(log, min_clicks=2) == {"q1": ["d1"]}
    assert KNNFeedback(ctx).fit_clicks(log, min_clicks=2).feedback == {"q1": ["d1"]}


def test_vectorised_over_chunks_matches_per_query_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    vecs = {f"d{i}": tuple(rng.normal(size=5)) for i in range(40)}
    ctx = _context(vecs)
    qids = [f"q{j}" for j in range(9)]
    run = Run({q: {f"d{i}": float(rng.normal()) for i in rng.choice(40, 25, replace=False)}
               for q in qids})  # fmt: skip
    known = {q: [f"d{i}" for i in rng.choice(40, 1 + j % 3, replace=False)] for j, q in enumerate(qids[:7])}
    monkeypatch.setattr(knn_mod, "_CHUNK_FLOATS", 200)  # a few queries per block
    out = KNNFeedback(ctx, weight=0.3, depth=10, agg="mean").set_feedback(known)(Queries(qids, qids), run)
    for q in qids[:7]:
        head = run.ranked(q, 10)
        s = np.array([v for _, v in head])
        c = np.array([vecs[d] for d, _ in head])
        k = np.array([vecs[d] for d in known[q]])
        cos = (c / np.linalg.norm(c, axis=1)[:, None]) @ (k / np.linalg.norm(k, axis=1)[:, None]).T
        ref = 0.7 * (s - s.min()) / (s.max() - s.min()) + 0.3 * cos.mean(axis=1)
        np.testing.assert_allclose([out[q][d] for d, _ in head], ref, rtol=1e-5, atol=1e-6)
        assert [d for d, _ in out.ranked(q)][10:] == [d for d, _ in run.ranked(q)][10:]
    for q in qids[7:]:
        assert out.ranked(q) == run.ranked(q)


def test_knn_scores_ignores_padding() -> None:
    cand = np.array([[[1.0, 0.0], [0.0, 2.0]]])
    known = np.array([[[0.0, 3.0], [0.0, 0.0]]])
    np.testing.assert_allclose(knn_scores(cand, known, "max"), [[0.0, 1.0]])
    np.testing.assert_allclose(knn_scores(cand, known, "mean"), [[0.0, 1.0]])
    np.testing.assert_allclose(knn_scores(cand, np.zeros((1, 1, 2)), "max"), [[0.0, 0.0]])


def test_text_round_trip_set_params_and_errors(ctx: Context) -> None:
    stage = KNNFeedback(ctx, weight=0.3, agg="mean", norm=None, exclude_known=True, depth=50)
    text = str(stage)
    assert text == "knn_feedback(weight=0.3, agg='mean', norm=None, depth=50, exclude_known=True)"
    again = parse(text, ctx)
    assert str(again) == text and again.get_params() == stage.get_params()
    assert str(KNNFeedback(ctx)) == "knn_feedback"
    stage.set_feedback({"q1": ["d1"]}).set_params(weight=0.6, norm="zscore")
    assert stage.weight == 0.6 and stage.feedback == {"q1": ["d1"]}  # feedback survives
    for bad in ({"weight": 1.5}, {"weight": True}, {"agg": "sum"}, {"norm": "l2"}, {"depth": 0},
                {"k": 0}, {"exclude_known": 1}):  # fmt: skip
        with pytest.raises(ConfigError):
            KNNFeedback(ctx, **bad)
    with pytest.raises(ConfigError):
        parse("knn_feedback(agg='sum')", ctx)


def test_needs_input_and_feedback(ctx: Context) -> None:
    with pytest.raises(RankloopError, match="re-ranks"):
        KNNFeedback(ctx).set_feedback({"q1": ["d1"]})(QUERIES)
    with pytest.raises(RankloopError, match="known relevant"):
        KNNFeedback(ctx)(QUERIES, _run())
