"""Semi-synthetic slate environments: real data gives the structure, simulation gives the clicks.

A `World` is the static part: who the users and items are, the true probability that a user
clicks an item once she examines it (`attractiveness`), the vectors used for candidate
generation, and the features a policy sees. Builders:

- `ratings_world` (a): a rating matrix (Coat; MovieLens 100K through the registry) → a WMF
  model (the recsys layer's `implicit` wrapper) fitted on all the liked ratings defines the
  truth; a second WMF fitted only on what the platform logged (Coat's self-selected training
  ratings, or a random part of MovieLens) gives the platform's user and item vectors, i.e. the
  candidate generator and the policy's context. So the policy learns from clicks what its own
  embedding gets wrong.
- `beir_world` (b): SciFact/NFCorpus test queries are users and documents are items; the
  attractiveness mixes the qrels grade with dense similarity (ULTRA's click noise, scaled by
  similarity), and candidates come from the shared encoder's embeddings.
- `synthetic_world`: random low-rank preferences, for tests.

`SlateEnv` runs a world: users arrive, candidate generation asks the shared FAISS
`VectorIndex` for the top-N items by embedding, the policy fills a slate, and clicks come from a
`rankloop.clicks` model (PBM or cascade) applied to the slate's attractiveness. Options: drift
(each item's click logit follows a random walk), cold start (a share of the items joins the index
during the run), and delayed feedback (see `FeedbackQueue`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from rankloop.clicks.models import ClickModel, make_model
from rankloop.clicks.probabilities import satisfaction_from_grades
from rankloop.embed.index import VectorIndex
from rankloop.errors import ConfigError, RankloopError

_P_CLIP = 1e-6
CLICK_MODELS = {"pbm": "pbm", "cascade": "cm", "cm": "cm"}


@dataclass(frozen=True, eq=False)
class World:
    """The static structure of a semi-synthetic environment (all arrays indexed by row).

    attractiveness: (n_users, n_items) P(click | examined), the truth.
    user_vectors / item_vectors: (·, D) float32 candidate-generation vectors (FAISS, `metric`).
    user_features: (n_users, d) the context a policy sees; arm_features: (n_items, p).
    popularity: (n_items,) prior popularity (what the exposure plots bucket items by).
    """

    name: str
    item_ids: list[str]
    attractiveness: np.ndarray
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    user_features: np.ndarray
    arm_features: np.ndarray
    popularity: np.ndarray
    metric: str = "ip"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        u, m = self.attractiveness.shape
        checks = {
            "item_ids": (len(self.item_ids), m),
            "user_vectors": (self.user_vectors.shape[0], u),
            "item_vectors": (self.item_vectors.shape[0], m),
            "user_features": (self.user_features.shape[0], u),
            "arm_features": (self.arm_features.shape[0], m),
            "popularity": (len(self.popularity), m),
        }
        for what, (got, want) in checks.items():
            if got != want:
                raise RankloopError(f"World {self.name!r}: {what} has {got} rows, expected {want}")
        if self.user_vectors.shape[1] != self.item_vectors.shape[1]:
            raise RankloopError(f"World {self.name!r}: user and item vectors differ in dimension")
        a = self.attractiveness
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise RankloopError(f"World {self.name!r}: attractiveness must be probabilities")

    @property
    def n_users(self) -> int:
        return self.attractiveness.shape[0]

    @property
    def n_items(self) -> int:
        return self.attractiveness.shape[1]

    @property
    def n_features(self) -> int:
        return self.user_features.shape[1]


def _with_bias(x: np.ndarray) -> np.ndarray:
    """Append a constant-1 column (the intercept of a linear policy)."""
    return np.hstack([x, np.ones((x.shape[0], 1), dtype=x.dtype)])


def _pca(x: np.ndarray, k: int, fit_on: np.ndarray | None = None) -> np.ndarray:
    """The first `k` principal components of `x` (basis fitted on `fit_on`, default `x`)."""
    from sklearn.decomposition import PCA

    base = x if fit_on is None else fit_on
    k = min(k, base.shape[0], base.shape[1])
    return PCA(n_components=k, svd_solver="full").fit(base).transform(x).astype(np.float64)


def _calibrate(z: np.ndarray, temperature: float, base_ctr: float) -> np.ndarray:
    """sigmoid(temperature·z + bias), with bias found by bisection so the mean is `base_ctr`."""
    if not 0.0 < base_ctr < 1.0:
        raise ConfigError(f"base_ctr must be in (0, 1), got {base_ctr}")
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (1.0 + np.exp(-(temperature * z + mid)))) < base_ctr:
            lo = mid
        else:
            hi = mid
    return 1.0 / (1.0 + np.exp(-(temperature * z + 0.5 * (lo + hi))))


def _wmf_factors(likes: Any, factors: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors of the recsys layer's WMF (implicit ALS) fitted on `likes`."""
    from rankloop.recsys.baselines import WMF

    model = WMF(
        factors=factors, regularization=0.1, alpha=10.0, iterations=15, random_state=random_state
    ).fit(likes)
    return model.user_factors_.astype(np.float64), model.item_factors_.astype(np.float64)


