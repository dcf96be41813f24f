"""`rankloop experiment prf [CONFIG.yaml] --dataset scifact`: the PRF experiment (README's main job)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rankloop.experiments import experiment_subparsers


def _run(args: argparse.Namespace) -> int:
    from rankloop.experiments.prf import COLBERT_METHODS, PRFConfig, run_prf, write_outputs

    config = PRFConfig.from_yaml(args.config) if args.config else PRFConfig()
    if args.dataset:
        config.dataset = args.dataset
        if not args.config:
            config.out = f"results/prf/{args.dataset}"
    if args.no_sweep:
        config.sweep = []
    if args.colbert:
        config.methods = config.methods + [
            dict(m) for m in COLBERT_METHODS if m["name"] not in {x["name"] for x in config.methods}
        ]
    config.__post_init__()
    out = Path(args.out or config.out)
    result = run_prf(config, verbose=not args.quiet)
    write_outputs(result, out)
    print(result.table.to_markdown())
    print(f"wrote {out}/ (table.md, metrics.json, runs/*.trec, ndcg_vs_depth.png, config.yaml)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `experiment prf` to the shared `experiment` command."""
    p = experiment_subparsers(sub).add_parser(
        "prf",
        help="pseudo-relevance feedback: vector Rocchio/Average, LoL, BM25+RM3, hybrids vs dense",
        description="Build or reuse the dense and BM25 indexes, run every PRF method, and print one "
        "comparison table against the no-PRF dense baseline (paired t-test); also write the runs "
        "(TREC), metrics JSON and a plot of nDCG@10 against the feedback depth.",
    )
    p.add_argument("config", nargs="?", help="YAML config (see configs/prf_scifact.yaml)")
    p.add_argument("--dataset", help="data set (default: the config's, else scifact)")
    p.add_argument("--out", help="output folder (default: the config's `out`)")
    p.add_argument("--no-sweep", action="store_true", help="skip the feedback-depth sweep and plot")
    p.add_argument(
        "--colbert",
        action="store_true",
        help="add the MaxSim first pass and ColBERT-PRF (builds a token index: ~13 min on 2 cores, "
        "then cached)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_run)
