"""A dense index remembers the encoder backend that built it and reopens with the same one."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from rankloop.data.types import Corpus
from rankloop.embed.encoders import Encoder
from rankloop.retrieval.dense import DenseRetriever


def test_a_bf16_index_reopens_with_bf16_and_no_mismatch_warning(tmp_path: Path) -> None:
    corpus = Corpus(["a", "b", "c"], ["", "", ""], ["dense retrieval", "click models", "bandits"])
    enc = Encoder(backend="torch-bf16", show_progress=False, cache_dir=tmp_path / "cache")
    DenseRetriever.build(corpus, enc).save(tmp_path / "idx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fingerprint mismatch would warn
        again = DenseRetriever.load(tmp_path / "idx")
    assert again.encoder.backend == "torch-bf16"
    assert again.encoder.fingerprint == enc.fingerprint
    with pytest.warns(UserWarning, match="differs from the one that built the index"):
        fp32 = DenseRetriever.load(tmp_path / "idx", backend="torch")  # asked for: allowed, said
    assert fp32.encoder.backend == "torch"
