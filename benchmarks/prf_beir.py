"""PRF on BEIR SciFact and NFCorpus: every rankloop method vs the no-PRF dense baseline, with
pyserini's dense vector PRF on the same index as the peer (numbers and latency).

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/prf_beir.py [--datasets scifact nfcorpus]

Per data set it runs `rankloop.experiments.prf` (the default pipelines, plus the LoL ablation
λ_cr = 0, a zero-shot LoL trained on the other data set, and, unless `--no-colbert`, the MaxSim
first pass over MiniLM token vectors with ColBERT-PRF re-ranking it), adds pyserini's
`DenseVectorAveragePrf` / `DenseVectorRocchioPrf` runs (per query, through `FaissSearcher` on a
copy of the same FAISS index), checks that rankloop's batched runs match them to 1e-4 nDCG@10,
and times the PRF stage per query for both, measured the same way: feedback search (top-k with
vectors) + reformulation + final k=1000 search, best of 3 passes, each library's output as its
API returns it (pyserini: hit objects; rankloop: score and row arrays). It also times rankloop's
stage when it reuses the first-pass rows (no feedback search), and both stages including the
conversion of their output into a {qid: {docid: score}} run, reported separately.
Rows named in `REFERENCE` (pyserini's PRF settings, BM25+RM3/Rocchio with
pyserini's parameters) are peer rows, not rankloop defaults. A separate table runs Counterfactual
Rocchio in the seen-query protocol (PBM η = 1 clicks through `rankloop.clicks`).
Writes benchmarks/results/prf_beir.json, benchmarks/results/prf_<dataset>_ndcg_vs_depth.png,
the runs and plots under results/prf/<dataset>/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

from rankloop.data.types import Run
from rankloop.eval import compare, evaluate
from rankloop.experiments.prf import (
    COLBERT_PIPELINES,
    DEFAULT_PIPELINES,
    REFERENCE,
    PRFConfig,
    run_prf,
    write_outputs,
)
from rankloop.prf.counterfactual import seen_query_runs
from rankloop.prf.rocchio import (
    Rocchio,
    VectorPRF,
    gather_feedback,
    run_from_rows,
)
from rankloop.retrieval import _java

MEASURES = ["ndcg_cut_10", "map", "recall_100", "recall_1000"]
K = 1000
# pyserini's vector PRF settings from the issue's table: name -> (rankloop reformulator, pyserini rule args)
PEER = {
    "avg-k3": (Rocchio.averaged(3), ("average", 3)),
    "rocchio-k5": (Rocchio(alpha=0.4, beta=0.6, fb_docs=5), ("rocchio", 5, 0.4, 0.6)),
    "rocchio-k3": (Rocchio(alpha=0.9, beta=0.1, fb_docs=3), ("rocchio", 3, 0.9, 0.1)),
}
ANCHORS = {"scifact": ("bm25", 0.6789), "nfcorpus": ("bm25+rm3", 0.3460)}
SWEEP = ("pyserini-ref:avg-k3", "pyserini-ref:rocchio-k5", "rocchio", "rocchio-bm25fb", "lol",
         "bm25+rm3")  # fmt: skip
CLICK_SESSIONS_PER_QUERY = 10
# The token-index methods are opt-in in the runner (a ~13 min index build per corpus) but are
# run here; ColBERT-PRF's default configuration counts among the defaults that must not lose.
# "maxsim" is a first pass without feedback, so it is neither a PRF method nor a pipeline.
NO_FEEDBACK = {"bm25", "maxsim"}
DEFAULTS = (set(DEFAULT_PIPELINES) - set(REFERENCE) - {"dense"}) | {"colbert-prf"}
OTHER = {"scifact": "nfcorpus", "nfcorpus": "scifact"}


def _pipelines(dataset: str, max_train: int, colbert: bool) -> dict[str, str]:
    lol = f"lol(lambda_cr=1.0, max_train_queries={max_train})"
    out: dict[str, str] = {}
    for name, expr in DEFAULT_PIPELINES.items():
        out[name] = lol if name == "lol" else expr
        if name == "lol":
            out["lol-l0"] = f"lol(lambda_cr=0.0, max_train_queries={max_train})"
            out[f"lol-zeroshot({OTHER[dataset]})"] = (
                f"lol(lambda_cr=1.0, train_dataset='{OTHER[dataset]}', max_train_queries={max_train})"
            )
    return out | (dict(COLBERT_PIPELINES) if colbert else {})


def _pyserini_peer(index, qvecs: np.ndarray, qids: list[str], threads: int, repeats: int = 3):
    """pyserini's per-query dense PRF on a copy of `index`: runs, PRF-stage seconds (its API
    calls: feedback search, `get_prf_q_emb`, final search) and seconds to turn hits into a run."""
    _java.lucene()  # pyserini.search.faiss imports Lucene: start the JVM the rankloop way
    from pyserini.search.faiss import DenseVectorAveragePrf, DenseVectorRocchioPrf, FaissSearcher

    runs, seconds, to_run = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="rankloop-pyserini-") as tmp:
        faiss.write_index(index.faiss_index, str(Path(tmp) / "index"))
        (Path(tmp) / "docid").write_text("\n".join(index.ids) + "\n", encoding="utf-8")
        searcher = FaissSearcher(tmp, None)
        for name, (_, spec) in PEER.items():
            if spec[0] == "average":
                rule, depth = DenseVectorAveragePrf(), spec[1]
            else:
                rule, depth = DenseVectorRocchioPrf(spec[2], spec[3], 0.0, spec[1], 0), spec[1]
            best = best_run = np.inf
            for _ in range(repeats):
                # Per query: the API calls are timed, then the hits become a dict outside that
                # interval, so no hit objects pile up (holding 300k of them makes Python's
                # garbage collector rescan them: 4x slower on SciFact, an artefact).
                api = conversion = 0.0
                data = {}
                for qid, q in zip(qids, qvecs):
                    t0 = time.perf_counter()
                    emb, cands = searcher.search(
                        q[None, :], k=depth, threads=threads, return_vector=True
                    )
                    new_q = rule.get_prf_q_emb(emb[0], cands)
                    hits = searcher.search(
                        np.asarray(new_q, np.float32)[None, :], k=K, threads=threads
                    )
                    t1 = time.perf_counter()
                    data[qid] = {h.docid: float(h.score) for h in hits}
                    conversion += time.perf_counter() - t1
                    api += t1 - t0
                best, best_run = min(best, api), min(best_run, conversion)
            seconds[name], to_run[name] = best, best_run
            runs[f"pyserini:{name}"] = Run(data, f"pyserini:{name}")
    faiss.omp_set_num_threads(threads)  # FaissSearcher.search set it process-wide
    return runs, seconds, to_run


def _rankloop_peer(index, qvecs: np.ndarray, qids: list[str], repeats: int = 3):
    """Batched PRF runs, PRF-stage seconds (feedback search included), the seconds when the
    first-pass rows are reused (gather + reformulate + final search only), and the seconds to
    turn the (scores, rows) arrays into a `Run`."""
    runs, seconds, reuse, to_run = {}, {}, {}, {}
    _, first_rows = index.search_rows(qvecs, K)  # the first pass, as the pipeline has it
    for name, (reform, _) in PEER.items():
        prf = VectorPRF(index, reform)
        best = best_reuse = best_run = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            scores, rows = prf.search_vectors(qvecs, K)
            best = min(best, time.perf_counter() - t0)
            t0 = time.perf_counter()
            fb = gather_feedback(index, first_rows[:, : prf.fb_reads])
            again = prf.search_vectors(qvecs, K, first_feedback=fb)
            best_reuse = min(best_reuse, time.perf_counter() - t0)
            if not np.array_equal(again[1], rows):
                raise RuntimeError(f"{name}: first-pass reuse changed the ranking")
            t0 = time.perf_counter()
            runs[name] = run_from_rows(index, qids, scores, rows, name)
            best_run = min(best_run, time.perf_counter() - t0)
        seconds[name], reuse[name], to_run[name] = best, best_reuse, best_run
    return runs, seconds, reuse, to_run


def run_dataset(dataset: str, max_train: int, threads: int, colbert: bool) -> dict:
    pipelines = _pipelines(dataset, max_train, colbert)
    config = PRFConfig(dataset=dataset, out=f"results/prf/{dataset}", pipelines=pipelines,
                       sweep=[n for n in pipelines if n in SWEEP])  # fmt: skip
    result = run_prf(config)
    # The peer: same index, same query vectors.
    from rankloop.data import load
    from rankloop.retrieval.context import Context

    data = load(dataset, split="test")
    ctx = Context(data.corpus, dataset=dataset, verbose=False)
    index, qvecs, qids = ctx.index, ctx.query_vectors(data.queries), data.queries.ids
    faiss.omp_set_num_threads(threads)
    ours, our_s, reuse_s, our_run_s = _rankloop_peer(index, qvecs, qids)
    theirs, their_s, their_run_s = _pyserini_peer(index, qvecs, qids, threads)
    qrels = data.qrels
    check = {}
    for name in PEER:
        a = evaluate(qrels, ours[name], ["ndcg_cut_10"])["ndcg_cut_10"]
        b = evaluate(qrels, theirs[f"pyserini:{name}"], ["ndcg_cut_10"])["ndcg_cut_10"]
        check[name] = {
            "rankloop_ndcg_cut_10": a,
            "pyserini_ndcg_cut_10": b,
            "abs_diff": abs(a - b),
            "within_1e-4": abs(a - b) <= 1e-4,
            "rankloop_ms_per_query": 1000 * our_s[name] / len(qids),
            "pyserini_ms_per_query": 1000 * their_s[name] / len(qids),
            "speedup": their_s[name] / our_s[name],
            "rankloop_reuse_first_pass_ms_per_query": 1000 * reuse_s[name] / len(qids),
            "speedup_reuse_first_pass": their_s[name] / reuse_s[name],
            "rankloop_with_run_ms_per_query": 1000 * (our_s[name] + our_run_s[name]) / len(qids),
            "pyserini_with_run_ms_per_query": 1000
            * (their_s[name] + their_run_s[name])
            / len(qids),
            "speedup_with_run": (their_s[name] + their_run_s[name])
            / (our_s[name] + our_run_s[name]),
        }
    runs = dict(result.runs) | theirs
    table = compare(runs, qrels, MEASURES, baseline="dense", test="t")
    result.table = table
    out = write_outputs(result, config.out)
    png = Path(__file__).resolve().parent / "results" / f"prf_{dataset}_ndcg_vs_depth.png"
    shutil.copyfile(out / "ndcg_vs_depth.png", png)
    clicks = seen_query_runs(
        index, data.queries, qvecs, result.runs["dense"], qrels,
        n_sessions=CLICK_SESSIONS_PER_QUERY * len(qids), eta=1.0, k=K, random_state=0,
    )  # fmt: skip
    click_table = compare(
        {"dense": result.runs["dense"]} | clicks, qrels, MEASURES, baseline="dense", test="t"
    )
    return {
        "table": table,
        "click_table": click_table,
        "check": check,
        "sweep": result.sweep,
        "timing": result.timing,
        "out": str(out),
    }


def _summary(dataset: str, r: dict) -> dict:
    t = r["table"]
    nd = "ndcg_cut_10"
    rank = [s for s in t.systems if s != "dense" and not s.startswith("pyserini:")]
    feedback = [s for s in rank if s not in NO_FEEDBACK]  # pipelines with feedback or fusion
    ours = [s for s in feedback if s not in REFERENCE]
    sig_better = [s for s in ours if t.significant[s][nd] and t.delta[s][nd] > 0]
    sig_worse = [s for s in rank if s in DEFAULTS and t.significant[s][nd] and t.delta[s][nd] < 0]
    prf_only = [s for s in ours if not s.startswith("hybrid")]
    best_ours = max(prf_only, key=lambda s: t.mean[s][nd])
    peers = [
        s
        for s in t.systems
        if (s.startswith("pyserini:") or s in REFERENCE) and s not in NO_FEEDBACK
    ]
    best_peer = max(peers, key=lambda s: t.mean[s][nd])
    best_pipe = max(feedback, key=lambda s: t.mean[s][nd])
    anchor_name, anchor = ANCHORS[dataset]
    return {
        "rankloop_significant_wins_ndcg_cut_10": sig_better,
        "default_configs_losing_significantly": sig_worse,
        "best_rankloop_prf": [best_ours, t.mean[best_ours][nd]],
        "best_pyserini_prf": [best_peer, t.mean[best_peer][nd]],
        "best_pipeline": [best_pipe, t.mean[best_pipe][nd]],
        "anchor": [anchor_name, anchor],
        "pipeline_margin": t.mean[best_pipe][nd] - anchor,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    ap.add_argument("--max-train-queries", type=int, default=800)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-colbert", action="store_true", help="skip MaxSim and ColBERT-PRF")
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    payload: dict = {"k": K, "measures": MEASURES, "results": {}}
    for ds in args.datasets:
        r = run_dataset(ds, args.max_train_queries, args.threads, not args.no_colbert)
        summary = _summary(ds, r)
        print(f"\n## {ds}\n")
        print(r["table"].to_markdown())
        print(
            f"\nReference (peer) rows: {', '.join(sorted(REFERENCE))} and every pyserini:* row.\n"
        )
        print(
            "| pyserini check | rankloop nDCG@10 | pyserini nDCG@10 | |Δ| | rankloop ms/q | pyserini ms/q | speed-up | rankloop ms/q, first pass reused | speed-up | ms/q incl. building the run (rankloop / pyserini) | speed-up |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, c in r["check"].items():
            print(f"| {name} | {c['rankloop_ndcg_cut_10']:.4f} | {c['pyserini_ndcg_cut_10']:.4f} | "
                  f"{c['abs_diff']:.1e} | {c['rankloop_ms_per_query']:.3f} | {c['pyserini_ms_per_query']:.3f} | {c['speedup']:.1f}× | "
                  f"{c['rankloop_reuse_first_pass_ms_per_query']:.3f} | {c['speedup_reuse_first_pass']:.1f}× | "
                  f"{c['rankloop_with_run_ms_per_query']:.3f} / {c['pyserini_with_run_ms_per_query']:.3f} | {c['speedup_with_run']:.1f}× |")  # fmt: skip
        print(
            f"\nCounterfactual Rocchio, seen-query protocol ({CLICK_SESSIONS_PER_QUERY} PBM sessions per query, η = 1):\n"
        )
        print(r["click_table"].to_markdown())
        print("\n" + "\n".join(f"- {k}: {v}" for k, v in summary.items()))
        payload["results"][ds] = {
            "table": r["table"].rows(),
            "corocchio_seen_query_table": r["click_table"].rows(),
            "reference_rows": sorted(REFERENCE),
            "pyserini_check": r["check"],
            "sweep_ndcg_cut_10": {
                m: {str(k): v for k, v in p.items()} for m, p in r["sweep"].items()
            },
            "timing_s": r["timing"],
            "summary": summary,
            "outputs": r["out"],
        }
    path = write_result("prf_beir", payload)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
