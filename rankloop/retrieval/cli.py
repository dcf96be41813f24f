"""`rankloop index build`, `rankloop search` and `rankloop run`: build indexes, search, evaluate.

Heavy libraries (torch, FAISS, Java) load inside the handlers, so `rankloop --help` stays fast.
Progress goes to stderr; stdout carries only results (the evaluation table).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rankloop.data import registry
from rankloop.embed.encoders import BACKENDS
from rankloop.embed.shards import DEFAULT_SHARD_SIZE
from rankloop.errors import ConfigError
from rankloop.retrieval.base import KINDS
from rankloop.scale import add_ray_argument

RETRIEVERS = ("dense", "bm25", "hybrid")
FUSION_METHODS = ("rrf", "combsum", "combmnz")
NORMS = ("minmax", "zscore", "rank")
MEASURES = ("ndcg_cut_10", "map", "recall_100", "recall_1000")


def register(sub: Any) -> None:
    """Add `index build`, `search` and `run` to the top-level parser."""
    index = sub.add_parser("index", help="build retrieval indexes")
    actions = index.add_subparsers(dest="index_command", required=True)
    p = actions.add_parser("build", help="index a dataset's corpus (dense, bm25 or multivector)")
    _dataset_args(p, split=False, required=False)
    p.add_argument("--kind", choices=KINDS, required=True, help="index type")
    p.add_argument("--out", required=True, type=Path, help="index directory (replaced atomically)")
    _dense_args(p)
    _bm25_args(p)
    _shard_args(p)
    add_ray_argument(p)
    p.set_defaults(func=_index_build)

    p = sub.add_parser("search", help="search a built index with a dataset's queries")
    p.add_argument(
        "--index", required=True, type=Path, help="directory from `rankloop index build`"
    )
    _dataset_args(p)
    p.add_argument("--k", type=int, default=1000, help="hits per query (default 1000)")
    p.add_argument("--out", required=True, type=Path, help="TREC run file to write")
    p.add_argument("--tag", help="run tag in the TREC file (default: the retriever's name)")
    _bm25_args(p, stored_defaults=True)
    _search_args(p)
    p.set_defaults(func=_search)

    p = sub.add_parser(
        "run", help="build what is needed, search the test queries and print the evaluation table"
    )
    _dataset_args(p)
    p.add_argument(
        "--retriever",
        choices=RETRIEVERS,
        default="dense",
        help="dense (default), bm25, or hybrid (both, fused; the table shows all three)",
    )
    p.add_argument("--k", type=int, default=1000, help="hits per query (default 1000)")
    p.add_argument("--out-dir", type=Path, help="write runs, metrics.json and results.md here")
    _dense_args(p)
    _bm25_args(p)
    p.add_argument("--fusion", choices=FUSION_METHODS, default="rrf", help="hybrid: fusion method")
    p.add_argument("--norm", choices=NORMS, help="hybrid: score normalisation before fusing")
    p.add_argument("--rrf-k", type=int, default=60, help="hybrid: RRF constant (default 60)")
    p.add_argument("--depth", type=int, default=1000, help="hybrid: hits fused per retriever")
    _search_args(p)
    p.set_defaults(func=_run)


# -- argument groups -----------------------------------------------------------------------------
def _dataset_args(p: argparse.ArgumentParser, split: bool = True, required: bool = True) -> None:
    p.add_argument(
        "--dataset", required=required,
        help="registry name (scifact, nfcorpus, msmarco-passage, ...) or a BEIR folder",
    )  # fmt: skip
    if split:
        p.add_argument("--split", default="test", help="qrels split whose queries to use")


def _dense_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dense / multivector")
    g.add_argument("--model", help="sentence-transformers model (default all-MiniLM-L6-v2)")
    g.add_argument("--max-length", type=int, help="token limit per text (default: the model's)")
    g.add_argument("--batch-size", type=int, default=64, help="encoding batch size")
    g.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    g.add_argument("--backend", choices=(*BACKENDS, "auto"), default="torch",
                   help="encoder backend (default torch; auto: the fastest within 0.005 nDCG@10 "
                   "on this CPU)")  # fmt: skip
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer (torch backends): 8-18%% faster encoding "
                   "after a 10-60 s compilation, worth it from some thousands of documents")  # fmt: skip
    g.add_argument("--factory", default="Flat", help="FAISS index factory string (default Flat)")
    g.add_argument("--metric", choices=("ip", "cosine", "l2"), default="ip")


def _shard_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sharded dense build (collections that do not fit in memory)")
    g.add_argument("--collection", type=Path,
                   help="an id<TAB>text file (MS MARCO collection.tsv) to index instead of --dataset")
    g.add_argument("--shards", type=Path,
                   help="encode into resumable shards here (default with --collection: OUT.shards) "
                   "and build the index from them in bounded memory")
    g.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help=f"documents per shard (default {DEFAULT_SHARD_SIZE:,})")
    g.add_argument("--train-size", type=int,
                   help="IVF/PQ training sample (default: 256 per centroid, at least 65,536)")
    g.add_argument("--random-state", type=int, default=0, help="seed of the training sample")  # fmt: skip


def _bm25_args(p: argparse.ArgumentParser, stored_defaults: bool = False) -> None:
    g = p.add_argument_group("bm25")
    if stored_defaults:  # `search`: the index remembers the k1/b it was built for
        g.add_argument("--k1", type=float, help="BM25 k1 (default: the value stored at build)")
        g.add_argument("--b", type=float, help="BM25 b (default: the value stored at build)")
    else:
        g.add_argument("--k1", type=float, default=0.9, help="BM25 k1 (default 0.9)")
        g.add_argument("--b", type=float, default=0.4, help="BM25 b (default 0.4)")
    g.add_argument("--threads", type=int, help="Lucene threads (default: all usable cores)")


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--remove-query-id",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="drop a hit whose doc id equals the query id (default: the data set's convention "
        "in the registry, on for ArguAna and Quora)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="FAISS query-time parameter, e.g. nprobe=32 or efSearch=128 (repeatable)",
    )


# -- helpers -------------------------------------------------------------------------------------
def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _search_params(pairs: list[str]) -> dict[str, Any]:
    """`["nprobe=32", "efSearch=64"]` -> {"nprobe": 32, "efSearch": 64}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                raise ConfigError(f"--param {key}: expected a number, got {value!r}") from None
    return out


