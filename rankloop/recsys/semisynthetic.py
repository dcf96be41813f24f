"""A semi-synthetic MNAR world where the truth is known, and the study run on it.

Real MNAR data sets (Coat, Yahoo! R3) only say how a model does on a small MAR test sample.
Here the relevance of every (user, item) pair is known, so the true ranking quality of every
fitted model is computed exactly, and the strength of the exposure bias is a dial.

**The world** (`make_world`):

- Preferences follow the generator of Chaney, Stewart & Engelhardt, "How Algorithmic
  Confounding in Recommendation Systems Increases Homogeneity and Decreases Utility"
  (RecSys 2018, Sec. 4; as in RecLab's `engelhardt` environment): user preferences
  ρ_u ~ Dirichlet(μ_ρ) with μ_ρ = 10·Dirichlet(1_K), item attributes α_i ~ Dirichlet(μ_α) with
  μ_α = 0.1·Dirichlet(100·1_K), and utility V_ui = ⟨ρ_u, α_i⟩ (their Beta noise around this mean,
  variance 1e-5, is left out: it is negligible).
- Utilities become 1-5 star ratings as in the semi-synthetic ML-100K setup of Schnabel et al.,
  "Recommendations as Treatments: Debiasing Learning and Evaluation" (ICML 2016, Sec. 6.1):
  global utility quantiles are cut so that the rating marginals are p = (0.52, 0.24, 0.14, 0.07,
  0.03), the MAR rating distribution they use.
- Ratings become relevance probabilities with the graded transform of Saito et al. (WSDM 2020):
  R_ui = ε + (1 − ε)(2^(r−1) − 1)/15 (`rankloop.data.interactions.graded_relevance`).
- Item popularity is a Zipf profile π_i = rank_i^(−γ) (max 1) over a random item order,
  independent of the preferences, so popularity carries no information about relevance and any
  exposure driven by it is pure bias.

**Exposure** (`exposure_propensity`), with bias strength s ≥ 0:

    θ_ui(s) = min(1, c_s · π_i^s · a^(s·max(0, 4 − r_ui)))

At s = 1 the rating factor is Schnabel et al.'s (propensity p for ratings 4 and 5, p·a^(4−r)
below, a = 0.25 their default) and the popularity factor is π_i; s = 0 is uniform exposure (MAR);
s > 1 sharpens both. c_s is solved exactly so that Σ θ_ui = exposure_rate · n_users · n_items
at every strength: the expected number of exposures is fixed and only who gets exposed changes.

**Feedback** (`sample_feedback`): O ~ Bernoulli(θ), Rel ~ Bernoulli(R), clicks Y = O·Rel. The
uniforms behind O and Rel depend on the seed only (common random numbers), so one seed's worlds
at two strengths differ only through θ.

**Truth-based evaluation** (exact, no sampling):

- `true_dcg`: for each user, the model ranks every item the user did not click in training; the
  gain of an item is R_ui (the probability the user finds it relevant when it is recommended:
  a fresh draw, independent of the training feedback). DCG@k = Σ_{j≤k} R_{u,π(j)} / log2(j + 1),
  the expected DCG of the ranking; nDCG@k divides by the ideal DCG@k of the same candidates (the
  top-k of R). Both are averaged over users. Ties: score descending, then item descending.
- `mar_dcg`: the Coat-like MAR protocol: a fixed, uniformly random set of `n_test_items` items
  per user (drawn once per seed, clicked or not), ranked by the model and scored with the
  authors' DCG@k (`rankloop.recsys.evaluate.authors_metrics`) with expected gains R_ui.

**The study** (`run_study`): for each strength and seed, sample the feedback, estimate the
propensity a practitioner would (item popularity^η from the clicks, `popularity_propensity`; the
true θ is kept for the oracle-propensity variants), tune every model once per strength on the
first seed's MNAR clicks (`tune_recommender`: SNIPS-DCG on held-out clicks, as the real-data
experiment; one tuning per strength keeps the time bounded, and the tuned parameters are reused
for every seed), fit it on every seed's clicks and evaluate it against the truth; then paired
differences against the baseline (WMF) over seeds, with a paired test (`compare_values`).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from rankloop.data.interactions import Interactions, graded_relevance
from rankloop.errors import ConfigError, RankloopError
from rankloop.recsys.evaluate import Scorer, authors_metrics
from rankloop.recsys.propensity import Propensity, popularity_propensity

__all__ = [
    "SCHNABEL_MARGINALS",
    "Feedback",
    "StudyModel",
    "StudyResult",
    "StudySettings",
    "World",
    "exposure_propensity",
    "make_world",
    "mar_dcg",
    "mar_test_items",
    "run_study",
    "sample_feedback",
    "true_dcg",
]

# The MAR rating distribution of Schnabel et al. (ICML 2016, Sec. 6.1), ratings 1..5.
SCHNABEL_MARGINALS = (0.52, 0.24, 0.14, 0.07, 0.03)
_MAX_PAIRS = 20_000_000  # dense (n_users, n_items) matrices beyond this are a mistake here
_MAX_STRENGTH = 20.0
_DISCOUNT = 1.0 / np.log2(np.arange(2, 10_002))  # 1/log2(j + 1), j = 1, 2, ...


# ---- the world ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class World:
    """A known preference world: utilities, star ratings, relevance probabilities R and the
    item popularity profile π (all dense, users × items; π per item, max 1)."""

    utility: np.ndarray
    ratings: np.ndarray
    relevance: np.ndarray
    popularity: np.ndarray
    eps: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.relevance.shape  # type: ignore[return-value]

    @property
    def n_users(self) -> int:
        return self.relevance.shape[0]

    @property
    def n_items(self) -> int:
        return self.relevance.shape[1]


def _check_size(n_users: int, n_items: int) -> None:
    for name, v in (("n_users", n_users), ("n_items", n_items)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2:
            raise ConfigError(f"{name} must be an int >= 2, got {v!r}")
    if n_users * n_items > _MAX_PAIRS:
        raise ConfigError(
            f"the world is dense: {n_users} x {n_items} = {n_users * n_items:,} pairs is more "
            f"than {_MAX_PAIRS:,}"
        )


def _check_marginals(marginals: Sequence[float]) -> np.ndarray:
    p = np.asarray(marginals, np.float64)
    if p.shape != (5,) or not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise ConfigError(f"rating_marginals must be 5 positive numbers, got {list(marginals)}")
    if abs(p.sum() - 1.0) > 1e-6:
        raise ConfigError(f"rating_marginals must sum to 1, got {p.sum():.6g}")
    return p


def make_world(
    n_users: int = 1000,
    n_items: int = 300,
    *,
    n_topics: int = 20,
    eps: float = 0.1,
    rating_marginals: Sequence[float] = SCHNABEL_MARGINALS,
    popularity_exponent: float = 0.6,
    random_state: int | Sequence[int] | np.random.Generator = 0,
) -> World:
    """A world from Chaney et al.'s Dirichlet preferences, Schnabel et al.'s rating marginals,
    Saito et al.'s graded relevance and a Zipf(`popularity_exponent`) popularity profile over a
    random item order (see the module docstring)."""
    _check_size(n_users, n_items)
    if isinstance(n_topics, bool) or not isinstance(n_topics, (int, np.integer)) or n_topics < 1:
        raise ConfigError(f"n_topics must be an int >= 1, got {n_topics!r}")
    if not 0.0 <= eps <= 1.0:
        raise ConfigError(f"eps must be in [0, 1], got {eps}")
    if not (math.isfinite(popularity_exponent) and popularity_exponent >= 0):
        raise ConfigError(f"popularity_exponent must be >= 0, got {popularity_exponent}")
    p = _check_marginals(rating_marginals)
    rng = (
        random_state
        if isinstance(random_state, np.random.Generator)
        else np.random.default_rng(random_state)
    )
    mu_rho = 10.0 * rng.dirichlet(np.ones(n_topics))
    mu_alpha = 0.1 * rng.dirichlet(np.full(n_topics, 100.0))
    rho = rng.dirichlet(mu_rho, size=n_users)
    alpha = rng.dirichlet(mu_alpha, size=n_items)
    utility = rho @ alpha.T
    if not np.all(np.isfinite(utility)):
        raise RankloopError("the Dirichlet draws produced non-finite utilities")
    cuts = np.quantile(utility, np.cumsum(p)[:-1])
    ratings = (1 + np.searchsorted(cuts, utility, side="right")).astype(np.int8)
    relevance = graded_relevance(ratings, eps=eps).astype(np.float64)
    rank = rng.permutation(n_items) + 1
    popularity = rank.astype(np.float64) ** (-popularity_exponent)
    return World(utility, ratings, relevance, popularity, float(eps))


# ---- exposure -------------------------------------------------------------------------------
def _scale_to_rate(w: np.ndarray, rate: float) -> np.ndarray:
    """min(1, c·w) with c solved exactly so that its mean is `rate` (w > 0)."""
    flat = w.ravel()
    n = flat.size
    target = rate * n
    if target >= n:
        return np.ones_like(w)
    desc = np.sort(flat)[::-1]
    # with the m largest weights capped at 1: c_m = (target - m) / (sum of the others)
    suffix = np.concatenate([np.cumsum(desc[::-1])[::-1], [0.0]])  # suffix[m] = Σ_{j>=m} desc[j]
    m = np.arange(n + 1)
    nxt = np.concatenate([desc, [0.0]])  # the largest uncapped weight for each m
    prev = np.concatenate([[np.inf], desc])  # the smallest capped weight
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (target - m) / suffix
        ok = (c * nxt <= 1.0 + 1e-12) & (c * prev >= 1.0 - 1e-12) & (m <= target)
    idx = np.flatnonzero(ok & np.isfinite(c))
    if not len(idx):  # cannot happen for 0 < rate < 1 and w > 0
        raise RankloopError(f"no exposure scale reaches the rate {rate}")
    return np.minimum(1.0, c[int(idx[0])] * w)


def exposure_propensity(
    world: World, strength: float, *, exposure_rate: float = 0.1, rating_alpha: float = 0.25
) -> np.ndarray:
    """θ_ui(s) = min(1, c_s · π_i^s · a^(s·max(0, 4 − r_ui))), mean exactly `exposure_rate`.

    s = 0 is uniform exposure; s = 1 is Schnabel et al.'s rating-dependent propensity (a = 0.25)
    times the popularity profile. Returns a dense (n_users, n_items) float64 matrix.
    """
    if not (isinstance(strength, (int, float)) and math.isfinite(strength)):
        raise ConfigError(f"strength must be a finite number, got {strength!r}")
    if not 0.0 <= strength <= _MAX_STRENGTH:
        raise ConfigError(f"strength must be in [0, {_MAX_STRENGTH:g}], got {strength}")
    if not 0.0 < exposure_rate <= 1.0:
        raise ConfigError(f"exposure_rate must be in (0, 1], got {exposure_rate}")
    if not 0.0 < rating_alpha <= 1.0:
        raise ConfigError(f"rating_alpha must be in (0, 1], got {rating_alpha}")
    below = np.maximum(0, 4 - world.ratings.astype(np.float64))
    log_w = strength * (np.log(world.popularity)[None, :] + below * math.log(rating_alpha))
    w = np.exp(log_w - log_w.max())  # max 1, no underflow of the largest
    w = np.maximum(w, 1e-300)
    return _scale_to_rate(w, exposure_rate)


def observed_strength(
    mnar: Interactions,
    mar: Interactions,
    *,
    rating_alpha: float = 0.25,
    popularity_exponent: float = 0.6,
) -> dict[str, float]:
    """Where a real data set with an MNAR and a MAR sample sits on the study's strength scale.

    Rating bias: P(O = 1 | r) from Bayes' rule on the two samples (Schnabel et al.,
    `naive_bayes_rating_propensity`), relative to P(O = 1 | r = 4), fitted through the origin
    by least squares to s·(4 − r)·log a over r < 4 — the s at which `exposure_propensity`'s
    rating factor matches. Popularity bias: the slope of log(exposures of an item) against
    log(its popularity rank), divided by −γ (the profile π_i = rank^(−γ) at s = 1). Real
    popularity mixes bias with quality, so the second is an upper bound of the bias.
    """
    from rankloop.recsys.propensity import naive_bayes_rating_propensity

    levels, prop = naive_bayes_rating_propensity(mnar, mar)
    if 4.0 not in levels or not (levels < 4).any():
        raise RankloopError(
            f"observed_strength needs 1-5 star ratings, got levels {levels.tolist()}"
        )
    below = levels < 4
    x = (4.0 - levels[below]) * math.log(rating_alpha)
    y = np.log(prop[below] / prop[levels == 4.0][0])
    rating_s = float(np.dot(x, y) / np.dot(x, x))
    counts = np.sort(mnar.item_counts()[mnar.item_counts() > 0])[::-1].astype(np.float64)
    rank = np.arange(1, len(counts) + 1, dtype=np.float64)
    slope = float(np.polyfit(np.log(rank), np.log(counts), 1)[0])
    return {
        "rating_strength": rating_s,
        "popularity_strength": -slope / popularity_exponent,
        **{
            f"P(O|r={lv:g}) / P(O|r=4)": float(p / prop[levels == 4.0][0])
            for lv, p in zip(levels, prop)
        },
    }


# ---- feedback -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Feedback:
    """One MNAR sample: the clicks Y = O·Rel (implicit `Interactions`), the exposure O, the
    true propensity θ it was drawn with, and the strength."""

    clicks: Interactions
    exposure: np.ndarray
    theta: np.ndarray
    strength: float


def _seed_rng(seed: int | Sequence[int], stream: int) -> np.random.Generator:
    base = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    return np.random.default_rng([*base, stream])


def sample_feedback(
    world: World, theta: np.ndarray, *, random_state: int | Sequence[int], strength: float = 0.0
) -> Feedback:
    """O ~ Bernoulli(θ), Rel ~ Bernoulli(R), clicks Y = O·Rel. The uniforms behind O and Rel
    come from two streams of `random_state` alone, so the same seed at two strengths shares
    them (common random numbers)."""
    theta = np.asarray(theta, np.float64)
    if theta.shape != world.shape:
        raise RankloopError(f"theta has shape {theta.shape}, the world {world.shape}")
    if not np.all((theta >= 0) & (theta <= 1)):
        raise RankloopError("theta must lie in [0, 1]")
    exposure = _seed_rng(random_state, 1).random(world.shape) < theta
    relevant = _seed_rng(random_state, 2).random(world.shape) < world.relevance
    y = (exposure & relevant).astype(np.float32)
    if not y.any():
        raise RankloopError(
            f"the sample holds no clicks (strength {strength}); raise exposure_rate or the size"
        )
    clicks = Interactions.from_dense(
        ratings=y, kind="implicit", name=f"semisynthetic-s{strength:g}"
    )
    return Feedback(clicks, exposure, theta, float(strength))


# ---- truth-based evaluation -------------------------------------------------------------------
def _score_matrix(model: Scorer, shape: tuple[int, int]) -> np.ndarray:
    n_u, n_i = shape
    users = np.repeat(np.arange(n_u, dtype=np.int64), n_i)
    items = np.tile(np.arange(n_i, dtype=np.int64), n_u)
    s = np.asarray(model.score(users, items), np.float64).reshape(n_u, n_i)
    if np.isnan(s).any():
        raise RankloopError(f"{type(model).__name__} produced NaN scores")
    return s


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's top k: score descending, then item descending."""
    n_i = scores.shape[1]
    order = np.argsort(-scores[:, ::-1], axis=1, kind="stable")[:, :k]
    return n_i - 1 - order


