"""Encoder backends: agreement with torch float32, cache keys, the `auto` choice, missing
packages, and exports that a failure leaves no trace of."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rankloop.embed import encoders
from rankloop.embed.encoders import (
    BACKENDS,
    CpuInfo,
    Encoder,
    backend_available,
    ensure_export,
    export_dir,
    model_fingerprint,
    write_backend_decision,
)
from rankloop.errors import ConfigError, RankloopError

TEXTS = [
    "does regular exercise reduce blood pressure in older adults?",
    "Mitochondrial protein import depends on the membrane potential of the inner membrane.",
    "A randomized trial of vitamin D supplements found no effect on fracture risk.",
]
MISSING = {
    b: "" if backend_available(b) else f"{b}: pip install 'rankloop[fast]'" for b in BACKENDS
}


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private RANKLOOP_CACHE for the module: exports and decision files land there."""
    root = tmp_path_factory.mktemp("rankloop-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKLOOP_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def reference(cache_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """torch float32 document and query vectors of TEXTS."""
    enc = Encoder(show_progress=False, device="cpu")
    return enc.encode_docs(TEXTS), enc.encode_queries(TEXTS[:1])


@pytest.fixture
def fake_cpu(monkeypatch: pytest.MonkeyPatch, cache_root: Path):
    """Make `read_cpu_info` report a CPU with the given flags."""

    def set_flags(*flags: str, model: str = "Test CPU") -> CpuInfo:
        cpu = CpuInfo(model, frozenset(flags))
        monkeypatch.setattr(encoders, "read_cpu_info", lambda *a, **k: cpu)
        return cpu

    return set_flags


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_backend_agrees_with_torch_fp32(backend, reference, cache_root):
    if MISSING[backend]:
        pytest.skip(f"packages missing for {MISSING[backend]}")
    enc = Encoder(backend=backend, show_progress=False, device="cpu")
    docs, query = enc.encode_docs(TEXTS), enc.encode_queries(TEXTS[:1])
    assert docs.shape == (3, 384) and docs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)
    cos = np.concatenate([(docs * reference[0]).sum(1), (query * reference[1]).sum(1)])
    assert cos.min() >= 0.99, cos
    tokens = enc.encode_tokens(TEXTS[:1])
    assert tokens.vectors.dtype == np.float32 and len(tokens) == 1
    if backend in ("onnx", "onnx-int8", "openvino"):  # exported into rankloop's cache, sealed
        assert enc.device == "cpu"
        variant = {"onnx-int8": f"onnx-int8-{enc.precision.removeprefix('int8-')}"}
        folder = export_dir(enc._base_fingerprint(), variant.get(backend, backend))
        assert folder.is_relative_to(cache_root) and (folder / "rankloop.json").is_file()


def test_cache_key_includes_backend_and_precision(cache_root, fake_cpu):
    fake_cpu("avx2", "avx512_vnni")
    available = [b for b in BACKENDS if not MISSING[b]]
    encs = {b: Encoder(backend=b, show_progress=False, device="cpu") for b in available}
    prints = {b: e.fingerprint for b, e in encs.items()}
    assert len(set(prints.values())) == len(prints), prints
    # torch keeps the plain fingerprint, so caches from before backends stay valid
    torch_enc = encs["torch"]
    assert prints["torch"] == model_fingerprint(torch_enc.name, torch_enc._model_dir)
    assert prints["torch-bf16"].endswith("+torch-bf16")
    if "onnx-int8" in encs:
        assert encs["onnx-int8"].precision == "int8-avx512_vnni"
        assert prints["onnx-int8"].endswith("+onnx-int8-avx512_vnni")
    from rankloop.data.types import Corpus

    corpus = Corpus(["d1"], [""], ["text"], "one")
    paths = {e.cache_path(corpus) for e in encs.values()}
    assert len(paths) == len(encs)


def test_read_cpu_info_takes_the_first_processor(tmp_path):
    block = "processor\t: {n}\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 {extra}\n\n"
    path = tmp_path / "cpuinfo"
    path.write_text(block.format(n=0, extra="avx512_vnni amx_bf16") + block.format(n=1, extra=""))
    cpu = encoders.read_cpu_info(path)
    assert cpu.model == "Some Xeon" and cpu.features == ["avx2", "avx512_vnni", "amx_bf16"]
    assert encoders.read_cpu_info(tmp_path / "missing").flags == frozenset()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_bf16"), "torch-bf16"),
        (("avx2", "avx512f", "avx512_bf16", "avx512_vnni"), "torch-bf16"),
        (("avx2", "avx512f", "avx512_vnni"), "onnx-int8"),
        (("avx2", "avx_vnni"), "onnx-int8"),
        (("avx2",), "torch"),
    ],
)
def test_auto_rule_from_cpu_flags(flags, expected, fake_cpu, monkeypatch, capsys):
    fake_cpu(*flags)
    monkeypatch.setattr(encoders, "backend_available", lambda b: True)
    enc = Encoder(backend="auto", device="cpu", show_progress=False)
    assert enc.backend == expected
    err = capsys.readouterr().err
    assert f"backend auto -> {expected}" in err and "by rule" in err


def test_auto_reads_this_cpus_decision_file(fake_cpu, capsys):
    fake_cpu("avx2", "avx512f", "avx512_vnni")  # the rule would say onnx-int8
    path = write_backend_decision("torch-bf16", "fastest within the loss bound", {"measured": {}})
    assert json.loads(path.read_text())["features"] == ["avx2", "avx512f", "avx512_vnni"]
    enc = Encoder(backend="auto", device="cpu", show_progress=False)
    assert enc.backend == "torch-bf16"
    assert "measured on this CPU" in capsys.readouterr().err
    # another CPU (other flags) does not read this machine's decision
    fake_cpu("avx2")
    other = Encoder(backend="auto", device="cpu", show_progress=False)
    assert other.backend == "torch"  # by rule: neither bf16 units nor VNNI
    path.unlink()


def test_auto_keeps_torch_on_cuda_and_without_packages(fake_cpu, monkeypatch):
    fake_cpu("avx2", "avx512_vnni")
    assert Encoder(backend="auto", device="cuda", show_progress=False).backend == "torch"
    monkeypatch.setattr(encoders, "backend_available", lambda b: b.startswith("torch"))
    assert Encoder(backend="auto", device="cpu", show_progress=False).backend == "torch"


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8", "openvino"])
def test_missing_package_raises_config_error_naming_the_extra(backend, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("onnxruntime", "openvino") else real(name, *a),
    )
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"pip install 'rankloop\[fast\]'"):
        Encoder(backend=backend)
    assert time.perf_counter() - start < 2


def test_bad_backend_or_device_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown backend"):
        Encoder(backend="tensorrt")
    if not MISSING["onnx"]:
        with pytest.raises(ConfigError, match="CPU only"):
            Encoder(backend="onnx", device="cuda")


def test_failed_export_leaves_nothing_a_later_run_trusts(cache_root):
    target = cache_root / "exports" / "m" / "onnx"

    def broken(tmp: Path) -> None:
        (tmp / "model.onnx").write_bytes(b"half a graph")
        raise KeyboardInterrupt  # as a kill mid-export would

    with pytest.raises(KeyboardInterrupt):
        ensure_export(target, "onnx-export", broken)
    assert not target.exists() and list(target.parent.iterdir()) == []

    calls = []

    def good(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "model.onnx").write_bytes(b"a whole graph")

    assert ensure_export(target, "onnx-export", good) == target
    assert ensure_export(target, "onnx-export", broken) == target  # complete: not rebuilt
    assert len(calls) == 1
    (target / "model.onnx").write_bytes(b"a who")  # damaged (truncated) after the fact
    ensure_export(target, "onnx-export", good)
    assert len(calls) == 2 and (target / "model.onnx").read_bytes() == b"a whole graph"


def test_encoder_export_failure_is_named_and_clean(cache_root, monkeypatch):
    if MISSING["onnx"]:
        pytest.skip(f"packages missing for {MISSING['onnx']}")

    def half_export(st, out: Path) -> None:
        (out / "model.onnx").write_bytes(b"\x08\x07")
        raise RuntimeError("disk full")

    monkeypatch.setenv("RANKLOOP_CACHE", str(cache_root / "fresh"))
    monkeypatch.setattr(encoders, "_export_onnx", half_export)
    enc = Encoder(backend="onnx", show_progress=False)
    with pytest.raises(RankloopError, match=r"backend 'onnx'.*disk full"):
        enc.encode_docs(TEXTS[:1])
    folder = export_dir(enc._base_fingerprint(), "onnx")
    assert not folder.exists() and list(folder.parent.iterdir()) == []



@pytest.mark.skipif(encoders._cxx_compiler() is None, reason="no C++ compiler for TorchInductor")
def test_compiled_transformer_agrees_with_eager_and_shares_the_cache_key(cache_root):
    eager = Encoder(backend="torch-bf16", show_progress=False, device="cpu")
    compiled = Encoder(backend="torch-bf16", compile=True, show_progress=False, device="cpu",
                       batch_size=2)  # fmt: skip
    assert "compile=True" in repr(compiled)
    assert compiled.fingerprint == eager.fingerprint  # same computation, same precision
    # one graph for every batch size and length: a batch of 2, a lone text, a long one
    texts = [*TEXTS, "word " * 300]
    cos = (compiled.encode_docs(texts) * eager.encode_docs(texts)).sum(1)
    assert cos.min() >= 0.9999, cos
    one = compiled.encode_queries(TEXTS[:1])
    assert (one * eager.encode_queries(TEXTS[:1])).sum() >= 0.9999


def test_compile_is_refused_where_it_cannot_work(monkeypatch):
    if not MISSING["onnx"]:
        with pytest.raises(ConfigError, match="torch backends"):
            Encoder(backend="onnx", compile=True)
    monkeypatch.setattr(encoders, "_cxx_compiler", lambda: None)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        Encoder(compile=True, device="cpu")
    assert time.perf_counter() - start < 2


def test_a_failed_compile_is_named(cache_root, monkeypatch):
    import torch

    class Broken(torch.nn.Module):  # like torch.compile's wrapper: the module's attributes show
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def __getattr__(self, name: str):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(super().__getattr__("inner"), name)

        def forward(self, *a, **k):
            raise RuntimeError("InductorError: no cpp toolchain")

    def broken(module, **kwargs):
        return Broken(module)

    monkeypatch.setattr(torch, "compile", broken)
    enc = Encoder(backend="torch", compile=True, show_progress=False, device="cpu")
    with pytest.raises(RankloopError, match=r"torch.compile of .* failed.*no cpp toolchain"):
        _ = enc.model
