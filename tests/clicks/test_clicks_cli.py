"""`rankloop clicks fit|simulate` through the module's own `register`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from rankloop.clicks import cli
from rankloop.data.clicklogs import ClickLog, read_click_log, write_click_log
from rankloop.data.trec import write_qrels, write_run
from rankloop.data.types import Qrels, Run
from rankloop.errors import RankloopError


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rankloop")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def small_log(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    docs = ["a", "b", "c", "d"]
    rankings = [list(rng.permutation(docs)) for _ in range(300)]
    clicked = [[p for p in range(4) if rng.random() < 0.5 / (p + 1)] for _ in range(300)]
    path = tmp_path / "log.tsv"
    write_click_log(ClickLog.from_lists(["q"] * 300, rankings, clicked), path)
    return path


@pytest.mark.parametrize("model", ["pbm", "cm", "dcm", "ubm", "dbn", "sdbn"])
def test_fit_prints_parameters_and_scores(
    small_log: Path, tmp_path: Path, model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fit.json"
    argv = ["clicks", "fit", str(small_log), "--model", model, "--test", str(small_log)]
    assert _run([*argv, "--max-iter", "5", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "300 sessions" in text and "| test |" in text and "attractiveness" in text
    result = json.loads(out.read_text())
    assert result["test"]["perplexity"] >= 1 and len(result["test"]["perplexity_per_rank"]) == 4


def test_simulate_from_run_and_qrels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = Run.from_dict({"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q2": {"d4": 1.0, "d5": 0.5}})
    qrels = Qrels.from_dict({"q1": {"d1": 2, "d3": -1}, "q2": {"d5": 1}})
    write_run(run, tmp_path / "run.txt")
    write_qrels(qrels, tmp_path / "qrels.txt")
    out = tmp_path / "sim.jsonl"
    argv = ["clicks", "simulate", "--model", "pbm", "--eta", "1", "--max-grade", "2"]
    argv += ["--run", str(tmp_path / "run.txt"), "--qrels", str(tmp_path / "qrels.txt")]
    assert _run([*argv, "--sessions", "500", "--out", str(out), "--seed", "3"]) == 0
    log = read_click_log(out)
    assert len(log) == 500 and set(log.query_vocab) == {"q1", "q2"}
    assert "CTR per rank" in capsys.readouterr().out
    # d1 (grade 2 at rank 1) is clicked far more often than d2 (unjudged, rank 2).
    ctr = log.clicks.sum(axis=0) / log.mask.sum(axis=0)
    assert ctr[0] > 0.5 and ctr[1] < 0.2
    # Same seed, same log.
    again = tmp_path / "again.jsonl"
    assert _run([*argv, "--sessions", "500", "--out", str(again), "--seed", "3"]) == 0
    assert again.read_text() == out.read_text()


def test_simulate_from_fitted_log(small_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim.tsv"
    argv = ["clicks", "simulate", "--model", "sdbn", "--log", str(small_log)]
    assert _run([*argv, "--sessions", "200", "--out", str(out)]) == 0
    assert len(read_click_log(out)) == 200


def test_simulate_needs_a_source(tmp_path: Path) -> None:
    with pytest.raises(RankloopError, match="--log"):
        _run(
            [
                "clicks",
                "simulate",
                "--model",
                "pbm",
                "--sessions",
                "5",
                "--out",
                str(tmp_path / "x.tsv"),
            ]
        )
