"""Bandit experiment: every policy of a config on every seed of a semi-synthetic slate world.

`run_bandits(config)` builds the world once, then for every seed and policy runs
`rankloop.bandits.simulate.run_policy` (same users and click noise per seed for all policies);
`BanditResult` summarises over seeds and `write_outputs` writes results.json, results.md,
config.yaml, regret.png and exposure.png. Behind `rankloop experiment bandits CONFIG.yaml`
(alias: `rankloop simulate bandits`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import Field

from rankloop._runtime import (
    Count,
    Seeds,
    Threads,
    YamlConfig,
    check_params,
    check_registry_params,
    environment_info,
    parse_config,
)
from rankloop.bandits.envs import WORLDS, EnvConfig, World, build_world
from rankloop.bandits.policies import POLICIES
from rankloop.bandits.simulate import POLICY_RESERVED, build_policy, run_policy
from rankloop.errors import ConfigError, RankloopError
from rankloop.io import atomic_write
from rankloop.scale import map_tasks, ray_active

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "BanditConfig",
    "BanditResult",
    "EnvSpec",
    "PolicySpec",
    "exposure_figure",
    "regret_figure",
    "run_bandits",
    "write_outputs",
]

# The most user x item cells a synthetic world may have (its attractiveness is a dense matrix).
_MAX_SYNTHETIC_CELLS = 100_000_000


@dataclass
class EnvSpec(EnvConfig):
    """The `env:` block of a bandits config: `rankloop.bandits.envs.EnvConfig` with every
    field typed and bounded for loading (a slate of at most 1,000 items)."""

    n_candidates: Annotated[int, Field(ge=1, le=1_000_000)] = 50
    slate_size: Annotated[int, Field(ge=1, le=1_000)] = 5
    click_model: Literal["pbm", "cascade", "cm"] = "pbm"
    eta: Annotated[float, Field(ge=0.0)] = 1.0
    drift: Annotated[float, Field(ge=0.0)] = 0.0
    cold_start: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    cold_start_rounds: Count | None = None
    delay: Annotated[int, Field(ge=0, le=100_000_000)] = 0
    index_factory: str = "Flat"


@dataclass
class PolicySpec:
    """One policy of the experiment: display name, type (a `POLICIES` name) and parameters
    (checked against the policy's constructor at load)."""

    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    feedback: Literal["all", "cascade"] = "all"  # how a slate's clicks become per-item feedback

    def __post_init__(self) -> None:
        what = f"policy {self.name!r}"
        if not self.name:
            raise ConfigError("a policy needs a non-empty name")
        check_registry_params(
            POLICIES, self.type, self.params, where_=what, reserved=POLICY_RESERVED
        )
        # Build it once on a toy world (2 items, slates of 1), so the values its constructor
        # checks (epsilon in [0, 1], alpha >= 0, reg > 0, ...) fail now, not mid-run.
        toy = SimpleNamespace(n_items=2, n_features=2, arm_features=np.zeros((2, 2)))
        try:
            build_policy(
                self.type,
                toy,  # type: ignore[arg-type]
                EnvConfig(n_candidates=2, slate_size=1),
                params=self.params,
                feedback=self.feedback,
                random_state=0,
                where=what,
            )
        except ConfigError:
            raise
        except (TypeError, ValueError, ArithmeticError) as e:
            raise ConfigError(f"{what}: {e}") from None


@dataclass
class BanditConfig(YamlConfig):
    """A bandit experiment, loadable from YAML (see configs/bandits_coat.yaml); `from_yaml`
    checks every key, type and bound (and builds each policy once on a toy world, so its own
    value checks run) before any work, naming file:line on errors."""

    name: str
    world: dict[str, Any]
    policies: list[PolicySpec]
    env: EnvSpec = field(default_factory=EnvSpec)
    rounds: Count = 20_000
    users_per_step: Count = 100
    seeds: Seeds = field(default_factory=lambda: [0, 1, 2])
    checkpoints: Annotated[int, Field(ge=1, le=100_000)] = 100
    popularity_buckets: Annotated[int, Field(ge=1, le=100)] = 5
    exposure_windows: Annotated[int, Field(ge=1, le=10_000)] = 20
    threads: Threads = 1  # BLAS/OpenMP threads (small matrices: spinning threads only cost)
    out: str = "runs/bandits"

    def __post_init__(self) -> None:
        if isinstance(self.env, dict):
            self.env = parse_config(EnvSpec, self.env, where_="env")
        if isinstance(self.seeds, int):  # `seeds: N` means 0..N-1
            self.seeds = list(range(self.seeds))
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct, got {self.seeds}")
        if not self.name or not self.out:
            raise ConfigError("name and out must be non-empty strings")
        if not self.policies:
            raise ConfigError("the config lists no policies")
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ConfigError(f"policy names must be unique, got {names}")
        self._check_world()

    def _check_world(self) -> None:
        """`world:` names a builder of `rankloop.bandits.envs.WORLDS` and its parameters."""
        spec = dict(self.world)
        kind = spec.pop("type", None)
        if not isinstance(kind, str) or kind not in WORLDS:
            raise ConfigError(
                f"world.type must be one of {', '.join(sorted(WORLDS))}, got {kind!r}"
            )
        check_params(WORLDS[kind], spec, f"world {kind!r}", where_="world")
        for key, lo, hi, closed in (
            ("base_ctr", 0.0, 1.0, False),
            ("logged_fraction", 0.0, 1.0, False),
            ("eps", 0.0, 1.0, True),
        ):
            v = spec.get(key)
            if v is not None and not (lo <= v <= hi if closed else lo < v < hi):
                interval = f"[{lo}, {hi}]" if closed else f"({lo}, {hi})"
                raise ConfigError(f"world.{key} must be in {interval}, got {v}")
        if kind == "ratings" and spec.get("dataset", "coat") not in (
            "coat",
            "movielens-100k",
            "movielens-1m",
        ):
            raise ConfigError(
                f"world.dataset of a ratings world must be coat, movielens-100k or "
                f"movielens-1m, got {spec['dataset']!r}"
            )
        if kind == "synthetic":
            cells = spec.get("n_users", 50) * spec.get("n_items", 40)
            if (
                cells > _MAX_SYNTHETIC_CELLS
                or not spec.get("n_users", 50)
                or not spec.get("n_items", 40)
            ):
                raise ConfigError(
                    f"world: a synthetic world needs 1 to {_MAX_SYNTHETIC_CELLS:,} user x item "
                    f"cells, got {spec.get('n_users', 50)} x {spec.get('n_items', 40)}"
                )




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
        """Config, world, timing, summary and every run as plain data (results.json)."""
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

        def play(task: tuple[int, PolicySpec]) -> dict[str, Any]:
            """One policy on one seed (a Ray task under --ray, reported when it ends)."""
            seed, spec = task
            with threadpool_limits(config.threads):
                policy = build_policy(
                    spec.type,
                    world,
                    config.env,
                    params=spec.params,
                    feedback=spec.feedback,
                    random_state=seed,
                    where=f"policy {spec.name!r}",
                )
                stats = run_policy(
                    world,
                    config.env,
                    policy,
                    rounds=config.rounds,
                    users_per_step=config.users_per_step,
                    random_state=seed,
                    checkpoints=config.checkpoints,
                    n_buckets=config.popularity_buckets,
                    n_windows=config.exposure_windows,
                    progress=None if ray_active() else bar,
                )
            return {"policy": spec.name, "seed": seed, **stats}

        tasks = [(seed, spec) for seed in config.seeds for spec in config.policies]
        for (seed, spec), run in zip(tasks, map_tasks(play, tasks)):
            runs.append(run)
            bar.set_postfix_str(f"{spec.name} seed {seed}")
            if ray_active():
                bar.update(config.rounds)
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


def regret_figure(result: BanditResult) -> Figure:
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


def exposure_figure(result: BanditResult) -> Figure:
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
