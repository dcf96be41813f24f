"""`rankloop serve`: put an index in front of people (see `rankloop.serve.app`)."""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Any

from rankloop.errors import ConfigError


def _pipelines(specs: list[str], ctx: Any) -> dict[str, Any]:
    """`[NAME=]EXPRESSION` -> name -> stage (an expression may name earlier ones with ref())."""
    import rankloop.stages  # noqa: F401 - registers every stage
    from rankloop.pipeline import parse

    out: dict[str, Any] = {}
    for i, spec in enumerate(specs, start=1):
        name, sep, expr = spec.partition("=")
        if not sep or "(" in name or " " in name.strip():
            name, expr = "", spec
        stage = parse(expr.strip(), ctx, out, where=f"--pipeline {i}")
        name = name.strip() or str(stage)  # the name as written, before the cap
        stage = _cap_k(stage)
        if name in out or name == "learned":
            raise ConfigError(f"--pipeline {i}: the name {name!r} is taken")
        out[name] = stage
    return out


def _cap_k(stage: Any) -> Any:
    """Every cut-off `k` of the pipeline at most `MAX_K`: a page shows at most that many results,
    and the stages' default (1,000 hits per query) costs most of a search's time."""
    from rankloop.serve.app import MAX_K

    params = stage.get_params()
    big = {key: MAX_K for key, v in params.items()
           if key.split("__")[-1] == "k" and isinstance(v, int) and v > MAX_K}  # fmt: skip
    return stage.set_params(**big) if big else stage


def build(args: argparse.Namespace) -> tuple[Any, ...]:
    """Everything the server needs, checked before it listens: context, engine, store, app."""
    from rankloop.data import load
    from rankloop.data.registry import remove_query_id
    from rankloop.retrieval.context import Context
    from rankloop.serve.app import ClickMemory, create_app
    from rankloop.serve.engine import Engine
    from rankloop.serve.store import ClickStore

    index = None
    dataset = args.dataset
    if args.index:
        from rankloop.retrieval.base import read_meta

        meta = read_meta(args.index)
        dataset = dataset or meta.get("corpus")
        if not dataset:
            raise ConfigError(f"{args.index}: the index does not record its corpus; pass --dataset")
    if not dataset:
        raise ConfigError("serve: give --dataset NAME (or a BEIR folder) or --index DIR")
    corpus = load(dataset, split=None).corpus
    encoder = None
    if args.backend != "torch":
        from rankloop.embed.encoders import Encoder

        encoder = Encoder(backend=args.backend, show_progress=not args.quiet)
    ctx = Context(corpus, dataset=dataset, cache_runs=False, verbose=not args.quiet, encoder=encoder,
                  remove_query_id=remove_query_id(dataset) if not Path(dataset).exists() else False)  # fmt: skip
    if args.index:
        from rankloop.retrieval.open import open_index

        kind = read_meta(args.index)["kind"]
        index = open_index(args.index, **({"encoder": ctx.encoder} if kind == "dense" else {}))
        ctx.use_index(index)
    specs = args.pipeline or (["dense"] if not args.index or kind == "dense" else ["bm25"])
    pipelines = _pipelines(specs, ctx)
    from rankloop.data.types import Queries

    for _name, stage in pipelines.items():  # build every index now and fail fast
        stage(Queries(["warmup"], ["warm up the index"], "warmup"))
    engine = Engine(pipelines)
    store = ClickStore(args.log)
    names = list(pipelines)
    pair = (
        tuple(args.interleave)
        if args.interleave
        else (tuple(names[:2]) if len(names) > 1 else None)
    )
    if pair and any(p not in pipelines for p in pair):
        raise ConfigError(f"--interleave: unknown pipeline in {list(pair)}; serving {names}")
    learner = None
    if args.learner:
        learner = ClickMemory(engine, store, names[0], ctx, learn_every=args.learn_every)
    recommender = None
    if args.recommender:
        from rankloop.recsys.base import load_recommender

        recommender = load_recommender(args.recommender)
    app = create_app(engine, store, corpus, dataset=str(dataset), interleave=pair,
                     learner=learner, recommender=recommender)  # fmt: skip
    return app, engine, store, learner, ctx


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who reaches this address can search and "
              "write to the click log", file=sys.stderr)  # fmt: skip
    app, engine, store, learner, ctx = build(args)
    # Everything built so far (model, index, corpus, a few million objects) lives as long as the
    # server: move it out of the collector's reach, so a full collection no longer walks it and
    # stalls every request for a tenth of a second or more.
    gc.collect()
    gc.freeze()
    print(
        f"rankloop serve: http://{args.host}:{args.port}/ (log: {args.log})",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        if learner:
            learner.close()
        engine.close()
        store.close()
        ctx.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `serve` to the top-level command line."""
    p = sub.add_parser(
        "serve",
        help="serve search (and recommendations) with a web page and a durable click log",
        description="FastAPI on uvicorn: /api/search, /api/click, /api/stats, ... and a web page at "
        "/. Every result list and click goes into the SQLite click log (--log); "
        "`rankloop clicks export LOG` turns it into a click-log file.",
    )
    p.add_argument("--dataset", help="registry name (scifact, ...) or a BEIR folder")
    p.add_argument(
        "--index", help="an index folder built by `rankloop index build` (dense or bm25)"
    )
    p.add_argument("--pipeline", action="append", metavar="[NAME=]EXPRESSION",
                   help="a pipeline to serve, e.g. bm25 or 'prf=dense >> rocchio(fb_docs=3)'; "
                        "repeat for more (default: dense)")  # fmt: skip
    p.add_argument("--interleave", nargs=2, metavar=("A", "B"),
                   help="the pair the page offers to interleave (default: the first two)")  # fmt: skip
    p.add_argument("--learner", choices=["knn_memory"],
                   help="learn online: kNN feedback from each repeated query's clicks (pipeline 'learned')")  # fmt: skip
    p.add_argument("--learn-every", type=float, default=5.0, help="seconds between learner updates")
    p.add_argument(
        "--recommender", help="a recommender saved with FactorRecommender.save (for /api/recommend)"
    )
    p.add_argument("--backend", default="torch",
                   choices=["torch", "torch-bf16", "onnx", "onnx-int8", "openvino", "auto"],
                   help="how the encoder runs (see Encoder; auto picks the fastest accurate one)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log", default="clicks.db", help="SQLite click log (created if missing)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_serve)
