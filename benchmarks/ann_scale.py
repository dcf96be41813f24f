"""ANN at scale: Flat vs HNSW vs IVF-PQ (with exact re-ranking) on 1M realistic 384-d embeddings.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/ann_scale.py            # 1,000,000
    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/ann_scale.py --quick    # 100,000

Data. The 8,816 SciFact + NFCorpus documents are encoded with all-MiniLM-L6-v2 (the Encoder's
on-disk cache makes reruns free). The remaining vectors are sampled around them: each is a real
document embedding plus Gaussian noise shaped like the real embeddings' covariance, scaled so a
sample's cosine to its seed matches the median cosine between a real document and its nearest
real neighbour, then L2-normalised. Queries are 1,000 real SciFact/NFCorpus queries (held out:
no query is in the base set), encoded with the same model.

Measured per configuration: build time (train + add), index size (serialised FAISS bytes; every
`VectorIndex` also keeps n x d x 4 bytes of float32 vectors beside it, memory-mapped after
load), QPS for the 1,000 queries submitted as one batch at 1 and 2 threads (best of a few
repeats), and recall@10 against exact search (Flat). IVF-PQ is also run with `refine=R`: the R
best PQ candidates are re-scored exactly with the stored vectors (`VectorIndex.vectors`).

The machine has 2 cores shared with other jobs, so timings are noisy; the JSON records the
load average before and after. OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE unless
set): with the default busy-waiting, 2 threads on 2 oversubscribed cores ran exact search ~2.5x
slower than 1 thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when libgomp loads, below

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import RESULTS, write_result

from rankloop.data import registry
from rankloop.embed import Encoder, VectorIndex

NAME = "ann_scale"
DATASETS = ("scifact", "nfcorpus")
GOAL_RECALL = 0.95
GOAL_SPEEDUP = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="number of base vectors")
    p.add_argument("--quick", action="store_true", help="dry run: 100k vectors, small sweeps")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, nargs="+", default=[40, 80])
    p.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default 4096, 1024 quick)")
    p.add_argument("--pq-m", type=int, default=48, help="PQ sub-quantizers (bytes per vector)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    p.add_argument("--refine", type=int, nargs="+", default=[0, 100, 200, 500], help="0 = none")
    p.add_argument(
        "--train-size", type=int, default=None, help="IVF/PQ training sample (40 x nlist)"
    )
    # OPQ is opt-in: training its rotation on 384-d vectors takes minutes even on 5k points here
    p.add_argument(
        "--families",
        nargs="+",
        default=["hnsw", "ivfpq", "ivfpqfs", "ivfpqfs2x"],
        choices=["hnsw", "ivfpq", "ivfpqfs", "ivfpqfs2x", "opq"],
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=NAME, help="results name (benchmarks/results/<out>.json/.png)")
    p.add_argument("--replot", action="store_true", help="only redraw <out>.png from <out>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 100_000)
        args.nlist = args.nlist or 1024
    args.nlist = args.nlist or 4096
    args.train_size = args.train_size or 40 * args.nlist
    return args


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- data --------------------------------------------------------------------------------------
def real_embeddings(n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(document embeddings, query embeddings) of SciFact + NFCorpus, via the cached Encoder."""
    encoder = Encoder()
    docs, queries = [], []
    for name in DATASETS:
        ds = registry.load(name, split=None)
        log(f"{name}: {len(ds.corpus):,} docs, {len(ds.queries):,} queries")
        docs.append(np.asarray(encoder.encode_corpus(ds.corpus)))
        queries.extend(ds.queries.texts)
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(queries), size=min(n_queries, len(queries)), replace=False))
    q = encoder.encode_queries([queries[i] for i in picked])
    return np.concatenate(docs), q, {"model": encoder.fingerprint, "query_pool": len(queries)}


