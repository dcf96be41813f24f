"""`Interactions`: a user × item sparse matrix whose orientation is never ambiguous.

Rows are always users and columns always items. Every constructor takes named arguments
only and checks shapes against the id lists, so the user_items / item_users mix-up that
`implicit` users hit cannot happen silently. Label transforms from the MNAR papers
(ratings >= 4 positive; graded Bernoulli clicks with ε) live here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp

from rankloop.errors import RankloopError

Kind = Literal["explicit", "implicit"]


def _as_ids(ids: Sequence[str] | None, n: int, what: str) -> list[str]:
    if ids is None:
        return [str(i) for i in range(n)]
    out = [str(i) for i in ids]
    if len(out) != n:
        raise RankloopError(f"Interactions: {len(out)} {what} ids for {n} {what}s (matrix side)")
    if len(set(out)) != len(out):
        raise RankloopError(f"Interactions: duplicate {what} ids")
    return out


def graded_relevance(
    ratings: np.ndarray, *, eps: float = 0.1, min_rating: float = 1, max_rating: float = 5
) -> np.ndarray:
    """ε + (1 − ε)(2^(r−r_min) − 1)/(2^(r_max−r_min) − 1): the relevance probability of Saito et al."""
    r = np.asarray(ratings, np.float64)
    span = 2.0 ** (max_rating - min_rating) - 1
    return (eps + (1 - eps) * (2.0 ** (r - min_rating) - 1) / span).astype(np.float32)


@dataclass(frozen=True, kw_only=True, eq=False)
class Interactions:
    """User × item feedback: `user_items` is CSR of shape (n_users, n_items), float32.

    `kind="explicit"` holds ratings (a stored value is a rating, absence = not rated);
    `kind="implicit"` holds click/count strengths. Explicit zeros are dropped.
    """

    user_items: sp.csr_matrix
    kind: Kind
    user_ids: list[str] = field(default=None)  # type: ignore[assignment]
    item_ids: list[str] = field(default=None)  # type: ignore[assignment]
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("explicit", "implicit"):
            raise RankloopError(
                f"Interactions: kind must be 'explicit' or 'implicit', got {self.kind!r}"
            )
        m = self.user_items
        if not (sp.issparse(m) or isinstance(m, np.ndarray)) or m.ndim != 2:
            raise RankloopError(
                "Interactions: user_items must be a 2-D scipy.sparse matrix or array"
            )
        m = sp.csr_matrix(m, dtype=np.float32)
        m.sum_duplicates()
        m.eliminate_zeros()
        m.sort_indices()
        if not np.all(np.isfinite(m.data)):
            raise RankloopError("Interactions: user_items holds NaN or infinite values")
        object.__setattr__(self, "user_items", m)
        object.__setattr__(self, "user_ids", _as_ids(self.user_ids, m.shape[0], "user"))
        object.__setattr__(self, "item_ids", _as_ids(self.item_ids, m.shape[1], "item"))

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def from_triples(
        cls,
        *,
        users: np.ndarray,
        items: np.ndarray,
        values: np.ndarray | None = None,
        n_users: int | None = None,
        n_items: int | None = None,
        kind: Kind,
        user_ids: Sequence[str] | None = None,
        item_ids: Sequence[str] | None = None,
        name: str = "",
    ) -> Interactions:
        """Build from parallel arrays of user rows, item columns and values (default 1).

        A (user, item) pair given twice raises: summing or overwriting ratings silently is
        how wrong results happen.
        """
        users = np.asarray(users)
        items = np.asarray(items)
        if users.shape != items.shape or users.ndim != 1:
            raise RankloopError(
                f"Interactions: users {users.shape} and items {items.shape} must be equal 1-D"
            )
        vals = np.ones(len(users), np.float32) if values is None else np.asarray(values, np.float32)
        if vals.shape != users.shape:
            raise RankloopError(
                f"Interactions: values {vals.shape} do not match users {users.shape}"
            )
        if len(users) and (users.min() < 0 or items.min() < 0):
            raise RankloopError("Interactions: negative user or item index")
        n_users = (int(users.max()) + 1 if len(users) else 0) if n_users is None else n_users
        n_items = (int(items.max()) + 1 if len(items) else 0) if n_items is None else n_items
        if len(users) and (users.max() >= n_users or items.max() >= n_items):
            raise RankloopError(
                f"Interactions: index out of range for shape ({n_users}, {n_items}): "
                f"max user {users.max()}, max item {items.max()}"
            )
        keys = users.astype(np.int64) * n_items + items.astype(np.int64)
        uniq, counts = np.unique(keys, return_counts=True)
        if len(uniq) != len(keys):
            dup = uniq[np.argmax(counts > 1)]
            raise RankloopError(
                f"Interactions: pair (user {dup // n_items}, item {dup % n_items}) given more than once"
            )
        m = sp.csr_matrix((vals, (users, items)), shape=(n_users, n_items), dtype=np.float32)
        return cls(user_items=m, kind=kind, user_ids=user_ids, item_ids=item_ids, name=name)

    @classmethod
    def from_dense(
        cls,
        *,
        ratings: np.ndarray,
        kind: Kind,
        user_ids: Sequence[str] | None = None,
        item_ids: Sequence[str] | None = None,
        name: str = "",
    ) -> Interactions:
        """Build from a dense (n_users, n_items) array where 0 means 'no interaction'."""
        ratings = np.asarray(ratings)
        if ratings.ndim != 2:
            raise RankloopError(
                f"Interactions: dense ratings must be 2-D, got shape {ratings.shape}"
            )
        return cls(
            user_items=sp.csr_matrix(ratings),
            kind=kind,
            user_ids=user_ids,
            item_ids=item_ids,
            name=name,
        )

    # ---- shape and views ----------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return self.user_items.shape[0]

    @property
    def n_items(self) -> int:
        return self.user_items.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return self.user_items.shape  # type: ignore[return-value]

    @property
    def nnz(self) -> int:
        return self.user_items.nnz

    @property
    def item_users(self) -> sp.csr_matrix:
        """The transpose, (n_items, n_users) CSR, for code that wants items as rows."""
        return self.user_items.T.tocsr()

    def __repr__(self) -> str:
        return (
            f"Interactions(name={self.name!r}, kind={self.kind!r}, n_users={self.n_users}, "
            f"n_items={self.n_items}, nnz={self.nnz})"
        )

    def to_triples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user rows, item columns, values), sorted by user then item."""
        coo = self.user_items.tocoo()
        return coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data

    def item_counts(self) -> np.ndarray:
        """Number of users with a stored entry per item, shape (n_items,)."""
        return np.bincount(self.user_items.indices, minlength=self.n_items)

    def user_counts(self) -> np.ndarray:
        """Number of stored entries per user, shape (n_users,)."""
        return np.diff(self.user_items.indptr)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Vectorised membership: whether each (users[j], items[j]) pair is stored."""
        return self.values_at(users, items) != 0

    def values_at(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Stored value at each (users[j], items[j]) pair (0 where absent), any array shape."""
        users = np.asarray(users)
        items = np.asarray(items)
        m = self.user_items
        keys = self.__dict__.get("_keys")
        if keys is None:  # sorted linear indices user * n_items + item of the stored entries
            keys = (
                np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(m.indptr)) * self.n_items
            )
            keys += m.indices
            object.__setattr__(self, "_keys", keys)
        q = users.astype(np.int64).ravel() * self.n_items + items.astype(np.int64).ravel()
        pos = np.searchsorted(keys, q)
        pos_c = np.minimum(pos, max(len(keys) - 1, 0))
        hit = (pos < len(keys)) & (keys[pos_c] == q) if len(keys) else np.zeros(len(q), bool)
        out = np.where(hit, m.data[pos_c] if len(keys) else 0.0, 0.0).astype(np.float32)
        return out.reshape(users.shape)

    # ---- derived interactions ------------------------------------------------------------
    def _with_matrix(self, m: sp.csr_matrix, kind: Kind, name: str | None = None) -> Interactions:
        return Interactions(
            user_items=m,
            kind=kind,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            name=self.name if name is None else name,
        )

    def binarize(self, threshold: float = 4.0) -> Interactions:
        """Implicit 0/1 feedback: an entry is positive iff its value >= `threshold` (papers: 4)."""
        m = self.user_items.copy()
        m.data = (m.data >= threshold).astype(np.float32)
        return self._with_matrix(m, "implicit")

    def _check_ratings(self, eps: float, min_rating: float, max_rating: float) -> np.ndarray:
        if self.kind != "explicit":
            raise RankloopError("graded relevance needs explicit ratings")
        if not 0.0 <= eps <= 1.0:
            raise RankloopError(f"eps must be in [0, 1], got {eps}")
        r = self.user_items.data
        if len(r) and (r.min() < min_rating or r.max() > max_rating):
            raise RankloopError(
                f"ratings outside [{min_rating}, {max_rating}]: {r.min()}..{r.max()}"
            )
        return graded_relevance(r, eps=eps, min_rating=min_rating, max_rating=max_rating)

    def relevance_probability(
        self, eps: float = 0.1, min_rating: float = 1, max_rating: float = 5
    ) -> Interactions:
        """Graded relevance per rated entry (see `graded_relevance`); eps=0 drops the lowest rating."""
        m = self.user_items.copy()
        m.data = self._check_ratings(eps, min_rating, max_rating)
        return self._with_matrix(m, "implicit")

    def sample_clicks(
        self,
        eps: float = 0.1,
        *,
        random_state: int | np.random.Generator,
        min_rating: float = 1,
        max_rating: float = 5,
    ) -> Interactions:
        """Graded Bernoulli clicks: each rated entry becomes a click with its relevance probability."""
        rng = np.random.default_rng(random_state)
        m = self.user_items.copy()
        m.data = (rng.random(m.nnz) < self._check_ratings(eps, min_rating, max_rating)).astype(
            np.float32
        )
        return self._with_matrix(m, "implicit")

    def split(
        self, fraction: float, *, random_state: int | np.random.Generator
    ) -> tuple[Interactions, Interactions]:
        """Hold out a random `fraction` of stored entries: (kept, held_out), same shape."""
        if not 0.0 < fraction < 1.0:
            raise RankloopError(f"split fraction must be in (0, 1), got {fraction}")
        rng = np.random.default_rng(random_state)
        u, i, v = self.to_triples()
        held = rng.random(len(v)) < fraction
        mk = lambda s: sp.csr_matrix((v[s], (u[s], i[s])), shape=self.shape)  # noqa: E731
        return self._with_matrix(mk(~held), self.kind), self._with_matrix(mk(held), self.kind)

    def split_users(
        self, fraction: float, *, random_state: int | np.random.Generator
    ) -> tuple[Interactions, Interactions]:
        """Split the users with entries: (a random `fraction` of them, the rest), each user's
        entries staying together, e.g. MAR users carved out for propensity estimation and the
        users left for evaluation (so no user serves both). Same shape and ids."""
        if not 0.0 < fraction < 1.0:
            raise RankloopError(f"split_users fraction must be in (0, 1), got {fraction}")
        rng = np.random.default_rng(random_state)
        counts = self.user_counts()
        users = np.flatnonzero(counts)
        chosen = np.zeros(self.n_users, bool)
        chosen[rng.choice(users, max(1, round(fraction * len(users))), replace=False)] = True
        keep = np.repeat(chosen, counts)
        u, i, v = self.to_triples()

        def part(mask: np.ndarray) -> Interactions:
            return Interactions.from_triples(
                users=u[mask],
                items=i[mask],
                values=v[mask],
                n_users=self.n_users,
                n_items=self.n_items,
                kind=self.kind,
                user_ids=self.user_ids,
                item_ids=self.item_ids,
                name=self.name,
            )

        return part(keep), part(~keep)

    def union(self, other: Interactions) -> Interactions:
        """Entries of both (same shape and ids); a pair stored in both keeps `other`'s value."""
        if (
            other.shape != self.shape
            or other.item_ids != self.item_ids
            or other.user_ids != self.user_ids
        ):
            raise RankloopError(
                f"Interactions.union: shapes/ids differ {self.shape} vs {other.shape}"
            )
        a = self.user_items.copy()
        a = a - a.multiply(other.user_items != 0) + other.user_items
        return self._with_matrix(sp.csr_matrix(a), self.kind)
