"""TREC qrels, runs and topics: parsing, validation errors and round trips."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from rankloop.data.trec import (
    read_qrels,
    read_run,
    read_topics,
    write_qrels,
    write_run,
    write_topics,
)
from rankloop.data.types import Qrels, Queries, Run
from rankloop.errors import FormatError, RankloopError


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _error(reader, path: Path, *args) -> FormatError:  # type: ignore[no-untyped-def]
    with pytest.raises(FormatError) as e:
        reader(path, *args)
    return e.value


# --- qrels -----------------------------------------------------------------------------------


def test_read_trec_qrels(tmp_path: Path) -> None:
    p = _write(tmp_path / "q.txt", "1 0 d1 2\n1 0 d2 0\n# a comment\n\n2 Q0 d1 -1\n")
    q = read_qrels(p)
    assert q.data == {"1": {"d1": 2, "d2": 0}, "2": {"d1": -1}}
    assert q.name == "q"


def test_read_beir_tsv_qrels(tmp_path: Path) -> None:
    p = _write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t2\n")
    assert read_qrels(p).data == {"1": {"d1": 1, "d2": 2}}


def test_qrels_gzip_and_crlf(tmp_path: Path) -> None:
    p = tmp_path / "q.txt.gz"
    with gzip.open(p, "wt", encoding="utf-8") as fh:
        fh.write("\ufeff1 0 d1 1\r\n1 0 d2 0\r\n")
    assert read_qrels(p).data == {"1": {"d1": 1, "d2": 0}}


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("1 0 d1\n", 1, "4 whitespace-separated columns"),
        ("1 0 d1 1 extra\n", 1, "4 whitespace-separated columns"),
        ("1 0 d1 1\n1 0 d2 high\n", 2, "integer relevance grade"),
        ("1 0 d1 1.0\n", 1, "integer relevance grade"),
        ("1 0 d1 1_0\n", 1, "integer relevance grade"),
        ("1 0 d1 1\n\n1 0 d1 1\n", 3, "form_res_rels: duplicate docs"),
        ("query-id\tcorpus-id\tscore\n1\td1\n", 2, "3 tab-separated columns"),
        ("query-id\tcorpus-id\tscore\n1\td1\tx\n", 2, "integer relevance grade"),
    ],
)
def test_qrels_errors_name_line_and_rule(tmp_path: Path, text: str, line: int, needle: str) -> None:
    p = _write(tmp_path / "bad.txt", text)
    e = _error(read_qrels, p)
    assert e.path == str(p)
    assert e.line == line
    assert needle in str(e)


def test_duplicate_qrels_names_first_line(tmp_path: Path) -> None:
    e = _error(read_qrels, _write(tmp_path / "q", "1 0 a 1\n1 0 b 1\n1 0 a 0\n"))
    assert "already judged on line 1" in str(e)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "query-id\tcorpus-id\tscore\n"])
def test_empty_qrels_is_an_error(tmp_path: Path, text: str) -> None:
    assert "empty qrels file is an error" in str(_error(read_qrels, _write(tmp_path / "q", text)))


def test_undecodable_and_missing_files(tmp_path: Path) -> None:
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"1 0 d1 1\n1 0 caf\xe9 1\n")
    e = _error(read_qrels, p)
    assert e.line == 2 and "UTF-8" in str(e)
    assert "no such file" in str(_error(read_qrels, tmp_path / "absent.txt"))
    bad_gz = tmp_path / "q.txt.gz"
    bad_gz.write_bytes(b"this is not gzip")
    assert "gzip" in str(_error(read_qrels, bad_gz))
    truncated = tmp_path / "t.txt.gz"
    truncated.write_bytes(gzip.compress(b"1 0 d1 1\n" * 1000)[:-20])
    assert isinstance(_error(read_qrels, truncated), FormatError)


@pytest.mark.parametrize("fmt", ["trec", "beir"])
def test_qrels_round_trip(tmp_path: Path, fmt: str) -> None:
    q = Qrels({"q1": {"d1": 3, "d2": 0}, "q2": {"d9": -2}}, "x")
    write_qrels(q, tmp_path / f"q.{fmt}.gz", fmt=fmt)  # type: ignore[arg-type]
    back = read_qrels(tmp_path / f"q.{fmt}.gz", name="x")
    assert back == q


def test_qrels_writer_rejects_unwritable_ids(tmp_path: Path) -> None:
    for bad in ("a b", "", "#x"):
        with pytest.raises(RankloopError):
            write_qrels(Qrels({"q": {bad: 1}}), tmp_path / "q.txt")
    with pytest.raises(RankloopError):
        write_qrels(Qrels({"q": {"d": 1}}), tmp_path / "q.txt", fmt="json")  # type: ignore[arg-type]


def test_real_qrels(shared_data: Path) -> None:
    dl19 = read_qrels(shared_data / "trec" / "qrels.dl19-passage.txt")
    assert len(dl19) == 43 and dl19.n_judgements() == 9260
    scifact = read_qrels(shared_data / "beir" / "scifact" / "qrels" / "test.tsv")
    anserini = read_qrels(shared_data / "trec" / "qrels.beir-v1.0.0-scifact.test.txt")
    assert scifact.n_judgements() == 339 and scifact.data == anserini.data


# --- runs ------------------------------------------------------------------------------------


def test_read_run_ignores_rank_column(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "r.run",
        "1 Q0 a 1 0.5 bm25\n1 Q0 b x 0.9 bm25\n1 Q0 c 7 0.9 bm25\n2 Q0 a 1 -3 bm25\n",
    )
    run = read_run(p)
    assert run.name == "bm25"
    assert [d for d, _ in run.ranked("1")] == ["c", "b", "a"]  # score desc, then doc id desc
    assert read_run(p, name="mine").name == "mine"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("1 Q0 a 1 0.5\n", "6 whitespace-separated columns"),
        ("1 Q0 a 1 high tag\n", "numeric score"),
        ("1 Q0 a 1 nan tag\n", "finite score"),
        ("1 Q0 a 1 -Infinity tag\n", "finite score"),
        ("1 Q0 a 1 1e999 tag\n", "finite score"),
        ("1 Q0 a 1 0.5 t\n1 Q0 a 2 0.4 t\n", "form_res_qrels: duplicate docs"),
        ("", "empty run file is an error"),
    ],
)
def test_run_errors(tmp_path: Path, text: str, needle: str) -> None:
    assert needle in str(_error(read_run, _write(tmp_path / "r", text)))


def test_run_round_trip_exact_floats(tmp_path: Path) -> None:
    run = Run(
        {"q1": {"a": 0.1 + 0.2, "b": -0.0, "c": 1e-300, "d": 0.1 + 0.2}, "q2": {"x": 12345678.9}},
        "sys",
    )
    write_run(run, tmp_path / "r.txt")
    lines = (tmp_path / "r.txt").read_text().splitlines()
    assert lines[0] == "q1 Q0 d 1 0.30000000000000004 sys"  # ties: doc id descending
    assert [int(line.split()[3]) for line in lines[:4]] == [1, 2, 3, 4]
    assert read_run(tmp_path / "r.txt") == run


def test_run_writer_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(RankloopError):
        write_run(Run({"q": {"d": float("inf")}}), tmp_path / "r")
    with pytest.raises(RankloopError):
        write_run(Run({"q": {"d": 1.0}}), tmp_path / "r", tag="two words")


# --- topics ----------------------------------------------------------------------------------

SGML = """<top>
<num> Number: 301
<title> International Organized Crime

