"""Shared behaviour of factor models: pair scores and top-k recommendation through `VectorIndex`.

Every recommender here scores a (user, item) pair as the inner product of a user factor and an
item factor, so recommendation is maximum inner product search over the item factors; that
search goes through the shared FAISS layer (`rankloop.embed.index.VectorIndex`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError


def _rows(x: np.ndarray | list[int] | int, n: int, what: str) -> np.ndarray:
    r = np.atleast_1d(np.asarray(x))
    if r.ndim != 1 or not np.issubdtype(r.dtype, np.integer):
        raise RankloopError(
            f"{what} must be integer row indices, got dtype {r.dtype} shape {r.shape}"
        )
    if len(r) and (r.min() < 0 or r.max() >= n):
        raise RankloopError(f"{what} must be in [0, {n}), got {r.min()}..{r.max()}")
    return r.astype(np.int64)


_SAVED = "rankloop-recommender-v1"


class FactorRecommender:
    """Mixin: after `fit`, `user_factors_` (n_users, d), `item_factors_` (n_items, d), `seen_`."""

    user_factors_: np.ndarray
    item_factors_: np.ndarray
    seen_: Interactions

    def _set_factors(
        self, user_factors: np.ndarray, item_factors: np.ndarray, seen: Interactions
    ) -> None:
        u = np.ascontiguousarray(user_factors, dtype=np.float32)
        v = np.ascontiguousarray(item_factors, dtype=np.float32)
        if u.shape[0] != seen.n_users or v.shape[0] != seen.n_items or u.shape[1] != v.shape[1]:
            raise RankloopError(
                f"factor shapes {u.shape} (users) and {v.shape} (items) do not match interactions {seen.shape}"
            )
        self.user_factors_, self.item_factors_, self.seen_ = u, v, seen
        self._index = None

    def _check_fitted(self) -> None:
        if not hasattr(self, "user_factors_"):
            raise RankloopError(f"{type(self).__name__} is not fitted; call fit first")

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Score of each (users[j], items[j]) pair: ⟨u, i⟩, shape like `users`."""
        self._check_fitted()
        users = np.asarray(users)
        u = _rows(users.ravel(), self.user_factors_.shape[0], "users")
        i = _rows(np.asarray(items).ravel(), self.item_factors_.shape[0], "items")
        if len(u) != len(i):
            raise RankloopError(f"score: {len(u)} users for {len(i)} items")
        return np.einsum("nd,nd->n", self.user_factors_[u], self.item_factors_[i]).reshape(
            users.shape
        )

    def index(self):  # -> rankloop.embed.index.VectorIndex
        """The exact inner-product FAISS index over item factors (built once per fit)."""
        self._check_fitted()
        if getattr(self, "_index", None) is None:
            from rankloop.embed.index import VectorIndex

            idx = VectorIndex(self.item_factors_.shape[1], factory="Flat", metric="ip")
            idx.add(self.seen_.item_ids, self.item_factors_)
            self._index = idx
        return self._index

    def recommend(
        self, users: np.ndarray | list[int] | int, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` item rows and scores per user row, by maximum inner product search.

        With `exclude_seen`, items the user interacted with in training are removed: the index
        is asked for k + (most items any of these users has seen) and the seen ones filtered
        out. Rows with fewer than `k` candidates are padded with item -1 and score -inf.
        Returns (items (n, k) int64, scores (n, k) float32).
        """
        self._check_fitted()
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise RankloopError(f"k must be a positive int, got {k!r}")
        u = _rows(users, self.user_factors_.shape[0], "users")
        n_items = self.item_factors_.shape[0]
        extra = int(self.seen_.user_counts()[u].max()) if exclude_seen and len(u) else 0
        fetch = min(k + extra, n_items)
        scores, rows = self.index().search_rows(self.user_factors_[u], fetch)
        if exclude_seen:
            drop = (rows < 0) | self.seen_.contains(
                np.repeat(u[:, None], fetch, axis=1), np.maximum(rows, 0)
            )
            order = np.argsort(drop, axis=1, kind="stable")
            rows = np.where(
                np.take_along_axis(drop, order, axis=1), -1, np.take_along_axis(rows, order, axis=1)
            )
            scores = np.where(rows < 0, -np.inf, np.take_along_axis(scores, order, axis=1)).astype(
                np.float32
            )
        if fetch < k:
            pad = k - fetch
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return rows[:, :k], scores[:, :k]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted factors, ids and seen items to one `.npz` file, atomically (an
        interrupted save leaves the previous file); `load_recommender` reads it back."""
        from rankloop.io import atomic_write

        self._check_fitted()
        seen = self.seen_.user_items.tocsr()
        path = Path(path)
        with atomic_write(path, "wb") as fh:
            np.savez(fh, format=np.array(_SAVED), model=np.array(type(self).__name__),
                     user_factors=self.user_factors_, item_factors=self.item_factors_,
                     user_ids=np.array(self.seen_.user_ids, dtype=str),
                     item_ids=np.array(self.seen_.item_ids, dtype=str), seen_data=seen.data,
                     seen_indices=seen.indices, seen_indptr=seen.indptr)  # fmt: skip
        return path


class SavedRecommender(FactorRecommender):
    """A factor model read back by `load_recommender` (scores and recommends; does not fit)."""

    def __init__(self, model: str) -> None:
        self.model = model


def load_recommender(path: str | os.PathLike[str]) -> SavedRecommender:
    """A recommender written by `FactorRecommender.save`; a file that is not one fails clearly."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z or str(z["format"]) != _SAVED:
                raise RankloopError(f"{path}: not a rankloop recommender file ({_SAVED})")
            n_users, n_items = len(z["user_ids"]), len(z["item_ids"])
            seen = sp.csr_matrix((z["seen_data"], z["seen_indices"], z["seen_indptr"]),
                                 shape=(n_users, n_items))  # fmt: skip
            out = SavedRecommender(str(z["model"]))
            out._set_factors(z["user_factors"], z["item_factors"],
                             Interactions(user_items=seen, kind="implicit", user_ids=list(z["user_ids"]),
                                          item_ids=list(z["item_ids"])))  # fmt: skip
            return out
    except (OSError, ValueError, KeyError) as e:
        raise RankloopError(f"{path}: cannot read a saved recommender ({e})") from None
