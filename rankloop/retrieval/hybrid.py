"""Hybrid retrieval: a dense and a sparse run fused with `rankloop.eval.fusion.fuse`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rankloop.data.types import Queries, Run
from rankloop.errors import RankloopError
from rankloop.retrieval.base import Retriever, check_k


class HybridRetriever:
    """Fuse the top-`depth` runs of `dense` and `sparse` (RRF by default, or normalised
    CombSUM/CombMNZ) and keep the top `k`.

    `method`, `norm`, `rrf_k` (RRF's constant) and `weights` are passed to
    `fuse` unchanged; `weights` follows the order (dense, sparse).
    """

    def __init__(
        self,
        dense: Retriever,
        sparse: Retriever,
        method: str = "rrf",
        norm: str | None = None,
        rrf_k: float = 60.0,
        weights: Sequence[float] | None = None,
        depth: int = 1000,
    ) -> None:
        if weights is not None and len(weights) != 2:
            raise RankloopError(f"weights must hold 2 numbers (dense, sparse), got {len(weights)}")
        self.dense = dense
        self.sparse = sparse
        self.method = method
        self.norm = norm
        self.rrf_k = rrf_k
        self.weights = None if weights is None else [float(w) for w in weights]
        self.depth = check_k(depth)

    def search(self, queries: Queries, k: int = 1000, **kwargs: Any) -> Run:
        """Fused top-`k` per query; `kwargs` (e.g. `remove_query_id`) go to both retrievers."""
        check_k(k)
        depth = max(self.depth, k)
        runs = [
            self.dense.search(queries, depth, **kwargs),
            self.sparse.search(queries, depth, **kwargs),
        ]
        return self.fuse(runs, k)

    def fuse(self, runs: Sequence[Run], k: int = 1000) -> Run:
        """Fuse already computed (dense, sparse) runs, e.g. to try several methods cheaply."""
        from rankloop.eval.fusion import fuse

        fused = fuse(
            list(runs), method=self.method, norm=self.norm, rrf_k=self.rrf_k, weights=self.weights
        )
        label = self.method if self.norm is None else f"{self.method}-{self.norm}"
        return fused.top_k(check_k(k)).with_name(f"hybrid:{label}")
