"""`rankloop experiment <kind> CONFIG.yaml` for every runner (recsys, ultr, prf, bandits), and
`rankloop simulate bandits`, an alias of `rankloop experiment bandits`.

The runners are imported only when their command runs, so `rankloop --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rankloop._runtime import check_output_dir
from rankloop.scale import add_ray_argument


# ---- handlers ------------------------------------------------------------------------------
def _recsys(args: argparse.Namespace) -> int:
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


def _ultr(args: argparse.Namespace) -> int:
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


def _prf(args: argparse.Namespace) -> int:
    from rankloop.experiments.prf import COLBERT_PIPELINES, PRFConfig, run_prf, write_outputs

    config = PRFConfig.from_yaml(args.config) if args.config else PRFConfig()
    if args.dataset:
        config.dataset = args.dataset
        if not args.config:
            config.out = f"results/prf/{Path(args.dataset).name}"
    if args.no_sweep:
        config.sweep = []
    if args.colbert:
        config.pipelines = {**config.pipelines, **{
            n: e for n, e in COLBERT_PIPELINES.items() if n not in config.pipelines}}  # fmt: skip
        if getattr(config, "_source", None) is not None:
            config._source = None  # the pipelines now differ from the file's
    config.__post_init__()
    out = check_output_dir(args.out or config.out)
    result = run_prf(config, verbose=not args.quiet)
    write_outputs(result, out)
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"wrote {out}/ (table.md, metrics.json, runs/*.trec, ndcg_vs_depth.png, config.yaml)")
    return 0


def _bandits(args: argparse.Namespace) -> int:
    from rankloop.experiments.bandits import BanditConfig, run_bandits, write_outputs

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


# ---- parsers -------------------------------------------------------------------------------
def _add_recsys(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "recsys",
        help="MNAR recommenders (WMF, BPR, ExpoMF, Rel-MF, UBPR) tuned on MNAR data, tested on a MAR set",
        description="Tune on a validation split of the MNAR training data, train every model for each "
        "seed, evaluate on the MAR test set; write a table, per-seed JSON and a popularity-bucket plot.",
    )
    p.add_argument("config", help="YAML config (see configs/recsys_coat.yaml)")
    p.add_argument("--out", help="output folder (default: the config's `out`)")
    p.add_argument("--seeds", type=int, help="override the number of seeds (0..N-1)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_ray_argument(p)
    p.set_defaults(func=_recsys)


def _add_ultr(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
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
    add_ray_argument(p)
    p.set_defaults(func=_ultr)


def _add_prf(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "prf",
        help="PRF pipelines (vector Rocchio/Average, LoL, BM25+RM3, hybrids) vs dense",
        description="Build or reuse the dense and BM25 indexes, run every pipeline of the config "
        "(stage expressions such as \"bm25 >> rocchio(fb_docs=3)\"; see `rankloop stages`), and "
        "print one comparison table against the no-PRF dense baseline (paired t-test); also write the runs "
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
    add_ray_argument(p)
    p.set_defaults(func=_prf)


def _add_bandits(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
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
    add_ray_argument(p)
    p.set_defaults(func=_bandits)


def _group(sub: argparse._SubParsersAction, name: str, what: str) -> argparse._SubParsersAction:
    """A top-level command (`experiment`, `simulate`) whose kinds each read a YAML config."""
    parser = sub.add_parser(name, help=f"run a config-driven {what}",
                            description=f"Run a config-driven {what}; each kind reads its own "
                            "YAML config.")  # fmt: skip
    return parser.add_subparsers(dest=f"{name}_kind", required=True, metavar="KIND")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `experiment recsys|ultr|prf|bandits` and the `simulate bandits` alias to `sub`."""
    kinds = _group(sub, "experiment", "experiment")
    for add in (_add_recsys, _add_ultr, _add_prf, _add_bandits):
        add(kinds)
    _add_bandits(_group(sub, "simulate", "simulation (`simulate bandits` = `experiment bandits`)"))
