"""`MultiVectorIndex`: a token-level index for late interaction (ColBERT-style MaxSim).

Token vectors of every document sit in one row-addressed `VectorIndex` (any FAISS factory
string), so candidate generation is an ANN search per query token; the candidate documents
are then scored exactly with (optionally weighted) MaxSim over their stored full-precision
token vectors:

    score(q, d) = sum_j  w_j * max_t  <q_j, d_t>

Document `i` owns token rows `offsets[i]:offsets[i + 1]`; token vocabulary ids are kept beside
the vectors, which is what ColBERT-PRF needs to turn expansion embeddings back into terms.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rankloop.embed.encoders import TokenEmbeddings
from rankloop.embed.index import (
    VectorIndex,
    check_files,
    file_records,
    is_saved_format,
    read_meta,
    write_meta,
)
from rankloop.errors import IndexCorruptError, RankloopError
from rankloop.io import atomic_dir, open_artifact

FORMAT = "rankloop.MultiVectorIndex/1"
ARTIFACT = "MultiVectorIndex"  # the kind recorded in the rankloop.json manifest
_TOKENS_DIR = "tokens"
_TOKEN_IDS_FILE = "token_ids.npy"
_OFFSETS_FILE = "doc_offsets.npy"
_DOC_IDS_FILE = "doc_ids.json"
_SCORE_ROWS = 1 << 17  # document token rows scored per matrix product (~200 MB at d=384)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of `arange(s, s + n)` for each (s, n), without a Python loop."""
    total = int(lengths.sum())
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


