"""kNN relevance feedback (few-shot re-ranking, Baumgartner et al. 2022) on BEIR SciFact and
NFCorpus test queries, in the seen-query protocol, against Counterfactual Rocchio.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/knn_feedback.py [--datasets scifact nfcorpus]

Per data set, the first pass is dense MiniLM retrieval (k = 1000); `knn_feedback` re-ranks its
top 100 (`depth`), the rest following unchanged, so R@100 can change only through the documents
it drops. Two tables:

1. Seen queries, full qrels (every test query): PBM η = 1 clicks (10 sessions per query on the
   dense top 10, drawn from the qrels; the very log `seen_query_runs` draws) give the known
   documents of `knn-clicks`; it is compared with the dense baseline and the three Rocchio rows
   of `rankloop.prf.counterfactual.seen_query_runs` (unbiased clicks, biased clicks with plain
   Rocchio, biased clicks with IPS-weighted CoRocchio). `knn-judged-all` knows every judged
   relevant document and keeps it (`exclude_known=False`): it copies the answers to the top, an
   oracle ceiling, not a method. `min_clicks=2` (known = clicked at least twice) is a variant
   picked after seeing that single clicks are mostly noise here (a grade-1 document is clicked
   with probability 0.16 when examined, a non-relevant one with 0.1), so it is not a tuned result.
2. Judged feedback, residual collection: per test query with at least two relevant documents,
   `--feedback-docs` of them (drawn with a seed) are known; they are removed from the qrels and
   from every run, and the rest are to be found. `knn-judged` (`exclude_known=True`) is
   compared with the dense run and with dense Rocchio from the same known documents
   (q + 0.5 · mean of their vectors, the `seen_query_runs` β), which searches the whole index
   again (kNN only re-orders the top 100). Weights 0.25 and 0.8 show the sensitivity to
   `weight`; the default 0.5 is the row to read.

Paired t-tests against `dense`; writes benchmarks/results/knn_feedback.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

from rankloop._runtime import check_random_state
from rankloop.clicks import PBM
from rankloop.clicks.simulate import sessions_from_run, simulate_log
from rankloop.data import load
from rankloop.data.types import Qrels, Run
from rankloop.eval import compare
from rankloop.prf.counterfactual import click_feedback, corocchio, seen_query_runs
from rankloop.prf.rocchio import run_from_rows
from rankloop.rerank.knn_feedback import KNNFeedback
from rankloop.retrieval.context import Context
from rankloop.retrieval.stages import Dense

MEASURES = ["ndcg_cut_10", "map", "recall_100"]
K = 1000
SESSIONS_PER_QUERY = 10
ETA = 1.0
BETA = 0.5  # seen_query_runs' Rocchio weight of the feedback mean


def _without(run: Run, drop: dict[str, set[str]], name: str) -> Run:
    """`run` with each query's `drop` docs removed (residual collection)."""
    return Run({q: {d: s for d, s in docs.items() if d not in drop.get(q, ())}
                for q, docs in run.data.items()}, name)  # fmt: skip


