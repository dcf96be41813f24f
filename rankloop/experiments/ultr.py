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
   a paired t-test over seeds against Naive; a Markdown/CSV table, JSON and a PNG of nDCG@10
   against the number of sessions.

IPS uses the true PBM propensities (`propensity: true`, PBM only) or propensities estimated from a
separate result-randomisation log (`propensity: swap`) of as many sessions as the click log.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
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
from rankloop.rerank.ltr.features import LtrData, build_features, concat_ltr

ESTIMATOR_TYPES = ("naive", "ips", "dla", "rem", "pairdebias", "two_tower")
SIGNALS = ("dense", "rm3")
LOGGING_RANKERS = ("bm25", "dense")
MEASURE = "ndcg_cut_10"
FULL_INFO = "Full information"
LOGGING = "Logging ranker"
_CACHE_VERSION = 1


@dataclass
class ClickSpec:
    """One click setting: a display name, a `rankloop.clicks` model name and its parameters."""

    name: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EstimatorSpec:
    """One estimator row: a display name, a type, its parameters and (IPS) the propensity source."""

    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    propensity: str | None = None

    def __post_init__(self) -> None:
        if self.type not in ESTIMATOR_TYPES:
            raise ConfigError(
                f"estimator {self.name!r}: type must be one of {ESTIMATOR_TYPES}, got {self.type!r}"
            )
        if self.type == "ips" and self.propensity not in ("true", "swap"):
            raise ConfigError(
                f"estimator {self.name!r}: IPS needs propensity 'true' (PBM only) or 'swap'"
            )
        if self.type != "ips" and self.propensity is not None:
            raise ConfigError(f"estimator {self.name!r}: only IPS takes a propensity source")


