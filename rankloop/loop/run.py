"""Running loops: the config, the round, checkpoints after every round, and resuming.

`run_loop(config, out)` builds the world once, then for every seed and learner plays `rounds`
rounds of `sessions` sessions (see `rankloop.loop.base`). After every round the learner, the log
and the measures so far are written atomically to `out/checkpoints/<learner>__seed<s>.pkl`;
`resume=True` continues each run from its last checkpoint, and since every random draw comes
from `(seed, round, purpose)` alone, a resumed run ends with exactly the numbers of an
uninterrupted one. A resume whose config differs from the one in `out/config.json` is refused,
naming the keys that differ.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from rankloop._runtime import (
    Count,
    Seeds,
    YamlConfig,
    check_registry_params,
    environment_info,
    where,
)
from rankloop.errors import ConfigError, RankloopError
from rankloop.io import atomic_write
from rankloop.loop import explore as _explore  # also registers the explorers
from rankloop.loop import recommend as _recommend  # noqa: F401 (registers its world/learners)
from rankloop.loop import search as _search  # noqa: F401 (registers its world/learners)
from rankloop.loop.base import (
    EXPLORERS,
    LEARNERS,
    WORLDS,
    Explorer,
    Learner,
    LoopLog,
    LoopWorld,
    Shown,
    rank_candidates,
    round_rng,
)
from rankloop.loop.interleave import preferences
from rankloop.loop.measures import (
    coverage,
    exposure_gini,
    homogenisation,
    popularity_lift,
    top_items,
)
from rankloop.scale import map_tasks, ray_active

__all__ = ["LearnerSpec", "LoopConfig", "LoopResult", "run_loop"]


def _spec_type(spec: Any, what: str) -> tuple[str, dict[str, Any]]:
    """`{type: name, **params}` -> (name, params)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ConfigError(f"{where(spec) or what}: {what} needs a `type:` name, got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "type"}
    return spec["type"], params


@dataclass
class LearnerSpec:
    """One learner of a loop: display name, type (a `LEARNERS` name), parameters, and an
    explorer overriding the config's (`{type: randpair, rate: 0.5}`)."""

    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    explorer: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"a learner needs a plain non-empty name, got {self.name!r}")
        at = where(self.params) or f"learner {self.name!r}"
        check_registry_params(LEARNERS, self.type, self.params, where_=at)
        self.build()  # the constructor's own value checks run now, not at round 0

    def build(self) -> Learner:
        return LEARNERS.create(self.type, self.params, where=f"learner {self.name!r}")


def build_explorer(spec: dict[str, Any]) -> Explorer:
    """An explorer from `{type: name, **params}`."""
    kind, params = _spec_type(spec, "explorer")
    return EXPLORERS.create(kind, params, where=where(spec) or "explorer")


@dataclass
class LoopConfig(YamlConfig):
    """A loop experiment (see configs/loop_*.yaml); `from_yaml` checks every world, learner and
    explorer name and parameter before any work, naming file:line."""

    name: str
    world: dict[str, Any]
    learners: list[LearnerSpec]
    rounds: Count = 30
    sessions: Count = 1000
    k: Annotated[int, Field(ge=1, le=1000)] = 10
    explorer: dict[str, Any] = field(default_factory=lambda: {"type": "none"})
    seeds: Seeds = field(default_factory=lambda: [0, 1, 2, 3, 4])
    warm_start_log: str | None = None
    out: str = "runs/loop"

    def __post_init__(self) -> None:
        if isinstance(self.seeds, int):
            self.seeds = list(range(self.seeds))
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct, got {self.seeds}")
        if not self.name or not self.out:
            raise ConfigError("name and out must be non-empty")
        if not self.learners:
            raise ConfigError("the config lists no learners")
        names = [s.name for s in self.learners]
        if len(set(names)) != len(names):
            raise ConfigError(f"learner names must be unique, got {names}")
        kind, params = _spec_type(self.world, "world")
        check_registry_params(WORLDS, kind, params, where_=where(self.world) or "world")
        build_explorer(self.explorer)
        for spec in self.learners:
            explorer = build_explorer(spec.explorer or self.explorer)
            if spec.build().online and not isinstance(explorer, _explore.Greedy):
                raise ConfigError(
                    f"learner {spec.name!r} learns online and explores by itself; give it "
                    "`explorer: {type: none}`"
                )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LoopConfig:
        """Also checks the world and explorer specs where the file holds them (file:line)."""
        if isinstance(raw, dict):
            for key, registry in (("world", WORLDS), ("explorer", EXPLORERS)):
                node = raw.get(key)
                if node is not None:
                    kind, params = _spec_type(node, key)
                    check_registry_params(registry, kind, params, where_=where(node) or key)
        return super().from_dict(raw)

    def build_world(self) -> LoopWorld:
        kind, params = _spec_type(self.world, "world")
        return WORLDS.create(kind, params, where="world")


