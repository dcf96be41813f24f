"""`rankloop loop CONFIG --out DIR [--resume]`: run a closed feedback loop and write its
table, metrics.json, click logs and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from rankloop.scale import add_ray_argument


def _loop(args: argparse.Namespace) -> int:
    from rankloop._runtime import check_output_dir
    from rankloop.loop.report import (
        held_out_measure,
        rounds_table,
        summarise,
        table_markdown,
        write_outputs,
    )
    from rankloop.loop.run import LoopConfig, run_loop

    config = LoopConfig.from_yaml(args.config)
    out = check_output_dir(args.out or config.out)
    result = run_loop(config, out, resume=args.resume, verbose=not args.quiet)
    written = write_outputs(result, out)
    summary = summarise(result)
    measure = held_out_measure(result)
    print(f"{measure} by round:\n{rounds_table(result, summary, measure)}\n")
    print(table_markdown(result, summary))
    print(f"\nwrote {out}/ ({', '.join(Path(p).name for p in written.values())}, clicks/*.jsonl)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `loop` to the top-level command line."""
    p = sub.add_parser(
        "loop",
        help="run a closed feedback loop (serve, click, log, learn, repeat) from a config",
        description="Every learner of CONFIG on every seed for its rounds: serve, simulate "
        "clicks, log, learn. Writes results.md, metrics.json, clicks/*.jsonl (the toolkit's "
        "click-log format) and PNGs; checkpoints every round (see --resume).",
    )
    p.add_argument("config", help="loop config YAML (see configs/loop_*.yaml)")
    p.add_argument("--out", help="output folder (default: the config's `out`)")
    p.add_argument("--resume", action="store_true",
                   help="continue the runs in --out from their last checkpoints")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_ray_argument(p)
    p.set_defaults(func=_loop)
