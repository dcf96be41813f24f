"""Property tests: every reader raises FormatError (never another type) on malformed input,
reads back exactly what the writers wrote, and an interrupted write leaves the old file intact."""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rankloop.data.beir as beir_mod
from rankloop.data.beir import read_corpus_jsonl, read_queries_jsonl, write_corpus_jsonl
from rankloop.data.msmarco import read_collection, read_queries
from rankloop.data.registry import _read_sha256sums
from rankloop.data.trec import (
    read_qrels,
    read_run,
    read_topics,
    write_qrels,
    write_run,
    write_topics,
)
from rankloop.data.types import Corpus, Qrels, Queries, Run
from rankloop.errors import FormatError, RankloopError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

READERS: dict[str, Callable[[Path], object]] = {
    "qrels": read_qrels,
    "run": read_run,
    "topics": read_topics,
    "topics-desc": lambda p: read_topics(p, field="desc"),
    "corpus": read_corpus_jsonl,
    "queries": read_queries_jsonl,
    "collection": read_collection,
    "msmarco-queries": read_queries,
    "sha256sums": _read_sha256sums,
}

VALID: dict[str, list[str]] = {
    "qrels": ["1 0 d1 1", "1 0 d2 0", "2 0 d1 3"],
    "run": ["1 Q0 d1 1 12.5 sys", "1 Q0 d2 2 -0.25 sys", "2 Q0 d1 1 3e-2 sys"],
    "topics": [
        "<top>",
        "<num> Number: 7",
        "<title> a title",
        "<desc> Description:",
        "some words",
        "</top>",
    ],
    "topics-desc": ["<top>", "<num> 7", "<title> t", "<desc> d", "</top>"],
    "corpus": ['{"_id": "d1", "title": "t", "text": "x"}', '{"_id": "d2", "text": "y"}'],
    "queries": ['{"_id": "q1", "text": "x"}', '{"_id": "q2", "text": "y"}'],
    "collection": ["0\tfirst passage", "1\tsecond passage"],
    "msmarco-queries": ["5\twhat is x", "6\twhy y"],
    "sha256sums": ["a" * 64 + "  ./x/y.txt", "B" * 64 + " *z"],
}


def _run_reader(kind: str, data: bytes, suffix: str = "") -> None:
    """Feed `data` to the reader: success or FormatError are fine, anything else fails the test."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input{suffix}"
        path.write_bytes(data)
        try:
            READERS[kind](path)
        except FormatError as e:
            assert e.path == str(path)
            if not suffix:  # line numbers point into the file (gzip: into the decompressed text)
                assert e.line is None or 1 <= e.line <= data.count(b"\n") + 1


kinds = st.sampled_from(sorted(READERS))


@FUZZ
@given(kinds, st.binary(max_size=300))
def test_random_bytes(kind: str, data: bytes) -> None:
    _run_reader(kind, data)


@FUZZ
@given(kinds, st.binary(max_size=200), st.booleans())
def test_random_bytes_gzip(kind: str, data: bytes, compress: bool) -> None:
    _run_reader(kind, gzip.compress(data) if compress else data, ".gz")


@FUZZ
@given(kinds, st.data())
def test_truncated_gzip(kind: str, draw: st.DataObject) -> None:
    blob = gzip.compress(("\n".join(VALID[kind]) + "\n").encode())
    cut = draw.draw(st.integers(0, len(blob) - 1))
    _run_reader(kind, blob[:cut], ".gz")


JUNK = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "nan",
            "-inf",
            "1e999",
            "\t",
            "\x00",
            "\r",
            "\ufeff",
            "{",
            "}",
            '"',
            "#",
            "<top>",
            "</top>",
            "<num>",
            "1_0",
            "٣",
        ]
    ),
)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid file for some reader with one to three random edits to its lines."""
    kind = draw(kinds)
    lines = list(VALID[kind])
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(
            st.sampled_from(
                ["insert", "replace-token", "drop-token", "add-token", "dup", "truncate", "bytes"]
            )
        )
        tokens = lines[i].split(" ")
        if op == "insert":
            pos = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + draw(JUNK) + lines[i][pos:]
        elif op == "replace-token":
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(JUNK)
            lines[i] = " ".join(tokens)
        elif op == "drop-token" and len(tokens) > 1:
            del tokens[draw(st.integers(0, len(tokens) - 1))]
            lines[i] = " ".join(tokens)
        elif op == "add-token":
            lines[i] = lines[i] + draw(st.sampled_from([" ", "\t"])) + draw(JUNK)
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        pos = draw(st.integers(0, len(data)))
        data = data[:pos] + draw(st.binary(min_size=1, max_size=4)) + data[pos:]
    return kind, data


@FUZZ
@given(mutated())
def test_mutated_valid_files(case: tuple[str, bytes]) -> None:
    _run_reader(*case)


