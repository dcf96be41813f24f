"""Learning to rank as a pipeline stage: a `Ranker` over `rerank.ltr` features re-ranks the
incoming run's top `depth`.

`fit(queries, qrels, run)` trains on the incoming run's candidates for the training queries,
labelled by the qrels (full information); the features are the candidate run's own score and
rank, the runs of the `signals` stages, and text statistics (`build_features`).
"""

from __future__ import annotations

from rankloop.data.types import Qrels, Queries, Run
from rankloop.errors import RankloopError
from rankloop.pipeline import STAGES, Stage
from rankloop.retrieval.context import Context
from rankloop.retrieval.stages import check_positive

__all__ = ["LtrReranker"]


@STAGES.register("ltr")
class LtrReranker(Stage):
    """A trained `Ranker` (`scorer` linear or mlp, `loss` listnet / lambdarank / ranknet /
    pointwise) re-scoring the incoming top `depth`; `signals` names first-stage retrievers
    ("dense", "bm25", "bm25_rm3") whose runs become features."""

    ALIAS = "ltr"
    NEEDS_INPUT = True

    def __init__(self, ctx: Context, scorer: str = "linear", loss: str = "listnet",
                 signals: list[str] | None = None, depth: int = 100, epochs: int = 40,
                 lr: float = 0.01, random_state: int = 0, k: int = 1000) -> None:  # fmt: skip
        from rankloop.rerank.ltr.losses import LOSSES

        check_positive("ltr", k=k, depth=depth, epochs=epochs)
        LOSSES.get(loss)  # an unknown loss is a ConfigError naming the valid ones
        self.ctx, self.scorer, self.loss, self.signals = ctx, scorer, loss, signals
        self.depth, self.epochs, self.lr, self.random_state, self.k = depth, epochs, lr, random_state, k
        self.model_ = None

    def _signal_runs(self, queries: Queries) -> dict[str, Run]:
        from rankloop.pipeline import parse

        return {s: parse(s, self.ctx)(queries) for s in (self.signals or [])}

    def _features(self, queries: Queries, run: Run, qrels: Qrels | None = None):  # -> LtrData
        from rankloop.rerank.ltr.features import build_features

        return build_features(run, queries, self.ctx.corpus, k=self.depth,
                              signals=self._signal_runs(queries), qrels=qrels)  # fmt: skip

    def fit(self, queries: Queries, qrels: Qrels, run: Run | None = None) -> LtrReranker:
        """Train on the incoming run's top `depth` for `queries`, labelled by `qrels`."""
        from rankloop.rerank.ltr.train import Ranker

        if run is None:
            raise RankloopError("ltr learns to re-rank a run: fit it inside `first >> ltr`")
        judged = queries.subset([q for q in queries.ids if q in qrels])
        data = self._features(judged, run, qrels)
        self.model_ = Ranker(self.scorer, self.loss, epochs=self.epochs, lr=self.lr,
                             random_state=self.random_state).fit(data)  # fmt: skip
        return self

    def memo_key(self) -> str | None:
        return f"{self}#{id(self.model_)}"

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        if self.model_ is None:
            raise RankloopError("ltr is not trained: call pipeline.fit(train_queries, train_qrels)")
        if run is None:
            raise RankloopError("ltr re-ranks a run: write `first >> ltr`")
        scored = self.model_.rerank(self._features(queries, run), self.name)
        out: dict[str, dict[str, float]] = {}
        for q in run.query_ids:
            top = scored.data.get(q, {})
            rest = [(d, s) for d, s in run.ranked(q) if d not in top]
            low = min(top.values(), default=0.0)
            # below the re-ranked top, the rest keep their order
            out[q] = {**top, **{d: low - 1.0 - i for i, (d, _) in enumerate(rest)}}
        return Run(out, self.name).top_k(self.k)
