"""First-stage retrievers as pipeline stages: dense, BM25 (+RM3 / +Rocchio), MaxSim, hybrid.

Each holds a `Context` and reads its index from there, so every stage over one corpus shares
one encoder, one FAISS index and one JVM. A retriever ignores an incoming run (it ranks the
whole corpus); put it first in a pipeline.
"""

from __future__ import annotations

from typing import Any

from rankloop.data.types import Queries, Run
from rankloop.errors import ConfigError
from rankloop.pipeline import STAGES, Fuse, Stage
from rankloop.retrieval.base import split_empty
from rankloop.retrieval.context import Context

__all__ = ["BM25", "BM25RM3", "BM25Rocchio", "Dense", "MaxSim", "hybrid"]


def check_positive(stage: str, **values: Any) -> None:
    """Raise `ConfigError` unless every value is a positive int (cut-offs, depths, counts)."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{stage}: {name} must be a positive int, got {v!r}")


@STAGES.register("dense")
class Dense(Stage):
    """Dense retrieval: the context's encoder and FAISS index; top `k` per query.
    `search_params` go to FAISS (e.g. ``{"efSearch": 128}``, ``{"nprobe": 32}``)."""

    ALIAS = "dense"

    def __init__(self, ctx: Context, k: int = 1000, search_params: dict | None = None) -> None:
        check_positive("dense", k=k)
        self.ctx = ctx
        self.k = k
        self.search_params = search_params

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        keep, _ = split_empty(queries, "dense")
        qv = self.ctx.query_vectors(queries)[keep]
        kept = queries.subset([queries.ids[i] for i in keep])
        out = self.ctx.dense().search_vectors(
            kept, qv, self.k, all_ids=queries.ids, remove_query_id=self.ctx.remove_query_id,
            **(self.search_params or {}),
        )  # fmt: skip
        return out.with_name(self.name)


class _Lucene(Stage):
    """BM25 on the cached Lucene index, with the feedback settings of the subclass."""

    def _searcher(self):  # -> BM25Retriever
        raise NotImplementedError

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        out = self._searcher().search(queries, self.k, remove_query_id=self.ctx.remove_query_id)
        return out.with_name(self.name)


@STAGES.register("bm25")
class BM25(_Lucene):
    """BM25 (k1, b) over Lucene through pyserini; top `k` per query."""

    ALIAS = "bm25"

    def __init__(self, ctx: Context, k: int = 1000, k1: float = 0.9, b: float = 0.4) -> None:
        check_positive("bm25", k=k)
        self.ctx, self.k, self.k1, self.b = ctx, k, float(k1), float(b)

    def _searcher(self):
        return self.ctx.bm25(self.k1, self.b)


@STAGES.register("bm25_rm3")
class BM25RM3(_Lucene):
    """BM25 + RM3 query expansion (pyserini's `set_rm3`; its defaults): `fb_docs` feedback
    documents, `fb_terms` expansion terms, `original_query_weight`."""

    ALIAS = "bm25_rm3"

    def __init__(self, ctx: Context, k: int = 1000, fb_docs: int = 10, fb_terms: int = 10,
                 original_query_weight: float = 0.5, k1: float = 0.9, b: float = 0.4) -> None:  # fmt: skip
        check_positive("bm25_rm3", k=k, fb_docs=fb_docs, fb_terms=fb_terms)
        if not 0.0 <= original_query_weight <= 1.0:
            raise ConfigError(f"bm25_rm3: original_query_weight must lie in [0, 1], got {original_query_weight}")
        self.ctx, self.k, self.k1, self.b = ctx, k, float(k1), float(b)
        self.fb_docs, self.fb_terms = fb_docs, fb_terms
        self.original_query_weight = float(original_query_weight)

    def _searcher(self):
        rm3 = {"fb_terms": self.fb_terms, "fb_docs": self.fb_docs,
               "original_query_weight": self.original_query_weight}  # fmt: skip
        return self.ctx.bm25(self.k1, self.b, rm3=rm3)


@STAGES.register("bm25_rocchio")
class BM25Rocchio(_Lucene):
    """BM25 + Rocchio on term vectors (pyserini's `set_rocchio`; its defaults): the top
    `fb_docs` documents give `fb_terms` positive terms, the bottom `bottom_fb_docs` give
    `bottom_fb_terms` negative ones, weighted α, β, γ."""

    ALIAS = "bm25_rocchio"

    def __init__(self, ctx: Context, k: int = 1000, fb_docs: int = 10, fb_terms: int = 10,
                 bottom_fb_docs: int = 10, bottom_fb_terms: int = 10, alpha: float = 1.0,
                 beta: float = 0.75, gamma: float = 0.0, k1: float = 0.9, b: float = 0.4) -> None:  # fmt: skip
        check_positive("bm25_rocchio", k=k, fb_docs=fb_docs, fb_terms=fb_terms,
                       bottom_fb_docs=bottom_fb_docs, bottom_fb_terms=bottom_fb_terms)  # fmt: skip
        self.ctx, self.k, self.k1, self.b = ctx, k, float(k1), float(b)
        self.fb_docs, self.fb_terms = fb_docs, fb_terms
        self.bottom_fb_docs, self.bottom_fb_terms = bottom_fb_docs, bottom_fb_terms
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)

    def _searcher(self):
        rocchio = {"top_fb_terms": self.fb_terms, "top_fb_docs": self.fb_docs,
                   "bottom_fb_terms": self.bottom_fb_terms, "bottom_fb_docs": self.bottom_fb_docs,
                   "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma}  # fmt: skip
        return self.ctx.bm25(self.k1, self.b, rocchio=rocchio)


@STAGES.register("maxsim")
class MaxSim(Stage):
    """Late interaction: ANN over the MiniLM token index (`factory`), then exact MaxSim.
    The token index is built once per corpus and cached (minutes on a CPU)."""

    ALIAS = "maxsim"

    def __init__(self, ctx: Context, k: int = 1000, candidates_per_token: int = 100,
                 factory: str = "Flat") -> None:  # fmt: skip
        check_positive("maxsim", k=k, candidates_per_token=candidates_per_token)
        self.ctx, self.k, self.candidates_per_token, self.factory = ctx, k, candidates_per_token, factory

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        mv = self.ctx.multivector(self.factory)
        out = mv.search(queries, self.k, candidates_per_token=self.candidates_per_token,
                        remove_query_id=self.ctx.remove_query_id)  # fmt: skip
        return out.with_name(self.name)


@STAGES.register("hybrid")
def hybrid(ctx: Context, method: str = "rrf", norm: str | None = None, rrf_k: float = 60.0,
           weights: list[float] | None = None, k: int = 1000) -> Fuse:  # fmt: skip
    """Dense and BM25 fused (`fuse(dense, bm25, ...)`); RRF by default, as `HybridRetriever`."""
    return Fuse([Dense(ctx), BM25(ctx)], method=method, norm=norm, rrf_k=rrf_k,
                weights=weights, k=k)  # fmt: skip
