"""The PRF experiment runner: config validation (fast) and an end-to-end run on SciFact (slow)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from rankloop.errors import ConfigError
from rankloop.experiments.cli import register
from rankloop.experiments.prf import DEFAULT_PIPELINES, REFERENCE, PRFConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_configs_load() -> None:
    for name in ("prf_scifact.yaml", "prf_nfcorpus.yaml"):
        cfg = PRFConfig.from_yaml(CONFIGS / name)
        assert cfg.pipelines == DEFAULT_PIPELINES and cfg.reference == REFERENCE


@pytest.mark.parametrize(
    "changes",
    [
        {"baseline": "nope"},
        {"pipelines": {}},
        {"sweep": ["later"]},
        {"reference": ["x"]},
        {"k": 0},
        {"depths": [0]},
        {"depths": "3"},
        {"k": True},
        {"k": 10**12},
        {"pipelines": {"dense": 3}},
        {"measures": [1]},
    ],
)
def test_bad_configs_raise(changes: dict) -> None:
    with pytest.raises(ConfigError):
        PRFConfig.from_dict(changes)


def test_unknown_config_key_raises() -> None:
    with pytest.raises(ConfigError, match="unknown key 'methodz'; valid keys: dataset"):
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
        backend="torch",  # float32: the figures below (the default "auto" may take bf16)
        depths=[1, 3],
        reference=[],
        pipelines={
            "dense": "dense",
            "avg-k3": "average(fb_docs=3)",
            "rocchio-bm25fb": "bm25 >> rocchio(fb_docs=3, beta=0.5)",
            "bm25+rm3": "bm25_rm3",
            "hyb": "fuse(dense, ref('bm25+rm3'), method='rrf')",
        },
        sweep=["avg-k3"],
    )
    result = run_prf(cfg, verbose=False)
    out = write_outputs(result, tmp_path)
    assert abs(result.table.mean["dense"]["ndcg_cut_10"] - 0.6451) < 5e-4
    assert abs(result.table.mean["avg-k3"]["ndcg_cut_10"] - 0.5953) < 5e-4
    assert (out / "ndcg_vs_depth.png").stat().st_size > 0
    assert (out / "runs" / "dense.trec").is_file()


def test_reference_rows_default_to_the_peers_present() -> None:
    cfg = PRFConfig.from_dict({"pipelines": {"dense": "dense", "rb": "bm25 >> rocchio"}})
    assert cfg.reference == []
    assert PRFConfig.from_dict({"pipelines": {"dense": "dense", "bm25": "bm25"}}).reference == ["bm25"]
