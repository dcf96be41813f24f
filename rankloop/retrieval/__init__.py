"""Retrieval: dense (encoder + FAISS), BM25 (Lucene via pyserini), late interaction (MaxSim)
and hybrid (fusion).

Names load on first use, so importing this package (as the CLI does) pulls in neither FAISS,
torch nor Java.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rankloop.retrieval.base import Retriever
    from rankloop.retrieval.dense import DenseRetriever
    from rankloop.retrieval.hybrid import HybridRetriever
    from rankloop.retrieval.multivector import MultiVectorRetriever
    from rankloop.retrieval.open import open_index
    from rankloop.retrieval.sparse import BM25Retriever

_LAZY = {
    "Retriever": "rankloop.retrieval.base",
    "DenseRetriever": "rankloop.retrieval.dense",
    "BM25Retriever": "rankloop.retrieval.sparse",
    "HybridRetriever": "rankloop.retrieval.hybrid",
    "MultiVectorRetriever": "rankloop.retrieval.multivector",
    "open_index": "rankloop.retrieval.open",
}
__all__ = [
    "BM25Retriever",
    "DenseRetriever",
    "HybridRetriever",
    "MultiVectorRetriever",
    "Retriever",
    "open_index",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
