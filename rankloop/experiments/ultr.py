"""Semi-synthetic unbiased-learning-to-rank experiment (ULTRA's protocol on BEIR qrels).

`run_ultr(config)` does:

1. candidates: the logging ranker's (BM25 by default) top-k for the train and test queries of each
   data set; features from the toolkit's signals (`rankloop.rerank.ltr.build_features`), cached
   on disk per data set and settings;
2. for every click model and seed: `max(sessions)` sessions over the training queries (uniform),
   each showing the logging ranker's top-k, with clicks from the click model on the true train
   grades (ULTRA's `eps + (1-eps)(2^g-1)/(2^gmax-1)`); smaller logs are prefixes of it;
3. for every log size: aggregate per displayed list, train every estimator, rerank the test
   queries' top-k and score nDCG@10 with the true test qrels (every judged test query counts,
   as trec_eval -c); a full-information model is trained on the true train grades per seed;
4. mean ± std over seeds, the share of the Naive -> full-information gap each estimator closes,
   a paired t-test over seeds against Naive (`rankloop.eval.compare_values`); a Markdown/CSV
   table, JSON and a PNG of nDCG@10 against the number of sessions.

IPS uses the true PBM propensities (`propensity: true`, PBM only) or propensities estimated from a
separate result-randomisation log (`propensity: swap`) of as many sessions as the click log.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from rankloop._runtime import (
    Count,
    Probability,
    Seeds,
    Threads,
    YamlConfig,
    cache_dir,
    check_params,
    check_registry_params,
    environment_info,
    write_run_record,
)
from rankloop.clicks.models import MODELS
from rankloop.errors import ConfigError, RankloopError
from rankloop.experiments import write_seeded_results
from rankloop.io import atomic_write
from rankloop.rerank.ltr.features import LtrData, build_features, concat_ltr
from rankloop.scale import map_tasks

SIGNALS = ("dense", "rm3")
LOGGING_RANKERS = ("bm25", "dense")
MEASURE = "ndcg_cut_10"
FULL_INFO = "Full information"
LOGGING = "Logging ranker"
_CACHE_VERSION = 1
# The `train:` keys the rankers take (the rest of `rankloop.rerank.ltr.train.Ranker`'s
# parameters come from other keys of the config).
TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay")
# torch devices a config may name
_DEVICE = Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")]
_STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


@with_config(_STRICT)
class BM25Params(TypedDict, total=False):
    """`bm25:` of the config (the logging ranker's and the RM3 run's BM25)."""

    k1: Annotated[float, Field(ge=0.0)]
    b: Probability


@with_config(_STRICT)
class RM3Params(TypedDict, total=False):
    """`rm3:` of the config (pyserini's `set_rm3`)."""

    fb_terms: Count
    fb_docs: Count
    original_query_weight: Probability


@with_config(_STRICT)
class TrainParams(TypedDict, total=False):
    """`train:` of the config: what every ranker and estimator trains with."""

    epochs: Count
    batch_size: Count | None
    lr: Annotated[float, Field(gt=0.0)]
    weight_decay: Annotated[float, Field(ge=0.0)]


@with_config(_STRICT)
class GoalParams(TypedDict, total=False):
    """`goal:` of the config: the gap `closure` one of `estimators` must reach."""

    click_model: str
    sessions: Count
    estimators: Annotated[list[str], Field(min_length=1)]
    closure: float


@dataclass
class ClickSpec:
    """One click setting: a display name, a `rankloop.clicks` model name and its parameters
    (checked against the model's constructor at load; `eps` and `max_grade` are the config's)."""

    name: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a click model needs a non-empty name")
        check_registry_params(
            MODELS,
            self.model.lower(),
            self.params,
            where_=f"click model {self.name!r}",
            reserved=("eps", "max_grade"),
        )


@dataclass
class EstimatorSpec:
    """One estimator row: a display name, a type (an `ESTIMATORS` name of
    `rankloop.rerank.ltr.ultr`), its parameters and (IPS) the propensity source. The
    parameters (the estimator's own and the ranker's, e.g. `loss`, `epochs`) are checked
    against the constructors at load."""

    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    propensity: Literal["true", "swap"] | None = None

    def __post_init__(self) -> None:
        from rankloop.rerank.ltr.losses import LOSSES
        from rankloop.rerank.ltr.ultr import ESTIMATORS

        what = f"estimator {self.name!r}"
        if not self.name:
            raise ConfigError("an estimator needs a non-empty name")
        # propensities are the experiment's (true or swap), random_state each seed in turn
        check_registry_params(
            ESTIMATORS,
            self.type,
            self.params,
            where_=what,
            reserved=("propensities", "random_state"),
        )
        if "loss" in self.params:
            LOSSES.get(self.params["loss"], where=f"{what}: loss")
        if "device" in self.params:
            _check_device(self.params["device"], f"{what}: device")
        if self.type == "ips" and self.propensity not in ("true", "swap"):
            raise ConfigError(f"{what}: IPS needs propensity 'true' (PBM only) or 'swap'")
        if self.type != "ips" and self.propensity is not None:
            raise ConfigError(f"{what}: only IPS takes a propensity source")


def _check_device(device: Any, what: str) -> None:
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(_DEVICE | None).validate_python(device, strict=True)
    except ValidationError:
        raise ConfigError(f"{what} must be auto, cpu, mps or cuda[:N], got {device!r}") from None


def _check_scorer(model: str, params: dict[str, Any], what: str) -> None:
    """The scorer `model` (`rankloop.rerank.ltr.models.SCORERS`) and its `params`."""
    from rankloop.rerank.ltr.models import SCORERS

    if model not in SCORERS:
        raise ConfigError(f"{what}: model must be one of {', '.join(SCORERS)}, got {model!r}")
    check_params(SCORERS[model], params, f"scorer {model!r}", where_=what, skip=("n_features",))


@dataclass
class UltrConfig(YamlConfig):
    """The ULTR experiment, loadable from YAML (see configs/ultr_semisynthetic.yaml); `from_yaml`
    checks every key, type and bound before any work and names file:line on errors."""

    click_models: list[ClickSpec]
    estimators: list[EstimatorSpec]
    name: str = "ultr"
    datasets: Annotated[list[str], Field(min_length=1)] = field(
        default_factory=lambda: ["scifact", "nfcorpus"]
    )
    train_split: str = "train"
    test_split: str = "test"
    k: Annotated[int, Field(ge=2, le=10_000)] = 10
    logging_ranker: Literal["bm25", "dense"] = "bm25"
    signals: list[Literal["dense", "rm3"]] = field(default_factory=lambda: ["dense", "rm3"])
    signal_k: Count = 100
    exclude_features: list[str] = field(default_factory=list)
    bm25: BM25Params = field(default_factory=lambda: {"k1": 0.9, "b": 0.4})
    rm3: RM3Params = field(
        default_factory=lambda: {"fb_terms": 10, "fb_docs": 10, "original_query_weight": 0.5}
    )
    eps: Probability = 0.1
    max_grade: Annotated[int, Field(ge=1, le=100)] = 2
    sessions: Annotated[list[Count], Field(min_length=1)] = field(
        default_factory=lambda: [10_000, 100_000, 1_000_000]
    )
    seeds: Seeds = field(default_factory=lambda: list(range(5)))
    model: str = "linear"
    model_params: dict[str, Any] = field(default_factory=dict)
    train: TrainParams = field(
        default_factory=lambda: {"epochs": 40, "batch_size": 512, "lr": 0.02, "weight_decay": 0.0}
    )
    full_info_loss: str = "listnet"
    swap_design: Literal["swap-first", "adjacent", "random-pair"] = "swap-first"
    baseline: str = "Naive"
    goal: GoalParams = field(default_factory=dict)  # type: ignore[assignment]
    cache: str | None = None
    out: str = "runs/ultr"
    device: _DEVICE = "auto"
    threads: Threads = 1
    max_queries: Count | None = None  # the first N train and N test queries per set (smoke runs)

    def __post_init__(self) -> None:
        from rankloop.rerank.ltr.losses import LOSSES

        if isinstance(self.seeds, int):  # `seeds: N` means 0..N-1
            self.seeds = list(range(self.seeds))
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct, got {self.seeds}")
        if not self.click_models or not self.estimators:
            raise ConfigError("click_models and estimators must each list at least one entry")
        for what, names in (
            ("click model", [c.name for c in self.click_models]),
            ("estimator", [e.name for e in self.estimators]),
        ):
            if len(set(names)) != len(names):
                raise ConfigError(f"{what} names must be unique, got {names}")
        estimators = [e.name for e in self.estimators]
        if self.baseline not in estimators:
            raise ConfigError(f"baseline {self.baseline!r} is not one of the estimators")
        bad = [s for s in self.signals if s == self.logging_ranker]
        if bad:
            raise ConfigError(
                f"signals must be among {SIGNALS} and differ from the logging ranker, got {bad}"
            )
        for key in ("name", "out", "train_split", "test_split"):
            if not getattr(self, key):
                raise ConfigError(f"{key} must be a non-empty string")
        if not all(self.datasets):
            raise ConfigError(f"datasets must be non-empty names, got {self.datasets}")
        LOSSES.get(self.full_info_loss, where="full_info_loss")
        _check_scorer(self.model, self.model_params, "model_params")
        for e in self.estimators:
            if "model" in e.params or "model_params" in e.params:
                _check_scorer(
                    e.params.get("model", self.model),
                    e.params.get("model_params") or {},
                    f"estimator {e.name!r}",
                )
        for c in self.click_models:
            exam = c.params.get("examination")
            if c.model.lower() == "pbm" and exam is not None:
                flat = all(isinstance(x, (int, float)) for x in exam)
                if not flat or len(exam) < self.k or not all(0.0 < x <= 1.0 for x in exam):
                    raise ConfigError(
                        f"click model {c.name!r}: examination must list at least k={self.k} "
                        f"probabilities in (0, 1], got {exam}"
                    )
        if self.goal:
            missing = [k for k in GoalParams.__annotations__ if k not in self.goal]
            if missing:
                raise ConfigError(
                    f"goal needs click_model, sessions, estimators and closure (missing {missing})"
                )
            if self.goal["click_model"] not in [c.name for c in self.click_models]:
                raise ConfigError(
                    f"goal.click_model {self.goal['click_model']!r} is not one of the click models"
                )
            unknown = [e for e in self.goal["estimators"] if e not in estimators]
            if unknown:
                raise ConfigError(f"goal.estimators names unknown estimators {unknown}")


    def quick(self) -> UltrConfig:
        """A smoke-test variant that runs in about a minute on 2 cores: the first data set, its
        first 200 train and test queries, no dense signal (no corpus encoding), one click model
        (the goal's, if set), 2 seeds, 10^3 and 10^4 sessions, at most 10 epochs."""
        cfg = UltrConfig.from_dict(asdict(self))
        cfg.datasets = cfg.datasets[:1]
        cfg.max_queries = min(cfg.max_queries or 200, 200)
        cfg.signals = [s for s in cfg.signals if s != "dense"]
        if cfg.logging_ranker == "dense":
            cfg.logging_ranker = "bm25"
        goal_model = [c for c in cfg.click_models if c.name == cfg.goal.get("click_model")]
        cfg.click_models = goal_model or cfg.click_models[:1]
        cfg.seeds = cfg.seeds[:2]
        cfg.sessions = [1_000, 10_000]
        cfg.train = {**cfg.train, "epochs": min(int(cfg.train.get("epochs", 40)), 10)}
        if cfg.goal:
            cfg.goal = {**cfg.goal, "click_model": cfg.click_models[0].name, "sessions": 10_000}
        cfg.name = f"{cfg.name}-quick"
        return cfg


# ---- features (cached) --------------------------------------------------------------------
def _feature_dir(config: UltrConfig) -> Path:
    """Where the feature cache lives: the config's `cache`, else `$RANKLOOP_CACHE/ultr`."""
    return Path(config.cache).expanduser() if config.cache else cache_dir("ultr")


def _feature_key(config: UltrConfig, dataset: str) -> str:
    spec = {
        "v": _CACHE_VERSION,
        "dataset": dataset,
        "splits": [config.train_split, config.test_split],
        "k": config.k,
        "logging": config.logging_ranker,
        "signals": config.signals,
        "signal_k": config.signal_k,
        "bm25": config.bm25,
        "rm3": config.rm3,
        "max_queries": config.max_queries,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return f"{dataset}-{digest}"


def _save_ltr(data: LtrData, path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        np.savez(
            fh,
            features=data.features,
            labels=data.labels,
            qids=data.qids,
            doc_ids=data.doc_ids,
            names=np.array(data.feature_names or [], dtype=str),
        )


def _load_ltr(path: Path) -> LtrData | None:
    try:
        with np.load(path) as z:
            return LtrData(
                z["features"], z["labels"], z["qids"], z["doc_ids"], [str(n) for n in z["names"]]
            )
    except (OSError, ValueError, KeyError, RankloopError):
        return None


def _prefixed(data: LtrData, prefix: str) -> LtrData:
    """Query and doc ids prefixed with `<data set>/`, so two data sets never clash."""
    return LtrData(
        data.features,
        data.labels,
        np.char.add(prefix + "/", data.qids.astype(str)),
        np.char.add(prefix + "/", data.doc_ids.astype(str)),  # type: ignore[union-attr]
        data.feature_names,
    )


def _dataset_features(
    config: UltrConfig, dataset: str, log: Any
) -> tuple[LtrData, LtrData, dict[str, Any]]:
    """(train, test) features of one data set, from the cache or built with the retrievers."""
    from rankloop.data import load
    from rankloop.data.types import Queries, Run

    root = _feature_dir(config)
    key = _feature_key(config, dataset)
    train_path, test_path = root / f"{key}.train.npz", root / f"{key}.test.npz"
    train, test = _load_ltr(train_path), _load_ltr(test_path)
    if train is not None and test is not None:
        log(f"{dataset}: features from cache {root / key}.*.npz")
        return train, test, {"cached": True}
    t0 = time.perf_counter()
    tr = load(dataset, split=config.train_split)
    te = load(dataset, split=config.test_split)
    if config.max_queries is not None:
        tr, te = (
            replace(d, queries=d.queries.subset(d.queries.ids[: config.max_queries]),
                    qrels=d.qrels.subset(d.queries.ids[: config.max_queries]))
            for d in (tr, te)
        )  # fmt: skip
    corpus = tr.corpus
    ids = list(dict.fromkeys([*tr.queries.ids, *te.queries.ids]))
    text = {**dict(tr.queries.items()), **dict(te.queries.items())}
    queries = Queries(ids, [text[q] for q in ids], dataset)
    runs: dict[str, Any] = {}
    need_bm25 = config.logging_ranker == "bm25" or "rm3" in config.signals
    if need_bm25:
        from rankloop.retrieval.sparse import BM25Retriever

        bm25 = BM25Retriever.cached(corpus, **config.bm25)
        log(f"{dataset}: BM25 search for {len(queries)} queries")
        runs["bm25"] = bm25.search(queries, max(config.k, config.signal_k))
        bm25.close()
        if "rm3" in config.signals:
            rm3 = BM25Retriever.cached(corpus, **config.bm25, rm3=config.rm3)
            log(f"{dataset}: BM25+RM3 search")
            runs["rm3"] = rm3.search(queries, config.signal_k)
            rm3.close()
    if config.logging_ranker == "dense" or "dense" in config.signals:
        from rankloop.retrieval.dense import DenseRetriever

        log(f"{dataset}: dense retrieval (MiniLM, FAISS Flat)")
        runs["dense"] = DenseRetriever.build(corpus).search(queries, config.signal_k)
    cand = runs[config.logging_ranker]
    signals = {s: runs[s] for s in config.signals}
    parts = []
    for split in (tr, te):
        sub = Run({q: cand[q] for q in split.queries.ids if q in cand}, cand.name)
        parts.append(
            build_features(
                sub,
                split.queries,
                corpus,
                k=config.k,
                signals=signals,
                qrels=split.qrels,
                candidate_name=config.logging_ranker,
            )
        )
    _save_ltr(parts[0], train_path)
    _save_ltr(parts[1], test_path)
    log(f"{dataset}: features built in {time.perf_counter() - t0:.0f}s -> {root / key}.*.npz")
    return parts[0], parts[1], {"cached": False, "build_s": round(time.perf_counter() - t0, 1)}


def prepare_data(config: UltrConfig, log: Any = print) -> tuple[LtrData, LtrData, Any]:
    """Train and test features over all data sets (ids prefixed) and the prefixed test qrels."""
    from rankloop.data import load
    from rankloop.data.types import Qrels

    trains, tests, qrels = [], [], {}
    for ds in config.datasets:
        tr, te, _ = _dataset_features(config, ds, log)
        trains.append(_prefixed(tr, ds))
        tests.append(_prefixed(te, ds))
        test_split = load(ds, split=config.test_split)
        test_qrels = test_split.qrels
        if config.max_queries is not None:  # the same first N queries the features hold
            test_qrels = test_qrels.subset(test_split.queries.ids[: config.max_queries])
        for q, docs in test_qrels.data.items():
            qrels[f"{ds}/{q}"] = {f"{ds}/{d}": g for d, g in docs.items()}
    train, test = concat_ltr(trains), concat_ltr(tests)
    if config.exclude_features:
        names = train.feature_names or []
        missing = [f for f in config.exclude_features if f not in names]
        if missing:
            raise ConfigError(f"exclude_features: unknown features {missing}; known: {names}")
        keep = [i for i, n in enumerate(names) if n not in config.exclude_features]
        train, test = (
            LtrData(
                d.features[:, keep],
                d.labels,
                d.qids,
                d.doc_ids,
                [names[i] for i in keep],
            )
            for d in (train, test)
        )
    return train, test, Qrels(qrels, "+".join(config.datasets))


# ---- the run --------------------------------------------------------------------------------


@dataclass
class UltrResult:
    """Per-seed scores, summary rows, learned propensities and references of one run."""

    config: UltrConfig
    records: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    references: dict[str, Any]
    goal: dict[str, Any] | None
    environment: dict[str, Any]
    timing: dict[str, float]

    def _cell(self, click: str, n: int | None, est: str) -> dict[str, Any] | None:
        for row in self.summary:
            if row["click_model"] == click and row["sessions"] == n and row["estimator"] == est:
                return row
        return None

    def table_markdown(self) -> str:
        """One table per click model: nDCG@10 mean ± std over seeds per estimator and log size."""
        c = self.config
        ref = self.references
        out = []
        for cm in c.click_models:
            head = "| estimator | " + " | ".join(f"{n:,} sessions" for n in c.sessions) + " |"
            lines = [
                f"**{cm.name}** (nDCG@10 on the test queries, mean ± std over "
                f"{len(c.seeds)} seeds; Δ% = share of the Naive → full-information gap closed)",
                "",
                head,
                "|---|" + "---|" * len(c.sessions),
            ]
            for est in c.estimators:
                cells = []
                for n in c.sessions:
                    row = self._cell(cm.name, n, est.name)
                    if row is None:
                        cells.append("n/a")
                        continue
                    text = f"{row['mean']:.4f} ± {row['std']:.4f}"
                    if est.name != c.baseline and row.get("gap_closed") is not None:
                        text += f" ({100 * row['gap_closed']:+.0f}%)"
                    cells.append(text)
                lines.append(f"| {est.name} | " + " | ".join(cells) + " |")
            full = ref["full_information"]
            lines.append(
                f"| {FULL_INFO} | "
                + " | ".join(f"{full['mean']:.4f} ± {full['std']:.4f}" for _ in c.sessions)
                + " |"
            )
            lines.append(
                f"| {LOGGING} ({c.logging_ranker} top-{c.k}) | "
                + " | ".join(f"{ref['logging_ranker']['mean']:.4f}" for _ in c.sessions)
                + " |"
            )
            out.append("\n".join(lines))
        if self.goal:
            g = self.goal
            out.append(
                f"Goal ({g['click_model']}, {g['sessions']:,} sessions): "
                + ", ".join(
                    f"{e} closes {100 * v:.0f}%" if v is not None else f"{e}: n/a"
                    for e, v in g["closure"].items()
                )
                + f" of the gap (target {100 * g['target']:.0f}%): "
                + ("met" if g["met"] else "NOT met")
            )
        return "\n\n".join(out)

    def table_csv(self) -> str:
        """Every summary row (long format)."""
        buf = io.StringIO()
        w = csv.writer(buf)
        cols = [
            "click_model",
            "sessions",
            "estimator",
            "mean",
            "std",
            "n_seeds",
            "gap_closed",
            "p_vs_baseline",
            "fit_s",
        ]
        w.writerow(cols)
        for row in self.summary:
            w.writerow([row.get(col) for col in cols])
        return buf.getvalue()


def _propensity_true(spec: ClickSpec, k: int) -> np.ndarray | None:
    """True examination per rank (relative to rank 1) for a PBM setting, else None."""
    from rankloop.clicks.probabilities import pbm_examination

    if spec.model.lower() != "pbm":
        return None
    exam = spec.params.get("examination")
    theta = (
        np.asarray(exam, float)[:k]
        if exam is not None
        else pbm_examination(k, float(spec.params.get("eta", 1.0)))
    )
    return theta / theta[0]


def _swap_propensities(
    config: UltrConfig, spec: ClickSpec, lists: dict, grades: dict, n: int, seed: int
) -> tuple[np.ndarray, int]:
    """Propensities from a separate randomised (swap) log of `n` sessions; NaN ranks filled."""
    from rankloop.clicks import make_model, sessions_from_lists, swap_interventions
    from rankloop.clicks import swap_propensities as estimate

    rng = np.random.default_rng([seed, 7919])
    sessions, rel = sessions_from_lists(lists, n, rng, grades=grades)
    shuffled, rel, pairs = swap_interventions(sessions, config.swap_design, rng, rel)  # type: ignore[arg-type]
    model = make_model(spec.model, eps=config.eps, max_grade=config.max_grade, **spec.params)
    clicks = model.simulate(shuffled, rel, rng)
    theta = estimate(shuffled.with_clicks(clicks), pairs)
    bad = ~np.isfinite(theta) | (theta <= 0)
    if bad.all():
        raise RankloopError(f"{spec.name}: swap log of {n} sessions gave no usable propensity")
    theta[bad] = np.nanmin(np.where(bad, np.nan, theta))
    return theta, int(bad.sum())


def _score(run: Any, qrels: Any) -> tuple[float, dict[str, float]]:
    """Mean nDCG@10 over every judged test query (trec_eval -c), overall and per data set."""
    from rankloop.eval import evaluate

    per_q = evaluate(qrels, run, MEASURE, complete=True, per_query=True)
    vals = {q: v[MEASURE] for q, v in per_q.items()}  # type: ignore[union-attr]
    by_ds: dict[str, list[float]] = {}
    for q, v in vals.items():
        by_ds.setdefault(q.split("/", 1)[0], []).append(v)
    return float(np.mean(list(vals.values()))), {d: float(np.mean(v)) for d, v in by_ds.items()}


def _logging_run(test: LtrData) -> Any:
    """The logging ranker's own order (the row order of `test`) as a Run."""
    from rankloop.data.types import Run

    off = test.group_offsets()
    docs = test.doc_ids.tolist()  # type: ignore[union-attr]
    return Run(
        {
            q: {d: float(-i) for i, d in enumerate(docs[a:b])}
            for q, a, b in zip(test.query_ids, off[:-1], off[1:])
        },
        LOGGING,
    )


def _train_params(config: UltrConfig, seed: int) -> dict[str, Any]:
    return {
        "model": config.model,
        "model_params": dict(config.model_params) or None,
        "device": config.device,
        "random_state": seed,
        **config.train,
    }


def run_ultr(config: UltrConfig, *, verbose: bool = True) -> UltrResult:
    """Run the whole protocol (see the module docstring) and return the results."""
    import torch

    from rankloop.clicks import make_model, sessions_from_lists
    from rankloop.rerank.ltr.models import resolve_device
    from rankloop.rerank.ltr.train import Ranker
    from rankloop.rerank.ltr.ultr import aggregate_clicks, make_estimator

    def log(msg: str) -> None:
        if verbose:
            print(f"[ultr] {msg}", file=sys.stderr, flush=True)

    torch.set_num_threads(config.threads)
    device = str(resolve_device(config.device))
    t_start = time.perf_counter()
    train, test, qrels = prepare_data(config, log)
    t_data = time.perf_counter()
    log(
        f"{len(train.query_ids)} train queries, {len(test.query_ids)} test queries, "
        f"{train.n_features} features: {', '.join(train.feature_names or [])}"
    )
    off = train.group_offsets()
    lists = {q: train.doc_ids[a:b].tolist() for q, a, b in zip(train.query_ids, off[:-1], off[1:])}  # type: ignore[index]
    grades = {
        q: np.minimum(train.labels[a:b], config.max_grade).astype(int).tolist()
        for q, a, b in zip(train.query_ids, off[:-1], off[1:])
    }
    logging_mean, logging_by = _score(_logging_run(test), qrels)
    full_scores, full_by = [], []
    for seed in config.seeds:
        ranker = Ranker(loss=config.full_info_loss, k=config.k, **_train_params(config, seed))
        m, by = _score(ranker.fit(train).rerank(test, FULL_INFO), qrels)
        full_scores.append(m)
        full_by.append(by)
    log(f"logging ranker {logging_mean:.4f}; full information {np.mean(full_scores):.4f}")
    need_pairs = any(
        e.type == "pairdebias" or e.params.get("loss") == "ranknet" for e in config.estimators
    )

    def play(task: tuple[int, int]) -> list[dict[str, Any]]:
        """Every estimator and log size of one (click model, seed) (a Ray task under --ray)."""
        ci, seed = task
        spec = config.click_models[ci]
        model = make_model(spec.model, eps=config.eps, max_grade=config.max_grade, **spec.params)
        true_theta = _propensity_true(spec, config.k)
        torch.set_num_threads(config.threads)
        records: list[dict[str, Any]] = []
        rng = np.random.default_rng([seed, ci])
        t0 = time.perf_counter()
        sessions, rel = sessions_from_lists(lists, max(config.sessions), rng, grades=grades)
        full_log = sessions.with_clicks(model.simulate(sessions, rel, rng))
        sim_s = time.perf_counter() - t0
        for n in sorted(config.sessions):
            data = aggregate_clicks(full_log.subset(slice(0, n)), train, pairs=need_pairs)
            swap = None
            for est in config.estimators:
                params = {**_train_params(config, seed), **est.params}
                extra: dict[str, Any] = {}
                if est.type == "ips":
                    if est.propensity == "true":
                        if true_theta is None:
                            continue
                        params["propensities"] = true_theta
                    else:
                        if swap is None:
                            swap = _swap_propensities(config, spec, lists, grades, n, seed)
                        params["propensities"] = swap[0]
                        extra["swap_nan_filled"] = swap[1]
                    extra["propensities"] = np.round(params["propensities"], 4).tolist()
                t1 = time.perf_counter()
                fitted = make_estimator(est.type, **params).fit(data)
                fit_s = time.perf_counter() - t1
                score, by = _score(fitted.rerank(test, est.name), qrels)
                for attr in ("propensities_", "position_logits_"):
                    if hasattr(fitted, attr):
                        extra[attr.rstrip("_")] = np.round(getattr(fitted, attr), 4).tolist()
                records.append(
                    {
                        "click_model": spec.name,
                        "sessions": n,
                        "seed": seed,
                        "estimator": est.name,
                        MEASURE: score,
                        "by_dataset": by,
                        "fit_s": round(fit_s, 3),
                        "clicks": int(data.clicks.sum()),
                        **extra,
                    }
                )
            log(
                f"{spec.name} seed {seed} n={n:,}: "
                + ", ".join(
                    f"{r['estimator']} {r[MEASURE]:.4f}"
                    for r in records
                    if r["click_model"] == spec.name
                    and r["seed"] == seed
                    and r["sessions"] == n
                )
                + f" (simulated in {sim_s:.1f}s)"
            )
        return records

    records: list[dict[str, Any]] = []
    tasks = [(ci, seed) for ci in range(len(config.click_models)) for seed in config.seeds]
    for found in map_tasks(play, tasks):
        records.extend(found)
    references = {
        "logging_ranker": {"mean": logging_mean, "by_dataset": logging_by},
        "full_information": {
            "mean": float(np.mean(full_scores)),
            "std": float(np.std(full_scores)),
            "per_seed": full_scores,
            "by_dataset": {d: float(np.mean([b[d] for b in full_by])) for d in full_by[0]},
        },
    }
    summary = _summarise(config, records, references)
    goal = _goal(config, summary)
    return UltrResult(
        config,
        records,
        summary,
        references,
        goal,
        environment_info(device),
        {"data_s": round(t_data - t_start, 1), "total_s": round(time.perf_counter() - t_start, 1)},
    )


def _summarise(
    config: UltrConfig, records: list[dict[str, Any]], references: dict[str, Any]
) -> list[dict[str, Any]]:
    """Mean ± std per (click model, sessions, estimator), gap closed and a paired t-test over
    seeds vs the baseline (`rankloop.eval.compare_values`, the seeds being the paired units)."""
    from rankloop.eval import compare_values

    full = references["full_information"]["mean"]
    cells: dict[tuple[str, int, str], dict[int, dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["click_model"], r["sessions"], r["estimator"]), {})[r["seed"]] = r
    rows = []
    for (cm, n, est), by_seed in cells.items():
        seeds = sorted(by_seed)
        vals = np.array([by_seed[s][MEASURE] for s in seeds])
        base = cells.get((cm, n, config.baseline), {})
        base_vals = np.array([base[s][MEASURE] for s in seeds if s in base])
        gap = full - base_vals.mean() if base_vals.size else np.nan
        closed = (
            (vals.mean() - base_vals.mean()) / gap if base_vals.size and abs(gap) > 1e-9 else None
        )
        p = None
        if est != config.baseline and base_vals.size == vals.size and vals.size > 1:
            table = compare_values(
                {est: {MEASURE: vals}, config.baseline: {MEASURE: base_vals}},
                config.baseline,
                test="t",
                unit_ids=[str(s) for s in seeds],
                unit="seeds",
            )
            p = table.pvalue[est][MEASURE]
        rows.append(
            {
                "click_model": cm,
                "sessions": n,
                "estimator": est,
                "mean": float(vals.mean()),
                "std": float(vals.std()),
                "n_seeds": int(vals.size),
                "gap_closed": None if closed is None else float(closed),
                "p_vs_baseline": None if p is None or not np.isfinite(p) else float(p),
                "fit_s": float(np.mean([by_seed[s]["fit_s"] for s in seeds])),
                **{
                    f"mean_{key}": np.mean([by_seed[s][key] for s in seeds], axis=0)
                    .round(4)
                    .tolist()
                    for key in ("propensities", "position_logits")
                    if all(key in by_seed[s] for s in seeds)
                },
                "by_dataset": {
                    d: float(np.mean([by_seed[s]["by_dataset"][d] for s in seeds]))
                    for d in by_seed[seeds[0]]["by_dataset"]
                },
            }
        )
    return rows


def _goal(config: UltrConfig, summary: list[dict[str, Any]]) -> dict[str, Any] | None:
    g = config.goal
    if not g:
        return None
    closure: dict[str, float | None] = {}
    for est in g["estimators"]:
        row = next(
            (
                r
                for r in summary
                if r["click_model"] == g["click_model"]
                and r["sessions"] == g["sessions"]
                and r["estimator"] == est
            ),
            None,
        )
        closure[est] = None if row is None else row["gap_closed"]
    met = any(v is not None and v >= g["closure"] for v in closure.values())
    return {
        "click_model": g["click_model"],
        "sessions": g["sessions"],
        "closure": closure,
        "target": g["closure"],
        "met": met,
    }


def plot_curves(result: UltrResult, path: str | Path) -> Path:
    """nDCG@10 against the number of sessions, one panel per click model (mean ± std bands)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result.config
    panels = len(c.click_models)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.4), sharey=True, squeeze=False)
    ref = result.references
    colors = plt.get_cmap("tab10")
    handles: dict[str, Any] = {}
    for ax, cm in zip(axes[0], c.click_models):
        for i, est in enumerate(c.estimators):
            rows = sorted(
                (
                    r
                    for r in result.summary
                    if r["click_model"] == cm.name and r["estimator"] == est.name
                ),
                key=lambda r: r["sessions"],
            )
            if not rows:
                continue
            x = np.array([r["sessions"] for r in rows])
            y = np.array([r["mean"] for r in rows])
            s = np.array([r["std"] for r in rows])
            (handles[est.name],) = ax.plot(x, y, marker="o", color=colors(i % 10), label=est.name)
            ax.fill_between(x, y - s, y + s, color=colors(i % 10), alpha=0.15)
        handles[FULL_INFO] = ax.axhline(
            ref["full_information"]["mean"], color="black", ls="--", lw=1, label=FULL_INFO
        )
        handles[LOGGING] = ax.axhline(
            ref["logging_ranker"]["mean"], color="grey", ls=":", lw=1, label=LOGGING
        )
        ax.set_xscale("log")
        ax.set_title(cm.name)
        ax.set_xlabel("click sessions")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("nDCG@10 (test, mean ± std)")
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="lower center",
        ncol=min(len(handles), 5),
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.1 + 0.04 * (len(handles) > 5), 1, 1))
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return path


def write_outputs(result: UltrResult, out: str | Path) -> Path:
    """Write config, environment, table (md, csv), per-seed and summary JSON and the PNG."""
    out = Path(out)
    write_run_record(out, asdict(result.config), result.environment)
    write_seeded_results(
        out,
        markdown=f"# {result.config.name}\n\n{result.table_markdown()}\n",
        csv=result.table_csv(),
        per_seed=result.records,
        metrics={
            "summary": result.summary,
            "references": result.references,
            "goal": result.goal,
            "timing": result.timing,
        },
    )
    plot_curves(result, out / "ndcg_vs_sessions.png")
    return out
