"""ColBERT-PRF on BEIR SciFact (and NFCorpus) with the offline MiniLM token encoder.

    RANKLOOP_DATA=/work/shared/data .venv/bin/python benchmarks/colbert_prf.py [--datasets scifact nfcorpus]

Per data set (test split): the `MultiVectorIndex` over the full corpus (MiniLM token vectors,
built once and cached under `$RANKLOOP_CACHE/indexes`, default ~/.cache/rankloop), then
  * dense: the single-vector MiniLM baseline (exact search),
  * maxsim: the MaxSim first pass (ANN token candidates + exact MaxSim),
  * colbert-prf ranker / reranker over the MaxSim first pass,
  * colbert-prf reranker over the dense first pass (feedback = dense top docs),
all compared with `rankloop.eval.compare` (paired t-test against dense), plus the PRF stage's
latency per query (query token encoding excluded). MiniLM's token vectors are not trained for
MaxSim, so this measures what ColBERT-PRF gives on an untrained late-interaction space.
Writes benchmarks/results/colbert_prf.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

from rankloop.data import load
from rankloop.embed.encoders import Encoder
from rankloop.eval import compare
from rankloop.prf.colbert_prf import ColBERTPRF
from rankloop.retrieval.dense import DenseRetriever
from rankloop.retrieval.multivector import MultiVectorRetriever

MEASURES = ["ndcg_cut_10", "map", "recall_100"]
K = 1000
CANDIDATES_PER_TOKEN = 100


def bench(dataset: str, factory: str) -> dict:
    """Every run on one data set: the comparison table, latencies and settings."""
    data = load(dataset, split="test")
    queries = data.queries.subset([q for q in data.queries.ids if q in data.qrels.data])
    t0 = time.perf_counter()
    mv = MultiVectorRetriever.cached(data.corpus, Encoder(), factory)
    t_index = time.perf_counter() - t0
    print(f"{dataset}: {mv.index!r} ready in {t_index:.0f}s", flush=True)

    dense = DenseRetriever.build(data.corpus, mv.encoder)
    runs = {"dense": dense.search(queries, K).with_name("dense")}
    t0 = time.perf_counter()
    runs["maxsim"] = mv.search(queries, K, candidates_per_token=CANDIDATES_PER_TOKEN)
    maxsim_s = time.perf_counter() - t0
    latency = {"maxsim_first_pass_ms_per_query": 1000 * maxsim_s / len(queries)}
    settings = [
        ("colbert-prf ranker", ColBERTPRF(mode="ranker"), "maxsim"),
        ("colbert-prf reranker", ColBERTPRF(mode="reranker"), "maxsim"),
        ("colbert-prf reranker (dense fp)", ColBERTPRF(mode="reranker"), "dense"),
    ]
    for name, prf, first in settings:
        prf.candidates_per_token = CANDIDATES_PER_TOKEN
        runs[name] = prf.run(mv, queries, runs[first], k=K).with_name(name)
        latency[f"{name} ms_per_query"] = 1000 * prf.timings_["prf_s"] / len(queries)
        print(f"  {name}: PRF stage {prf.timings_['prf_s']:.1f}s", flush=True)
    table = compare(runs, data.qrels, MEASURES, baseline="dense")
    print(f"\n### {dataset} (test, {len(queries)} queries)\n")
    print(table.to_markdown())
    print("\nPRF-stage latency per query (ms): "
          + ", ".join(f"{k} {v:.1f}" for k, v in latency.items()))  # fmt: skip
    return {
        "queries": len(queries),
        "index": {
            "factory": factory,
            "docs": mv.index.n_docs,
            "tokens": mv.index.n_tokens,
            "load_or_build_s": t_index,
        },
        "settings": {
            "fb_docs": 3,
            "n_clusters": 24,
            "fb_embs": 10,
            "beta": 1.0,
            "k_nearest": 10,
            "candidates_per_token": CANDIDATES_PER_TOKEN,
            "k": K,
        },
        "mean": table.mean,
        "delta": table.delta,
        "pvalue": table.pvalue,
        "latency_ms_per_query": latency,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["scifact"])
    ap.add_argument("--factory", default="Flat", help="FAISS factory of the token index")
    args = ap.parse_args(argv)
    results = {d: bench(d, args.factory) for d in args.datasets}
    path = write_result("colbert_prf", {"encoder": "sentence-transformers/all-MiniLM-L6-v2",
                                        "measures": MEASURES, "results": results})  # fmt: skip
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
