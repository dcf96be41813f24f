"""Recommenders for missing-not-at-random implicit feedback, evaluated on MAR test sets.

`Interactions` (user × item, orientation checked; defined in `rankloop.data.interactions`,
since the data loaders build it), baselines through `implicit` (`WMF`, `BPR`)
and the popularity/random reference scorers, torch models (`RelMF` with the (clipped) IPS loss,
`UBPR`, `ExpoMF`, `MFDU`, `DRJL` (doubly robust, with an exposure log), `UniformKD` (distilled
from a uniform slice), `BISER`), the family by name (`RECOMMENDERS`, `make_recommender`, `fit_recommender`),
propensity estimators (`estimate_propensity` picks one by name), and the MAR evaluation
protocols. Names are imported lazily so that loading data does not pull in torch or implicit.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Interactions": "rankloop.data.interactions",
    "graded_relevance": "rankloop.data.interactions",
    "WMF": "baselines",
    "BPR": "baselines",
    "PopularityScorer": "baselines",
    "RandomScorer": "baselines",
    "RECOMMENDERS": "models",
    "make_recommender": "models",
    "fit_recommender": "models",
    "ExpoMF": "expomf",
    "RelMF": "relmf",
    "ips_loss": "relmf",
    "UBPR": "ubpr",
    "MFDU": "mfdu",
    "DRJL": "dr",
    "UniformKD": "kd",
    "BISER": "biser",
    "ubpr_loss": "ubpr",
    "popularity_propensity": "propensity",
    "naive_bayes_propensity": "propensity",
    "logistic_propensity": "propensity",
    "estimate_propensity": "propensity",
    "PROPENSITY_ESTIMATORS": "propensity",
    "authors_metrics": "evaluate",
    "evaluate_authors": "evaluate",
    "standard_metrics": "evaluate",
    "unbiased_dcg": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = _EXPORTS[name]
        module = module if "." in module else f"rankloop.recsys.{module}"
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'rankloop.recsys' has no attribute {name!r}")
