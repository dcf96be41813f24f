"""The shared state of a set of pipelines over one corpus: encoder, indexes, query vectors.

Stages hold a `Context` by reference. Each expensive thing is made once, on first use, and
shared by every stage that needs it: the encoder, the dense FAISS index (from the encoder's
embedding cache), BM25 searchers on the cached Lucene index (one JVM per process), MaxSim
token indexes, the query vectors of each query set, and the runs of stages already computed
(`memo`), so that pipelines sharing a prefix compute it once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from rankloop.data.types import Corpus, Queries, Run
from rankloop.embed.encoders import Encoder
from rankloop.errors import RankloopError

__all__ = ["Context"]


_RECENT_QUERY_SETS = 4  # query sets whose vectors a context with cache_runs=False keeps


class Context:
    """Shared resources for pipelines over `corpus` (see the module docstring).

    `dataset` names the registry data set the corpus came from (stages that train themselves,
    such as LoL, read its training split); `factory` is the FAISS index type of the dense
    index; `model`/`max_length` choose the encoder when `encoder` is not given;
    `remove_query_id` drops each query's own id from every retrieved list (the convention of
    collections whose queries are corpus documents; `from_dataset` takes it from the registry);
    `cache_runs=False` keeps no memoised runs and only the latest few query sets' vectors (a
    service sees endless query sets; the stages of one batch still share its vectors).
    `backend` is the encoder backend (`Encoder(backend=...)`: "torch", "torch-bf16", "onnx",
    "onnx-int8", "openvino" or "auto") when `encoder` is not given.
    """

    def __init__(
        self,
        corpus: Corpus,
        *,
        dataset: str | None = None,
        encoder: Encoder | None = None,
        model: str | None = None,
        max_length: int | None = None,
        factory: str = "Flat",
        remove_query_id: bool = False,
        verbose: bool = True,
        cache_runs: bool = True,
        backend: str = "torch",
    ) -> None:
        if len(corpus) == 0:
            raise RankloopError(f"corpus {corpus.name!r} is empty")
        self.corpus = corpus
        self.dataset = dataset
        self.factory = factory
        self.remove_query_id = remove_query_id
        self.verbose = verbose
        self.cache_runs = cache_runs
        self._encoder = encoder
        self._model, self._max_length, self._backend = model, max_length, backend
        self._dense: Any = None
        self._bm25: dict[tuple, Any] = {}
        self._tokens: dict[str, Any] = {}
        self._qvecs: dict[Hashable, np.ndarray] = {}
        self._runs: dict[Hashable, Run] = {}
        self._others: dict[str, Context] = {}

    @classmethod
    def from_dataset(cls, name: str, **kwargs: Any) -> Context:
        """A context over the corpus of registry data set `name`."""
        from rankloop.data import load
        from rankloop.data.registry import remove_query_id

        kwargs.setdefault("remove_query_id", remove_query_id(name))
        return cls(load(name, split=None).corpus, dataset=name, **kwargs)

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[pipeline] {msg}", file=sys.stderr, flush=True)

    # -- resources ------------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        """The encoder for documents and queries (made on first use)."""
        if self._encoder is None:
            self._encoder = Encoder(
                self._model, max_length=self._max_length, show_progress=self.verbose,
                backend=self._backend,
            )
        return self._encoder

    def dense(self):  # -> DenseRetriever
        """The dense retriever: corpus embeddings (encoder cache) in a `factory` FAISS index."""
        from rankloop.retrieval.dense import DenseRetriever

        if self._dense is None:
            t0 = time.perf_counter()
            self._dense = DenseRetriever.build(self.corpus, self.encoder, factory=self.factory)
            release_freed_memory()  # encoding the corpus left freed activations in the heap
            self.log(f"dense index ({self.factory}, {len(self.corpus):,} docs) in "
                     f"{time.perf_counter() - t0:.1f}s")  # fmt: skip
        return self._dense

    @property
    def index(self):  # -> VectorIndex
        """The dense retriever's `VectorIndex` (stored vectors for PRF)."""
        return self.dense().index

    def bm25(self, k1: float = 0.9, b: float = 0.4, *, rm3: dict | None = None,
             rocchio: dict | None = None):  # fmt: skip  # -> BM25Retriever
        """A BM25 searcher with these settings on the cached Lucene index of the corpus."""
        from rankloop.retrieval.sparse import BM25Retriever

        key = (k1, b, _freeze(rm3), _freeze(rocchio))
        if key not in self._bm25:
            self._bm25[key] = BM25Retriever.cached(
                self.corpus, k1=k1, b=b, rm3=rm3, rocchio=rocchio, verbose=self.verbose
            )
        return self._bm25[key]

    def multivector(self, factory: str = "Flat"):  # -> MultiVectorRetriever
        """The corpus's MaxSim token index (same encoder), from the index cache or built once."""
        from rankloop.retrieval.multivector import MultiVectorRetriever

        if factory not in self._tokens:
            t0 = time.perf_counter()
            self._tokens[factory] = MultiVectorRetriever.cached(self.corpus, self.encoder, factory)
            self.log(f"token index ready in {time.perf_counter() - t0:.1f}s")
        return self._tokens[factory]

    def query_vectors(self, queries: Queries) -> np.ndarray:
        """(n, d) embeddings of `queries`, encoded once per query set (blank queries: zeros)."""
        from rankloop.pipeline import queries_key

        key = queries_key(queries)
        if key not in self._qvecs:
            keep = [i for i, t in enumerate(queries.texts) if t.strip()]
            vecs = np.zeros((len(queries), self.encoder.dim), np.float32)
            if keep:
                texts = queries.texts if len(keep) == len(queries) else [queries.texts[i] for i in keep]
                vecs[keep] = self.encoder.encode_queries(texts)
            if not self.cache_runs:  # a service: keep only the latest query sets (one batch's
                while len(self._qvecs) >= _RECENT_QUERY_SETS:  # stages share them)
                    self._qvecs.pop(next(iter(self._qvecs)))
            self._qvecs[key] = vecs
        return self._qvecs[key]

    def use_index(self, retriever: Any) -> None:
        """Serve a prebuilt index: a `DenseRetriever` becomes the dense stages' index, a
        `BM25Retriever` the `bm25` stage's searcher (with the settings it was opened with)."""
        from rankloop.retrieval.dense import DenseRetriever
        from rankloop.retrieval.sparse import BM25Retriever

        if isinstance(retriever, DenseRetriever):
            self._dense = retriever
        elif isinstance(retriever, BM25Retriever):
            self._bm25[(retriever.k1, retriever.b, None, None)] = retriever
        else:
            raise RankloopError(f"cannot serve a {type(retriever).__name__} index in a pipeline")

    def for_dataset(self, name: str) -> Context:
        """A context over another registry data set that shares this one's encoder."""
        if name == self.dataset:
            return self
        if name not in self._others:
            self._others[name] = Context.from_dataset(
                name, encoder=self.encoder, factory=self.factory, verbose=self.verbose
            )
        return self._others[name]

    # -- memo -----------------------------------------------------------------------------------
    def memo(self, key: Hashable, compute: Callable[[], Run]) -> Run:
        """The run stored under `key`, computed by `compute` the first time."""
        if not self.cache_runs:
            return compute()
        if key not in self._runs:
            self._runs[key] = compute()
        return self._runs[key]

    def forget(self) -> None:
        """Drop memoised runs and query vectors (indexes and encoder stay)."""
        self._runs.clear()
        self._qvecs.clear()

    def close(self) -> None:
        """Release the Lucene searchers (their files stay on disk)."""
        for r in self._bm25.values():
            r.close()
        self._bm25.clear()
        for c in self._others.values():
            c.close()

    def __repr__(self) -> str:
        return f"Context({self.dataset or self.corpus.name!r}, docs={len(self.corpus)})"


def release_freed_memory() -> None:
    """Hand memory that is free but still held by glibc's heap back to the system
    (`malloc_trim`): encoding a corpus frees hundreds of MB of activations (640 SciFact
    documents: 230 MB) that would otherwise stay in the RSS under the JVM started after it.
    A no-op where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _freeze(d: dict | None) -> tuple | None:
    return None if d is None else tuple(sorted(d.items()))
