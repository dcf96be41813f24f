"""MS MARCO TSV collection and query files."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankloop.data.msmarco import read_collection, read_queries, write_collection, write_queries
from rankloop.data.types import Corpus, Queries
from rankloop.errors import FormatError, RankloopError


def test_read_collection(tmp_path: Path) -> None:
    p = tmp_path / "collection.tsv"
    p.write_text("0\tThe presence of communication.\n1\tThe Manhattan Project\n", encoding="utf-8")
    corpus = read_collection(p)
    assert corpus.ids == ["0", "1"] and corpus.titles == ["", ""] and corpus.name == "collection"


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("0\ta\n1\n", 2, "2 tab-separated columns"),
        ("0\ta\tb\n", 1, "2 tab-separated columns"),
        ("0\ta\n0\tb\n", 2, "unique ids"),
        ("\ta\n", 1, "non-empty id"),
    ],
)
def test_collection_errors(tmp_path: Path, text: str, line: int, needle: str) -> None:
    p = tmp_path / "c.tsv"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(FormatError) as e:
        read_collection(p)
    assert e.value.line == line and needle in str(e.value)


def test_tsv_round_trips(tmp_path: Path) -> None:
    corpus = Corpus(["7", "8"], ["", ""], ["a passage", " spaced "], "c")
    write_collection(corpus, tmp_path / "c.tsv.gz")
    assert read_collection(tmp_path / "c.tsv.gz", name="c") == corpus
    queries = Queries(["1"], ["how long"], "q")
    write_queries(queries, tmp_path / "q.tsv")
    assert read_queries(tmp_path / "q.tsv", name="q") == queries
    with pytest.raises(RankloopError, match="title"):
        write_collection(Corpus(["1"], ["t"], ["x"]), tmp_path / "bad.tsv")
