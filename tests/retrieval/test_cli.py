"""`rankloop index build`, `search` and `run` on the 200-doc SciFact slice (a BEIR folder path)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from rankloop.cli import main
from rankloop.data.trec import read_run


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, encoder_cache: Path) -> None:
    """Embeddings and BM25 indexes go to the session's cache, never the user's."""
    monkeypatch.setenv("RANKLOOP_CACHE", str(encoder_cache.parent))


def cli(command: str, **paths: Path) -> int:
    """Run `rankloop <command>`, with `{name}` placeholders filled from `paths`."""
    return main([part.format(**paths) for part in command.split()])


def test_run_dense_prints_table_and_writes_outputs(
    scifact_slice_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = "run --dataset {ds} --retriever dense --k 100 --max-length 128"
    assert cli(command + " --out-dir {out}", ds=scifact_slice_dir, out=tmp_path / "out") == 0
    out, err = capsys.readouterr()
    assert "| system | nDCG@10 | MAP@100 | R@100 | R@1000 |" in out
    assert "dense:all-MiniLM-L6-v2" in out and "20 queries" in out
    assert "dense: sentence-transformers/all-MiniLM-L6-v2, 200 docs" in err
    run = read_run(tmp_path / "out" / "dense_all-MiniLM-L6-v2.trec")
    assert len(run) == 20 and all(len(d) == 100 for d in run.data.values())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["config"]["retriever"] == "dense"
    assert (tmp_path / "out" / "results.md").is_file()
    assert cli(command, ds=scifact_slice_dir) == 0  # again: embeddings come from the cache
    assert "embeddings cached" in capsys.readouterr().err


def test_index_build_then_search_dense(scifact_slice_dir: Path, tmp_path: Path) -> None:
    idx, out = tmp_path / "dense-idx", tmp_path / "run.trec"
    build = "index build --dataset {ds} --kind dense --factory HNSW32 --max-length 128 --out {idx}"
    assert cli(build, ds=scifact_slice_dir, idx=idx) == 0
    meta = json.loads((idx / "retriever.json").read_text())
    assert meta["kind"] == "dense" and meta["factory"] == "HNSW32" and meta["n_docs"] == 200
    search = "search --index {idx} --dataset {ds} --k 10 --out {out} --param efSearch=64"
    assert cli(search, ds=scifact_slice_dir, idx=idx, out=out) == 0
    run = read_run(out)
    assert len(run) == 20 and all(len(d) == 10 for d in run.data.values())


def test_cli_errors_are_clean(
    scifact_slice_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    search = "search --index {idx} --dataset {ds} --out {out}"
    assert cli(search, idx=tmp_path / "empty", ds=scifact_slice_dir, out=tmp_path / "r") == 2
    assert "no retriever.json" in capsys.readouterr().err
    assert cli("run --dataset {ds} --param nprobe", ds=scifact_slice_dir) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert cli("run --dataset {ds} --k 0", ds=scifact_slice_dir) == 2
    assert "--k must be >= 1" in capsys.readouterr().err
    if importlib.util.find_spec("onnxruntime") is not None:
        assert cli("run --dataset {ds} --backend onnx --compile", ds=scifact_slice_dir) == 2
        assert "compile=True applies to the torch backends" in capsys.readouterr().err


@pytest.mark.usefixtures("require_bm25")
def test_bm25_and_hybrid_cli(
    scifact_slice_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    idx, out = tmp_path / "bm25-idx", tmp_path / "bm25.trec"
    assert (
        cli("index build --dataset {ds} --kind bm25 --out {idx}", ds=scifact_slice_dir, idx=idx)
        == 0
    )
    search = "search --index {idx} --dataset {ds} --k 50 --b 0.75 --out {out}"
    assert cli(search, idx=idx, ds=scifact_slice_dir, out=out) == 0
    assert len(read_run(out)) == 20
    capsys.readouterr()
    hybrid = "run --dataset {ds} --retriever hybrid --k 100 --max-length 128"
    assert cli(hybrid, ds=scifact_slice_dir) == 0
    table = capsys.readouterr().out
    for name in ("dense:all-MiniLM-L6-v2", "bm25 (baseline)", "hybrid:rrf"):
        assert name in table
