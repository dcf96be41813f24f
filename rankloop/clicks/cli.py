"""`rankloop clicks fit|simulate|export`: fit a click model to a log, simulate a click log, or
export the clicks `rankloop serve` logged as a click log.

simulate has two sources:
- `--run RUN --qrels QRELS`: each session shows a uniformly drawn run query's top `--k`; clicks
  come from the configured model (`--eta`, `--eps`, `--max-grade`, `--gamma`, `--continuation`)
  with attractiveness from the qrels grade (unjudged = 0), ULTRA-style.
- `--log LOG`: the model is first fitted on LOG; sessions resample LOG's result lists and clicks
  come from the fitted parameters (a synthetic log that mimics a real one).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from rankloop.clicks.models import MODELS, ClickModel, make_model
from rankloop.clicks.simulate import sessions_from_log, sessions_from_run, simulate_log
from rankloop.data.clicklogs import ClickLog, read_click_log, write_click_log
from rankloop.errors import RankloopError
from rankloop.io import atomic_write

_FORMATS = ("auto", "yandex", "tsv", "jsonl")


def _model(args: argparse.Namespace) -> ClickModel:
    """The model named by --model with the hyper-parameters that apply to it."""
    name = args.model
    params: dict[str, object] = {"eps": args.eps, "max_grade": args.max_grade}
    if name in ("pbm", "ubm"):
        params["eta"] = args.eta
    if name == "dbn":
        params["gamma"] = args.gamma
    if name == "dcm":
        params["continuation"] = args.continuation
    if name in ("dcm", "sdbn"):
        params["method"] = args.method
    if name in ("pbm", "ubm", "dbn", "dcm", "sdbn") and getattr(args, "max_iter", None):
        params["max_iter"] = args.max_iter
    return make_model(name, **params)


def _describe(log: ClickLog) -> str:
    return (
        f"{log.name}: {len(log):,} sessions, {len(log.query_vocab):,} queries, "
        f"{len(log.doc_vocab):,} docs, K={log.max_rank}, {int(log.clicks.sum()):,} clicks"
    )


def _scores(model: ClickModel, log: ClickLog) -> dict:
    ppl = model.perplexity(log)
    cond = model.perplexity(log, conditional=True)
    return {
        "log_likelihood": model.log_likelihood(log),
        "perplexity": ppl.overall,
        "perplexity_per_rank": np.round(ppl.per_rank, 4).tolist(),
        "conditional_perplexity": cond.overall,
    }


def _fit(args: argparse.Namespace) -> int:
    log = read_click_log(args.log, args.format)
    test = read_click_log(args.test, args.test_format) if args.test else None
    print(_describe(log))
    model = _model(args)
    start = time.perf_counter()
    model.fit(log)
    elapsed = time.perf_counter() - start
    summary = model.summary()
    print(f"fitted {summary['model']} in {elapsed:.2f}s")
    for key, value in summary.items():
        if key != "model":
            print(f"  {key}: {value}")
    tests = [("train", log)]
    if test is not None:
        print(_describe(test))
        tests.append(("test", test))
    result: dict[str, object] = {"summary": summary, "fit_seconds": elapsed}
    k = max(scored.max_rank for _, scored in tests)
    head = ["log", "LL/session", "perplexity", "cond. perplexity"] + [f"@{r + 1}" for r in range(k)]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, scored in tests:
        s = _scores(model, scored)
        cells = [s["log_likelihood"], s["perplexity"], s["conditional_perplexity"]]
        cells += s["perplexity_per_rank"] + [float("nan")] * (k - scored.max_rank)
        print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in cells) + " |")
        result[label] = s
    if args.json:
        with atomic_write(args.json) as fh:
            json.dump(result, fh, indent=2)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    model = _model(args)
    if args.log:
        if args.run or args.qrels:
            raise RankloopError(
                "clicks simulate: give either --log or --run with --qrels, not both"
            )
        source = read_click_log(args.log, args.format)
        model.fit(source)
        sessions = sessions_from_log(source, args.sessions, rng)
        out = simulate_log(model, sessions, rng)
    elif args.run and args.qrels:
        from rankloop.data.trec import read_qrels, read_run

        sessions, grades = sessions_from_run(
            read_run(args.run), read_qrels(args.qrels), args.sessions, rng, k=args.k
        )
        out = simulate_log(model, sessions, rng, relevance=grades)
    else:
        raise RankloopError("clicks simulate: give --log LOG, or --run RUN and --qrels QRELS")
    write_click_log(out, args.out, args.out_format)
    ctr = out.clicks.sum(axis=0) / np.maximum(out.mask.sum(axis=0), 1)
    print(f"wrote {args.out}: {len(out):,} sessions, {int(out.clicks.sum()):,} clicks")
    print("CTR per rank: " + " ".join(f"{c:.3f}" for c in ctr))
    return 0


def _export(args: argparse.Namespace) -> int:
    """Write the click database of `rankloop serve` as a click log that `clicks fit` reads."""
    from rankloop.serve.store import ClickStore

    with ClickStore(args.db, create=False) as store:
        n = store.export_click_log(args.out, kind=None if args.kind == "all" else args.kind)
    print(f"wrote {args.out}: {n:,} sessions")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, choices=sorted(MODELS), help="click model")
    p.add_argument(
        "--eta", type=float, default=1.0, help="PBM/UBM position-bias power: theta_r = (1/r)^eta"
    )
    p.add_argument("--eps", type=float, default=0.1, help="click noise on non-relevant docs")
    p.add_argument("--max-grade", type=int, default=4, help="largest relevance grade (gmax)")
    p.add_argument("--gamma", type=float, default=0.9, help="DBN continuation probability")
    p.add_argument("--continuation", type=float, default=0.5, help="DCM continuation after a click")
    p.add_argument(
        "--method",
        choices=("counting", "em"),
        default="counting",
        help="DCM/SDBN fit: closed-form counting (default) or exact MLE by EM",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add `clicks fit`, `clicks simulate` and `clicks export`."""
    clicks = sub.add_parser(
        "clicks", help="click models: fit to a log, simulate logs, export served clicks"
    )
    csub = clicks.add_subparsers(dest="clicks_command", required=True)

    fit = csub.add_parser(
        "fit", help="fit a click model; print parameters, log-likelihood, perplexity"
    )
    fit.add_argument("log", help="click log (yandex, tsv or jsonl)")
    _common(fit)
    fit.add_argument(
        "--format",
        choices=_FORMATS,
        default="auto",
        help="format of LOG (auto: by suffix, else yandex)",
    )
    fit.add_argument("--test", help="held-out log to score")
    fit.add_argument("--test-format", choices=_FORMATS, default="auto")
    fit.add_argument(
        "--max-iter", type=int, help="EM iterations (pbm, ubm, dbn; dcm/sdbn with --method em)"
    )
    fit.add_argument("--json", help="also write the summary and scores to this JSON file")
    fit.set_defaults(func=_fit)

    sim = csub.add_parser(
        "simulate", help="simulate a click log from a run+qrels or from a fitted log"
    )
    _common(sim)
    sim.add_argument("--sessions", type=int, required=True, help="number of sessions")
    sim.add_argument("--out", required=True, help="output log (.tsv or .jsonl)")
    sim.add_argument("--out-format", choices=("auto", "tsv", "jsonl"), default="auto")
    sim.add_argument("--run", help="TREC run: the result lists")
    sim.add_argument("--qrels", help="qrels: the grades")
    sim.add_argument("--k", type=int, default=10, help="list length taken from the run")
    sim.add_argument("--log", help="fit the model on this log and simulate from it instead")
    sim.add_argument("--format", choices=_FORMATS, default="auto", help="format of --log")
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(func=_simulate)

    export = csub.add_parser(
        "export", help="write the click database of `rankloop serve` as a click log"
    )
    export.add_argument("db", help="click database (SQLite) written by `rankloop serve`")
    export.add_argument(
        "--format", choices=("jsonl",), default="jsonl", help="output format (jsonl)"
    )
    export.add_argument("--out", required=True, help="output click log (.jsonl)")
    export.add_argument(
        "--kind",
        default="search",
        help="impressions of this kind (search, recommend, ...; 'all' for every kind)",
    )
    export.set_defaults(func=_export)
