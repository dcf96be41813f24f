"""Cross-encoder re-ranking (monoBERT style) as a pipeline stage, and fine-tuning a cross-encoder.

`cross_encoder(model=...)` re-scores the top `depth` documents of the incoming run with a
sentence-transformers `CrossEncoder` reading (query text, title + " " + text) pairs; the rest of
the run follows below them in its old order. Models resolve offline as the encoders do
(`rankloop.embed.encoders.resolve_model`): a local directory, a model already in the Hugging Face
cache, or a hub name when the hub can be reached; otherwise `ModelNotAvailableError` at once.
A model is loaded on first use and shared, with the pair scores it has computed, by every
cross-encoder stage of the same `Context` (so `bm25 >> ce` and `dense >> ce` score a shared
(query, doc) pair once).

`train_cross_encoder` fine-tunes one from the bundled MiniLM (a fresh one-logit head on the BERT
encoder) on training qrels, with hard negatives mined from a first-stage run, through
sentence-transformers' `CrossEncoderTrainer` (which needs `accelerate` and `datasets`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rankloop._runtime import check_random_state
from rankloop.data.types import Corpus, Qrels, Queries, Run
from rankloop.embed.encoders import DEFAULT_MODEL, quiet_transformers, resolve_model
from rankloop.embed.gpu import default_device
from rankloop.errors import ConfigError, ModelNotAvailableError, RankloopError
from rankloop.io import atomic_dir
from rankloop.pipeline import STAGES, Stage
from rankloop.retrieval.context import Context
from rankloop.retrieval.stages import check_positive

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

__all__ = ["CrossEncoderStage", "load_cross_encoder", "read_training_record",
           "resolve_cross_encoder", "train_cross_encoder", "training_pairs"]  # fmt: skip

# A progress bar only for jobs that take more than a couple of seconds (pairs per device).
_PROGRESS_MIN_PAIRS = {"cpu": 64, "other": 4096}
_TRAINING_RECORD = "rankloop_training.json"
ARTIFACT = "cross-encoder model"  # the kind in the manifest of a saved model (rankloop.io)


def resolve_cross_encoder(model: str) -> tuple[str, Path | None]:
    """(canonical name, local directory or None when a download is still possible) of a
    cross-encoder; a sentence-embedding model (bi-encoder) is refused, since its relevance
    head would be random. Raises `ModelNotAvailableError` at once offline (no weights load)."""
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"cross_encoder: model must be a path or a hub name, got {model!r}")
    name, local = resolve_model(model)
    if local is not None and _is_bi_encoder(local):
        hint = " (the bundled default)" if name == DEFAULT_MODEL else ""
        raise ConfigError(
            f"cross_encoder: {name!r}{hint} is a sentence-embedding model, not a cross-encoder: "
            "its relevance head would be random. Train one with "
            "rankloop.rerank.cross_encoder.train_cross_encoder or pass a cross-encoder."
        )
    return name, local


def _is_bi_encoder(path: Path) -> bool:
    """A sentence-transformers directory whose modules pool token vectors (a bi-encoder)."""
    modules = path / "modules.json"
    if not modules.is_file():
        return False
    try:
        entries = json.loads(modules.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any("Pooling" in str(e.get("type", "")) for e in entries if isinstance(e, dict))


def load_cross_encoder(
    model: str, *, max_length: int | None = None, device: str | None = None, num_labels: int | None = None
) -> CrossEncoder:
    """A sentence-transformers `CrossEncoder` for `model` (offline rules of `resolve_model`),
    returning raw logits (no sigmoid: saturated scores would tie)."""
    name, local = resolve_model(model)
    return _load(name, local, max_length=max_length, device=device, num_labels=num_labels)


def _load(name: str, local: Path | None, *, max_length: int | None, device: str | None,
          num_labels: int | None = None) -> CrossEncoder:  # fmt: skip
    import torch
    from sentence_transformers import CrossEncoder

    device = device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RankloopError(f"device {device!r} requested but torch sees no CUDA GPU")
    source = str(local) if local is not None else name
    kwargs: dict[str, Any] = {"device": device, "local_files_only": local is not None,
                              "max_length": max_length, "activation_fn": torch.nn.Identity()}  # fmt: skip
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    try:
        with quiet_transformers():
            return CrossEncoder(source, **kwargs)
    except Exception as e:  # the load is a boundary: hub, file and config errors all end here
        raise ModelNotAvailableError(f"could not load cross-encoder {name!r} from {source}: {e}") from e


class _Scorer:
    """One loaded cross-encoder of a context and the (query text, doc id) scores it computed."""

    def __init__(self, model: CrossEncoder) -> None:
        self.model = model
        self.scores: dict[tuple[str, str], float] = {}


# Per context: (model source, max_length, device) -> scorer; goes when the context goes.
_SHARED: weakref.WeakKeyDictionary[Any, dict[tuple, _Scorer]] = weakref.WeakKeyDictionary()
_DOC_ROWS: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()


@STAGES.register("cross_encoder")
class CrossEncoderStage(Stage):
    """Re-score the incoming top `depth` per query with cross-encoder `model` (a local path or a
    hub name); documents below `depth` follow in their old order; the output is cut to `k`.
    `batch_size` pairs per forward pass, `max_length` tokens per pair (None: the model's)."""

    ALIAS = "cross_encoder"
    NEEDS_INPUT = True

    def __init__(self, ctx: Context, model: str | None = None, depth: int = 100,
                 batch_size: int = 32, max_length: int | None = 512, k: int = 1000) -> None:  # fmt: skip
        check_positive("cross_encoder", depth=depth, batch_size=batch_size, k=k)
        if max_length is not None:
            check_positive("cross_encoder", max_length=max_length)
        if model is None:
            raise ConfigError("cross_encoder needs a model: cross_encoder(model='<directory or "
                              "hub name>'), e.g. one made by train_cross_encoder")  # fmt: skip
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"cross_encoder: model must be a path or a hub name, got {model!r}")
        self.ctx, self.model, self.depth, self.batch_size = ctx, model, depth, batch_size
        self.max_length, self.k = max_length, k

    def check(self) -> None:
        """Resolve the model name now (no weights are loaded): offline, an unknown hub name
        raises `ModelNotAvailableError` here rather than mid-experiment."""
        resolve_cross_encoder(self.model)

    def _scorer(self) -> _Scorer:
        device = default_device()
        name, local = resolve_cross_encoder(self.model)
        per_ctx = _SHARED.setdefault(self.ctx, {})
        # a hub model by its name (downloaded or not); a directory by path and time, so a model
        # re-saved there (train_cross_encoder replaces it whole) is loaded afresh
        source: tuple = (name,) if local is None or not Path(self.model).expanduser().is_dir() \
            else (str(local), local.stat().st_mtime_ns)  # fmt: skip
        key = (*source, self.max_length, device)
        if key not in per_ctx:
            per_ctx[key] = _Scorer(_load(name, local, max_length=self.max_length, device=device))
        return per_ctx[key]

    @property
    def cross_encoder(self) -> CrossEncoder:
        """The loaded `CrossEncoder` (loaded on first access, shared within the context)."""
        return self._scorer().model

    def _doc_rows(self) -> dict[str, int]:
        corpus = self.ctx.corpus
        rows = _DOC_ROWS.get(self.ctx)
        if rows is None or len(rows) != len(corpus):
            rows = _DOC_ROWS[self.ctx] = {d: i for i, d in enumerate(corpus.ids)}
        return rows

    def transform(self, queries: Queries, run: Run | None = None) -> Run:
        if run is None:
            raise RankloopError(f"{self.ALIAS} re-ranks a run: write `first >> {self}`")
        text = dict(zip(queries.ids, queries.texts))
        unknown = [q for q in run.query_ids if q not in text]
        if unknown:
            raise RankloopError(f"{self.ALIAS}: the run has query {unknown[0]!r}, which is not "
                                f"among the {len(queries)} queries given")  # fmt: skip
        ranked = {q: run.ranked(q) for q in run.query_ids}
        top = {q: [d for d, _ in r[: self.depth]] for q, r in ranked.items() if text[q].strip()}
        scorer = self._scorer()
        cache = scorer.scores
        todo = list(dict.fromkeys((text[q], d) for q, docs in top.items() for d in docs
                                  if (text[q], d) not in cache))  # fmt: skip
        if todo:
            rows, corpus = self._doc_rows(), self.ctx.corpus
            missing = next((d for _, d in todo if d not in rows), None)
            if missing is not None:
                raise RankloopError(f"{self.ALIAS}: doc {missing!r} of the run is not in the "
                                    f"context's corpus {corpus.name!r}")  # fmt: skip
            pairs = [(qt, (corpus.titles[rows[d]] + " " + corpus.texts[rows[d]]).strip())
                     for qt, d in todo]  # fmt: skip
            device = str(scorer.model.device)
            floor = _PROGRESS_MIN_PAIRS["cpu" if device == "cpu" else "other"]
            verbose = bool(getattr(self.ctx, "verbose", False))
            values = scorer.model.predict(pairs, batch_size=self.batch_size,
                                          show_progress_bar=verbose and len(pairs) >= floor,
                                          convert_to_numpy=True)  # fmt: skip
            cache.update(zip(todo, np.asarray(values, dtype=np.float64).reshape(-1).tolist()))
        out: dict[str, dict[str, float]] = {}
        for q, r in ranked.items():
            if q not in top:  # a blank query carries no signal: its ranking stays
                out[q] = dict(r[: self.k])
                continue
            head = {d: cache[(text[q], d)] for d in top[q]}
            low = min(head.values(), default=0.0)
            rest = r[self.depth : self.k]
            out[q] = {**head, **{d: low - 1.0 - i for i, (d, _) in enumerate(rest)}}
        return Run(out, self.name).top_k(self.k)


