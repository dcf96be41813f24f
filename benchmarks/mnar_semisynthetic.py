"""Semi-synthetic MNAR check with a known truth: true DCG@5 of every model against bias strength.

A known preference world (Chaney et al. 2018 Dirichlet preferences, Schnabel et al. 2016 rating
marginals, Saito et al. 2020 graded relevance), exposure θ that leans on item popularity and on
the rating with a bias strength s (s = 0 uniform; the expected number of exposures fixed), clicks
Y = O·Rel. Every model of configs/mnar_semisynthetic.yaml is tuned on MNAR validation clicks
(SNIPS-DCG, once per strength), fitted per seed and scored exactly against the truth; paired
t-tests over seeds against WMF. See rankloop/recsys/semisynthetic.py for every formula.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/mnar_semisynthetic.py \
        [--config configs/mnar_semisynthetic.yaml] [--seeds N] [--workers N]

Prints Markdown tables (rows: models; columns: strengths) and writes
benchmarks/results/mnar_semisynthetic.json and benchmarks/results/mnar_semisynthetic.png.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import RESULTS, write_result

from rankloop._runtime import Count, Probability, Seed, Seeds, YamlConfig
from rankloop.errors import ConfigError
from rankloop.experiments.recsys import ModelSpec
from rankloop.io import atomic_write
from rankloop.recsys.semisynthetic import (
    SCHNABEL_MARGINALS,
    StudyModel,
    StudyResult,
    StudySettings,
    run_study,
)

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mnar_semisynthetic.yaml"
Strength = Annotated[float, Field(ge=0.0, le=20.0)]


@dataclass
class SemiModelSpec(ModelSpec):
    """A `ModelSpec` plus which propensity the model sees: the popularity estimate or the true θ."""

    propensity: Literal["estimated", "oracle"] = "estimated"


@dataclass
class SemiSyntheticConfig(YamlConfig):
    """The study, loadable from YAML; every key, type and bound is checked at load (file:line)."""

    models: list[SemiModelSpec]
    name: str = "mnar-semisynthetic"
    n_users: Count = 1000
    n_items: Count = 300
    n_topics: Count = 20
    eps: Probability = 0.1
    rating_marginals: Annotated[list[float], Field(min_length=5, max_length=5)] = field(
        default_factory=lambda: list(SCHNABEL_MARGINALS)
    )
    popularity_exponent: Annotated[float, Field(ge=0.0, le=10.0)] = 0.6
    world_seed: Seed = 0
    resample_world: bool = False
    exposure_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    rating_alpha: Annotated[float, Field(gt=0.0, le=1.0)] = 0.25
    strengths: Annotated[list[Strength], Field(min_length=1, max_length=50)] = field(
        default_factory=lambda: [0.0, 0.5, 1.0, 1.5, 2.0]
    )
    seeds: Seeds = 5
    propensity_eta: Annotated[float, Field(ge=0.0, le=10.0)] = 0.5
    propensity_normalize: Literal["max", "users"] = "max"
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    val_repeats: Annotated[int, Field(ge=1, le=100)] = 1
    val_negatives: Count = 100
    val_k: Count = 5
    k: Count = 5
    n_test_items: Count = 16
    uniform_ratings: Count = 800
    baseline: str = "WMF"
    test: Literal["t", "fisher", "bootstrap"] = "t"
    workers: Annotated[int, Field(ge=1, le=64)] = 1

    def __post_init__(self) -> None:
        if isinstance(self.seeds, int):  # `seeds: N` means 0..N-1
            self.seeds = list(range(self.seeds))
        self.settings().check_models(self.study_models())

    def settings(self) -> StudySettings:
        """The library's settings (its checks run here, before any work)."""
        keys = {f for f in StudySettings.__dataclass_fields__}
        return StudySettings(**{k: v for k, v in asdict(self).items() if k in keys})

    def study_models(self) -> list[StudyModel]:
        return [
            StudyModel(m.name, m.type, tuple(m.grid_points()), m.propensity) for m in self.models
        ]