<desc> Description:
Identify organizations that participate in
international criminal activity.

<narr> Narrative:
A relevant document must name an organization.
</top>

<top>
<num> Number: 302 </num>
<title> Topic: Poliomyelitis and Post-Polio </title>
<desc> Description: Is the disease still a problem?
<narr> Narrative: Relevant documents discuss it.
</top>
"""


def test_sgml_topics(tmp_path: Path) -> None:
    p = _write(tmp_path / "topics.301-302.txt", SGML)
    titles = read_topics(p)
    assert titles.ids == ["301", "302"]
    assert titles.texts == ["International Organized Crime", "Poliomyelitis and Post-Polio"]
    desc = read_topics(p, field="desc")
    assert (
        desc.texts[0]
        == "Identify organizations that participate in international criminal activity."
    )
    assert read_topics(p, field="narr").texts[1] == "Relevant documents discuss it."


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("<top>\n<num> Number: 1\n<title> a\n", "</top> closing the block"),
        ("<top>\n<title> a\n</top>\n", "a <num>"),
        ("<top>\n<num> 1\n</top>\n", "a non-empty <title>"),
        ("<top>\n<num> 1\n<title> a\n</top>\nstray text\n", "text only inside <top>"),
        (
            "<top>\n<num> 1\n<title> a\n</top>\n<top>\n<num> 1\n<title> b\n</top>\n",
            "unique topic numbers",
        ),
        ("<top>\n<num> 1\n<title> a\n<top>\n", "</top> before a new <top>"),
        ("<top>\n<num> 1 2\n<title> a\n</top>\n", "single-token topic number"),
    ],
)
def test_sgml_topic_errors(tmp_path: Path, text: str, needle: str) -> None:
    assert needle in str(_error(read_topics, _write(tmp_path / "t", text)))


def test_tsv_topics_and_errors(tmp_path: Path) -> None:
    q = read_topics(_write(tmp_path / "t.tsv", "1\tfirst query\n2\t  padded  \n"))
    assert q.ids == ["1", "2"] and q.texts == ["first query", "  padded  "]
    assert "2 tab-separated columns" in str(
        _error(read_topics, _write(tmp_path / "a", "1\ta\tb\n"))
    )
    assert "unique ids" in str(_error(read_topics, _write(tmp_path / "b", "1\ta\n1\tb\n")))
    assert "empty topics file" in str(_error(read_topics, _write(tmp_path / "c", "\n")))


def test_lone_carriage_return_is_data_and_lines_count_lf_only(tmp_path: Path) -> None:
    q = read_topics(_write(tmp_path / "t.tsv", "1\ta\rb\r\n2\tc\n"))
    assert q.texts == ["a\rb", "c"]
    e = _error(read_topics, _write(tmp_path / "u.tsv", "1\ta\rb\n2\n"))
    assert e.line == 2  # the lone CR does not start a new line


def test_topics_round_trip(tmp_path: Path) -> None:
    q = Queries(["1", "x-2"], ["what is  rankloop?", "ünïcødé ✓"], "t")
    write_topics(q, tmp_path / "t.tsv.gz")
    assert read_topics(tmp_path / "t.tsv.gz", name="t") == q
    with pytest.raises(RankloopError):
        write_topics(Queries(["1"], ["has\ttab"]), tmp_path / "bad.tsv")


def test_real_topics(shared_data: Path) -> None:
    dl19 = read_topics(shared_data / "trec" / "topics.dl19-passage.txt")
    dl20 = read_topics(shared_data / "trec" / "topics.dl20.txt")  # TSV with CRLF line ends
    assert len(dl19) == 43 and len(dl20) == 200
    assert dl20.ids[0] == "1030303" and dl20.texts[0] == "who is aziz hashim"
    assert set(read_qrels(shared_data / "trec" / "qrels.dl19-passage.txt").data) == set(dl19.ids)


# --- strict numbers (issue "Nothing lost, nothing silently wrong") ------------------------------


@pytest.mark.parametrize(
    "grade",
    ["99999999999999999999999", "2147483648", "-2147483648", "١", "1_0", "+-1", "NaN"],
)
def test_qrels_grade_must_be_a_sane_integer(tmp_path: Path, grade: str) -> None:
    e = _error(read_qrels, _write(tmp_path / "q.txt", f"1 0 d0 1\n\n1 0 d1 {grade}\n"))
    assert e.line == 3 and "integer relevance grade" in str(e)
    assert read_qrels(_write(tmp_path / "ok.txt", "1 0 d 2147483647\n1 0 e -2147483647\n"))


def test_eval_cli_reports_a_huge_grade_instead_of_crashing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rankloop.cli import main

    qrels = _write(tmp_path / "qrels.txt", "1 0 d1 99999999999999999999999\n")
    run = _write(tmp_path / "a.run", "1 Q0 d1 1 1.0 sys\n")
    assert main(["eval", str(run), str(qrels)]) == 2
    assert f"{qrels}:1: expected an integer relevance grade" in capsys.readouterr().err


@pytest.mark.parametrize("score", ["1_0", "١", "１", "0x10", "nan", "1e999"])
def test_run_scores_are_strict_ascii_and_finite(tmp_path: Path, score: str) -> None:
    e = _error(read_run, _write(tmp_path / "r.txt", f"1 Q0 a 1 1 t\n1 Q0 b 2 {score} t\n"))
    assert e.line == 2 and "score" in str(e)


def test_nul_and_bom(tmp_path: Path) -> None:
    assert read_qrels(_write(tmp_path / "bom.txt", "\ufeff1 0 d1 1\n")).data == {"1": {"d1": 1}}
    e = _error(read_qrels, _write(tmp_path / "nul.txt", "1 0 d1 1\n1 0 d\x002 1\n"))
    assert e.line == 2 and "NUL" in str(e)


def test_ranked_is_trec_eval_order_with_float32_ties() -> None:
    """Score descending as C floats (scores equal in float32 tie), then doc id descending; the
    same order as sorting (float32 score, doc id) pairs in Python."""
    import numpy as np

    from rankloop.data.types import Run

    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 7, 300):
        scores = rng.choice([1.0, 1.0 + 1e-9, 2.0, 1e39, -1e39, 0.5], size=n)
        docs = {f"d{rng.integers(10_000)}_{i}": float(s) for i, s in enumerate(scores)}
        run = Run({"q": docs})
        with np.errstate(over="ignore"):
            want = sorted(docs.items(), key=lambda x: (float(np.float32(x[1])), x[0]), reverse=True)
        assert run.ranked("q") == want
        assert run.ranked("q", 3) == want[:3]
