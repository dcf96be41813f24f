"""The simulation loop, its outputs and the `simulate bandits` command."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import yaml

from rankloop.bandits.cli import register
from rankloop.bandits.policies import InSlateThompson, LinUCB, TopK
from rankloop.bandits.simulate import (
    BanditConfig,
    build_policy,
    gini,
    intra_list_diversity,
    popularity_buckets,
    run_bandits,
)
from rankloop.errors import ConfigError

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


def test_outputs_and_cli(tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({**_SMALL, "out": str(tmp_path / "out"), "seeds": 1}))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate", "bandits", str(cfg_path), "--rounds", "400", "--quiet"])
    assert args.func(args) == 0
    out = tmp_path / "out"
    for f in ("results.json", "results.md", "config.yaml", "regret.png", "exposure.png"):
        assert (out / f).is_file()
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["rounds"] == 400 and len(data["runs"]) == 3
    assert (out / "regret.png").read_bytes()[:4] == b"\x89PNG"


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key"):
        BanditConfig.from_dict({**_SMALL, "colour": 1})
    with pytest.raises(ConfigError, match="type must be"):
        BanditConfig.from_dict({**_SMALL, "policies": [{"name": "x", "type": "nope"}]})
    with pytest.raises(ConfigError, match="unique"):
        BanditConfig.from_dict({**_SMALL, "policies": [{"name": "x", "type": "random"}] * 2})
    bad = tmp_path / "bad.yaml"
    bad.write_text("[1, 2")
    with pytest.raises(ConfigError):
        BanditConfig.from_yaml(bad)


def test_build_policy_wraps_single_action_policies(world):
    cfg = BanditConfig.from_dict(_SMALL)
    p = build_policy(cfg.policies[1], world, cfg.env, seed=0)
    assert isinstance(p, TopK) and isinstance(p.base, LinUCB) and p.base.n_features == 5
    assert isinstance(build_policy(cfg.policies[2], world, cfg.env, 0), InSlateThompson)


def test_metric_helpers():
    assert gini(np.array([1.0, 1.0, 1.0])) == pytest.approx(0.0)
    assert gini(np.array([0.0, 0.0, 3.0])) == pytest.approx(2 / 3)
    b = popularity_buckets(np.array([5.0, 1.0, 3.0, 9.0]), 2)
    assert b.tolist() == [1, 0, 0, 1]
    unit = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    ild = intra_list_diversity(unit, np.array([[0, 1], [0, 2], [0, -1]]))
    np.testing.assert_allclose(ild, [1.0, 0.0, 0.0])
