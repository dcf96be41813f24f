"""compare() and compare_values(): one table with means, deltas, p-values and markers, in Markdown,
CSV and JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from rankloop.data.types import Qrels, Run
from rankloop.errors import RankloopError
from rankloop.eval.compare import compare, compare_values
from rankloop.eval.metrics import evaluate
from rankloop.eval.significance import holm


def _setup(n: int = 30):
    rng = np.random.default_rng(3)
    qrels = Qrels.from_dict(
        {f"q{i}": {f"d{j}": int(rng.integers(0, 3)) for j in range(10)} for i in range(n)}
    )

    def run(noise: float, name: str, drop: int = 0) -> Run:
        data = {}
        for i in range(drop, n):
            grades = np.array([qrels[f"q{i}"][f"d{j}"] for j in range(10)])
            scores = grades + rng.normal(0, noise, 10)
            data[f"q{i}"] = {f"d{j}": float(s) for j, s in enumerate(scores)}
        return Run.from_dict(data, name=name)

    return qrels, run(3.0, "weak"), run(0.3, "strong"), run(0.3, "partial", drop=5)


def test_table_values():
    qrels, weak, strong, partial = _setup()
    t = compare(
        [weak, strong, partial], qrels, ["map", "ndcg_cut_5"], baseline="weak", correction="holm"
    )
    assert t.systems == ["weak", "strong", "partial"] and t.baseline == "weak"
    assert len(t.query_ids) == 30
    for s, r in (("weak", weak), ("strong", strong)):
        assert t.mean[s]["map"] == pytest.approx(evaluate(qrels, r, "map")["map"])
    # partial misses 5 queries: they count as 0 (complete mode)
    assert t.mean["partial"]["map"] == pytest.approx(
        evaluate(qrels, partial, "map", complete=True)["map"]
    )
    w = evaluate(qrels, weak, "map", per_query=True)
    st = evaluate(qrels, strong, "map", per_query=True)
    pa = evaluate(qrels, partial, "map", per_query=True, complete=True)
    qs = sorted(w)
    raw = [
        stats.ttest_rel([st[q]["map"] for q in qs], [w[q]["map"] for q in qs]).pvalue,
        stats.ttest_rel([pa[q]["map"] for q in qs], [w[q]["map"] for q in qs]).pvalue,
    ]
    assert [t.pvalue["strong"]["map"], t.pvalue["partial"]["map"]] == pytest.approx(
        holm(raw).tolist()
    )
    assert t.delta["strong"]["map"] == pytest.approx(
        t.mean["strong"]["map"] - t.mean["weak"]["map"]
    )
    assert t.significant["strong"]["map"] and t.pvalue["weak"]["map"] is None
    assert t.wins["strong"]["map"] + t.losses["strong"]["map"] <= 30


def test_intersection_mode_and_baseline_index():
    qrels, weak, _, partial = _setup()
    t = compare({"w": weak, "p": partial}, qrels, "map", baseline=1, complete=False, test="fisher")
    assert t.baseline == "p" and len(t.query_ids) == 25
    assert 0 < t.pvalue["w"]["map"] <= 1


def test_renderings(tmp_path):
    qrels, weak, strong, _ = _setup()
    t = compare([weak, strong], qrels, ["map", "P_5"], test="bootstrap", n_resamples=2000)
    md = t.to_markdown()
    lines = md.splitlines()
    assert lines[0] == "| system | map | Δ map | p map | P_5 | Δ P_5 | p P_5 |"
    assert lines[2].startswith("| weak (baseline) |") and "—" in lines[2]
    assert "†" in lines[3] and "paired bootstrap test" in md
    csv = t.to_csv(tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == csv
    assert csv.splitlines()[0] == "system,measure,mean,delta,p_value,significant,wins,losses"
    assert len(csv.splitlines()) == 1 + 2 * 2
    doc = json.loads(t.to_json(tmp_path / "t.json"))
    assert doc["baseline"] == "weak" and doc["n_queries"] == 30 and len(doc["rows"]) == 4
    assert json.loads((tmp_path / "t.json").read_text()) == doc
    df = t.to_dataframe()
    assert list(df.index) == ["weak", "strong"] and "map Δ" in df.columns
    assert np.isnan(df.loc["weak", "map p"])


def test_errors():
    qrels, weak, strong, _ = _setup()
    with pytest.raises(RankloopError, match="baseline"):
        compare([weak, strong], qrels, "map", baseline="nope")
    with pytest.raises(RankloopError, match="named"):
        compare([weak, weak], qrels, "map")
    with pytest.raises(RankloopError, match="test"):
        compare([weak, strong], qrels, "map", test="wilcoxon")
    with pytest.raises(RankloopError, match="correction"):
        compare([weak, strong], qrels, "map", correction="fdr")


def test_per_query_delta_plot(tmp_path):
    from rankloop.eval.plots import per_query_delta_plot

    qrels, weak, strong, partial = _setup()
    t = compare([weak, strong, partial], qrels, ["map", "P_5"], complete=False)
    fig = per_query_delta_plot(t, "map", tmp_path / "delta.png")
    assert len(fig.axes) == 2
    assert (tmp_path / "delta.png").read_bytes()[:4] == b"\x89PNG"
    heights = sorted(b.get_height() for b in fig.axes[0].patches)
    want = sorted(t.per_query["strong"].values["map"][5:] - t.per_query["weak"].values["map"][5:])
    assert heights == pytest.approx(want)
    with pytest.raises(RankloopError):
        per_query_delta_plot(t, "ndcg")


def test_compare_is_compare_values_over_the_per_query_scores():
    qrels, weak, strong, partial = _setup()
    kw = {"test": "fisher", "correction": "holm", "n_resamples": 500, "random_state": 4}
    t = compare([weak, strong, partial], qrels, ["map", "P_5"], baseline="weak", **kw)
    v = compare_values(
        {s: {m: t.per_query[s].values[m] for m in t.measures} for s in t.systems},
        "weak",
        unit_ids=t.query_ids,
        **kw,
    )
    for name in ("systems", "measures", "unit_ids", "mean", "delta", "pvalue", "wins", "losses"):
        assert getattr(v, name) == getattr(t, name), name
    assert v.to_markdown() == t.to_markdown()


def test_compare_values_over_seeds():
    rng = np.random.default_rng(0)
    base = rng.normal(0.40, 0.01, 10)
    values = {"WMF": {"DCG@5": base}, "UBPR": {"DCG@5": base + 0.02 + rng.normal(0, 0.005, 10)}}
    t = compare_values(values, "WMF", unit_ids=[str(s) for s in range(10)], unit="seeds")
    assert t.pvalue["UBPR"]["DCG@5"] == pytest.approx(
        stats.ttest_rel(values["UBPR"]["DCG@5"], base).pvalue
    )
    assert t.pvalue["WMF"]["DCG@5"] is None and t.significant["UBPR"]["DCG@5"]
    assert t.to_markdown().rstrip().endswith("(paired t-test); 10 seeds.")
    doc = json.loads(t.to_json())
    assert doc["unit"] == "seeds" and doc["n_seeds"] == 10
    with pytest.raises(RankloopError, match="one number per unit"):
        compare_values({"a": {"m": np.zeros(3)}, "b": {"m": np.zeros(4)}}, "a")
    with pytest.raises(RankloopError, match="measures"):
        compare_values({"a": {"m": np.zeros(3)}, "b": {"n": np.zeros(3)}}, "a")
    with pytest.raises(RankloopError, match="baseline"):
        compare_values(values, "BPR")
