"""The config-driven experiment and `rankloop experiment recsys` on a small Coat slice."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml

from rankloop.errors import ConfigError
from rankloop.experiments.cli import register
from rankloop.experiments.recsys import RecsysConfig, run_recsys

TINY = {
    "name": "tiny",
    "dataset": "coat",
    "head_users": 50,
    "seeds": 2,
    "popularity_buckets": 2,
    "val_repeats": 2,
    "anchors": {"WMF": 0.0786},
    "models": [
        {
            "name": "WMF",
            "type": "wmf",
            "params": {"factors": 4, "iterations": 2},
            "grid": {"regularization": [0.01, 1.0]},
        },
        {"name": "BPR", "type": "bpr", "params": {"factors": 4, "iterations": 5}},
        {"name": "ExpoMF", "type": "expomf", "params": {"factors": 4, "iterations": 1}},
        {
            "name": "Rel-MF",
            "type": "relmf",
            "params": {"factors": 4, "iterations": 20, "batch_size": 128},
            "grid": {"clip": [0.0, 0.1]},
        },
        {
            "name": "UBPR",
            "type": "ubpr",
            "params": {"factors": 4, "iterations": 20, "batch_size": 128},
        },
        {"name": "Popularity", "type": "popularity"},
        {"name": "Random", "type": "random"},
    ],
}


def test_run_recsys_on_a_coat_slice(coat_dir):
    cfg = RecsysConfig.from_dict({**TINY, "path": str(coat_dir)})
    res = run_recsys(cfg, verbose=False)
    assert set(res.per_seed) == {"0", "1"}
    assert len(res.tuning["WMF"]["grid"]) == 2 and len(res.tuning["Rel-MF"]["grid"]) == 2
    row = res.per_seed["0"]["Rel-MF"]
    assert {"DCG@5", "Recall@5", "MAP@5", "nDCG@5", "R@5", "AP@5", "fit_seconds"} <= set(row)
    assert len(row["by_bucket"]) == 2
    table = res.table_markdown()
    assert "| WMF |" in table and "baseline" in table and "0.0786" in table
    assert "users without relevant items kept" in res.protocol["authors_protocol"]
    again = run_recsys(cfg, verbose=False)
    assert again.per_seed["1"]["UBPR"]["DCG@5"] == res.per_seed["1"]["UBPR"]["DCG@5"]  # bit for bit


def test_propensity_estimators_in_the_experiment(coat_dir):
    base = {
        **TINY,
        "path": str(coat_dir),
        "seeds": [0],
        "models": TINY["models"][:1] + TINY["models"][3:4],
    }
    for prop in (
        {"estimator": "naive_bayes", "mar_fraction": 0.1},
        {"estimator": "logistic"},
        {"estimator": "shipped"},
    ):
        res = run_recsys(RecsysConfig.from_dict({**base, "propensity": prop}), verbose=False)
        assert 0 < res.per_seed["0"]["Rel-MF"]["DCG@5"] <= 1
    nb = run_recsys(
        RecsysConfig.from_dict(
            {**base, "propensity": {"estimator": "naive_bayes", "mar_fraction": 0.1}}
        ),
        verbose=False,
    )
    assert nb.protocol["test"].startswith("MAR ratings, 45 users")  # 5 of 50 users carved out


def test_cli_runs_the_recsys_experiment(coat_dir, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "path": str(coat_dir), "seeds": 1}))
    parser = argparse.ArgumentParser(prog="rankloop")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    out = tmp_path / "out"
    args = parser.parse_args(["experiment", "recsys", str(cfg), "--out", str(out), "--quiet"])
    assert args.func(args) == 0
    for name in (
        "results.md",
        "results.csv",
        "per_seed.json",
        "metrics.json",
        "popularity_buckets.png",
        "config.yaml",
        "environment.json",
    ):
        assert (out / name).is_file(), name
    assert set(json.loads((out / "per_seed.json").read_text())) == {"0"}
    assert (out / "popularity_buckets.png").read_bytes()[:4] == b"\x89PNG"


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'sedes'; valid keys: models"):
        RecsysConfig.from_dict({**TINY, "sedes": 3})
    with pytest.raises(ConfigError, match="model 'X': unknown recommender 'svd'; valid names"):
        RecsysConfig.from_dict({**TINY, "models": [{"name": "X", "type": "svd"}], "baseline": "X"})
    with pytest.raises(ConfigError, match="baseline"):
        RecsysConfig.from_dict({**TINY, "baseline": "ALS"})
    with pytest.raises(ConfigError, match="dataset: input should be 'coat' or 'yahoo-r3'"):
        RecsysConfig.from_dict({**TINY, "dataset": "movielens-1m"})
    with pytest.raises(
        ConfigError, match="val_repeats: input should be greater than or equal to 1"
    ):
        RecsysConfig.from_dict({**TINY, "val_repeats": 0})
    with pytest.raises(ConfigError, match="cannot read config"):
        RecsysConfig.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="missing key 'models'"):
        RecsysConfig.from_dict({k: v for k, v in TINY.items() if k != "models"})
    # parameter names and value types are checked at load, not when the model is built
    with pytest.raises(ConfigError, match="recommender 'wmf' has no parameter 'factorz'"):
        RecsysConfig.from_dict(
            {**TINY, "models": [{"name": "WMF", "type": "wmf", "params": {"factorz": 3}}]}
        )
    wmf = {"name": "WMF", "type": "wmf"}
    for params, message in (
        ({"factors": "x"}, "factors: input should be a valid integer"),
        ({"alpha": float("nan")}, "alpha: input should be a finite number"),
        ({"factors": 10**12}, "factors: input should be less than or equal to 100000000"),
        ({"random_state": 3}, "'random_state' is set by the experiment"),
    ):
        with pytest.raises(ConfigError, match=message):
            RecsysConfig.from_dict({**TINY, "models": [{**wmf, "params": params}]})
    with pytest.raises(ConfigError, match=r"grid .alpha.: .*alpha: input should be a valid number"):
        RecsysConfig.from_dict({**TINY, "models": [{**wmf, "grid": {"alpha": [1.0, "x"]}}]})
    with pytest.raises(ConfigError, match="more than 100,000 points"):
        huge = {"factors": list(range(1, 400)), "iterations": list(range(1, 400))}
        RecsysConfig.from_dict({**TINY, "models": [{**wmf, "grid": huge}]})
    for key, value, message in (
        ("seeds", 10**12, "seeds: .*expected a list of int"),
        ("seeds", 2.5, "seeds: .*expected a list of int"),
        ("seeds", [1, 1], "seeds must be distinct"),
        ("ks", [], "ks: list should have at least 1 item"),
        ("eps", float("nan"), "eps: input should be a finite number"),
        ("head_users", True, "head_users: expected int >= 1 <= 100000000 or null, got True"),
        ("bucket_metric", "DCG@7", "bucket_metric must be"),
        ("anchors", {"SVD": 0.1}, "anchors name unknown models"),
        ("propensity", {"estimator": "popularity", "eta": "x"}, "eta: input should be"),
        ("propensity", {"estimator": "popularity", "etta": 1}, "has no parameter 'etta'"),
        ("propensity", {"estimator": "logistic", "mar_fraction": 0.1}, "naive_bayes"),
    ):
        with pytest.raises(ConfigError, match=message):
            RecsysConfig.from_dict({**TINY, key: value})


def test_config_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "models:\n  - name: WMF\n    type: wmf\n    params: {factors: x}\nbaseline: WMF\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: .*model 'WMF': .*factors"):
        RecsysConfig.from_yaml(path)
    path.write_bytes(b"models: []\nname: \xff\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: expected UTF-8"):
        RecsysConfig.from_yaml(path)


def test_shipped_config_parses():
    from pathlib import Path

    cfg = RecsysConfig.from_yaml(
        Path(__file__).resolve().parents[2] / "configs" / "recsys_coat.yaml"
    )
    assert cfg.baseline == "WMF" and len(cfg.seeds) == 10
    assert {m.name for m in cfg.models} >= {
        "WMF",
        "BPR",
        "ExpoMF",
        "Rel-MF",
        "Rel-MF (clipped)",
        "UBPR",
    }
