"""Resumable embedding shards and the bounded-memory index build from them: the TSV reader's
checks, resume after kill -9 (the same index as an uninterrupted build), refused mixes, and
the 1M-passage build within 4 GB (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rankloop.data.beir import load_beir
from rankloop.data.msmarco import read_collection, write_synthetic_collection
from rankloop.embed.encoders import Encoder
from rankloop.embed.index import VectorIndex
from rankloop.embed.shards import CorpusSource, EmbeddingShards, TsvCollection, encode_shards
from rankloop.embed.static import static_encoder_from
from rankloop.errors import FormatError, RankloopError
from rankloop.retrieval.dense import DenseRetriever


@pytest.fixture(scope="module")
def static_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The static word-piece encoder of the offline MiniLM (thousands of documents a second)."""
    return static_encoder_from(None, tmp_path_factory.mktemp("static") / "model")


@pytest.fixture(scope="module")
def collection(scifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tsv") / "collection.tsv"
    write_synthetic_collection(load_beir(scifact_dir).corpus, path, 6_000, progress=False)
    return path


def test_tsv_ranges_equal_the_reader(collection: Path, tmp_path: Path) -> None:
    source = TsvCollection(collection)
    corpus = read_collection(collection)
    assert len(source) == len(corpus) == 6_000
    for start, stop in ((0, 5), (999, 1_003), (5_990, 6_000)):
        assert source.read(start, stop) == (corpus.ids[start:stop], corpus.texts[start:stop])
    spaced = tmp_path / "spaced.tsv"
    spaced.write_text("a\tfirst\n\n  \nb\tsecond\n", encoding="utf-8")
    assert TsvCollection(spaced).read(0, 2) == (["a", "b"], ["first", "second"])


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"1\tok\n2 no tab\n", r"bad\.tsv:2: expected 'id<TAB>text'"),
        (b"1\tok\n2\ttwo\ttabs\n", r"bad\.tsv:2: expected 'id<TAB>text'"),
        (b"1\tok\n\tno id\n", r"bad\.tsv:2: expected 'id<TAB>text'.*non-empty id"),
        (b"1\tok\n2\t\xff\xfe\n", r"bad\.tsv:2: expected UTF-8 text"),
        (b"1\tok\n2\tx\n1\tagain\n", r"bad\.tsv:3: expected a unique id \(line 1 has '1' too\)"),
    ],
)
def test_malformed_collections_fail_with_file_and_line(
    tmp_path: Path, body: bytes, match: str
) -> None:
    path = tmp_path / "bad.tsv"
    path.write_bytes(body)
    with pytest.raises(FormatError, match=match):
        TsvCollection(path)


def test_missing_empty_and_gzipped_collections(tmp_path: Path) -> None:
    with pytest.raises(RankloopError, match="not found"):
        TsvCollection(tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_text("\n", encoding="utf-8")
    with pytest.raises(RankloopError, match="empty"):
        TsvCollection(tmp_path / "empty.tsv")
    (tmp_path / "c.tsv.gz").write_bytes(b"")
    with pytest.raises(RankloopError, match="decompress it first"):
        TsvCollection(tmp_path / "c.tsv.gz")


def _build(collection: Path, model: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rankloop.cli", "index", "build", "--collection", str(collection),
           "--kind", "dense", "--model", str(model), "--batch-size", "16", "--shard-size", "150",
           "--factory", "IVF16,Flat", "--train-size", "2000", "--out", str(out), *extra]  # fmt: skip
    with open(out.with_name(out.name + ".log"), "a", encoding="utf-8") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=log)  # the child keeps its own copy


def _log(out: Path) -> str:
    return out.with_name(out.name + ".log").read_text(encoding="utf-8")


