"""Recommendation feedback loops: a rating-data world and the recommender and bandit learners.

`RecWorld` ("recommend") is the bandits' semi-synthetic rating world
(`rankloop.bandits.envs.ratings_world`) run as a loop: the truth is a WMF fitted on every liked
rating (Coat: train ∪ MAR test), the platform's own WMF on the logged ratings gives the
candidates (top-N by inner product, through the shared FAISS `VectorIndex`) and the bandits'
context, and the logged likes are what a recommender starts from. Options: item drift (a click
logit random walk) and popularity-dependent attention. Held-out measures: the MAR-test DCG@5 of
the recsys papers (Coat only) and the DCG@5 of every user's top 5 under the known truth.

Learners: "recommender" refits a `rankloop.recsys` model on the logged likes plus every click so
far; "bandit" serves and learns session by session with a `rankloop.bandits` slate policy.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from rankloop._runtime import check_registry_params
from rankloop.bandits.envs import CLICK_MODELS, EnvConfig, World, ratings_world, synthetic_world
from rankloop.bandits.policies import POLICIES, InSlateThompson, SlatePolicy, TopK
from rankloop.bandits.policies.base import FEEDBACK
from rankloop.bandits.simulate import POLICY_RESERVED, build_policy
from rankloop.clicks.models import make_model
from rankloop.data.interactions import Interactions
from rankloop.data.ratings import MNARDataset
from rankloop.embed.index import VectorIndex
from rankloop.errors import ConfigError, RankloopError
from rankloop.loop.base import LEARNERS, WORLDS, Learner, LoopLog, LoopWorld

__all__ = ["BanditLearner", "RecWorld", "RecommenderLearner", "dcg_at"]

DATASETS = ("coat", "movielens-100k", "synthetic")
_DRIFT_STREAM = 99  # second entry of the drift seeds [random_state, 99, round]
_INITIAL_STREAM = 98  # ... and of the synthetic world's initial log
_SYNTHETIC_EXPOSURE = 10  # items each synthetic user was shown before the loop
_P_CLIP = 1e-6


def _int(value: Any, name: str, low: int) -> int:
    """`value` as an int >= `low`, else a ConfigError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _float(
    value: Any,
    name: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
) -> float:
    """`value` as a finite float within the given bounds, else a ConfigError naming `name`."""
    number = not isinstance(value, bool) and isinstance(
        value, int | float | np.integer | np.floating
    )
    if (
        number
        and math.isfinite(value)
        and (ge is None or value >= ge)
        and (gt is None or value > gt)
        and (lt is None or value < lt)
    ):
        return float(value)
    bounds = " and ".join(
        f"{op} {b}" for op, b in ((">=", ge), (">", gt), ("<", lt)) if b is not None
    )
    raise ConfigError(
        f"{name} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}"
    )


def dcg_at(gains: np.ndarray, k: int) -> np.ndarray:
    """(n,) DCG@k of rows of gains in ranked order: Σ_{r<=k} g_r / log2(r + 1)."""
    g = gains[:, :k]
    return g @ (1.0 / np.log2(np.arange(2, g.shape[1] + 2)))


def _popularity_attention(a: np.ndarray, popularity: np.ndarray, gamma: float) -> np.ndarray:
    """min(c·a_ui·w_i, 1) with w_i = ((pop_i + 1) / mean(pop + 1))^gamma and c found by bisection
    so that the mean over all (user, item) pairs stays mean(a)."""
    pop = np.asarray(popularity, np.float64) + 1.0
    aw = a * (pop / pop.mean())[None, :] ** gamma
    target = float(a.mean())

    def mean_at(c: float) -> float:
        return float(np.minimum(c * aw, 1.0).mean())

    lo = hi = target / float(aw.mean())  # unclipped, this c keeps the mean exactly
    while mean_at(hi) < target:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_at(mid) < target else (lo, mid)
    return np.minimum(hi * aw, 1.0)