@dataclass
class UltrConfig:
    """The ULTR experiment, loadable from YAML (see configs/ultr_semisynthetic.yaml)."""

    click_models: list[ClickSpec]
    estimators: list[EstimatorSpec]
    name: str = "ultr"
    datasets: list[str] = field(default_factory=lambda: ["scifact", "nfcorpus"])
    train_split: str = "train"
    test_split: str = "test"
    k: int = 10
    logging_ranker: str = "bm25"
    signals: list[str] = field(default_factory=lambda: ["dense", "rm3"])
    signal_k: int = 100
    exclude_features: list[str] = field(default_factory=list)
    bm25: dict[str, float] = field(default_factory=lambda: {"k1": 0.9, "b": 0.4})
    rm3: dict[str, Any] = field(
        default_factory=lambda: {"fb_terms": 10, "fb_docs": 10, "original_query_weight": 0.5}
    )
    eps: float = 0.1
    max_grade: int = 2
    sessions: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    seeds: list[int] = field(default_factory=lambda: list(range(5)))
    model: str = "linear"
    model_params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(
        default_factory=lambda: {"epochs": 40, "batch_size": 512, "lr": 0.02, "weight_decay": 0.0}
    )
    full_info_loss: str = "listnet"
    swap_design: str = "swap-first"
    baseline: str = "Naive"
    goal: dict[str, Any] = field(default_factory=dict)
    cache: str | None = None
    out: str = "runs/ultr"
    device: str = "auto"
    threads: int = 1

    def __post_init__(self) -> None:
        if not self.click_models or not self.estimators:
            raise ConfigError("click_models and estimators must each list at least one entry")
        for what, names in (
            ("click model", [c.name for c in self.click_models]),
            ("estimator", [e.name for e in self.estimators]),
        ):
            if len(set(names)) != len(names):
                raise ConfigError(f"{what} names must be unique, got {names}")
        if self.baseline not in [e.name for e in self.estimators]:
            raise ConfigError(f"baseline {self.baseline!r} is not one of the estimators")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds must be a non-empty list of distinct integers")
        if not self.sessions or any(not isinstance(n, int) or n < 1 for n in self.sessions):
            raise ConfigError(f"sessions must be positive integers, got {self.sessions}")
        if self.logging_ranker not in LOGGING_RANKERS:
            raise ConfigError(f"logging_ranker must be one of {LOGGING_RANKERS}")
        bad = [s for s in self.signals if s not in SIGNALS or s == self.logging_ranker]
        if bad:
            raise ConfigError(
                f"signals must be among {SIGNALS} and differ from the logging ranker, got {bad}"
            )
        if self.k < 2 or self.signal_k < 1 or self.threads < 1:
            raise ConfigError("k must be >= 2, signal_k and threads >= 1")
        if self.max_grade < 1 or not 0.0 <= self.eps <= 1.0:
            raise ConfigError("max_grade must be >= 1 and eps in [0, 1]")
        unknown = set(self.train) - {"epochs", "batch_size", "lr", "weight_decay"}
        if unknown:
            raise ConfigError(f"train: unknown keys {sorted(unknown)}")
        if self.goal and not {"click_model", "sessions", "estimators", "closure"} <= set(self.goal):
            raise ConfigError("goal needs click_model, sessions, estimators and closure")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<config>") -> UltrConfig:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}; known: {sorted(known)}")
        data = dict(raw)
        if isinstance(data.get("seeds"), int):
            data["seeds"] = list(range(data["seeds"]))
        try:
            clicks = [ClickSpec(**c) for c in data.pop("click_models", [])]
            ests = [EstimatorSpec(**e) for e in data.pop("estimators", [])]
            return cls(click_models=clicks, estimators=ests, **data)
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> UltrConfig:
        return cls.from_dict(read_yaml_config(path), str(path))

    def quick(self) -> UltrConfig:
        """A smoke-test variant: one click model (the goal's, if set), 2 seeds, 10^3 and 10^4
        sessions, at most 10 epochs."""
        cfg = UltrConfig.from_dict(asdict(self))
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
def _cache_root(config: UltrConfig) -> Path:
    if config.cache:
        return Path(config.cache).expanduser()
    root = os.environ.get("RANKLOOP_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "rankloop") / "ultr"


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

    root = _cache_root(config)
    key = _feature_key(config, dataset)
    train_path, test_path = root / f"{key}.train.npz", root / f"{key}.test.npz"
    train, test = _load_ltr(train_path), _load_ltr(test_path)
    if train is not None and test is not None:
        log(f"{dataset}: features from cache {root / key}.*.npz")
        return train, test, {"cached": True}
    t0 = time.perf_counter()
    tr = load(dataset, split=config.train_split)
    te = load(dataset, split=config.test_split)
    corpus = tr.corpus
    ids = list(dict.fromkeys([*tr.queries.ids, *te.queries.ids]))
    text = {**dict(tr.queries.items()), **dict(te.queries.items())}
    queries = Queries(ids, [text[q] for q in ids], dataset)
    runs: dict[str, Any] = {}
    need_bm25 = config.logging_ranker == "bm25" or "rm3" in config.signals
    if need_bm25:
        from rankloop.retrieval.sparse import BM25Retriever

        index_dir = root / f"bm25-{dataset}-{corpus.checksum()[:12]}"
        if (index_dir / "retriever.json").exists():
            bm25 = BM25Retriever(index_dir, **config.bm25)
        else:
            bm25 = BM25Retriever.build(corpus, index_dir, **config.bm25, show_progress=False)
        log(f"{dataset}: BM25 search for {len(queries)} queries")
        runs["bm25"] = bm25.search(queries, max(config.k, config.signal_k))
        bm25.close()
        if "rm3" in config.signals:
            rm3 = BM25Retriever(index_dir, **config.bm25, rm3=config.rm3)
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
        for q, docs in load(ds, split=config.test_split).qrels.data.items():
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
    from rankloop.clicks.simulate import pbm_examination

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
    records: list[dict[str, Any]] = []
    need_pairs = any(
        e.type == "pairdebias" or e.params.get("loss") == "ranknet" for e in config.estimators
    )
    for ci, spec in enumerate(config.click_models):
        model = make_model(spec.model, eps=config.eps, max_grade=config.max_grade, **spec.params)
        true_theta = _propensity_true(spec, config.k)
        for seed in config.seeds:
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
    """Mean ± std per (click model, sessions, estimator), gap closed and a paired t-test vs baseline."""
    from rankloop.eval import paired_t_test

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
            p = paired_t_test(vals, base_vals)
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
