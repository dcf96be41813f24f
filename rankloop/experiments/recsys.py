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
5. mean ± std over seeds, a paired test (over seeds) of each model against the baseline, fit
   time per model; a table (Markdown, CSV), per-seed JSON, metrics JSON and a PNG.
"""

from __future__ import annotations

import csv
import io
import itertools
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from rankloop.errors import ConfigError, RankloopError
from rankloop.experiments import (
    environment_info,
    read_yaml_config,
    write_run_record,
    write_seeded_results,
)
from rankloop.io import atomic_write
from rankloop.recsys.interactions import Interactions

MODEL_TYPES = ("wmf", "bpr", "expomf", "relmf", "ubpr", "popularity", "random")
_NEEDS_PROPENSITY = ("relmf", "ubpr")
_NOT_TUNED = ("popularity", "random")


@dataclass
class ModelSpec:
    """One row of the table: a display name, a model type, fixed params and a tuning grid.

    A grid key "a,b" sets both parameters a and b to each listed value (tied parameters).
    """

    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in MODEL_TYPES:
            raise ConfigError(
                f"model {self.name!r}: type must be one of {MODEL_TYPES}, got {self.type!r}"
            )
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"model {self.name!r}: grid {key!r} must be a non-empty list")

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


@dataclass
class RecsysConfig:
    """A recsys experiment, loadable from YAML (see configs/recsys_coat.yaml)."""

    models: list[ModelSpec]
    name: str = "recsys"
    dataset: str = "coat"
    path: str | None = None
    head_users: int | None = None
    train_labels: str = "graded_bernoulli"
    eps: float = 0.1
    threshold: float = 4.0
    relevance: str = "authors"
    propensity: dict[str, Any] = field(
        default_factory=lambda: {"estimator": "popularity", "eta": 0.5}
    )
    seeds: list[int] = field(default_factory=lambda: list(range(10)))
    ks: list[int] = field(default_factory=lambda: [1, 3, 5])
    tune_seed: int = 0
    val_fraction: float = 0.1
    val_repeats: int = 1
    val_negatives: int = 100
    val_k: int = 5
    baseline: str = "WMF"
    test: str = "t"
    popularity_buckets: int = 4
    bucket_metric: str = "DCG@5"
    anchors: dict[str, float] = field(default_factory=dict)
    anchor_metric: str = "DCG@5"
    out: str = "runs/recsys"

    def __post_init__(self) -> None:
        if self.dataset not in ("coat", "yahoo-r3"):
            raise ConfigError(
                f"dataset must be 'coat' or 'yahoo-r3' (the sets with a MAR test), got {self.dataset!r}"
            )
        if self.train_labels not in ("graded_bernoulli", "threshold"):
            raise ConfigError(
                f"train_labels must be 'graded_bernoulli' or 'threshold', got {self.train_labels!r}"
            )
        if self.relevance not in ("authors", "graded", "binary"):
            raise ConfigError(
                f"relevance must be 'authors', 'graded' or 'binary', got {self.relevance!r}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds must be a non-empty list of distinct integers")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"model names must be unique, got {names}")
        if self.baseline not in names:
            raise ConfigError(f"baseline {self.baseline!r} is not one of the models {names}")
        if self.propensity.get("estimator") not in (
            "popularity",
            "naive_bayes",
            "logistic",
            "shipped",
        ):
            raise ConfigError(
                "propensity.estimator must be popularity, naive_bayes, logistic or shipped, "
                f"got {self.propensity.get('estimator')!r}"
            )
        if not isinstance(self.val_repeats, int) or self.val_repeats < 1:
            raise ConfigError(f"val_repeats must be a positive int, got {self.val_repeats!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<config>") -> RecsysConfig:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}; known: {sorted(known)}")
        if "models" not in raw or not raw["models"]:
            raise ConfigError(f"{source}: 'models' must list at least one model")
        data = dict(raw)
        if isinstance(data.get("seeds"), int):
            data["seeds"] = list(range(data["seeds"]))
        models = []
        for m in data.pop("models"):
            if (
                not isinstance(m, dict)
                or not {"name", "type"} <= set(m)
                or set(m) - {"name", "type", "params", "grid"}
            ):
                raise ConfigError(
                    f"{source}: each model needs name and type (and optional params, grid): {m!r}"
                )
            models.append(ModelSpec(**m))
        try:
            return cls(models=models, **data)
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> RecsysConfig:
        return cls.from_dict(read_yaml_config(path), str(path))


# ---- reference scorers ------------------------------------------------------------------
class PopularityScorer:
    """Scores every user's items by MNAR training popularity (number of clicks)."""

    def fit(self, clicks: Interactions) -> PopularityScorer:
        self.counts_ = clicks.item_counts().astype(np.float64)
        return self

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.counts_[np.asarray(items)]