def run_dataset(dataset: str, feedback_docs: int, seed: int) -> dict:
    t_start = time.perf_counter()
    data = load(dataset, split="test")
    queries, qrels = data.queries, data.qrels
    queries = queries.subset([q for q in queries.ids if q in qrels])
    ctx = Context(data.corpus, dataset=dataset, verbose=False)
    first = Dense(ctx, k=K)(queries).with_name("dense")
    index, qvecs = ctx.index, ctx.query_vectors(queries)

    # 1. seen queries, clicks: the Rocchio rows and the same biased log for kNN
    n_sessions = SESSIONS_PER_QUERY * len(queries)
    rocchio = seen_query_runs(index, queries, qvecs, first, qrels, n_sessions=n_sessions,
                              eta=ETA, k=K, random_state=seed)  # fmt: skip
    gen = check_random_state(seed)  # replay seen_query_runs' draws: sessions, unbiased, biased
    sessions, grades = sessions_from_run(first, qrels, n_sessions, gen, k=10)
    simulate_log(PBM(eta=0.0), sessions, gen, grades)
    biased = simulate_log(PBM(eta=ETA), sessions, gen, grades)
    sums, total = click_feedback(biased, index, queries.ids, eta=ETA)
    scores, rows = index.search_rows(corocchio(qvecs, sums, total, beta=BETA), K)
    replay = run_from_rows(index, queries.ids, scores, rows, "replay")
    if replay.data != rocchio["clicks-biased-corocchio"].data:
        raise RuntimeError("the replayed click log differs from the one seen_query_runs drew")
    knn_clicks = KNNFeedback(ctx).fit_clicks(biased)
    knn_all = KNNFeedback(ctx).fit(queries, qrels)
    seen_runs = {"dense": first, **rocchio,
                 "knn-clicks": knn_clicks(queries, first).with_name("knn-clicks"),
                 "knn-clicks(agg=mean)": knn_clicks.set_params(agg="mean")(queries, first),
                 "knn-clicks(min_clicks=2)": KNNFeedback(ctx).fit_clicks(biased, min_clicks=2)(
                     queries, first),
                 "knn-judged-all (oracle, keeps known)": knn_all(queries, first)}  # fmt: skip
    seen = compare(seen_runs, qrels, MEASURES, baseline="dense", test="t")
    fed_clicks = sum(1 for q in queries.ids if (knn_clicks.feedback or {}).get(q))

    # 2. judged feedback, residual collection
    rng = np.random.default_rng(seed)
    known: dict[str, list[str]] = {}
    for q in queries.ids:
        rel = sorted(qrels.relevant(q))
        if len(rel) > feedback_docs:
            known[q] = [rel[i] for i in sorted(rng.choice(len(rel), feedback_docs, replace=False))]
    drop = {q: set(d) for q, d in known.items()}
    res_queries = queries.subset(list(known))
    res_qrels = Qrels({q: {d: g for d, g in qrels[q].items() if d not in drop[q]} for q in known})
    base = _without(first, drop, "dense").top_k(K)
    # dense Rocchio from the known docs, known docs removed
    at = {q: i for i, q in enumerate(queries.ids)}
    sel = np.array([at[q] for q in known], np.int64)
    fb = np.stack([index.vectors(known[q]).mean(axis=0) for q in known])
    rq_scores, rq_rows = index.search_rows(qvecs[sel] + BETA * fb, K + feedback_docs)
    rq = _without(run_from_rows(index, list(known), rq_scores, rq_rows, "rocchio-judged"),
                  drop, "rocchio-judged").top_k(K)  # fmt: skip
    knn = KNNFeedback(ctx, exclude_known=True).set_feedback(known)
    residual_runs = {"dense": base, "rocchio-judged": rq, "knn-judged": knn(res_queries, first)}
    if feedback_docs > 1:  # with one known doc, max and mean agree
        residual_runs["knn-judged(agg=mean)"] = knn.set_params(agg="mean")(res_queries, first)
    for w in (0.25, 0.8):  # the sensitivity to the weight, not a choice made on test
        residual_runs[f"knn-judged(weight={w})"] = knn.set_params(agg="max", weight=w)(
            res_queries, first)
    residual = compare(residual_runs, res_qrels, MEASURES, baseline="dense", test="t")
    return {
        "seen": seen,
        "residual": residual,
        "queries": len(queries),
        "queries_with_click_feedback": fed_clicks,
        "residual_queries": len(known),
        "seconds": time.perf_counter() - t_start,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    ap.add_argument("--feedback-docs", type=int, default=1,
                    help="known relevant docs per query in the residual table")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    payload: dict = {"k": K, "depth": 100, "measures": MEASURES, "sessions_per_query":
                     SESSIONS_PER_QUERY, "eta": ETA, "feedback_docs": args.feedback_docs,
                     "seed": args.seed, "results": {}}  # fmt: skip
    for ds in args.datasets:
        r = run_dataset(ds, args.feedback_docs, args.seed)
        print(f"\n## {ds}\n\nSeen queries, full qrels ({r['queries']} queries, "
              f"{r['queries_with_click_feedback']} with a click; PBM η = {ETA:g}, "
              f"{SESSIONS_PER_QUERY} sessions per query):\n")  # fmt: skip
        print(r["seen"].to_markdown())
        print(f"Judged feedback, residual collection ({r['residual_queries']} queries with more "
              f"than {args.feedback_docs} relevant; {args.feedback_docs} known per query, removed "
              "from runs and qrels):\n")  # fmt: skip
        print(r["residual"].to_markdown())
        print(f"({r['seconds']:.0f} s)")
        payload["results"][ds] = {
            "seen_query_table": r["seen"].rows(),
            "residual_table": r["residual"].rows(),
            "queries": r["queries"],
            "queries_with_click_feedback": r["queries_with_click_feedback"],
            "residual_queries": r["residual_queries"],
            "seconds": r["seconds"],
        }
    path = write_result("knn_feedback", payload)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
