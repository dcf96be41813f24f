"""LoL: a learned vector-space query reformulator q' = f(q, d1..dk), trained with L_pr + λ L_cr.

The model (in the spirit of TPRF) is a small pre-norm transformer encoder over the sequence
[q, d1, ..., dK] (K = 5 by default) with learned position embeddings; q' = q + W h_q, where h_q
is the encoder output at the query position and W starts at zero, so an untrained model is the
identity (no PRF).

Training (LoL, "a comparative regularization loss over query reformulation losses"):
- L_pr: cross-entropy of q' over a candidate set, the train-qrels positives (at most
  `max_positives`, highest grade first) plus hard negatives from the first pass, with several
  positives pooled (−log Σ_pos softmax). With `in_batch_negatives` the softmax also runs over
  the other queries' candidates in the batch: without them nothing stops q' from leaving the
  neighbourhood of its first pass (the 50 hard negatives only constrain a small region), and a
  reformulator trained that way memorises the train positives and collapses on unseen queries
  (NFCorpus test nDCG@10 .32 -> .11 before this fix).
- L_cr: each query is revised R times with feedback sizes sampled from {0..K}; for every pair
  of revisions (i with more feedback than j), mean max(0, L_pr_i − L_pr_j): more feedback
  should never make the reformulation worse.
- Model selection: with a `validate` callback (e.g. nDCG@10 of the reformulated retrieval on
  held-out dev queries), the epoch with the best score is kept, epoch 0 (the identity, i.e. no
  PRF) included, and training stops after `patience` epochs without improvement.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankloop.data.types import Qrels, Queries
from rankloop.errors import ConfigError, IndexCorruptError, RankloopError
from rankloop.io import atomic_dir, json_field, open_artifact

__all__ = ["LoL", "LoLConfig", "comparative_regularization", "prf_loss", "train_lol"]

_WEIGHTS = "model.pt"
_CONFIG = "lol.json"
FORMAT = "rankloop.LoL/1"


@dataclass
class LoLConfig:
    """Hyper-parameters of the reformulator and its training."""

    dim: int = 384
    fb_docs: int = 5
    layers: int = 1
    heads: int = 4
    hidden: int = 512
    dropout: float = 0.1
    lambda_cr: float = 1.0
    revisions: int = 3
    temperature: float = 0.05
    n_negatives: int = 50
    max_positives: int = 16
    in_batch_negatives: bool = True
    epochs: int = 8
    patience: int = 2
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.fb_docs < 1 or self.revisions < 1 or self.layers < 1 or self.epochs < 0:
            raise ConfigError("LoL: fb_docs, revisions and layers must be >= 1, epochs >= 0")
        if self.max_positives < 1 or self.patience < 1:
            raise ConfigError("LoL: max_positives and patience must be >= 1")
        if self.dim % self.heads:
            raise ConfigError(f"LoL: dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.temperature <= 0 or self.lambda_cr < 0:
            raise ConfigError("LoL: temperature must be > 0 and lambda_cr >= 0")


def prf_loss(scores, positive):  # (B, C) tensors -> (B,)
    """Multi-positive cross-entropy per row: −log Σ_pos softmax(scores); `positive` is a bool
    (B, C) mask (padded candidates must already carry −inf scores)."""
    import torch

    log_all = torch.logsumexp(scores, dim=-1)
    log_pos = torch.logsumexp(scores.masked_fill(~positive, float("-inf")), dim=-1)
    return log_all - log_pos


def comparative_regularization(losses, sizes):  # (B, R) losses, (B, R) sizes -> scalar
    """Mean of max(0, L_i − L_j) over revision pairs of one query where size_i > size_j
    (0 when no such pair exists): penalises a revision with more feedback that is worse."""
    import torch

    more = sizes[:, :, None] > sizes[:, None, :]  # (B, R, R): revision i has more feedback than j
    gap = torch.relu(losses[:, :, None] - losses[:, None, :])
    n = more.sum()
    if n == 0:
        return losses.new_zeros(())
    return (gap * more).sum() / n


def _build_module(cfg: LoLConfig):
    import torch
    from torch import nn

    class _Reformulator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.position = nn.Parameter(torch.zeros(cfg.fb_docs + 1, cfg.dim))
            nn.init.normal_(self.position, std=0.02)
            layer = nn.TransformerEncoderLayer(
                cfg.dim,
                cfg.heads,
                cfg.hidden,
                dropout=cfg.dropout,
                batch_first=True,
                norm_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
            self.out = nn.Linear(cfg.dim, cfg.dim)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

        def forward(self, q, fb, mask):  # (B, d), (B, K, d), (B, K) bool -> (B, d)
            x = torch.cat([q[:, None, :], fb], dim=1) + self.position[None, : fb.shape[1] + 1]
            pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)
            h = self.encoder(x, src_key_padding_mask=pad)
            return q + self.out(h[:, 0])

    return _Reformulator()


class LoL:
    """Learned PRF reformulator; a `Reformulator` (call it on (queries, feedback, mask)).

    `fit(queries, feedback, feedback_mask, candidates, candidate_mask, positive)` trains it;
    `save(path)` / `LoL.load(path)` persist it.
    """

    def __init__(self, config: LoLConfig | None = None, **params: object) -> None:
        if config is not None and params:
            raise ConfigError("pass a LoLConfig or keyword parameters, not both")
        self.config = config if config is not None else LoLConfig(**params)  # type: ignore[arg-type]
        import torch

        torch.manual_seed(self.config.random_state)
        self.module_ = _build_module(self.config)
        self.history_: list[dict[str, float]] = []
        self.best_epoch_: int | None = None

    @property
    def fb_reads(self) -> int:
        """Feedback documents the model reads."""
        return self.config.fb_docs

    @property
    def name(self) -> str:
        return f"lol-l{self.config.lambda_cr:g}"

    def __call__(self, queries: np.ndarray, feedback: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(n, d) reformulated queries from the first K feedback vectors."""
        import torch

        K = self.config.fb_docs
        fb, m = np.asarray(feedback, np.float32)[:, :K], np.asarray(mask, bool)[:, :K]
        if fb.shape[1] < K:  # pad to K (fewer feedback docs than the model can read)
            extra = K - fb.shape[1]
            fb = np.pad(fb, ((0, 0), (0, extra), (0, 0)))
            m = np.pad(m, ((0, 0), (0, extra)))
        self.module_.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(queries), 1024):
                out.append(
                    self.module_(
                        torch.from_numpy(np.asarray(queries[s : s + 1024], np.float32)),
                        torch.from_numpy(fb[s : s + 1024]),
                        torch.from_numpy(m[s : s + 1024]),
                    ).numpy()
                )
        return np.concatenate(out).astype(np.float32) if out else np.zeros_like(queries)

    def fit(
        self,
        queries: np.ndarray,
        feedback: np.ndarray,
        feedback_mask: np.ndarray,
        candidates: np.ndarray,
        candidate_mask: np.ndarray,
        positive: np.ndarray,
        *,
        candidate_ids: np.ndarray | None = None,
        validate: Callable[[LoL], float] | None = None,
        verbose: bool = False,
    ) -> LoL:
        """Train on n queries: `queries` (n, d), `feedback` (n, ≥K, d) + mask (n, ≥K), candidate
        vectors (n, C, d) + mask (n, C), and `positive` (n, C) bool (at least one per query).

        `candidate_ids` (n, C) ints identify documents, so that an in-batch negative that is
        one of the query's own positives counts as positive. `validate(model) -> score` (higher
        is better) selects the best epoch, the untrained identity model included."""
        import torch

        cfg = self.config
        q = torch.from_numpy(np.asarray(queries, np.float32))
        fb = torch.from_numpy(np.asarray(feedback, np.float32)[:, : cfg.fb_docs])
        fm = torch.from_numpy(np.asarray(feedback_mask, bool)[:, : cfg.fb_docs])
        cand = torch.from_numpy(np.asarray(candidates, np.float32))
        cm = torch.from_numpy(np.asarray(candidate_mask, bool))
        pos = torch.from_numpy(np.asarray(positive, bool)) & cm
        ids = (
            torch.from_numpy(np.asarray(candidate_ids, np.int64))
            if candidate_ids is not None
            else torch.arange(cand.shape[0] * cand.shape[1]).reshape(cand.shape[:2])
        )
        n = q.shape[0]
        if fb.shape[:2] != (n, cfg.fb_docs) or cand.shape[:2] != pos.shape or pos.shape[0] != n:
            raise RankloopError(
                f"LoL.fit: shapes disagree: queries {tuple(q.shape)}, feedback {tuple(fb.shape)} "
                f"(need fb_docs={cfg.fb_docs}), candidates {tuple(cand.shape)}, positive {tuple(pos.shape)}"
            )
        keep = pos.any(dim=1)
        if not bool(keep.any()):
            raise RankloopError("LoL.fit: no query has a positive candidate")
        q, fb, fm, cand, cm, pos, ids = (t[keep] for t in (q, fb, fm, cand, cm, pos, ids))
        n = q.shape[0]
        gen = torch.Generator().manual_seed(cfg.random_state)
        opt = torch.optim.AdamW(self.module_.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        R = cfg.revisions
        self.history_ = []
        best_score, best_epoch, best_state = -np.inf, 0, None
        if validate is not None:
            best_score = float(validate(self))
            best_state = copy.deepcopy(self.module_.state_dict())
            self.history_.append({"epoch": 0, "validation": best_score})
        for epoch in range(cfg.epochs):
            self.module_.train()
            order = torch.randperm(n, generator=gen)
            sums = {"loss": 0.0, "l_pr": 0.0, "l_cr": 0.0}
            for s in range(0, n, cfg.batch_size):
                b = order[s : s + cfg.batch_size]
                B = len(b)
                sizes = torch.randint(0, cfg.fb_docs + 1, (B, R), generator=gen)
                ranks = torch.arange(cfg.fb_docs)[None, None, :]
                rev_mask = fm[b][:, None, :] & (ranks < sizes[:, :, None])  # (B, R, K)
                qr = q[b].repeat_interleave(R, dim=0)
                fbr = fb[b].repeat_interleave(R, dim=0)
                q_new = self.module_(qr, fbr, rev_mask.reshape(B * R, cfg.fb_docs)).reshape(B, R, -1)
                if cfg.in_batch_negatives:  # every query scores the whole batch's candidates
                    c_all, m_all, id_all = cand[b].flatten(0, 1), cm[b].flatten(), ids[b].flatten()
                    own = ids[b].masked_fill(~pos[b], -1)  # (B, C) this query's positive ids
                    p_all = (own[:, :, None] == id_all[None, None, :]).any(1) & m_all[None, :]
                    scores = torch.einsum("brd,cd->brc", q_new, c_all) / cfg.temperature
                    scores = scores.masked_fill(~m_all[None, None, :], float("-inf"))
                    positive_mask = p_all[:, None, :].expand_as(scores)
                else:
                    scores = torch.einsum("brd,bcd->brc", q_new, cand[b]) / cfg.temperature
                    scores = scores.masked_fill(~cm[b][:, None, :], float("-inf"))
                    positive_mask = pos[b][:, None, :].expand_as(scores)
                l_pr = prf_loss(scores, positive_mask)  # (B, R)
                l_cr = comparative_regularization(l_pr, rev_mask.sum(-1))
                loss = l_pr.mean() + cfg.lambda_cr * l_cr
                opt.zero_grad()
                loss.backward()
                opt.step()
                sums["loss"] += loss.item() * B
                sums["l_pr"] += l_pr.mean().item() * B
                sums["l_cr"] += l_cr.item() * B
            record = {k: v / n for k, v in sums.items()} | {"epoch": epoch + 1}
            if validate is not None:
                record["validation"] = float(validate(self))
                if record["validation"] > best_score:
                    best_score, best_epoch = record["validation"], epoch + 1
                    best_state = copy.deepcopy(self.module_.state_dict())
            self.history_.append(record)
            if verbose:
                print(
                    f"LoL epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f} "
                    f"(L_pr {record['l_pr']:.4f}, L_cr {record['l_cr']:.4f})"
                    + (f", validation {record['validation']:.4f}" if validate else ""),
                    flush=True,
                )
            if validate is not None and epoch + 1 - best_epoch >= cfg.patience:
                break
        if best_state is not None:
            self.module_.load_state_dict(best_state)
            self.best_epoch_ = best_epoch
        self.module_.eval()
        return self

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the weights and config to directory `path` atomically, with a checksummed
        manifest; replaces only an empty folder or a saved LoL model (another rankloop
        artefact with `overwrite=True`, any other folder never)."""
        import torch

        with atomic_dir(
            path,
            "LoL model",
            overwrite=overwrite,
            legacy=lambda d: json_field(d / _CONFIG, "format") == FORMAT,  # pre-manifest models
        ) as tmp:
            torch.save(self.module_.state_dict(), tmp / _WEIGHTS)
            doc = {"format": FORMAT, "config": asdict(self.config), "history": self.history_}
            (tmp / _CONFIG).write_text(json.dumps(doc, indent=2), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, verify: bool = True) -> LoL:
        """Read a model written by `save`, checking each file's size and SHA-256 first
        (`verify=False`: sizes only)."""
        import torch

        directory = Path(path)
        open_artifact(
            directory,
            "LoL model",
            verify=verify,
            legacy=lambda d: json_field(d / _CONFIG, "format") == FORMAT,
        )
        try:
            doc = json.loads((directory / _CONFIG).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RankloopError(f"{directory}: no {_CONFIG} (not a saved LoL model)") from None
        except (OSError, ValueError) as e:
            raise IndexCorruptError(f"{directory / _CONFIG}: unreadable ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise IndexCorruptError(f"{directory / _CONFIG}: expected format {FORMAT!r}")
        config = dict(doc["config"])
        if "K" in config:  # models saved before the feedback depth was named fb_docs
            config["fb_docs"] = config.pop("K")
        model = cls(LoLConfig(**config))
        try:
            state = torch.load(directory / _WEIGHTS, map_location="cpu", weights_only=True)
            model.module_.load_state_dict(state)
        except (OSError, RuntimeError) as e:
            raise IndexCorruptError(f"{directory / _WEIGHTS}: unreadable ({e})") from None
        model.history_ = list(doc.get("history", []))
        model.module_.eval()
        return model


def training_candidates(
    first_pass_rows: np.ndarray,
    positives: Sequence[Sequence[int]],
    n_negatives: int,
    max_positives: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate rows (n, P + n_negatives), their mask, and the positive flags: the positives
    (the first `max_positives` of each list, padded to the largest count P) then the first
    `n_negatives` first-pass rows that are not positives (hard negatives)."""
    n = len(positives)
    if max_positives is not None:
        positives = [list(p)[:max_positives] for p in positives]
    P = max((len(p) for p in positives), default=0)
    C = P + n_negatives
    rows = np.full((n, C), -1, np.int64)
    pos = np.zeros((n, C), bool)
    for i, (fp, ps) in enumerate(zip(first_pass_rows, positives)):
        ps = list(ps)
        rows[i, : len(ps)] = ps
        pos[i, : len(ps)] = True
        neg = fp[(fp >= 0) & ~np.isin(fp, ps)][:n_negatives]
        rows[i, P : P + len(neg)] = neg
    return rows, rows >= 0, pos


def positive_rows(
    qrels: Mapping[str, Mapping[str, int]], query_ids: Sequence[str], row_of: Mapping[str, int]
) -> list[list[int]]:
    """Index rows of each query's relevant (grade > 0) docs that the index holds, highest grade
    first (ties keep the qrels order)."""
    out = []
    for q in query_ids:
        judged = [(g, row_of[d]) for d, g in qrels.get(q, {}).items() if g > 0 and d in row_of]
        out.append([r for _, r in sorted(judged, key=lambda t: -t[0])])
    return out


DEV_FRACTION = 0.2  # share of train queries held out for model selection when there is no dev split


def _dev_ndcg(index: Any, qvecs: np.ndarray, query_ids: Sequence[str], qrels: Qrels,
              model: LoL) -> float:  # fmt: skip
    """nDCG@10 (top 100) of dense retrieval with `model` reformulating from the dense top K."""
    from rankloop.eval import evaluate
    from rankloop.prf.rocchio import VectorPRF, run_from_rows

    scores, rows = VectorPRF(index, model).search_vectors(qvecs, 100)
    run = run_from_rows(index, query_ids, scores, rows, "dev")
    return float(evaluate(qrels.subset(query_ids), run, ["ndcg_cut_10"])["ndcg_cut_10"])


def train_lol(
    index: Any,
    qvecs: np.ndarray | Callable[[], np.ndarray],
    queries: Queries,
    qrels: Qrels,
    *,
    dev: tuple[np.ndarray | Callable[[], np.ndarray], Queries, Qrels] | None = None,
    config: LoLConfig | None = None,
    max_train_queries: int | None = None,
    cache: str | os.PathLike[str] | None = None,
    cache_key: Mapping[str, Any] | None = None,
    verbose: bool = True,
) -> LoL:
    """Train a LoL reformulator on `queries` (vectors `qvecs`, judgements `qrels`) over the
    dense `index`, with feedback from the dense top `fb_docs`.

    The epoch is selected by nDCG@10 on `dev` (vectors, queries, qrels), or, without one, on a
    seeded `DEV_FRACTION` of the queries held out from training; the untrained identity model
    (no PRF) competes too, so a model that does not help on dev is never kept.
    `max_train_queries` caps the training queries by a seeded sample (bounded CPU time). With
    `cache` (a directory), the model is saved there under a hash of the configuration, the
    query ids and `cache_key` (e.g. the data set and encoder), and loaded when present.
    `qvecs` (and the vectors of `dev`) may be functions that return the vectors: they are then
    called only when the model is not in `cache` (a cached model needs no query encoded).
    """
    import hashlib

    from rankloop._runtime import check_random_state
    from rankloop.prf.rocchio import gather_feedback

    cfg = config if config is not None else LoLConfig(dim=index.dim)
    if cfg.dim != index.dim:
        raise ConfigError(f"LoL dim {cfg.dim} differs from the index's {index.dim}")

    def vectors(source: np.ndarray | Callable[[], np.ndarray], n: int) -> np.ndarray:
        out = np.asarray(source() if callable(source) else source, np.float32)
        if len(out) != n:
            raise RankloopError(f"{n} queries but {len(out)} query vectors")
        return out

    n_all = len(queries)
    if not callable(qvecs):
        qvecs = vectors(qvecs, n_all)
    ids = list(queries.ids)
    rows = np.arange(n_all)  # the training queries' rows in `qvecs`
    held = None  # the held-out dev queries' rows in `qvecs` (no dev set given)
    if dev is None:
        order = check_random_state(cfg.random_state).permutation(len(ids))
        n_dev = max(1, round(DEV_FRACTION * len(order)))
        held, rows = np.sort(order[:n_dev]), np.sort(order[n_dev:])
        dev = (None, queries.subset([ids[i] for i in held]), qrels)  # type: ignore[assignment]
        queries = queries.subset([ids[i] for i in rows])
        ids = list(queries.ids)
    if max_train_queries is not None and len(ids) > max_train_queries:
        keep = np.sort(
            check_random_state(cfg.random_state).choice(len(ids), max_train_queries, replace=False)
        )
        rows, queries = rows[keep], queries.subset([ids[i] for i in keep])
        ids = list(queries.ids)
    dev_vecs, dev_queries, dev_qrels = dev
    path = None
    if cache is not None:
        ident = json.dumps(
            {"cfg": asdict(cfg), "key": dict(cache_key or {}),
             "q": hashlib.sha256("|".join(ids).encode()).hexdigest(),
             "dev": hashlib.sha256("|".join(dev_queries.ids).encode()).hexdigest()},
            sort_keys=True,
        )  # fmt: skip
        path = Path(cache) / f"lol-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"
        if (path / _CONFIG).is_file():
            if verbose:
                print(f"[lol] cached model {path}", file=sys.stderr, flush=True)
            return LoL.load(path)
    all_vecs = vectors(qvecs, n_all)
    qvecs = all_vecs[rows]
    if held is not None:
        dev_vecs = all_vecs[held]
    else:
        dev_vecs = vectors(dev_vecs, len(dev_queries))
    _, rows = index.search_rows(qvecs, max(100, cfg.n_negatives + cfg.fb_docs))
    fb, mask = gather_feedback(index, rows[:, : cfg.fb_docs])
    row_of = dict(zip(index.ids, range(index.ntotal)))
    positives = positive_rows(qrels.data, ids, row_of)
    crow, cmask, cpos = training_candidates(rows, positives, cfg.n_negatives, cfg.max_positives)
    cand, _ = gather_feedback(index, crow)
    if verbose:
        print(f"[lol] training on {len(ids)} queries (λ_cr={cfg.lambda_cr}), selecting on "
              f"{len(dev_queries)} dev queries", file=sys.stderr, flush=True)  # fmt: skip
    model = LoL(cfg).fit(
        qvecs, fb, mask, cand, cmask, cpos, candidate_ids=crow, verbose=verbose,
        validate=lambda m: _dev_ndcg(index, dev_vecs, dev_queries.ids, dev_qrels, m),
    )  # fmt: skip
    if path is not None:
        model.save(path)
    return model