def synthesize(base: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, dict]:
    """`base` plus n - len(base) covariance-shaped perturbations of it, all L2-normalised."""
    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(base)
    nn_cos = float(np.median(exact.search(base, 2)[0][:, 1]))
    evals, evecs = np.linalg.eigh(np.cov(base, rowvar=False))
    shape = (evecs * np.sqrt(np.clip(evals, 0, None))).T.astype(np.float32)  # noise = z @ shape
    # ||noise||^2 = (1/c^2 - 1) makes cos(sample, seed) ~ c for a unit seed and near-orthogonal noise
    scale = float(np.sqrt((1 / nn_cos**2 - 1) / evals.clip(0).sum()))
    rng = np.random.default_rng(seed)
    x = np.empty((n, base.shape[1]), dtype=np.float32)
    x[: len(base)] = base
    seeds = rng.integers(0, len(base), n - len(base))
    for start in range(0, len(seeds), 100_000):
        s = seeds[start : start + 100_000]
        z = rng.standard_normal((len(s), base.shape[1]), dtype=np.float32)
        block = base[s] + scale * (z @ shape)
        faiss.normalize_L2(block)
        x[len(base) + start : len(base) + start + len(s)] = block
    seed_cos = np.einsum("ij,ij->i", x[len(base) : len(base) + 10_000], base[seeds[:10_000]])
    return x, {
        "real_docs": len(base),
        "median_nn_cosine_real_docs": round(nn_cos, 4),
        "median_cosine_sample_to_seed": round(float(np.median(seed_cos)), 4),
        "noise_scale": round(scale, 4),
    }


# -- measuring ---------------------------------------------------------------------------------
def timed(
    fn: Callable[[], object], min_seconds: float = 2.0, max_repeats: int = 3
) -> tuple[float, object]:
    """(best wall time, result) over repeats until `min_seconds` is spent or `max_repeats` runs."""
    best, spent, out = float("inf"), 0.0, None
    for _ in range(max_repeats):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent >= min_seconds:
            break
    return best, out


def index_bytes(index: VectorIndex) -> int:
    return int(faiss.serialize_index(index.faiss_index).nbytes)