def ratings_world(
    dataset: str = "coat",
    *,
    factors: int = 16,
    arm_dim: int = 6,
    temperature: float = 2.0,
    base_ctr: float = 0.1,
    like_threshold: float = 4.0,
    logged_fraction: float = 0.5,
    path: str | None = None,
    random_state: int = 0,
) -> World:
    """World (a): truth from a WMF fitted on every liked rating; platform vectors from the logs.

    Coat: truth from train ∪ test ratings >= `like_threshold`, platform from train only (the
    self-selected log). MovieLens 100K: the platform sees a random `logged_fraction` of the
    ratings. Attractiveness = sigmoid(temperature·z + bias) of the standardised truth scores z,
    with the bias set so the mean attractiveness is `base_ctr`. Popularity = ratings per item
    in the platform's log.
    """
    from rankloop.data.ratings import load_coat, load_movielens

    if dataset == "coat":
        data = load_coat(path)
        if data.test is None:
            raise RankloopError("coat: the MAR test ratings (test.ascii) are missing")
        all_ratings = data.train.union(data.test)
        logged = data.train
    elif dataset in ("movielens-100k", "movielens-1m"):
        all_ratings = load_movielens(dataset, path).to_interactions()
        logged, _ = all_ratings.split(1.0 - logged_fraction, random_state=random_state)
    else:
        raise ConfigError(f"ratings_world: dataset must be coat or movielens-100k, got {dataset!r}")
    u_true, v_true = _wmf_factors(all_ratings.binarize(like_threshold), factors, random_state)
    scores = u_true @ v_true.T
    z = (scores - scores.mean()) / max(float(scores.std()), 1e-12)
    attractiveness = _calibrate(z, temperature, base_ctr)
    u_sys, v_sys = _wmf_factors(logged.binarize(like_threshold), factors, random_state + 1)
    return World(
        name=dataset,
        item_ids=list(all_ratings.item_ids),
        attractiveness=attractiveness,
        user_vectors=u_sys.astype(np.float32),
        item_vectors=v_sys.astype(np.float32),
        user_features=_with_bias(u_sys / max(float(np.linalg.norm(u_sys, axis=1).mean()), 1e-12)),
        arm_features=_pca(v_sys, arm_dim),
        popularity=logged.item_counts().astype(np.float64),
        metric="ip",
        info={
            "kind": "ratings",
            "dataset": dataset,
            "factors": factors,
            "temperature": temperature,
            "base_ctr": base_ctr,
            "like_threshold": like_threshold,
            "truth_ratings": int(all_ratings.nnz),
            "logged_ratings": int(logged.nnz),
        },
    )