class RandomScorer:
    """Uniformly random scores (seeded): the level any model must beat."""

    def __init__(self, random_state: int = 0) -> None:
        self.random_state = random_state

    def fit(self, clicks: Interactions) -> RandomScorer:
        self.rng_ = np.random.default_rng(self.random_state)
        return self

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.rng_.random(np.asarray(users).shape)


def _make(spec_type: str, params: dict[str, Any], seed: int):
    from rankloop.recsys.baselines import BPR, WMF
    from rankloop.recsys.expomf import ExpoMF
    from rankloop.recsys.relmf import RelMF
    from rankloop.recsys.ubpr import UBPR

    classes = {"wmf": WMF, "bpr": BPR, "expomf": ExpoMF, "relmf": RelMF, "ubpr": UBPR}
    if spec_type == "popularity":
        return PopularityScorer()
    if spec_type == "random":
        return RandomScorer(random_state=seed)
    try:
        return classes[spec_type](**{**params, "random_state": seed})
    except TypeError as e:
        raise ConfigError(f"{spec_type}: bad parameter ({e})") from None


def _fit(model, spec_type: str, clicks: Interactions, propensity) -> None:
    if spec_type in _NEEDS_PROPENSITY:
        model.fit(clicks, propensity=propensity)
    else:
        model.fit(clicks)


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
        return train.sample_clicks(config.eps, random_state=seed)
    return train.binarize(config.threshold)


def _carve_mar_sample(
    test: Interactions, fraction: float, seed: int
) -> tuple[Interactions, Interactions]:
    """Split MAR test users into (sample for propensity estimation, users kept for evaluation)."""
    rng = np.random.default_rng(seed)
    users = np.flatnonzero(test.user_counts())
    chosen = np.zeros(test.n_users, bool)
    chosen[rng.choice(users, max(1, round(fraction * len(users))), replace=False)] = True
    keep = np.repeat(chosen, test.user_counts())
    u, i, r = test.to_triples()

    def part(mask: np.ndarray) -> Interactions:
        return Interactions.from_triples(
            users=u[mask],
            items=i[mask],
            values=r[mask],
            n_users=test.n_users,
            n_items=test.n_items,
            kind="explicit",
            user_ids=test.user_ids,
            item_ids=test.item_ids,
            name=test.name,
        )

    return part(keep), part(~keep)


def _propensity(config: RecsysConfig, data, clicks: Interactions, mar_sample: Interactions | None):
    from rankloop.recsys import propensity as P

    opts = {k: v for k, v in config.propensity.items() if k not in ("estimator", "mar_fraction")}
    est = config.propensity["estimator"]
    try:
        if est == "popularity":
            return P.popularity_propensity(clicks, **opts)
        if est == "naive_bayes":
            return P.naive_bayes_propensity(data.train, mar_sample, **opts)
        if est == "logistic":
            if data.user_features is None:
                raise RankloopError(
                    f"{config.dataset} ships no user/item features for the logistic estimator"
                )
            return P.logistic_propensity(
                data.train,
                user_features=data.user_features,
                item_features=data.item_features,
                **opts,
            )
    except TypeError as e:
        raise ConfigError(f"propensity {est}: bad option ({e})") from None
    if data.shipped_propensities is None:
        raise RankloopError(f"{config.dataset} ships no propensities")
    return data.shipped_propensities


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
        p = self.protocol
        return "\n".join(f"- {k}: {v}" for k, v in p.items())


