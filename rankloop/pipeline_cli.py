"""`rankloop stages` (every stage with its parameters) and `rankloop pipeline` (evaluate
pipeline expressions on a data set and print the Experiment table)."""

from __future__ import annotations

import argparse
import inspect


def _stages(args: argparse.Namespace) -> int:
    """Every pipeline stage, its parameters with their defaults, and what it does."""
    import rankloop.stages  # noqa: F401 - registers every stage
    from rankloop.pipeline import STAGES

    for name in STAGES.names():
        factory = STAGES.get(name)
        doc = (inspect.getdoc(factory) or "").split("\n\n")[0].replace("\n", " ")
        sig = inspect.signature(factory.__init__ if inspect.isclass(factory) else factory)
        params = ", ".join(
            p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
            for p in sig.parameters.values()
            if p.name not in ("self", "ctx") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )
        print(f"{name}({params})\n    {doc}")
    print("\nCombine with `a >> b` (then), `a + b` or fuse(a, b, method=..., norm=..., "
          "weights=[...]) (fusion), `a % k` (cut-off).")  # fmt: skip
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    import rankloop.stages  # noqa: F401 - registers every stage
    from rankloop.data import load
    from rankloop.pipeline import Experiment, parse
    from rankloop.retrieval.context import Context

    data = load(args.dataset, split=args.split)
    ctx = Context(data.corpus, dataset=args.dataset, verbose=not args.quiet)
    pipes = {}
    for i, text in enumerate(args.expressions):
        stage = parse(text, ctx, pipes, where=f"expression {i + 1}")
        pipes[str(stage)] = stage
    try:
        table = Experiment(pipes, data.queries, data.qrels, args.measure or ["ndcg_cut_10", "map"],
                           baseline=0, progress=not args.quiet)  # fmt: skip
    finally:
        ctx.close()
    print(table.to_markdown())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stages` and `pipeline` to the top-level command line."""
    p = sub.add_parser("stages", help="list every pipeline stage with its parameters",
                       description=_stages.__doc__)  # fmt: skip
    p.set_defaults(func=_stages)
    p = sub.add_parser(
        "pipeline",
        help="evaluate pipeline expressions on a data set (the first is the baseline)",
        description="Run each pipeline expression on the data set's queries and print one table "
        "with paired t-tests against the first, e.g. rankloop pipeline dense "
        "\"bm25 >> rocchio(fb_docs=3, beta=0.5)\" --dataset scifact",
    )
    p.add_argument("expressions", nargs="+", metavar="EXPR", help="a stage expression")
    p.add_argument("--dataset", default="scifact", help="registry data set (default scifact)")
    p.add_argument("--split", default="test", help="qrels split to evaluate (default test)")
    p.add_argument("-m", "--measure", action="append", help="measure (repeatable; default "
                   "ndcg_cut_10 and map)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_pipeline)

