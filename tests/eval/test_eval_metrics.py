"""rankloop.eval.metrics agrees with pytrec_eval (trec_eval) to 1e-9 on every measure."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rankloop.data.types import Qrels, Run
from rankloop.errors import RankloopError
from rankloop.eval.metrics import Evaluator, Measure, evaluate, parse_measures

# Measures pytrec_eval computes, in trec_eval's multi-cutoff syntax.
TREC_MEASURES = [
    "ndcg",
    "ndcg_cut.1,3,5,10",
    "map",
    "map_cut.1,3,10",
    "P.1,2,5,10",
    "recall.1,3,10,100",
    "recip_rank",
    "Rprec",
    "bpref",
    "success.1,3,5",
]
OURS_ONLY = ["judged_1", "judged_3", "judged_10", "recip_rank_cut_1", "recip_rank_cut_3"]
TOL = 1e-9


def _reference_extra(qrels: dict, run: dict, level: int) -> dict[str, dict[str, float]]:
    """judged_k and recip_rank_cut_k, computed naively from trec_eval order."""
    out: dict[str, dict[str, float]] = {}
    for q in run:
        if not qrels.get(q):
            continue
        # trec_eval order: float32 score descending, then doc id descending.
        key = [(float(np.float32(s)), d) for d, s in run[q].items()]
        ranked = [d for _, d in sorted(key, reverse=True)]
        first = next((i + 1 for i, d in enumerate(ranked) if qrels[q].get(d, -10) >= level), 0)
        vals = {}
        for k in (1, 3, 10):
            top = ranked[:k]
            vals[f"judged_{k}"] = sum(d in qrels[q] for d in top) / len(top) if top else 0.0
        for k in (1, 3):
            vals[f"recip_rank_cut_{k}"] = 1.0 / first if 0 < first <= k else 0.0
        out[q] = vals
    return out


def _check_against_pytrec(qrels: dict, run: dict, level: int) -> None:
    ref = pytrec_eval.RelevanceEvaluator(qrels, set(TREC_MEASURES), relevance_level=level)
    # pytrec_eval segfaults when the first query it evaluates retrieved nothing; such a query
    # scores 0 on every measure (what pytrec_eval returns when it does not crash).
    expected = ref.evaluate({q: d for q, d in run.items() if d})
    names = [m.name for m in parse_measures(TREC_MEASURES)]
    expected.update(
        {q: dict.fromkeys(names, 0.0) for q, d in run.items() if not d and qrels.get(q)}
    )
    extra = _reference_extra(qrels, run, level)
    for q, vals in extra.items():
        expected.setdefault(q, {}).update(vals)
    if not expected:
        with pytest.raises(RankloopError, match="share no query"):
            evaluate(Qrels.from_dict(qrels), Run.from_dict(run), TREC_MEASURES, level=level)
        return
    got = evaluate(
        Qrels.from_dict(qrels),
        Run.from_dict(run),
        TREC_MEASURES + OURS_ONLY,
        level=level,
        per_query=True,
    )
    assert set(got) == set(expected)
    for q, vals in expected.items():
        for m, v in vals.items():
            assert math.isclose(got[q][m], v, rel_tol=0, abs_tol=TOL), (q, m, got[q][m], v)


# Doc ids whose string order differs from numeric order, to exercise the id tie-break.
_DOCS = st.sampled_from(["d1", "d2", "d10", "d9", "D1", "a", "ab", "b", "z0", "Z", "x-1", "é"])
_SCORES = st.one_of(
    st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]),  # many ties
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)


GRADES = st.integers(0, 4)


@st.composite
def qrels_and_run(draw, grades=GRADES):
    qids = draw(st.lists(st.sampled_from(["1", "2", "3", "10", "q"]), min_size=1, unique=True))
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in qids:
        kind = draw(
            st.sampled_from(["both", "both", "both", "qrels_only", "run_only", "empty_run"])
        )
        if kind != "run_only":
            qrels[q] = draw(st.dictionaries(_DOCS, grades, min_size=1, max_size=8))
        if kind in ("both", "run_only"):
            run[q] = draw(st.dictionaries(_DOCS, _SCORES, min_size=0, max_size=12))
        elif kind == "empty_run":
            run[q] = {}
    return qrels, run


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=qrels_and_run(), level=st.sampled_from([1, 2]))
def test_agrees_with_pytrec_eval(data, level):
    qrels, run = data
    _check_against_pytrec(qrels, run, level)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=qrels_and_run(grades=st.integers(-1, 3)), level=st.sampled_from([1, 2]))
def test_negative_grades_agree(data, level):
    qrels, run = data
    # trec_eval reads uninitialised memory for a query whose every grade is negative.
    qrels = {q: d for q, d in qrels.items() if max(d.values()) >= 0}
    _check_against_pytrec(qrels, run, level)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=qrels_and_run(), level=st.sampled_from([1, 2]))
def test_complete_mode_averages_over_every_qrels_query(data, level):
    qrels, run = data
    assume(any(qrels.values()))
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"map", "ndcg"}, relevance_level=level)
    per_q = ref.evaluate({q: d for q, d in run.items() if d})  # empty queries score 0
    judged = [q for q, d in qrels.items() if d]
    res = Evaluator(Qrels.from_dict(qrels), ["map", "ndcg"], level=level, complete=True).evaluate(
        Run.from_dict(run)
    )
    assert res.query_ids == judged
    for m in ("map", "ndcg"):
        want = sum(per_q.get(q, {}).get(m, 0.0) for q in judged) / len(judged)
        assert math.isclose(res.mean[m], want, abs_tol=TOL)


def test_hand_computed_values():
    qrels = Qrels.from_dict({"q": {"a": 2, "b": 0, "c": 1, "x": 3}})
    # trec_eval order: c (2.0), then the tie b, a (doc id descending), then u -> ranks 1..4.
    run = Run.from_dict({"q": {"a": 1.0, "b": 1.0, "c": 2.0, "u": 0.5}})
    got = evaluate(qrels, run, ["P_2", "recip_rank", "map", "ndcg_cut_3", "judged_4", "bpref"])
    assert got["P_2"] == 0.5  # c (rel), b (non-rel)
    assert got["recip_rank"] == 1.0
    assert got["map"] == pytest.approx((1 / 1 + 2 / 3) / 3)  # 3 relevant docs: a, c, x
    dcg = 1 + 0 + 2 / np.log2(4)
    idcg = 3 + 2 / np.log2(3) + 1 / np.log2(4)
    assert got["ndcg_cut_3"] == pytest.approx(dcg / idcg)
    assert got["judged_4"] == 0.75  # u unjudged
    # bpref: c has 0 non-rel above -> 1; a has b above -> 1 - 1/min(1, 3) = 0; /R=3
    assert got["bpref"] == pytest.approx(1 / 3)


def test_scores_compare_as_float32_like_trec_eval():
    qrels = Qrels.from_dict({"q": {"a": 1}})
    # 1 + 1e-9 == 1 in float32: a tie, broken by doc id descending -> b first.
    for scores in ({"a": 1.0 + 1e-9, "b": 1.0}, {"a": 1e39, "b": 1e40}):
        run = Run.from_dict({"q": scores})
        ref = pytrec_eval.RelevanceEvaluator(qrels.data, {"recip_rank"}).evaluate(run.data)
        assert ref["q"]["recip_rank"] == 0.5
        assert evaluate(qrels, run, "recip_rank")["recip_rank"] == 0.5
    run = Run.from_dict({"q": {"a": 1.0 + 1e-6, "b": 1.0}})
    assert evaluate(qrels, run, "recip_rank")["recip_rank"] == 1.0


def test_every_score_tied():
    rng = np.random.default_rng(0)
    qrels = {
        f"q{q}": {f"d{d}": int(rng.integers(0, 4)) for d in rng.choice(500, 40, replace=False)}
        for q in range(20)
    }
    run = {
        f"q{q}": dict.fromkeys((f"d{d}" for d in rng.choice(500, 300, replace=False)), 1.0)
        for q in range(20)
    }
    _check_against_pytrec(qrels, run, 1)


def test_run_longer_than_1000_is_not_cut():
    qrels = Qrels.from_dict({"q": {f"d{i}": 1 for i in range(1500, 1510)}})
    run = Run.from_dict({"q": {f"d{i}": -float(i) for i in range(2000)}})
    assert evaluate(qrels, run, ["recall_2000"])["recall_2000"] == 1.0
    ref = pytrec_eval.RelevanceEvaluator(qrels.data, {"map"}).evaluate(run.data)
    assert evaluate(qrels, run, "map")["map"] == pytest.approx(ref["q"]["map"], abs=TOL)


def test_parse_measures_syntax():
    names = [m.name for m in parse_measures(["ndcg_cut.10,100", "P_5", "P.5,10", "map"])]
    assert names == ["ndcg_cut_10", "ndcg_cut_100", "P_5", "P_10", "map"]
    assert [m.cutoff for m in parse_measures("success")] == [1, 5, 10]
    assert parse_measures("recip_rank_cut_10") == [Measure("recip_rank_cut", 10)]
    for bad in ["ndcg_cut_0", "map.5", "judged", "nope", "P_x", "P.5,"]:
        with pytest.raises(RankloopError):
            parse_measures(bad)
    with pytest.raises(RankloopError, match="level"):
        Evaluator(Qrels.from_dict({"q": {"d": 1}}), "map", level=0)


def test_result_shapes():
    qrels = Qrels.from_dict({"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}})
    run = Run.from_dict({"q2": {"b": 1.0}, "q1": {"x": 1.0}, "zz": {"a": 1.0}})
    res = Evaluator(qrels, ["map", "P_1"]).evaluate(run)
    assert res.query_ids == ["q1", "q2"]  # qrels order; zz ignored, q3 missing
    assert res.mean == {"map": 0.5, "P_1": 0.5}
    assert res.per_query == {"q1": {"map": 0.0, "P_1": 0.0}, "q2": {"map": 1.0, "P_1": 1.0}}
    df = res.to_dataframe()
    assert list(df.columns) == ["map", "P_1"] and list(df.index) == ["q1", "q2"]
    full = Evaluator(qrels, "map", complete=True).evaluate(run)
    assert full.query_ids == ["q1", "q2", "q3"] and full.mean["map"] == pytest.approx(1 / 3)


def test_evaluator_is_reusable_across_runs():
    qrels = Qrels.from_dict({"q": {"a": 1, "b": 2}})
    ev = Evaluator(qrels, ["ndcg", "map"])
    r1 = ev.evaluate(Run.from_dict({"q": {"a": 2.0, "b": 1.0}}))
    r2 = ev.evaluate(Run.from_dict({"q": {"a": 1.0, "b": 2.0}}))
    assert r2.mean["ndcg"] == 1.0 and r1.mean["ndcg"] < 1.0 and r1.mean["map"] == 1.0


# -- a real run: TF-IDF on BEIR SciFact / NFCorpus, compared with pytrec_eval ------------------
def _beir(name: str) -> Path:
    root = Path(
        os.environ.get("RANKLOOP_DATA", Path(__file__).resolve().parents[3] / "shared/data")
    )
    path = root / "beir" / name
    if not (path / "corpus.jsonl").exists():
        pytest.skip(f"BEIR {name} not available under RANKLOOP_DATA")
    return path


def _tfidf_run(path: Path, depth: int, decimals: int | None) -> tuple[dict, dict]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = [json.loads(line) for line in (path / "corpus.jsonl").open(encoding="utf-8")]
    queries = {
        (q := json.loads(line))["_id"]: q["text"]
        for line in (path / "queries.jsonl").open(encoding="utf-8")
    }
    qrels: dict[str, dict[str, int]] = {}
    with (path / "qrels" / "test.tsv").open(encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            q, d, g = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(g)
    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english")
    dm = vec.fit_transform([(d.get("title", "") + " " + d["text"]) for d in docs])
    qids = sorted(qrels)
    scores = (vec.transform([queries[q] for q in qids]) @ dm.T).toarray()
    if decimals is not None:
        scores = np.round(scores, decimals)  # many ties: exercises the doc-id tie-break
    ids = np.array([d["_id"] for d in docs])
    run = {}
    for i, q in enumerate(qids[:-5]):  # leave a few judged queries out of the run
        top = np.argsort(-scores[i], kind="stable")[:depth]
        run[q] = dict(zip(ids[top].tolist(), scores[i, top].tolist()))
    return qrels, run


@pytest.mark.parametrize(
    ("dataset", "decimals"), [("scifact", None), ("scifact", 2), ("nfcorpus", 3)]
)
def test_real_tfidf_run_agrees_with_pytrec_eval(dataset, decimals):
    qrels, run = _tfidf_run(_beir(dataset), depth=200, decimals=decimals)
    measures = [*TREC_MEASURES, "ndcg_cut.20,100,1000", "recall.1000"]
    for level in (1, 2):
        ref = pytrec_eval.RelevanceEvaluator(qrels, set(measures), relevance_level=level)
        expected = ref.evaluate(run)
        got = evaluate(
            Qrels.from_dict(qrels), Run.from_dict(run), measures, level=level, per_query=True
        )
        assert set(got) == set(expected)
        worst = max(abs(got[q][m] - v) for q in expected for m, v in expected[q].items())
        assert worst <= TOL
