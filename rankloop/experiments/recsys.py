"""MNAR recommendation experiment: tune on MNAR validation, train per seed, evaluate on the MAR test.

`run_recsys(config)` does, for a data set with a self-selected training set and a MAR test:

1. clicks from the MNAR ratings (graded Bernoulli with ε, or rating >= threshold), per seed;
2. a propensity estimate (item popularity^η, naive Bayes on a carved-out MAR sample, a logistic
   model on features, or the shipped propensities);
3. tuning of every model on a validation split carved from the tuning seed's MNAR clicks only
   (self-normalised IPS DCG@k, never the MAR test);
4. for every seed, a fit with the tuned parameters on that seed's clicks and evaluation on the
   MAR test (the authors' protocol and the standard `rankloop.eval` measures), plus the
   authors' metric by item-popularity bucket;
5. mean ± std over seeds, a paired test (over seeds, `rankloop.eval.compare_values`) of each
   model against the baseline, fit time per model; a table (Markdown, CSV), per-seed JSON,
   metrics JSON and a PNG.

The models, baselines, propensity estimators and the MAR split come from `rankloop.recsys`; this
module only reads the config, calls them, evaluates and writes.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from rankloop._runtime import (
    Count,
    Probability,
    Seed,
    Seeds,
    YamlConfig,
    check_params,
    check_registry_params,
    environment_info,
    write_run_record,
)
from rankloop.data.interactions import Interactions
from rankloop.errors import ConfigError, RankloopError
from rankloop.experiments import write_seeded_results
from rankloop.io import atomic_write
from rankloop.recsys.propensity import PROPENSITY_ESTIMATORS
from rankloop.scale import map_tasks

_MAX_GRID_POINTS = 100_000  # a grid larger than this is a typo, not an experiment


# ---- the config ---------------------------------------------------------------------------------
@dataclass
class ModelSpec:
    """One row of the table: a display name, a model type (a `RECOMMENDERS` name), fixed params
    and a tuning grid.

    A grid key "a,b" sets both parameters a and b to each listed value (tied parameters).
    Parameter names and value types are checked against the model's constructor at load, and
    the grid may hold at most 100,000 points.
    """

    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from rankloop.recsys.models import RECOMMENDERS

        what = f"model {self.name!r}"
        if not self.name:
            raise ConfigError("a model needs a non-empty name")
        # random_state is the experiment's: the tuning seed, then each seed in turn
        check_registry_params(
            RECOMMENDERS, self.type, self.params, where_=what, reserved=("random_state",)
        )
        points = 1
        for key, values in self.grid.items():
            names = [n.strip() for n in key.split(",")]
            if not all(names):
                raise ConfigError(f"{what}: grid key {key!r} names an empty parameter")
            for value in values:
                check_registry_params(
                    RECOMMENDERS,
                    self.type,
                    dict.fromkeys(names, value),
                    where_=f"{what}: grid {key!r}",
                    reserved=("random_state",),
                )
            points *= len(values)
            if points > _MAX_GRID_POINTS:
                raise ConfigError(
                    f"{what}: the grid has more than {_MAX_GRID_POINTS:,} points "
                    f"(the product of its list lengths)"
                )

    def grid_points(self) -> list[dict[str, Any]]:
        """Every parameter combination of the grid, merged over the fixed params."""
        keys = list(self.grid)
        points = []
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            p = dict(self.params)
            for key, value in zip(keys, combo):
                for name in key.split(","):
                    p[name.strip()] = value
            points.append(p)
        return points or [dict(self.params)]


# The propensity functions behind `estimate_propensity`, and the arguments it passes itself.
_PROPENSITY_OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "popularity": ("popularity_propensity", ("clicks",)),
    "naive_bayes": ("naive_bayes_propensity", ("mnar", "mar")),
    "logistic": ("logistic_propensity", ("observed", "user_features", "item_features")),
}
_BUCKET_METRIC = re.compile(r"(DCG|Recall|MAP)@([0-9]+)")


@dataclass
class RecsysConfig(YamlConfig):
    """A recsys experiment, loadable from YAML (see configs/recsys_coat.yaml); `from_yaml`
    checks every key, type and bound before any work and names file:line on errors."""

    models: list[ModelSpec]
    name: str = "recsys"
    dataset: Literal["coat", "yahoo-r3"] = "coat"
    path: str | None = None
    head_users: Count | None = None
    train_labels: Literal["graded_bernoulli", "threshold"] = "graded_bernoulli"
    eps: Probability = 0.1
    threshold: float = 4.0
    relevance: Literal["authors", "graded", "binary"] = "authors"
    propensity: dict[str, Any] = field(
        default_factory=lambda: {"estimator": "popularity", "eta": 0.5}
    )
    seeds: Seeds = field(default_factory=lambda: list(range(10)))
    ks: Annotated[list[Count], Field(min_length=1)] = field(default_factory=lambda: [1, 3, 5])
    tune_random_state: Seed = 0
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    val_repeats: Annotated[int, Field(ge=1, le=1000)] = 1
    val_negatives: Count = 100
    val_k: Count = 5
    baseline: str = "WMF"
    test: Literal["t", "fisher", "bootstrap"] = "t"
    popularity_buckets: Count = 4
    bucket_metric: str = "DCG@5"
    anchors: dict[str, float] = field(default_factory=dict)
    anchor_metric: str = "DCG@5"
    # a share of the MAR ratings carved out as a uniform training slice (AutoDebias: 5%); those
    # ratings are then not evaluated, for any model, so every model is scored on the same rest
    uniform_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    # one fixed click draw for every seed (the authors' code draws once, seed 12345); None: a
    # fresh draw per seed
    clicks_random_state: Seed | None = None
    out: str = "runs/recsys"

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("models must list at least one model")
        if isinstance(self.seeds, int):  # `seeds: N` means 0..N-1
            self.seeds = list(range(self.seeds))
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct, got {self.seeds}")
        for key in ("name", "out", "baseline"):
            if not getattr(self, key):
                raise ConfigError(f"{key} must be a non-empty string")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"model names must be unique, got {names}")
        if self.baseline not in names:
            raise ConfigError(f"baseline {self.baseline!r} is not one of the models {names}")
        unknown = [a for a in self.anchors if a not in names]
        if unknown:
            raise ConfigError(f"anchors name unknown models {unknown}; models: {names}")
        m = _BUCKET_METRIC.fullmatch(self.bucket_metric)
        if m is None or int(m.group(2)) not in self.ks:
            raise ConfigError(
                f"bucket_metric must be DCG@k, Recall@k or MAP@k with k one of ks {self.ks}, "
                f"got {self.bucket_metric!r}"
            )
        self._check_propensity()

    def _check_propensity(self) -> None:
        from rankloop.recsys import propensity as prop

        estimator = self.propensity.get("estimator")
        if estimator not in PROPENSITY_ESTIMATORS:
            raise ConfigError(
                f"propensity.estimator must be one of {', '.join(PROPENSITY_ESTIMATORS)}, "
                f"got {estimator!r}"
            )
        options = {k: v for k, v in self.propensity.items() if k != "estimator"}
        if "mar_fraction" in options:
            frac = options.pop("mar_fraction")
            if estimator != "naive_bayes":
                raise ConfigError(
                    "propensity.mar_fraction applies to the naive_bayes estimator only"
                )
            if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
                raise ConfigError(f"propensity.mar_fraction must be in (0, 1), got {frac!r}")
        if estimator == "shipped":
            if options:
                raise ConfigError(
                    f"the shipped propensities take no options, got {sorted(options)}"
                )
            return
        func, passed = _PROPENSITY_OPTIONS[estimator]
        check_params(
            getattr(prop, func),
            options,
            f"propensity {estimator!r}",
            where_="propensity",
            skip=passed,
        )


# ---- data, labels, propensities ---------------------------------------------------------
def _load(config: RecsysConfig):
    from rankloop.data.ratings import load_coat, load_yahoo_r3

    data = load_coat(config.path) if config.dataset == "coat" else load_yahoo_r3(config.path)
    if data.test is None:
        raise RankloopError(f"{config.dataset}: no MAR test set")
    if config.head_users is not None:
        data = data.head(config.head_users)
    return data


def _clicks(config: RecsysConfig, train: Interactions, seed: int) -> Interactions:
    if config.train_labels == "graded_bernoulli":
        fixed = config.clicks_random_state
        return train.sample_clicks(config.eps, random_state=seed if fixed is None else fixed)
    return train.binarize(config.threshold)


def _check_inputs(config: RecsysConfig, context: dict[str, Any]) -> None:
    """Fail before any fit when a model needs an input (a uniform slice, ...) the run lacks."""
    from rankloop.recsys.models import FIT_INPUTS, fit_inputs, make_recommender

    for spec in config.models:
        model = make_recommender(spec.type, spec.params, where=f"model {spec.name!r}")
        for name in fit_inputs(model):
            if name in context and context[name] is None:
                hint = " (set uniform_fraction)" if name == "uniform" else ""
                raise ConfigError(
                    f"model {spec.name!r} ({spec.type}) needs {FIT_INPUTS[name]}{hint}"
                )


# ---- the run ----------------------------------------------------------------------------
def _torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class RecsysResult:
    """Per-seed metrics, tuning log, summary rows and the protocol text of one run."""

    config: RecsysConfig
    per_seed: dict[str, dict[str, dict[str, Any]]]
    tuning: dict[str, dict[str, Any]]
    summary: list[dict[str, Any]]
    buckets: list[str]
    protocol: dict[str, Any]
    environment: dict[str, Any]

    def table_markdown(self) -> str:
        """The summary as a Markdown table (mean ± std over seeds; p vs the baseline)."""
        c = self.config
        k = max(c.ks)
        cols = [f"DCG@{k}", f"Recall@{k}", f"MAP@{k}", f"nDCG@{k}", f"R@{k}"]
        head = ["model", *(f"{m}" for m in cols), f"p DCG@{k}", f"p Recall@{k}", "fit s"]
        if c.anchors:
            head.append(f"anchor {c.anchor_metric}")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.summary:
            cells = [row["model"]]
            cells += [f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}" for m in cols]
            for m in (f"DCG@{k}", f"Recall@{k}"):
                p = row["p_vs_baseline"].get(m)
                cells.append(
                    "baseline" if row["model"] == c.baseline else ("-" if p is None else f"{p:.3g}")
                )
            cells.append(f"{row['fit_seconds']:.3f}")
            if c.anchors:
                a = c.anchors.get(row["model"])
                cells.append("" if a is None else f"{a:.4f}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def table_csv(self) -> str:
        """The summary as CSV: mean and std over seeds of every metric, and the fit time."""
        buf = io.StringIO()
        metrics = sorted(
            {
                m
                for row in self.summary
                for m in row
                if isinstance(row[m], dict) and "mean" in row[m]
            }
        )
        w = csv.writer(buf)
        w.writerow(
            ["model", *(f"{m}_{s}" for m in metrics for s in ("mean", "std")), "fit_seconds"]
        )
        for row in self.summary:
            w.writerow(
                [
                    row["model"],
                    *(f"{row[m][s]:.6f}" for m in metrics for s in ("mean", "std")),
                    f"{row['fit_seconds']:.4f}",
                ]
            )
        return buf.getvalue()

    def protocol_text(self) -> str:
        """The protocol (data, labels, tuning, seeds, tests) as a Markdown bullet list."""
        p = self.protocol
        return "\n".join(f"- {k}: {v}" for k, v in p.items())


def _log(msg: str, verbose: bool) -> None:
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def run_recsys(config: RecsysConfig, *, verbose: bool = True) -> RecsysResult:
    """Run the experiment described by `config` and return its results (nothing is written)."""
    from rankloop.eval import compare_values
    from rankloop.recsys.evaluate import (
        RELEVANCE_NOTES,
        evaluate_authors,
        popularity_buckets,
        standard_metrics,
    )
    from rankloop.recsys.models import fit_recommender, make_recommender
    from rankloop.recsys.propensity import estimate_propensity
    from rankloop.recsys.tuning import tune_recommender, validation_splits

    data = _load(config)
    test = data.test
    mar_sample = None
    if config.propensity["estimator"] == "naive_bayes":
        frac = float(config.propensity.get("mar_fraction", 0.05))
        mar_sample, test = test.split_users(frac, random_state=config.tune_random_state)
    uniform = None
    if config.uniform_fraction is not None:  # a uniform slice for the models that learn from one
        test, uniform = test.split(
            config.uniform_fraction,
            random_state=np.random.default_rng([config.tune_random_state, 7]),
        )
    context = {"exposure": data.train, "uniform": uniform}
    _check_inputs(config, context)
    ks = tuple(config.ks)
    estimator = config.propensity["estimator"]
    options = {k: v for k, v in config.propensity.items() if k not in ("estimator", "mar_fraction")}

    def propensity(clicks: Interactions) -> Any:
        return estimate_propensity(estimator, data, clicks, mar_sample=mar_sample, **options)

    # 1. tuning on the tuning seed's MNAR clicks only
    tuning: dict[str, dict[str, Any]] = {}
    splits = validation_splits(
        _clicks(config, data.train, config.tune_random_state),
        propensity,
        fraction=config.val_fraction,
        repeats=config.val_repeats,
        random_state=config.tune_random_state,
    )
    for spec in config.models:  # each grid point is a Ray task under --ray
        tuned = tune_recommender(
            spec.type,
            spec.grid_points(),
            splits,
            k=config.val_k,
            n_negatives=config.val_negatives,
            random_state=config.tune_random_state,
            where=f"model {spec.name!r}",
            progress=verbose,
            **context,
        )
        tuning[spec.name] = asdict(tuned)
        _log(
            f"tuned {spec.name}: {tuned.best_params} "
            f"(val SNIPS-DCG@{config.val_k} {tuned.best_val:.4f})",
            verbose,
        )

    # 2. per-seed fits and MAR evaluation
    counts = data.train.item_counts()
    bucket_of, bucket_labels = popularity_buckets(counts, config.popularity_buckets)
    per_seed: dict[str, dict[str, dict[str, Any]]] = {}
    protocol: dict[str, Any] = {}

    def fit_seed(seed: int) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Fit and evaluate every tuned model on one seed's clicks (a Ray task under --ray)."""
        protocol: dict[str, Any] = {}
        clicks = _clicks(config, data.train, seed)
        prop = propensity(clicks)
        row: dict[str, dict[str, Any]] = {}
        for spec in config.models:
            model = make_recommender(spec.type, tuning[spec.name]["best_params"], random_state=seed)
            t0 = time.perf_counter()
            fit_recommender(model, clicks, prop, **context)
            fit_s = time.perf_counter() - t0
            a = evaluate_authors(
                model, test, ks=ks, relevance=config.relevance, threshold=config.threshold
            )
            s = standard_metrics(model, test, ks=ks, threshold=config.threshold)
            by_bucket = [
                evaluate_authors(
                    model,
                    test,
                    ks=ks,
                    relevance=config.relevance,
                    threshold=config.threshold,
                    gain_mask=bucket_of == b,
                    drop_users_without_relevant=True,
                ).mean[config.bucket_metric]
                for b in range(config.popularity_buckets)
            ]
            row[spec.name] = {
                **a.mean,
                **s.mean,
                "fit_seconds": fit_s,
                "by_bucket": by_bucket,
            }
            protocol = {
                "dataset": config.dataset,
                "train": f"MNAR ratings -> clicks ({config.train_labels}"
                + (
                    f", eps={config.eps}"
                    if config.train_labels == "graded_bernoulli"
                    else f", >= {config.threshold:g}"
                )
                + ")",
                "test": f"MAR ratings, {a.protocol['n_users']} users (each ranks only its own test items)"
                + (
                    ""
                    if uniform is None
                    else f"; {uniform.nnz:,} MAR ratings ({config.uniform_fraction:.0%}) carved out as "
                    "the uniform slice of the models that take one, and not evaluated for any model"
                ),
                "clicks": "a fresh draw per seed"
                if config.clicks_random_state is None or config.train_labels != "graded_bernoulli"
                else f"one draw (random_state {config.clicks_random_state}) for every seed",
                "authors_protocol": a.protocol["dcg"]
                + "; "
                + RELEVANCE_NOTES[config.relevance]
                + f"; users without relevant items {a.protocol['users_without_relevant']}",
                "standard_protocol": f"{s.protocol['name']}; {s.protocol['relevance']}; users without "
                f"relevant items {s.protocol['users_without_relevant']} ({s.protocol['n_users']} users)",
                "propensity": dict(config.propensity),
                "tuning": f"grid search on SNIPS-DCG@{config.val_k} "
                f"({config.propensity['estimator']}-propensity weighted, "
                f"{config.val_negatives} sampled negatives) averaged over {config.val_repeats} random "
                f"{config.val_fraction:.0%} validation splits of seed {config.tune_random_state}'s MNAR clicks; "
                + (
                    "MAR test unused"
                    if mar_sample is None
                    else f"MAR test unused except the {int((mar_sample.user_counts() > 0).sum())} MAR "
                    "users carved out for "
                    "the propensity estimate, who are not evaluated"
                ),
                "seeds": f"{len(config.seeds)} seeds: each redraws "
                + (
                    "the clicks and the model initialisation"
                    if config.clicks_random_state is None
                    or config.train_labels != "graded_bernoulli"
                    else "the model initialisation (the clicks are one fixed draw)"
                ),
                "significance": f"paired {config.test}-test over seeds vs {config.baseline}",
                "popularity_buckets": f"items split into {config.popularity_buckets} equal-size groups by MNAR "
                f"rating count (0 = rarest): {bucket_labels}; per bucket, {config.bucket_metric} of the full "
                "per-user ranking with gains only from that bucket's items, over users with a relevant item there",
            }
        return row, protocol

    for seed, (row, seed_protocol) in zip(config.seeds, map_tasks(fit_seed, config.seeds)):
        per_seed[str(seed)], protocol = row, seed_protocol
        _log(
            f"seed {seed}: " + ", ".join(f"{n} {v[f'DCG@{max(ks)}']:.4f}" for n, v in row.items()),
            verbose,
        )

    # 3. summary: the seeds are the paired units of the tests against the baseline
    first = per_seed[str(config.seeds[0])][config.baseline]
    metric_names = [m for m, v in first.items() if isinstance(v, float) and m != "fit_seconds"]
    values = {
        spec.name: {
            m: np.array([per_seed[str(s)][spec.name][m] for s in config.seeds])
            for m in metric_names
        }
        for spec in config.models
    }
    table = None
    if len(config.seeds) >= 2:
        table = compare_values(
            values,
            config.baseline,
            test=config.test,
            unit_ids=[str(s) for s in config.seeds],
            random_state=0,
            unit="seeds",
        )
    summary = []
    for spec in config.models:
        vals = values[spec.name]
        pvals: dict[str, float | None] = {
            m: None if table is None else table.pvalue[spec.name][m] for m in metric_names
        }
        buckets = np.array([per_seed[str(s)][spec.name]["by_bucket"] for s in config.seeds])
        summary.append(
            {
                "model": spec.name,
                **{
                    m: {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
                    for m, v in vals.items()
                },
                "p_vs_baseline": pvals,
                "fit_seconds": float(
                    np.mean([per_seed[str(s)][spec.name]["fit_seconds"] for s in config.seeds])
                ),
                "by_bucket_mean": buckets.mean(0).tolist(),
                "by_bucket_std": (
                    buckets.std(0, ddof=1) if len(buckets) > 1 else np.zeros(buckets.shape[1])
                ).tolist(),
                "params": tuning[spec.name]["best_params"],
            }
        )
    return RecsysResult(
        config,
        per_seed,
        tuning,
        summary,
        bucket_labels,
        protocol,
        environment_info(_torch_device()),
    )


def plot_buckets(result: RecsysResult, path: Path) -> None:
    """PNG of the bucket metric per model across item-popularity buckets (rarest left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_b = len(result.buckets)
    rows = result.summary
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * n_b, 4.0))
    x = np.arange(n_b)
    for j, row in enumerate(rows):
        ax.bar(
            x + (j - (len(rows) - 1) / 2) * width,
            row["by_bucket_mean"],
            width,
            yerr=row["by_bucket_std"],
            capsize=2,
            label=row["model"],
        )
    ax.set_xticks(
        x,
        [
            f"{lab}\n({'rarest' if b == 0 else 'most popular' if b == n_b - 1 else ''})".replace(
                "\n()", ""
            )
            for b, lab in enumerate(result.buckets)
        ],
    )
    ax.set_xlabel("item popularity bucket (MNAR training ratings per item)")
    ax.set_ylabel(f"MAR-test {result.config.bucket_metric} (authors' protocol)")
    ax.set_title(
        f"{result.config.dataset}: {result.config.bucket_metric} by item popularity, "
        f"mean ± std over {len(result.config.seeds)} seeds"
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)


def write_outputs(result: RecsysResult, out: str | Path) -> Path:
    """Write config, environment, table (md, csv), per-seed JSON, metrics JSON and the PNG under `out`."""
    out = Path(out)
    write_run_record(out, asdict(result.config), result.environment)
    write_seeded_results(
        out,
        markdown=f"# {result.config.name}\n\n{result.table_markdown()}\n\n"
        f"Protocol:\n{result.protocol_text()}\n",
        csv=result.table_csv(),
        per_seed=result.per_seed,
        metrics={
            "summary": result.summary,
            "tuning": result.tuning,
            "protocol": result.protocol,
            "buckets": result.buckets,
        },
        json_default=str,
    )
    plot_buckets(result, out / "popularity_buckets.png")
    return out
