"""`rankloop experiment ultr CONFIG.yaml`: the semi-synthetic ULTR benchmark from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from rankloop.experiments import experiment_subparsers


def _run(args: argparse.Namespace) -> int:
    from rankloop.experiments.ultr import UltrConfig, run_ultr, write_outputs

    config = UltrConfig.from_yaml(args.config)
    if args.quick:
        config = config.quick()
    if args.seeds is not None:
        config.seeds = list(range(args.seeds))
    out = Path(args.out or (config.out + ("-quick" if args.quick else "")))
    result = run_ultr(config, verbose=not args.quiet)
    write_outputs(result, out)
    print(result.table_markdown())
    print(
        f"\nwrote {out}/ (results.md, results.csv, per_seed.json, metrics.json, ndcg_vs_sessions.png)"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `experiment ultr` to the shared `experiment` command."""
    p = experiment_subparsers(sub).add_parser(
        "ultr",
        help="semi-synthetic unbiased learning to rank: simulated clicks on BEIR qrels",
        description="Simulate click logs on the logging ranker's top-k for the training queries, "
        "train Naive / IPS / DLA / regression-EM / PairD / two-tower estimators and a "
        "full-information model, score nDCG@10 on the test queries; write a table and a PNG of "
        "nDCG@10 against the number of sessions.",
    )
    p.add_argument("config", help="YAML config (see configs/ultr_semisynthetic.yaml)")
    p.add_argument("--out", help="output folder (default: the config's `out`)")
    p.add_argument("--seeds", type=int, help="override the number of seeds (0..N-1)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: first click model, 2 seeds, 10^3 and 10^4 sessions, 10 epochs",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_run)
