"""Feedback methods as pipeline stages: vector Rocchio / Average PRF, LoL, ColBERT-PRF and
Counterfactual Rocchio.

A feedback stage reads its feedback documents from the run of the stage before it, so the
source of feedback is the pipeline: `dense >> rocchio` is dense PRF, `bm25 >> rocchio` is dense
Rocchio with BM25 feedback documents, `maxsim >> colbert_prf`. Used first, `rocchio`, `average`
and `lol` take their feedback from their own dense first pass. BM25+RM3 and BM25+Rocchio on
Lucene are first-stage retrievers (`bm25_rm3`, `bm25_rocchio` in `rankloop.retrieval.stages`).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Literal

import numpy as np

from rankloop.data.types import Qrels, Queries, Run
from rankloop.errors import ConfigError, RankloopError
from rankloop.pipeline import STAGES, Stage
from rankloop.prf.lol import LoL, LoLConfig
from rankloop.prf.rocchio import Reformulator, Rocchio, VectorPRF, feedback_from_run, run_from_rows
from rankloop.retrieval.base import drop_query_ids
from rankloop.retrieval.context import Context
from rankloop.retrieval.stages import check_positive

__all__ = ["AveragePRF", "ColBERTPRFStage", "CounterfactualRocchio", "LoLStage", "VectorRocchio"]


class _VectorFeedback(Stage):
    """Vector PRF on the context's dense index with `self.reformulator()`; feedback from the
    incoming run when there is one, else from the dense first pass."""

    ctx: Context
    k: int
    iterations: int

    def reformulator(self) -> Reformulator:
        raise NotImplementedError

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        index = self.ctx.index
        prf = VectorPRF(index, self.reformulator(), iterations=self.iterations)
        first = None if run is None else feedback_from_run(index, run, queries.ids, prf.fb_reads)
        own = self.ctx.remove_query_id
        scores, rows = prf.search_vectors(self.ctx.query_vectors(queries), self.k + own,
                                          first_feedback=first)  # fmt: skip
        out = run_from_rows(index, queries.ids, scores, rows, self.name)
        if own:
            out = drop_query_ids(out, self.k)
        blank = [q for q, t in zip(queries.ids, queries.texts) if not t.strip()]
        for q in blank:  # a blank query carries no signal: no results, as every retriever does
            out.data[q] = {}
        return out


@STAGES.register("rocchio")
class VectorRocchio(_VectorFeedback):
    """Rocchio on dense vectors (pyserini's `DenseVectorRocchioPrf`): α q + β mean(top
    `fb_docs`) − γ mean(last `bottom_fb_docs` of the top `fb_window`); `iterations` rounds."""

    ALIAS = "rocchio"

    def __init__(self, ctx: Context, fb_docs: int = 3, alpha: float = 1.0, beta: float = 0.2,
                 gamma: float = 0.0, bottom_fb_docs: int = 0, fb_window: int | None = None,
                 iterations: int = 1, k: int = 1000) -> None:  # fmt: skip
        check_positive("rocchio", k=k, iterations=iterations)
        self.ctx, self.k, self.iterations = ctx, k, iterations
        self.fb_docs, self.bottom_fb_docs, self.fb_window = fb_docs, bottom_fb_docs, fb_window
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.reformulator()  # validates

    def reformulator(self) -> Rocchio:
        return Rocchio(alpha=self.alpha, beta=self.beta, gamma=self.gamma, fb_docs=self.fb_docs,
                       bottom_fb_docs=self.bottom_fb_docs, fb_window=self.fb_window)  # fmt: skip


@STAGES.register("average")
class AveragePRF(_VectorFeedback):
    """Average PRF (pyserini's `DenseVectorAveragePrf`): (q + d1 + ... + d_fb_docs) / (fb_docs + 1)."""

    ALIAS = "average"

    def __init__(self, ctx: Context, fb_docs: int = 3, iterations: int = 1, k: int = 1000) -> None:
        check_positive("average", k=k, iterations=iterations, fb_docs=fb_docs)
        self.ctx, self.k, self.iterations, self.fb_docs = ctx, k, iterations, fb_docs

    def reformulator(self) -> Rocchio:
        return Rocchio.averaged(self.fb_docs)


_LOL_FIELDS = [f.name for f in fields(LoLConfig) if f.name != "dim"]


@STAGES.register("lol")
class LoLStage(_VectorFeedback):
    """LoL, a learned reformulator of the query vector from its `fb_docs` feedback vectors.

    It trains itself on first use from the `train_split` queries and qrels of `train_dataset`
    (default: the context's data set; another name is zero-shot transfer), selecting its epoch
    on that set's `dev` split or on a held-out fifth of the training queries; models are cached
    under `$RANKLOOP_CACHE/models`. `fit(queries, qrels)` trains on given queries instead.
    `fb_limit` uses only the first `fb_limit` feedback vectors at inference (depth sweeps).
    """

    ALIAS = "lol"

    def __init__(self, ctx: Context, fb_docs: int = 5, layers: int = 1, heads: int = 4,
                 hidden: int = 512, dropout: float = 0.1, lambda_cr: float = 1.0,
                 revisions: int = 3, temperature: float = 0.05, n_negatives: int = 50,
                 max_positives: int = 16, in_batch_negatives: bool = True, epochs: int = 8,
                 patience: int = 2, batch_size: int = 32, lr: float = 1e-4,
                 weight_decay: float = 0.01, random_state: int = 0,
                 train_dataset: str | None = None, train_split: str = "train",
                 max_train_queries: int | None = None, fb_limit: int | None = None,
                 k: int = 1000) -> None:  # fmt: skip
        check_positive("lol", k=k, heads=heads)
        if max_train_queries is not None:
            check_positive("lol", max_train_queries=max_train_queries)
        if fb_limit is not None and not 1 <= fb_limit <= fb_docs:
            raise ConfigError(f"lol: fb_limit must lie in 1..fb_docs ({fb_docs}), got {fb_limit}")
        self.ctx, self.k, self.iterations = ctx, k, 1
        self.fb_docs, self.layers, self.heads, self.hidden = fb_docs, layers, heads, hidden
        self.dropout, self.lambda_cr, self.revisions = dropout, lambda_cr, revisions
        self.temperature, self.n_negatives, self.max_positives = temperature, n_negatives, max_positives
        self.in_batch_negatives, self.epochs, self.patience = in_batch_negatives, epochs, patience
        self.batch_size, self.lr, self.weight_decay = batch_size, lr, weight_decay
        self.random_state = random_state
        self.train_dataset, self.train_split = train_dataset, train_split
        self.max_train_queries, self.fb_limit = max_train_queries, fb_limit
        self.config(heads)  # validates the model's hyper-parameters now, before any work
        self.model_: LoL | None = None
        self._trained_as: tuple | None = None

    def memo_key(self) -> str | None:
        """A model trained by `fit` on given queries is identified by the object itself."""
        if self._trained_as is not None and self._trained_as[0] == "fit":
            return f"{self}#{id(self.model_)}"
        return str(self)

    def config(self, dim: int) -> LoLConfig:
        """The `LoLConfig` of these hyper-parameters for `dim`-dimensional vectors."""
        return LoLConfig(dim=dim, **{f: getattr(self, f) for f in _LOL_FIELDS})

    def _training_key(self) -> tuple:
        return (*(getattr(self, f) for f in _LOL_FIELDS), self.train_dataset, self.train_split,
                self.max_train_queries)  # fmt: skip

    def check(self) -> None:
        """The training split must exist before anything is encoded or trained."""
        if self.model_ is not None:
            return
        from rankloop.data.beir import beir_splits
        from rankloop.data.registry import beir_folder

        name = self.train_dataset or self.ctx.dataset
        if name is None:
            raise ConfigError("lol: no train_dataset and the context has no registry data set; "
                              "name one or call fit(queries, qrels)")  # fmt: skip
        splits = beir_splits(beir_folder(name))
        if self.train_split not in splits:
            raise ConfigError(
                f"lol: data set {name!r} has no {self.train_split!r} split (it has "
                f"{', '.join(splits) or 'none'}); set train_dataset to a set with training "
                f"queries, or leave LoL out"
            )

    def fit(self, queries: Queries, qrels: Qrels, run: Run | None = None) -> LoLStage:
        """Train on `queries`/`qrels` over the context's index (dev: a held-out fifth)."""
        from rankloop.prf.lol import train_lol

        judged = queries.subset([q for q in queries.ids if q in qrels])
        self.model_ = train_lol(
            self.ctx.index, self.ctx.query_vectors(judged), judged, qrels,
            config=self.config(self.ctx.index.dim), max_train_queries=self.max_train_queries,
            verbose=self.ctx.verbose,
        )  # fmt: skip
        self._trained_as = ("fit", *self._training_key())
        return self

    def _train_default(self) -> LoL:
        from rankloop._runtime import cache_dir
        from rankloop.data import load
        from rankloop.data.beir import beir_splits
        from rankloop.data.registry import beir_folder
        from rankloop.prf.lol import train_lol

        self.check()
        name = self.train_dataset or self.ctx.dataset
        ctx = self.ctx.for_dataset(name)
        train = load(name, split=self.train_split)
        tq = train.queries.subset([q for q in train.queries.ids if q in train.qrels])
        dev = None
        if self.train_split != "dev" and "dev" in beir_splits(beir_folder(name)):
            d = load(name, split="dev")
            dq = d.queries.subset([q for q in d.queries.ids if q in d.qrels])
            dev = (lambda: ctx.query_vectors(dq), dq, d.qrels)
        key = {"data": name, "split": self.train_split, "fb": "dense",
               "enc": ctx.encoder.fingerprint, "dev": "dev" if dev is not None else "held-out"}  # fmt: skip
        return train_lol(  # query vectors are encoded only when the model is not cached
            ctx.index, lambda: ctx.query_vectors(tq), tq, train.qrels, dev=dev,
            config=self.config(ctx.index.dim), max_train_queries=self.max_train_queries,
            cache=cache_dir("models"), cache_key=key, verbose=self.ctx.verbose,
        )  # fmt: skip

    def reformulator(self) -> Reformulator:
        if self.model_ is None or self._trained_as not in (self._training_key(),
                                                            ("fit", *self._training_key())):  # fmt: skip
            self.model_ = self._train_default()
            self._trained_as = self._training_key()
        if self.fb_limit is None:
            return self.model_
        return _FirstFeedback(self.model_, self.fb_limit)


class _FirstFeedback:
    """A reformulator that sees only its first `limit` feedback vectors (depth sweeps)."""

    def __init__(self, inner: LoL, limit: int) -> None:
        self.inner, self.limit = inner, limit

    @property
    def fb_reads(self) -> int:
        return max(self.limit, self.inner.fb_reads)

    def __call__(self, q: np.ndarray, fb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        m = mask.copy()
        m[:, self.limit :] = False
        return self.inner(q, fb, m)


@STAGES.register("colbert_prf")
class ColBERTPRFStage(Stage):
    """ColBERT-PRF over the context's MaxSim token index, with feedback documents from the
    incoming run (`maxsim >> colbert_prf`): `mode` "ranker" retrieves anew with the expanded
    query, "reranker" re-scores the incoming top `k`."""

    ALIAS = "colbert_prf"
    NEEDS_INPUT = True

    def __init__(self, ctx: Context, mode: Literal["ranker", "reranker"] = "ranker",
                 fb_docs: int = 3, n_clusters: int = 24, fb_embs: int = 10, beta: float = 1.0,
                 k_nearest: int = 10, candidates_per_token: int = 100, factory: str = "Flat",
                 random_state: int = 0, k: int = 1000) -> None:  # fmt: skip
        check_positive("colbert_prf", k=k)
        self.ctx, self.k, self.mode, self.factory = ctx, k, mode, factory
        self.fb_docs, self.n_clusters, self.fb_embs, self.beta = fb_docs, n_clusters, fb_embs, beta
        self.k_nearest, self.candidates_per_token = k_nearest, candidates_per_token
        self.random_state = random_state
        self._prf()  # validates

    def _prf(self) -> Any:  # -> ColBERTPRF
        from rankloop.prf.colbert_prf import ColBERTPRF

        return ColBERTPRF(fb_docs=self.fb_docs, n_clusters=self.n_clusters, fb_embs=self.fb_embs,
                          beta=self.beta, k_nearest=self.k_nearest, mode=self.mode,
                          candidates_per_token=self.candidates_per_token,
                          random_state=self.random_state)  # fmt: skip

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        if run is None:
            raise RankloopError("colbert_prf needs feedback documents: write `maxsim >> colbert_prf`")
        mv = self.ctx.multivector(self.factory)
        own = self.ctx.remove_query_id and self.mode == "ranker"
        out = self._prf().run(mv, queries, run, k=self.k + own).with_name(self.name)
        return drop_query_ids(out, self.k) if own else out


@STAGES.register("corocchio")
class CounterfactualRocchio(Stage):
    """Counterfactual Rocchio in the seen-query protocol: PBM(`click_eta`) clicks on the top
    `list_k` of the incoming run, `sessions_per_query` sessions per query, drawn from the qrels
    given to `fit`; the query moves to α q + β (mean of clicked vectors, weighted r^`click_eta`
    when `ips`, else plain); the same queries are then re-ranked from the dense index."""

    ALIAS = "corocchio"
    NEEDS_INPUT = True

    def __init__(self, ctx: Context, alpha: float = 1.0, beta: float = 0.5, ips: bool = True,
                 click_eta: float = 1.0, sessions_per_query: int = 10, list_k: int = 10,
                 random_state: int = 0, k: int = 1000) -> None:  # fmt: skip
        check_positive("corocchio", k=k, sessions_per_query=sessions_per_query, list_k=list_k)
        if click_eta < 0:
            raise ConfigError(f"corocchio: click_eta must be >= 0, got {click_eta}")
        self.ctx, self.k, self.alpha, self.beta, self.ips = ctx, k, float(alpha), float(beta), ips
        self.click_eta, self.sessions_per_query = float(click_eta), sessions_per_query
        self.list_k, self.random_state = list_k, random_state
        self.qrels_: Qrels | None = None

    def fit(self, queries: Queries, qrels: Qrels, run: Run | None = None) -> CounterfactualRocchio:
        """Remember the users' relevance (the qrels) that clicks are drawn from."""
        self.qrels_ = qrels
        return self

    def memo_key(self) -> str | None:
        return f"{self}#{id(self.qrels_)}"

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        from rankloop._runtime import check_random_state
        from rankloop.clicks import PBM
        from rankloop.clicks.simulate import sessions_from_run, simulate_log
        from rankloop.prf.counterfactual import click_feedback, corocchio

        if self.qrels_ is None:
            raise RankloopError("corocchio simulates clicks from qrels: call fit(queries, qrels) first")
        if run is None:
            raise RankloopError("corocchio re-ranks a run: write `dense >> corocchio`")
        gen = check_random_state(self.random_state)
        n = self.sessions_per_query * len(queries)
        sessions, grades = sessions_from_run(run, self.qrels_, n, gen, k=self.list_k)
        log = simulate_log(PBM(eta=self.click_eta), sessions, gen, grades)
        index = self.ctx.index
        sums, total = click_feedback(log, index, queries.ids,
                                     eta=self.click_eta if self.ips else None)  # fmt: skip
        new_q = corocchio(self.ctx.query_vectors(queries), sums, total, alpha=self.alpha,
                          beta=self.beta)  # fmt: skip
        own = self.ctx.remove_query_id
        scores, rows = index.search_rows(new_q, self.k + own)
        out = run_from_rows(index, queries.ids, scores, rows, self.name)
        return drop_query_ids(out, self.k) if own else out