def _synthetic_log(world: World, random_state: int) -> Interactions:
    """What a synthetic platform logged before the loop: each user saw `_SYNTHETIC_EXPOSURE` items
    drawn (without replacement) in proportion to popularity and clicked each with its truth."""
    rng = np.random.default_rng([random_state, _INITIAL_STREAM])
    m = min(_SYNTHETIC_EXPOSURE, world.n_items)
    p = world.popularity / world.popularity.sum()
    seen = np.stack(
        [rng.choice(world.n_items, m, replace=False, p=p) for _ in range(world.n_users)]
    )
    users = np.repeat(np.arange(world.n_users), m)
    clicked = rng.random(seen.shape) < world.attractiveness[users.reshape(seen.shape), seen]
    return Interactions.from_triples(
        users=users[clicked.ravel()],
        items=seen[clicked],
        n_users=world.n_users,
        n_items=world.n_items,
        kind="implicit",
        user_ids=[f"u{i}" for i in range(world.n_users)],
        item_ids=world.item_ids,
        name="synthetic/initial",
    )


@WORLDS.register("recommend")
class RecWorld(LoopWorld):
    """Users and items of a rating data set; clicks from the WMF truth through a click model.

    dataset: "coat" (held-out MAR-test DCG@5 available), "movielens-100k" (the platform logged a
    random half of the ratings, as in `ratings_world`) or "synthetic" (`synthetic_world` with
    `n_users` x `n_items` and `factors` as its dimension; its initial log is simulated).
    factors, temperature, base_ctr, like_threshold: passed to the world builder (see
    `ratings_world`): the truth is sigmoid(temperature·z + b) with mean `base_ctr`.
    n_candidates: each user's candidates are the platform's top-N items by its own (round-0)
    WMF vectors, best first; None = every item, in that order.
    click_model: "pbm" (examination (1/rank)^eta) or "cascade".
    drift: std per round of each item's click-logit random walk; the offset in round r >= 1 is
    Σ_{t=1..r} drift·ε_t with ε_t ~ N(0, 1) per item from `default_rng([random_state, 99, t])`.
    popularity_attention: gamma; the static truth becomes min(c·a_ui·w_i, 1) with
    w_i = ((pop_i + 1) / mean(pop + 1))^gamma (pop = `popularity`: ratings per item in the
    platform's log; synthetic: item-factor norm) and c set by bisection so that the mean over all
    (user, item) pairs is unchanged (applied before drift; gamma < 0 favours niche items).
    n_users, n_items: sizes of the synthetic world (ignored otherwise).
    """

    def __init__(
        self,
        dataset: str = "coat",
        factors: int = 16,
        temperature: float = 2.0,
        base_ctr: float = 0.1,
        like_threshold: float = 4.0,
        n_candidates: int | None = None,
        click_model: str = "pbm",
        eta: float = 1.0,
        drift: float = 0.0,
        popularity_attention: float = 0.0,
        n_users: int = 50,
        n_items: int = 40,
        random_state: int = 0,
    ) -> None:
        if dataset not in DATASETS:
            raise ConfigError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        factors = _int(factors, "factors", 1)
        temperature = _float(temperature, "temperature", gt=0.0)
        base_ctr = _float(base_ctr, "base_ctr", gt=0.0, lt=1.0)
        like_threshold = _float(like_threshold, "like_threshold")
        if n_candidates is not None:
            n_candidates = _int(n_candidates, "n_candidates", 1)
        if click_model not in CLICK_MODELS:
            raise ConfigError(
                f"click_model must be one of {sorted(CLICK_MODELS)}, got {click_model!r}"
            )
        eta = _float(eta, "eta", ge=0.0)
        drift = _float(drift, "drift", ge=0.0)
        popularity_attention = _float(popularity_attention, "popularity_attention")
        n_users, n_items = _int(n_users, "n_users", 2), _int(n_items, "n_items", 2)
        random_state = _int(random_state, "random_state", 0)

        kw = dict(temperature=temperature, base_ctr=base_ctr, random_state=random_state)
        if dataset == "synthetic":
            base = synthetic_world(n_users, n_items, factors, **kw)
            data = MNARDataset(train=_synthetic_log(base, random_state), test=None, name=dataset)
        elif dataset == "coat":
            from rankloop.data.ratings import load_coat

            data = load_coat()
            if data.test is None or data.test.nnz == 0:
                raise RankloopError(
                    "coat: the MAR test ratings (test.ascii) are missing or empty; the world's "
                    "truth and its held-out dcg@5 need them"
                )
            base = ratings_world(dataset, factors=factors, like_threshold=like_threshold, **kw)
        else:
            from rankloop.data.ratings import load_movielens

            ratings = load_movielens(dataset).to_interactions()
            logged, _ = ratings.split(0.5, random_state=random_state)  # as ratings_world splits
            data = MNARDataset(train=logged, test=None, name=dataset)
            base = ratings_world(dataset, factors=factors, like_threshold=like_threshold, **kw)
        if n_candidates is not None and n_candidates > base.n_items:
            raise ConfigError(
                f"n_candidates ({n_candidates}) exceeds the {base.n_items} items of {dataset}"
            )
        self.name = dataset
        self.base = base
        self.data = data
        train = data.train
        self.initial_likes = (
            train.binarize(like_threshold) if train.kind == "explicit" else train
        )  # what a recommender starts from: the platform's logged likes (implicit 0/1)
        self.test = data.test
        self.user_ids = np.asarray(train.user_ids, dtype=str)
        self.item_ids = np.asarray(base.item_ids, dtype=str)
        self.popularity = base.popularity
        self.click_model = make_model(
            CLICK_MODELS[click_model], **({"eta": eta} if click_model == "pbm" else {})
        )
        self.n_candidates = n_candidates or base.n_items
        self.drift = drift
        self.random_state = random_state
        truth = base.attractiveness
        if popularity_attention != 0:
            truth = _popularity_attention(truth, base.popularity, popularity_attention)
        self.truth = truth  # (n_users, n_items) attractiveness in round 0
        index = VectorIndex(base.item_vectors.shape[1], "Flat", metric=base.metric)
        index.add(list(base.item_ids), base.item_vectors)
        _, self._candidates = index.search_rows(base.user_vectors, self.n_candidates)
        self._offsets = [np.zeros(base.n_items)]  # cumulative drift offsets per round, lazily
        self.info = {
            **base.info,
            "kind": "recommend",
            "n_candidates": self.n_candidates,
            "click_model": click_model,
            "eta": eta,
            "drift": drift,
            "popularity_attention": popularity_attention,
            "random_state": random_state,
            "initial_likes": int(self.initial_likes.nnz),
            "mar_test": self.test is not None,
        }

    def candidates(self, users: np.ndarray) -> np.ndarray:
        """(n, N) the platform's top-N items per user, best first."""
        return self._candidates[np.asarray(users)].copy()

    def context(self, users: np.ndarray) -> np.ndarray:
        """(n, d) the bandit context of each user (platform user vectors plus an intercept)."""
        return self.base.user_features[np.asarray(users)]

    def drift_offsets(self, round_: int) -> np.ndarray:
        """(n_items,) each item's click-logit offset in round `round_` (0 up to round 0)."""
        r = max(int(round_), 0)
        while len(self._offsets) <= r:
            t = len(self._offsets)
            step = np.random.default_rng([self.random_state, _DRIFT_STREAM, t]).standard_normal(
                self.n_items
            )
            self._offsets.append(self._offsets[-1] + self.drift * step)
        return self._offsets[r]

    def attractiveness(self, users: np.ndarray, items: np.ndarray, round_: int) -> np.ndarray:
        """(n, L) P(click | examined) in round `round_` (drift applied); 0 where item is -1."""
        items = np.asarray(items)
        safe = np.maximum(items, 0)
        p = self.truth[np.asarray(users)[:, None], safe]
        if self.drift > 0 and round_ > 0:
            q = np.clip(p, _P_CLIP, 1 - _P_CLIP)
            p = 1.0 / (1.0 + np.exp(-(np.log(q) - np.log1p(-q) + self.drift_offsets(round_)[safe])))
        return np.where(items >= 0, p, 0.0)

    def oracle_items(
        self, users: np.ndarray, candidates: np.ndarray, k: int, round_: int = 0
    ) -> np.ndarray:
        """(n, k) the best `k` candidates by true attractiveness in `round_`, best first (the
        optimal list under PBM and the cascade model); -1 where a row has fewer candidates."""
        attr = np.where(candidates >= 0, self.attractiveness(users, candidates, round_), -np.inf)
        cols = np.argsort(-attr, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(candidates, cols, axis=1)
        return np.where(np.isneginf(np.take_along_axis(attr, cols, axis=1)), -1, best)

    def true_dcg(self, learner: Learner, k: int = 5, round_: int = 0) -> float:
        """Mean over all users of DCG@k of the learner's top k among the candidates with the
        true attractiveness of `round_` as gain, divided by the ideal (oracle) DCG@k."""
        users = np.arange(self.n_users)
        cands = self.candidates(users)
        order = np.argsort(-learner.scores(self, users, cands), axis=1, kind="stable")[:, :k]
        shown = np.take_along_axis(cands, order, axis=1)
        ideal = self.oracle_items(users, cands, k, round_)
        got = dcg_at(self.attractiveness(users, shown, round_), k)
        best = dcg_at(self.attractiveness(users, ideal, round_), k)
        return float(np.mean(got / np.maximum(best, 1e-300)))

    def evaluate(self, learner: Learner, round_: int = 0) -> dict[str, float]:
        """{"dcg@5": MAR-test DCG@5, authors' protocol (Coat only), "true_dcg@5": `true_dcg`}.

        The MAR-test measure scores each test user's random-item ratings with the learner's
        `scorer(world)` (any object with `score(users, items)`), or with its `scores` one pair
        at a time when it has none. `round_` picks the truth under drift (default round 0).
        """
        from rankloop.recsys.evaluate import evaluate_authors

        out: dict[str, float] = {}
        if self.test is not None:
            scorer = (
                learner.scorer(self) if hasattr(learner, "scorer") else _PairScorer(learner, self)
            )
            out["dcg@5"] = evaluate_authors(scorer, self.test, ks=(5,)).mean["DCG@5"]
        out["true_dcg@5"] = self.true_dcg(learner, 5, round_)
        return out


class _PairScorer:
    """A learner's `scores` as a recsys scorer: one candidate per (user, item) pair."""

    def __init__(self, learner: Learner, world: LoopWorld) -> None:
        self.learner, self.world = learner, world

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Score of each (users[j], items[j]) pair."""
        return self.learner.scores(self.world, np.asarray(users), np.asarray(items)[:, None])[:, 0]


def _rec_world(world: LoopWorld, who: str) -> RecWorld:
    if not isinstance(world, RecWorld):
        raise RankloopError(
            f"learner {who!r} needs a 'recommend' world, got {type(world).__name__}"
        )
    return world


@LEARNERS.register("recommender")
class RecommenderLearner(Learner):
    """A `rankloop.recsys` model retrained on the likes logged so far (a batch feedback loop).

    Round 0 serves the model fitted on the world's initial likes (Coat: train ratings >=
    like_threshold). After every `retrain_every`-th round it is refitted from scratch on those
    likes (when `include_initial`) ∪ every clicked (user, item) pair of the log, as binary
    implicit feedback; rounds with no click to learn from keep the current model. Models that
    take exposure propensities (relmf, ubpr) get `estimate_propensity(propensity, world.data,
    clicks, **propensity_options)`, by default the popularity estimator θ_i = (n_i / max n)^0.5
    over the training clicks. Torch models default to the CPU (bit-for-bit reproducible).
    Model seeds: `random_state` at the start, then an int drawn from each round's learn rng.
    """

    def __init__(
        self,
        model: str = "wmf",
        params: dict[str, Any] | None = None,
        propensity: str = "popularity",
        propensity_options: dict[str, Any] | None = None,
        include_initial: bool = True,
        retrain_every: int = 1,
    ) -> None:
        from rankloop.recsys.models import RECOMMENDERS
        from rankloop.recsys.propensity import PROPENSITY_ESTIMATORS

        params = dict(params or {})
        check_registry_params(
            RECOMMENDERS, model, params, where_="learner 'recommender'", reserved=("random_state",)
        )
        if "device" in RECOMMENDERS.parameters(model):
            params.setdefault("device", "cpu")
        if propensity not in PROPENSITY_ESTIMATORS:
            raise ConfigError(
                f"propensity must be one of {PROPENSITY_ESTIMATORS}, got {propensity!r}"
            )
        if not isinstance(propensity_options, dict | None):
            raise ConfigError(f"propensity_options must be a mapping, got {propensity_options!r}")
        if not isinstance(include_initial, bool):
            raise ConfigError(f"include_initial must be a bool, got {include_initial!r}")
        self.model = model
        self.params = params
        self.propensity = propensity
        self.propensity_options = dict(propensity_options or {})
        self.include_initial = include_initial
        self.retrain_every = _int(retrain_every, "retrain_every", 1)
        self.model_: Any = None

    def _fit(self, world: RecWorld, clicks: Interactions, seed: int) -> None:
        from rankloop.recsys.models import fit_inputs, fit_recommender, make_recommender
        from rankloop.recsys.propensity import estimate_propensity

        model = make_recommender(self.model, self.params, random_state=seed)
        theta = None
        if "propensity" in fit_inputs(model):
            theta = estimate_propensity(
                self.propensity, world.data, clicks, **self.propensity_options
            )
        self.model_ = fit_recommender(model, clicks, theta)

    def training_clicks(self, world: LoopWorld, log: LoopLog | None) -> Interactions:
        """Binary implicit feedback: the initial likes (round 0, or when `include_initial`) and
        every clicked (user, item) pair of `log`."""
        init = _rec_world(world, "recommender").initial_likes
        m = sp.csr_matrix(init.shape, dtype=np.float32)
        if log is None or self.include_initial:
            m = init.user_items.copy()
        if log is not None and len(log):
            rows, cols = np.nonzero(log.clicks & (log.items >= 0))
            ones = np.ones(len(rows), np.float32)
            m = m + sp.csr_matrix(
                (ones, (log.users[rows], log.items[rows, cols])), shape=init.shape
            )
        m = sp.csr_matrix(m)
        m.data[:] = 1.0
        return Interactions(
            user_items=m,
            kind="implicit",
            user_ids=init.user_ids,
            item_ids=init.item_ids,
            name="loop/clicks",
        )

    def start(self, world: LoopWorld, random_state: int) -> None:
        """Fit the round-0 model on the world's initial likes."""
        self._fit(_rec_world(world, "recommender"), self.training_clicks(world, None), random_state)

    def learn(self, world: LoopWorld, log: LoopLog, round_: int, rng: np.random.Generator) -> None:
        """Refit on the initial likes and every click so far, every `retrain_every` rounds."""
        if (round_ + 1) % self.retrain_every:
            return
        clicks = self.training_clicks(world, log)
        if clicks.nnz:
            self._fit(_rec_world(world, "recommender"), clicks, int(rng.integers(2**31)))

    def scores(self, world: LoopWorld, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(n, N) model scores of each (user, candidate) pair; -inf for -1 slots."""
        if self.model_ is None:
            raise RankloopError("RecommenderLearner: call start(world, random_state) first")
        cands = np.asarray(candidates)
        pairs = np.broadcast_to(np.asarray(users)[:, None], cands.shape)
        s = np.asarray(self.model_.score(pairs, np.maximum(cands, 0)), np.float64)
        return np.where(cands >= 0, s.reshape(cands.shape), -np.inf)

    def scorer(self, world: LoopWorld) -> Any:
        """The fitted recsys model (its `score(users, items)` is what the MAR test ranks by)."""
        if self.model_ is None:
            raise RankloopError("RecommenderLearner: call start(world, random_state) first")
        return self.model_


@LEARNERS.register("bandit")
class BanditLearner(Learner):
    """A `rankloop.bandits` slate policy as an online learner: one `select` per session on the
    user's context (the world's platform user vector) and candidates, one `update` with its clicks.

    `policy` is a `POLICIES` name (single-action policies run under `TopK`), `params` its
    hyper-parameters, `feedback` "all" (every shown slot counts as examined) or "cascade". The
    policy is built at the first session, when the list length k is known, seeded by the
    `random_state` of `start`; its own Generator (pickled with it) drives its exploration, so
    the runner's serve rng is not used. `scores` are exploitation scores that use no randomness:
    the ridge mean x'θ_a (linucb, lints, hybrid_linucb), the Beta posterior mean over slots
    (inslate_ts), else the policy's own scores on a copy; 0 for every item before any session.
    """

    online = True

    def __init__(
        self, policy: str = "linucb", params: dict[str, Any] | None = None, feedback: str = "all"
    ) -> None:
        params = dict(params or {})
        check_registry_params(
            POLICIES, policy, params, where_="learner 'bandit'", reserved=POLICY_RESERVED
        )
        if feedback not in FEEDBACK:
            raise ConfigError(f"feedback must be one of {FEEDBACK}, got {feedback!r}")
        self.policy = policy
        self.params = params
        self.feedback = feedback
        self.random_state = 0
        self.policy_: SlatePolicy | None = None

    def start(self, world: LoopWorld, random_state: int) -> None:
        """Remember the seed; the policy is built at the first session."""
        _rec_world(world, "bandit")
        self.random_state = int(random_state)
        self.policy_ = None

    def _built(self, world: LoopWorld, k: int) -> SlatePolicy:
        if self.policy_ is None:
            rec = _rec_world(world, "bandit")
            env = EnvConfig(n_candidates=max(rec.n_candidates, k), slate_size=k)
            self.policy_ = build_policy(
                self.policy,
                rec.base,
                env,
                params=self.params,
                feedback=self.feedback,
                random_state=self.random_state,
                where="learner 'bandit'",
            )
        elif getattr(self.policy_, "slate_size", k) != k:
            raise RankloopError(
                f"BanditLearner: built for lists of {self.policy_.slate_size}, asked for {k}"
            )
        return self.policy_

    def serve_one(self, world: LoopWorld, user: int, candidates: np.ndarray, k: int,
                  rng: np.random.Generator) -> np.ndarray:  # fmt: skip
        """(k,) item rows the policy selects for one user (-1 where it has too few candidates)."""
        policy = self._built(world, k)
        x = _rec_world(world, "bandit").context(np.array([user]))
        return policy.select(x, np.asarray(candidates)[None, :])[0]

    def update_one(self, world: LoopWorld, user: int, candidates: np.ndarray, shown: np.ndarray,
                   clicks: np.ndarray) -> None:  # fmt: skip
        """Feed one session's clicks back to the policy (applied per its `batch_size`)."""
        if self.policy_ is None:
            raise RankloopError("BanditLearner: update_one before any serve_one")
        x = _rec_world(world, "bandit").context(np.array([user]))
        self.policy_.update(x, np.asarray(shown)[None, :], np.asarray(clicks, np.float64)[None, :])

    def scores(self, world: LoopWorld, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(n, N) exploitation scores (see the class docstring); -inf for -1 slots."""
        cands = np.asarray(candidates)
        valid = cands >= 0
        if self.policy_ is None:
            return np.where(valid, 0.0, -np.inf)
        base = self.policy_.base if isinstance(self.policy_, TopK) else self.policy_
        x = _rec_world(world, "bandit").context(np.asarray(users))
        safe = np.maximum(cands, 0)
        if hasattr(base, "mean_and_variance"):
            s = base.mean_and_variance(x, safe)[0]
        elif isinstance(base, InSlateThompson):
            hits, tries = base.successes_.sum(axis=1), base.trials_.sum(axis=1)
            s = ((base.alpha + hits) / (base.alpha + base.beta + tries))[safe]
        else:
            s = copy.deepcopy(base).scores(x, safe)
        return np.where(valid, s, -np.inf)

    def scorer(self, world: LoopWorld) -> Any:
        """`scores` one (user, item) pair at a time (for the MAR-test measure)."""
        return _PairScorer(self, world)