def _log(msg: str, verbose: bool) -> None:
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def run_recsys(config: RecsysConfig, *, verbose: bool = True) -> RecsysResult:
    """Run the experiment described by `config` and return its results (nothing is written)."""
    from rankloop.eval.significance import paired_test
    from rankloop.recsys.evaluate import (
        RELEVANCE_NOTES,
        evaluate_authors,
        popularity_buckets,
        standard_metrics,
        unbiased_dcg,
    )

    data = _load(config)
    test = data.test
    mar_sample = None
    if config.propensity["estimator"] == "naive_bayes":
        frac = float(config.propensity.get("mar_fraction", 0.05))
        mar_sample, test = _carve_mar_sample(test, frac, config.tune_seed)
    ks = tuple(config.ks)

    # 1. tuning on the tuning seed's MNAR clicks only
    tuning: dict[str, dict[str, Any]] = {}
    clicks0 = _clicks(config, data.train, config.tune_seed)
    splits = []
    for r in range(config.val_repeats):
        tr, va = clicks0.split(
            config.val_fraction, random_state=np.random.default_rng([config.tune_seed, r])
        )
        splits.append((tr, va, _propensity(config, data, tr, mar_sample)))
    for spec in config.models:
        points = spec.grid_points() if spec.type not in _NOT_TUNED else [dict(spec.params)]
        scores = []
        for params in points:
            vals = []
            for tr, va, prop_tr in splits:
                model = _make(spec.type, params, config.tune_seed)
                _fit(model, spec.type, tr, prop_tr)
                vals.append(
                    unbiased_dcg(
                        model,
                        tr,
                        va,
                        prop_tr,
                        k=config.val_k,
                        n_negatives=config.val_negatives,
                        random_state=config.tune_seed,
                    )
                )
            scores.append(float(np.mean(vals)))
        best = int(np.argmax(scores))
        tuning[spec.name] = {
            "best_params": points[best],
            "best_val": scores[best],
            "grid": [{"params": p, "val": s} for p, s in zip(points, scores)],
        }
        _log(
            f"tuned {spec.name}: {points[best]} (val SNIPS-DCG@{config.val_k} {scores[best]:.4f})",
            verbose,
        )

    # 2. per-seed fits and MAR evaluation
    counts = data.train.item_counts()
    bucket_of, bucket_labels = popularity_buckets(counts, config.popularity_buckets)
    per_seed: dict[str, dict[str, dict[str, Any]]] = {}
    protocol: dict[str, Any] = {}
    for seed in config.seeds:
        clicks = _clicks(config, data.train, seed)
        prop = _propensity(config, data, clicks, mar_sample)
        row: dict[str, dict[str, Any]] = {}
        for spec in config.models:
            model = _make(spec.type, tuning[spec.name]["best_params"], seed)
            t0 = time.perf_counter()
            _fit(model, spec.type, clicks, prop)
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
                + "), a fresh draw per seed",
                "test": f"MAR ratings, {a.protocol['n_users']} users (each ranks only its own test items)",
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
                f"{config.val_fraction:.0%} validation splits of seed {config.tune_seed}'s MNAR clicks; "
                + (
                    "MAR test unused"
                    if mar_sample is None
                    else f"MAR test unused except the {int((mar_sample.user_counts() > 0).sum())} MAR "
                    "users carved out for "
                    "the propensity estimate, who are not evaluated"
                ),
                "seeds": f"{len(config.seeds)} seeds: each redraws the clicks and the model initialisation",
                "significance": f"paired {config.test}-test over seeds vs {config.baseline}",
                "popularity_buckets": f"items split into {config.popularity_buckets} equal-size groups by MNAR "
                f"rating count (0 = rarest): {bucket_labels}; per bucket, {config.bucket_metric} of the full "
                "per-user ranking with gains only from that bucket's items, over users with a relevant item there",
            }
        per_seed[str(seed)] = row
        _log(
            f"seed {seed}: " + ", ".join(f"{n} {v[f'DCG@{max(ks)}']:.4f}" for n, v in row.items()),
            verbose,
        )

    # 3. summary
    first = per_seed[str(config.seeds[0])][config.baseline]
    metric_names = [m for m, v in first.items() if isinstance(v, float) and m != "fit_seconds"]
    summary = []
    for spec in config.models:
        vals = {
            m: np.array([per_seed[str(s)][spec.name][m] for s in config.seeds])
            for m in metric_names
        }
        base = {
            m: np.array([per_seed[str(s)][config.baseline][m] for s in config.seeds])
            for m in metric_names
        }
        pvals: dict[str, float | None] = {}
        for m in metric_names:
            if spec.name == config.baseline or len(config.seeds) < 2:
                pvals[m] = None
            else:
                pvals[m] = paired_test(vals[m], base[m], config.test, random_state=0)
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
