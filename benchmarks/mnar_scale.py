"""Fit time of every MNAR recommender on a generated 15,000-user x 1,000-item set of 300,000 clicks.

The issue's bar: every model fits in under a minute on 2 cores with its default parameters. The
set is generated (seeded): Zipf-like item popularity, a low-rank taste structure, an exposure log
of about 450,000 pairs that holds the clicks (for DR-JL) and star ratings on 0.5% of all pairs (for
the uniform-slice KD). Prints a table and writes benchmarks/results/mnar_scale.json.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/mnar_scale.py [--users 15000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

from rankloop.data.interactions import Interactions
from rankloop.recsys.models import RECOMMENDERS, fit_recommender, make_recommender
from rankloop.recsys.propensity import popularity_propensity

MODELS = ("wmf", "bpr", "expomf", "relmf", "ubpr", "mfdu", "dr", "uniform_kd", "biser")


def generate(n_users: int, n_items: int, n_clicks: int, random_state: int = 0):
    """(clicks, exposure, uniform ratings): exposure ~ popularity, clicks ~ taste among exposed."""
    rng = np.random.default_rng(random_state)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    pop = rng.permutation(pop / pop.sum())
    n_exposed = int(n_clicks * 1.5)
    users = rng.integers(0, n_users, n_exposed * 2)
    items = rng.choice(n_items, n_exposed * 2, p=pop)
    keys = np.unique(users.astype(np.int64) * n_items + items)[:n_exposed]
    rng.shuffle(keys)
    keys = keys[:n_exposed]
    eu, ei = keys // n_items, keys % n_items
    taste_u = rng.normal(size=(n_users, 8))
    taste_i = rng.normal(size=(n_items, 8))
    logit = np.einsum("nd,nd->n", taste_u[eu], taste_i[ei]) / np.sqrt(8)
    order = np.argsort(-logit)[:n_clicks]  # the exposed pairs users like most are clicked
    exposure = Interactions.from_triples(
        users=eu, items=ei, n_users=n_users, n_items=n_items, kind="implicit"
    )
    clicks = Interactions.from_triples(
        users=eu[order], items=ei[order], n_users=n_users, n_items=n_items, kind="implicit"
    )
    cells = rng.choice(n_users * n_items, n_users * n_items // 200, replace=False)
    uu, ui = cells // n_items, cells % n_items
    score = np.einsum("nd,nd->n", taste_u[uu], taste_i[ui]) / np.sqrt(8)
    rating = np.clip(np.round(3 + 1.2 * score), 1, 5)
    uniform = Interactions(
        user_items=sp.csr_matrix((rating, (uu, ui)), shape=(n_users, n_items)), kind="explicit"
    )
    return clicks, exposure, uniform


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=15_000)
    ap.add_argument("--items", type=int, default=1_000)
    ap.add_argument("--clicks", type=int, default=300_000)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    args = ap.parse_args()
    t0 = time.perf_counter()
    clicks, exposure, uniform = generate(args.users, args.items, args.clicks)
    gen_s = time.perf_counter() - t0
    prop = popularity_propensity(clicks)
    rows = []
    for name in tqdm(args.models, desc="fit"):
        if name not in RECOMMENDERS:
            rows.append({"model": name, "error": "not registered"})
            continue
        model = make_recommender(name, {})
        t0 = time.perf_counter()
        fit_recommender(model, clicks, prop, exposure=exposure, uniform=uniform)
        fit_s = time.perf_counter() - t0
        rows.append({"model": name, "fit_seconds": fit_s, "under_60s": fit_s < 60})
        tqdm.write(f"{name}: {fit_s:.1f} s")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"\n{args.users:,} users x {args.items:,} items, {clicks.nnz:,} clicks, "
        f"{exposure.nnz:,} exposed pairs, {uniform.nnz:,} uniform ratings (generated in {gen_s:.1f} s)"
    )
    print("\n| model | fit s (default parameters) | under 60 s |\n|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['error']} | |")
        else:
            print(
                f"| {r['model']} | {r['fit_seconds']:.1f} | {'yes' if r['under_60s'] else 'NO'} |"
            )
    print(f"\npeak RSS {peak_gb:.2f} GB")
    path = write_result(
        "mnar_scale",
        {
            "command": "RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/mnar_scale.py",
            "shape": {"users": args.users, "items": args.items, "clicks": clicks.nnz,
                      "exposed": exposure.nnz, "uniform": uniform.nnz},
            "rows": rows,
            "peak_rss_gb": peak_gb,
        },
    )  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
