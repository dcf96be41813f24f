"""The recommender family by name: `RECOMMENDERS` (short name -> class), `make_recommender` and
`fit_recommender`, so experiment configs and callers build and train any model the same way.

Every model has `fit(clicks)` (and, for the IPS-style ones, a `propensity` keyword) and
`score(users, items)`; see `rankloop.recsys.evaluate.Scorer`.
"""

from __future__ import annotations

import inspect
from typing import Any

from rankloop._runtime import Registry
from rankloop.data.interactions import Interactions
from rankloop.recsys.baselines import BPR, WMF, PopularityScorer, RandomScorer
from rankloop.recsys.evaluate import Scorer
from rankloop.recsys.expomf import ExpoMF
from rankloop.recsys.propensity import Propensity
from rankloop.recsys.relmf import RelMF
from rankloop.recsys.ubpr import UBPR

__all__ = ["RECOMMENDERS", "fit_recommender", "make_recommender"]

RECOMMENDERS: Registry[Scorer] = Registry("recommender")
RECOMMENDERS.add("wmf", WMF)
RECOMMENDERS.add("bpr", BPR)
RECOMMENDERS.add("expomf", ExpoMF)
RECOMMENDERS.add("relmf", RelMF)
RECOMMENDERS.add("ubpr", UBPR)
RECOMMENDERS.add("popularity", PopularityScorer)
RECOMMENDERS.add("random", RandomScorer)


def make_recommender(
    name: str, params: dict[str, Any] | None = None, *, random_state: int = 0, where: str = ""
) -> Scorer:
    """The recommender `name` with `params`, seeded by `random_state` when it is randomised
    (it overrides a `random_state` in `params`); unknown names or parameters are a
    `ConfigError` naming the valid ones (prefixed by `where`, e.g. a config position)."""
    kwargs = dict(params or {})
    RECOMMENDERS.get(name, where=where)
    if "random_state" in RECOMMENDERS.parameters(name):
        kwargs["random_state"] = random_state
    return RECOMMENDERS.create(name, kwargs, where=where)


def _takes_propensity(model: Scorer) -> bool:
    """Whether `model.fit` takes exposure propensities (Rel-MF, UBPR: the IPS-style losses)."""
    return "propensity" in inspect.signature(model.fit).parameters  # type: ignore[attr-defined]


def fit_recommender(model: Scorer, clicks: Interactions, propensity: Propensity | None) -> Scorer:
    """Fit `model` on `clicks`, passing `propensity` to the models whose loss uses it; returns
    the model."""
    if _takes_propensity(model):
        model.fit(clicks, propensity=propensity)  # type: ignore[attr-defined]
    else:
        model.fit(clicks)  # type: ignore[attr-defined]
    return model
