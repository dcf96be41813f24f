"""`rankloop simulate bandits CONFIG.yaml`: policies × seeds × rounds on a semi-synthetic world."""

from __future__ import annotations

import argparse
from pathlib import Path

_ATTR = "_rankloop_simulate_subparsers"


def simulate_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The sub-parsers of the shared top-level `simulate` command, created on first use."""
    existing = getattr(sub, _ATTR, None)
    if existing is not None:
        return existing
    parser = sub.add_parser(
        "simulate",
        help="run a config-driven simulation",
        description="Run a config-driven simulation; each kind reads its own YAML config.",
    )
    kinds = parser.add_subparsers(dest="simulate_kind", required=True, metavar="KIND")
    setattr(sub, _ATTR, kinds)
    return kinds


def _run(args: argparse.Namespace) -> int:
    from rankloop.bandits.simulate import BanditConfig, run_bandits, write_outputs

    config = BanditConfig.from_yaml(args.config)
    if args.seeds is not None:
        config.seeds = list(range(args.seeds))
    if args.rounds is not None:
        config.rounds = args.rounds
    out = Path(args.out or config.out)
    result = run_bandits(config, verbose=not args.quiet)
    write_outputs(result, out)
    print(result.table_markdown())
    print(
        f"\n{len(config.policies)} policies x {len(config.seeds)} seeds x {config.rounds:,} rounds "
        f"in {result.seconds:.1f}s"
    )
    print(f"wrote {out}/ (results.json, results.md, config.yaml, regret.png, exposure.png)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `simulate bandits` to the shared `simulate` command."""
    p = simulate_subparsers(sub).add_parser(
        "bandits",
        help="bandit policies on a semi-synthetic slate environment (regret, CTR, exposure)",
        description="Run every policy of the config on every seed; report cumulative clicks, "
        "regret against the oracle, CTR, coverage and diversity; write a JSON and PNG plots "
        "(regret curves with seed bands, exposure by item popularity over time).",
    )
    p.add_argument("config", help="YAML config (see configs/bandits_coat.yaml)")
    p.add_argument("--out", help="output folder (default: the config's `out`)")
    p.add_argument("--seeds", type=int, help="override the seeds with 0..N-1")
    p.add_argument("--rounds", type=int, help="override the number of rounds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
