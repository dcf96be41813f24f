"""The search world and its learners: a ranker re-ranks a first stage's top `depth` for repeated
queries, clicked on through a click model from the qrels.

`SearchWorld` (seen-query protocol): the traffic is the train split's judged queries; each has
the first stage's top `depth` candidates with `rerank.ltr` features (the first stage's score and
rank, the `signals` runs, text statistics), standardised on the traffic's candidates. Clicks come
from `attractiveness = eps + (1 - eps)(2^g - 1)/(2^gmax - 1)` (ULTRA's) of the train qrels grade
under a PBM (or another `rankloop.clicks` model). Held-out quality is nDCG@10 of the test
split's queries with their qrels (`test_ndcg@10`); `seen_ndcg@10` is the same on the traffic.

Learners:
- `static`: the first stage's order, never updated (round 0 of every learner);
- `full_info`: the same linear model trained once on the true train qrels (the ceiling);
- `ultr`: a `rerank.ltr` click estimator (naive, ips, dla, rem, ...) retrained after every
  round on the whole log, with propensities that are true, from swap interventions, or EM;
- `pdgd`, `dbgd`: online linear rankers over the same features, learning per session;
- `knn_memory`: per-query memory of clicked documents (kNN feedback, `rerank.knn_feedback`);
- `rocchio_memory`: counterfactual Rocchio, the query vector moved towards its clicked
  documents weighted by inverse propensity, for repeated queries.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import scipy.sparse as sp

from rankloop.clicks.models import make_model
from rankloop.clicks.probabilities import attractiveness_from_grades
from rankloop.data.types import Qrels
from rankloop.errors import ConfigError, RankloopError
from rankloop.loop.base import LEARNERS, WORLDS, Learner, LoopLog, LoopWorld
from rankloop.loop.online import DBGD, PDGD, LinearOnlineRanker

__all__ = [
    "DBGDLearner",
    "FullInfoLearner",
    "KNNMemory",
    "PDGDLearner",
    "RocchioMemory",
    "SearchWorld",
    "StaticLearner",
    "UltrLearner",
    "ndcg_at",
]


def _signal_name(expr: str) -> str:
    return re.sub(r"\W+", "_", expr).strip("_") or "signal"


def _cut(stage: Any, depth: int) -> Any:
    """A signal stage asked for its top `depth` only (features need no more)."""
    if "k" in stage.get_params():
        stage.set_params(k=depth)
    return stage


def ideal_dcg(qrels: Qrels, qids: list[str], k: int) -> np.ndarray:
    """(Q,) ideal DCG@k of each query from all its judgements (linear gains, as trec_eval)."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.zeros(len(qids))
    for i, q in enumerate(qids):
        g = np.sort([max(v, 0) for v in qrels.data.get(q, {}).values()])[::-1][:k]
        out[i] = float(g @ disc[: len(g)])
    return out


def ndcg_at(scores: np.ndarray, grades: np.ndarray, idcg: np.ndarray, k: int = 10) -> np.ndarray:
    """(Q,) nDCG@k of ranking each query's candidates by `scores` (Q, N) (-inf = absent), with
    candidate `grades` (Q, N) and the ideal DCG from all judgements."""
    kk = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
    g = np.take_along_axis(grades, top, axis=1).astype(np.float64)
    g[np.take_along_axis(~np.isfinite(scores), top, axis=1)] = 0.0
    dcg = g @ (1.0 / np.log2(np.arange(2, kk + 2)))
    return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 0.0)


class _Split:
    """One query set's candidates: (Q, N) doc rows (-1 pads), (Q, N, d) features, (Q, N)
    grades and first-stage scores, and the ideal DCG@10 of each query."""

    def __init__(self, data: Any, doc_row: dict[str, int], depth: int, qrels: Qrels) -> None:
        off = data.group_offsets()
        qids = data.query_ids
        n = np.minimum(np.diff(off), depth)
        q, d = len(qids), data.n_features
        self.qids = np.array(qids, dtype=str)
        self.docs = np.full((q, depth), -1, np.int64)
        self.x = np.zeros((q, depth, d), np.float32)
        self.grades = np.zeros((q, depth), np.int64)
        mask = np.arange(depth)[None, :] < n[:, None]
        rows = (off[:-1, None] + np.arange(depth)[None, :])[mask]
        self.docs[mask] = [doc_row[x] for x in data.doc_ids[rows]]
        self.x[mask] = data.features[rows]
        self.grades[mask] = data.labels[rows].astype(np.int64)
        self.mask = mask
        self.idcg = ideal_dcg(qrels, qids, 10)


