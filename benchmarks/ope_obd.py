"""Off-policy evaluation on the Open Bandit Dataset (small sample), as in the OBP paper.

Estimate the value (CTR per impression) of the Bernoulli Thompson sampling policy from the
*random* policy's logs with every estimator (Replay, IPS, SNIPS, DM, DR, Switch-DR), and compare
with the ground truth: the BTS logs' own on-policy CTR. Report the relative estimation error
|V̂ - V| / V (Saito et al., "Open Bandit Dataset and Pipeline"), for the `all`, `men` and
`women` campaigns.

The evaluation policy's action distribution π_e(item | position), two ways:
- `bts-log` (default): the time-averaged distribution of the production BTS, i.e. each
  item's frequency at each position in the BTS log. (The production policy's propensities
  change over the collection period, so no fixed posterior reproduces them exactly.)
- `bts-prior` (with `--bts-prior PATH`): obp's setup. rankloop's `TopK(BernoulliTS)` with the
  production Beta parameters of obp's `obp/policy/conf/prior_bts.yaml` (not redistributed
  here: extract it from the obp 0.5.7 sdist), action distribution by Monte Carlo.

DM, DR and Switch-DR use a logistic-regression reward model (user features, the user's
affinity to the item, item and position indicators), cross-fitted over 2 folds of the random
log. Intervals: 95% bootstrap over logged rounds (reward model held fixed); "mean rel. error"
averages the relative error over the bootstrap resamples, as the paper averages over runs.

Run: `.venv/bin/python benchmarks/ope_obd.py [--bts-prior prior_bts.yaml]`.
Writes benchmarks/results/ope_obd.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result

from rankloop.bandits.ope import ESTIMATORS, evaluate_policy, relative_error
from rankloop.bandits.policies import BernoulliTS, TopK
from rankloop.data.banditlogs import CAMPAIGNS, BanditLog, load_obd

NAMES = {
    "replay": "Replay",
    "ips": "IPS",
    "snips": "SNIPS",
    "dm": "DM",
    "dr": "DR",
    "switch_dr": "Switch-DR",
}


def reward_model(log: BanditLog, folds: int, c: float, seed: int) -> np.ndarray:
    """(n, A) cross-fitted click probabilities q̂(x_i, a, position_i) from a logistic model."""
    from sklearn.linear_model import LogisticRegression

    n, n_actions, n_pos = len(log), log.n_actions, log.len_list
    aff_col = {
        int(name.rsplit("_", 1)[1]): j
        for j, name in enumerate(log.context_names)
        if name.startswith("user-item_affinity_")
    }
    user = log.context[
        :, [j for j, nm in enumerate(log.context_names) if not nm.startswith("user-item_affinity_")]
    ]
    affinity = np.zeros((n, n_actions))
    for a, j in aff_col.items():
        if a < n_actions:
            affinity[:, a] = log.context[:, j]
    rows = np.arange(n)

    def features(idx: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return np.hstack(
            [
                user[idx],
                affinity[idx, actions][:, None],
                np.eye(n_actions)[actions],
                np.eye(n_pos)[log.position[idx]],
            ]
        )

    fold = np.random.default_rng(seed).permutation(n) % folds
    q_hat = np.empty((n, n_actions))
    for k in range(folds):
        train, test = rows[fold != k], rows[fold == k]
        model = LogisticRegression(C=c, max_iter=2000)
        model.fit(features(train, log.action[train]), log.reward[train])
        w = model.coef_[0]
        du = user.shape[1]
        logit = (
            model.intercept_[0]
            + (user[test] @ w[:du])[:, None]
            + affinity[test] * w[du]
            + w[du + 1 : du + 1 + n_actions][None, :]
            + w[du + 1 + n_actions :][log.position[test]][:, None]
        )
        q_hat[test] = 1.0 / (1.0 + np.exp(-logit))
    return q_hat


def prior_distribution(
    prior: dict, campaign: str, len_list: int, n_sim: int, seed: int
) -> np.ndarray:
    """(A, L) action distribution of rankloop's TopK(BernoulliTS) with the production prior."""
    alpha = np.asarray(prior[campaign]["alpha"], dtype=np.float64)
    beta = np.asarray(prior[campaign]["beta"], dtype=np.float64)
    ts = BernoulliTS(len(alpha), alpha=1.0, beta=1.0, random_state=seed)
    ts.sums_ = alpha - 1.0  # posterior Beta(1 + s, 1 + n - s) = Beta(alpha, beta)
    ts.counts_ = alpha + beta - 2.0
    policy = TopK(ts, len_list)
    dist = np.zeros((len(alpha), len_list))
    positions = np.arange(len_list)
    for start in range(0, n_sim, 10_000):
        rows = min(10_000, n_sim - start)
        slates = policy.select(candidates=np.tile(np.arange(len(alpha)), (rows, 1)))
        np.add.at(dist, (slates, np.broadcast_to(positions, slates.shape)), 1.0)
    return dist / n_sim


