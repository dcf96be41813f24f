"""Semi-synthetic unbiased learning to rank (ULTRA's protocol on SciFact + NFCorpus qrels).

Runs two experiments with `rankloop.experiments.ultr`:

- configs/ultr_semisynthetic.yaml: every feature, including the logging ranker's (BM25) own score
  and rank;
- configs/ultr_no_logging_features.yaml: the same without those three features (an ablation that
  shows where the joint propensity estimators fail: relevance and position are confounded when
  the ranker sees the logging rank).

Each: BM25 top-10 for SciFact + NFCorpus train queries is shown; 10^4, 10^5, 10^6 sessions with
PBM (eta 0.5, 1, 2) and DBN clicks from the true train grades; Naive, IPS (true / swap-estimated
propensities), DLA, regression-EM, PairD, two-tower and a full-information model; nDCG@10 on the
test queries (true qrels), 5 seeds. Prints the tables and the goal check (at eta = 1 and 10^5
sessions, IPS or DLA closes >= 80% of the Naive -> full-information gap), writes
benchmarks/results/ultr.json and the experiment folders under benchmarks/results/ultr/.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/ultr.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import RESULTS, write_result

from rankloop.experiments.ultr import UltrConfig, run_ultr, write_outputs

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
EXPERIMENTS = ("ultr_semisynthetic.yaml", "ultr_no_logging_features.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: PBM eta=1, 2 seeds, 10^3/10^4 sessions"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    name = "ultr_quick" if args.quick else "ultr"
    payload: dict = {
        "command": "benchmarks/ultr.py" + (" --quick" if args.quick else ""),
        "runs": {},
    }
    start = time.perf_counter()
    for file in EXPERIMENTS:
        config = UltrConfig.from_yaml(CONFIGS / file)
        if args.quick:
            config = config.quick()
        result = run_ultr(config, verbose=not args.quiet)
        out = write_outputs(result, RESULTS / name / config.name)
        print(f"## {config.name}  (`rankloop experiment ultr configs/{file}`)\n")
        print(result.table_markdown())
        print(f"\nwrote {out}/\n")
        payload["runs"][config.name] = {
            "config": f"configs/{file}",
            "quick": args.quick,
            "goal": result.goal,
            "references": result.references,
            "summary": result.summary,
            "timing": result.timing,
        }
    payload["total_s"] = round(time.perf_counter() - start, 1)
    path = write_result(name, payload)
    print(f"total {payload['total_s']:.0f}s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
