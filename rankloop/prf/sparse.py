"""Sparse PRF: BM25+RM3 and BM25+Rocchio through pyserini (Lucene), on a cached BM25 index.

The Lucene index is built once per corpus (keyed by the corpus checksum) under
`$RANKLOOP_CACHE/indexes` (default `~/.cache/rankloop/indexes`) by `BM25Retriever.build`,
which owns the JVM set-up; this module only picks the feedback settings.
"""

from __future__ import annotations

import os
from typing import Any

from rankloop.data.types import Corpus, Queries, Run
from rankloop.errors import ConfigError
from rankloop.retrieval.sparse import BM25Retriever

__all__ = ["RM3_DEFAULTS", "ROCCHIO_DEFAULTS", "open_bm25", "sparse_run"]

# pyserini's own defaults (LuceneSearcher.set_rm3 / set_rocchio), as in its BEIR PRF runs.
RM3_DEFAULTS: dict[str, Any] = {"fb_terms": 10, "fb_docs": 10, "original_query_weight": 0.5}
ROCCHIO_DEFAULTS: dict[str, Any] = {
    "top_fb_terms": 10,
    "top_fb_docs": 10,
    "bottom_fb_terms": 10,
    "bottom_fb_docs": 10,
    "alpha": 1.0,
    "beta": 0.75,
    "gamma": 0.0,
}
FEEDBACK = ("none", "rm3", "rocchio")


def open_bm25(
    corpus: Corpus,
    feedback: str = "none",
    params: dict[str, Any] | None = None,
    *,
    k1: float = 0.9,
    b: float = 0.4,
    cache_dir: str | os.PathLike[str] | None = None,
) -> BM25Retriever:
    """A BM25 retriever on `corpus` with `feedback` "none", "rm3" or "rocchio" (pyserini's
    defaults, overridden by `params`); the index is built on first use and cached."""
    if feedback not in FEEDBACK:
        raise ConfigError(f"sparse feedback must be one of {FEEDBACK}, got {feedback!r}")
    if feedback == "none" and params:
        raise ConfigError("params apply to rm3 or rocchio feedback only")
    settings = {}
    if feedback == "rm3":
        settings = {"rm3": {**RM3_DEFAULTS, **(params or {})}}
    elif feedback == "rocchio":
        settings = {"rocchio": {**ROCCHIO_DEFAULTS, **(params or {})}}
    return BM25Retriever.cached(corpus, k1=k1, b=b, cache_dir=cache_dir, **settings)


def sparse_run(
    corpus: Corpus,
    queries: Queries,
    feedback: str = "none",
    params: dict[str, Any] | None = None,
    k: int = 1000,
    **kwargs: Any,
) -> Run:
    """One BM25 (+RM3 / +Rocchio) run over `queries`; `kwargs` go to `open_bm25`."""
    retriever = open_bm25(corpus, feedback, params, **kwargs)
    try:
        return retriever.search(queries, k)
    finally:
        retriever.close()
