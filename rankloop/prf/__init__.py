"""rankloop.prf: pseudo-relevance feedback.

- `rocchio`: vector Rocchio / Average PRF / multi-iteration VPRF over any `VectorIndex`, batched;
- `lol`: a learned reformulator trained with the LoL comparative regularisation;
- `sparse`: BM25+RM3 and BM25+Rocchio through pyserini on a cached Lucene index;
- `counterfactual`: Counterfactual Rocchio (IPS-weighted click feedback, seen-query protocol).
The experiment runner is `rankloop.experiments.prf` (`rankloop experiment prf`).
Names load on first use, so importing the package pulls in neither torch nor Java.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Rocchio": "rankloop.prf.rocchio",
    "VectorPRF": "rankloop.prf.rocchio",
    "average_prf": "rankloop.prf.rocchio",
    "rocchio": "rankloop.prf.rocchio",
    "gather_feedback": "rankloop.prf.rocchio",
    "feedback_from_run": "rankloop.prf.rocchio",
    "corocchio": "rankloop.prf.counterfactual",
    "seen_query_runs": "rankloop.prf.counterfactual",
    "LoL": "rankloop.prf.lol",
    "LoLConfig": "rankloop.prf.lol",
    "open_bm25": "rankloop.prf.sparse",
    "sparse_run": "rankloop.prf.sparse",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
