"""Encoding speed of every `Encoder` backend on BEIR SciFact and NFCorpus, its agreement with
torch float32, and the backend `Encoder(backend="auto")` should take on this machine.

For each dataset and backend: documents per second on a fixed sample (the first `--sample`
documents, 1,000 by default; the whole corpus too with `--full`), after a warm-up that loads
the model and exports it where needed (timed apart as `setup_s`); the minimum and mean cosine of
its document vectors to torch float32's; and, with `--ndcg` (every backend) or `--ndcg BACKEND
...` (those and torch), nDCG@10 of exact dense retrieval on the test queries over the FULL
corpus with that backend's document and query vectors (each backend's corpus vectors are cached
by `Encoder.encode_corpus`, so a rerun costs only the queries). Threads = the cores this process may use (`--threads`): torch's, and through it ONNX
Runtime's and OpenVINO's. The CPU's model name and matrix features are recorded.

With `--ndcg`, the fastest backend (mean speed-up over torch float32 across the datasets) whose
nDCG@10 was measured and is at most `MAX_NDCG_LOSS` below torch float32's on every dataset is
written to this CPU's decision file, which `backend="auto"` then reads; without `--ndcg` the
loss bound is unchecked and no decision file is written. `--compile` adds rows for the torch
backends with `Encoder(compile=True)` (never chosen by `auto`: it costs a compilation per
process). Writes benchmarks/results/encode_speed.json.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/encode_speed.py [--ndcg [BACKEND ...]]
        [--full] [--datasets scifact nfcorpus] [--backends torch onnx-int8 ...] [--sample 1000]
        [--compile [torch torch-bf16]]
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

from rankloop.data import load
from rankloop.data.beir import BeirDataset
from rankloop.data.types import Run
from rankloop.embed.encoders import (
    BACKENDS,
    MAX_NDCG_LOSS,
    Encoder,
    backend_available,
    read_cpu_info,
    write_backend_decision,
)
from rankloop.eval import evaluate

MATRIX_FLAGS = ("avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "avx512_bf16")
DEPTH = 100  # retrieved per query for nDCG@10 (only the top 10 count)
WARMUP = 16
COMPILED = "+compile"  # a row of a backend with Encoder(compile=True)


def timed_encode(enc: Encoder, texts: list[str]) -> tuple[np.ndarray, float]:
    """(vectors, seconds) of `encode_docs(texts)` on a loaded, warmed-up encoder."""
    start = time.perf_counter()
    vectors = enc.encode_docs(texts)
    return vectors, time.perf_counter() - start


def ndcg_at_10(enc: Encoder, data: BeirDataset, docs: np.ndarray | None) -> float:
    """nDCG@10 of exact dense retrieval over the full corpus with `enc`'s vectors."""
    queries = data.queries.subset([q for q in data.queries.ids if q in data.qrels])
    doc_vecs = enc.encode_corpus(data.corpus) if docs is None else docs
    scores = enc.encode_queries(queries.texts) @ np.asarray(doc_vecs).T
    top = np.argpartition(-scores, DEPTH, axis=1)[:, :DEPTH]
    ids = data.corpus.ids
    run = Run({q: {ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(queries.ids)})
    return float(evaluate(data.qrels, run, "ndcg_cut_10")["ndcg_cut_10"])


def measure(variant: str, data: BeirDataset, args: argparse.Namespace,
            ref: np.ndarray | None) -> tuple[dict[str, Any], np.ndarray]:  # fmt: skip
    """One backend ("torch-bf16+compile": compiled) on one dataset: speed on the sample (and
    full corpus), cosines, nDCG@10 (not for compiled rows: they share the eager cache key)."""
    texts = data.corpus.doc_texts()
    sample = texts[: args.sample]
    backend, compiled = variant.removesuffix(COMPILED), variant.endswith(COMPILED)
    start = time.perf_counter()
    enc = Encoder(backend=backend, batch_size=args.batch_size, show_progress=False,
                  compile=compiled)  # fmt: skip
    enc.encode_docs(sample[:WARMUP])  # load, export where needed, warm up
    row: dict[str, Any] = {"fingerprint": enc.fingerprint, "setup_s": time.perf_counter() - start}
    vectors, seconds = timed_encode(enc, sample)
    row.update(n_docs=len(sample), seconds=seconds, docs_per_s=len(sample) / seconds)
    cos = (vectors * (vectors if ref is None else ref)).sum(axis=1)
    row.update(cos_min=float(cos.min()), cos_mean=float(cos.mean()))
    full = None
    if args.full:
        full, seconds = timed_encode(enc, texts)
        row["full"] = {"n_docs": len(texts), "seconds": seconds, "docs_per_s": len(texts) / seconds}
    measured = variant in args.ndcg_for and not compiled
    row["ndcg_cut_10"] = ndcg_at_10(enc, data, full) if measured else None
    del enc
    gc.collect()
    return row, vectors


def decide(results: dict[str, dict[str, dict[str, Any]]]) -> tuple[str, str, dict[str, Any]]:
    """(backend, why, per-backend evidence): the fastest within the loss bound on every dataset."""
    evidence: dict[str, Any] = {}
    for b in [v for v in next(iter(results.values())) if not v.endswith(COMPILED)]:
        rows = {ds: r[b] for ds, r in results.items()}
        losses = {ds: None if row["ndcg_cut_10"] is None
                  else results[ds]["torch"]["ndcg_cut_10"] - row["ndcg_cut_10"]
                  for ds, row in rows.items()}  # fmt: skip
        known = [v for v in losses.values() if v is not None]
        evidence[b] = {
            "speedup": float(np.mean([row["speedup"] for row in rows.values()])),
            "ndcg_loss": losses,
            "within_bound": len(known) == len(rows) and max(known) <= MAX_NDCG_LOSS,
        }
    ok = [b for b, e in evidence.items() if e["within_bound"]]
    best = max(ok, key=lambda b: evidence[b]["speedup"])
    worst = max(evidence[best]["ndcg_loss"].values())
    why = (f"fastest within {MAX_NDCG_LOSS} nDCG@10 of torch fp32 on {', '.join(results)}: "
           f"{evidence[best]['speedup']:.2f}x torch fp32, nDCG@10 loss at most {worst:+.4f}")  # fmt: skip
    return best, why, evidence


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--sample", type=int, default=1000, help="documents timed per dataset")
    ap.add_argument("--full", action="store_true", help="also time the whole corpus")
    ap.add_argument("--ndcg", nargs="*", choices=BACKENDS, metavar="BACKEND",
                    help="nDCG@10 on the full corpus for these backends (none named: all) and "
                         "torch; encodes each corpus once per backend")  # fmt: skip
    ap.add_argument("--compile", nargs="*", choices=("torch", "torch-bf16"), metavar="BACKEND",
                    help="also time these torch backends (none named: both) with "
                         "Encoder(compile=True); setup_s includes the compilation")  # fmt: skip
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)  # ONNX Runtime and OpenVINO take torch's thread count
    backends = ["torch"] + [b for b in args.backends if b != "torch"]  # torch: the reference
    skipped = {b: "packages missing: pip install 'rankloop[fast]'"
               for b in backends if not backend_available(b)}  # fmt: skip
    backends = [b for b in backends if b not in skipped]
    args.ndcg_for = set() if args.ndcg is None else {"torch", *(args.ndcg or backends)}
    if args.compile is not None:
        backends += [b + COMPILED for b in args.compile or ("torch", "torch-bf16")]
    cpu = read_cpu_info()
    cpu_record = {"model": cpu.model, "features": cpu.features,
                  "matrix_flags": {f: f in cpu.flags for f in MATRIX_FLAGS}}  # fmt: skip
    print(
        f"CPU: {cpu.model}; features: {' '.join(cpu.features) or 'none'}; threads: {args.threads}"
    )
    for b, why in skipped.items():
        print(f"skipping {b}: {why}")

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for ds in args.datasets:
        data = load(ds, split="test")
        results[ds] = {}
        ref = None
        for b in backends:
            row, vectors = measure(b, data, args, ref)
            ref = vectors if ref is None else ref
            row["speedup"] = row["docs_per_s"] / results[ds].get("torch", row)["docs_per_s"]
            results[ds][b] = row
            print(f"  {ds} {b}: {row['docs_per_s']:.1f} docs/s", flush=True)

    print(f"\n| dataset | backend | docs/s (first {args.sample}) | x torch fp32 | min cos | "
          "mean cos | nDCG@10 | loss |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for ds, rows in results.items():
        for b, r in rows.items():
            nd = r["ndcg_cut_10"]
            ndcg = "not measured" if nd is None else f"{nd:.4f}"
            loss = "" if nd is None else f"{rows['torch']['ndcg_cut_10'] - nd:+.4f}"
            print(f"| {ds} | {b} | {r['docs_per_s']:.1f} | {r['speedup']:.2f} | "
                  f"{r['cos_min']:.4f} | {r['cos_mean']:.5f} | {ndcg} | {loss} |")  # fmt: skip

    decision = None
    if args.ndcg_for:
        best, why, evidence = decide(results)
        path = write_backend_decision(best, why, {"datasets": list(results), "sample": args.sample,
                                                  "threads": args.threads, "evidence": evidence})  # fmt: skip
        decision = {"backend": best, "reason": why, "path": str(path), "evidence": evidence}
        print(f"\nauto on this CPU: {best} ({why}); wrote {path}")
    else:
        print("\nnDCG@10 not measured (--ndcg): the loss bound is unchecked, no decision file "
              "written; backend='auto' keeps its CPU-flag rule")  # fmt: skip

    versions = {}
    for pkg in ("torch", "sentence-transformers", "onnx", "onnxruntime", "openvino"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    payload = {"sample": args.sample, "full": args.full, "ndcg_measured": sorted(args.ndcg_for),
               "max_ndcg_loss": MAX_NDCG_LOSS, "batch_size": args.batch_size,
               "threads": args.threads, "cpu": cpu_record, "versions": versions,
               "skipped": skipped, "results": results, "decision": decision}  # fmt: skip
    print(f"wrote {write_result('encode_speed', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
