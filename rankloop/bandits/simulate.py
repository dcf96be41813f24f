"""The bandit simulation loop: policies × seeds × rounds on a semi-synthetic slate environment.

`run_bandits(config)` builds the world once, then for every seed and policy runs `rounds` user
arrivals in steps of `users_per_step` (one `select` per step, as a serving system scores a
batch of requests with the same model), feeding clicks back through a delay queue. It records:

- cumulative clicks, CTR (clicks per impression), and regret against the oracle that knows the
  true attractiveness and picks the best slate among the same candidates (expected clicks, so
  the curve is not dominated by click noise);
- coverage (share of the catalogue ever shown), exposure Gini, intra-list diversity (mean
  pairwise cosine distance of a slate's item vectors);
- the share of impressions per item-popularity bucket over time: the feedback-loop view.

`write_outputs` writes results.json, results.md, regret.png and exposure.png.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rankloop.bandits.envs import EnvConfig, FeedbackQueue, SlateEnv, World, build_world
from rankloop.bandits.policies import POLICY_TYPES, SlatePolicy, TopK
from rankloop.bandits.policies.base import FEEDBACK
from rankloop.errors import ConfigError, RankloopError
from rankloop.experiments import environment_info, read_yaml_config
from rankloop.io import atomic_write


@dataclass
class PolicySpec:
    """One policy of the experiment: display name, type (see `POLICY_TYPES`) and parameters."""

    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    feedback: str = "all"  # how a slate's clicks become per-item feedback (all | cascade)

    def __post_init__(self) -> None:
        if self.type not in POLICY_TYPES:
            raise ConfigError(
                f"policy {self.name!r}: type must be one of {sorted(POLICY_TYPES)}, got {self.type!r}"
            )
        if self.feedback not in FEEDBACK:
            raise ConfigError(f"policy {self.name!r}: feedback must be one of {FEEDBACK}")


@dataclass
class BanditConfig:
    """A bandit simulation, loadable from YAML (see configs/bandits_coat.yaml)."""

    name: str
    world: dict[str, Any]
    policies: list[PolicySpec]
    env: EnvConfig = field(default_factory=EnvConfig)
    rounds: int = 20_000
    users_per_step: int = 100
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    checkpoints: int = 100
    popularity_buckets: int = 5
    exposure_windows: int = 20
    threads: int = 1  # BLAS/OpenMP threads (small matrices: spinning threads only cost)
    out: str = "runs/bandits"

    def __post_init__(self) -> None:
        if isinstance(self.env, dict):
            self.env = EnvConfig.from_dict(self.env)
        self.policies = [p if isinstance(p, PolicySpec) else PolicySpec(**p) for p in self.policies]
        if isinstance(self.seeds, int):
            self.seeds = list(range(self.seeds))
        if not self.policies:
            raise ConfigError("the config lists no policies")
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ConfigError(f"policy names must be unique, got {names}")
        if self.rounds < 1 or self.users_per_step < 1 or not self.seeds:
            raise ConfigError("need rounds >= 1, users_per_step >= 1 and at least one seed")
        if self.popularity_buckets < 1 or self.exposure_windows < 1 or self.checkpoints < 1:
            raise ConfigError("need popularity_buckets, exposure_windows, checkpoints >= 1")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BanditConfig:
        known = set(inspect.signature(cls).parameters)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**raw)
        except TypeError as e:
            raise ConfigError(f"bandits config: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> BanditConfig:
        return cls.from_dict(read_yaml_config(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_policy(spec: PolicySpec, world: World, env: EnvConfig, seed: int) -> SlatePolicy:
    """The slate policy of `spec`: slate policies as they are, single-action ones under TopK."""
    cls = POLICY_TYPES[spec.type]
    wanted = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {"n_arms": world.n_items, "random_state": seed, **spec.params}
    if "n_features" in wanted:
        kwargs["n_features"] = world.n_features
    if "arm_features" in wanted:
        kwargs["arm_features"] = world.arm_features
    if "slate_size" in wanted:
        kwargs["slate_size"] = env.slate_size
        kwargs.setdefault("feedback", spec.feedback)
    try:
        policy = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"policy {spec.name!r}: {e}") from None
    if isinstance(policy, SlatePolicy):
        return policy
    return TopK(policy, env.slate_size, feedback=spec.feedback)


def popularity_buckets(popularity: np.ndarray, n_buckets: int) -> np.ndarray:
    """(n_items,) bucket per item: 0 = least popular ... n_buckets-1 = most popular (by rank)."""
    order = np.argsort(popularity, kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return np.minimum(ranks * n_buckets // len(order), n_buckets - 1)


def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative exposure counts (0 = equal, 1 = one item gets all)."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    if x.sum() == 0:
        return 0.0
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def intra_list_diversity(unit_vectors: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """(n,) mean pairwise cosine distance between a slate's items (-1 slots ignored)."""
    valid = slates >= 0
    v = unit_vectors[np.maximum(slates, 0)] * valid[..., None]
    gram = np.einsum("nid,njd->nij", v, v)
    k = valid.sum(axis=1)
    pairs = k * (k - 1)
    off = gram.sum(axis=(1, 2)) - np.einsum("nii->n", gram)
    return np.where(pairs > 0, 1.0 - off / np.maximum(pairs, 1), 0.0)


