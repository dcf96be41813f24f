"""Open any index directory rankloop built, by the kind its `retriever.json` records.

It sits above the retrievers it opens (base.py, which they all import, must not import them).
"""

from __future__ import annotations

import os
from typing import Any

from rankloop.retrieval.base import Retriever, read_meta
from rankloop.retrieval.dense import DenseRetriever
from rankloop.retrieval.multivector import MultiVectorRetriever
from rankloop.retrieval.sparse import BM25Retriever

__all__ = ["open_index"]


def open_index(index_dir: str | os.PathLike[str], **kwargs: Any) -> Retriever:
    """The retriever for an index directory built by rankloop, chosen by its `retriever.json`.

    `kwargs` go to the retriever: `k1`/`b`/`rm3`/`rocchio` for BM25 (defaults: the values
    recorded at build time), `encoder` for dense and multi-vector indexes.
    """
    meta = read_meta(index_dir)
    kind = meta["kind"]
    if kind == "bm25":
        kwargs.setdefault("k1", meta.get("k1", 0.9))
        kwargs.setdefault("b", meta.get("b", 0.4))
        return BM25Retriever(index_dir, **kwargs)
    if kind == "dense":
        return DenseRetriever.load(index_dir, **kwargs)
    return MultiVectorRetriever.load(index_dir, **kwargs)
