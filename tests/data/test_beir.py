"""BEIR JSONL readers/writers and folder loading, on hand-made and real data."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from rankloop.data.beir import (
    BeirDataset,
    beir_splits,
    load_beir,
    read_corpus_jsonl,
    read_queries_jsonl,
    save_beir,
    write_corpus_jsonl,
    write_queries_jsonl,
)
from rankloop.data.types import Corpus, Qrels, Queries
from rankloop.errors import FormatError, RankloopError


def _jsonl(path: Path, *objs: object) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


def _tiny(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _jsonl(
        root / "corpus.jsonl",
        {"_id": "d1", "title": "T", "text": "x"},
        {"_id": 2, "text": "y", "metadata": {}},
    )
    _jsonl(
        root / "queries.jsonl",
        {"_id": "q1", "text": "a"},
        {"_id": "q2", "text": "b"},
        {"_id": "q3", "text": "c"},
    )
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td1\t1\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t2\t2\n")
    return root


def test_read_corpus_and_queries(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "tiny")
    corpus = read_corpus_jsonl(root / "corpus.jsonl")
    assert corpus.ids == ["d1", "2"] and corpus.titles == ["T", ""] and corpus.texts == ["x", "y"]
    assert read_queries_jsonl(root / "queries.jsonl").ids == ["q1", "q2", "q3"]


def test_load_beir_split_and_all(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "tiny")
    assert beir_splits(root) == ["test", "train"]
    test = load_beir(root)
    assert test.name == "tiny" and test.split == "test"
    assert test.queries.ids == ["q2"] and test.qrels.data == {"q2": {"d1": 1}}
    everything = load_beir(root, split=None)
    assert everything.queries.ids == ["q1", "q2", "q3"]
    assert everything.qrels.data == {"q1": {"2": 2}, "q2": {"d1": 1}}
    with pytest.raises(RankloopError, match="available: test, train"):
        load_beir(root, split="dev")
    with pytest.raises(RankloopError, match=r"no corpus\.jsonl"):
        load_beir(tmp_path)


def test_load_beir_rejects_unknown_qrels_queries(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "tiny")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td1\t1\n")
    with pytest.raises(FormatError, match="q9"):
        load_beir(root)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "one JSON object per line"),
        ("[1, 2]", "a JSON object"),
        ('{"title": "t", "text": "x"}', "an '_id' key"),
        ('{"_id": "", "text": "x"}', "non-empty string"),
        ('{"_id": true, "text": "x"}', "non-empty string"),
        ('{"_id": "a", "title": "t"}', "a 'text' key"),
        ('{"_id": "a", "text": 5}', "'text' to be a string"),
        ('{"_id": "a", "title": ["t"], "text": "x"}', "'title' to be a string"),
        ('{"_id": "d1", "text": "again"}', "unique '_id's"),
        ("[" * 100_000, "one JSON object per line"),
    ],
)
def test_corpus_errors(tmp_path: Path, line: str, needle: str) -> None:
    p = tmp_path / "corpus.jsonl"
    p.write_text('{"_id": "d1", "text": "ok"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(FormatError) as e:
        read_corpus_jsonl(p)
    assert e.value.line == 3 and needle in str(e.value)


def test_empty_jsonl_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text("\n \n")
    with pytest.raises(FormatError, match="empty file is an error"):
        read_queries_jsonl(tmp_path / "q.jsonl")


def test_jsonl_round_trip(tmp_path: Path) -> None:
    corpus = Corpus(["a", "b\u2028c"], ["", "Tïtle"], ["line\nbreak\r and \x85 tab\t", ""], "c")
    write_corpus_jsonl(corpus, tmp_path / "corpus.jsonl.gz")
    assert read_corpus_jsonl(tmp_path / "corpus.jsonl.gz", name="c") == corpus
    queries = Queries(["1", "2"], ["q one", "✓"], "q")
    write_queries_jsonl(queries, tmp_path / "queries.jsonl")
    assert read_queries_jsonl(tmp_path / "queries.jsonl", name="q") == queries


def test_save_beir_round_trip(tmp_path: Path) -> None:
    ds = BeirDataset(
        corpus=Corpus(["d1", "d2"], ["", "t"], ["x", "y"], "s"),
        queries=Queries(["q1"], ["a"], "s"),
        qrels=Qrels({"q1": {"d2": 1}}, "s/test"),
        name="s",
        split="test",
    )
    out = save_beir(ds, tmp_path / "s")
    back = load_beir(out)
    assert (
        back.corpus == ds.corpus and back.queries == ds.queries and back.qrels.data == ds.qrels.data
    )


def test_real_scifact_and_nfcorpus(shared_data: Path) -> None:
    scifact = load_beir(shared_data / "beir" / "scifact")
    assert (len(scifact.corpus), len(scifact.queries), scifact.qrels.n_judgements()) == (
        5183,
        300,
        339,
    )
    assert len(load_beir(shared_data / "beir" / "scifact", split="train").queries) == 809
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every judged document is in the corpus
        nfcorpus = load_beir(shared_data / "beir" / "nfcorpus", strict=True)
    assert (len(nfcorpus.corpus), len(nfcorpus.queries), nfcorpus.qrels.n_judgements()) == (
        3633,
        323,
        12334,
    )


def test_real_dl19_mini(shared_data: Path) -> None:
    mini = load_beir(shared_data / "msmarco" / "dl19-mini")
    assert (
        len(mini.corpus) == 5000 and len(mini.queries) == 43 and mini.qrels.n_judgements() == 4102
    )
    assert len(load_beir(shared_data / "msmarco" / "dl19-mini", split=None).queries) == 50


def test_qrels_with_documents_missing_from_the_corpus(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "tiny")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq2\td1\t1\nq2\tgone\t1\nq1\tlost\t0\nq1\tgone\t2\n"
    )
    with pytest.warns(UserWarning, match=r"2 judged document id\(s\).*'gone', 'lost'"):
        ds = load_beir(root)
    assert ds.qrels.data == {"q2": {"d1": 1, "gone": 1}, "q1": {"lost": 0, "gone": 2}}
    with pytest.raises(FormatError, match=r"2 unknown, e\.g\. 'gone', 'lost'") as e:
        load_beir(root, strict=True)
    assert e.value.path == str(root / "qrels" / "test.tsv")
    with pytest.warns(UserWarning, match="2 judged"):
        load_beir(root, split=None)


def test_complete_folders_load_without_warnings(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_beir(root, strict=True)
        load_beir(root, split=None, strict=True)


def test_merged_qrels_must_name_known_queries(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "tiny")
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td1\t1\n")
    with pytest.raises(FormatError, match="q9"):
        load_beir(root, split=None)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"_id": "   ", "text": "x"}', "not only blanks"),
        ('{"_id": "a\\u0000", "text": "x"}', "NUL"),
        ('{"_id": "a", "text": "x\\ud800"}', "surrogate"),
    ],
)
def test_ids_and_strings_must_be_clean_text(tmp_path: Path, line: str, needle: str) -> None:
    p = tmp_path / "corpus.jsonl"
    p.write_text('{"_id": "d1", "text": "😀 \\ud83d\\ude00"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(FormatError, match=needle) as e:
        read_corpus_jsonl(p)
    assert e.value.line == 2
    with pytest.raises(RankloopError, match="blank id"):
        write_queries_jsonl(Queries([" "], ["x"]), tmp_path / "q.jsonl")