# ---- training ---------------------------------------------------------------------------------
def training_pairs(
    queries: Queries,
    qrels: Qrels,
    run: Run,
    *,
    positives: int = 1,
    negatives: int = 4,
    negatives_depth: int = 30,
    level: int = 1,
    random_state: np.random.Generator | int = 0,
) -> tuple[list[str], list[str], list[float]]:
    """(query ids, doc ids, labels): per judged query up to `positives` relevant docs (grade >=
    `level`, highest grades first) labelled 1 and `negatives` hard negatives, drawn from the
    run's top `negatives_depth` docs not judged relevant, labelled 0."""
    check_positive("train_cross_encoder", positives=positives, negatives_depth=negatives_depth)
    if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 0:
        raise ConfigError(f"train_cross_encoder: negatives must be an int >= 0, got {negatives!r}")
    gen = check_random_state(random_state)
    qs: list[str] = []
    ds: list[str] = []
    labels: list[float] = []
    for q in queries.ids:
        grades = qrels.data.get(q, {})
        rel = [d for d, g in grades.items() if g >= level]
        if not rel:
            continue
        order = gen.permutation(len(rel))
        rel = sorted((rel[i] for i in order), key=lambda d: -grades[d])[:positives]
        pool = [d for d, _ in run.ranked(q, negatives_depth) if grades.get(d, 0) < level]
        neg = [pool[i] for i in sorted(gen.choice(len(pool), min(negatives, len(pool)), replace=False))]
        for d, y in [(d, 1.0) for d in rel] + [(d, 0.0) for d in neg]:
            qs.append(q)
            ds.append(d)
            labels.append(y)
    return qs, ds, labels


