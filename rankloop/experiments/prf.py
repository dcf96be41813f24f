"""`rankloop experiment prf`: PRF pipelines on one BEIR data set, one table, one plot.

The config names pipelines as stage expressions (see `rankloop.stages`), e.g.
``rocchio-bm25fb: "bm25 >> rocchio(fb_docs=3, beta=0.5)"``; the runner parses them all before
any work, runs them through `rankloop.pipeline.Experiment` against the `baseline` (the dense
first pass, paired t-test), sweeps the feedback depth `fb_docs` of the `sweep` pipelines, and
writes the table, the metrics JSON, the TREC runs and a plot of nDCG@10 against `fb_docs`.
Pipelines listed under `reference` are peer configurations (pyserini's settings), reported but
not rankloop defaults.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankloop._runtime import Count, YamlConfig, environment_info, write_run_record
from rankloop.errors import ConfigError, RankloopError
from rankloop.io import atomic_write

MEASURES = ["ndcg_cut_10", "map", "recall_100", "recall_1000"]

# The rankloop defaults were chosen on train queries (SciFact train, NFCorpus train/dev), never
# on test: Rocchio α=1, β=0.2, fb_docs=3 (see rankloop/prf/rocchio.py); rocchio-bm25fb fb_docs=3,
# β=0.5 is within .0005 nDCG@10 of the best of fb_docs∈{3,5} × β∈{0.2,0.5,1} on both SciFact
# train and NFCorpus dev; the [2, 1] fusion weights beat [1, 1] on both; LoL selects its epoch
# on dev queries (see rankloop.prf.lol.train_lol).
DEFAULT_PIPELINES: dict[str, str] = {
    "dense": "dense",
    "pyserini-ref:avg-k3": "average(fb_docs=3)",
    "pyserini-ref:rocchio-k5": "rocchio(fb_docs=5, alpha=0.4, beta=0.6)",
    "pyserini-ref:rocchio-k3": "rocchio(fb_docs=3, alpha=0.9, beta=0.1)",
    "rocchio": "rocchio(fb_docs=3, alpha=1.0, beta=0.2)",
    "rocchio-2iter": "rocchio(fb_docs=3, alpha=1.0, beta=0.2, iterations=2)",
    # Dense Rocchio whose feedback documents come from a BM25 first pass (sparse -> dense PRF).
    "rocchio-bm25fb": "bm25 >> rocchio(fb_docs=3, alpha=1.0, beta=0.5)",
    "lol": "lol(lambda_cr=1.0, max_train_queries=800)",
    "bm25": "bm25",
    "bm25+rm3": "bm25_rm3",
    "bm25+rocchio": "bm25_rocchio",
    "hybrid:dense+bm25": "fuse(dense, bm25, method='combsum', norm='zscore')",
    "hybrid:rocchio-bm25fb+rm3":
        "fuse(ref('rocchio-bm25fb'), ref('bm25+rm3'), method='combsum', norm='zscore', weights=[2, 1])",
}  # fmt: skip
# Peer rows: pyserini's own PRF settings (re-implemented batched) and BM25 / BM25+RM3 /
# BM25+Rocchio with pyserini's parameters.
REFERENCE = ["pyserini-ref:avg-k3", "pyserini-ref:rocchio-k5", "pyserini-ref:rocchio-k3",
             "bm25", "bm25+rm3", "bm25+rocchio"]  # fmt: skip
# Opt-in (`--colbert`): the MaxSim first pass over the MiniLM token index (a ~13 min build per
# corpus on 2 cores, then cached) and ColBERT-PRF (the paper's defaults) re-ranking it.
COLBERT_PIPELINES: dict[str, str] = {
    "maxsim": "maxsim",
    "colbert-prf": "maxsim >> colbert_prf(mode='reranker')",
}
# Stages whose `fb_docs` the depth sweep varies (LoL: the feedback it reads, up to its own).
_SWEEPABLE = ("rocchio", "average", "lol", "bm25_rm3", "bm25_rocchio", "colbert_prf")


@dataclass
class PRFConfig(YamlConfig):
    """A PRF experiment, loadable from YAML (see configs/prf_scifact.yaml); `from_yaml` checks
    every key and type before any work and names file:line on errors."""

    ALLOW_EMPTY = True

    dataset: str = "scifact"
    split: str = "test"
    k: Count = 1000
    out: str = "results/prf/scifact"
    model: str | None = None
    max_length: Count | None = None
    # The encoder backend (see rankloop.embed.encoders): "auto" takes the fastest backend
    # measured on this CPU within MAX_NDCG_LOSS (.005) nDCG@10 of torch float32 (its decision
    # file), else the CPU-flag rule (bfloat16 units: torch-bf16), and "torch" on a GPU. On the
    # 2-core Xeon here torch-bf16 encodes 2.0-2.5x faster (corpus encoding was 12 of the main
    # job's 19 cold minutes). "torch" reproduces float32 exactly. Recorded in metrics.json.
    backend: str = "auto"
    factory: str = "Flat"
    measures: list[str] = field(default_factory=lambda: list(MEASURES))
    baseline: str = "dense"
    depths: list[Count] = field(default_factory=lambda: [1, 2, 3, 5, 10])
    sweep: list[str] | None = None  # default: every pipeline that ends in a sweepable stage
    reference: list[str] | None = None  # default: the peer rows of REFERENCE that are present
    # None: the data set's convention from the registry (ArguAna, Quora: drop the own id)
    remove_query_id: bool | None = None
    pipelines: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PIPELINES))

    def __post_init__(self) -> None:
        from rankloop.embed.encoders import BACKENDS

        if self.backend not in (*BACKENDS, "auto"):
            raise ConfigError(f"backend must be one of {', '.join((*BACKENDS, 'auto'))}, "
                              f"got {self.backend!r}")  # fmt: skip
        for key in ("dataset", "split", "out", "factory", "baseline"):
            if not getattr(self, key):
                raise ConfigError(f"{key} must be a non-empty string")
        if not self.depths or max(self.depths) > 1000:
            raise ConfigError(f"depths must be 1 to 1000 feedback depths, got {self.depths!r}")
        if not self.pipelines:
            raise ConfigError("pipelines must map names to stage expressions")
        if self.baseline not in self.pipelines:
            raise ConfigError(f"baseline {self.baseline!r} is not a pipeline; "
                              f"pipelines: {', '.join(self.pipelines)}")  # fmt: skip
        if self.reference is None:
            self.reference = [n for n in REFERENCE if n in self.pipelines]
        for key in ("sweep", "reference"):
            unknown = [n for n in getattr(self, key) or [] if n not in self.pipelines]
            if unknown:
                raise ConfigError(f"{key} names unknown pipelines {unknown}; "
                                  f"pipelines: {', '.join(self.pipelines)}")  # fmt: skip



@dataclass
class PRFResult:
    """Runs, the comparison table, the depth sweep and timings of one experiment."""

    config: PRFConfig
    runs: dict[str, Any]
    table: Any
    sweep: dict[str, dict[int, float]]
    timing: dict[str, float]
    environment: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)
    remove_query_id: bool = False


def build_pipelines(config: PRFConfig, ctx: Any) -> dict[str, Any]:
    """Parse the config's pipelines over `ctx` (before any work; errors name file and line)."""
    from rankloop.stages import parse_pipelines

    source = getattr(config, "_source", None)
    spec = source["pipelines"] if source is not None and "pipelines" in source else config.pipelines
    return parse_pipelines(spec, ctx)


