"""Propensity estimation on simulated logs with known PBM position bias, theta_r = (1/r)^eta.

Synthetic world: 300 queries x 20 candidate docs with graded relevance (0..4, mostly 0); lists
are the top 10 of a noisy ranker (score = grade + N(0, noise^2)); clicks from ULTRA's PBM
(eps = 0.1, gmax = 4). For eta in {0.5, 1, 2} and 10^4 / 10^5 sessions, over 3 seeds:

- swap-first / adjacent / random-pair: one noisy ranker (noise 1) with a randomised swap per
  session (`rankloop.clicks.propensity.swap_interventions`);
- EM (PBM) and harvesting (AllPairs): no intervention, three logging rankers (noise 0.5, 1, 2),
  each serving a third of the sessions.

Also estimates (no ground truth) on the real Yandex trainSample, whose lists vary over time.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/propensity.py

Writes benchmarks/results/propensity.json and benchmarks/results/propensity.png.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import RESULTS, write_result

from rankloop.clicks.models import PBM
from rankloop.clicks.propensity import (
    em_propensities,
    harvest_propensities,
    swap_interventions,
    swap_propensities,
)
from rankloop.clicks.simulate import pbm_examination, sessions_from_lists, simulate_log
from rankloop.data.clicklogs import ClickLog, concat_logs, load_yandex_sample

K = 10
N_QUERIES, N_DOCS = 300, 20
GRADE_P = [0.5, 0.25, 0.13, 0.08, 0.04]
ETAS = (0.5, 1.0, 2.0)
SIZES = (10_000, 100_000)
SEEDS = (0, 1, 2)
METHODS = ("swap-first", "adjacent", "random-pair", "EM (PBM)", "harvest (AllPairs)")


def _ranker_lists(
    grades: dict[str, np.ndarray], noise: float, rng: np.random.Generator
) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    lists, glist = {}, {}
    for q, g in grades.items():
        order = np.argsort(-(g + rng.normal(0.0, noise, len(g))), kind="stable")[:K]
        lists[q] = [f"{q}/d{j}" for j in order]
        glist[q] = g[order].tolist()
    return lists, glist


def _estimate(eta: float, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    grades = {f"q{i}": rng.choice(5, N_DOCS, p=GRADE_P) for i in range(N_QUERIES)}
    truth = PBM(eta=eta, eps=0.1, max_grade=4)
    out: dict[str, np.ndarray] = {}
    lists, glist = _ranker_lists(grades, 1.0, rng)
    for design in ("swap-first", "adjacent", "random-pair"):
        sessions, rel = sessions_from_lists(lists, n, rng, glist)
        randomised, rel2, pairs = swap_interventions(sessions, design, rng, rel)  # type: ignore[arg-type]
        out[design] = swap_propensities(simulate_log(truth, randomised, rng, rel2), pairs)
    parts: list[ClickLog] = []
    for noise in (0.5, 1.0, 2.0):
        lists, glist = _ranker_lists(grades, noise, rng)
        sessions, rel = sessions_from_lists(lists, n // 3, rng, glist)
        parts.append(simulate_log(truth, sessions, rng, rel))
    log = concat_logs(parts)
    out["EM (PBM)"] = em_propensities(log)
    out["harvest (AllPairs)"] = harvest_propensities(log)
    return out


def _plot(examples: dict[float, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(examples), figsize=(5 * len(examples), 4.2))
    ranks = np.arange(1, K + 1)
    markers = dict(zip(METHODS, "osD^v"))
    for ax, (eta, est) in zip(axes, examples.items()):
        ax.plot(ranks, pbm_examination(K, eta), "k-", lw=2, label="true (1/r)^eta")
        for method in METHODS:
            ax.plot(ranks, est[method], ls="--", marker=markers[method], ms=4, label=method)
        ax.set_title(f"eta = {eta}: 10^5 sessions, seed 0")
        ax.set_xlabel("rank")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("relative propensity theta_r / theta_1")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    errors: dict[str, dict] = {}
    examples: dict[float, dict[str, list[float]]] = {}
    started = time.perf_counter()
    for eta in ETAS:
        true = pbm_examination(K, eta)
        for n in SIZES:
            per_seed: dict[str, list[float]] = {m: [] for m in METHODS}
            for seed in SEEDS:
                est = _estimate(eta, n, seed)
                for m in METHODS:
                    per_seed[m].append(float(np.nanmax(np.abs(est[m] - true))))
                if n == SIZES[-1] and seed == SEEDS[0]:
                    examples[eta] = {m: est[m].tolist() for m in METHODS}
            errors[f"eta={eta},n={n}"] = {
                m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_seed": v}
                for m, v in per_seed.items()
            }
            print(f"  eta={eta} n={n:,} done ({time.perf_counter() - started:.0f}s)", flush=True)

    print("\nMax |estimated - true| over ranks 1..10, mean ± std over 3 seeds:\n")
    print("| eta | sessions | " + " | ".join(METHODS) + " |")
    print("|---|---:|" + "---:|" * len(METHODS))
    for eta in ETAS:
        for n in SIZES:
            e = errors[f"eta={eta},n={n}"]
            cells = " | ".join(f"{e[m]['mean']:.3f} ± {e[m]['std']:.3f}" for m in METHODS)
            print(f"| {eta} | {n:,} | {cells} |")
    for eta, est in examples.items():
        true = pbm_examination(K, eta)
        print(f"\neta = {eta}, 10^5 sessions, seed 0: estimated vs true theta_r / theta_1\n")
        print("| rank | true | " + " | ".join(METHODS) + " |")
        print("|---:|---:|" + "---:|" * len(METHODS))
        for r in range(K):
            print(
                f"| {r + 1} | {true[r]:.3f} | "
                + " | ".join(f"{est[m][r]:.3f}" for m in METHODS)
                + " |"
            )

    real: dict[str, list[float]] = {}
    if os.environ.get("RANKLOOP_DATA"):
        train = load_yandex_sample("train")
        real = {
            "EM (PBM)": em_propensities(train).tolist(),
            "harvest (AllPairs)": harvest_propensities(train).tolist(),
        }
        print("\nReal Yandex trainSample (no ground truth): theta_r / theta_1\n")
        print("| method | " + " | ".join(f"@{r}" for r in range(1, K + 1)) + " |")
        print("|---|" + "---:|" * K)
        for m, v in real.items():
            print(f"| {m} | " + " | ".join(f"{x:.3f}" for x in v) + " |")

    png = RESULTS / "propensity.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    _plot(examples, png)
    path = write_result(
        "propensity",
        {
            "setup": {
                "queries": N_QUERIES,
                "docs_per_query": N_DOCS,
                "k": K,
                "grade_p": GRADE_P,
                "eps": 0.1,
                "max_grade": 4,
                "etas": ETAS,
                "sessions": SIZES,
                "seeds": SEEDS,
                "swap_ranker_noise": 1.0,
                "harvest_ranker_noise": [0.5, 1.0, 2.0],
            },
            "max_abs_error": errors,
            "examples_1e5_seed0": {str(k): v for k, v in examples.items()},
            "true": {str(eta): pbm_examination(K, eta).tolist() for eta in ETAS},
            "yandex_train_estimates": real,
            "seconds": time.perf_counter() - started,
            "plot": str(png.relative_to(RESULTS.parent)),
        },
    )
    print(f"\nwrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