def evaluate(
    random_log: BanditLog,
    bts_log: BanditLog,
    table: np.ndarray,
    q_hat: np.ndarray,
    args: argparse.Namespace,
) -> dict:
    """All estimators for one campaign and one evaluation-policy distribution."""
    truth = bts_log.ctr
    pi_e = table.T[random_log.position]  # (n, A): π_e(· | position of the round)
    out = evaluate_policy(
        random_log.reward,
        random_log.action,
        random_log.pscore,
        pi_e,
        q_hat=q_hat,
        switch_tau=args.switch_tau,
        n_boot=args.n_boot,
        random_state=args.seed,
    )
    rows = {}
    for name, est in out.items():
        draws = est.draws[np.isfinite(est.draws)]
        rows[name] = {
            **est.as_dict(),
            "relative_error": relative_error(est.value, truth),
            "mean_relative_error": float(np.mean(np.abs(draws - truth)) / truth),
        }
    naive = random_log.ctr
    rows["naive"] = {
        "estimator": "naive",
        "value": naive,
        "relative_error": relative_error(naive, truth),
    }
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", help="OBD root (default: the registry's obd-small)")
    ap.add_argument("--bts-prior", help="obp's prior_bts.yaml: also evaluate BTS with that prior")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--n-sim", type=int, default=100_000, help="Monte Carlo draws (bts-prior)")
    ap.add_argument("--switch-tau", type=float, default=10.0)
    ap.add_argument("--c", type=float, default=0.1, help="inverse L2 strength of the reward model")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    prior = yaml.safe_load(Path(args.bts_prior).read_text()) if args.bts_prior else None
    start = time.perf_counter()
    results: dict = {}
    for campaign in CAMPAIGNS:
        random_log = load_obd("random", campaign, args.path)
        bts_log = load_obd("bts", campaign, args.path)
        q_hat = reward_model(random_log, folds=2, c=args.c, seed=args.seed)
        variants = {"bts-log": bts_log.action_distribution()}
        if prior is not None:
            variants["bts-prior"] = prior_distribution(
                prior, campaign, random_log.len_list, args.n_sim, args.seed
            )
        results[campaign] = {
            "truth_bts_ctr": bts_log.ctr,
            "random_ctr": random_log.ctr,
            "n_random": len(random_log),
            "clicks_random": int(random_log.reward.sum()),
            "clicks_bts": int(bts_log.reward.sum()),
            "variants": {
                v: evaluate(random_log, bts_log, t, q_hat, args) for v, t in variants.items()
            },
        }
    seconds = time.perf_counter() - start
    for variant in results["all"]["variants"]:
        print(
            f"\n### π_e = {variant}: relative estimation error |V̂ - V| / V "
            "(V = the BTS log's on-policy CTR)\n"
        )
        print(
            "| estimator | "
            + " | ".join(f"{c}: V̂ [95% CI]" for c in CAMPAIGNS)
            + " | "
            + " | ".join(f"{c}: rel. err (mean over bootstrap)" for c in CAMPAIGNS)
            + " |"
        )
        print("|---|" + "---:|" * (2 * len(CAMPAIGNS)))
        truth = " | ".join(f"**{results[c]['truth_bts_ctr']:.4f}**" for c in CAMPAIGNS)
        print(f"| ground truth (BTS log CTR) | {truth} |" + " |" * len(CAMPAIGNS))
        for name in (*ESTIMATORS, "naive"):
            cells, errs = [], []
            for c in CAMPAIGNS:
                r = results[c]["variants"][variant][name]
                if name == "naive":
                    cells.append(f"{r['value']:.4f}")
                    errs.append(f"{r['relative_error']:.3f}")
                else:
                    cells.append(f"{r['value']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]")
                    errs.append(f"{r['relative_error']:.3f} ({r['mean_relative_error']:.3f})")
            label = "random log CTR (no correction)" if name == "naive" else NAMES[name]
            print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(errs) + " |")
    clicks = ", ".join(
        f"{c}: {results[c]['clicks_random']} clicks (random) / {results[c]['clicks_bts']} (bts)"
        for c in CAMPAIGNS
    )
    print(
        f"\n10,000 impressions per log; {clicks}. Switch-DR tau = {args.switch_tau}; "
        f"{args.n_boot} bootstrap resamples; {seconds:.1f}s."
    )
    path = write_result(
        "ope_obd",
        {
            "command": "python benchmarks/ope_obd.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "params": vars(args),
            "results": results,
            "seconds": seconds,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
