"""`rankloop experiment recsys CONFIG.yaml`: the MNAR recommender experiment from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from rankloop.experiments import experiment_subparsers


def _run(args: argparse.Namespace) -> int:
    from rankloop.experiments.recsys import RecsysConfig, run_recsys, write_outputs

    config = RecsysConfig.from_yaml(args.config)
    if args.seeds is not None:
        config.seeds = list(range(args.seeds))
    out = Path(args.out or config.out)
    result = run_recsys(config, verbose=not args.quiet)
    write_outputs(result, out)
    print(result.table_markdown())
    print()
    print("Protocol:")
    print(result.protocol_text())
    print(
        f"\nwrote {out}/ (results.md, results.csv, per_seed.json, metrics.json, popularity_buckets.png)"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `experiment recsys` to the shared `experiment` command."""
    p = experiment_subparsers(sub).add_parser(
        "recsys",
        help="MNAR recommenders (WMF, BPR, ExpoMF, Rel-MF, UBPR) tuned on MNAR data, tested on a MAR set",
        description="Tune on a validation split of the MNAR training data, train every model for each "
        "seed, evaluate on the MAR test set; write a table, per-seed JSON and a popularity-bucket plot.",
    )
    p.add_argument("config", help="YAML config (see configs/recsys_coat.yaml)")
    p.add_argument("--out", help="output folder (default: the config's `out`)")
    p.add_argument("--seeds", type=int, help="override the number of seeds (0..N-1)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_run)
