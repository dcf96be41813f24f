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
from rankloop.errors import RankloopError
from rankloop.recsys.baselines import BPR, WMF, PopularityScorer, RandomScorer
from rankloop.recsys.biser import BISER
from rankloop.recsys.dr import DRJL
from rankloop.recsys.evaluate import Scorer
from rankloop.recsys.expomf import ExpoMF
from rankloop.recsys.kd import UniformKD
from rankloop.recsys.mfdu import MFDU
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
RECOMMENDERS.add("mfdu", MFDU)
RECOMMENDERS.add("dr", DRJL)
RECOMMENDERS.add("uniform_kd", UniformKD)
RECOMMENDERS.add("biser", BISER)
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


# What a model's `fit` may take besides the clicks, and where a caller gets it.
FIT_INPUTS = {
    "propensity": "exposure propensities θ (rankloop.recsys.propensity)",
    "exposure": "the exposure log the clicks came from (the shown or rated pairs)",
    "uniform": "a slice of explicit ratings on uniformly random pairs (a MAR sample)",
}


def fit_inputs(model: Scorer) -> list[str]:
    """Which of `FIT_INPUTS` `model.fit` takes (e.g. ["propensity"] for Rel-MF)."""
    params = inspect.signature(model.fit).parameters  # type: ignore[attr-defined]
    return [name for name in FIT_INPUTS if name in params]


def fit_recommender(
    model: Scorer,
    clicks: Interactions,
    propensity: Propensity | None,
    *,
    exposure: Interactions | None = None,
    uniform: Interactions | None = None,
) -> Scorer:
    """Fit `model` on `clicks`, passing each of `propensity`, `exposure` and `uniform` to the
    models whose `fit` takes it; a model that requires one that is missing fails clearly."""
    given = {"propensity": propensity, "exposure": exposure, "uniform": uniform}
    params = inspect.signature(model.fit).parameters  # type: ignore[attr-defined]
    kwargs = {}
    for name in fit_inputs(model):
        if given[name] is None and params[name].default is inspect.Parameter.empty:
            raise RankloopError(
                f"{type(model).__name__} needs {FIT_INPUTS[name]} ({name}=...), "
                "which this data set or experiment does not provide"
            )
        kwargs[name] = given[name]
    model.fit(clicks, **kwargs)  # type: ignore[attr-defined]
    return model