def _last(stage: Any) -> Any:
    from rankloop.pipeline import Compose

    return stage.stages[-1] if isinstance(stage, Compose) else stage


# The sweep scores nDCG@10 only, so its runs retrieve this many documents, not the config's k:
# the top 10 are the same (every sweepable stage reads its feedback from a first pass whose depth
# does not depend on its own k; checked on SciFact: identical top-10 documents and scores for
# bm25_rm3, bm25_rocchio, rocchio, bm25 >> rocchio and lol), and a BM25+RM3 search at k=1000
# cost 10x one at k=100 (300 queries: 52 s vs 4.5 s), as did keeping 45 runs of 300k hits.
SWEEP_K = 100


def _sweep_k(last: Any, k: int) -> int:
    """The depth the sweep retrieves at for a stage whose last stage is `last`."""
    if last.ALIAS == "bm25_rocchio" and last.gamma != 0 and last.bottom_fb_docs > 0:
        return k  # negative feedback from the bottom of the first pass, whose depth may be k
    return min(k, SWEEP_K)


def _at_depth(stage: Any, depth: int, ctx: Any, k: int = 1000) -> Any | None:
    """A copy of `stage` whose last stage reads `depth` feedback documents and retrieves `k`
    (None: not possible). A trained LoL model is shared with the copy, not trained or loaded
    again."""
    from rankloop.pipeline import parse

    clone = parse(str(stage), ctx)
    last = _last(clone)
    params: dict[str, Any] = {"k": k} if "k" in last.param_names() else {}
    if last.ALIAS == "lol":
        if depth > last.fb_docs:
            return None
        last.set_params(fb_limit=depth, **params)
        trained = _last(stage)
        if trained.model_ is not None and trained._trained_as == last._training_key():
            last.model_, last._trained_as = trained.model_, trained._trained_as
    elif getattr(last, "fb_window", None) is not None:
        last.set_params(fb_docs=depth, fb_window=max(last.fb_window, depth), **params)
    else:
        last.set_params(fb_docs=depth, **params)
    return clone


