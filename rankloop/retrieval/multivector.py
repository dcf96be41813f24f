"""Late-interaction retrieval: per-token query vectors against a `MultiVectorIndex` (MaxSim)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rankloop.data.types import Corpus, Queries, Run
from rankloop.embed.encoders import Encoder, TokenEmbeddings
from rankloop.embed.multivector import MultiVectorIndex
from rankloop.errors import RankloopError
from rankloop.retrieval._encoded import EncodedIndexRetriever
from rankloop.retrieval.base import (
    META_FILE,
    check_k,
    index_cache_dir,
    ranked_to_dict,
    split_empty,
)

TOKENS_SUBDIR = "tokens"
# Documents encoded per step while building: bounds peak memory. 1,024 made full SciFact crawl
# (>12 min for the first chunk, 4.4 GB); 256 ran at ~6 docs/s on the shared 2-core machine.
_BUILD_CHUNK = 256


class MultiVectorRetriever(EncodedIndexRetriever):
    """Encode each query's tokens with `encoder`; ANN candidates, then exact MaxSim, in `index`."""

    KIND = "multivector"
    SUBDIR = TOKENS_SUBDIR
    PREFIX = "maxsim:"
    INDEX_CLS = MultiVectorIndex

    @classmethod
    def build(
        cls, corpus: Corpus, encoder: Encoder | None = None, factory: str = "Flat"
    ) -> MultiVectorRetriever:
        """Encode every document's tokens (in chunks) and add them to a new token index."""
        if len(corpus) == 0:
            raise RankloopError(f"cannot build a token index from an empty corpus {corpus.name!r}")
        encoder = encoder if encoder is not None else Encoder()
        index = MultiVectorIndex(encoder.dim, factory=factory)
        texts = corpus.doc_texts()
        steps = range(0, len(corpus), _BUILD_CHUNK)
        for start in tqdm(steps, desc="token index", unit="chunk", disable=len(steps) < 2):
            tokens = encoder.encode_tokens(texts[start : start + _BUILD_CHUNK], kind="doc")
            index.add(corpus.ids[start : start + _BUILD_CHUNK], tokens)
        return cls(encoder, index)

    @staticmethod
    def cache_path(
        corpus: Corpus,
        encoder: Encoder,
        factory: str = "Flat",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Where `cached` keeps the token index of (`corpus`, `encoder`, `factory`)."""
        base = index_cache_dir() if cache_dir is None else Path(cache_dir)
        model = encoder.fingerprint.rsplit("@", 1)[-1]
        slug = "".join(c if c.isalnum() else "_" for c in factory)
        return base / f"multivector-{model}-{slug}-{corpus.checksum()[:20]}"

    @classmethod
    def cached(
        cls,
        corpus: Corpus,
        encoder: Encoder | None = None,
        factory: str = "Flat",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> MultiVectorRetriever:
        """The token index of `corpus`, built and saved (atomically) on first use, then loaded
        memory-mapped. The cache key is the model's file hash, the factory and the corpus
        checksum, so a changed model or corpus builds a new index."""
        encoder = encoder if encoder is not None else Encoder()
        path = cls.cache_path(corpus, encoder, factory, cache_dir)
        if not (path / META_FILE).is_file():
            cls.build(corpus, encoder, factory).save(path)
        return cls.load(path, encoder=encoder)

    def search(
        self,
        queries: Queries,
        k: int = 1000,
        *,
        candidates_per_token: int = 100,
        remove_query_id: bool = False,
        **search_params: Any,
    ) -> Run:
        """Top-`k` documents per query by MaxSim; blank queries get no results (with a warning)."""
        check_k(k)
        keep, _ = split_empty(queries, "MultiVectorRetriever.search")
        qids = [queries.ids[i] for i in keep]
        data: dict[str, dict[str, float]] = {q: {} for q in queries.ids}
        if qids:
            tokens: TokenEmbeddings = self.encoder.encode_tokens(
                [queries.texts[i] for i in keep], kind="query"
            )
            fetch = k + 1 if remove_query_id else k
            scores, ids = self.index.search(
                tokens, fetch, candidates_per_token=candidates_per_token, **search_params
            )
            found = scores > -np.inf
            for row, (qid, doc_ids) in enumerate(zip(qids, ids)):
                data[qid] = ranked_to_dict(
                    qid, doc_ids, scores[row][found[row]].tolist(), k, remove_query_id
                )
        return Run(data, self.name, {"model": self.encoder.name, "k": k, **search_params})

    def __repr__(self) -> str:
        return f"MultiVectorRetriever({self.encoder!r}, docs={self.index.n_docs})"