@FUZZ
@given(
    st.sampled_from(["qrels", "run", "collection", "msmarco-queries"]),
    st.integers(0, 2),
    st.integers(1, 3),
)
def test_wrong_column_count_always_raises(kind: str, row: int, delta: int) -> None:
    lines = list(VALID[kind])
    sep = " " if kind in ("qrels", "run") else "\t"
    fields = lines[row].split(sep) if row < len(lines) else lines[0].split(sep)
    bad = fields[:-1] if delta == 1 and len(fields) > 1 else fields + ["x"] * delta
    lines[min(row, len(lines) - 1)] = sep.join(bad)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(FormatError, match="columns"):
            READERS[kind](path)


@FUZZ
@given(st.sampled_from(["qrels", "run"]), st.text(min_size=1, max_size=8))
def test_non_numeric_value_always_raises(kind: str, token: str) -> None:
    token = token.replace(" ", "_").replace("\n", "_").replace("\r", "_")
    assume(token.split() == [token])
    pattern = (
        r"[+-]?[0-9]+" if kind == "qrels" else r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
    )
    assume(not re.fullmatch(pattern, token, re.ASCII))
    line = f"1 0 d {token}" if kind == "qrels" else f"1 Q0 d 1 {token} sys"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        path.write_text(line + "\n", encoding="utf-8")
        with pytest.raises(FormatError):
            READERS[kind](path)


# --- round trips over generated data ---------------------------------------------------------

trec_ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=8,
).filter(lambda s: s.split() == [s] and not s.startswith(("#", "\ufeff")))
finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        trec_ids, st.dictionaries(trec_ids, st.integers(-5, 2**40), min_size=1), min_size=1
    ),
    st.sampled_from(["trec", "beir"]),
)
def test_qrels_round_trip(data: dict, fmt: str) -> None:
    qrels = Qrels(data, "q")
    with tempfile.TemporaryDirectory() as tmp:
        write_qrels(qrels, Path(tmp) / "q.txt", fmt=fmt)  # type: ignore[arg-type]
        assert read_qrels(Path(tmp) / "q.txt", name="q") == qrels


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(trec_ids, st.dictionaries(trec_ids, finite, min_size=1), min_size=1))
def test_run_round_trip(data: dict) -> None:
    run = Run(data, "sys")
    with tempfile.TemporaryDirectory() as tmp:
        write_run(run, Path(tmp) / "r.txt.gz")
        back = read_run(Path(tmp) / "r.txt.gz")
        assert back == run
        assert all(back.ranked(q) == run.ranked(q) for q in run)


any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=8), any_text, any_text),
        max_size=8,
        unique_by=lambda t: t[0],
    )
)
def test_corpus_jsonl_round_trip(rows: list) -> None:
    assume(rows)
    corpus = Corpus([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], "c")
    with tempfile.TemporaryDirectory() as tmp:
        write_corpus_jsonl(corpus, Path(tmp) / "c.jsonl")
        assert read_corpus_jsonl(Path(tmp) / "c.jsonl", name="c") == corpus


tsv_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\r\n"), max_size=20
)
tsv_ids = tsv_text.filter(lambda s: s.strip() == s and s != "" and not s.startswith("\ufeff"))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(tsv_ids, tsv_text, min_size=1, max_size=6))
def test_tsv_topics_round_trip(data: dict) -> None:
    queries = Queries(list(data), list(data.values()), "t")
    assume(not queries.ids[0].lower().startswith("<top>"))
    with tempfile.TemporaryDirectory() as tmp:
        write_topics(queries, Path(tmp) / "t.tsv")
        assert read_topics(Path(tmp) / "t.tsv", name="t") == queries


# --- atomic writes -------------------------------------------------------------------------------


def test_failed_writes_leave_old_file_intact(tmp_path: Path) -> None:
    qrels_path = tmp_path / "qrels.txt"
    write_qrels(Qrels({"q1": {"d1": 1}}), qrels_path)
    before = qrels_path.read_bytes()
    with pytest.raises(
        RankloopError
    ):  # the second query's doc id cannot be written: fails mid-file
        write_qrels(Qrels({"q1": {"d1": 2}, "q2": {"bad id": 1}}), qrels_path)
    assert qrels_path.read_bytes() == before

    run_path = tmp_path / "run.txt.gz"
    write_run(Run({"q": {"a": 1.0}}, "old"), run_path)
    before = run_path.read_bytes()
    with pytest.raises(RankloopError):
        write_run(Run({"q": {"a": 2.0}, "r": {"b": float("inf")}}, "new"), run_path)
    assert run_path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["qrels.txt", "run.txt.gz"]  # no temp files left behind


def test_interrupted_corpus_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "corpus.jsonl"
    corpus = Corpus([str(i) for i in range(100)], [""] * 100, ["x"] * 100)
    write_corpus_jsonl(corpus, path)
    before = path.read_bytes()
    calls = {"n": 0}
    real_dumps = json.dumps

    def dying_dumps(obj: object, **kw: object) -> str:
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt  # a kill half-way through the file
        return real_dumps(obj, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(beir_mod.json, "dumps", dying_dumps)
    with pytest.raises(KeyboardInterrupt):
        write_corpus_jsonl(
            Corpus(["new"] * 1 + [f"n{i}" for i in range(99)], [""] * 100, ["y"] * 100), path
        )
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["corpus.jsonl"]