def beir_world(
    dataset: str = "scifact",
    *,
    split: str = "test",
    model: str | None = None,
    n_features: int = 16,
    arm_dim: int = 6,
    eps: float = 0.1,
    n_candidates_popularity: int = 50,
) -> World:
    """World (b): queries with judgements are users, documents are items.

    Attractiveness = `eps·s + (1 - eps)(2^g - 1)/(2^gmax - 1)` with g the qrels grade (0 when
    unjudged) and s = max(cos(q, d), 0) the dense similarity: ULTRA's click noise, but larger
    for documents that look related. Context = the first `n_features` principal components of
    the query embedding (basis fitted on the documents) plus an intercept; arm features = the
    documents' first `arm_dim` components. Popularity = in how many users' top-N candidate
    lists a document appears (its a-priori exposure under pure embedding retrieval).
    """
    from rankloop.data.registry import load
    from rankloop.embed.encoders import Encoder

    if not 0.0 <= eps <= 1.0:
        raise ConfigError(f"eps must be in [0, 1], got {eps}")
    data = load(dataset, split=split)
    qids = [q for q in data.queries.ids if data.qrels.data.get(q)]
    if not qids:
        raise RankloopError(f"{dataset}/{split}: no query has judgements")
    queries = data.queries.subset(qids)
    encoder = Encoder(model, show_progress=False)
    docs = np.asarray(encoder.encode_corpus(data.corpus), dtype=np.float32)
    qvec = encoder.encode_queries(queries.texts)
    doc_row = {d: i for i, d in enumerate(data.corpus.ids)}
    grades = np.zeros((len(qids), len(docs)))
    for u, q in enumerate(qids):
        for d, g in data.qrels.data[q].items():
            if d in doc_row:
                grades[u, doc_row[d]] = max(g, 0)
    max_grade = max(int(grades.max()), 1)
    sim = np.clip(qvec.astype(np.float64) @ docs.T.astype(np.float64), 0.0, 1.0)
    attractiveness = eps * sim + (1.0 - eps) * satisfaction_from_grades(grades, max_grade)
    index = VectorIndex(docs.shape[1], "Flat", metric="ip")
    index.add(data.corpus.ids, docs)
    _, rows = index.search_rows(qvec, min(n_candidates_popularity, len(docs)))
    popularity = np.bincount(rows[rows >= 0], minlength=len(docs)).astype(np.float64)
    doc64 = docs.astype(np.float64)
    return World(
        name=dataset,
        item_ids=list(data.corpus.ids),
        attractiveness=attractiveness,
        user_vectors=qvec,
        item_vectors=docs,
        user_features=_with_bias(_pca(qvec.astype(np.float64), n_features, fit_on=doc64)),
        arm_features=_pca(doc64, arm_dim),
        popularity=popularity,
        metric="ip",
        info={
            "kind": "beir",
            "dataset": dataset,
            "split": split,
            "model": encoder.name,
            "eps": eps,
            "max_grade": max_grade,
            "judged_pairs": int((grades > 0).sum()),
        },
    )


def synthetic_world(
    n_users: int = 50,
    n_items: int = 40,
    dim: int = 6,
    *,
    arm_dim: int = 3,
    temperature: float = 2.0,
    base_ctr: float = 0.1,
    noise: float = 0.3,
    random_state: int = 0,
) -> World:
    """Random low-rank preferences (Gaussian factors); the platform sees them with noise."""
    rng = np.random.default_rng(random_state)
    u = rng.standard_normal((n_users, dim))
    v = rng.standard_normal((n_items, dim)) * rng.lognormal(0.0, 0.5, (n_items, 1))
    s = u @ v.T
    attractiveness = _calibrate((s - s.mean()) / s.std(), temperature, base_ctr)
    u_sys = u + noise * rng.standard_normal(u.shape)
    v_sys = v + noise * rng.standard_normal(v.shape)
    return World(
        name="synthetic",
        item_ids=[f"i{j}" for j in range(n_items)],
        attractiveness=attractiveness,
        user_vectors=u_sys.astype(np.float32),
        item_vectors=v_sys.astype(np.float32),
        user_features=_with_bias(u_sys / np.sqrt(dim)),
        arm_features=_pca(v_sys, arm_dim),
        popularity=np.linalg.norm(v, axis=1),
        info={"kind": "synthetic", "dim": dim, "noise": noise},
    )


