"""Baselines: WMF (ALS) and BPR through `implicit`, and the popularity and random reference scorers.

WMF and BPR are thin wrappers around the `implicit` library, not re-implementations. The
wrappers add only what `implicit` lacks: an `Interactions` input whose orientation is checked
(implicit 0.7 wants user_items; older versions wanted item_users), a seeded and single-threaded
default so results reproduce bit for bit, and recommendation through the shared `VectorIndex`.
`PopularityScorer` and `RandomScorer` are the levels every model of a table must beat.
"""

from __future__ import annotations

import numpy as np

from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError
from rankloop.recsys.base import FactorRecommender


def _check_implicit_input(interactions: Interactions) -> None:
    if not isinstance(interactions, Interactions):
        raise RankloopError(
            f"fit expects rankloop Interactions (users x items), got {type(interactions).__name__}; "
            "build one with Interactions(user_items=...) or Interactions.from_triples(users=..., items=...)"
        )
    if interactions.kind != "implicit":
        raise RankloopError(
            "WMF/BPR train on implicit feedback: binarize ratings or sample clicks first"
        )
    if interactions.nnz == 0:
        raise RankloopError("cannot fit on interactions with no stored entries")


class WMF(FactorRecommender):
    """Weighted matrix factorisation (Hu et al. 2008) via `implicit.cpu.als.AlternatingLeastSquares`.

    Confidence is `alpha * value` on stored entries, as in implicit 0.7. Runs on the CPU with
    `num_threads` threads (1 or 2 here) and single-threaded BLAS, as implicit recommends; ALS is
    deterministic for a given `random_state`.
    """

    def __init__(
        self,
        factors: int = 64,
        *,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        random_state: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads

    def fit(self, interactions: Interactions) -> WMF:
        """Fit on implicit user × item feedback; sets `user_factors_`, `item_factors_`, `model_`."""
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        _check_implicit_input(interactions)
        # implicit's advice: single-threaded BLAS under ALS (it checks this when constructed)
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=self.num_threads,
            )
            model.fit(interactions.user_items, show_progress=False)
        self.model_ = model
        self._set_factors(
            np.asarray(model.user_factors), np.asarray(model.item_factors), interactions
        )
        return self


class BPR(FactorRecommender):
    """Bayesian personalised ranking via `implicit.cpu.bpr.BayesianPersonalizedRanking`.

    implicit appends an item-bias column (and a constant-1 user column) to the factors, so the
    inner product used for recommendation includes the bias. One thread by default: implicit's
    multi-threaded BPR is Hogwild and not reproducible.
    """

    def __init__(
        self,
        factors: int = 64,
        *,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        random_state: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads

    def fit(self, interactions: Interactions) -> BPR:
        """Fit on implicit user × item feedback; sets `user_factors_`, `item_factors_`, `model_`."""
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        _check_implicit_input(interactions)
        model = BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.random_state,
            num_threads=self.num_threads,
        )
        model.fit(interactions.user_items, show_progress=False)
        self.model_ = model
        self._set_factors(
            np.asarray(model.user_factors), np.asarray(model.item_factors), interactions
        )
        return self


class PopularityScorer:
    """Scores every user's items by training popularity (number of users with a stored entry)."""

    def fit(self, clicks: Interactions) -> PopularityScorer:
        """Count each item's users in `clicks`; returns self."""
        self.counts_ = clicks.item_counts().astype(np.float64)
        return self

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The popularity of each item (the same for every user)."""
        return self.counts_[np.asarray(items)]


class RandomScorer:
    """Uniformly random scores, seeded by `random_state`: the level any model must beat."""

    def __init__(self, random_state: int = 0) -> None:
        self.random_state = random_state

    def fit(self, clicks: Interactions) -> RandomScorer:
        """Start the seeded score stream (the data is not used); returns self."""
        self.rng_ = np.random.default_rng(self.random_state)
        return self

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """One fresh uniform score per (user, item) pair."""
        return self.rng_.random(np.asarray(users).shape)
