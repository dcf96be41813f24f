"""Dense retrieval: a sentence-transformers `Encoder` for queries plus a FAISS `VectorIndex`.

This path never touches Java: BM25 lives in `rankloop.retrieval.sparse`, so dense runs stay
light and a later BM25 call in the same process can still start its JVM.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from rankloop.data.types import Corpus, Queries, Run
from rankloop.embed.encoders import Encoder
from rankloop.embed.index import VectorIndex
from rankloop.embed.shards import EmbeddingShards
from rankloop.errors import RankloopError
from rankloop.io import atomic_dir
from rankloop.retrieval._encoded import EncodedIndexRetriever
from rankloop.retrieval.base import check_k, ranked_to_dict, split_empty, write_meta

VECTORS_SUBDIR = "vectors"


class DenseRetriever(EncodedIndexRetriever):
    """Encode queries with `encoder`, search `index` (doc ids in, doc ids out).

    The encoder's dimension must match the index's; a mismatch raises `RankloopError` here,
    not deep inside FAISS.
    """

    KIND = "dense"
    SUBDIR = VECTORS_SUBDIR
    PREFIX = "dense:"
    INDEX_CLS = VectorIndex

    def __init__(self, encoder: Encoder, index: VectorIndex) -> None:
        super().__init__(encoder, index)
        self.last_timing: dict[str, float] = {}

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        encoder: Encoder | None = None,
        factory: str = "Flat",
        metric: str = "ip",
    ) -> DenseRetriever:
        """Embed `corpus` (through the encoder's on-disk cache) and index it with `factory`."""
        if len(corpus) == 0:
            raise RankloopError(f"cannot build a dense index from an empty corpus {corpus.name!r}")
        encoder = encoder if encoder is not None else Encoder()
        vectors = encoder.encode_corpus(corpus)
        index = VectorIndex(int(vectors.shape[1]), factory=factory, metric=metric)
        index.add(corpus.ids, vectors)
        return cls(encoder, index)

    @classmethod
    def build_from_shards(
        cls,
        shards: EmbeddingShards,
        out: str | os.PathLike[str],
        *,
        factory: str = "Flat",
        metric: str = "ip",
        train_size: int | None = None,
        random_state: int = 0,
        overwrite: bool = False,
        progress: bool = True,
        **extra_meta: Any,
    ) -> Path:
        """Save a dense index of every shard to `out` in bounded memory (see
        `VectorIndex.write_streamed`): an IVF/PQ index is trained on a seeded sample of
        `train_size` rows drawn across the shards, then the shards are added in row order.
        `out` is replaced atomically, as `save` does; `load` opens it."""
        m = shards.manifest
        with atomic_dir(Path(out), cls._artifact(), overwrite=overwrite, legacy=cls._is_legacy) as tmp:
            (tmp / cls.SUBDIR).mkdir()
            VectorIndex.write_streamed(
                tmp / cls.SUBDIR,
                iter(shards),
                total=shards.n_docs,
                dim=shards.dim,
                factory=factory,
                metric=metric,
                sample=lambda n: shards.sample(n, random_state),
                train_size=train_size,
                progress=progress,
            )
            write_meta(
                tmp,
                cls.KIND,
                model=m["model"],
                model_fingerprint=m["model_fingerprint"],
                backend=m["backend"],
                max_length=m["max_length"],
                dim=shards.dim,
                factory=factory,
                metric=metric,
                n_docs=shards.n_docs,
                source=m["source"],
                **extra_meta,
            )
        return Path(out)

    def search(
        self,
        queries: Queries,
        k: int = 1000,
        *,
        batch_size: int = 256,
        remove_query_id: bool = False,
        **search_params: Any,
    ) -> Run:
        """Top-`k` documents per query by the index's similarity; `search_params` go to FAISS
        (e.g. ``nprobe=32``, ``efSearch=128``).

        Blank queries get no results, deliberately, with a warning. `remove_query_id` drops a
        doc whose id equals the query id (k + 1 are fetched so that k remain).
        """
        check_k(k)
        if batch_size < 1:
            raise RankloopError(f"batch_size must be >= 1, got {batch_size}")
        keep, _ = split_empty(queries, "DenseRetriever.search")
        t0 = time.perf_counter()
        texts = [queries.texts[i] for i in keep]
        qvecs = self.encoder.encode_queries(texts) if texts else np.zeros((0, self.index.dim))
        encode_s = time.perf_counter() - t0
        run = self.search_vectors(
            queries.subset([queries.ids[i] for i in keep]), qvecs, k, batch_size=batch_size,
            remove_query_id=remove_query_id, all_ids=queries.ids, **search_params,
        )  # fmt: skip
        self.last_timing["encode_s"] = encode_s
        return run

    def search_vectors(
        self,
        queries: Queries,
        qvecs: np.ndarray,
        k: int = 1000,
        *,
        batch_size: int = 256,
        remove_query_id: bool = False,
        all_ids: list[str] | None = None,
        **search_params: Any,
    ) -> Run:
        """Like `search` for queries already encoded as `qvecs` (n, d): a pipeline encodes each
        query set once and reuses the vectors. `all_ids` lists queries that get an empty entry
        when they are not in `queries` (blank ones)."""
        check_k(k)
        if batch_size < 1:
            raise RankloopError(f"batch_size must be >= 1, got {batch_size}")
        if len(queries) != len(qvecs):
            raise RankloopError(f"{len(queries)} queries but {len(qvecs)} query vectors")
        qids = queries.ids
        t1 = time.perf_counter()
        fetch = k + 1 if remove_query_id else k
        data: dict[str, dict[str, float]] = {q: {} for q in (all_ids or qids)}
        for start in range(0, len(qids), batch_size):
            scores, ids = self.index.search(
                qvecs[start : start + batch_size], fetch, **search_params
            )
            found = scores > -np.inf  # VectorIndex drops missing hits from ids, scores are -inf
            for row, (qid, doc_ids) in enumerate(zip(qids[start : start + batch_size], ids)):
                row_scores = scores[row][found[row]].tolist()
                data[qid] = ranked_to_dict(qid, doc_ids, row_scores, k, remove_query_id)
        t2 = time.perf_counter()
        self.last_timing = {"encode_s": 0.0, "search_s": t2 - t1, "n_queries": len(qids)}
        return Run(data, self.name, {"model": self.encoder.name, "k": k, **search_params})

    def __repr__(self) -> str:
        return f"DenseRetriever({self.encoder!r}, dim={self.index.dim})"