@WORLDS.register("search")
class SearchWorld(LoopWorld):
    """Repeated train queries re-ranked over the `first_stage`'s top `depth`; see the module
    docstring. `max_queries` keeps the first N queries of each split (small tests)."""

    def __init__(self, dataset: str = "scifact", first_stage: str = "dense", depth: int = 100,
                 signals: list[str] | None = None, train_split: str = "train",
                 test_split: str = "test", eps: float = 0.1, click_model: str = "pbm",
                 eta: float = 1.0, max_queries: int | None = None, model: str | None = None,
                 verbose: bool = False) -> None:  # fmt: skip
        import rankloop.stages  # noqa: F401 - registers every stage
        from rankloop.data import load
        from rankloop.pipeline import parse
        from rankloop.rerank.ltr.features import build_features
        from rankloop.retrieval.context import Context

        if depth < 2:
            raise ConfigError(f"search world: depth must be >= 2, got {depth}")
        if not 0.0 <= eps <= 1.0:
            raise ConfigError(f"search world: eps must be in [0, 1], got {eps}")
        if max_queries is not None and max_queries < 1:
            raise ConfigError(f"search world: max_queries must be >= 1, got {max_queries}")
        signals = ["bm25"] if signals is None else list(signals)
        splits = {}
        for role, split in (("traffic", train_split), ("held-out", test_split)):
            data = load(dataset, split=split)
            qids = [q for q in data.queries.ids if data.qrels.data.get(q)]
            if not qids:
                raise RankloopError(
                    f"{dataset}: split {split!r} has no judged query; the {role} queries need "
                    "qrels (the seen-query protocol needs a judged train and test split)"
                )
            qids = qids[:max_queries] if max_queries else qids
            splits[role] = (data.queries.subset(qids), data.qrels.subset(qids))
        ctx = Context.from_dataset(dataset, model=model, verbose=verbose)
        first = parse(first_stage, ctx) % depth
        stages = {_signal_name(s): _cut(parse(s, ctx), depth) for s in signals}
        if len(stages) != len(signals) or "first_stage" in stages:
            raise ConfigError(f"search world: signals need distinct names, got {signals}")
        corpus = ctx.corpus
        doc_row = {d: i for i, d in enumerate(corpus.ids)}
        built = {}
        for role, (queries, qrels) in splits.items():
            run = first(queries)
            sig = {name: stage(queries) for name, stage in stages.items()}
            data = build_features(run, queries, corpus, k=depth, signals=sig, qrels=qrels,
                                  candidate_name="first")  # fmt: skip
            built[role] = (data, _Split(data, doc_row, depth, qrels))
        self._ctx = ctx
        self._test_qrels = splits["held-out"][1]
        self.traffic_ltr = built["traffic"][0]
        self.train, self.test = built["traffic"][1], built["held-out"][1]
        self.feature_names = list(self.traffic_ltr.feature_names or [])
        rows = self.train.x[self.train.mask]
        mean, std = rows.mean(axis=0), rows.std(axis=0)
        std[std < 1e-9] = 1.0
        for part in (self.train, self.test):
            part.x = np.where(part.mask[..., None], (part.x - mean) / std, 0.0).astype(np.float32)
        self.name = dataset
        self.user_ids = self.train.qids
        self._traffic_queries = splits["traffic"][0].subset(self.user_ids.tolist())
        self.item_ids = np.array(corpus.ids, dtype=str)
        grades = [g for _, q in splits.values() for d in q.data.values() for g in d.values()]
        self.max_grade = max([1, *grades])
        self.eps = eps
        self.click_model = make_model(
            click_model, **({"eta": eta} if click_model in ("pbm", "ubm") else {})
        )
        cand = self.train.docs
        self.popularity = np.bincount(cand[cand >= 0], minlength=self.n_items).astype(np.float64)
        self.universe = np.unique(cand[cand >= 0])
        u = np.repeat(np.arange(len(cand)), (cand >= 0).sum(axis=1))
        self._grades = sp.csr_matrix(
            (self.train.grades[cand >= 0].astype(np.float64) + 1.0, (u, cand[cand >= 0])),
            shape=(self.n_users, self.n_items),
        )  # grade + 1 stored, so grade 0 is distinguishable from "not a candidate"
        self._signal_cols = {name: self.feature_names.index(f"{name}_score") for name in stages}
        self.info = {
            "kind": "search", "dataset": dataset, "first_stage": str(first), "depth": depth,
            "signals": signals, "traffic_queries": self.n_users,
            "test_queries": len(self.test.qids), "features": len(self.feature_names),
            "max_grade": self.max_grade, "eps": eps, "click_model": click_model, "eta": eta,
        }  # fmt: skip

    # -- the contract ------------------------------------------------------------------------
    def candidates(self, users: np.ndarray) -> np.ndarray:
        return self.train.docs[users]

    def features(self, users: np.ndarray) -> np.ndarray:
        """(n, N, d) standardised features of the users' candidates."""
        return self.train.x[users]

    def grades(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(n, L) train qrels grade of each shown document (0 for unjudged and empty slots)."""
        safe = np.maximum(items, 0)
        g = np.asarray(self._grades[np.repeat(users, items.shape[1]), safe.ravel()]).reshape(
            items.shape
        )
        return np.where(items >= 0, np.maximum(g - 1.0, 0.0), 0.0)

    def attractiveness(self, users: np.ndarray, items: np.ndarray, round_: int) -> np.ndarray:
        a = attractiveness_from_grades(self.grades(users, items), self.eps, self.max_grade)
        return np.where(items >= 0, a, 0.0)

    def reference_rankings(
        self, users: np.ndarray, candidates: np.ndarray
    ) -> dict[str, np.ndarray]:
        cand = self.train.docs[users]
        out = {"first_stage": cand}
        for name, col in self._signal_cols.items():
            s = np.where(cand >= 0, self.train.x[users, :, col], -np.inf)
            out[name] = np.take_along_axis(cand, np.argsort(-s, axis=1, kind="stable"), axis=1)
        return out

    def evaluate(self, learner: Learner, round_: int = 0) -> dict[str, float]:
        test = learner.heldout_scores(self, self.test.x, self.test.mask)  # type: ignore[attr-defined]
        users = np.arange(self.n_users)
        seen = learner.scores(self, users, self.train.docs)
        seen = np.where(self.train.mask, seen, -np.inf)
        return {
            "test_ndcg@10": float(ndcg_at(np.where(self.test.mask, test, -np.inf),
                                          self.test.grades, self.test.idcg).mean()),
            "seen_ndcg@10": float(ndcg_at(seen, self.train.grades, self.train.idcg).mean()),
        }  # fmt: skip

    def query_vector(self, user: int) -> np.ndarray:
        """(D,) dense embedding of a traffic query (encoded once for all of them)."""
        if getattr(self, "_qvec", None) is None:
            self._qvec = self._ctx.query_vectors(self._traffic_queries)
        return self._qvec[user]

    def close(self) -> None:
        """Release the Lucene searchers of the first stage and signals."""
        self._ctx.close()


def _check_world(world: LoopWorld, who: str) -> SearchWorld:
    if not isinstance(world, SearchWorld):
        raise ConfigError(f"learner {who!r} needs a search world, got {type(world).__name__}")
    return world


class SearchLearner(Learner):
    """A learner over the search world's features: held-out scores come from the same model."""

    def heldout_scores(self, world: SearchWorld, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(Q, N) scores of held-out candidates with features `x` (first-stage order by default:
        a per-query memory knows nothing about unseen queries)."""
        return np.broadcast_to(-np.arange(x.shape[1], dtype=np.float64), mask.shape).copy()

    def scores(self, world: LoopWorld, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        w = _check_world(world, type(self).__name__)
        return self.heldout_scores(w, w.features(users), candidates >= 0)


@LEARNERS.register("static")
class StaticLearner(SearchLearner):
    """The first stage's order (recommendation worlds: the candidates' order), never updated."""

    def scores(self, world: LoopWorld, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.broadcast_to(-np.arange(candidates.shape[1], dtype=np.float64),
                               candidates.shape).copy()  # fmt: skip


class _ModelLearner(SearchLearner):
    """Shared: a `rerank.ltr` list model scores every candidate's features."""

    model_: Any = None

    def heldout_scores(self, world: SearchWorld, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            return super().heldout_scores(world, x, mask)
        s = self.model_.predict(x.reshape(-1, x.shape[2])).reshape(mask.shape)
        return np.where(mask, s, -np.inf)


def _train_params(epochs: int, batch_size: int, lr: float, model: str) -> dict[str, Any]:
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ConfigError(f"need epochs >= 1, batch_size >= 1 and lr > 0, got {epochs}, "
                          f"{batch_size}, {lr}")  # fmt: skip
    return {"model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr, "device": "cpu"}


@LEARNERS.register("full_info")
class FullInfoLearner(_ModelLearner):
    """The same linear model trained once on the true train qrels: the loop's ceiling."""

    def __init__(self, loss: str = "listnet", model: str = "linear", epochs: int = 40,
                 batch_size: int = 256, lr: float = 0.02) -> None:  # fmt: skip
        self.loss = loss
        self.params = _train_params(epochs, batch_size, lr, model)

    def start(self, world: LoopWorld, random_state: int) -> None:
        from rankloop.rerank.ltr.train import Ranker

        w = _check_world(world, "full_info")
        self.model_ = Ranker(loss=self.loss, random_state=random_state, **self.params).fit(
            w.traffic_ltr
        )


@LEARNERS.register("ultr")
class UltrLearner(_ModelLearner):
    """A click estimator of `rerank.ltr.ultr` retrained after every round on the whole log.

    propensity (for `ips`): "true" (the world's click model), "swap" (from the randpair
    explorer's swap interventions in the log) or "em" (a PBM fitted to the log by EM).
    """

    def __init__(self, estimator: str = "ips", propensity: str = "true",
                 clip: float | None = None, loss: str = "listnet", model: str = "linear",
                 epochs: int = 10, batch_size: int = 256, lr: float = 0.02) -> None:  # fmt: skip
        from rankloop.rerank.ltr.ultr import ESTIMATORS

        ESTIMATORS.get(estimator, where="ultr learner")
        if propensity not in ("true", "swap", "em"):
            raise ConfigError(f"ultr: propensity must be true, swap or em, got {propensity!r}")
        if clip is not None and not clip > 0:
            raise ConfigError(f"ultr: clip must be > 0, got {clip}")
        self.estimator, self.propensity, self.clip, self.loss = estimator, propensity, clip, loss
        self.params = _train_params(epochs, batch_size, lr, model)

    def _propensities(self, world: SearchWorld, log: LoopLog, clicks: Any) -> np.ndarray:
        from rankloop.clicks.propensity import em_propensities, swap_propensities

        if self.propensity == "true":
            return world.examination(log.k)
        if self.propensity == "em":
            return em_propensities(clicks)
        swapped = log.swaps[:, 0] >= 0
        if not swapped.any():
            raise ConfigError(
                "ultr: propensity 'swap' needs the randpair explorer's swaps in the log"
            )
        theta = swap_propensities(clicks.subset(np.flatnonzero(swapped)), log.swaps[swapped])
        return np.where(np.isfinite(theta) & (theta > 0), theta, world.examination(log.k))

    def learn(self, world: LoopWorld, log: LoopLog, round_: int, rng: np.random.Generator) -> None:
        from rankloop.rerank.ltr.ultr import aggregate_clicks, make_estimator

        w = _check_world(world, "ultr")
        clicks = log.click_log(w)
        kwargs: dict[str, Any] = {**self.params, "random_state": int(rng.integers(2**31))}
        if self.estimator in ("naive", "ips"):
            kwargs["loss"] = self.loss
        if self.estimator == "ips":
            kwargs.update(propensities=self._propensities(w, log, clicks), clip=self.clip)
        est = make_estimator(self.estimator, **kwargs)
        pairs = self.estimator == "pairdebias" or self.loss == "ranknet"
        self.model_ = est.fit(aggregate_clicks(clicks, w.traffic_ltr, pairs=pairs))


class OnlineLearner(SearchLearner):
    """A linear ranker (PDGD or DBGD) that serves and learns one session at a time.

    `init="zero"` starts from zero weights, as the papers do (PDGD then samples uniformly at
    random, DBGD's tied scores keep the first stage's order); `init="first_stage"` starts from
    weight 1 on the first stage's standardised score, so round 0 serves the first stage."""

    online = True

    def __init__(self, algorithm: str, lr: float | None, delta: float = 1.0,
                 init: str = "zero") -> None:  # fmt: skip
        if lr is not None and not lr > 0:
            raise ConfigError(f"{algorithm}: lr must be > 0, got {lr}")
        if not delta > 0:
            raise ConfigError(f"{algorithm}: delta must be > 0, got {delta}")
        if init not in ("zero", "first_stage"):
            raise ConfigError(f"{algorithm}: init must be zero or first_stage, got {init!r}")
        self.algorithm, self.lr, self.delta, self.init = algorithm, lr, delta, init
        self.ranker_: LinearOnlineRanker | None = None

    def start(self, world: LoopWorld, random_state: int) -> None:
        w = _check_world(world, self.algorithm)
        d = w.train.x.shape[2]
        lr = {} if self.lr is None else {"lr": self.lr}
        if self.algorithm == "pdgd":
            self.ranker_ = PDGD(d, random_state=random_state, **lr)
        else:
            self.ranker_ = DBGD(d, delta=self.delta, random_state=random_state, **lr)
        if self.init == "first_stage":
            self.ranker_.weights[w.feature_names.index("first_score")] = 1.0

    def heldout_scores(self, world: SearchWorld, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.ranker_ is None or not np.any(self.ranker_.weights):
            return super().heldout_scores(world, x, mask)
        return np.where(mask, x @ self.ranker_.weights, -np.inf)

    def serve_one(self, world: LoopWorld, user: int, candidates: np.ndarray, k: int,
                  rng: np.random.Generator) -> np.ndarray:  # fmt: skip
        w = _check_world(world, self.algorithm)
        valid = np.flatnonzero(candidates >= 0)
        rows = self.ranker_.rank(w.train.x[user, valid], k, rng)
        return candidates[valid[rows]]

    def update_one(self, world: LoopWorld, user: int, candidates: np.ndarray, shown: np.ndarray,
                   clicks: np.ndarray) -> None:  # fmt: skip
        w = _check_world(world, self.algorithm)
        valid = np.flatnonzero(candidates >= 0)
        pos = {int(d): i for i, d in enumerate(candidates[valid])}
        rows = np.array([pos[int(d)] for d in shown if d >= 0], np.int64)
        self.ranker_.update(w.train.x[user, valid], rows, clicks[: len(rows)].astype(bool))


@LEARNERS.register("pdgd")
class PDGDLearner(OnlineLearner):
    """Pairwise differentiable gradient descent (Oosterhuis and de Rijke, CIKM 2018)."""

    def __init__(self, lr: float | None = None, init: str = "zero") -> None:
        super().__init__("pdgd", lr, init=init)


@LEARNERS.register("dbgd")
class DBGDLearner(OnlineLearner):
    """Dueling bandit gradient descent (Yue and Joachims, ICML 2009), team-draft comparisons."""

    def __init__(self, lr: float | None = None, delta: float = 1.0, init: str = "zero") -> None:
        super().__init__("dbgd", lr, delta, init)


class MemoryLearner(SearchLearner):
    """Per-query memories for repeated queries: `kind="knn"` re-scores candidates by their
    similarity to the query's clicked documents (kNN feedback); `kind="rocchio"` moves the query
    vector towards them, each click weighted by its inverse propensity (counterfactual Rocchio).
    Both mix with the first stage's normalised score: `(1 - weight) * first + weight * memory`."""

    def __init__(self, kind: str = "knn", weight: float = 0.5, agg: str = "max",
                 beta: float = 1.0, clip: float | None = 10.0) -> None:  # fmt: skip
        from rankloop.rerank.knn_feedback import AGGS

        if kind not in ("knn", "rocchio"):
            raise ConfigError(f"memory learner: kind must be knn or rocchio, got {kind!r}")
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"memory learner: weight must be in [0, 1], got {weight}")
        if agg not in AGGS:
            raise ConfigError(f"memory learner: agg must be one of {', '.join(AGGS)}, got {agg!r}")
        if not beta > 0 or (clip is not None and not clip > 0):
            raise ConfigError(f"memory learner: need beta > 0 and clip > 0, got {beta}, {clip}")
        self.kind, self.weight, self.agg, self.beta, self.clip = kind, weight, agg, beta, clip
        self.memory_: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def learn(self, world: LoopWorld, log: LoopLog, round_: int, rng: np.random.Generator) -> None:
        """Memory of every user: clicked documents and their summed (IPS) weights."""
        s, r = np.nonzero(log.clicks)
        w = np.ones(len(s))
        if self.kind == "rocchio":
            w = 1.0 / np.maximum(log.propensities[s, r], 1e-6)
            w = w if self.clip is None else np.minimum(w, self.clip)
        users, docs = log.users[s], log.items[s, r]
        pairs, inv = np.unique(np.stack([users, docs], axis=1), axis=0, return_inverse=True)
        weight = np.bincount(inv.ravel(), w, len(pairs))
        self.memory_ = {}
        for u in np.unique(pairs[:, 0]):
            sel = pairs[:, 0] == u
            self.memory_[int(u)] = (pairs[sel, 1], weight[sel])

    def scores(self, world: LoopWorld, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        from rankloop.prf.counterfactual import corocchio
        from rankloop.rerank.knn_feedback import knn_scores

        w = _check_world(world, f"{self.kind}_memory")
        base = self.heldout_scores(w, w.features(users), candidates >= 0)
        base = (base - base.min(axis=1, keepdims=True)) / np.maximum(
            np.ptp(base, axis=1, keepdims=True), 1e-12
        )
        out = base.copy()
        index = w._ctx.index
        for i, u in enumerate(users.tolist()):
            if u not in self.memory_:
                continue
            docs, weight = self.memory_[u]
            valid = candidates[i] >= 0
            cand = index.vectors_at(candidates[i, valid])
            known = index.vectors_at(docs)
            if self.kind == "knn":
                mem = knn_scores(cand[None], known[None], self.agg)[0]
            else:
                new = corocchio(w.query_vector(u)[None], (weight[:, None] * known).sum(axis=0)[None],
                                np.array([weight.sum()]), alpha=1.0, beta=self.beta)[0]  # fmt: skip
                mem = (
                    cand
                    @ new
                    / np.maximum(np.linalg.norm(cand, axis=1) * np.linalg.norm(new), 1e-12)
                )
            out[i, valid] = (1.0 - self.weight) * base[i, valid] + self.weight * mem
        return np.where(candidates >= 0, out, -np.inf)


@LEARNERS.register("knn_memory")
class KNNMemory(MemoryLearner):
    """kNN feedback from each repeated query's clicked documents."""

    def __init__(self, weight: float = 0.5, agg: str = "max") -> None:
        super().__init__("knn", weight, agg)


@LEARNERS.register("rocchio_memory")
class RocchioMemory(MemoryLearner):
    """Counterfactual Rocchio: IPS-weighted clicked documents move the query vector."""

    def __init__(self, weight: float = 0.5, beta: float = 1.0, clip: float | None = 10.0) -> None:
        super().__init__("rocchio", weight, "max", beta, clip)