# ---- output -------------------------------------------------------------------------------
def plot(result: StudyResult, path: Path, metric: str, coat: dict[str, Any] | None = None) -> None:
    """Two panels: `metric` against bias strength per model (band: ± std over seeds), and the
    paired difference to the baseline (band: ± std of the per-seed differences; filled markers
    where p < 0.05)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    st = result.settings
    xs = np.array(st.strengths)
    keys = [f"{s:g}" for s in st.strengths]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    cmap = plt.get_cmap("tab20")  # 20 distinct colours: no two models share one
    for n, m in enumerate(result.models):
        color = cmap(n % 20)
        rows = [result.summary[k][m.name] for k in keys]
        mean = np.array([r[metric]["mean"] for r in rows])
        std = np.array([r[metric]["std"] for r in rows])
        style = "--" if m.propensity == "oracle" else "-"
        ax1.plot(xs, mean, style, marker="o", color=color, label=m.name)
        ax1.fill_between(xs, mean - std, mean + std, color=color, alpha=0.15)
        if m.name == st.baseline or m.type == "random":
            continue
        d = np.array([r["delta"][metric] for r in rows])
        ds = np.array([r["delta_std"][metric] for r in rows])
        p = np.array([np.nan if r["p"][metric] is None else r["p"][metric] for r in rows])
        ax2.plot(xs, d, style, color=color, label=m.name)
        ax2.fill_between(xs, d - ds, d + ds, color=color, alpha=0.12)
        sig = p < 0.05
        ax2.scatter(xs[sig], d[sig], color=color, marker="o", zorder=3)
        ax2.scatter(xs[~sig], d[~sig], facecolors="white", edgecolors=[color], zorder=3)
    if coat and "rating_strength" in coat:  # where Coat's rating bias sits on this scale
        for ax in (ax1, ax2):
            ax.axvline(coat["rating_strength"], color="grey", ls=":", lw=1.2)
        ax1.annotate("Coat's rating bias", (coat["rating_strength"], ax1.get_ylim()[0]),
                     rotation=90, va="bottom", ha="right", fontsize=7, color="grey")  # fmt: skip
    ax1.set_xlabel("bias strength s (0 = uniform exposure)")
    ax1.set_ylabel(f"true {metric} (expected, over unclicked items)")
    ax1.set_title(f"true {metric}, mean ± std over {len(st.seeds)} seeds")
    ax1.legend(fontsize=7)
    ax2.axhline(0.0, color="black", lw=0.8)
    ax2.set_xlabel("bias strength s")
    ax2.set_ylabel(f"Δ true {metric} vs {st.baseline}")
    ax2.set_title(f"paired Δ vs {st.baseline} (filled: p < 0.05, paired {st.test}-test)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)


def replot(json_path: Path, png: Path) -> None:
    """Draw the PNG again from a finished run's JSON (its summary, models and settings)."""
    import json
    from types import SimpleNamespace

    data = json.loads(json_path.read_text())
    settings = SimpleNamespace(**data["settings"])
    models = [SimpleNamespace(**m) for m in data["models"]]
    result = SimpleNamespace(settings=settings, models=models, summary=data["summary"])
    plot(result, png, f"nDCG@{settings.k}", data.get("coat_on_scale"))  # type: ignore[arg-type]
    print(f"redrew {png}")


def verdicts(result: StudyResult, metric: str) -> dict[str, dict[str, list[float]]]:
    """Per model: the strengths where it beats / loses to the baseline with p < 0.05."""
    st = result.settings
    out: dict[str, dict[str, list[float]]] = {}
    for m in result.models:
        if m.name == st.baseline:
            continue
        wins, losses = [], []
        for s in st.strengths:
            row = result.summary[f"{s:g}"][m.name]
            p = row["p"][metric]
            if p is None or not math.isfinite(p) or p >= 0.05:
                continue
            (wins if row["delta"][metric] > 0 else losses).append(s)
        out[m.name] = {"beats_baseline_at": wins, "loses_to_baseline_at": losses}
    return out


def coat_on_scale(settings: StudySettings) -> dict[str, Any]:
    """Where Coat (MNAR train, MAR test) sits on this study's strength scale, or why it cannot
    be placed (no data here)."""
    from rankloop.data.ratings import load_coat
    from rankloop.errors import RankloopError
    from rankloop.recsys.semisynthetic import observed_strength

    try:
        coat = load_coat()
    except RankloopError as e:
        return {"error": str(e)}
    return observed_strength(
        coat.train, coat.test, rating_alpha=settings.rating_alpha,
        popularity_exponent=settings.popularity_exponent,
    )  # fmt: skip