@dataclass
class LoopResult:
    """Per (learner, seed) the measures of every round, plus the world and the config."""

    config: LoopConfig
    world_info: dict[str, Any]
    runs: list[dict[str, Any]]
    seconds: float


# -- one round --------------------------------------------------------------------------------
def _pad(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(k, -1, np.int64)
    out[: min(k, len(x))] = x[:k]
    return out


class _Timer:
    """Seconds spent inside the learner (what the loop's own time excludes)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


class _Timed:
    """The learner as the world sees it while measuring: its method calls (scoring the held-out
    and seen queries) count as the learner's time, not the loop's."""

    def __init__(self, learner: Learner, timer: _Timer) -> None:
        self._learner, self._timer = learner, timer

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._learner, name)
        if not callable(value):
            return value
        return lambda *args, **kwargs: self._timer(value, *args, **kwargs)


def _serve(world: LoopWorld, learner: Learner, explorer: Explorer, users: np.ndarray,
           cands: np.ndarray, k: int, seed: int, r: int,
           timer: _Timer) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
    """One round's shown lists and clicks."""
    clicks_rng = round_rng(seed, r, "clicks")
    if not learner.online:
        ranked = rank_candidates(timer(learner.scores, world, users, cands), cands)
        shown, records = explorer.show(world, users, ranked, k, round_rng(seed, r, "explore"))
        attr = world.attractiveness(users, shown, r)
        clicks = world.click_model.simulate_attractiveness(attr, clicks_rng) & (shown >= 0)
        return shown, clicks, records
    serve_rng = round_rng(seed, r, "serve")
    shown = np.full((len(users), k), -1, np.int64)
    clicks = np.zeros((len(users), k), bool)
    for i, u in enumerate(users.tolist()):
        row = _pad(timer(learner.serve_one, world, u, cands[i], k, serve_rng), k)
        attr = world.attractiveness(users[i : i + 1], row[None], r)
        c = world.click_model.simulate_attractiveness(attr, clicks_rng)[0] & (row >= 0)
        timer(learner.update_one, world, u, cands[i], row, c)
        shown[i], clicks[i] = row, c
    return shown, clicks, {}


def _measures(world: LoopWorld, users: np.ndarray, cands: np.ndarray, shown: np.ndarray,
              clicks: np.ndarray, records: dict[str, np.ndarray], r: int, seed: int,
              popular: np.ndarray, universe: np.ndarray,
              against: list[str]) -> dict[str, float]:  # fmt: skip
    """Online measures of one round (CTR, regret, exposure, interleaving outcomes)."""
    k = shown.shape[1]
    model = world.click_model
    expected = model.click_probs(world.attractiveness(users, shown, r)).sum(axis=1)
    attr_all = world.attractiveness(users, cands, r)
    best = np.argsort(-attr_all, axis=1, kind="stable")[:, :k]
    ideal = np.where(np.take_along_axis(cands, best, axis=1) >= 0,
                     np.take_along_axis(cands, best, axis=1), -1)  # fmt: skip
    oracle = model.click_probs(np.take_along_axis(attr_all, best, axis=1)).sum(axis=1)
    local = np.searchsorted(universe, np.maximum(shown, 0))
    local = np.where(shown >= 0, local, -1)
    out = {
        "ctr": float(clicks.any(axis=1).mean()),
        "clicks": float(clicks.sum(axis=1).mean()),
        "regret": float((oracle - expected).mean()),
        "gini": exposure_gini(local, len(universe)),
        "coverage": coverage(local, len(universe)),
        "popularity_lift": popularity_lift(shown, ideal, popular),
        "homogenisation": homogenisation(users, shown, np.random.default_rng([seed, r, 9])),
    }
    teams = records.get("teams")
    if teams is not None:
        pref = preferences(teams, clicks, len(against) + 1)
        for i, name in enumerate(against, start=1):
            wins, losses = pref[:, 0, i].sum(), pref[:, i, 0].sum()
            out[f"win_rate_vs_{name}"] = float(wins / (wins + losses)) if wins + losses else 0.5
    return out


# -- a run ------------------------------------------------------------------------------------
def _checkpoint_path(out: Path, learner: str, seed: int) -> Path:
    return out / "checkpoints" / f"{learner}__seed{seed}.pkl"


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, list):
        out = {}
        for i, v in enumerate(d):
            out.update(_flat(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: d}


def _check_resume(out: Path, config: LoopConfig, resume: bool) -> None:
    """Refuse to mix runs: a resume needs the same config; a fresh run needs a fresh folder."""
    saved = out / "config.json"
    now = json.loads(json.dumps(config.to_dict()))
    now.pop("out", None)
    if resume:
        if not saved.is_file():
            raise ConfigError(f"--resume: {saved} not found; nothing to resume in {out}")
        before = json.loads(saved.read_text(encoding="utf-8"))
        before.pop("out", None)
        a, b = _flat(before), _flat(now)
        differ = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
        if differ:
            raise ConfigError(
                f"--resume: the config differs from the checkpoint's ({saved}) in: "
                + ", ".join(
                    f"{k} ({a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r})"
                    for k in differ[:10]
                )
            )
    elif (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise ConfigError(
            f"{out} already holds loop checkpoints; pass --resume to continue them or choose "
            "another --out (nothing was overwritten)"
        )
    with atomic_write(saved) as fh:
        json.dump(now, fh, indent=2)


def _warm_log(config: LoopConfig, world: LoopWorld) -> LoopLog | None:
    if not config.warm_start_log:
        return None
    from rankloop.data.clicklogs import read_click_log

    log = read_click_log(config.warm_start_log)
    return LoopLog.from_click_log(log, world, config.k, world.examination(config.k))


def _play(config: LoopConfig, world: LoopWorld, spec: LearnerSpec, seed: int, out: Path,
          resume: bool, warm: LoopLog | None, bar: Any) -> dict[str, Any]:  # fmt: skip
    """All rounds of one (learner, seed), from its checkpoint when resuming."""
    path = _checkpoint_path(out, spec.name, seed)
    explorer = build_explorer(spec.explorer or config.explorer)
    against: list[str] = []
    if isinstance(explorer, _explore.Interleave):
        refs = world.reference_rankings(
            np.zeros(1, np.int64), world.candidates(np.zeros(1, np.int64))
        )
        against = explorer.against or sorted(refs)
    popular = top_items(world.popularity)
    universe = getattr(world, "universe", np.arange(world.n_items))
    if resume and path.is_file():
        with open(path, "rb") as fh:
            state = pickle.load(fh)
        learner, log, rows, start = state["learner"], state["log"], state["rows"], state["round"]
        bar.update(start)
    else:
        learner = spec.build()
        learner.start(world, seed)
        log = LoopLog(config.k)
        if warm is not None:
            log.append(-1, Shown(warm.users, warm.items, warm.clicks, warm.propensities))
            learner.learn(world, log, -1, round_rng(seed, 0, "learn"))
        rows, start = [], 0
    theta = world.examination(config.k)
    for r in range(start, config.rounds):
        t0 = time.perf_counter()
        timer = _Timer()
        held = world.evaluate(_Timed(learner, timer), r)  # type: ignore[arg-type]
        users = world.draw_users(config.sessions, round_rng(seed, r, "traffic"))
        cands = world.candidates(users)
        shown, clicks, records = _serve(
            world, learner, explorer, users, cands, config.k, seed, r, timer
        )
        log.append(r, Shown(users, shown, clicks, np.where(shown >= 0, theta[None, :], 0.0),
                            records.get("swaps"), records.get("teams")))  # fmt: skip
        row = {"round": r, **held,
               **_measures(world, users, cands, shown, clicks, records, r, seed, popular,
                           universe, against)}  # fmt: skip
        serve_learner = timer.seconds
        timer(learner.learn, world, log, r, round_rng(seed, r, "learn"))
        row["loop_seconds"] = time.perf_counter() - t0 - timer.seconds
        row["learner_seconds"] = timer.seconds
        row["learn_seconds"] = timer.seconds - serve_learner
        rows.append(row)
        with atomic_write(path, "wb") as fh:
            pickle.dump({"round": r + 1, "learner": learner, "log": log, "rows": rows}, fh)
        bar.update(1)
        bar.set_postfix_str(f"{spec.name} seed {seed} round {r}: "
                            + ", ".join(f"{k}={v:.4f}" for k, v in held.items()))  # fmt: skip
    final = {"round": config.rounds, **world.evaluate(learner, config.rounds)}
    return {"learner": spec.name, "seed": seed, "rows": rows, "final": final, "log": log}


def _play_task(config: LoopConfig, out: Path, resume: bool, warm: LoopLog | None,
               world: LoopWorld | None, bar: Any, task: tuple[int, LearnerSpec]) -> dict[str, Any]:  # fmt: skip
    """One (seed, learner) with its click log written; `world` None: a Ray task, which builds
    its own world and reports no per-round progress."""
    from tqdm.auto import tqdm

    seed, spec = task
    own = world is None
    w = config.build_world() if own else world
    try:
        run = _play(config, w, spec, seed, out, resume, warm, tqdm(disable=True) if own else bar)
        run.pop("log").write_jsonl(w, out / "clicks" / f"{spec.name}__seed{seed}.jsonl")
    finally:
        if own and hasattr(w, "close"):
            w.close()
    return run


def run_loop(config: LoopConfig, out: str | Path | None = None, *, resume: bool = False,
             verbose: bool = True) -> LoopResult:  # fmt: skip
    """Every learner of `config` on every seed; checkpoints and click logs under `out`."""
    from tqdm.auto import tqdm

    out = Path(out or config.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, config, resume)
    t0 = time.perf_counter()
    world = config.build_world()
    warm = _warm_log(config, world)
    runs = []
    total = len(config.seeds) * len(config.learners) * config.rounds
    with tqdm(total=total, desc=f"loop {config.name}", unit="round", disable=not verbose) as bar:
        tasks = [(seed, spec) for seed in config.seeds for spec in config.learners]
        # Under --ray each task builds its own world (a world may hold a JVM or a database)
        local = not ray_active()
        play = partial(_play_task, config, out, resume, warm, world if local else None,
                       bar if local else None)  # fmt: skip
        for run in map_tasks(play, tasks):
            runs.append(run)
            if not local:
                bar.update(config.rounds)
    info = dict(world.info)
    if hasattr(world, "close"):
        world.close()
    if not runs:
        raise RankloopError("the loop ran nothing")
    return LoopResult(config, {**info, "environment": environment_info()}, runs,
                      time.perf_counter() - t0)  # fmt: skip