def true_dcg(
    model: Scorer, world: World, train_clicks: Interactions, *, k: int = 5
) -> dict[str, np.ndarray]:
    """Per-user expected DCG@k and nDCG@k of `model` over the items each user did not click in
    `train_clicks`, with gains R (see the module docstring). Returns {"DCG@k", "nDCG@k"}, one
    value per user (users with fewer than k candidates rank what they have)."""
    if train_clicks.shape != world.shape:
        raise RankloopError(f"clicks {train_clicks.shape} and world {world.shape} shapes differ")
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= world.n_items:
        raise RankloopError(f"k must be an int in [1, {world.n_items}], got {k!r}")
    scores = _score_matrix(model, world.shape)
    clicked = train_clicks.user_items.toarray() > 0
    scores[clicked] = -np.inf
    top = _top_k(scores, k)
    rows = np.arange(world.n_users)[:, None]
    gains = np.where(clicked[rows, top], 0.0, world.relevance[rows, top])
    disc = _DISCOUNT[:k]
    dcg = gains @ disc
    cand = np.where(clicked, -np.inf, world.relevance)
    ideal = -np.sort(-cand, axis=1)[:, :k]
    idcg = np.where(np.isfinite(ideal), ideal, 0.0) @ disc
    ndcg = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
    return {f"DCG@{k}": dcg, f"nDCG@{k}": ndcg}