def train_cross_encoder(
    corpus: Corpus,
    queries: Queries,
    qrels: Qrels,
    *,
    run: Run,
    out: str | os.PathLike[str],
    base_model: str | None = None,
    positives: int = 1,
    negatives: int = 4,
    negatives_depth: int = 30,
    epochs: float = 1.0,
    batch_size: int = 16,
    lr: float = 2e-5,
    max_length: int = 256,
    max_steps: int | None = None,
    warmup: float = 0.1,
    level: int = 1,
    random_state: int = 0,
    device: str | None = None,
    overwrite: bool = False,
    verbose: bool = True,
) -> Path:
    """Fine-tune a cross-encoder (default: the bundled MiniLM with a fresh one-logit head) on
    `qrels` with hard negatives mined from the first-stage `run`, binary cross-entropy through
    sentence-transformers' `CrossEncoderTrainer`; saved atomically to `out` (replacing only an
    earlier saved cross-encoder, or any rankloop artefact with `overwrite`), returned."""
    check_positive("train_cross_encoder", batch_size=batch_size, max_length=max_length)
    if max_steps is not None:
        check_positive("train_cross_encoder", max_steps=max_steps)
    if not epochs > 0 or not lr > 0 or not 0 <= warmup < 1:
        raise ConfigError(f"train_cross_encoder: want epochs > 0, lr > 0 and 0 <= warmup < 1, "
                          f"got {epochs}, {lr}, {warmup}")  # fmt: skip
    qids, dids, labels = training_pairs(queries, qrels, run, positives=positives,
                                        negatives=negatives, negatives_depth=negatives_depth,
                                        level=level, random_state=random_state)  # fmt: skip
    n_pos = int(sum(labels))
    if n_pos == 0 or n_pos == len(labels):
        raise RankloopError(f"train_cross_encoder: need both relevant and non-relevant pairs, got "
                            f"{n_pos} of {len(labels)} relevant (are the qrels for these queries?)")  # fmt: skip
    trainer_api = _trainer_api()
    import torch
    import transformers

    rows = {d: i for i, d in enumerate(corpus.ids)}
    missing = next((d for d in dids if d not in rows), None)
    if missing is not None:
        raise RankloopError(f"train_cross_encoder: doc {missing!r} is not in corpus {corpus.name!r}")
    text = dict(zip(queries.ids, queries.texts))
    docs = [(corpus.titles[rows[d]] + " " + corpus.texts[rows[d]]).strip() for d in dids]

    # the target is checked before any training (only an empty folder or a saved cross-encoder
    # is replaced, another rankloop artefact with `overwrite`); the swap happens after it
    with atomic_dir(out, ARTIFACT, overwrite=overwrite) as tmp_out:
        transformers.set_seed(random_state)  # the fresh head's weights, dropout, shuffling
        name, local = resolve_model(base_model)
        model = _load(name, local, max_length=max_length, device=device, num_labels=1)
        Dataset, Trainer, Args, BCE = trainer_api
        data = Dataset.from_dict({"query": [text[q] for q in qids], "document": docs,
                                  "label": labels})  # fmt: skip
        steps = max_steps or math.ceil(epochs * math.ceil(len(labels) / batch_size))
        loss = BCE(model, pos_weight=torch.tensor((len(labels) - n_pos) / n_pos))
        with tempfile.TemporaryDirectory(prefix="rankloop-ce-") as tmp:
            args = Args(output_dir=tmp, num_train_epochs=float(epochs), max_steps=max_steps or -1,
                        per_device_train_batch_size=batch_size, learning_rate=lr,
                        warmup_steps=int(warmup * steps), seed=random_state,
                        data_seed=random_state, save_strategy="no", report_to="none",
                        logging_steps=max(1, steps // 10), disable_tqdm=not verbose,
                        use_cpu=str(model.device) == "cpu", dataloader_num_workers=0)  # fmt: skip
            trainer = Trainer(model=model, args=args, train_dataset=data, loss=loss)
            with quiet_transformers():
                result = trainer.train()
        record = {
            "base_model": name, "queries": len(set(qids)), "pairs": len(labels),
            "positives": n_pos, "negatives_per_query": negatives,
            "negatives_depth": negatives_depth, "epochs": epochs,
            "steps": int(result.global_step), "batch_size": batch_size, "lr": lr,
            "max_length": max_length, "random_state": random_state,
            "train_loss": float(result.training_loss), "first_stage": run.name,
        }  # fmt: skip
        model.save_pretrained(str(tmp_out))
        (tmp_out / _TRAINING_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return Path(out)


def _trainer_api() -> tuple[Any, Any, Any, Any]:
    """(Dataset, CrossEncoderTrainer, CrossEncoderTrainingArguments, BinaryCrossEntropyLoss), or
    a clear error naming what to install."""
    try:
        import accelerate  # noqa: F401 - transformers' Trainer needs it
        from datasets import Dataset
        from sentence_transformers.cross_encoder import (
            CrossEncoderTrainer,
            CrossEncoderTrainingArguments,
        )
        from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    except ImportError as e:
        raise RankloopError(
            f"training a cross-encoder needs sentence-transformers >= 4 with its training extras "
            f"(pip install 'sentence-transformers[train]', i.e. accelerate and datasets): {e}"
        ) from None
    return Dataset, CrossEncoderTrainer, CrossEncoderTrainingArguments, BinaryCrossEntropyLoss


def read_training_record(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The training settings `train_cross_encoder` saved beside a model (None if absent)."""
    f = Path(path) / _TRAINING_RECORD
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