def run_prf(config: PRFConfig, *, verbose: bool = True) -> PRFResult:
    """Run every configured pipeline and compare against the baseline."""
    from rankloop.data import load
    from rankloop.data.registry import remove_query_id
    from rankloop.eval import evaluate
    from rankloop.pipeline import Experiment
    from rankloop.retrieval.context import Context

    t_start = time.perf_counter()
    remove_own = config.remove_query_id
    if remove_own is None:
        remove_own = remove_query_id(config.dataset)
    data = load(config.dataset, split=config.split)
    ctx = Context(data.corpus, dataset=config.dataset, model=config.model,
                  max_length=config.max_length, factory=config.factory,
                  remove_query_id=remove_own, verbose=verbose, backend=config.backend)  # fmt: skip
    pipelines = build_pipelines(config, ctx)
    swept = config.sweep
    if swept is None:
        swept = [n for n, p in pipelines.items() if _last(p).ALIAS in _SWEEPABLE]
    bad = [n for n in swept if _last(pipelines[n]).ALIAS not in _SWEEPABLE]
    if bad:
        raise ConfigError(f"sweep: {bad} do not end in a stage with a feedback depth "
                          f"({', '.join(_SWEEPABLE)})")  # fmt: skip
    ctx.encoder  # resolves the model now: a missing model fails before any work  # noqa: B018
    encoder = {"backend": ctx.encoder.backend, "fingerprint": ctx.encoder.fingerprint}
    ctx.log(f"encoder {ctx.encoder.name}, backend {encoder['backend']}")
    skipped: dict[str, str] = {}
    for name, pipe in list(pipelines.items()):
        try:
            pipe.check()
        except RankloopError as e:  # a missing split, model or data set: skip, say why
            if name == config.baseline:
                raise
            skipped[name] = str(e)
            ctx.log(f"skipping {name}: {e}")
            del pipelines[name]
    rows = pipelines  # every row cut to the config's k (stages retrieve their own k)
    if config.k < 1000:
        rows = {n: p % config.k for n, p in pipelines.items()}
    runs: dict[str, Any] = {}
    failed: dict[str, str] = {}
    table = Experiment(rows, data.queries, data.qrels, config.measures,
                       baseline=config.baseline, test="t", runs=runs, failed=failed,
                       progress=verbose)  # fmt: skip
    for name, why in failed.items():  # reported with the table; every other row is kept
        skipped[name] = f"failed: {why}"
        ctx.log(f"{name} failed: {why}")
    timing = {n: round(s, 2) for n, s in table.seconds.items()}
    t_sweep = time.perf_counter()
    sweep: dict[str, dict[int, float]] = {}
    for name in swept:
        if name not in runs:
            continue
        sweep[name] = {}
        for d in config.depths:
            clone = _at_depth(pipelines[name], d, ctx, _sweep_k(_last(pipelines[name]), config.k))
            if clone is None:
                continue
            try:  # transform, not __call__: a sweep run is scored once, never memoised
                run = clone.transform(data.queries)
            except RankloopError as e:
                skipped[f"{name} (sweep, fb_docs={d})"] = f"failed: {e}"
                continue
            if any(len(docs) > config.k for docs in run.data.values()):
                run = run.top_k(config.k)
            sweep[name][d] = evaluate(data.qrels, run, ["ndcg_cut_10"])["ndcg_cut_10"]
        ctx.log(f"sweep {name}: {len(sweep[name])} depths")
    if swept:
        timing["sweep_s"] = round(time.perf_counter() - t_sweep, 1)
    timing["total_s"] = round(time.perf_counter() - t_start, 1)
    ctx.close()
    env = {**environment_info(), "encoder": encoder}
    return PRFResult(config, runs, table, sweep, timing, env, skipped, remove_own)


