"""`ColBERTEncoder`: per-token vectors from a real ColBERT checkpoint (BERT + linear projection).

A ColBERT checkpoint in the Hugging Face layout (e.g. `colbert-ir/colbertv2.0`) is a BERT-style
`config.json`, a tokenizer, and one weights file (`model.safetensors` or `pytorch_model.bin`)
whose keys are the encoder's under `bert.` plus `linear.weight`, the (dim, hidden) projection.
It is loaded with `transformers` (no colbert-ai package) and exposes the same `encode_tokens`
interface as `rankloop.embed.encoders.Encoder`, so `MultiVectorIndex`, `MultiVectorRetriever`
and ColBERT-PRF use it unchanged.

Encoding follows ColBERT: a marker token (`[unused0]` for queries, `[unused1]` for documents)
follows [CLS]; queries are padded with [MASK] to `query_maxlen` (query augmentation: the
[MASK] rows are kept, not attended to); documents are cut at `doc_maxlen` and their
punctuation rows dropped. Every output row is L2-normalised.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from rankloop.embed.encoders import (
    TokenEmbeddings,
    check_texts,
    hub_cached,
    model_fingerprint,
    quiet_transformers,
    resolve_model,
)
from rankloop.embed.gpu import default_device
from rankloop.errors import ConfigError, ModelNotAvailableError, RankloopError

__all__ = ["ColBERTEncoder", "hub_available"]

Kind = Literal["query", "doc"]
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_LINEAR_KEY = "linear.weight"
_QUERY_MARKER = "[unused0]"
_DOC_MARKER = "[unused1]"


def _read_state_dict(model_dir: Path) -> dict[str, Any]:
    """The checkpoint's tensors, from safetensors when present, else a PyTorch pickle."""
    import torch

    for name in _WEIGHT_FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged weights file is a boundary error
            raise ModelNotAvailableError(f"{path}: unreadable ColBERT weights ({e})") from e
    raise ModelNotAvailableError(
        f"{model_dir}: no ColBERT weights file (expected one of {', '.join(_WEIGHT_FILES)})"
    )


