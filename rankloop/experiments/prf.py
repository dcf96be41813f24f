"""`rankloop experiment prf`: every PRF method on one BEIR data set, one table, one plot.

The runner builds (or reads from cache) the dense index (MiniLM embeddings through the
`Encoder` disk cache), the BM25 index, and trained LoL models, then runs each configured
method, compares all of them with `rankloop.eval.compare` against the no-PRF dense baseline
(paired t-test), plots nDCG@10 against the feedback depth k, and writes the TREC runs.

Method kinds (YAML `methods:` entries, each with a unique `name`):
- `average`     Average PRF over the top k (`k`);
- `rocchio`     `alpha`, `beta`, `gamma`, `k`, `bottom_k`, `depth`;
- `lol`         a trained LoL reformulator (`lambda_cr`, `train_dataset`, other LoLConfig keys);
- `sparse`      BM25 with `feedback` none / rm3 / rocchio (pyserini) and `params`;
- `fusion`      `runs` (names of earlier methods, or "dense"), `method`, `norm`, `weights`;
- `maxsim`      the late-interaction (MaxSim) first pass over the MiniLM token index
                (`factory`, `candidates_per_token`);
- `colbert_prf` ColBERT-PRF (`mode` ranker / reranker, `first_pass`: an earlier run or "dense",
                and `fb_docs`, `n_clusters`, `fb_embs`, `beta`, `k_nearest`,
                `candidates_per_token`, `factory`).
The two token-index kinds are not in the defaults: the token index of a corpus takes ~13 min
to build on 2 CPU cores (then it is cached), and each run ~1 s per query on that CPU.
Vector methods take `feedback` (where the feedback docs come from: dense, bm25 or rm3, i.e.
the dense first pass or a BM25 / BM25+RM3 first pass) and `iterations` (multi-round VPRF).
Any method may set `reference: true`: a peer configuration (e.g. pyserini's settings), reported
but not a rankloop default.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rankloop.errors import ConfigError, RankloopError
from rankloop.experiments import environment_info, read_yaml_config, write_run_record
from rankloop.io import atomic_write

VECTOR_KINDS = ("average", "rocchio", "lol")
TOKEN_KINDS = ("maxsim", "colbert_prf")
KINDS = (*VECTOR_KINDS, "sparse", "fusion", *TOKEN_KINDS)
_COLBERT_KEYS = ("fb_docs", "n_clusters", "fb_embs", "beta", "k_nearest", "mode",
                 "candidates_per_token", "random_state")  # fmt: skip
FEEDBACK_SOURCES = ("dense", "bm25", "rm3")
MEASURES = ["ndcg_cut_10", "map", "recall_100", "recall_1000"]
BASELINE = "dense"

# Rows with `reference: True` are peer rows: pyserini's own PRF settings (the table,
# re-implemented batched) and BM25 / BM25+RM3 / BM25+Rocchio with pyserini's parameters. They are
# not rankloop defaults. The rankloop defaults were chosen on train queries (SciFact train,
# NFCorpus train/dev), never on test: Rocchio α=1, β=0.2, k=3 (see rankloop/prf/rocchio.py);
# rocchio-bm25fb k=3, β=0.5 is within .0005 nDCG@10 of the best of k∈{3,5} × β∈{0.2,0.5,1}
# on both SciFact train and NFCorpus dev; the [2, 1] fusion weights beat [1, 1] on both; LoL
# selects its epoch on dev queries (see train_lol).
DEFAULT_METHODS: list[dict[str, Any]] = [
    {"name": "pyserini-ref:avg-k3", "kind": "average", "k": 3, "reference": True},
    {"name": "pyserini-ref:rocchio-k5", "kind": "rocchio", "k": 5, "alpha": 0.4, "beta": 0.6, "reference": True},
    {"name": "pyserini-ref:rocchio-k3", "kind": "rocchio", "k": 3, "alpha": 0.9, "beta": 0.1, "reference": True},
    {"name": "rocchio", "kind": "rocchio", "k": 3, "alpha": 1.0, "beta": 0.2},
    {"name": "rocchio-2iter", "kind": "rocchio", "k": 3, "alpha": 1.0, "beta": 0.2, "iterations": 2},
    # Dense Rocchio whose feedback documents come from a BM25 first pass (sparse -> dense PRF).
    {"name": "rocchio-bm25fb", "kind": "rocchio", "k": 3, "alpha": 1.0, "beta": 0.5, "feedback": "bm25"},
    {"name": "lol", "kind": "lol", "lambda_cr": 1.0, "max_train_queries": 800},
    {"name": "bm25", "kind": "sparse", "feedback": "none", "reference": True},
    {"name": "bm25+rm3", "kind": "sparse", "feedback": "rm3", "reference": True},
    {"name": "bm25+rocchio", "kind": "sparse", "feedback": "rocchio", "reference": True},
    {"name": "hybrid:dense+bm25", "kind": "fusion", "runs": ["dense", "bm25"], "method": "combsum", "norm": "zscore"},
    {"name": "hybrid:rocchio-bm25fb+rm3", "kind": "fusion", "runs": ["rocchio-bm25fb", "bm25+rm3"], "method": "combsum", "norm": "zscore", "weights": [2, 1]},
]  # fmt: skip

# Opt-in (`rankloop experiment prf --colbert`): the MaxSim first pass over the MiniLM token index
# and ColBERT-PRF (the paper's defaults: 3 feedback docs, 24 clusters, 10 expansion embeddings,
# β = 1) re-ranking it.
COLBERT_METHODS: list[dict[str, Any]] = [
    {"name": "maxsim", "kind": "maxsim"},
    {"name": "colbert-prf", "kind": "colbert_prf", "mode": "reranker", "first_pass": "maxsim"},
]


@dataclass
class PRFConfig:
    """A PRF experiment, loadable from YAML (see configs/prf_scifact.yaml)."""

    dataset: str = "scifact"
    split: str = "test"
    k: int = 1000
    out: str = "results/prf/scifact"
    model: str | None = None
    max_length: int | None = None
    factory: str = "Flat"
    measures: list[str] = field(default_factory=lambda: list(MEASURES))
    depths: list[int] = field(default_factory=lambda: [1, 2, 3, 5, 10])
    sweep: list[str] | None = (
        None  # methods swept over `depths` (default: every vector method + rm3)
    )
    train_split: str = "train"
    methods: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_METHODS))

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if not self.depths or min(self.depths) < 1:
            raise ConfigError(f"depths must be positive ints, got {self.depths}")
        seen: set[str] = {BASELINE}
        for m in self.methods:
            if not isinstance(m, dict) or "name" not in m or "kind" not in m:
                raise ConfigError(f"each method needs a name and a kind, got {m!r}")
            if m["name"] in seen:
                raise ConfigError(f"method name {m['name']!r} is used twice (or is {BASELINE!r})")
            if m["kind"] not in KINDS:
                raise ConfigError(
                    f"method {m['name']!r}: unknown kind {m['kind']!r}; known {KINDS}"
                )
            if m["kind"] in VECTOR_KINDS and m.get("feedback", "dense") not in FEEDBACK_SOURCES:
                raise ConfigError(
                    f"method {m['name']!r}: feedback must be one of {FEEDBACK_SOURCES}, got {m['feedback']!r}"
                )
            if m["kind"] == "fusion":
                missing = [r for r in m.get("runs", []) if r not in seen]
                if len(m.get("runs", [])) < 2 or missing:
                    raise ConfigError(
                        f"method {m['name']!r}: fusion needs >= 2 earlier runs, unknown {missing}"
                    )
            if m["kind"] == "colbert_prf" and m.get("first_pass", BASELINE) not in seen:
                raise ConfigError(
                    f"method {m['name']!r}: first_pass {m['first_pass']!r} is not an earlier run"
                )
            seen.add(m["name"])

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<config>") -> PRFConfig:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping, got {type(raw).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}; known {sorted(known)}")
        return cls(**raw)

    @classmethod
    def from_yaml(cls, path: str | Path) -> PRFConfig:
        return cls.from_dict(read_yaml_config(path, allow_empty=True), str(path))


# ---- building blocks -----------------------------------------------------------------------
def _log(msg: str, verbose: bool) -> None:
    if verbose:
        print(f"[prf] {msg}", file=sys.stderr, flush=True)


class _Setting:
    """One data set's dense index, query vectors and sparse first passes, built lazily."""

    def __init__(self, config: PRFConfig, dataset: str, split: str, verbose: bool) -> None:
        from rankloop.data import load
        from rankloop.embed import Encoder
        from rankloop.retrieval import DenseRetriever

        self.data = load(dataset, split=split)
        self.name, self.split, self.verbose = dataset, split, verbose
        if split != "test":  # train/dev: only the queries that have judgements
            self.queries = self.data.queries.subset(
                [q for q in self.data.queries.ids if q in self.data.qrels]
            )
        else:
            self.queries = self.data.queries
        self.encoder = Encoder(config.model, max_length=config.max_length, show_progress=verbose)
        t0 = time.perf_counter()
        self.dense = DenseRetriever.build(self.data.corpus, self.encoder, factory=config.factory)
        self.index = self.dense.index
        self.qvecs = self.encoder.encode_queries(self.queries.texts)
        _log(
            f"{dataset}/{split}: index + {len(self.queries)} queries in {time.perf_counter() - t0:.1f}s",
            verbose,
        )
        self._sparse: dict[tuple[str, int], Any] = {}
        self._tokens: dict[str, Any] = {}

    def multivector(self, factory: str = "Flat"):  # -> MultiVectorRetriever
        """The corpus's MaxSim token index (same encoder), from the index cache or built once."""
        from rankloop.retrieval.multivector import MultiVectorRetriever

        if factory not in self._tokens:
            t0 = time.perf_counter()
            self._tokens[factory] = MultiVectorRetriever.cached(
                self.data.corpus, self.encoder, factory
            )
            _log(f"{self.name}: token index ready in {time.perf_counter() - t0:.1f}s", self.verbose)
        return self._tokens[factory]

    def restricted(self, positions: np.ndarray) -> _Setting:
        """A copy that holds only the queries at `positions` (same index and encoder)."""
        out = copy.copy(self)
        out.queries = self.queries.subset([self.queries.ids[i] for i in positions])
        out.qvecs = self.qvecs[positions]
        out._sparse = {}
        return out

    def sparse(self, feedback: str, k: int, params: dict[str, Any] | None = None):
        from rankloop.prf.sparse import sparse_run

        key = (feedback + json.dumps(params or {}, sort_keys=True), k)
        if key not in self._sparse:
            t0 = time.perf_counter()
            self._sparse[key] = sparse_run(self.data.corpus, self.queries, feedback, params, k=k)
            _log(
                f"{self.name}: bm25 {feedback} {params or ''} in {time.perf_counter() - t0:.1f}s",
                self.verbose,
            )
        return self._sparse[key]

    def first_feedback(self, source: str, depth: int):
        """None for the dense first pass, else (vectors, mask) from a BM25 (+RM3) run."""
        from rankloop.prf.rocchio import feedback_from_run

        if source == "dense":
            return None
        run = self.sparse("none" if source == "bm25" else "rm3", max(depth, 10))
        return feedback_from_run(self.index, run, self.queries.ids, depth)


