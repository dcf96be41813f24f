"""Reproduce published BEIR baselines with rankloop: BM25 flat and all-MiniLM-L6-v2 exact search.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/beir_baselines.py

Anchors (nDCG@10, test split, every judged query counted as trec_eval -c does):
- BM25 flat, Lucene default analyzer, title + " " + text, k1=0.9, b=0.4: pyserini BEIR 2CR
  (SciFact 0.6789, NFCorpus 0.3218; R@100/R@1000 from the same page are shown for context);
- all-MiniLM-L6-v2, exact inner-product search (FAISS Flat), model default max_seq_length
  (256): MTEB results (SciFact 0.6451, NFCorpus 0.3159).

Prints a Markdown table and writes benchmarks/results/beir_baselines.json. Corpus embeddings
come from the encoder's on-disk cache (a rerun encodes nothing), so encoding speed is measured
separately on a fixed random sample of documents and on all test queries.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

from rankloop.data import registry
from rankloop.embed.encoders import Encoder
from rankloop.eval import evaluate
from rankloop.retrieval.dense import DenseRetriever
from rankloop.retrieval.sparse import BM25Retriever

NAME = "beir_baselines"
DATASETS = ("scifact", "nfcorpus")
MEASURES = ["ndcg_cut_10", "map", "recall_100", "recall_1000"]
LABELS = {
    "ndcg_cut_10": "nDCG@10",
    "map": "MAP@1000",
    "recall_100": "R@100",
    "recall_1000": "R@1000",
}
TOLERANCE = 0.005
ANCHORS = {
    "bm25-flat": {
        "source": "pyserini BEIR 2CR (bm25-flat)",
        "scifact": {"ndcg_cut_10": 0.6789, "recall_100": 0.9253, "recall_1000": 0.9767},
        "nfcorpus": {"ndcg_cut_10": 0.3218, "recall_100": 0.2457, "recall_1000": 0.3704},
    },
    "minilm-flat": {
        "source": "MTEB results (all-MiniLM-L6-v2)",
        "scifact": {"ndcg_cut_10": 0.6451},
        "nfcorpus": {"ndcg_cut_10": 0.3159},
    },
}
K = 1000


def _metrics(qrels, run) -> dict[str, float]:
    return evaluate(qrels, run, MEASURES, complete=True)


def _bm25(ds, threads: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="rankloop-bm25-") as tmp:
        t0 = time.perf_counter()
        bm25 = BM25Retriever.build(ds.corpus, Path(tmp) / "index", k1=0.9, b=0.4, threads=threads)
        t1 = time.perf_counter()
        run = bm25.search(ds.queries, K, threads=threads)
        t2 = time.perf_counter()
        run_rq = bm25.search(ds.queries, K, threads=threads, remove_query_id=True)
        bm25.close()
    return {
        "metrics": _metrics(ds.qrels, run),
        "ndcg_cut_10_remove_query_id": _metrics(ds.qrels, run_rq)["ndcg_cut_10"],
        "queries_without_hits": sum(1 for q in run.data.values() if not q),
        "index_s": round(t1 - t0, 2),
        "search_queries_per_s": round(len(ds.queries) / (t2 - t1), 1),
        "settings": {
            "k1": 0.9,
            "b": 0.4,
            "contents": "title + ' ' + text",
            "analyzer": "Lucene default English (Porter, stopwords)",
        },
    }


def _minilm(ds, max_length: int | None, sample: int, seed: int) -> dict:
    encoder = Encoder(max_length=max_length, show_progress=True)
    cached = encoder.cache_path(ds.corpus).is_file()
    t0 = time.perf_counter()
    dense = DenseRetriever.build(ds.corpus, encoder, factory="Flat", metric="ip")
    t1 = time.perf_counter()
    run = dense.search(ds.queries, K)
    timing = dict(dense.last_timing)
    run_rq = dense.search(ds.queries, K, remove_query_id=True)
    # Encoding speed: a fixed random sample of documents and every test query, uncached.
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(ds.corpus), size=min(sample, len(ds.corpus)), replace=False)
    texts = ds.corpus.doc_texts()
    sample_texts = [texts[i] for i in rows]
    t2 = time.perf_counter()
    encoder.encode_docs(sample_texts)
    t3 = time.perf_counter()
    encoder.encode_queries(ds.queries.texts)
    t4 = time.perf_counter()
    out = {
        "metrics": _metrics(ds.qrels, run),
        "ndcg_cut_10_remove_query_id": _metrics(ds.qrels, run_rq)["ndcg_cut_10"],
        "encode_docs_per_s": round(len(rows) / (t3 - t2), 1),
        "encode_docs_sample": len(rows),
        "encode_queries_per_s": round(len(ds.queries) / (t4 - t3), 1),
        "search_queries_per_s": round(len(ds.queries) / timing["search_s"], 1),
        "settings": {
            "model": encoder.name,
            "fingerprint": encoder.fingerprint,
            "max_length": encoder.max_length,
            "factory": "Flat",
            "metric": "ip",
            "device": encoder.device,
            "batch_size": encoder.batch_size,
        },
    }
    if not cached:
        out["full_corpus_encode_docs_per_s"] = round(len(ds.corpus) / (t1 - t0), 1)
    return out


def _table(results: dict) -> str:
    head = [
        "dataset",
        "system",
        *LABELS.values(),
        "anchor nDCG@10",
        "delta",
        "ok",
        "encode docs/s",
        "encode queries/s",
        "search queries/s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for dataset, systems in results.items():
        for system, r in systems.items():
            m = r["metrics"]
            anchor = r["anchor"]["ndcg_cut_10"]
            delta = m["ndcg_cut_10"] - anchor
            speeds = [
                str(r.get(key, "-"))
                for key in ("encode_docs_per_s", "encode_queries_per_s", "search_queries_per_s")
            ]
            row = [
                dataset,
                system,
                *(f"{m[k]:.4f}" for k in LABELS),
                f"{anchor:.4f}",
                f"{delta:+.4f}",
                "yes" if abs(delta) <= TOLERANCE else "NO",
                *speeds,
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--max-length", type=int, help="MiniLM token limit (default: model's, 256)")
    ap.add_argument("--sample-docs", type=int, default=500, help="docs timed for docs/s")
    ap.add_argument("--threads", type=int, help="Lucene threads (default: all usable cores)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    for name in args.datasets:
        ds = registry.load(name, split="test")
        print(f"{name}: {len(ds.corpus):,} docs, {len(ds.queries):,} test queries", flush=True)
        bm25 = _bm25(ds, args.threads)
        minilm = _minilm(ds, args.max_length, args.sample_docs, args.seed)
        results[name] = {}
        for system, r in (("bm25-flat", bm25), ("minilm-flat", minilm)):
            r["anchor"] = {k: v for k, v in ANCHORS[system][name].items()}
            r["anchor_source"] = ANCHORS[system]["source"]
            r["delta_ndcg_cut_10"] = round(
                r["metrics"]["ndcg_cut_10"] - r["anchor"]["ndcg_cut_10"], 4
            )
            r["within_tolerance"] = abs(r["delta_ndcg_cut_10"]) <= TOLERANCE
            results[name][system] = r

    print()
    print(_table(results))
    ok = all(r["within_tolerance"] for s in results.values() for r in s.values())
    path = write_result(
        NAME,
        {
            "k": K,
            "tolerance": TOLERANCE,
            "all_within_tolerance": ok,
            "measures": LABELS,
            # The CPUs are shared with other jobs: the speeds above depend on this load.
            "load_average_1m": {"start": load_before[0], "end": os.getloadavg()[0]},
            "results": results,
        },
    )
    print(f"\nwrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
