"""LinUCB (disjoint) throughput: rankloop vs MABWiser on the same contexts and rewards.

d = 32 features, 100 arms, 100,000 rounds. Rewards are Bernoulli draws fixed in advance for
every (round, arm), from a logistic model with a random parameter per arm, so both libraries
see exactly the same reward for the same decision. Both start from the same warm-up (one
forced round per arm) and use alpha = 1, lambda = 1, first-index tie-breaking and one thread.

Protocols ("decisions + updates per second" counts decide + learn, not the reward lookup):
- online (batch 1): decide one round, learn from it, repeat. MABWiser is run on the first
  `--mab-online-rounds` rounds only (it manages ~70 rounds/s here; all 100,000 would take
  ~25 minutes), and both libraries are compared on that prefix;
- batched (batch 100, 1000): decide a batch with the current model, then learn from the batch
  (MABWiser's `predict` on a batch, then `partial_fit`). Both run all rounds.

Run: `.venv/bin/python benchmarks/bandits_speed.py` (MABWiser: `pip install mabwiser`, a
benchmark-only dependency). Writes benchmarks/results/bandits_speed.json.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

from rankloop.bandits.policies import LinUCB


def make_problem(rounds: int, arms: int, dim: int, seed: int):
    """Contexts (T, d), reward table (T, K) of 0/1 and its expectation (T, K)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rounds, dim)) / np.sqrt(dim)
    theta = rng.standard_normal((arms, dim))
    p = 1.0 / (1.0 + np.exp(-(2.0 * x @ theta.T - 2.0)))
    rewards = (rng.random((rounds, arms)) < p).astype(np.float64)
    return x, rewards, p.astype(np.float32)


class Ours:
    name = "rankloop"

    def __init__(self, arms: int, dim: int, alpha: float) -> None:
        self.policy = LinUCB(arms, dim, alpha=alpha, reg=1.0, tie_break="first")

    def warm(self, x: np.ndarray, a: np.ndarray, r: np.ndarray) -> None:
        self.policy.update(x, a, r)

    def decide(self, x: np.ndarray) -> np.ndarray:
        return self.policy.select(x)

    def learn(self, x: np.ndarray, a: np.ndarray, r: np.ndarray) -> None:
        self.policy.update(x, a, r)


class Mabwiser:
    name = "MABWiser"

    def __init__(self, arms: int, dim: int, alpha: float) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        self.mab = MAB(
            arms=list(range(arms)),
            learning_policy=LearningPolicy.LinUCB(alpha=alpha, l2_lambda=1.0),
            seed=0,
            n_jobs=1,
        )

    def warm(self, x: np.ndarray, a: np.ndarray, r: np.ndarray) -> None:
        self.mab.fit(a, r, x)

    def decide(self, x: np.ndarray) -> np.ndarray:
        return np.atleast_1d(np.asarray(self.mab.predict(x), dtype=np.int64))

    def learn(self, x: np.ndarray, a: np.ndarray, r: np.ndarray) -> None:
        self.mab.partial_fit(a, r, x)


