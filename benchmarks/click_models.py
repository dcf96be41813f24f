"""Click models on the Yandex WSCD 2012 sample: fit on trainSample, score testSample.

The standard click-model table of Chuklin, Markov and de Rijke ("Click Models for Web Search"):
per model, test log-likelihood, perplexity (overall and per rank 1..10) and fit time.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/click_models.py

Writes benchmarks/results/click_models.json and benchmarks/results/click_models.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import RESULTS, write_result

from rankloop.clicks.models import DBN, DCM, PBM, SDBN, UBM, CascadeModel, ClickModel
from rankloop.data.clicklogs import ClickLog, load_yandex_sample

MODELS: dict[str, ClickModel] = {
    "PBM (EM)": PBM(),
    "CM (MLE)": CascadeModel(),
    "DCM (counting)": DCM(),
    "DCM (EM)": DCM(method="em"),
    "UBM (EM)": UBM(),
    "DBN (EM)": DBN(),
    "SDBN (counting)": SDBN(),
    "SDBN (EM)": SDBN(method="em"),
}


def _score(model: ClickModel, log: ClickLog) -> dict[str, object]:
    ppl = model.perplexity(log)
    cond = model.perplexity(log, conditional=True)
    ll = model.session_log_likelihood(log)
    return {
        "log_likelihood_per_session": float(ll.mean()),
        "log_likelihood_per_position": float(ll.sum() / log.mask.sum()),
        "perplexity": ppl.overall,
        "perplexity_per_rank": ppl.per_rank.tolist(),
        "conditional_perplexity": cond.overall,
        "conditional_perplexity_per_rank": cond.per_rank.tolist(),
    }


def _plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, key, title in (
        (axes[0], "perplexity_per_rank", "perplexity per rank"),
        (axes[1], "conditional_perplexity_per_rank", "conditional perplexity per rank"),
    ):
        for name, res in results.items():
            values = res["test"][key]
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=name)
        ax.set_xlabel("rank")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("perplexity (lower is better)")
    fig.suptitle("Yandex WSCD 2012 sample: fit on trainSample, scored on testSample")
    axes[1].set_ylim(top=2.2)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    train, test = load_yandex_sample("train"), load_yandex_sample("test")
    print(
        f"train: {len(train):,} sessions; test: {len(test):,} sessions; {len(train.query_vocab)} queries"
    )
    results: dict[str, dict] = {}
    for name, model in MODELS.items():
        start = time.perf_counter()
        model.fit(train)
        elapsed = time.perf_counter() - start
        results[name] = {
            "fit_seconds": elapsed,
            "n_iter": getattr(model, "n_iter_", None),
            "params": model.summary(),
            "train": _score(model, train),
            "test": _score(model, test),
        }
        print(f"  fitted {name} in {elapsed:.2f}s", flush=True)

    print(
        "\n| model | test LL / session | test LL / position | perplexity | cond. perplexity | fit (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, res in results.items():
        t = res["test"]
        print(
            f"| {name} | {t['log_likelihood_per_session']:.4f} | {t['log_likelihood_per_position']:.4f} "
            f"| {t['perplexity']:.4f} | {t['conditional_perplexity']:.4f} | {res['fit_seconds']:.2f} |"
        )
    k = test.max_rank
    print("\nTest perplexity per rank:\n")
    print("| model | " + " | ".join(f"@{r}" for r in range(1, k + 1)) + " |")
    print("|---|" + "---:|" * k)
    for name, res in results.items():
        print(
            f"| {name} | "
            + " | ".join(f"{p:.3f}" for p in res["test"]["perplexity_per_rank"])
            + " |"
        )

    png = RESULTS / "click_models.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    _plot(results, png)
    path = write_result(
        "click_models",
        {
            "data": {
                "train": {"sessions": len(train), "clicks": int(train.clicks.sum()), **train.meta},
                "test": {"sessions": len(test), "clicks": int(test.clicks.sum()), **test.meta},
                "queries": len(train.query_vocab),
            },
            "notes": (
                "Perplexity per rank r = 2^(-mean_s log2 P(C_r = c_sr)) with marginal P (Chuklin et al.); "
                "conditional perplexity conditions on the session's clicks above r. LL is natural log. "
                "Unseen (query, doc) pairs get the Beta(1,1) prior mean 0.5. Probabilities clipped to "
                "[1e-6, 1 - 1e-6]."
            ),
            "results": results,
            "plot": str(png.relative_to(RESULTS.parent)),
        },
    )
    print(f"\nwrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
