"""`rankloop eval` and `rankloop compare` through rankloop.cli.main, on hand-written TREC files."""

from __future__ import annotations

import json

import pytest
import pytrec_eval

QRELS = """\
q1 0 a 2
q1 0 b 0
q1 0 c 1
q2 0 x 1
q2 0 y 0
q3 0 z 1
"""
RUN_A = """\
q1 Q0 c 1 3.5 sysA
q1 Q0 a 2 2.0 sysA
q1 Q0 b 3 1.0 sysA
q2 Q0 y 1 0.9 sysA
q2 Q0 x 2 0.8 sysA
q9 Q0 x 1 1.0 sysA
"""
RUN_B = """\
q1 Q0 b 1 3.0 sysB
q1 Q0 a 2 3.0 sysB
q2 Q0 x 1 0.5 sysB
q2 Q0 w 2 0.4 sysB
q3 Q0 z 1 1.0 sysB
"""


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, text in (("qrels.txt", QRELS), ("a.run", RUN_A), ("b.run", RUN_B)):
        paths[name] = tmp_path / name
        paths[name].write_text(text)
    return paths


def _main(argv):
    from rankloop.cli import main

    return main([str(a) for a in argv])


def _parse(text):
    return {
        (m.strip(), q): float(v) for m, q, v in (line.split("\t") for line in text.splitlines())
    }


def _pytrec(measures, run_text, **kw):
    qrels = pytrec_eval.parse_qrel(QRELS.splitlines())
    run = pytrec_eval.parse_run(run_text.splitlines())
    return pytrec_eval.RelevanceEvaluator(qrels, measures, **kw).evaluate(run)


def test_eval_three_columns_match_pytrec_eval(files, capsys):
    rc = _main(
        ["eval", files["a.run"], files["qrels.txt"], "-m", "map", "-m", "ndcg_cut.2,3", "-q"]
    )
    assert rc == 0
    out = _parse(capsys.readouterr().out)
    ref = _pytrec({"map", "ndcg_cut.2,3"}, RUN_A)
    for q, vals in ref.items():
        for m, v in vals.items():
            assert out[(m, q)] == pytest.approx(v, abs=5e-5)
    assert out[("map", "all")] == pytest.approx(sum(r["map"] for r in ref.values()) / 2, abs=5e-5)
    assert {q for _, q in out} == {"q1", "q2", "all"}  # q9 has no qrels; q3 not retrieved


def test_eval_level_complete_and_json(files, capsys):
    assert (
        _main(["eval", files["a.run"], files["qrels.txt"], "-m", "P_1", "-l", "2", "-c", "--json"])
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    # level 2: only a is relevant (q1); a is ranked 2nd -> P_1 = 0 everywhere; 3 qrels queries
    assert doc["mean"] == {"P_1": 0.0} and doc["n_queries"] == 3 and doc["complete"] is True
    assert (
        _main(["eval", files["a.run"], files["qrels.txt"], "-m", "recip_rank", "--json", "-q"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["per_query"] == {"q1": {"recip_rank": 1.0}, "q2": {"recip_rank": 0.5}}
    assert doc["mean"]["recip_rank"] == 0.75


def test_eval_errors_are_reported(files, capsys):
    bad = files["a.run"].parent / "bad.run"
    bad.write_text("q1 Q0 a 1 notascore tag\n")
    assert _main(["eval", bad, files["qrels.txt"]]) == 2
    assert "bad.run:1" in capsys.readouterr().err
    assert _main(["eval", files["a.run"], files["qrels.txt"], "-m", "nope"]) == 2
    assert "unknown measure" in capsys.readouterr().err


def test_compare_markdown_csv_json(files, capsys, tmp_path):
    argv = ["compare", files["a.run"], files["b.run"], "--qrels", files["qrels.txt"], "-m", "map"]
    assert _main([*argv, "--baseline", files["b.run"]]) == 0
    md = capsys.readouterr().out
    assert md.splitlines()[0] == "| system | map | Δ map | p map |"
    assert "| sysB (baseline) |" in md and "3 queries" in md
    assert _main([*argv, "--baseline", "sysA", "--format", "csv", "--test", "fisher"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("system,measure,mean") and rows[1].startswith("sysA,map,")
    out = tmp_path / "table.json"
    assert _main([*argv, "--format", "json", "--correction", "holm", "-o", out]) == 0
    assert capsys.readouterr().out == ""
    doc = json.loads(out.read_text())
    assert doc["baseline"] == "sysA" and doc["correction"] == "holm" and len(doc["rows"]) == 2
    assert _main([*argv, "--baseline", "nope"]) == 2
    assert "--baseline" in capsys.readouterr().err
