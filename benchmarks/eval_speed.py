"""How fast is rankloop.eval against pytrec_eval and ranx on a large run?

5,000 queries x 1,000 ranked docs, about 50 judged docs per query at grades 0-3 (seeded);
measures map, ndcg_cut_10, recall_1000, recip_rank. Every library starts from the same Python
dict-of-dict qrels and run, and its timing includes building its own objects from them
(rankloop: `Qrels`/`Run` + `Evaluator`; pytrec_eval: `RelevanceEvaluator`; ranx:
`Qrels`/`Run`). The "pre-built" rows time only the evaluation call on objects built beforehand.
Warm timings are the best of `--repeats`. ranx's cold call includes compiling its numba kernels
(an empty `NUMBA_CACHE_DIR`); a second process measures its first call with that disk cache warm.

    .venv/bin/python benchmarks/eval_speed.py
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

MEASURES = ["map", "ndcg_cut_10", "recall_1000", "recip_rank"]
PYTREC_MEASURES = {"map", "ndcg_cut.10", "recall.1000", "recip_rank"}
RANX_MEASURES = ["map", "ndcg@10", "recall@1000", "mrr"]
RANX_NAMES = dict(zip(RANX_MEASURES, MEASURES))


def build(n_queries: int, depth: int, judged: int, seed: int) -> tuple[dict, dict]:
    """Seeded dict-of-dict qrels and run; 70% of the judged docs are retrieved ones."""
    rng = np.random.default_rng(seed)
    pool = 100_000
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(n_queries):
        docs = rng.choice(pool, size=depth + judged, replace=False)
        ranked, outside = docs[:depth], docs[depth:]
        scores = np.round(np.sort(rng.gamma(2.0, 3.0, size=depth))[::-1], 4)  # 4 decimals: ties
        qid = str(1000 + q)
        run[qid] = {f"D{d}": float(s) for d, s in zip(ranked.tolist(), scores.tolist())}
        n_in = round(0.7 * judged)
        picked = np.concatenate(
            [rng.choice(ranked, size=n_in, replace=False), outside[: judged - n_in]]
        )
        grades = rng.choice(4, size=judged, p=[0.5, 0.25, 0.15, 0.1])
        qrels[qid] = {f"D{d}": int(g) for d, g in zip(picked.tolist(), grades.tolist())}
    return qrels, run


def timed(fn):
    gc.collect()
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def best(fn, repeats: int) -> float:
    return min(timed(fn)[0] for _ in range(repeats))


def rankloop_from_dicts(qrels: dict, run: dict) -> dict[str, float]:
    from rankloop.data.types import Qrels, Run
    from rankloop.eval.metrics import Evaluator

    return Evaluator(Qrels(qrels), MEASURES).evaluate(Run(run)).mean


def pytrec_from_dicts(qrels: dict, run: dict) -> dict[str, float]:
    import pytrec_eval

    per_q = pytrec_eval.RelevanceEvaluator(qrels, PYTREC_MEASURES).evaluate(run)
    return {m: float(np.mean([v[m] for v in per_q.values()])) for m in MEASURES}


def ranx_from_dicts(qrels: dict, run: dict) -> dict[str, float]:
    import ranx

    out = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), RANX_MEASURES, make_comparable=True)
    return {RANX_NAMES[k]: float(v) for k, v in out.items()}


def _ranx_first_call_child(data_path: str) -> None:
    """Child process: ranx's first call with a warm numba disk cache (prints seconds)."""
    warnings.filterwarnings("ignore", message="unsafe cast")
    with open(data_path, "rb") as fh:
        qrels, run = pickle.load(fh)
    t = time.perf_counter()
    ranx_from_dicts(qrels, run)
    print(time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--judged", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3, help="warm timings: best of this many")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-ranx", action="store_true", help="skip ranx (its cold call compiles for ~1 min)"
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="unsafe cast")  # ranx's numba type warnings
    numba_cache = tempfile.mkdtemp(prefix="numba-cold-")
    os.environ["NUMBA_CACHE_DIR"] = numba_cache  # before ranx/numba import: a true cold start

    t_build, (qrels, run) = timed(lambda: build(args.queries, args.depth, args.judged, args.seed))
    print(
        f"built {args.queries} x {args.depth} run, {sum(map(len, qrels.values()))} judgements in {t_build:.1f} s"
    )
    res: dict[str, float] = {}
    means: dict[str, dict[str, float]] = {}

    t_import, _ = timed(lambda: __import__("rankloop.eval.metrics"))
    res["rankloop_import"] = t_import
    res["rankloop_first"], means["rankloop"] = timed(lambda: rankloop_from_dicts(qrels, run))
    res["rankloop_warm"] = best(lambda: rankloop_from_dicts(qrels, run), args.repeats)

    from rankloop.data.types import Qrels, Run
    from rankloop.eval.metrics import Evaluator

    rq, rr = Qrels(qrels), Run(run)
    ev = Evaluator(rq, MEASURES)
    res["rankloop_prebuilt"] = best(lambda: ev.evaluate(rr), args.repeats)

    import pytrec_eval

    res["pytrec_eval_first"], means["pytrec_eval"] = timed(lambda: pytrec_from_dicts(qrels, run))
    res["pytrec_eval_warm"] = best(lambda: pytrec_from_dicts(qrels, run), args.repeats)
    pev = pytrec_eval.RelevanceEvaluator(qrels, PYTREC_MEASURES)
    res["pytrec_eval_prebuilt"] = best(lambda: pev.evaluate(run), args.repeats)

    if not args.no_ranx:
        t0 = time.perf_counter()
        import ranx

        res["ranx_import"] = time.perf_counter() - t0
        res["ranx_cold"], means["ranx"] = timed(lambda: ranx_from_dicts(qrels, run))
        res["ranx_warm"] = best(lambda: ranx_from_dicts(qrels, run), args.repeats)
        xq, xr = ranx.Qrels(qrels), ranx.Run(run)
        res["ranx_prebuilt"] = best(
            lambda: ranx.evaluate(xq, xr, RANX_MEASURES, make_comparable=True), args.repeats
        )
        with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as fh:
            pickle.dump((qrels, run), fh, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            child = subprocess.run(
                [sys.executable, __file__, "--_ranx-child", fh.name],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "NUMBA_CACHE_DIR": numba_cache},
            )
            res["ranx_first_cached"] = float(child.stdout.strip().splitlines()[-1])
        finally:
            os.unlink(fh.name)

    ratios = {
        "pytrec_eval_over_rankloop": res["pytrec_eval_warm"] / res["rankloop_warm"],
        "pytrec_eval_over_rankloop_prebuilt": res["pytrec_eval_prebuilt"]
        / res["rankloop_prebuilt"],
        "rankloop_first_call_extra_s": res["rankloop_first"] - res["rankloop_warm"],
    }
    if "ranx_warm" in res:
        ratios |= {
            "rankloop_over_ranx_warm": res["rankloop_warm"] / res["ranx_warm"],
            "rankloop_over_ranx_prebuilt": res["rankloop_prebuilt"] / res["ranx_prebuilt"],
            "ranx_cold_over_rankloop_first": res["ranx_cold"] / res["rankloop_first"],
        }
    agree = max(abs(means["rankloop"][m] - means["pytrec_eval"][m]) for m in MEASURES)
    ranx_diff = (
        max((abs(means["rankloop"][m] - means["ranx"][m]) for m in MEASURES), default=None)
        if "ranx" in means
        else None
    )

    rows = [
        ("rankloop", "first call (from dicts)", res["rankloop_first"]),
        ("rankloop", f"warm, best of {args.repeats} (from dicts)", res["rankloop_warm"]),
        (
            "rankloop",
            f"pre-built Qrels/Run/Evaluator, best of {args.repeats}",
            res["rankloop_prebuilt"],
        ),
        ("pytrec_eval", "first call (from dicts)", res["pytrec_eval_first"]),
        ("pytrec_eval", f"warm, best of {args.repeats} (from dicts)", res["pytrec_eval_warm"]),
        (
            "pytrec_eval",
            f"pre-built RelevanceEvaluator, best of {args.repeats}",
            res["pytrec_eval_prebuilt"],
        ),
    ]
    if "ranx_warm" in res:
        rows += [
            ("ranx", "cold: first call incl. numba compile (from dicts)", res["ranx_cold"]),
            (
                "ranx",
                "first call in a new process, numba disk cache warm",
                res["ranx_first_cached"],
            ),
            ("ranx", f"warm, best of {args.repeats} (from dicts)", res["ranx_warm"]),
            ("ranx", f"pre-built Qrels/Run, best of {args.repeats}", res["ranx_prebuilt"]),
        ]
    print(f"\n{args.queries} queries x {args.depth} docs, measures: {', '.join(MEASURES)}\n")
    print("| library | timing | seconds | vs rankloop (same mode) |")
    print("|---|---|---:|---:|")
    ref = {
        "first": res["rankloop_first"],
        "warm": res["rankloop_warm"],
        "pre-built": res["rankloop_prebuilt"],
    }
    for lib, what, sec in rows:
        mode = "pre-built" if "pre-built" in what else "warm" if "warm," in what else "first"
        print(f"| {lib} | {what} | {sec:.3f} | {sec / ref[mode]:.2f}x |")
    print(
        f"\npytrec_eval / rankloop (warm, from dicts): {ratios['pytrec_eval_over_rankloop']:.2f}x (goal >= 1.0)"
    )
    if "rankloop_over_ranx_warm" in ratios:
        print(
            f"rankloop / ranx warm (from dicts): {ratios['rankloop_over_ranx_warm']:.2f} (goal <= 1.5)"
        )
    print(
        f"rankloop first-call extra: {ratios['rankloop_first_call_extra_s']:.3f} s (goal < 1 s); import {res['rankloop_import']:.3f} s"
    )
    print(f"max |rankloop - pytrec_eval| over the means: {agree:.2e}")
    if ranx_diff is not None:
        print(
            f"max |rankloop - ranx| over the means: {ranx_diff:.2e} (ranx breaks score ties differently)"
        )

    from _machine import write_result

    path = write_result(
        "eval_speed",
        {
            "config": vars(args) | {"measures": MEASURES},
            "fairness": "every library starts from the same Python dict-of-dict qrels/run and "
            "builds its own objects inside the timing; 'prebuilt' rows time evaluation only",
            "seconds": res,
            "ratios": ratios,
            "max_abs_diff_vs_pytrec_eval": agree,
            "max_abs_diff_vs_ranx": ranx_diff,
            "means": means,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_ranx-child":
        _ranx_first_call_child(sys.argv[2])
    else:
        main()