def _check_k(k: int) -> int:
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    return k


def _encoder(args: argparse.Namespace):  # -> Encoder
    from rankloop.embed.encoders import Encoder

    return Encoder(
        args.model,
        device=args.device,
        max_length=args.max_length,
        batch_size=args.batch_size,
        backend=args.backend,
        compile=args.compile,
    )


def _build_dense(corpus, args: argparse.Namespace):  # -> DenseRetriever
    from rankloop.retrieval.dense import DenseRetriever

    encoder = _encoder(args)
    cached = encoder.cache_path(corpus).is_file()
    _say(
        f"dense: {encoder.name}, {len(corpus):,} docs "
        + ("(embeddings cached)" if cached else "(encoding; cached for next time)")
    )
    return DenseRetriever.build(corpus, encoder, factory=args.factory, metric=args.metric)


def _search_kwargs(args: argparse.Namespace, kind: str, strict: bool = True) -> dict[str, Any]:
    """Keyword arguments for `<kind>` retrievers' `search`; `strict` rejects unusable --param."""
    remove = args.remove_query_id
    if remove is None:
        from rankloop.data.registry import remove_query_id

        remove = remove_query_id(args.dataset) if getattr(args, "dataset", None) else False
    kw: dict[str, Any] = {"remove_query_id": remove}
    params = _search_params(args.param)
    if kind == "bm25":
        if params and strict:
            raise ConfigError("--param applies to dense and multivector indexes, not bm25")
        kw["threads"] = args.threads
    else:
        kw.update(params)
    return kw


