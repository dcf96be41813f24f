"""Late-interaction retrieval: per-token query vectors against a `MultiVectorIndex` (MaxSim)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from rankloop.data.types import Corpus, Queries, Run
from rankloop.embed.encoders import Encoder, TokenEmbeddings
from rankloop.embed.multivector import MultiVectorIndex
from rankloop.errors import RankloopError
from rankloop.io import atomic_dir
from rankloop.retrieval.base import check_k, ranked_to_dict, read_meta, split_empty, write_meta

TOKENS_SUBDIR = "tokens"
_BUILD_CHUNK = 1024  # documents encoded per step while building (bounds peak memory)


class MultiVectorRetriever:
    """Encode each query's tokens with `encoder`; ANN candidates, then exact MaxSim, in `index`."""

    def __init__(self, encoder: Encoder, index: MultiVectorIndex) -> None:
        if encoder.dim != index.dim:
            raise RankloopError(
                f"encoder {encoder.name!r} makes {encoder.dim}-d vectors but the index holds "
                f"{index.dim}-d token vectors; search with the model that built the index"
            )
        self.encoder = encoder
        self.index = index

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
        for start in range(0, len(corpus), _BUILD_CHUNK):
            tokens = encoder.encode_tokens(texts[start : start + _BUILD_CHUNK], kind="doc")
            index.add(corpus.ids[start : start + _BUILD_CHUNK], tokens)
        return cls(encoder, index)

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

    @property
    def name(self) -> str:
        """Run name: `maxsim:` plus the model's short name."""
        return "maxsim:" + self.encoder.name.rstrip("/").rsplit("/", 1)[-1]

    def save(self, path: str | os.PathLike[str], **extra_meta: Any) -> Path:
        """Write the token index and the encoder settings to `path` (atomically replaced)."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            self.index.save(tmp / TOKENS_SUBDIR)
            write_meta(
                tmp,
                "multivector",
                model=self.encoder.name,
                model_fingerprint=self.encoder.fingerprint,
                max_length=self.encoder.max_length,
                dim=self.index.dim,
                **extra_meta,
            )
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], encoder: Encoder | None = None, **encoder_kwargs: Any
    ) -> MultiVectorRetriever:
        """Open an index saved by `save`; without `encoder`, rebuild the one that made it."""
        meta = read_meta(path)
        if meta["kind"] != "multivector":
            raise RankloopError(f"{path} holds a {meta['kind']} index, not multivector")
        if encoder is None:
            encoder = Encoder(meta["model"], max_length=meta.get("max_length"), **encoder_kwargs)
            if encoder.fingerprint != meta.get("model_fingerprint"):
                warnings.warn(
                    f"{path}: model {meta['model']!r} differs from the one that built the index",
                    stacklevel=2,
                )
        return cls(encoder, MultiVectorIndex.load(Path(path) / TOKENS_SUBDIR))

    def __repr__(self) -> str:
        return f"MultiVectorRetriever({self.encoder!r}, docs={self.index.n_docs})"