def run_one(
    world: World,
    config: BanditConfig,
    spec: PolicySpec,
    seed: int,
    progress: Any = None,
) -> dict[str, Any]:
    """One policy on one seed: curves and summary numbers."""
    env = SlateEnv(world, config.env, config.rounds, random_state=seed)
    policy = build_policy(spec, world, config.env, seed)
    queue = FeedbackQueue(config.env.delay)
    n_items, k = world.n_items, config.env.slate_size
    buckets = popularity_buckets(world.popularity, config.popularity_buckets)
    norms = np.linalg.norm(world.item_vectors, axis=1, keepdims=True)
    unit = world.item_vectors / np.maximum(norms, 1e-12)
    rounds, step = config.rounds, config.users_per_step
    window = np.linspace(0, rounds, config.exposure_windows + 1)
    exposure = np.zeros((config.exposure_windows, config.popularity_buckets))
    coverage_curve = np.zeros(config.exposure_windows)
    checkpoints = np.unique(np.linspace(0, rounds, config.checkpoints + 1).astype(int)[1:])
    shown = np.zeros(n_items)
    clicks_total = expected_total = oracle_total = ild_total = 0.0
    cum_regret, cum_clicks, at = [], [], []
    next_cp = 0
    select_s = update_s = 0.0
    t = 0
    while t < rounds:
        n = min(step, rounds - t)
        users = env.arrive(n)
        cands = env.candidates(users)
        x = env.context(users)
        t0 = time.perf_counter()
        slates = policy.select(x, cands)
        select_s += time.perf_counter() - t0
        clicks, expected = env.feedback(users, slates)
        oracle = env.oracle(users, cands)
        t += n
        queue.push(t, (x, slates, clicks))
        t0 = time.perf_counter()
        for fx, fs, fc in queue.pop_ready(t):
            policy.update(fx, fs, fc)
        update_s += time.perf_counter() - t0
        env.advance(n)
        # bookkeeping
        clicks_total += clicks.sum()
        expected_total += expected.sum()
        oracle_total += oracle.sum()
        ild_total += intra_list_diversity(unit, slates).sum()
        items = slates[slates >= 0]
        shown += np.bincount(items, minlength=n_items)
        w = min(int(np.searchsorted(window, t - n, side="right")) - 1, len(exposure) - 1)
        exposure[w] += np.bincount(buckets[items], minlength=config.popularity_buckets)
        coverage_curve[w:] = (shown > 0).mean()
        while next_cp < len(checkpoints) and checkpoints[next_cp] <= t:
            at.append(int(t))
            cum_regret.append(oracle_total - expected_total)
            cum_clicks.append(clicks_total)
            next_cp += 1
        if progress is not None:
            progress.update(n)
    policy.flush()
    share = exposure / np.maximum(exposure.sum(axis=1, keepdims=True), 1)
    return {
        "policy": spec.name,
        "seed": seed,
        "clicks": clicks_total,
        "ctr": clicks_total / (rounds * k),
        "expected_clicks": expected_total,
        "oracle_clicks": oracle_total,
        "regret": oracle_total - expected_total,
        "coverage": float((shown > 0).mean()),
        "gini": gini(shown),
        "ild": ild_total / rounds,
        "top_bucket_share": float(share[-1, -1]),
        "select_seconds": select_s,
        "update_seconds": update_s,
        "curves": {
            "rounds": at,
            "cum_regret": cum_regret,
            "cum_clicks": cum_clicks,
            "exposure_share": share.tolist(),
            "coverage": coverage_curve.tolist(),
        },
    }


