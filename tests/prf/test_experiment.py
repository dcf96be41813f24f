"""The PRF experiment runner: config validation (fast) and an end-to-end run on SciFact (slow)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from rankloop.errors import ConfigError
from rankloop.experiments.prf import DEFAULT_METHODS, PRFConfig
from rankloop.prf.cli import register

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_configs_load() -> None:
    for name in ("prf_scifact.yaml", "prf_nfcorpus.yaml"):
        cfg = PRFConfig.from_yaml(CONFIGS / name)
        assert cfg.methods == DEFAULT_METHODS


@pytest.mark.parametrize(
    "methods",
    [
        [{"name": "x", "kind": "nope"}],
        [{"name": "dense", "kind": "average"}],
        [{"name": "a", "kind": "average"}, {"name": "a", "kind": "average"}],
        [{"name": "f", "kind": "fusion", "runs": ["dense", "later"]}],
        [{"name": "r", "kind": "rocchio", "feedback": "splade"}],
    ],
)
def test_bad_methods_raise(methods: list) -> None:
    with pytest.raises(ConfigError):
        PRFConfig(methods=methods)


def test_unknown_config_key_raises() -> None:
    with pytest.raises(ConfigError, match="unknown keys"):
        PRFConfig.from_dict({"dataset": "scifact", "methodz": []})


def test_cli_registers_under_experiment() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["experiment", "prf", "--dataset", "nfcorpus", "--no-sweep"])
    assert args.dataset == "nfcorpus" and args.no_sweep and callable(args.func)
    assert not args.colbert
    assert parser.parse_args(["experiment", "prf", "--colbert"]).colbert


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RANKLOOP_DATA"), reason="needs RANKLOOP_DATA")
def test_end_to_end_scifact(tmp_path: Path) -> None:
    from rankloop.experiments.prf import run_prf, write_outputs

    cfg = PRFConfig(
        depths=[1, 3],
        methods=[
            {"name": "avg-k3", "kind": "average", "k": 3},
            {"name": "rocchio-bm25fb", "kind": "rocchio", "k": 3, "beta": 0.5, "feedback": "bm25"},
            {"name": "bm25+rm3", "kind": "sparse", "feedback": "rm3"},
            {"name": "hyb", "kind": "fusion", "runs": ["dense", "bm25+rm3"]},
        ],
        sweep=["avg-k3"],
    )
    result = run_prf(cfg, verbose=False)
    out = write_outputs(result, tmp_path)
    assert abs(result.table.mean["dense"]["ndcg_cut_10"] - 0.6451) < 5e-4
    assert abs(result.table.mean["avg-k3"]["ndcg_cut_10"] - 0.5953) < 5e-4
    assert (out / "ndcg_vs_depth.png").stat().st_size > 0
    assert (out / "runs" / "dense.trec").is_file()