WORLDS = {"ratings": ratings_world, "beir": beir_world, "synthetic": synthetic_world}


def build_world(spec: dict[str, Any]) -> World:
    """A world from a config mapping: `{type: ratings|beir|synthetic, ...builder kwargs}`."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in WORLDS:
        raise ConfigError(f"world type must be one of {sorted(WORLDS)}, got {kind!r}")
    try:
        return WORLDS[kind](**spec)
    except TypeError as e:
        raise ConfigError(f"world {kind!r}: {e}") from None


@dataclass
class EnvConfig:
    """Environment options (the `env:` block of a bandits config)."""

    n_candidates: int = 50
    slate_size: int = 5
    click_model: str = "pbm"  # pbm | cascade
    eta: float = 1.0  # PBM examination (1/rank)^eta
    drift: float = 0.0  # std of each item's click-logit random walk per 1,000 rounds
    cold_start: float = 0.0  # share of items absent at the start, joining the index later
    cold_start_rounds: int | None = None  # they join uniformly over these rounds (None: all)
    delay: int = 0  # rounds between an impression and its feedback reaching the policy
    index_factory: str = "Flat"

    def __post_init__(self) -> None:
        if self.n_candidates < 1 or self.slate_size < 1 or self.slate_size > self.n_candidates:
            raise ConfigError(
                f"need 1 <= slate_size ({self.slate_size}) <= n_candidates ({self.n_candidates})"
            )
        if self.click_model not in CLICK_MODELS:
            raise ConfigError(
                f"click_model must be one of {sorted(CLICK_MODELS)}, got {self.click_model!r}"
            )
        if self.drift < 0 or self.delay < 0 or not 0.0 <= self.cold_start < 1.0:
            raise ConfigError("need drift >= 0, delay >= 0 and 0 <= cold_start < 1")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> EnvConfig:
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown env option(s) {unknown}; known: {sorted(known)}")
        return cls(**raw)


class SlateEnv:
    """One run of a world: arrivals, FAISS candidate generation, slates, clicks, drift, cold start.

    Random streams are derived from `random_state` alone (arrivals, clicks, drift, cold-start
    schedule), so every policy run with the same seed faces the same users and the same click
    noise (common random numbers).
    """

    def __init__(self, world: World, config: EnvConfig, rounds: int, random_state: int = 0) -> None:
        if config.n_candidates > world.n_items:
            raise ConfigError(
                f"n_candidates ({config.n_candidates}) exceeds the world's {world.n_items} items"
            )
        self.world = world
        self.config = config
        self.rounds = rounds
        seeds = np.random.SeedSequence(random_state).spawn(4)
        self._arrival_rng, self._click_rng, self._drift_rng, cold_rng = (
            np.random.default_rng(s) for s in seeds
        )
        self.click_model: ClickModel = make_model(
            CLICK_MODELS[config.click_model],
            **({"eta": config.eta} if config.click_model == "pbm" else {}),
        )
        self.t = 0
        self.offsets = np.zeros(world.n_items)
        m = world.n_items
        n_cold = round(config.cold_start * m)
        self.arrival_round = np.zeros(m, dtype=np.int64)
        if n_cold:
            cold = cold_rng.choice(m, n_cold, replace=False)
            horizon = config.cold_start_rounds or rounds
            self.arrival_round[cold] = cold_rng.integers(1, max(horizon, 2), n_cold)
        self.index = VectorIndex(world.item_vectors.shape[1], config.index_factory, world.metric)
        self._index_items = np.zeros(0, dtype=np.int64)  # index row -> item row
        self._add_items(np.flatnonzero(self.arrival_round == 0))

    def _add_items(self, items: np.ndarray) -> None:
        if len(items):
            self.index.add([self.world.item_ids[i] for i in items], self.world.item_vectors[items])
            self._index_items = np.concatenate([self._index_items, items])

    @property
    def n_available(self) -> int:
        """Items in the candidate index now."""
        return len(self._index_items)

    def advance(self, n_rounds: int) -> None:
        """Move the clock: items due join the index; drift moves every item's click logit."""
        before, self.t = self.t, self.t + n_rounds
        due = np.flatnonzero((self.arrival_round > before) & (self.arrival_round <= self.t))
        self._add_items(due)
        if self.config.drift > 0:
            step = self.config.drift * np.sqrt(n_rounds / 1000.0)
            self.offsets += step * self._drift_rng.standard_normal(self.world.n_items)

    def arrive(self, n: int) -> np.ndarray:
        """(n,) user rows arriving now (uniform over users)."""
        return self._arrival_rng.integers(0, self.world.n_users, n)

    def context(self, users: np.ndarray) -> np.ndarray:
        """(n, d) the policy's view of the users."""
        return self.world.user_features[users]

    def candidates(self, users: np.ndarray) -> np.ndarray:
        """(n, N) item rows: the top-N items by embedding from the `VectorIndex` (-1 padded)."""
        k = min(self.config.n_candidates, self.n_available)
        _, rows = self.index.search_rows(self.world.user_vectors[users], k)
        items = np.where(rows >= 0, self._index_items[np.maximum(rows, 0)], -1)
        if k < self.config.n_candidates:
            items = np.pad(items, ((0, 0), (0, self.config.n_candidates - k)), constant_values=-1)
        return items

    def attractiveness(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(click | examined) of each (user, item) now (drift applied); 0 where item is -1."""
        safe = np.maximum(items, 0)
        p = self.world.attractiveness[users[:, None], safe]
        if self.config.drift > 0:
            logit = np.log(np.clip(p, _P_CLIP, 1 - _P_CLIP)) - np.log1p(
                -np.clip(p, _P_CLIP, 1 - _P_CLIP)
            )
            p = 1.0 / (1.0 + np.exp(-(logit + self.offsets[safe])))
        return np.where(items >= 0, p, 0.0)

    def _expected(self, attr: np.ndarray) -> np.ndarray:
        """(n,) expected clicks on slates with this attractiveness (marginal click probabilities)."""
        return self.click_model.click_probs(attr).sum(axis=1)

    def oracle(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(n,) expected clicks of the best slate among the candidates (top-k by attractiveness,
        best first: optimal under PBM with decreasing examination and under the cascade model)."""
        attr = self.attractiveness(users, candidates)
        k = self.config.slate_size
        best = -np.sort(-attr, axis=1)[:, :k]
        return self._expected(best)

    def feedback(self, users: np.ndarray, slates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clicks (n, k) float 0/1 drawn from the click model, and expected clicks (n,)."""
        attr = self.attractiveness(users, slates)
        clicks = self.click_model.simulate_attractiveness(attr, self._click_rng)
        return (clicks & (slates >= 0)).astype(np.float64), self._expected(attr)


class FeedbackQueue:
    """Delayed feedback: items pushed at round t with delay D come out at round >= t + D."""

    def __init__(self, delay: int) -> None:
        if delay < 0:
            raise ConfigError(f"delay must be >= 0, got {delay}")
        self.delay = delay
        self._queue: deque[tuple[int, Any]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, t: int, payload: Any) -> None:
        self._queue.append((t + self.delay, payload))

    def pop_ready(self, t: int) -> list[Any]:
        """Payloads due at or before round `t`, oldest first."""
        out = []
        while self._queue and self._queue[0][0] <= t:
            out.append(self._queue.popleft()[1])
        return out

    def drain(self) -> list[Any]:
        """Everything still queued (the end of a run)."""
        out = [p for _, p in self._queue]
        self._queue.clear()
        return out