@dataclass
class BanditResult:
    """Everything a run produced: config, world info, per-(policy, seed) runs, summary."""

    config: BanditConfig
    world_info: dict[str, Any]
    runs: list[dict[str, Any]]
    seconds: float

    _METRICS = ("clicks", "ctr", "regret", "coverage", "gini", "ild", "top_bucket_share")

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """policy -> metric -> {mean, std} over seeds."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for spec in self.config.policies:
            rows = [r for r in self.runs if r["policy"] == spec.name]
            out[spec.name] = {
                m: {
                    "mean": float(np.mean([r[m] for r in rows])),
                    "std": float(np.std([r[m] for r in rows], ddof=1)) if len(rows) > 1 else 0.0,
                }
                for m in (*self._METRICS, "select_seconds", "update_seconds")
            }
        return out

    def table_markdown(self) -> str:
        """One row per policy, mean ± std over seeds."""
        c = self.config
        head = (
            f"| policy | clicks | CTR | regret | coverage | exposure Gini | ILD | "
            f"top-{100 // c.popularity_buckets}% popular share (end) | s/run |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        )
        lines = []
        for name, m in self.summary().items():
            sec = m["select_seconds"]["mean"] + m["update_seconds"]["mean"]
            lines.append(
                f"| {name} | {m['clicks']['mean']:,.0f} ± {m['clicks']['std']:,.0f} "
                f"| {m['ctr']['mean']:.4f} | {m['regret']['mean']:,.0f} ± {m['regret']['std']:,.0f} "
                f"| {m['coverage']['mean']:.3f} | {m['gini']['mean']:.3f} | {m['ild']['mean']:.3f} "
                f"| {m['top_bucket_share']['mean']:.3f} | {sec:.1f} |"
            )
        return head + "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "world": self.world_info,
            "seconds": self.seconds,
            "summary": self.summary(),
            "runs": self.runs,
        }


def run_bandits(
    config: BanditConfig, verbose: bool = True, world: World | None = None
) -> BanditResult:
    """Run every policy on every seed (same users and click noise per seed for all policies)."""
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    start = time.perf_counter()
    if world is None:
        world = build_world(config.world)
    if config.env.n_candidates > world.n_items:
        raise ConfigError(
            f"env.n_candidates ({config.env.n_candidates}) exceeds the {world.n_items} items"
        )
    total = config.rounds * len(config.seeds) * len(config.policies)
    runs = []
    with (
        threadpool_limits(config.threads),
        tqdm(total=total, unit="round", disable=not verbose, desc=config.name) as bar,
    ):
        for seed in config.seeds:
            for spec in config.policies:
                bar.set_postfix_str(f"{spec.name} seed {seed}")
                runs.append(run_one(world, config, spec, seed, bar))
    info = {
        **world.info,
        "name": world.name,
        "n_users": world.n_users,
        "n_items": world.n_items,
        "n_features": world.n_features,
        "mean_attractiveness": float(world.attractiveness.mean()),
    }
    return BanditResult(config, info, runs, time.perf_counter() - start)


def _bands(ax: Any, x: np.ndarray, ys: np.ndarray, label: str, color: Any) -> None:
    mean = ys.mean(axis=0)
    ax.plot(x, mean, label=label, color=color)
    if len(ys) > 1:
        ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.2, linewidth=0)


def regret_figure(result: BanditResult):  # -> matplotlib.figure.Figure
    """Cumulative regret and cumulative clicks vs rounds; line = mean, band = min..max over seeds."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), constrained_layout=True)
    ax_r, ax_c = fig.subplots(1, 2)
    colors = _colors(len(result.config.policies))
    for spec, color in zip(result.config.policies, colors):
        rows = [r for r in result.runs if r["policy"] == spec.name]
        x = np.asarray(rows[0]["curves"]["rounds"])
        _bands(ax_r, x, np.array([r["curves"]["cum_regret"] for r in rows]), spec.name, color)
        _bands(ax_c, x, np.array([r["curves"]["cum_clicks"] for r in rows]), spec.name, color)
    c = result.config
    ax_r.set(
        xlabel="rounds",
        ylabel="cumulative regret (expected clicks)",
        title=f"{c.name}: regret vs the oracle ({len(c.seeds)} seeds, band = min..max)",
    )
    ax_c.set(xlabel="rounds", ylabel="cumulative clicks", title="cumulative clicks")
    ax_r.legend(fontsize=8)
    return fig