def plot_sweep(result: PRFResult, path: Path) -> None:
    """nDCG@10 against the feedback depth, one line per swept pipeline, the baseline dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for name, points in result.sweep.items():
        ks = sorted(points)
        ax.plot(ks, [points[k] for k in ks], marker="o", label=name)
    base = result.config.baseline
    ax.axhline(result.table.mean[base]["ndcg_cut_10"], color="black", linestyle="--",
               linewidth=1, label=f"{base} (no PRF)")  # fmt: skip
    ax.set_xlabel("feedback depth fb_docs (documents)")
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
    write_run_record(out, result.config.to_dict(), result.environment)
    table_md = result.table.to_markdown()
    if result.config.reference:
        table_md += f"\nReference (peer) rows: {', '.join(result.config.reference)}.\n"
    if "encoder" in result.environment:
        enc = result.environment["encoder"]
        table_md += f"\nEncoder: {enc['fingerprint']} (backend {enc['backend']}).\n"
    if result.remove_query_id:
        table_md += "\nEach query's own id is removed from its results (the data set's convention).\n"
    if result.skipped:
        table_md += "\nSkipped:\n" + "".join(f"- {n}: {why}\n" for n, why in result.skipped.items())
    with atomic_write(out / "table.md") as fh:
        fh.write(table_md)
    doc = json.loads(result.table.to_json())
    doc["pipelines"] = result.config.pipelines
    doc["reference"] = result.config.reference
    doc["skipped"] = result.skipped
    doc["remove_query_id"] = result.remove_query_id
    doc["sweep_ndcg_cut_10"] = {
        m: {str(k): v for k, v in p.items()} for m, p in result.sweep.items()
    }
    doc["timing_s"] = result.timing
    if "encoder" in result.environment:
        doc["encoder"] = result.environment["encoder"]
    with atomic_write(out / "metrics.json") as fh:
        json.dump(doc, fh, indent=2)
    for name, run in result.runs.items():
        safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)
        write_run(run, out / "runs" / f"{safe}.trec", tag=safe)
    if result.sweep:
        plot_sweep(result, out / "ndcg_vs_depth.png")
    return out
