"""Training: a seeded mini-batch loop over padded lists, and `Ranker`, a learning-to-rank model
trained on graded labels (the full-information model of the ULTR benchmark).

`ListModel` holds what every trained ranker shares (scorer, device, predict, rerank into a
`Run`); the click estimators in `rankloop.rerank.ltr.ultr` build on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from rankloop._runtime import check_random_state
from rankloop.data.types import Run
from rankloop.errors import ConfigError, RankloopError
from rankloop.rerank.ltr.features import LtrData
from rankloop.rerank.ltr.losses import (
    LOSSES,
    lambdarank_loss,
    listnet_loss,
    pointwise_loss,
    ranknet_loss,
)
from rankloop.rerank.ltr.models import Scorer, make_scorer, resolve_device


def train_lists(
    params: Iterable[torch.nn.Parameter],
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    n_lists: int,
    *,
    epochs: int,
    batch_size: int | None,
    lr: float,
    weight_decay: float,
    random_state: int | np.random.Generator,
    device: torch.device,
    on_epoch: Callable[[int], None] | None = None,
) -> list[float]:
    """Adam over shuffled mini-batches of list indexes; returns the mean batch loss per epoch.

    `batch_loss(idx)` gives the (scalar) loss of the lists `idx`; `on_epoch(e)` runs after each
    epoch (EM-style updates of non-gradient parameters). `batch_size=None` is full batch.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 or None, got {batch_size}")
    if n_lists < 1:
        raise RankloopError("nothing to train on: no lists")
    opt = torch.optim.Adam(list(params), lr=lr, weight_decay=weight_decay)
    bs = n_lists if batch_size is None else min(batch_size, n_lists)
    rng = check_random_state(random_state)
    history = []
    for epoch in range(epochs):
        perm = torch.as_tensor(rng.permutation(n_lists), device=device)
        total, steps = 0.0, 0
        for start in range(0, n_lists, bs):
            loss = batch_loss(perm[start : start + bs])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        history.append(total / steps)
        if on_epoch is not None:
            on_epoch(epoch)
    return history


class ListModel:
    """Shared state of trained rankers: a seeded scorer, its device, prediction and reranking."""

    def __init__(
        self,
        model: str = "linear",
        *,
        model_params: dict[str, Any] | None = None,
        epochs: int = 40,
        batch_size: int | None = 256,
        lr: float = 0.01,
        weight_decay: float = 0.0,
        device: str | None = "auto",
        random_state: int = 0,
    ) -> None:
        self.model = model
        self.model_params = model_params
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.device = device
        self.random_state = random_state

    def _init_scorer(self, n_features: int, rows: np.ndarray) -> Scorer:
        """A fresh seeded scorer on the device, scaled by the training `rows` (n, d)."""
        self.device_ = resolve_device(self.device)
        scorer = make_scorer(
            self.model, n_features, random_state=self.random_state, **(self.model_params or {})
        )
        self.scorer_ = scorer.set_scaling(rows).to(self.device_)
        self.rng_ = np.random.default_rng(self.random_state)
        return self.scorer_

    def _train(
        self,
        params: Sequence[torch.nn.Parameter],
        batch_loss: Callable[[torch.Tensor], torch.Tensor],
        n_lists: int,
        on_epoch: Callable[[int], None] | None = None,
    ) -> None:
        self.scorer_.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)  # dropout masks
            self.loss_history_ = train_lists(
                params,
                batch_loss,
                n_lists,
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                weight_decay=self.weight_decay,
                random_state=self.rng_,
                device=self.device_,
                on_epoch=on_epoch,
            )
        self.scorer_.eval()

    def _tensor(self, x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=self.device_)

    def predict(self, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """(n,) scores of feature rows (n, d)."""
        if not hasattr(self, "scorer_"):
            raise RankloopError(f"{type(self).__name__} is not fitted; call fit first")
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2:
            raise RankloopError(f"predict wants (n, d) features, got shape {x.shape}")
        out = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                out.append(self.scorer_(self._tensor(x[start : start + batch_size])).cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    def rerank(self, data: LtrData, name: str | None = None) -> Run:
        """A `Run` of `data`'s rows scored by the model (needs doc ids)."""
        if data.doc_ids is None:
            raise RankloopError("rerank needs LtrData with doc ids")
        scores = self.predict(data.features)
        off = data.group_offsets()
        out: dict[str, dict[str, float]] = {}
        for q, a, b in zip(data.query_ids, off[:-1], off[1:]):
            out[q] = dict(zip(data.doc_ids[a:b].tolist(), scores[a:b].tolist()))
        return Run(out, name or type(self).__name__)


class Ranker(ListModel):
    """Learning to rank from graded labels: `fit(LtrData)`, then `predict` / `rerank`.

    loss: `listnet` (softmax cross-entropy with the grades as targets), `lambdarank`, `ranknet`,
    or `pointwise` (squared error on the grades). `k` cuts each query to its first `k` rows.
    """

    def __init__(
        self,
        model: str = "linear",
        loss: str = "listnet",
        *,
        k: int | None = None,
        model_params: dict[str, Any] | None = None,
        epochs: int = 40,
        batch_size: int | None = 256,
        lr: float = 0.01,
        weight_decay: float = 0.0,
        device: str | None = "auto",
        random_state: int = 0,
    ) -> None:
        super().__init__(
            model,
            model_params=model_params,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            device=device,
            random_state=random_state,
        )
        self.loss = loss
        self.k = k

    def fit(self, data: LtrData) -> Ranker:
        """Train on `data`'s labels; returns self."""
        LOSSES.get(self.loss)  # an unknown name is a ConfigError naming the valid ones
        if len(data) == 0:
            raise RankloopError("Ranker.fit: no training rows")
        x, y, mask = data.to_lists(self.k)
        scorer = self._init_scorer(data.n_features, x[mask])
        xt, yt = self._tensor(x), self._tensor(y)
        mt = self._tensor(mask, torch.bool)

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            s, lab, m = scorer(xt[idx]), yt[idx], mt[idx]
            if self.loss == "listnet":
                per = listnet_loss(s, lab, m)
            elif self.loss == "lambdarank":
                per = lambdarank_loss(s, lab, m)
            elif self.loss == "ranknet":
                per = ranknet_loss(s, lab, m)
            else:
                per = pointwise_loss(s, lab, m, kind="mse")
            return per.mean()

        self._train(list(scorer.parameters()), batch_loss, len(x))
        return self