class ColBERTEncoder:
    """Token encoder for a ColBERT checkpoint (local directory or hub name), loaded eagerly."""

    def __init__(
        self,
        model: str = "colbert-ir/colbertv2.0",
        *,
        device: str | None = None,
        query_maxlen: int = 32,
        doc_maxlen: int = 180,
        batch_size: int = 32,
        show_progress: bool = True,
    ) -> None:
        if batch_size < 1 or query_maxlen < 3 or doc_maxlen < 3:
            raise ConfigError(
                "batch_size must be >= 1 and query_maxlen, doc_maxlen >= 3, got "
                f"{batch_size}, {query_maxlen}, {doc_maxlen}"
            )
        name, model_dir = resolve_model(model)
        if model_dir is None:  # not local, hub reachable: download now so a bad name fails here
            from huggingface_hub import snapshot_download

            try:
                model_dir = Path(snapshot_download(name))
            except Exception as e:
                raise ModelNotAvailableError(f"could not download {name!r}: {e}") from e
        self.name = name
        self._model_dir = model_dir
        self.query_maxlen = query_maxlen
        self.doc_maxlen = doc_maxlen
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.device = device or default_device()
        self._fingerprint: str | None = None
        self._load()

    def _load(self) -> None:
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        try:
            with quiet_transformers():
                config = AutoConfig.from_pretrained(self._model_dir, local_files_only=True)
                self.tokenizer = AutoTokenizer.from_pretrained(
                    self._model_dir, local_files_only=True
                )
                bert = AutoModel.from_config(config)
        except Exception as e:
            raise ModelNotAvailableError(
                f"could not load ColBERT config/tokenizer from {self._model_dir}: {e}"
            ) from e
        state = _read_state_dict(self._model_dir)
        if _LINEAR_KEY not in state:
            raise ModelNotAvailableError(
                f"{self._model_dir}: no {_LINEAR_KEY!r} in the weights: not a ColBERT checkpoint"
            )
        linear = state.pop(_LINEAR_KEY).float()
        prefix = f"{bert.base_model_prefix}."
        enc_state = {k.removeprefix(prefix): v for k, v in state.items()}
        missing, unexpected = bert.load_state_dict(enc_state, strict=False)
        missing = [k for k in missing if not k.startswith("pooler.")]
        unexpected = [k for k in unexpected if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ModelNotAvailableError(
                f"{self._model_dir}: encoder weights do not match the config "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        if linear.ndim != 2 or linear.shape[1] != config.hidden_size:
            raise ModelNotAvailableError(
                f"{self._model_dir}: {_LINEAR_KEY} has shape {tuple(linear.shape)}, expected "
                f"(dim, {config.hidden_size})"
            )
        self.bert = bert.to(self.device).eval()
        self.linear = torch.nn.Linear(linear.shape[1], linear.shape[0], bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(linear)
        self.linear = self.linear.to(self.device).eval()
        tok = self.tokenizer
        vocab = tok.get_vocab()
        for marker in (_QUERY_MARKER, _DOC_MARKER):
            if marker not in vocab:
                raise ModelNotAvailableError(
                    f"{self._model_dir}: tokenizer has no {marker} marker token"
                )
        if tok.mask_token_id is None or tok.cls_token_id is None or tok.pad_token_id is None:
            raise ModelNotAvailableError(
                f"{self._model_dir}: tokenizer lacks [CLS], [PAD] or [MASK]"
            )
        self._marker = {"query": vocab[_QUERY_MARKER], "doc": vocab[_DOC_MARKER]}
        punct = [vocab[c] for c in string.punctuation if c in vocab]
        self._skip = torch.tensor(sorted(punct), dtype=torch.long, device=self.device)

    def __repr__(self) -> str:
        return f"ColBERTEncoder({self.name!r}, dim={self.dim}, doc_maxlen={self.doc_maxlen})"

    @property
    def dim(self) -> int:
        """Dimension of the projected token vectors."""
        return int(self.linear.out_features)

    @property
    def max_length(self) -> int:
        """Token limit per document (queries use `query_maxlen`)."""
        return self.doc_maxlen

    @property
    def fingerprint(self) -> str:
        """Model name plus a hash of its files."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.name, self._model_dir)
        return self._fingerprint

    def _batch(self, texts: list[str], kind: Kind) -> tuple[Any, Any, Any]:
        """Tokenised batch with the ColBERT marker after [CLS]: (input_ids, attention, keep)."""
        import torch

        maxlen = self.query_maxlen if kind == "query" else self.doc_maxlen
        enc = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=maxlen - 1, return_tensors="pt"
        )
        ids, att = enc["input_ids"], enc["attention_mask"]
        marker = torch.full((ids.shape[0], 1), self._marker[kind], dtype=ids.dtype)
        ids = torch.cat([ids[:, :1], marker, ids[:, 1:]], dim=1)
        att = torch.cat([att[:, :1], torch.ones_like(marker), att[:, 1:]], dim=1)
        if kind == "query":  # query augmentation: pad with [MASK] to query_maxlen, keep every row
            pad = maxlen - ids.shape[1]
            ids = torch.nn.functional.pad(ids, (0, pad), value=self.tokenizer.pad_token_id)
            att = torch.nn.functional.pad(att, (0, pad), value=0)
            ids = torch.where(att.bool(), ids, self.tokenizer.mask_token_id)
            keep = torch.ones_like(ids, dtype=torch.bool)
        else:
            keep = att.bool() & ~torch.isin(ids, self._skip.cpu())
        return ids.to(self.device), att.to(self.device), keep.to(self.device)

    def encode_tokens(
        self, texts: Sequence[str], kind: Kind = "doc", *, keep_special: bool = True
    ) -> TokenEmbeddings:
        """Per-token ColBERT vectors (projected, L2-normalised), packed as `TokenEmbeddings`.

        With `keep_special=False` the [CLS]/[SEP]/marker rows are dropped too (never the
        query's [MASK] augmentation rows).
        """
        import torch

        if kind not in ("query", "doc"):
            raise RankloopError(f"kind must be 'query' or 'doc', got {kind!r}")
        texts = check_texts(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths per batch
        vec_parts: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        id_parts: list[np.ndarray] = [np.zeros(0, np.int32)] * len(texts)
        drop = torch.tensor(
            [self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, *self._marker.values()],
            device=self.device,
        )
        bar = tqdm(
            total=len(texts),
            desc="ColBERT tokens",
            disable=not self.show_progress or len(texts) < 1000,
        )
        with bar, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                pos = order[start : start + self.batch_size]
                ids, att, keep = self._batch([texts[i] for i in pos], kind)
                if not keep_special:
                    keep &= ~torch.isin(ids, drop)
                hidden = self.bert(input_ids=ids, attention_mask=att).last_hidden_state
                out = torch.nn.functional.normalize(self.linear(hidden).float(), dim=-1)
                for j, i in enumerate(pos):
                    vec_parts[i] = out[j][keep[j]].cpu().numpy().astype(np.float32, copy=False)
                    id_parts[i] = ids[j][keep[j]].cpu().numpy().astype(np.int32)
                bar.update(len(pos))
        lengths = np.array([len(t) for t in id_parts], dtype=np.int64)
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return TokenEmbeddings(
            np.concatenate(vec_parts) if texts else np.zeros((0, self.dim), np.float32),
            np.concatenate(id_parts) if texts else np.zeros(0, np.int32),
            offsets,
        )


def hub_available(model: str = "colbert-ir/colbertv2.0") -> bool:
    """Whether `model` is in the local HF cache or downloadable (used to skip network tests)."""
    if hub_cached(model) is not None:
        return True
    try:
        resolve_model(model)
    except ModelNotAvailableError:
        return False
    return True
