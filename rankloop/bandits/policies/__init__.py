"""Bandit policies with obp's contract: `select(context, candidates) -> action(s)`, `update(...)`.

Every policy is vectorised over rows, queues feedback for batched (delayed) updates, is seeded
by `random_state`, and can be `save`d and `Policy.load`ed.
"""

from rankloop.bandits.policies.base import POLICY_CLASSES, Policy, SlatePolicy
from rankloop.bandits.policies.context_free import (
    UCB1,
    CandidateOrder,
    EpsilonGreedy,
    Popularity,
    RandomPolicy,
)
from rankloop.bandits.policies.linucb import (
    DiagLinUCB,
    HybridLinUCB,
    LinUCB,
    ridge_update,
    sherman_morrison,
)
from rankloop.bandits.policies.slate import InSlateThompson, TopK
from rankloop.bandits.policies.thompson import BernoulliTS, LinearTS

# Short names used in configs -> classes.
POLICY_TYPES: dict[str, type[Policy]] = {
    "random": RandomPolicy,
    "candidate_order": CandidateOrder,
    "popularity": Popularity,
    "egreedy": EpsilonGreedy,
    "ucb1": UCB1,
    "bts": BernoulliTS,
    "linucb": LinUCB,
    "hybrid_linucb": HybridLinUCB,
    "diag_linucb": DiagLinUCB,
    "lints": LinearTS,
    "inslate_ts": InSlateThompson,
}

__all__ = [
    "POLICY_CLASSES",
    "POLICY_TYPES",
    "UCB1",
    "BernoulliTS",
    "CandidateOrder",
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
    "ridge_update",
    "sherman_morrison",
]