def test_kill_9_mid_encoding_resumes_to_the_same_index(
    collection: Path, static_model: Path, tmp_path: Path
) -> None:
    whole = _build(collection, static_model, tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, _log(tmp_path / "whole")[-2000:]
    killed_out = tmp_path / "killed"
    shards = killed_out.with_name("killed.shards")
    proc = _build(collection, static_model, killed_out)
    deadline = time.monotonic() + 240
    while len(list(shards.glob("shard-*.npy"))) < 10 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = len(list(shards.glob("shard-*.npy")))
    assert 10 <= done < 40 and not killed_out.exists()  # killed half-way: no index yet
    again = _build(collection, static_model, killed_out)
    assert again.wait(timeout=300) == 0, _log(killed_out)[-2000:]
    err = _log(killed_out)
    assert f"resuming {shards}: {done} of 40 shards already encoded" in err
    a, b = DenseRetriever.load(tmp_path / "whole"), DenseRetriever.load(killed_out)
    assert a.index.ids == b.index.ids
    np.testing.assert_array_equal(
        a.index.vectors_at(range(6_000)), b.index.vectors_at(range(6_000))
    )
    q = a.index.vectors_at(range(0, 6_000, 200))
    assert a.index.search(q, 10, nprobe=4)[1] == b.index.search(q, 10, nprobe=4)[1]
    meta = json.loads((killed_out / "retriever.json").read_text())
    assert meta["source"]["n_docs"] == 6_000 and meta["factory"] == "IVF16,Flat"


def test_shards_of_another_encoding_are_refused(
    scifact_dir: Path, static_model: Path, tmp_path: Path
) -> None:
    corpus = load_beir(scifact_dir).corpus
    enc = Encoder(str(static_model), show_progress=False)
    source = CorpusSource(corpus)
    shards = encode_shards(source, enc, tmp_path / "s", shard_size=1000, progress=False)
    assert shards.n_shards == 6 and not shards.missing()
    with pytest.raises(RankloopError, match="shard_size"):
        encode_shards(source, enc, tmp_path / "s", shard_size=500, progress=False)
    (tmp_path / "s" / "shard-00002.npy").unlink()
    with pytest.raises(RankloopError, match="1 of 6 shards are missing"):
        DenseRetriever.build_from_shards(EmbeddingShards.open(tmp_path / "s"), tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


def test_streamed_write_equals_the_in_memory_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    ids = [f"d{i}" for i in range(3000)]
    mem = VectorIndex(16, "IVF8,Flat", metric="cosine")
    mem.train(x, seed=0)
    mem.add(ids, x)
    mem.save(tmp_path / "mem")
    (tmp_path / "streamed").mkdir()
    VectorIndex.write_streamed(tmp_path / "streamed", ((ids[i:i + 700], x[i:i + 700]) for i in range(0, 3000, 700)),
                               total=3000, dim=16, factory="IVF8,Flat", metric="cosine",
                               sample=lambda n: x[:n], progress=False)  # fmt: skip
    a, b = VectorIndex.load(tmp_path / "mem"), VectorIndex.load(tmp_path / "streamed", verify=False)
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.vectors(ids), b.vectors(ids))
    assert a.search(x[:20], 5, nprobe=8)[1] == b.search(x[:20], 5, nprobe=8)[1]
    (tmp_path / "dup").mkdir()
    with pytest.raises(RankloopError, match="duplicate id 'd0' \\(row 700\\)"):
        VectorIndex.write_streamed(tmp_path / "dup", [(ids[:700], x[:700]), (ids[:700], x[:700])],
                                   total=1400, dim=16, progress=False)  # fmt: skip


@pytest.mark.slow
def test_a_million_passages_in_bounded_memory(
    scifact_dir: Path, static_model: Path, tmp_path: Path
) -> None:
    """The issue's bound: 1M generated passages -> shards -> IVF-PQ + stored vectors, peak RSS
    at most 4 GB (`benchmarks/msmarco_scale.py` measures the same with timings)."""
    tsv = tmp_path / "collection.tsv"
    write_synthetic_collection(load_beir(scifact_dir).corpus, tsv, 1_000_000, progress=False)
    cmd = [sys.executable, "-c", "import resource, sys; from rankloop.cli import main; rc = main(sys.argv[1:]); "
           "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)",
           "index", "build", "--collection", str(tsv), "--kind", "dense", "--model", str(static_model),
           "--batch-size", "256", "--shard-size", "50000", "--factory", "IVF1024,PQ48",
           "--out", str(tmp_path / "idx")]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=os.environ)
    assert res.returncode == 0, res.stderr[-3000:]
    rss_gb = int(res.stderr.rsplit("maxrss_kb", 1)[1].split()[0]) / 2**20
    assert rss_gb <= 4.0, rss_gb
    assert len(DenseRetriever.load(tmp_path / "idx", verify=False).index) == 1_000_000
