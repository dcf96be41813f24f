"""Bandit policies with obp's contract: `select(context, candidates) -> action(s)`, `update(...)`.

Every policy is vectorised over rows, queues feedback for batched (delayed) updates, is seeded
by `random_state`, and can be `save`d and `Policy.load`ed. `POLICIES` maps the short names
configs use ("linucb", "inslate_ts", ...) to the classes.
"""

from rankloop.bandits.policies.base import POLICIES, Policy, SlatePolicy
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

__all__ = [
    "POLICIES",
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
