"""The bandit simulation loop: one policy in a semi-synthetic slate environment, with regret.

`build_policy` makes a slate policy for a world from a short name (see `POLICIES`);
`run_policy` runs it for `rounds` user arrivals in steps of `users_per_step` (one `select` per
step, as a serving system scores a batch of requests with the same model), feeding clicks back
through a delay queue. It records:

- cumulative clicks, CTR (clicks per impression), and regret against the oracle that knows the
  true attractiveness and picks the best slate among the same candidates (expected clicks, so
  the curve is not dominated by click noise);
- coverage (share of the catalogue ever shown), exposure Gini, intra-list diversity (mean
  pairwise cosine distance of a slate's item vectors);
- the share of impressions per item-popularity bucket over time: the feedback-loop view.

The config-driven experiment over policies × seeds (tables, plots) is
`rankloop.experiments.bandits` (`rankloop experiment bandits CONFIG.yaml`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from rankloop.bandits.envs import EnvConfig, FeedbackQueue, SlateEnv, World
from rankloop.bandits.policies import POLICIES, SlatePolicy, TopK
from rankloop.bandits.policies.base import FEEDBACK
from rankloop.errors import ConfigError

__all__ = [
    "build_policy",
    "gini",
    "intra_list_diversity",
    "popularity_buckets",
    "run_policy",
]


# What `build_policy` passes a policy itself (from the world, the env, the seed and `feedback`),
# so a config may not set it.
POLICY_RESERVED = (
    "n_arms",
    "n_features",
    "arm_features",
    "slate_size",
    "random_state",
    "feedback",
)


def build_policy(
    name: str,
    world: World,
    env: EnvConfig,
    *,
    params: dict[str, Any] | None = None,
    feedback: str = "all",
    random_state: int = 0,
    where: str = "",
) -> SlatePolicy:
    """The slate policy `name` (a `POLICIES` name) sized for `world` and `env`: slate policies as
    they are, single-action ones under `TopK`. `feedback` (all | cascade) says how a slate's
    clicks become per-item feedback; `where` prefixes error messages (e.g. a config position)."""
    if feedback not in FEEDBACK:
        raise ConfigError(f"{where + ': ' if where else ''}feedback must be one of {FEEDBACK}")
    POLICIES.get(name, where=where)
    wanted = POLICIES.parameters(name)
    kwargs: dict[str, Any] = {"n_arms": world.n_items, "random_state": random_state}
    kwargs.update(params or {})
    if "n_features" in wanted:
        kwargs["n_features"] = world.n_features
    if "arm_features" in wanted:
        kwargs["arm_features"] = world.arm_features
    if "slate_size" in wanted:
        kwargs["slate_size"] = env.slate_size
        kwargs.setdefault("feedback", feedback)
    policy = POLICIES.create(name, kwargs, where=where)
    if isinstance(policy, SlatePolicy):
        return policy
    return TopK(policy, env.slate_size, feedback=feedback)


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


def run_policy(
    world: World,
    env_config: EnvConfig,
    policy: SlatePolicy,
    *,
    rounds: int,
    users_per_step: int = 100,
    random_state: int = 0,
    checkpoints: int = 100,
    n_buckets: int = 5,
    n_windows: int = 20,
    progress: Any = None,
) -> dict[str, Any]:
    """Run `policy` for `rounds` arrivals of a `SlateEnv` seeded by `random_state`: summary
    numbers and curves (regret and clicks at `checkpoints` points, exposure share per popularity
    bucket and coverage over `n_windows` windows). `progress.update(n)` is called per step."""
    env = SlateEnv(world, env_config, rounds, random_state=random_state)
    queue = FeedbackQueue(env_config.delay)
    n_items, k = world.n_items, env_config.slate_size
    buckets = popularity_buckets(world.popularity, n_buckets)
    norms = np.linalg.norm(world.item_vectors, axis=1, keepdims=True)
    unit = world.item_vectors / np.maximum(norms, 1e-12)
    window = np.linspace(0, rounds, n_windows + 1)
    exposure = np.zeros((n_windows, n_buckets))
    coverage_curve = np.zeros(n_windows)
    check_at = np.unique(np.linspace(0, rounds, checkpoints + 1).astype(int)[1:])
    shown = np.zeros(n_items)
    clicks_total = expected_total = oracle_total = ild_total = 0.0
    cum_regret, cum_clicks, at = [], [], []
    next_cp = 0
    select_s = update_s = 0.0
    t = 0
    while t < rounds:
        n = min(users_per_step, rounds - t)
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
        exposure[w] += np.bincount(buckets[items], minlength=n_buckets)
        coverage_curve[w:] = (shown > 0).mean()
        while next_cp < len(check_at) and check_at[next_cp] <= t:
            at.append(int(t))
            cum_regret.append(oracle_total - expected_total)
            cum_clicks.append(clicks_total)
            next_cp += 1
        if progress is not None:
            progress.update(n)
    policy.flush()
    share = exposure / np.maximum(exposure.sum(axis=1, keepdims=True), 1)
    return {
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
