"""Cross-encoder re-ranking on BEIR SciFact and NFCorpus: a MiniLM cross-encoder fine-tuned on
each data set's train qrels re-ranks BM25 and dense (MiniLM) top-100 test runs.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/cross_encoder.py \
        [--datasets scifact nfcorpus] [--max-train-queries 100] [--epochs 1] [--depth 20]

Training (`train_cross_encoder`, sentence-transformers' `CrossEncoderTrainer`): from the bundled
all-MiniLM-L6-v2 BERT encoder with a fresh one-logit head, binary cross-entropy, per training
query one relevant document and `--negatives` hard negatives drawn from the top 30 of the
`--negatives-from` first stage that are not judged relevant; at most `--max-train-queries`
training queries (a seeded sample). Models are cached under $RANKLOOP_CACHE/models by settings.

Evaluation: BM25 (k1=0.9, b=0.4) and dense top-100 runs of the test queries, each with and
without `cross_encoder(depth=...)`, through `rankloop.pipeline.Experiment`: nDCG@10, MAP and
R@100 with paired t-tests against the run it re-ranks. Only the top `depth` are re-scored (the
rest keep their order), so R@100 cannot change. The defaults are sized to finish in about 20
minutes on a shared 2-core CPU (training runs at 1-2 pairs per second there, scoring at 10-30):
a 50-step fine-tune, depth 20, 128 tokens per pair and a seeded sample of 100 test queries.
That fine-tune is far too short for the new head to learn (the training loss stays at the
level of a constant prediction), so on such a machine the numbers measure the pipeline, not
what a cross-encoder can do; on a GPU, raise them (e.g. `--max-train-queries 800 --epochs 2
--depth 100 --max-length 512 --max-test-queries 0`, 0 meaning every query).
Writes benchmarks/results/cross_encoder.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

from rankloop._runtime import cache_dir
from rankloop.data import load
from rankloop.data.types import Qrels, Queries
from rankloop.pipeline import Experiment
from rankloop.rerank.cross_encoder import (
    CrossEncoderStage,
    read_training_record,
    train_cross_encoder,
)
from rankloop.retrieval.context import Context
from rankloop.retrieval.stages import BM25, Dense

MEASURES = ["ndcg_cut_10", "map", "recall_100"]
CANDIDATES = 100  # first-stage depth: BM25 / dense top-100


def _sample(queries: Queries, qrels: Qrels, limit: int, seed: int) -> Queries:
    """The judged queries, or a seeded sample of `limit` of them (original order kept)."""
    ids = [q for q in queries.ids if qrels.relevant(q)]
    if 0 < limit < len(ids):
        pick = np.random.default_rng(seed).choice(len(ids), limit, replace=False)
        ids = [ids[i] for i in sorted(pick)]
    return queries.subset(ids)


def train(dataset: str, args: argparse.Namespace) -> tuple[Path, dict]:
    """Fine-tune (or reuse the cached model with the same settings) on `dataset`'s train split."""
    settings = {"dataset": dataset, "max_train_queries": args.max_train_queries,
                "epochs": args.epochs, "negatives": args.negatives,
                "negatives_from": args.negatives_from, "batch_size": args.batch_size,
                "lr": args.lr, "max_length": args.max_length, "seed": args.seed}  # fmt: skip
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_dir("models", f"cross-encoder-{dataset}-{key}")
    if (out / "config.json").is_file() and not args.retrain:
        return out, {"reused": True, **(read_training_record(out) or {})}
    data = load(dataset, split="train")
    queries = _sample(data.queries, data.qrels, args.max_train_queries, args.seed)
    ctx = Context(data.corpus, dataset=dataset, verbose=False)
    first = (Dense(ctx, k=CANDIDATES) if args.negatives_from == "dense" else BM25(ctx, k=CANDIDATES))
    t0 = time.perf_counter()
    run = first(queries)
    train_cross_encoder(data.corpus, queries, data.qrels, run=run, out=out, negatives=args.negatives,
                        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        max_length=args.max_length, random_state=args.seed)  # fmt: skip
    seconds = time.perf_counter() - t0
    ctx.close()
    return out, {"reused": False, "seconds": seconds, **(read_training_record(out) or {})}


def run_dataset(dataset: str, args: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    model, training = train(dataset, args)
    data = load(dataset, split="test")
    queries = _sample(data.queries, data.qrels, args.max_test_queries, args.seed)
    qrels = data.qrels.subset(queries.ids)
    ctx = Context(data.corpus, dataset=dataset, verbose=False)
    ce = CrossEncoderStage(ctx, model=str(model), depth=args.depth, max_length=args.max_length,
                           batch_size=args.infer_batch_size, k=CANDIDATES)  # fmt: skip
    bm25, dense = BM25(ctx, k=CANDIDATES), Dense(ctx, k=CANDIDATES)
    tables = {}
    for name, first in (("bm25", bm25), ("dense", dense)):
        tables[name] = Experiment({name: first, f"{name} >> ce": first >> ce}, queries, qrels,
                                  MEASURES, baseline=name)  # fmt: skip
    pairs = len(ce._scorer().scores)
    ctx.close()
    return {"tables": tables, "training": training, "model": str(model),
            "test_queries": len(queries), "pairs_scored": pairs,
            "seconds": time.perf_counter() - t_start}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    ap.add_argument("--max-train-queries", type=int, default=100, help="0: every train query")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--negatives", type=int, default=3, help="hard negatives per query")
    ap.add_argument("--negatives-from", choices=["dense", "bm25"], default="dense")
    ap.add_argument("--batch-size", type=int, default=8, help="training pairs per step")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--max-length", type=int, default=128, help="tokens per (query, doc) pair")
    ap.add_argument("--depth", type=int, default=20, help="re-ranked documents per query")
    ap.add_argument("--max-test-queries", type=int, default=100, help="0: every test query")
    ap.add_argument("--infer-batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retrain", action="store_true", help="ignore a cached model")
    args = ap.parse_args(argv)
    payload: dict = {"settings": vars(args), "candidates": CANDIDATES, "measures": MEASURES,
                     "results": {}}  # fmt: skip
    for ds in args.datasets:
        r = run_dataset(ds, args)
        tr = r["training"]
        print(f"\n## {ds}\n\ncross-encoder: MiniLM fine-tuned on {tr.get('queries')} train queries, "
              f"{tr.get('pairs')} pairs, {tr.get('steps')} steps, loss {tr.get('train_loss', 0):.3f}"
              + (" (cached model)" if tr.get("reused") else f", {tr.get('seconds', 0):.0f} s")
              + f"; re-ranking depth {args.depth} of the top {CANDIDATES}, {args.max_length} "
              f"tokens, {r['test_queries']} test queries, {r['pairs_scored']} pairs scored\n")  # fmt: skip
        for t in r["tables"].values():
            print(t.to_markdown())
        print(f"({r['seconds']:.0f} s in all)")
        payload["results"][ds] = {
            "tables": {k: t.rows() for k, t in r["tables"].items()},
            "pipeline_seconds": {k: t.seconds for k, t in r["tables"].items()},
            "training": tr,
            "test_queries": r["test_queries"],
            "pairs_scored": r["pairs_scored"],
            "seconds": r["seconds"],
        }
    path = write_result("cross_encoder", payload)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
