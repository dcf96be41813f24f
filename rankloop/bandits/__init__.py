"""rankloop.bandits: bandit policies, semi-synthetic slate environments, the simulation loop and
off-policy evaluation.

- `policies`: ε-greedy, UCB1, Bernoulli TS, LinUCB (disjoint, hybrid), Diag-LinUCB (mergeable),
  linear TS, top-k slates and in-slate TS; obp's `select` / `update` contract; `POLICIES`
  maps the names configs use to the classes.
- `envs`: worlds built from real data (ratings → WMF, BEIR queries × documents), FAISS
  candidate generation, clicks from `rankloop.clicks`, drift, cold start, delayed feedback.
- `simulate`: `build_policy` by name and `run_policy`, the loop that runs one policy in an
  environment with regret, exposure and diversity bookkeeping. The experiment over policies ×
  seeds is `rankloop.experiments.bandits` (`rankloop experiment bandits CONFIG.yaml`).
- `ope`: Replay, IPS, SNIPS, DM, DR, Switch-DR, slate IIPS/RIPS, bootstrap intervals.
"""

from rankloop.bandits.policies import (
    POLICIES,
    UCB1,
    BernoulliTS,
    DiagLinUCB,
    EpsilonGreedy,
    HybridLinUCB,
    InSlateThompson,
    LinearTS,
    LinUCB,
    Policy,
    Popularity,
    RandomPolicy,
    SlatePolicy,
    TopK,
)

__all__ = [
    "POLICIES",
    "UCB1",
    "BernoulliTS",
    "DiagLinUCB",
    "EpsilonGreedy",
    "HybridLinUCB",
    "InSlateThompson",
    "LinUCB",
    "LinearTS",
    "Policy",
    "Popularity",
    "RandomPolicy",
    "SlatePolicy",
    "TopK",
]