# -- handlers ------------------------------------------------------------------------------------
def _build_sharded(args: argparse.Namespace) -> int:
    """Dense index of a collection through resumable embedding shards, in bounded memory."""
    from rankloop.embed.shards import CorpusSource, TsvCollection, encode_shards
    from rankloop.retrieval.dense import DenseRetriever

    if args.kind != "dense":
        raise ConfigError("--collection and --shards build dense indexes only (--kind dense)")
    if args.shard_size < 1:
        raise ConfigError(f"--shard-size must be >= 1, got {args.shard_size}")
    start = time.perf_counter()
    if args.collection is not None:
        source: Any = TsvCollection(args.collection)
    elif registry.info(args.dataset).kind == "msmarco":  # 8.8M passages: never in memory
        source = TsvCollection(registry.fetch(args.dataset) / "collection.tsv", args.dataset)
    else:
        source = CorpusSource(registry.load(args.dataset, split=None).corpus, args.dataset)
    folder = args.shards or args.out.with_name(args.out.name + ".shards")
    _say(f"dense: {len(source):,} docs of {source.name} -> shards in {folder}")
    shards = encode_shards(source, _encoder(args), folder, shard_size=args.shard_size)
    DenseRetriever.build_from_shards(
        shards,
        args.out,
        factory=args.factory,
        metric=args.metric,
        train_size=args.train_size,
        random_state=args.random_state,
        corpus=source.name,
    )
    _say(f"dense index of {len(source):,} docs -> {args.out} ({time.perf_counter() - start:.1f}s)")
    return 0


def _index_build(args: argparse.Namespace) -> int:
    if args.collection is not None or args.shards is not None:
        if args.collection is not None and args.dataset is not None:
            raise ConfigError("give --dataset or --collection, not both")
        return _build_sharded(args)
    if args.dataset is None:
        raise ConfigError("--dataset is required (or --collection FILE.tsv)")
    ds = registry.load(args.dataset, split=None)
    corpus = ds.corpus
    start = time.perf_counter()
    if args.kind == "bm25":
        from rankloop.retrieval.sparse import BM25Retriever

        BM25Retriever.build(corpus, args.out, k1=args.k1, b=args.b, threads=args.threads)
    elif args.kind == "dense":
        retriever = _build_dense(corpus, args)
        retriever.save(
            args.out,
            corpus=ds.name,
            factory=args.factory,
            metric=args.metric,
            n_docs=len(corpus),
            corpus_checksum=corpus.checksum(),
        )
    else:
        from rankloop.retrieval.multivector import MultiVectorRetriever

        _say(f"multivector: encoding the tokens of {len(corpus):,} docs (not cached)")
        retriever = MultiVectorRetriever.build(corpus, _encoder(args), factory=args.factory)
        retriever.save(
            args.out,
            corpus=ds.name,
            factory=args.factory,
            n_docs=len(corpus),
            corpus_checksum=corpus.checksum(),
        )
    _say(
        f"{args.kind} index of {len(corpus):,} docs -> {args.out} "
        f"({time.perf_counter() - start:.1f}s)"
    )
    return 0