def run(impl, x, rewards, p, batch: int, rounds: int) -> dict:
    """Warm-up on one forced round per arm, then decide/learn in batches; timed decide+learn."""
    arms = rewards.shape[1]
    warm = np.arange(arms)
    impl.warm(x[:arms], warm, rewards[warm, warm])
    decisions = np.empty(rounds - arms, dtype=np.int64)
    elapsed = 0.0
    for s in range(arms, rounds, batch):
        e = min(s + batch, rounds)
        xb = x[s:e]
        t0 = time.perf_counter()
        a = impl.decide(xb)
        elapsed_decide = time.perf_counter() - t0
        r = rewards[np.arange(s, e), a]
        t0 = time.perf_counter()
        impl.learn(xb, a, r)
        elapsed += elapsed_decide + time.perf_counter() - t0
        decisions[s - arms : e - arms] = a
    t = np.arange(arms, rounds)
    return {
        "decisions": decisions,
        "seconds": elapsed,
        "rounds": rounds - arms,
        "per_second": (rounds - arms) / elapsed,
        "cum_reward": float(rewards[t, decisions].sum()),
        "regret": float((p[t].max(axis=1) - p[t, decisions]).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100_000)
    ap.add_argument("--arms", type=int, default=100)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--batches", default="1,100,1000", help="comma-separated batch sizes")
    ap.add_argument(
        "--mab-online-rounds",
        type=int,
        default=5_000,
        help="rounds MABWiser runs in the online (batch 1) protocol",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        mab_version = importlib.metadata.version("mabwiser")
    except importlib.metadata.PackageNotFoundError:
        print("MABWiser is not installed: pip install mabwiser (benchmark-only)", file=sys.stderr)
        return 1
    x, rewards, p = make_problem(args.rounds, args.arms, args.dim, args.seed)
    rows = []
    with threadpool_limits(1):
        for batch in (int(b) for b in args.batches.split(",")):
            ours = run(Ours(args.arms, args.dim, args.alpha), x, rewards, p, batch, args.rounds)
            mab_rounds = (
                min(args.rounds, args.mab_online_rounds + args.arms) if batch == 1 else args.rounds
            )
            mab = run(Mabwiser(args.arms, args.dim, args.alpha), x, rewards, p, batch, mab_rounds)
            n = mab["rounds"]
            same = ours["decisions"][:n] == mab["decisions"]
            t = np.arange(args.arms, args.arms + n)
            ours_prefix_reward = float(rewards[t, ours["decisions"][:n]].sum())
            ours_prefix_regret = float((p[t].max(axis=1) - p[t, ours["decisions"][:n]]).sum())
            row = {
                "batch": batch,
                "rounds_rankloop": ours["rounds"],
                "rounds_mabwiser": n,
                "rankloop_per_second": ours["per_second"],
                "mabwiser_per_second": mab["per_second"],
                "speedup": ours["per_second"] / mab["per_second"],
                "rankloop_seconds": ours["seconds"],
                "mabwiser_seconds": mab["seconds"],
                "compared_rounds": n,
                "rankloop_cum_reward": ours_prefix_reward,
                "mabwiser_cum_reward": mab["cum_reward"],
                "rankloop_regret": ours_prefix_regret,
                "mabwiser_regret": mab["regret"],
                "rankloop_full_cum_reward": ours["cum_reward"],
                "rankloop_full_regret": ours["regret"],
                "identical_decisions": float(same.mean()),
                "first_difference": int(np.argmin(same)) if not same.all() else None,
            }
            rows.append(row)
            print(
                f"batch {batch}: rankloop {row['rankloop_per_second']:,.0f}/s, MABWiser "
                f"{row['mabwiser_per_second']:,.0f}/s, x{row['speedup']:.1f}",
                file=sys.stderr,
            )
    print(
        f"LinUCB disjoint, d={args.dim}, {args.arms} arms, {args.rounds:,} rounds, alpha={args.alpha}, "
        f"1 thread; MABWiser {mab_version}\n"
    )
    print(
        "| protocol | rankloop rounds/s | MABWiser rounds/s | speed-up | compared rounds | "
        "cum. reward rankloop / MABWiser | regret rankloop / MABWiser | identical decisions |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        proto = "online (batch 1)" if r["batch"] == 1 else f"batched ({r['batch']})"
        print(
            f"| {proto} | {r['rankloop_per_second']:,.0f} | {r['mabwiser_per_second']:,.0f} | "
            f"{r['speedup']:.1f}x | {r['compared_rounds']:,} | "
            f"{r['rankloop_cum_reward']:,.0f} / {r['mabwiser_cum_reward']:,.0f} | "
            f"{r['rankloop_regret']:,.1f} / {r['mabwiser_regret']:,.1f} | "
            f"{100 * r['identical_decisions']:.2f}% |"
        )
    online = next((r for r in rows if r["batch"] == 1), None)
    if online is not None:
        print(
            f"\nonline, all {online['rounds_rankloop']:,} rounds (rankloop): cum. reward "
            f"{online['rankloop_full_cum_reward']:,.0f}, regret {online['rankloop_full_regret']:,.1f}, "
            f"{online['rankloop_seconds']:.1f}s"
        )
    path = write_result(
        "bandits_speed",
        {
            "command": "python benchmarks/bandits_speed.py " + " ".join(argv or sys.argv[1:]),
            "params": vars(args),
            "mabwiser_version": mab_version,
            "rows": rows,
        },
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