def exposure_figure(result: BanditResult):  # -> matplotlib.figure.Figure
    """The feedback loop: impression share of the most popular items, and catalogue coverage."""
    from matplotlib.figure import Figure

    c = result.config
    fig = Figure(figsize=(12, 4.5), constrained_layout=True)
    ax_s, ax_v = fig.subplots(1, 2)
    colors = _colors(len(c.policies))
    x = (np.arange(c.exposure_windows) + 0.5) * c.rounds / c.exposure_windows
    for spec, color in zip(c.policies, colors):
        rows = [r for r in result.runs if r["policy"] == spec.name]
        share = np.array([np.asarray(r["curves"]["exposure_share"])[:, -1] for r in rows])
        _bands(ax_s, x, share, spec.name, color)
        _bands(ax_v, x, np.array([r["curves"]["coverage"] for r in rows]), spec.name, color)
    top = 100 // c.popularity_buckets
    ax_s.axhline(1.0 / c.popularity_buckets, color="grey", linestyle=":", linewidth=1)
    ax_s.set(
        xlabel="rounds",
        ylabel=f"share of impressions on the top-{top}% popular items",
        title="popularity amplification (dotted: uniform exposure)",
    )
    ax_v.set(
        xlabel="rounds",
        ylabel="share of the catalogue shown so far",
        title="exploration: catalogue coverage",
    )
    ax_s.legend(fontsize=8)
    return fig


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _save_fig(fig: Any, path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)


def write_outputs(result: BanditResult, out: str | Path) -> Path:
    """results.json, results.md, config.yaml (resolved), regret.png, exposure.png under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = result.to_json()
    payload["environment"] = environment_info()
    with atomic_write(out / "results.json") as fh:
        json.dump(payload, fh, indent=1, default=_json_default)
    with atomic_write(out / "results.md") as fh:
        fh.write(f"# {result.config.name}\n\n{result.table_markdown()}\n")
    with atomic_write(out / "config.yaml") as fh:
        yaml.safe_dump(
            json.loads(json.dumps(result.config.to_dict(), default=_json_default)),
            fh,
            sort_keys=False,
        )
    _save_fig(regret_figure(result), out / "regret.png")
    _save_fig(exposure_figure(result), out / "exposure.png")
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise RankloopError(f"cannot serialise {type(o).__name__} to JSON")


__all__ = [
    "BanditConfig",
    "BanditResult",
    "PolicySpec",
    "build_policy",
    "exposure_figure",
    "gini",
    "intra_list_diversity",
    "popularity_buckets",
    "regret_figure",
    "run_bandits",
    "run_one",
    "write_outputs",
]