def mar_test_items(
    world: World, n_test_items: int, *, random_state: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed MAR test set: `n_test_items` items per user drawn uniformly without replacement
    (clicked or not), as flat (users, items) arrays."""
    if not isinstance(n_test_items, (int, np.integer)) or not 1 <= n_test_items <= world.n_items:
        raise ConfigError(f"n_test_items must be in [1, {world.n_items}], got {n_test_items!r}")
    keys = _seed_rng(random_state, 3).random(world.shape)
    items = np.argsort(keys, axis=1)[:, :n_test_items]
    users = np.repeat(np.arange(world.n_users, dtype=np.int64), n_test_items)
    return users, items.ravel().astype(np.int64)


def mar_dcg(
    model: Scorer, world: World, users: np.ndarray, items: np.ndarray, *, k: int = 5
) -> np.ndarray:
    """Per-user authors' DCG@k of `model` on the MAR test pairs with expected gains R_ui
    (`authors_metrics`: Σ_{rank≤k} g/log2(max(rank, 2)) / Σ g)."""
    gains = world.relevance[users, items]
    res = authors_metrics(users, items, model.score(users, items), gains, (k,))
    return res.values[f"DCG@{k}"]


# ---- the study ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyModel:
    """A row of the study: display name, `RECOMMENDERS` type, the grid points to tune over, and
    which propensity its fit (and its tuning) sees: "estimated" (item popularity^η from the
    clicks) or "oracle" (the true θ the exposure was drawn with)."""

    name: str
    type: str
    points: tuple[dict[str, Any], ...] = ({},)
    propensity: Literal["estimated", "oracle"] = "estimated"

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a model needs a non-empty name")
        if self.propensity not in ("estimated", "oracle"):
            raise ConfigError(
                f"model {self.name!r}: propensity must be 'estimated' or 'oracle', "
                f"got {self.propensity!r}"
            )
        if not self.points:
            raise ConfigError(f"model {self.name!r}: at least one parameter point is needed")

    def __hash__(self) -> int:  # points hold dicts
        return hash((self.name, self.type, self.propensity, repr(self.points)))


@dataclass(frozen=True)
class StudySettings:
    """Every setting of the study (world, exposure, tuning, evaluation); checked when built,
    before any work, with a `ConfigError` naming the setting."""

    strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    n_users: int = 1000
    n_items: int = 300
    n_topics: int = 20
    eps: float = 0.1
    rating_marginals: tuple[float, ...] = SCHNABEL_MARGINALS
    popularity_exponent: float = 0.6
    exposure_rate: float = 0.1
    rating_alpha: float = 0.25
    world_seed: int = 0
    resample_world: bool = False
    propensity_eta: float = 0.5
    propensity_normalize: Literal["max", "users"] = "max"
    val_fraction: float = 0.1
    val_repeats: int = 1
    val_negatives: int = 100
    val_k: int = 5
    k: int = 5
    n_test_items: int = 16
    uniform_ratings: int = 800
    baseline: str = "WMF"
    test: Literal["t", "fisher", "bootstrap"] = "t"
    workers: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "strengths", tuple(float(s) for s in self.strengths))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "rating_marginals", tuple(float(p) for p in self.rating_marginals))
        _check_size(self.n_users, self.n_items)
        if not self.strengths:
            raise ConfigError("strengths must list at least one bias strength")
        for s in self.strengths:
            if not (math.isfinite(s) and 0.0 <= s <= _MAX_STRENGTH):
                raise ConfigError(f"strengths must be in [0, {_MAX_STRENGTH:g}], got {s}")
        if len(set(self.strengths)) != len(self.strengths):
            raise ConfigError(f"strengths must be distinct, got {list(self.strengths)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"seeds must be distinct ints >= 0, got {list(self.seeds)}")
        _check_marginals(self.rating_marginals)
        checks: list[tuple[str, bool, str]] = [
            ("n_topics", self.n_topics >= 1, ">= 1"),
            ("eps", 0.0 <= self.eps <= 1.0, "in [0, 1]"),
            ("popularity_exponent", 0.0 <= self.popularity_exponent <= 10.0, "in [0, 10]"),
            ("exposure_rate", 0.0 < self.exposure_rate <= 1.0, "in (0, 1]"),
            ("rating_alpha", 0.0 < self.rating_alpha <= 1.0, "in (0, 1]"),
            ("propensity_eta", 0.0 <= self.propensity_eta <= 10.0, "in [0, 10]"),
            ("val_fraction", 0.0 < self.val_fraction < 1.0, "in (0, 1)"),
            ("val_repeats", 1 <= self.val_repeats <= 100, "in [1, 100]"),
            ("val_negatives", self.val_negatives >= 1, ">= 1"),
            ("val_k", 1 <= self.val_k <= self.n_items, f"in [1, n_items={self.n_items}]"),
            ("k", 1 <= self.k < self.n_items, f"in [1, n_items={self.n_items})"),
            (
                "n_test_items",
                self.k <= self.n_test_items <= self.n_items,
                f"in [k={self.k}, n_items={self.n_items}]",
            ),
            ("workers", 1 <= self.workers <= 64, "in [1, 64]"),
            (
                "uniform_ratings",
                1 <= self.uniform_ratings <= self.n_users * self.n_items,
                f"in [1, n_users x n_items = {self.n_users * self.n_items}]",
            ),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ConfigError(f"{name} must be {what}, got {getattr(self, name)!r}")
        if self.propensity_normalize not in ("max", "users"):
            raise ConfigError(
                f"propensity_normalize must be 'max' or 'users', got {self.propensity_normalize!r}"
            )
        if self.test not in ("t", "fisher", "bootstrap"):
            raise ConfigError(f"test must be 't', 'fisher' or 'bootstrap', got {self.test!r}")
        # the expected clicks of the sparsest case (uniform exposure) must leave something to fit
        mean_r = float(
            np.dot(
                self.rating_marginals,
                graded_relevance(np.arange(1, 6), eps=self.eps).astype(np.float64),
            )
        )
        expected = self.exposure_rate * mean_r * self.n_users * self.n_items
        if expected < 2 * self.n_users:
            raise ConfigError(
                f"about {expected:.0f} expected clicks at strength 0 for {self.n_users} users "
                "(fewer than 2 per user): raise exposure_rate or n_items"
            )

    def world(self, seed: int) -> World:
        """The preference world of `seed` (the same for every seed unless `resample_world`)."""
        rs = [self.world_seed, seed] if self.resample_world else [self.world_seed]
        return _world(self, tuple(rs))

    def check_models(self, models: Sequence[StudyModel]) -> None:
        """Model names unique, the baseline among them, and every type registered."""
        from rankloop.recsys.models import RECOMMENDERS

        names = [m.name for m in models]
        if not names:
            raise ConfigError("the study needs at least one model")
        if len(set(names)) != len(names):
            raise ConfigError(f"model names must be unique, got {names}")
        if self.baseline not in names:
            raise ConfigError(f"baseline {self.baseline!r} is not one of the models {names}")
        for m in models:
            RECOMMENDERS.get(m.type, where=f"model {m.name!r}")


@functools.lru_cache(maxsize=4)
def _world(settings: StudySettings, rs: tuple[int, ...]) -> World:
    return make_world(
        settings.n_users,
        settings.n_items,
        n_topics=settings.n_topics,
        eps=settings.eps,
        rating_marginals=settings.rating_marginals,
        popularity_exponent=settings.popularity_exponent,
        random_state=list(rs),
    )


@dataclass(frozen=True, eq=False)
class _Cell:
    world: World
    feedback: Feedback
    estimated: Propensity
    test_users: np.ndarray
    test_items: np.ndarray
    exposure_log: Interactions  # O, for the models that learn from the exposure log (DR-JL)
    uniform: Interactions  # star ratings on uniformly random pairs (the uniform-slice models)


def _estimate(settings: StudySettings, clicks: Interactions) -> np.ndarray:
    return popularity_propensity(
        clicks, eta=settings.propensity_eta, normalize=settings.propensity_normalize
    )


@functools.lru_cache(maxsize=8)
def _cell(settings: StudySettings, strength: float, seed: int) -> _Cell:
    """The world, feedback, estimated propensity and MAR test set of (strength, seed)."""
    world = settings.world(seed)
    theta = exposure_propensity(
        world, strength, exposure_rate=settings.exposure_rate, rating_alpha=settings.rating_alpha
    )
    fb = sample_feedback(world, theta, random_state=[settings.world_seed, seed], strength=strength)
    users, items = mar_test_items(
        world, settings.n_test_items, random_state=[settings.world_seed, seed]
    )
    exposure_log = Interactions.from_dense(ratings=fb.exposure.astype(np.float32), kind="implicit")
    return _Cell(
        world, fb, _estimate(settings, fb.clicks), users, items, exposure_log,
        uniform_slice(world, settings.uniform_ratings, random_state=[settings.world_seed, seed]),
    )  # fmt: skip


def uniform_slice(
    world: World, n_ratings: int, *, random_state: int | Sequence[int]
) -> Interactions:
    """`n_ratings` star ratings on pairs drawn uniformly without replacement (a MAR sample, like
    Coat's 5% slice that AutoDebias trains on), from a stream of its own."""
    n_u, n_i = world.shape
    if not 1 <= n_ratings <= n_u * n_i:
        raise RankloopError(f"uniform_ratings must be in [1, {n_u * n_i}], got {n_ratings}")
    cells = _seed_rng(random_state, 4).choice(n_u * n_i, n_ratings, replace=False)
    u, i = cells // n_i, cells % n_i
    return Interactions.from_triples(
        users=u, items=i, values=world.ratings[u, i].astype(np.float32), n_users=n_u,
        n_items=n_i, kind="explicit",
    )  # fmt: skip


def _tune_job(settings: StudySettings, strength: float, model: StudyModel) -> dict[str, Any]:
    from rankloop.recsys.tuning import tune_recommender, validation_splits

    seed = settings.seeds[0]
    cell = _cell(settings, strength, seed)
    prop: Callable[[Interactions], Propensity] = (
        (lambda kept: cell.feedback.theta)
        if model.propensity == "oracle"
        else (lambda kept: _estimate(settings, kept))
    )
    splits = validation_splits(
        cell.feedback.clicks,
        prop,
        fraction=settings.val_fraction,
        repeats=settings.val_repeats,
        random_state=seed,
    )
    t0 = time.perf_counter()
    tuned = tune_recommender(
        model.type,
        list(model.points),
        splits,
        k=settings.val_k,
        n_negatives=settings.val_negatives,
        random_state=seed,
        where=f"model {model.name!r}",
        exposure=cell.exposure_log,
        uniform=cell.uniform,
    )
    return {**asdict(tuned), "seconds": time.perf_counter() - t0}


def _eval_job(
    settings: StudySettings, strength: float, seed: int, model: StudyModel, params: dict
) -> dict[str, float]:
    from rankloop.recsys.models import fit_recommender, make_recommender

    cell = _cell(settings, strength, seed)
    prop = cell.feedback.theta if model.propensity == "oracle" else cell.estimated
    rec = make_recommender(model.type, params, random_state=seed, where=f"model {model.name!r}")
    t0 = time.perf_counter()
    fit_recommender(
        rec, cell.feedback.clicks, prop, exposure=cell.exposure_log, uniform=cell.uniform
    )
    fit_s = time.perf_counter() - t0
    k = settings.k
    truth = true_dcg(rec, cell.world, cell.feedback.clicks, k=k)
    mar = mar_dcg(rec, cell.world, cell.test_users, cell.test_items, k=k)
    return {
        f"nDCG@{k}": float(truth[f"nDCG@{k}"].mean()),
        f"DCG@{k}": float(truth[f"DCG@{k}"].mean()),
        f"MAR-DCG@{k}": float(mar.mean()),
        "fit_seconds": fit_s,
    }


def world_stats(settings: StudySettings, strength: float, seed: int) -> dict[str, float]:
    """What the bias does at (strength, seed): exposures, clicks, how exposure leans to popular
    and to relevant items, and how well the popularity estimate tracks the true θ at clicks."""
    from scipy.stats import spearmanr

    cell = _cell(settings, strength, seed)
    w, fb = cell.world, cell.feedback
    o = fb.exposure
    top = w.popularity >= np.quantile(w.popularity, 0.9)
    u, i, _ = fb.clicks.to_triples()
    est = np.asarray(cell.estimated)[i]
    true = fb.theta[u, i]
    constant = len(u) < 3 or np.ptp(est) == 0 or np.ptp(true) == 0  # e.g. uniform θ at s = 0
    rho = float("nan") if constant else spearmanr(est, true).statistic
    return {
        "exposures": int(o.sum()),
        "clicks": int(fb.clicks.nnz),
        "theta_min": float(fb.theta.min()),
        "theta_max": float(fb.theta.max()),
        "exposure_share_top10pct_items": float(o[:, top].sum() / max(1, o.sum())),
        "mean_R_exposed": float(w.relevance[o].mean()) if o.any() else 0.0,
        "mean_R_all": float(w.relevance.mean()),
        "spearman_estimated_vs_true_theta_at_clicks": float(rho),
    }


def _run_jobs(
    fn: Callable[..., Any], jobs: list[tuple], workers: int, desc: str, progress: bool
) -> list[Any]:
    """`fn(*job)` for every job, in order; over a spawn process pool when `workers` > 1."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=desc, disable=not progress)
    out: list[Any] = [None] * len(jobs)
    if workers <= 1:
        for n, job in enumerate(jobs):
            out[n] = fn(*job)
            bar.update()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=_worker_init
        ) as pool:
            futures = {pool.submit(fn, *job): n for n, job in enumerate(jobs)}
            for fut in as_completed(futures):
                out[futures[fut]] = fut.result()
                bar.update()
    bar.close()
    return out


_LIMITS: list[Any] = []


def _worker_init() -> None:
    """One BLAS/OpenMP thread per worker process: the workers already fill the cores."""
    from threadpoolctl import threadpool_limits

    _LIMITS.append(threadpool_limits(1))


@dataclass
class StudyResult:
    """Per (strength, seed, model) metrics, tuning per (strength, model), the summary per
    strength (mean, std, paired Δ and p vs the baseline over seeds) and world statistics."""

    settings: StudySettings
    models: list[StudyModel]
    per_seed: dict[str, dict[str, dict[str, dict[str, float]]]]
    tuning: dict[str, dict[str, dict[str, Any]]]
    summary: dict[str, dict[str, dict[str, Any]]]
    worlds: dict[str, dict[str, dict[str, float]]]
    seconds: float = 0.0
    metrics: list[str] = field(default_factory=list)

    def table_markdown(self, metric: str | None = None) -> str:
        """Rows: models; columns: strengths; cells: mean ± std over seeds, and Δ vs the
        baseline with the paired test's p."""
        metric = metric or self.metrics[0]
        st = self.settings
        head = ["model", *(f"s = {s:g}" for s in st.strengths)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in self.models:
            cells = [m.name]
            for s in st.strengths:
                row = self.summary[f"{s:g}"][m.name]
                cell = f"{row[metric]['mean']:.4f} ± {row[metric]['std']:.4f}"
                if m.name != st.baseline:
                    p = row["p"][metric]
                    ptxt = "-" if p is None or not math.isfinite(p) else f"{p:.2g}"
                    cell += f"; Δ {row['delta'][metric]:+.4f} (p {ptxt})"
                cells.append(cell)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _summarise(
    settings: StudySettings,
    models: Sequence[StudyModel],
    per_seed: dict[str, dict[str, dict[str, dict[str, float]]]],
    metrics: list[str],
) -> dict[str, dict[str, dict[str, Any]]]:
    from rankloop.eval import compare_values

    out: dict[str, dict[str, dict[str, Any]]] = {}
    seeds = [str(s) for s in settings.seeds]
    for s in settings.strengths:
        key = f"{s:g}"
        vals = {
            m.name: {
                met: np.array([per_seed[key][sd][m.name][met] for sd in seeds]) for met in metrics
            }
            for m in models
        }
        table = None
        if len(seeds) >= 2:
            table = compare_values(
                vals, settings.baseline, test=settings.test, unit_ids=seeds, unit="seeds"
            )
        base = vals[settings.baseline]
        rows: dict[str, dict[str, Any]] = {}
        for m in models:
            v = vals[m.name]
            rows[m.name] = {
                **{
                    met: {
                        "mean": float(v[met].mean()),
                        "std": float(v[met].std(ddof=1)) if len(seeds) > 1 else 0.0,
                    }
                    for met in metrics
                },
                "delta": {met: float((v[met] - base[met]).mean()) for met in metrics},
                "delta_std": {
                    met: float((v[met] - base[met]).std(ddof=1)) if len(seeds) > 1 else 0.0
                    for met in metrics
                },
                "p": {
                    met: (None if table is None else table.pvalue[m.name][met]) for met in metrics
                },
                "fit_seconds": float(
                    np.mean([per_seed[key][sd][m.name]["fit_seconds"] for sd in seeds])
                ),
            }
        out[key] = rows
    return out


def run_study(
    settings: StudySettings, models: Sequence[StudyModel], *, progress: bool = True
) -> StudyResult:
    """Tune (per strength, on the first seed), fit (per seed) and evaluate every model against
    the known truth at every bias strength; see the module docstring."""
    settings.check_models(models)
    models = list(models)
    t0 = time.perf_counter()
    for s in settings.strengths:  # generate every cell once up front: fails fast on a bad world
        for seed in settings.seeds[:1]:
            _cell(settings, s, seed)
    tune_jobs = [(settings, s, m) for s in settings.strengths for m in models]
    tuned = _run_jobs(_tune_job, tune_jobs, settings.workers, "tune (strength x model)", progress)
    tuning: dict[str, dict[str, dict[str, Any]]] = {f"{s:g}": {} for s in settings.strengths}
    for (_, s, m), t in zip(tune_jobs, tuned):
        tuning[f"{s:g}"][m.name] = t
    eval_jobs = [
        (settings, s, seed, m, tuning[f"{s:g}"][m.name]["best_params"])
        for s in settings.strengths
        for seed in settings.seeds
        for m in models
    ]
    evaluated = _run_jobs(
        _eval_job, eval_jobs, settings.workers, "fit+evaluate (strength x seed x model)", progress
    )
    per_seed: dict[str, dict[str, dict[str, dict[str, float]]]] = {
        f"{s:g}": {str(seed): {} for seed in settings.seeds} for s in settings.strengths
    }
    for (_, s, seed, m, _), res in zip(eval_jobs, evaluated):
        per_seed[f"{s:g}"][str(seed)][m.name] = res
    k = settings.k
    metrics = [f"nDCG@{k}", f"DCG@{k}", f"MAR-DCG@{k}"]
    worlds = {
        f"{s:g}": {str(seed): world_stats(settings, s, seed) for seed in settings.seeds}
        for s in settings.strengths
    }
    summary = _summarise(settings, models, per_seed, metrics)
    return StudyResult(
        settings,
        models,
        per_seed,
        tuning,
        summary,
        worlds,
        seconds=time.perf_counter() - t0,
        metrics=metrics,
    )
