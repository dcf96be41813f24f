"""rankloop.bandits: bandit policies, semi-synthetic slate environments, the simulation loop and
off-policy evaluation.

- `policies`: ε-greedy, UCB1, Bernoulli TS, LinUCB (disjoint, hybrid), Diag-LinUCB (mergeable),
  linear TS, top-k slates and in-slate TS; obp's `select` / `update` contract.
- `envs`: worlds built from real data (ratings → WMF, BEIR queries × documents), FAISS
  candidate generation, clicks from `rankloop.clicks`, drift, cold start, delayed feedback.
- `simulate`: `run_bandits(config)` and its outputs (`rankloop simulate bandits CONFIG.yaml`).
- `ope`: Replay, IPS, SNIPS, DM, DR, Switch-DR, slate IIPS/RIPS, bootstrap intervals.
"""

from rankloop.bandits.policies import (
    POLICY_TYPES,
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
    "POLICY_TYPES",
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
