"""`rankloop eval` (trec_eval-style scoring) and `rankloop compare` (experiment table)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_MEASURES = ("map", "ndcg", "ndcg_cut_10", "P_10", "recall_1000", "recip_rank", "bpref")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `eval` and `compare` sub-commands."""
    p = sub.add_parser(
        "eval",
        help="score a TREC run against qrels (trec_eval semantics)",
        description="Score RUN against QRELS with trec_eval's semantics; prints trec_eval's "
        "three columns (measure, query id or 'all', value).",
    )
    p.add_argument("run", help="TREC run file (qid Q0 docid rank score tag), .gz allowed")
    p.add_argument("qrels", help="TREC qrels (qid 0 docid grade) or BEIR qrels TSV")
    _measure_args(p)
    p.add_argument(
        "-c",
        "--complete",
        action="store_true",
        help="average over every qrels query; missing ones score 0 (trec_eval -c)",
    )
    p.add_argument(
        "-q",
        "--per-query",
        action="store_true",
        help="also print each query's values (trec_eval -q)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the three columns")
    p.set_defaults(func=_eval)

    c = sub.add_parser(
        "compare",
        help="compare runs: means, deltas and significance vs a baseline",
        description="Evaluate several runs on the same qrels and test each against the baseline.",
    )
    c.add_argument("runs", nargs="+", metavar="RUN", help="TREC run files")
    c.add_argument("--qrels", required=True, help="TREC qrels or BEIR qrels TSV")
    c.add_argument(
        "--baseline",
        help="baseline run: one of the RUN paths (or another path), or a run name; default: the first RUN",
    )
    _measure_args(c)
    c.add_argument(
        "--test", choices=("t", "fisher", "bootstrap"), default="t", help="paired test (default: t)"
    )
    c.add_argument(
        "--correction",
        choices=("none", "holm", "bonferroni"),
        default="none",
        help="multiple-comparison correction across systems (default: none)",
    )
    c.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    c.add_argument(
        "--resamples",
        type=int,
        default=10_000,
        help="permutations / bootstrap resamples (default: 10000)",
    )
    c.add_argument(
        "--seed", type=int, default=0, help="random seed for fisher/bootstrap (default: 0)"
    )
    c.add_argument(
        "--complete",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count every qrels query, missing ones scoring 0 (default); --no-complete uses only queries present in every run",
    )
    c.add_argument(
        "--format", choices=("md", "csv", "json"), default="md", help="output format (default: md)"
    )
    c.add_argument("-o", "--output", help="write the table to this file instead of stdout")
    c.set_defaults(func=_compare)


def _measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-m",
        "--measure",
        action="append",
        dest="measures",
        metavar="MEASURE",
        help="measure, repeatable: ndcg_cut_10, ndcg_cut.10,100, map, P_5, recall_1000, "
        "recip_rank, recip_rank_cut_10, Rprec, bpref, success_1, judged_10 "
        f"(default: {' '.join(DEFAULT_MEASURES)})",
    )
    p.add_argument(
        "-l",
        "--level",
        type=int,
        default=1,
        help="minimum grade counted relevant by binary measures (trec_eval -l; default 1)",
    )


def _eval(args: argparse.Namespace) -> int:
    from rankloop.data.trec import read_qrels, read_run
    from rankloop.eval.metrics import Evaluator

    measures = args.measures or list(DEFAULT_MEASURES)
    ev = Evaluator(read_qrels(args.qrels), measures, level=args.level, complete=args.complete)
    res = ev.evaluate(read_run(args.run))
    if args.json:
        doc: dict[str, object] = {
            "run": args.run,
            "qrels": args.qrels,
            "level": args.level,
            "complete": args.complete,
            "n_queries": len(res.query_ids),
            "mean": res.mean,
        }
        if args.per_query:
            doc["per_query"] = res.per_query
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    lines = []
    if args.per_query:
        for q, vals in res.per_query.items():
            lines += [f"{m:<22}\t{q}\t{v:.4f}" for m, v in vals.items()]
    lines += [f"{m:<22}\tall\t{v:.4f}" for m, v in res.mean.items()]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from rankloop.data.trec import read_qrels, read_run
    from rankloop.errors import RankloopError
    from rankloop.eval.compare import compare

    paths = list(dict.fromkeys(args.runs))
    base_path = None
    if args.baseline is not None:
        same = [p for p in paths if Path(p) == Path(args.baseline)]
        if same:
            base_path = same[0]
        elif Path(args.baseline).is_file():
            base_path = args.baseline
            paths.insert(0, base_path)
    runs = {p: read_run(p) for p in paths}
    names = _system_names(runs)
    if args.baseline is None:
        baseline: str | int = 0
    elif base_path is not None:
        baseline = names[base_path]
    elif args.baseline in names.values():
        baseline = args.baseline
    else:
        raise RankloopError(
            f"--baseline {args.baseline!r} is neither a run file nor a run name "
            f"({', '.join(names.values())})"
        )
    table = compare(
        {names[p]: r for p, r in runs.items()},
        read_qrels(args.qrels),
        args.measures or list(DEFAULT_MEASURES),
        baseline=baseline,
        test=args.test,
        correction=None if args.correction == "none" else args.correction,
        alpha=args.alpha,
        level=args.level,
        complete=args.complete,
        n_resamples=args.resamples,
        random_state=args.seed,
    )
    render = {"md": table.to_markdown, "csv": table.to_csv, "json": table.to_json}[args.format]
    text = render(path=args.output)
    if not args.output:
        sys.stdout.write(text)
    return 0


def _system_names(runs: dict[str, object]) -> dict[str, str]:
    """Run name (the tag) per path; falls back to the file stem, then the path, on clashes."""
    for label in (lambda p, r: r.name or Path(p).stem, lambda p, r: Path(p).stem):
        names = {p: label(p, r) for p, r in runs.items()}
        if len(set(names.values())) == len(names):
            return names
    return {p: p for p in runs}