def _reformulator(spec: dict[str, Any], k: int | None, lol_model: Any = None):
    from rankloop.prf.rocchio import Rocchio

    kind = spec["kind"]
    if kind == "average":
        return Rocchio.averaged(k if k is not None else int(spec.get("k", 3)))
    if kind == "rocchio":
        params = {
            p: spec[p] for p in ("alpha", "beta", "gamma", "k", "bottom_k", "depth") if p in spec
        }
        if k is not None:
            params["k"] = k
            if params.get("depth") is not None:
                params["depth"] = max(params["depth"], k)
        return Rocchio(**params)
    return _DepthLimited(lol_model, k) if k is not None else lol_model


@dataclass(frozen=True)
class _DepthLimited:
    """A reformulator that sees only the first `k` feedback vectors (for the depth sweep)."""

    inner: Any
    k: int

    @property
    def fb_depth(self) -> int:
        return max(self.k, self.inner.fb_depth)

    def __call__(self, q: np.ndarray, fb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        m = mask.copy()
        m[:, self.k :] = False
        return self.inner(q, fb, m)


_LOL_KEYS = ("K", "layers", "heads", "hidden", "dropout", "lambda_cr", "revisions", "temperature",
             "n_negatives", "max_positives", "in_batch_negatives", "epochs", "patience",
             "batch_size", "lr", "weight_decay", "random_state")  # fmt: skip
DEV_FRACTION = 0.2  # share of train queries held out for LoL model selection (no dev split)


def _model_cache() -> Path:
    from rankloop.embed.encoders import default_cache_dir

    return default_cache_dir().parent / "models"


def _ndcg_at_10(setting: _Setting, reformulator: Any, feedback: str) -> float:
    """nDCG@10 (top 100) of VectorPRF with `reformulator` on `setting`'s queries."""
    from rankloop.eval import evaluate
    from rankloop.prf.rocchio import VectorPRF, run_from_rows

    prf = VectorPRF(setting.index, reformulator)
    first = setting.first_feedback(feedback, prf.fb_depth)
    scores, rows = prf.search_vectors(setting.qvecs, 100, first_feedback=first)
    run = run_from_rows(setting.index, setting.queries.ids, scores, rows, "dev")
    qrels = setting.data.qrels.subset(setting.queries.ids)
    return float(evaluate(qrels, run, ["ndcg_cut_10"])["ndcg_cut_10"])


def train_lol(
    setting: _Setting,
    spec: dict[str, Any],
    verbose: bool = True,
    dev: _Setting | None = None,
):
    """Train (or load from cache) a LoL model on `setting` (a train split) per `spec`.

    The epoch is selected by nDCG@10 on `dev` (the data set's dev split), or, without one, on
    a seeded `DEV_FRACTION` of the train queries held out from training; the untrained identity
    model (no PRF) competes too, so a model that does not help on dev is never kept."""
    from rankloop.prf.lol import LoL, LoLConfig, positive_rows, training_candidates
    from rankloop.prf.rocchio import gather_feedback

    params = {key: spec[key] for key in _LOL_KEYS if key in spec}
    if dev is None:
        order = np.random.default_rng(spec.get("random_state", 0)).permutation(len(setting.queries))
        n_dev = max(1, round(DEV_FRACTION * len(order)))
        dev = setting.restricted(np.sort(order[:n_dev]))
        setting = setting.restricted(np.sort(order[n_dev:]))
    max_q = spec.get("max_train_queries")
    if max_q is not None and len(setting.queries) > max_q:  # a seeded sample keeps CPU time bounded
        keep = np.sort(
            np.random.default_rng(spec.get("random_state", 0)).choice(
                len(setting.queries), max_q, replace=False
            )
        )
        setting = setting.restricted(keep)
    cfg = LoLConfig(dim=setting.index.dim, **params)
    feedback = spec.get("feedback", "dense")
    ident = json.dumps(
        {"cfg": asdict(cfg), "data": setting.name, "split": setting.split, "fb": feedback,
         "enc": setting.encoder.fingerprint, "q": hashlib.sha256("|".join(setting.queries.ids).encode()).hexdigest(),
         "dev": [dev.split, hashlib.sha256("|".join(dev.queries.ids).encode()).hexdigest()]}, sort_keys=True,
    )  # fmt: skip
    path = _model_cache() / f"lol-{setting.name}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"
    if (path / "lol.json").is_file():
        _log(f"LoL: cached model {path}", verbose)
        return LoL.load(path)
    index = setting.index
    _, rows = index.search_rows(setting.qvecs, max(100, cfg.n_negatives + cfg.K))
    first = setting.first_feedback(feedback, cfg.K)
    fb, mask = first if first is not None else gather_feedback(index, rows[:, : cfg.K])
    row_of = dict(zip(index.ids, range(index.ntotal)))
    positives = positive_rows(setting.data.qrels.data, setting.queries.ids, row_of)
    crow, cmask, cpos = training_candidates(rows, positives, cfg.n_negatives, cfg.max_positives)
    cand, _ = gather_feedback(index, crow)
    t0 = time.perf_counter()
    _log(
        f"LoL: training on {setting.name}/{setting.split} ({len(setting.queries)} queries, λ_cr={cfg.lambda_cr})",
        verbose,
    )
    model = LoL(cfg).fit(
        setting.qvecs, fb, mask, cand, cmask, cpos, candidate_ids=crow, verbose=verbose,
        validate=lambda m: _ndcg_at_10(dev, m, feedback),
    )  # fmt: skip
    _log(
        f"LoL: trained in {time.perf_counter() - t0:.1f}s, kept epoch {model.best_epoch_} "
        f"(dev {dev.name}/{dev.split}, {len(dev.queries)} queries) -> {path}",
        verbose,
    )
    model.save(path)
    return model


def _dev_setting(config: PRFConfig, dataset: str, verbose: bool) -> _Setting | None:
    """The data set's `dev` split (None when it has none, or when `dev` is the eval split)."""
    from rankloop.data import load

    if config.split == "dev" or config.train_split == "dev":
        return None
    try:
        load(dataset, split="dev")
    except RankloopError:
        return None
    return _Setting(config, dataset, "dev", verbose)


# ---- the run -------------------------------------------------------------------------------
@dataclass
class PRFResult:
    """Runs, the comparison table, the depth sweep and timings of one experiment."""

    config: PRFConfig
    runs: dict[str, Any]
    table: Any
    sweep: dict[str, dict[int, float]]
    timing: dict[str, float]
    environment: dict[str, Any]


def run_method(
    spec: dict[str, Any],
    setting: _Setting,
    k: int,
    runs: dict[str, Any],
    models: dict[str, Any],
    depth: int | None = None,
):
    """One method's run (at its own feedback depth, or at `depth` for the sweep)."""
    from rankloop.eval.fusion import fuse
    from rankloop.prf.rocchio import VectorPRF

    kind, name = spec["kind"], spec["name"]
    if kind == "sparse":
        params = dict(spec.get("params") or {})
        if depth is not None:
            params["fb_docs" if spec["feedback"] == "rm3" else "top_fb_docs"] = depth
        return setting.sparse(spec.get("feedback", "none"), k, params or None).with_name(name)
    if kind == "fusion":
        return fuse(
            [runs[r] for r in spec["runs"]],
            spec.get("method", "rrf"),
            norm=spec.get("norm"),
            weights=spec.get("weights"),
            name=name,
        ).top_k(k)
    if kind in TOKEN_KINDS:
        return _token_run(spec, setting, k, runs, depth)
    reform = _reformulator(spec, depth, models.get(name))
    prf = VectorPRF(setting.index, reform, iterations=int(spec.get("iterations", 1)))
    first = setting.first_feedback(spec.get("feedback", "dense"), prf.fb_depth)
    scores, rows = prf.search_vectors(setting.qvecs, k, first_feedback=first)
    from rankloop.prf.rocchio import run_from_rows

    return run_from_rows(setting.index, setting.queries.ids, scores, rows, name)


def _token_run(spec: dict[str, Any], setting: _Setting, k: int, runs: dict[str, Any],
               depth: int | None):  # fmt: skip
    """A `maxsim` or `colbert_prf` run over the setting's token index."""
    from rankloop.prf.colbert_prf import ColBERTPRF

    mv = setting.multivector(spec.get("factory", "Flat"))
    cpt = int(spec.get("candidates_per_token", 100))
    if spec["kind"] == "maxsim":
        return mv.search(setting.queries, k, candidates_per_token=cpt).with_name(spec["name"])
    params = {key: spec[key] for key in _COLBERT_KEYS if key in spec}
    if depth is not None:
        params["fb_docs"] = depth
    prf = ColBERTPRF(**params)
    first = runs[spec.get("first_pass", BASELINE)]
    return prf.run(mv, setting.queries, first, k=k).with_name(spec["name"])


def run_prf(config: PRFConfig, *, verbose: bool = True) -> PRFResult:
    """Run every configured method and compare against the dense no-PRF baseline."""
    from rankloop.eval import compare, evaluate

    t_start = time.perf_counter()
    setting = _Setting(config, config.dataset, config.split, verbose)
    runs: dict[str, Any] = {
        BASELINE: setting.dense.search(setting.queries, config.k).with_name(BASELINE)
    }
    models: dict[str, Any] = {}
    timing: dict[str, float] = {}
    train_settings: dict[str, tuple[_Setting, _Setting | None]] = {}
    for spec in config.methods:
        t0 = time.perf_counter()
        if spec["kind"] == "lol":
            train_name = spec.get("train_dataset", config.dataset)
            if train_name not in train_settings:
                train_settings[train_name] = (
                    _Setting(config, train_name, config.train_split, verbose),
                    _dev_setting(config, train_name, verbose),
                )
            train, dev = train_settings[train_name]
            models[spec["name"]] = train_lol(train, spec, verbose, dev=dev)
        runs[spec["name"]] = run_method(spec, setting, config.k, runs, models)
        timing[spec["name"]] = round(time.perf_counter() - t0, 2)
        _log(f"{spec['name']}: {timing[spec['name']]}s", verbose)
    table = compare(runs, setting.data.qrels, config.measures, baseline=BASELINE, test="t")
    swept = config.sweep
    if swept is None:
        swept = [m["name"] for m in config.methods
                 if m["kind"] in VECTOR_KINDS or (m["kind"] == "sparse" and m["feedback"] == "rm3")]  # fmt: skip
    sweep: dict[str, dict[int, float]] = {}
    by_name = {m["name"]: m for m in config.methods}
    for name in swept:
        if name not in by_name:
            raise ConfigError(f"sweep names unknown method {name!r}")
        spec = by_name[name]
        sweep[name] = {}
        for d in config.depths:
            if spec["kind"] == "lol" and d > models[name].config.K:
                continue
            run = run_method(spec, setting, config.k, runs, models, depth=d)
            sweep[name][d] = evaluate(setting.data.qrels, run, ["ndcg_cut_10"])["ndcg_cut_10"]
    timing["total_s"] = round(time.perf_counter() - t_start, 1)
    return PRFResult(config, runs, table, sweep, timing, environment_info())


def plot_sweep(result: PRFResult, path: Path) -> None:
    """nDCG@10 against feedback depth k, one line per swept method, the baseline dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for name, points in result.sweep.items():
        ks = sorted(points)
        ax.plot(ks, [points[k] for k in ks], marker="o", label=name)
    base = result.table.mean[BASELINE]["ndcg_cut_10"]
    ax.axhline(base, color="black", linestyle="--", linewidth=1, label=f"{BASELINE} (no PRF)")
    ax.set_xlabel("feedback depth k (documents)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(f"PRF on {result.config.dataset} ({result.config.split})")
    ax.legend(fontsize=7)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)


def write_outputs(result: PRFResult, out: str | Path) -> Path:
    """config.yaml, environment.json, table.md, metrics.json, runs/*.trec, ndcg_vs_depth.png."""
    from rankloop.data.trec import write_run

    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    write_run_record(out, asdict(result.config), result.environment)
    result.table.to_markdown(out / "table.md")
    doc = json.loads(result.table.to_json())
    doc["sweep_ndcg_cut_10"] = {
        m: {str(k): v for k, v in p.items()} for m, p in result.sweep.items()
    }
    doc["timing_s"] = result.timing
    with atomic_write(out / "metrics.json") as fh:
        json.dump(doc, fh, indent=2)
    for name, run in result.runs.items():
        safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)
        write_run(run, out / "runs" / f"{safe}.trec", tag=safe)
    if result.sweep:
        plot_sweep(result, out / "ndcg_vs_depth.png")
    return out