class MultiVectorIndex:
    """Per-token document vectors with ANN candidate generation and exact MaxSim scoring."""

    def __init__(self, dim: int, factory: str = "Flat") -> None:
        self._tokens = VectorIndex(dim, factory, metric="ip")
        self._token_ids = np.zeros(0, dtype=np.int32)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._doc_ids: list[str] = []
        self._doc_row: dict[str, int] = {}
        self._token_doc: np.ndarray | None = None
        self._df: np.ndarray | None = None

    def __repr__(self) -> str:
        return (
            f"MultiVectorIndex(dim={self.dim}, factory={self.factory!r}, docs={self.n_docs}, "
            f"tokens={self.n_tokens})"
        )

    def __len__(self) -> int:
        return len(self._doc_ids)

    @property
    def dim(self) -> int:
        return self._tokens.dim

    @property
    def factory(self) -> str:
        return self._tokens.factory

    @property
    def n_docs(self) -> int:
        return len(self._doc_ids)

    @property
    def n_tokens(self) -> int:
        return int(self._offsets[-1])

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in row order (the internal list: do not mutate it)."""
        return self._doc_ids

    @property
    def token_index(self) -> VectorIndex:
        """The row-addressed index over all token vectors (row = position in the packed arrays)."""
        return self._tokens

    # -- building ----------------------------------------------------------------------------
    def add(
        self,
        doc_ids: Sequence[str],
        tokens: TokenEmbeddings,
        *,
        train_size: int | None = None,
        seed: int = 0,
    ) -> None:
        """Append documents: `tokens` holds their per-token vectors, text i = doc_ids[i]."""
        if not isinstance(tokens, TokenEmbeddings):
            raise RankloopError(f"tokens must be TokenEmbeddings, got {type(tokens).__name__}")
        if isinstance(doc_ids, str):
            raise RankloopError("doc_ids must be a sequence of strings, got a single str")
        ids = list(doc_ids)
        if len(ids) != len(tokens):
            raise RankloopError(f"{len(ids)} doc ids for {len(tokens)} token packs")
        if tokens.dim != self.dim:
            raise RankloopError(
                f"token vectors have dimension {tokens.dim} but the index has {self.dim}"
            )
        bad = next((i for i in ids if not isinstance(i, str)), None)
        if bad is not None:
            raise RankloopError(f"doc ids must be strings, got {type(bad).__name__} {bad!r}")
        if len(set(ids)) != len(ids):
            raise RankloopError("duplicate doc ids in the documents to add")
        clash = next((i for i in ids if i in self._doc_row), None)
        if clash is not None:
            raise RankloopError(f"doc id {clash!r} is already in the index")
        self._tokens.add(None, tokens.vectors, train_size=train_size, seed=seed)
        base_tok = self.n_tokens
        base_doc = len(self._doc_ids)
        self._token_ids = np.concatenate([self._token_ids, tokens.token_ids.astype(np.int32)])
        self._offsets = np.concatenate([self._offsets, tokens.offsets[1:] + base_tok])
        self._doc_ids.extend(ids)
        self._doc_row.update(zip(ids, range(base_doc, base_doc + len(ids))))
        self._token_doc = None
        self._df = None

    # -- token statistics --------------------------------------------------------------------
    def token_doc(self) -> np.ndarray:
        """(n_tokens,) int64: the document row that owns each token row."""
        if self._token_doc is None:
            self._token_doc = np.repeat(
                np.arange(self.n_docs, dtype=np.int64), np.diff(self._offsets)
            )
        return self._token_doc

    @property
    def token_df(self) -> np.ndarray:
        """Document frequency per vocabulary id: (max token id + 1,) int64."""
        if self._df is None:
            if self.n_tokens == 0:
                self._df = np.zeros(0, dtype=np.int64)
            else:
                vocab = int(self._token_ids.max()) + 1
                pairs = np.unique(self.token_doc() * vocab + self._token_ids)
                self._df = np.bincount(pairs % vocab, minlength=vocab).astype(np.int64)
        return self._df

    def df(self, token_ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Document frequency of each vocabulary id in `token_ids` (0 for ids never seen)."""
        t = np.asarray(token_ids, dtype=np.int64)
        table = self.token_df
        inside = (t >= 0) & (t < len(table))
        return np.where(inside, table[np.where(inside, t, 0)] if len(table) else 0, 0)

    def doc_tokens(self, doc_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (m, dim) float32, token_ids (m,) int32) of one document."""
        row = self._doc_rows([doc_id])[0]
        lo, hi = int(self._offsets[row]), int(self._offsets[row + 1])
        return self._tokens.vectors_at(np.arange(lo, hi)), np.array(self._token_ids[lo:hi])

    def nearest_tokens(
        self, vectors: np.ndarray, k: int, **params: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `k` document tokens nearest each vector: (scores, token ids (-1 = none), token rows).

        `params` go to the token index's search (`nprobe`, `efSearch`, `refine`, ...).
        """
        scores, rows = self._tokens.search_rows(vectors, k, **params)
        ids = np.where(rows >= 0, self._token_ids[np.maximum(rows, 0)] if self.n_tokens else -1, -1)
        return scores, ids.astype(np.int32), rows

    # -- scoring -----------------------------------------------------------------------------
    def _doc_rows(self, doc_ids: Sequence[str]) -> np.ndarray:
        if isinstance(doc_ids, str):
            raise RankloopError("doc_ids must be a sequence of strings, got a single str")
        try:
            return np.fromiter((self._doc_row[d] for d in doc_ids), dtype=np.int64)
        except KeyError as e:
            raise RankloopError(f"doc id {e.args[0]!r} is not in the index") from None

    def _maxsim_rows(self, q: np.ndarray, w: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """Weighted MaxSim of query tokens `q` (m, d) against document rows `docs`.

        Documents with no tokens score -inf; a query with no tokens scores 0 everywhere.
        """
        out = np.full(len(docs), -np.inf, dtype=np.float32)
        starts = self._offsets[docs]
        lengths = self._offsets[docs + 1] - starts
        nonempty = np.flatnonzero(lengths > 0)
        starts, lengths = starts[nonempty], lengths[nonempty]
        cum = np.cumsum(lengths)
        lo = 0
        while lo < len(nonempty):
            base = cum[lo] - lengths[lo]
            hi = max(lo + 1, int(np.searchsorted(cum, base + _SCORE_ROWS, side="right")))
            seg = lengths[lo:hi]
            tok = self._tokens.vectors_at(_ranges(starts[lo:hi], seg))
            sim = q @ tok.T  # (m, rows)
            seg_starts = np.cumsum(seg) - seg
            best = np.maximum.reduceat(sim, seg_starts, axis=1)
            out[nonempty[lo:hi]] = w @ best
            lo = hi
        return out

    def _query_weights(
        self, n_rows: int, weights: np.ndarray | Sequence[float] | None
    ) -> np.ndarray:
        if weights is None:
            return np.ones(n_rows, dtype=np.float32)
        w = np.asarray(weights, dtype=np.float32).reshape(-1)
        if w.shape != (n_rows,):
            raise RankloopError(
                f"weights must have one value per query token ({n_rows}), got {w.shape}"
            )
        if not np.isfinite(w).all():
            raise RankloopError("weights contain NaN or infinity")
        return w

    def maxsim(
        self,
        query_vectors: np.ndarray,
        doc_ids: Sequence[str],
        weights: np.ndarray | Sequence[float] | None = None,
    ) -> np.ndarray:
        """(len(doc_ids),) float32 exact weighted MaxSim of one query's token vectors (m, dim)."""
        q = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise RankloopError(f"query vectors must be (m, {self.dim}), got {q.shape}")
        w = self._query_weights(q.shape[0], weights)
        return self._maxsim_rows(q, w, self._doc_rows(doc_ids))

    def search(
        self,
        query_tokens: TokenEmbeddings,
        k: int,
        *,
        candidates_per_token: int = 100,
        weights: np.ndarray | Sequence[float] | None = None,
        **params: Any,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top-`k` documents per query: (scores (n, k) float32, -inf padded; doc ids).

        Each query token fetches `candidates_per_token` nearest document tokens (ANN; `params`
        such as `nprobe`/`efSearch` go to that search); the union of their documents is
        scored exactly with MaxSim. `weights` has one value per query token row.
        """
        if not isinstance(query_tokens, TokenEmbeddings):
            raise RankloopError(
                f"query_tokens must be TokenEmbeddings, got {type(query_tokens).__name__}"
            )
        if query_tokens.dim != self.dim:
            raise RankloopError(
                f"query tokens have dimension {query_tokens.dim} but the index has {self.dim}"
            )
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise RankloopError(f"k must be a positive int, got {k!r}")
        n = len(query_tokens)
        q_all = query_tokens.vectors
        w_all = self._query_weights(q_all.shape[0], weights)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        ids: list[list[str]] = [[] for _ in range(n)]
        if q_all.shape[0] == 0 or self.n_tokens == 0:
            return scores, ids
        _, rows = self._tokens.search_rows(q_all, candidates_per_token, **params)
        cand = np.where(rows >= 0, self.token_doc()[np.maximum(rows, 0)], -1)
        doc_array = np.array(self._doc_ids, dtype=object)
        offsets = query_tokens.offsets
        for i in range(n):
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            docs = np.unique(cand[lo:hi])
            docs = docs[docs >= 0]
            if lo == hi or len(docs) == 0:
                continue
            s = self._maxsim_rows(q_all[lo:hi], w_all[lo:hi], docs)
            top = np.argsort(-s, kind="stable")[:k]
            scores[i, : len(top)] = s[top]
            ids[i] = doc_array[docs[top]].tolist()
        return scores, ids

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the index to directory `path` atomically, with a checksummed manifest.

        Replaces only an empty folder or a saved MultiVectorIndex (another rankloop artefact
        with `overwrite=True`; any other folder never). See `VectorIndex.save`.
        """
        legacy = is_saved_format(FORMAT)
        with atomic_dir(path, ARTIFACT, overwrite=overwrite, legacy=legacy) as tmp:
            (tmp / _TOKENS_DIR).mkdir()
            self._tokens.write_into(tmp / _TOKENS_DIR)
            np.save(tmp / _TOKEN_IDS_FILE, self._token_ids)
            np.save(tmp / _OFFSETS_FILE, self._offsets)
            (tmp / _DOC_IDS_FILE).write_text(json.dumps(self._doc_ids), encoding="utf-8")
            write_meta(
                tmp,
                {
                    "format": FORMAT,
                    "dim": self.dim,
                    "factory": self.factory,
                    "n_docs": self.n_docs,
                    "n_tokens": self.n_tokens,
                    "files": file_records(tmp, [_TOKEN_IDS_FILE, _OFFSETS_FILE, _DOC_IDS_FILE]),
                },
            )
        return Path(path)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], mmap: bool = True, verify: bool = True
    ) -> MultiVectorIndex:
        """Read an index saved by `save`; token vectors and ids are memory-mapped when `mmap`.

        Sizes and SHA-256 of every file are checked (`verify=False`: sizes only), as in
        `VectorIndex.load`.
        """
        directory = Path(path)
        manifest = open_artifact(directory, ARTIFACT, verify=verify, legacy=is_saved_format(FORMAT))
        verify_meta = verify and manifest is None  # pre-manifest indexes: hashes in meta.json
        meta = read_meta(directory, FORMAT)
        check_files(directory, meta, verify_meta)
        tokens = VectorIndex.read_from(directory / _TOKENS_DIR, mmap, verify_meta)
        mode = "r" if mmap else None
        try:
            token_ids = np.load(directory / _TOKEN_IDS_FILE, mmap_mode=mode)
            offsets = np.load(directory / _OFFSETS_FILE)
            doc_ids = json.loads((directory / _DOC_IDS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise IndexCorruptError(f"{directory}: unreadable file ({e})") from None
        n_tok = tokens.ntotal
        if (
            not isinstance(doc_ids, list)
            or not all(isinstance(d, str) for d in doc_ids)
            or len(set(doc_ids)) != len(doc_ids)
            or token_ids.shape != (n_tok,)
            or token_ids.dtype != np.int32
            or offsets.shape != (len(doc_ids) + 1,)
            or offsets.dtype != np.int64
            or offsets[0] != 0
            or offsets[-1] != n_tok
            or np.any(np.diff(offsets) < 0)
            or meta.get("n_docs") != len(doc_ids)
            or meta.get("n_tokens") != n_tok
        ):
            raise IndexCorruptError(
                f"{directory}: inconsistent files ({len(doc_ids) if isinstance(doc_ids, list) else '?'} "
                f"doc ids, offsets {offsets.shape}, {token_ids.shape} token ids, {n_tok} token vectors)"
            )
        out = cls.__new__(cls)
        out._tokens = tokens
        out._token_ids = token_ids
        out._offsets = offsets
        out._doc_ids = doc_ids
        out._doc_row = {d: r for r, d in enumerate(doc_ids)}
        out._token_doc = None
        out._df = None
        return out
