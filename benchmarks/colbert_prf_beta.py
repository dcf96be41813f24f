"""ColBERT-PRF's expansion weight β, chosen on train queries, on SciFact and NFCorpus.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/colbert_prf_beta.py [--datasets scifact nfcorpus]

The paper's default β = 1 lowers the MiniLM MaxSim first pass (see benchmarks/colbert_prf.py).
Is a smaller β better? Per data set: a seeded sample of train queries (with judgements) picks β
by nDCG@10 of the reranker over the MaxSim first pass; the test split then reports every β, the
selected one marked. The test numbers of the other βs are shown for reading, never for choosing.
Uses the cached token index (`MultiVectorRetriever.cached`). Writes
benchmarks/results/colbert_prf_beta.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

from rankloop.data import load
from rankloop.embed.encoders import Encoder
from rankloop.eval import compare, evaluate
from rankloop.prf.colbert_prf import ColBERTPRF
from rankloop.retrieval.multivector import MultiVectorRetriever

BETAS = [0.0, 0.05, 0.1, 0.25, 0.5, 1.0]
K = 1000
TRAIN_QUERIES = 400


def _judged(dataset: str, split: str, limit: int | None = None):
    data = load(dataset, split=split)
    ids = [q for q in data.queries.ids if q in data.qrels.data]
    if limit is not None and len(ids) > limit:
        keep = np.sort(np.random.default_rng(0).choice(len(ids), limit, replace=False))
        ids = [ids[i] for i in keep]
    return data, data.queries.subset(ids)


def _sweep(mv: MultiVectorRetriever, data, queries) -> dict[float, tuple[float, object]]:
    """nDCG@10 and run of the reranker at every β, over one MaxSim first pass."""
    first = mv.search(queries, K)
    out = {}
    for beta in BETAS:
        run = ColBERTPRF(mode="reranker", beta=beta).run(mv, queries, first, k=K)
        out[beta] = (evaluate(data.qrels, run, ["ndcg_cut_10"])["ndcg_cut_10"], run)
        print(f"  β={beta:g}: nDCG@10 {out[beta][0]:.4f}", flush=True)
    out["maxsim"] = (evaluate(data.qrels, first, ["ndcg_cut_10"])["ndcg_cut_10"], first)
    return out


def bench(dataset: str) -> dict:
    """β chosen on train queries, then every β on test (paired t against the MaxSim pass)."""
    test, test_q = _judged(dataset, "test")
    mv = MultiVectorRetriever.cached(test.corpus, Encoder())
    train, train_q = _judged(dataset, "train", TRAIN_QUERIES)
    t0 = time.perf_counter()
    print(f"{dataset} train ({len(train_q)} queries):", flush=True)
    on_train = _sweep(mv, train, train_q)
    chosen = max(BETAS, key=lambda b: on_train[b][0])
    print(f"{dataset} test ({len(test_q)} queries), β chosen on train = {chosen:g}:", flush=True)
    on_test = _sweep(mv, test, test_q)
    runs = {"maxsim": on_test["maxsim"][1]} | {
        f"colbert-prf β={b:g}": on_test[b][1].with_name(f"colbert-prf β={b:g}") for b in BETAS
    }
    table = compare(runs, test.qrels, ["ndcg_cut_10", "map", "recall_100"], baseline="maxsim")
    print(table.to_markdown())
    return {
        "train_queries": len(train_q),
        "test_queries": len(test_q),
        "train_ndcg_cut_10": {str(b): on_train[b][0] for b in [*BETAS, "maxsim"]},
        "chosen_beta": chosen,
        "test_ndcg_cut_10": {str(b): on_test[b][0] for b in [*BETAS, "maxsim"]},
        "test_table_vs_maxsim": table.rows(),
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    args = ap.parse_args(argv)
    results = {d: bench(d) for d in args.datasets}
    print("\n| data set | β chosen on train | MaxSim | ColBERT-PRF β=1 | ColBERT-PRF chosen β |")
    print("|---|---|---|---|---|")
    for d, r in results.items():
        t = r["test_ndcg_cut_10"]
        print(f"| {d} | {r['chosen_beta']:g} | {t['maxsim']:.4f} | {t['1.0']:.4f} | "
              f"{t[str(r['chosen_beta'])]:.4f} |")  # fmt: skip
    path = write_result("colbert_prf_beta", {"betas": BETAS, "k": K, "results": results})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