def _print_coat(coat: dict[str, Any]) -> None:
    if "error" in coat:
        print(f"\nCoat not placed on the strength scale: {coat['error']}")
        return
    print(
        f"\nCoat on this scale: rating bias s = {coat['rating_strength']:.2f} (P(O|r)/P(O|4) for "
        f"r = 1..5: {', '.join(f'{v:.2f}' for k, v in coat.items() if k.startswith('P('))}), "
        f"popularity bias s <= {coat['popularity_strength']:.2f} (an upper bound: real popularity "
        "also follows quality)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=CONFIG, help="study config (YAML)")
    ap.add_argument("--seeds", type=int, help="override the config's number of seeds")
    ap.add_argument("--workers", type=int, help="override the config's worker processes")
    ap.add_argument(
        "--replot",
        action="store_true",
        help="redraw the PNG from the results JSON of the last run, without running anything",
    )
    ap.add_argument(
        "--coat-only",
        action="store_true",
        help="only place Coat on the strength scale (writes benchmarks/results/mnar_coat_bias.json)",
    )
    args = ap.parse_args()
    try:
        config = SemiSyntheticConfig.from_yaml(args.config)
        if args.seeds is not None:
            config.seeds = list(range(args.seeds))
        if args.workers is not None:
            config.workers = args.workers
        settings = config.settings()
        models = config.study_models()
    except ConfigError as e:
        sys.exit(f"error: {e}")
    name = (
        "mnar_semisynthetic"
        if args.config.resolve() == CONFIG
        else f"mnar_semisynthetic_{args.config.stem}"
    )
    command = "RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/mnar_semisynthetic.py" + (
        "" if name == "mnar_semisynthetic" else f" --config {args.config}"
    )
    if args.replot:
        replot(RESULTS / f"{name}.json", RESULTS / f"{name}.png")
        return
    coat = coat_on_scale(settings)
    _print_coat(coat)
    if args.coat_only:
        print(
            f"wrote {write_result('mnar_coat_bias', {'command': command + ' --coat-only', **coat})}"
        )
        return
    t0 = time.perf_counter()
    result = run_study(settings, models)
    wall = time.perf_counter() - t0
    k = settings.k
    main_metric, mar_metric = f"nDCG@{k}", f"MAR-DCG@{k}"
    tables = {m: result.table_markdown(m) for m in result.metrics}
    print(f"\n## True {main_metric} (expected, unclicked items; normalised by the ideal)\n")
    print(tables[main_metric])
    print(f"\n## True DCG@{k} (expected, unnormalised)\n")
    print(tables[f"DCG@{k}"])
    print(f"\n## Coat-like {mar_metric} ({settings.n_test_items} random items/user, authors')\n")
    print(tables[mar_metric])
    print("\nWorld per strength (seed means):")
    for s in settings.strengths:
        w = result.worlds[f"{s:g}"]
        mean = {key: sum(v[key] for v in w.values()) / len(w) for key in next(iter(w.values()))}
        print(
            f"  s={s:g}: exposures {mean['exposures']:.0f}, clicks {mean['clicks']:.0f}, "
            f"θ in [{mean['theta_min']:.1e}, {mean['theta_max']:.2f}], exposure share of the "
            f"top-10% popular items {mean['exposure_share_top10pct_items']:.2f}, mean R exposed "
            f"{mean['mean_R_exposed']:.3f} (all {mean['mean_R_all']:.3f}), Spearman(estimated θ, "
            f"true θ) at clicks {mean['spearman_estimated_vs_true_theta_at_clicks']:.2f}"
        )
    verdict = verdicts(result, main_metric)
    print(
        f"\nvs {settings.baseline} on true {main_metric} (paired {settings.test}-test, p < 0.05):"
    )
    for model, v in verdict.items():
        print(
            f"  {model}: beats at s = {v['beats_baseline_at']}, loses at s = {v['loses_to_baseline_at']}"
        )
    png = RESULTS / f"{name}.png"
    plot(result, png, main_metric, coat)
    print(f"\nwall time {wall:.0f} s ({settings.workers} worker processes); plot {png}")
    payload: dict[str, Any] = {
        "command": command,
        "config": str(args.config),
        "settings": asdict(settings),
        "models": [asdict(m) for m in models],
        "protocol": {
            "truth": f"{main_metric}/DCG@{k}: expected DCG of each user's top {k} among the items "
            "the user did not click in training, gain R_ui (known relevance probability), "
            "discount 1/log2(rank+1); nDCG divides by the ideal DCG of the same candidates",
            "mar": f"{mar_metric}: authors' DCG@{k} (sum g/log2(max(rank,2)) / sum g) on "
            f"{settings.n_test_items} uniformly random items per user (fixed per seed), gains R_ui",
            "tuning": f"grid search on SNIPS-DCG@{settings.val_k} over a {settings.val_fraction:.0%} "
            f"held-out split of seed {settings.seeds[0]}'s MNAR clicks, once per strength "
            "(oracle models: the true θ in the fit and in the validation weights)",
            "seeds": "each seed redraws exposure, relevance, the MAR test items and the model "
            "initialisation" + ("; and the preference world" if settings.resample_world else ""),
            "significance": f"paired {settings.test}-test over seeds vs {settings.baseline}",
        },
        "tables_markdown": tables,
        "summary": result.summary,
        "verdicts": verdict,
        "tuning": result.tuning,
        "worlds": result.worlds,
        "per_seed": result.per_seed,
        "plot": str(png.relative_to(RESULTS.parent.parent)),
        "wall_seconds": wall,
        "coat_on_scale": coat,
    }
    _print_coat(coat)
    path = write_result(name, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
