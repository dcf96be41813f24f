"""The simulation loop, the bandit experiment, its outputs and the `experiment bandits` command
(and its alias `simulate bandits`)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import yaml

from rankloop.bandits.policies import InSlateThompson, LinUCB, TopK
from rankloop.bandits.simulate import (
    build_policy,
    gini,
    intra_list_diversity,
    popularity_buckets,
)
from rankloop.errors import ConfigError
from rankloop.experiments.bandits import BanditConfig, run_bandits
from rankloop.experiments.cli import register

_SMALL = {
    "name": "tiny",
    "world": {"type": "synthetic", "n_users": 30, "n_items": 25, "dim": 4, "random_state": 3},
    "env": {"n_candidates": 10, "slate_size": 3, "delay": 40},
    "rounds": 1200,
    "users_per_step": 40,
    "seeds": 2,
    "checkpoints": 10,
    "exposure_windows": 4,
    "policies": [
        {"name": "Random", "type": "random"},
        {"name": "LinUCB", "type": "linucb", "params": {"alpha": 0.3, "batch_size": 20}},
        {"name": "In-slate TS", "type": "inslate_ts", "feedback": "cascade"},
    ],
}


def test_run_reports_every_policy_and_seed_and_is_reproducible():
    cfg = BanditConfig.from_dict(_SMALL)
    a = run_bandits(cfg, verbose=False)
    b = run_bandits(cfg, verbose=False)
    assert len(a.runs) == 6
    for ra, rb in zip(a.runs, b.runs):
        assert ra["clicks"] == rb["clicks"] and ra["regret"] == rb["regret"]
        assert 0 <= ra["coverage"] <= 1 and ra["regret"] >= 0
        assert len(ra["curves"]["cum_regret"]) == 10
        assert np.allclose(np.sum(ra["curves"]["exposure_share"], axis=1), 1.0)
    s = a.summary()
    assert set(s) == {"Random", "LinUCB", "In-slate TS"}
    # a contextual learner beats random exploration on a low-rank world
    assert s["LinUCB"]["regret"]["mean"] < s["Random"]["regret"]["mean"]
    assert "| LinUCB |" in a.table_markdown()


@pytest.mark.parametrize("command", [["experiment", "bandits"], ["simulate", "bandits"]])
def test_outputs_and_cli(tmp_path, command):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({**_SMALL, "out": str(tmp_path / "out"), "seeds": 1}))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([*command, str(cfg_path), "--rounds", "400", "--quiet"])
    assert args.func(args) == 0
    out = tmp_path / "out"
    for f in ("results.json", "results.md", "config.yaml", "regret.png", "exposure.png"):
        assert (out / f).is_file()
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["rounds"] == 400 and len(data["runs"]) == 3
    assert (out / "regret.png").read_bytes()[:4] == b"\x89PNG"


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'colour'; valid keys"):
        BanditConfig.from_dict({**_SMALL, "colour": 1})
    with pytest.raises(ConfigError, match="policy 'x': unknown bandit policy 'nope'; valid names"):
        BanditConfig.from_dict({**_SMALL, "policies": [{"name": "x", "type": "nope"}]})
    with pytest.raises(ConfigError, match="unique"):
        BanditConfig.from_dict({**_SMALL, "policies": [{"name": "x", "type": "random"}] * 2})
    bad = tmp_path / "bad.yaml"
    bad.write_text("[1, 2")
    with pytest.raises(ConfigError):
        BanditConfig.from_yaml(bad)
    linucb = {"name": "L", "type": "linucb"}
    for change, message in (
        ({"env": 5}, "env: expected a mapping"),
        ({"env": {"slate_size": 0}}, "slate_size: input should be greater than or equal to 1"),
        ({"env": {"n_candidates": 3, "slate_size": 5}}, "slate_size"),
        ({"seeds": 2.5}, "seeds: .*expected a list of int"),
        ({"seeds": 10**12}, "seeds: .*expected a list of int"),
        ({"rounds": float("nan")}, "rounds: input should be a valid integer"),
        ({"rounds": 10**12}, "rounds: input should be less than or equal to 100000000"),
        ({"checkpoints": 0}, "checkpoints: input should be greater than or equal to 1"),
        ({"world": {"type": "magic"}}, "world.type must be one of"),
        ({"world": {"type": "synthetic", "n_user": 3}}, "world 'synthetic' has no parameter"),
        ({"world": {"type": "synthetic", "n_users": 10**8}}, "synthetic world needs"),
        ({"world": {"type": "ratings", "base_ctr": 1.5}}, r"base_ctr must be in \(0.0, 1.0\)"),
        ({"policies": [{**linucb, "params": {"alpha": float("nan")}}]}, "alpha: input should"),
        ({"policies": [{**linucb, "params": {"alpha": -1.0}}]}, "alpha must be >= 0"),
        ({"policies": [{**linucb, "params": {"n_arms": 3}}]}, "'n_arms' is set by the experiment"),
        ({"policies": [{**linucb, "feedback": "some"}]}, "feedback: input should be 'all'"),
        ({"policies": []}, "no policies"),
    ):
        with pytest.raises(ConfigError, match=message):
            BanditConfig.from_dict({**_SMALL, **change})
    missing = {k: v for k, v in _SMALL.items() if k != "world"}
    with pytest.raises(ConfigError, match="missing key 'world'"):
        BanditConfig.from_dict(missing)
    bad.write_text("name: x\nworld: {type: synthetic}\nrounds: .nan\npolicies: []\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:3: rounds: input should be a valid integer"):
        BanditConfig.from_yaml(bad)


def test_build_policy_wraps_single_action_policies(world):
    cfg = BanditConfig.from_dict(_SMALL)
    p = build_policy("linucb", world, cfg.env, params={"alpha": 0.3}, random_state=0)
    assert isinstance(p, TopK) and isinstance(p.base, LinUCB) and p.base.n_features == 5
    slate = build_policy("inslate_ts", world, cfg.env, feedback="cascade")
    assert isinstance(slate, InSlateThompson) and slate.feedback == "cascade"
    with pytest.raises(ConfigError, match="here: bandit policy 'linucb' has no parameter 'alpah'"):
        build_policy("linucb", world, cfg.env, params={"alpah": 0.3}, where="here")


def test_metric_helpers():
    assert gini(np.array([1.0, 1.0, 1.0])) == pytest.approx(0.0)
    assert gini(np.array([0.0, 0.0, 3.0])) == pytest.approx(2 / 3)
    b = popularity_buckets(np.array([5.0, 1.0, 3.0, 9.0]), 2)
    assert b.tolist() == [1, 0, 0, 1]
    unit = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    ild = intra_list_diversity(unit, np.array([[0, 1], [0, 2], [0, -1]]))
    np.testing.assert_allclose(ild, [1.0, 0.0, 0.0])