def recall_at(rows: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = [
        len(np.intersect1d(r[:k][r[:k] >= 0], t, assume_unique=True)) for r, t in zip(rows, truth)
    ]
    return float(np.mean(hits) / k)


def build(
    factory: str, x: np.ndarray, args: argparse.Namespace, efc: int | None = None
) -> tuple[VectorIndex, dict]:
    """Build a row-addressed index over `x`, timing training and adding (with progress lines)."""
    with threadpool_limits(max(args.threads)):
        faiss.omp_set_num_threads(max(args.threads))
        index = VectorIndex(x.shape[1], factory, metric="ip")
        if efc is not None:
            faiss.downcast_index(index.faiss_index).hnsw.efConstruction = efc
        t0 = time.perf_counter()
        if not index.is_trained:
            log(f"{factory}: training on {min(args.train_size, len(x)):,} vectors")
            index.train(x, max_points=args.train_size, seed=args.seed)
        t1 = time.perf_counter()
        step = max(len(x) // 10, 1)
        for start in range(0, len(x), step):
            index.add(None, x[start : start + step])
            log(
                f"{factory}: added {min(start + step, len(x)):,}/{len(x):,} ({time.perf_counter() - t1:.0f} s)"
            )
        t2 = time.perf_counter()
    info = {"train_s": round(t1 - t0, 1), "add_s": round(t2 - t1, 1), "build_s": round(t2 - t0, 1)}
    info["index_bytes"] = index_bytes(index)
    return index, info


def measure(
    index: VectorIndex,
    q: np.ndarray,
    args: argparse.Namespace,
    truth: np.ndarray | None,
    min_seconds: float = 2.0,
    **params,
) -> tuple[dict, np.ndarray]:
    """QPS per thread count and recall@k for one parameter setting."""
    out: dict = {}
    rows = None
    for t in args.threads:
        with threadpool_limits(t):
            faiss.omp_set_num_threads(t)
            index.search_rows(q[:50], args.k, **params)  # warm-up
            dt, (_, rows) = timed(lambda: index.search_rows(q, args.k, **params), min_seconds)
        out[f"qps_{t}t"] = round(len(q) / dt, 1)
    assert rows is not None
    out["recall_at_k"] = 1.0 if truth is None else round(recall_at(rows, truth), 4)
    return out, rows


# -- reporting ---------------------------------------------------------------------------------
def markdown(rows: list[dict], threads: list[int], k: int) -> str:
    head = (
        ["index", "build", "search", f"recall@{k}"]
        + [f"QPS {t}t" for t in threads]
        + [f"x Flat {t}t" for t in threads]
        + ["build s", "index MB"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["factory"],
            r["build_params"] or "-",
            r["search_params"] or "-",
            f"{r['recall_at_k']:.4f}",
            *[f"{r[f'qps_{t}t']:,.0f}" for t in threads],
            *[f"{r[f'speedup_{t}t']:.1f}" for t in threads],
            f"{r['build_s']:.0f}",
            f"{r['index_bytes'] / 2**20:,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], threads: list[int], path: Path, title: str) -> None:
    """Recall vs QPS per thread count: one colour per index, one line style per re-rank depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {0: "-", 100: "--", 200: "-.", 500: ":"}
    lines: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        refine = (
            int(r["search_params"].split("refine=")[1]) if "refine=" in r["search_params"] else 0
        )
        lines.setdefault((r["family"].split(" + ")[0], refine), []).append(r)
    colours = {base: f"C{i}" for i, base in enumerate(dict.fromkeys(b for b, _ in lines))}
    flat = next(r for r in rows if r["factory"] == "Flat")
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads) + 3, 5.5), squeeze=False)
    for ax, t in zip(axes[0], threads):
        for (base, refine), rs in lines.items():
            rs = sorted(rs, key=lambda r: r["recall_at_k"])  # sweep order; QPS is noisy
            label = base + (f" + exact re-rank of {refine}" if refine else "")
            ax.plot(
                [r[f"qps_{t}t"] for r in rs],
                [r["recall_at_k"] for r in rs],
                marker="o",
                ms=3,
                color=colours[base],
                ls=styles.get(refine, "-"),
                label=label,
            )
        ax.axhline(GOAL_RECALL, color="grey", ls=":", lw=1)
        ax.axvline(
            GOAL_SPEEDUP * flat[f"qps_{t}t"], color="black", ls="--", lw=1, label="10x Flat QPS"
        )
        ax.set_xscale("log")
        ax.set_xlabel(f"queries per second ({t} thread{'s' if t > 1 else ''}, 1,000-query batch)")
        ax.set_ylabel("recall@10 vs exact search")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 3 / (6 * len(threads) + 3), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def replot(name: str) -> Path:
    """Redraw benchmarks/results/<name>.png from its JSON (no measuring)."""
    import json

    payload = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    data, png = payload["data"], RESULTS / f"{name}.png"
    title = (
        f"{data['n']:,} x {data['dim']} (SciFact+NFCorpus-shaped), {data['queries']:,} real queries"
    )
    plot(payload["results"], payload["args"]["threads"], png, title)
    return png


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        print(f"wrote {replot(args.out)}")
        return 0
    load_before = os.getloadavg()
    started = time.perf_counter()
    base, q, data_info = real_embeddings(args.queries, args.seed)
    log(f"real: {base.shape[0]:,} docs, {q.shape[0]:,} queries; synthesizing {args.n:,} vectors")
    x, synth_info = synthesize(base, args.n, args.seed)
    data_info.update(synth_info, n=args.n, dim=int(x.shape[1]), queries=int(q.shape[0]))
    log(f"data: {synth_info}")

    results: list[dict] = []

    def record(
        family: str, factory: str, build_info: dict, build_params: str, search: dict, m: dict
    ) -> None:
        row = {
            "family": family,
            "factory": factory,
            "build_params": build_params,
            "search_params": ", ".join(f"{k}={v}" for k, v in search.items()),
            **build_info,
            **m,
        }
        results.append(row)
        log(
            f"{factory} {build_params} {row['search_params']}: "
            + ", ".join(f"{k}={v}" for k, v in m.items())
        )

    # exact search: the reference for recall and for the 10x goal
    flat, info = build("Flat", x, args)
    m, truth = measure(flat, q, args, None, min_seconds=float("inf"))  # best of 3: favours Flat
    truth = truth[:, : args.k]
    record("Flat", "Flat", info, "", {}, m)
    del flat

    if "hnsw" in args.families:
        factory = f"HNSW{args.hnsw_m}"
        for efc in args.ef_construction:
            index, info = build(factory, x, args, efc=efc)
            for ef in args.ef_search:
                m, _ = measure(index, q, args, truth, efSearch=ef)
                record(
                    f"{factory} efC={efc}",
                    factory,
                    info,
                    f"efConstruction={efc}",
                    {"efSearch": ef},
                    m,
                )
            del index

    # pq_m bytes per vector three ways (8-bit PQ, 4-bit PQ with SIMD fast scan, OPQ + PQ), and
    # fast scan with twice the bytes. "np": skip polysemous training (slow, and only used by
    # polysemous filtering, which is not used here).
    pq_factories = {
        "ivfpq": f"IVF{args.nlist},PQ{args.pq_m}np",
        "ivfpqfs": f"IVF{args.nlist},PQ{2 * args.pq_m}x4fs",
        "ivfpqfs2x": f"IVF{args.nlist},PQ{4 * args.pq_m}x4fs",
        "opq": f"OPQ{args.pq_m},IVF{args.nlist},PQ{args.pq_m}np",
    }
    for fam, factory in pq_factories.items():
        if fam not in args.families:
            continue
        index, info = build(factory, x, args)
        for refine in args.refine:
            for nprobe in args.nprobe:
                search = {"nprobe": nprobe, **({"refine": refine} if refine else {})}
                m, _ = measure(index, q, args, truth, **search)
                label = f"{factory}" + (f" + exact re-rank of {refine}" if refine else "")
                record(label, factory, info, f"train={min(args.train_size, len(x)):,}", search, m)
        del index

    for r in results:
        for t in args.threads:
            r[f"speedup_{t}t"] = round(r[f"qps_{t}t"] / results[0][f"qps_{t}t"], 2)
    goal = {}
    for t in args.threads:
        ok = [
            r
            for r in results
            if r["recall_at_k"] >= GOAL_RECALL and r[f"speedup_{t}t"] >= GOAL_SPEEDUP
        ]
        best = max(ok, key=lambda r: r[f"qps_{t}t"], default=None)
        goal[f"{t}t"] = {
            "met": best is not None,
            "best": None
            if best is None
            else {
                k: best[k]
                for k in (
                    "factory",
                    "build_params",
                    "search_params",
                    "recall_at_k",
                    f"qps_{t}t",
                    f"speedup_{t}t",
                )
            },
            "best_recall_at_10x": max(
                (r["recall_at_k"] for r in results if r[f"speedup_{t}t"] >= GOAL_SPEEDUP),
                default=None,
            ),
        }
    table = markdown(results, args.threads, args.k)
    # per family, the fastest setting (at the first thread count) that reaches the recall goal
    fastest: dict[str, dict] = {}
    for r in results:
        key = f"qps_{args.threads[0]}t"
        if r["recall_at_k"] >= GOAL_RECALL and r[key] > fastest.get(r["family"], {}).get(key, -1):
            fastest[r["family"]] = r
    summary = markdown(list(fastest.values()), args.threads, args.k)
    title = f"{args.n:,} x {x.shape[1]} (SciFact+NFCorpus-shaped), {len(q):,} real queries"
    png = RESULTS / f"{args.out}.png"
    payload = {
        "args": vars(args),
        "data": data_info,
        "goal": {"recall_at_10": GOAL_RECALL, "speedup_vs_flat": GOAL_SPEEDUP, **goal},
        "results": results,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "total_s": round(time.perf_counter() - started, 1),
        "plot": str(png.relative_to(RESULTS.parent.parent)),
        "table_markdown": table,
        "summary_markdown": summary,
    }
    path = write_result(args.out, payload)
    replot(args.out)
    print()
    print(f"### ANN at scale: {title}")
    print()
    print(table)
    print()
    print(f"Fastest setting per family with recall@{args.k} >= {GOAL_RECALL}:")
    print()
    print(summary)
    print()
    for t, g in goal.items():
        print(
            f"goal ({t}): {'MET' if g['met'] else 'NOT met'}: {g['best'] or g['best_recall_at_10x']}"
        )
    print(f"\nwrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