def _search(args: argparse.Namespace) -> int:
    from rankloop.data.trec import write_run
    from rankloop.retrieval.base import read_meta
    from rankloop.retrieval.open import open_index

    k = _check_k(args.k)
    meta = read_meta(args.index)
    ds = registry.load(args.dataset, split=args.split)
    if meta.get("corpus_checksum") not in (None, ds.corpus.checksum()):
        _say(f"warning: {args.index} was built from a different corpus than {ds.name}")
    kw: dict[str, Any] = {}
    if meta["kind"] == "bm25":
        kw = {k_: v for k_, v in (("k1", args.k1), ("b", args.b)) if v is not None}
    retriever = open_index(args.index, **kw)
    _say(f"searching {len(ds.queries):,} {ds.name} queries in a {meta['kind']} index (k={k})")
    start = time.perf_counter()
    run = retriever.search(ds.queries, k, **_search_kwargs(args, meta["kind"]))
    write_run(run, args.out, tag=args.tag)
    _say(f"wrote {args.out} ({len(run):,} queries, {time.perf_counter() - start:.1f}s)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from rankloop.data.trec import write_run

    k = _check_k(args.k)
    if args.fusion == "rrf" and args.norm is not None:
        raise ConfigError("--norm applies to combsum/combmnz; RRF fuses ranks")
    dense_kw = _search_kwargs(args, "dense")
    bm25_kw = _search_kwargs(args, "bm25", strict=args.retriever == "bm25")
    ds = registry.load(args.dataset, split=args.split)
    _say(f"{ds.name}: {len(ds.corpus):,} docs, {len(ds.queries):,} {args.split} queries")
    runs = []
    timings: dict[str, float] = {}
    dense = sparse = None
    if args.retriever in ("dense", "hybrid"):
        t = time.perf_counter()
        dense = _build_dense(ds.corpus, args)
        timings["dense_index_s"] = time.perf_counter() - t
    if args.retriever in ("bm25", "hybrid"):
        t = time.perf_counter()
        from rankloop.retrieval.sparse import BM25Retriever

        sparse = BM25Retriever.cached(
            ds.corpus, k1=args.k1, b=args.b, threads=args.threads, verbose=True
        )
        timings["bm25_index_s"] = time.perf_counter() - t
    depth = max(args.depth, k)
    if dense is not None:
        t = time.perf_counter()
        _say(f"dense: searching {len(ds.queries):,} queries")
        runs.append(dense.search(ds.queries, depth, **dense_kw))
        timings["dense_search_s"] = time.perf_counter() - t
    if sparse is not None:
        t = time.perf_counter()
        _say(f"BM25: searching {len(ds.queries):,} queries")
        runs.append(sparse.search(ds.queries, depth, **bm25_kw))
        timings["bm25_search_s"] = time.perf_counter() - t
    if args.retriever == "hybrid":
        from rankloop.retrieval.hybrid import HybridRetriever

        hybrid = HybridRetriever(
            dense, sparse, method=args.fusion, norm=args.norm, rrf_k=args.rrf_k, depth=depth
        )
        runs.append(hybrid.fuse(runs, k))
    runs = [r.top_k(k) for r in runs]
    table = _evaluate(runs, ds.qrels, baseline=1 if args.retriever == "hybrid" else 0)
    summary = _render(table, k, f"{ds.name} ({args.split} split)")
    print("\n" + summary)
    if args.out_dir is not None:
        out = args.out_dir
        out.mkdir(parents=True, exist_ok=True)
        for r in runs:
            write_run(r, out / f"{r.name.replace(':', '_')}.trec")
        detail = "\n" + table.to_markdown() if len(runs) > 1 else ""  # deltas and p-values
        (out / "results.md").write_text(summary + detail, encoding="utf-8")
        config = {
            k_: (str(v) if isinstance(v, Path) else v)
            for k_, v in vars(args).items()
            if k_ != "func"
        }
        payload = {"config": config, "timings_s": timings, "table": json.loads(table.to_json())}
        (out / "metrics.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
        _say(f"wrote runs, results.md and metrics.json to {out}")
    return 0


def _evaluate(runs: list, qrels, baseline: int):  # -> rankloop.eval.compare.ComparisonTable
    """The measures over every judged query (trec_eval -c), tested against `runs[baseline]`."""
    from rankloop.eval import compare

    return compare(runs, qrels, list(MEASURES), baseline=baseline, complete=True)


def _render(table, k: int, title: str) -> str:
    """A compact Markdown table of means (MAP is over the top `k`), † where significant."""
    labels = {
        "ndcg_cut_10": "nDCG@10",
        "map": f"MAP@{k}",
        "recall_100": "R@100",
        "recall_1000": "R@1000",
    }
    head = ["system", *(labels[m] for m in table.measures)]
    lines = [
        f"{title}: {len(table.query_ids)} queries",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for s in table.systems:
        name = f"{s} (baseline)" if s == table.baseline and len(table.systems) > 1 else s
        cells = [name] + [
            f"{table.mean[s][m]:.4f}" + ("†" if table.significant[s][m] else "")
            for m in table.measures
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(table.systems) > 1:
        lines += ["", f"† p < {table.alpha:g} vs {table.baseline} (paired t-test)"]
    return "\n".join(lines) + "\n"
