"""Fixtures for retrieval tests: a small SciFact slice, a fast encoder, and BM25 availability."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rankloop.data.beir import BeirDataset, load_beir, save_beir
from rankloop.data.types import Corpus, Qrels, Queries

_REPO = Path(__file__).resolve().parents[2]
N_QUERIES = 20
N_DOCS = 200


@pytest.fixture(scope="session")
def beir_root() -> Path:
    """`$RANKLOOP_DATA/beir` (default ../shared/data/beir); skip when SciFact is not there."""
    value = os.environ.get("RANKLOOP_DATA", "").strip()
    root = (Path(value) if value else _REPO.parent / "shared" / "data") / "beir"
    if not (root / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found under {root} (set RANKLOOP_DATA)")
    return root


@pytest.fixture(scope="session")
def scifact_full(beir_root: Path) -> BeirDataset:
    """SciFact test split from the real-data mirror."""
    return load_beir(beir_root / "scifact", split="test")


@pytest.fixture(scope="session")
def scifact_slice(scifact_full: BeirDataset) -> BeirDataset:
    """20 test queries over 200 docs: every doc they judge, padded with the first other docs."""
    queries = Queries(scifact_full.queries.ids[:N_QUERIES], scifact_full.queries.texts[:N_QUERIES])
    qrels = scifact_full.qrels.subset(queries.ids)
    judged = list(dict.fromkeys(d for q in queries.ids for d in qrels[q]))
    pad = [d for d in scifact_full.corpus.ids if d not in set(judged)][: N_DOCS - len(judged)]
    corpus = scifact_full.corpus.subset(judged + pad)
    return BeirDataset(corpus, queries, Qrels(qrels.data, "scifact-slice"), "scifact-slice", "test")


@pytest.fixture(scope="session")
def scifact_slice_dir(scifact_slice: BeirDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The slice written as a BEIR folder (for the CLI's `--dataset PATH`)."""
    return save_beir(scifact_slice, tmp_path_factory.mktemp("beir") / "scifact-slice")


@pytest.fixture(scope="session")
def encoder_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Embedding cache shared by the library fixtures and the CLI (`$RANKLOOP_CACHE/embeddings`)."""
    return tmp_path_factory.mktemp("rankloop-cache") / "embeddings"


@pytest.fixture(scope="session")
def encoder(encoder_cache: Path):
    """The default MiniLM with a short token limit (fast on CPU) and a private cache."""
    from rankloop.embed.encoders import Encoder

    return Encoder(max_length=128, cache_dir=encoder_cache, show_progress=False)


@pytest.fixture(scope="session")
def dense_slice(scifact_slice: BeirDataset, encoder):
    from rankloop.retrieval.dense import DenseRetriever

    return DenseRetriever.build(scifact_slice.corpus, encoder)


@pytest.fixture(scope="session")
def require_bm25() -> None:
    """Skip, with the reason, where BM25 cannot run (no pyserini or no usable Java)."""
    from rankloop.errors import RankloopError
    from rankloop.retrieval import _java

    try:
        _java.lucene()
    except RankloopError as e:
        pytest.skip(f"BM25 unavailable: {e}")


@pytest.fixture(scope="session")
def tiny_corpus() -> Corpus:
    """Six short docs whose words the English analyzer leaves alone (no stemming changes)."""
    return Corpus(
        ids=["d1", "d2", "d3", "d4", "d5", "q1"],
        titles=["Cat", "", "Dog", "", "Fish", ""],
        texts=[
            "cat cat fish",
            "dog barks loud",
            "dog cat",
            "bird song morning",
            "fish swim river river",
            "violin concert hall",
        ],
        name="tiny",
    )
