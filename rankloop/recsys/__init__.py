"""Recommenders for missing-not-at-random implicit feedback, evaluated on MAR test sets.

`Interactions` (user × item, orientation checked), baselines through `implicit` (`WMF`, `BPR`),
torch models (`RelMF` with the (clipped) IPS loss, `UBPR`, `ExpoMF`), propensity estimators,
and the MAR evaluation protocols. Names are imported lazily so that `rankloop.recsys.interactions`
does not pull in torch or implicit.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Interactions": "interactions",
    "graded_relevance": "interactions",
    "WMF": "baselines",
    "BPR": "baselines",
    "ExpoMF": "expomf",
    "RelMF": "relmf",
    "ips_loss": "relmf",
    "UBPR": "ubpr",
    "ubpr_loss": "ubpr",
    "popularity_propensity": "propensity",
    "naive_bayes_propensity": "propensity",
    "logistic_propensity": "propensity",
    "authors_metrics": "evaluate",
    "evaluate_authors": "evaluate",
    "standard_metrics": "evaluate",
    "unbiased_dcg": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"rankloop.recsys.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'rankloop.recsys' has no attribute {name!r}")
