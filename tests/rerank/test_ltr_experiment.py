"""`rankloop experiment ultr`: config validation, the run on synthetic features, outputs, CLI."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from rankloop.data.types import Qrels
from rankloop.errors import ConfigError
from rankloop.experiments import cli
from rankloop.experiments import ultr as exp
from rankloop.rerank.ltr import LtrData

CONFIG = {
    "name": "tiny-ultr",
    "datasets": ["syn"],
    "sessions": [300, 3000],
    "seeds": 2,
    "k": 6,
    "train": {"epochs": 12, "batch_size": 16, "lr": 0.05, "weight_decay": 0.0},
    "device": "cpu",
    "goal": {"click_model": "PBM", "sessions": 3000, "estimators": ["IPS"], "closure": 0.8},
    "click_models": [
        {"name": "PBM", "model": "pbm", "params": {"eta": 1.0}},
        {"name": "DBN", "model": "dbn", "params": {"gamma": 0.9}},
    ],
    "estimators": [
        {"name": "Naive", "type": "naive"},
        {"name": "IPS", "type": "ips", "propensity": "true"},
        {"name": "IPS swap", "type": "ips", "propensity": "swap"},
        {"name": "DLA", "type": "dla"},
        {"name": "REM", "type": "rem"},
        {"name": "PairD", "type": "pairdebias"},
        {"name": "2T", "type": "two_tower"},
    ],
}


def _fake_data(config: exp.UltrConfig, log=print) -> tuple[LtrData, LtrData, Qrels]:
    rng = np.random.default_rng(0)
    n_q, k, d = 90, config.k, 4
    x = rng.normal(size=(n_q, k, d)).astype(np.float32)
    grades = np.digitize(x[:, :, 0] + 0.3 * rng.normal(size=(n_q, k)), [0.3, 1.2])
    order = np.argsort(-(x[:, :, 0] + rng.normal(size=(n_q, k))), axis=1)
    x = np.take_along_axis(x, order[:, :, None], axis=1)
    grades = np.take_along_axis(grades, order, axis=1)
    qids = np.repeat([f"syn/q{i}" for i in range(n_q)], k)
    docs = np.array([f"syn/d{i}_{j}" for i in range(n_q) for j in range(k)])
    data = LtrData(x.reshape(-1, d), grades.ravel().astype(float), qids, docs, ["a", "b", "c", "e"])
    test_q = [f"syn/q{i}" for i in range(60, n_q)]
    test = data.subset_queries(test_q)
    qrels = Qrels(
        {
            q: {
                d: int(g) for d, g in zip(test.doc_ids[test.qids == q], test.labels[test.qids == q])
            }
            for q in test_q
        }
    )
    return data.subset_queries([f"syn/q{i}" for i in range(60)]), test, qrels


@pytest.fixture
def fake_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exp, "prepare_data", _fake_data)


def test_run_on_synthetic_features_writes_table_and_plot(fake_data: None, tmp_path: Path) -> None:
    config = exp.UltrConfig.from_dict(CONFIG)
    result = exp.run_ultr(config, verbose=False)
    rows = {(r["click_model"], r["sessions"], r["estimator"]): r for r in result.summary}
    # IPS with true propensities only exists for PBM; everything else for both models
    assert ("DBN", 3000, "IPS") not in rows and ("PBM", 3000, "IPS") in rows
    assert len(rows) == 2 * 2 * 7 - 2
    assert all(r["n_seeds"] == 2 for r in rows.values())
    assert len(rows[("PBM", 3000, "DLA")]["mean_propensities"]) == 6
    assert result.goal is not None and set(result.goal["closure"]) == {"IPS"}
    table = result.table_markdown()
    assert "**PBM**" in table and "**DBN**" in table and "Full information" in table
    assert "| IPS | n/a | n/a |" in table
    out = exp.write_outputs(result, tmp_path / "out")
    for name in ("results.md", "results.csv", "per_seed.json", "metrics.json", "config.yaml"):
        assert (out / name).is_file()
    assert (out / "ndcg_vs_sessions.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["references"]["full_information"]["per_seed"]
    assert exp.UltrConfig.from_yaml(out / "config.yaml").seeds == [0, 1]


def test_summary_gap_closed_and_goal_by_hand() -> None:
    config = exp.UltrConfig.from_dict(CONFIG)

    def rec(est: str, seed: int, value: float) -> dict:
        return {
            "click_model": "PBM",
            "sessions": 3000,
            "seed": seed,
            "estimator": est,
            "ndcg_cut_10": value,
            "by_dataset": {"syn": value},
            "fit_s": 0.1,
        }

    records = [
        rec("Naive", 0, 0.40),
        rec("Naive", 1, 0.42),
        rec("IPS", 0, 0.47),
        rec("IPS", 1, 0.48),
    ]
    refs = {"full_information": {"mean": 0.51}}
    rows = {r["estimator"]: r for r in exp._summarise(config, records, refs)}
    assert rows["Naive"]["gap_closed"] == pytest.approx(0.0)
    assert rows["IPS"]["gap_closed"] == pytest.approx((0.475 - 0.41) / (0.51 - 0.41))
    assert rows["IPS"]["std"] == pytest.approx(0.005)
    assert rows["IPS"]["p_vs_baseline"] is not None and rows["Naive"]["p_vs_baseline"] is None
    goal = exp._goal(config, list(rows.values()))
    assert goal is not None and goal["met"] is False  # 65% < 80%


def test_cli_quick_run(fake_data: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    parser = argparse.ArgumentParser(prog="rankloop")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["experiment", "ultr", str(path), "--quick", "--quiet", "--out", str(tmp_path / "o")]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "1,000 sessions" in out and "Goal (PBM, 10,000 sessions)" in out
    assert (tmp_path / "o" / "ndcg_vs_sessions.png").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bogus": 1}, "unknown key 'bogus'; valid keys"),
        ({"estimators": [{"name": "I", "type": "ips"}]}, "propensity"),
        ({"estimators": [{"name": "X", "type": "magic"}]}, "unknown ULTR estimator 'magic'"),
        ({"baseline": "Nope"}, "baseline"),
        ({"signals": ["bm25"]}, "signals"),
        ({"sessions": [0]}, "sessions"),
        ({"goal": {"click_model": "PBM"}}, "goal needs"),
        ({"train": {"epochs": 1, "momentum": 0.9}}, r"train\['momentum'\]: extra inputs"),
        ({"train": {"epochs": 2.5}}, r"train\['epochs'\]: input should be a valid integer"),
        ({"seeds": 10**12}, r"seeds: expected .* or int >= 1 <= 10000, got 1000000000000"),
        ({"sessions": [10**12]}, "less than or equal to 100000000"),
        ({"eps": float("nan")}, "eps: input should be a finite number"),
        ({"k": True}, "k: input should be a valid integer"),
        ({"swap_design": "swap"}, "swap_design: input should be"),
        ({"device": "gpu"}, "device: string should match"),
        ({"full_info_loss": "hinge"}, "full_info_loss: unknown loss 'hinge'"),
        ({"model_params": {"hidden": [8]}}, "scorer 'linear' has no parameter 'hidden'"),
        ({"click_models": []}, "must each list at least one entry"),
        ({"click_models": [{"name": "P", "model": "pbm", "params": {"eta": "x"}}]}, "eta"),
        ({"click_models": [{"name": "P", "model": "pbm", "params": {"eps": 0.2}}]}, "'eps' is set"),
        ({"estimators": [{"name": "Naive", "type": "naive", "params": {"lr": True}}]}, "lr"),
        ({"estimators": [{"name": "Naive", "type": "naive", "params": {"los": 1}}]}, "'los'"),
        ({"goal": {**CONFIG["goal"], "click_model": "UBM"}}, "goal.click_model"),
    ],
)
def test_config_errors(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        exp.UltrConfig.from_dict({**CONFIG, **change})


def test_shipped_configs_parse() -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    paths = sorted(root.glob("ultr_*.yaml"))
    assert paths
    for path in paths:
        config = exp.UltrConfig.from_yaml(path)
        assert config.quick().sessions == [1_000, 10_000]


@pytest.mark.slow
def test_real_quick_run(tmp_path: Path) -> None:
    if not os.environ.get("RANKLOOP_DATA"):
        pytest.skip("set RANKLOOP_DATA")
    root = Path(__file__).resolve().parents[2] / "configs"
    config = exp.UltrConfig.from_yaml(root / "ultr_semisynthetic.yaml").quick()
    assert config.datasets == ["scifact"] and "dense" not in config.signals  # no corpus encoding
    result = exp.run_ultr(config, verbose=False)
    # a smoke run: every row is a real nDCG@10 (the learning claims are benchmarks/ultr.py's; on
    # 200 SciFact queries without the dense signal, full information stays near BM25's .69)
    for ref in ("full_information", "logging_ranker"):
        assert 0.3 < result.references[ref]["mean"] < 1.0
