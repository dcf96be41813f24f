"""Click-log type and readers/writers: real Yandex sample, tiny fixtures, round trips, fuzzing."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankloop.data.clicklogs import (
    ClickLog,
    concat_logs,
    load_yandex_sample,
    read_click_log,
    read_jsonl,
    read_tsv,
    read_yandex,
    write_click_log,
    write_jsonl,
    write_tsv,
)
from rankloop.errors import DataNotAvailableError, FormatError, RankloopError

DATA = os.environ.get("RANKLOOP_DATA")
YANDEX = Path(DATA or "/nonexistent") / "clicks" / "yandex-wscd2012-sample"
needs_yandex = pytest.mark.skipif(
    not (YANDEX / "trainSample").is_file(), reason="needs RANKLOOP_DATA"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@needs_yandex
@pytest.mark.parametrize(("split", "sessions"), [("train", 35_064), ("test", 21_413)])
def test_yandex_sample_counts(split: str, sessions: int) -> None:
    log = load_yandex_sample(split)
    assert len(log) == sessions
    assert len(log.query_vocab) == 20
    assert log.max_rank == 10 and bool(log.mask.all())
    assert log.click_order is not None
    # Clicks on docs missing from the list are dropped and counted.
    assert log.meta["dropped_clicks"] == {"train": 417, "test": 276}[split]
    q, docs, clicked = log.session(0)
    assert q == "98435_1" and docs[:2] == ["232429", "688835"]
    if split == "train":
        assert clicked == [1, 0, 3]  # "688835 , 232429 , 16704940" in click order


def test_yandex_tiny(tmp_path: Path) -> None:
    text = "q1\ta,b,c : b , a , b ; q1\ta,c,b :; \n\n q2\tx,y : z , y ;  q2\ty,x : \n"
    log = read_yandex(_write(tmp_path, "s", text))
    assert len(log) == 4
    assert log.meta["dropped_clicks"] == 1 and log.meta["repeated_clicks"] == 1
    assert log.session(0) == ("q1", ["a", "b", "c"], [1, 0])
    assert log.session(1) == ("q1", ["a", "c", "b"], [])
    assert log.session(2) == ("q2", ["x", "y"], [1])
    assert log.clicks.tolist()[0] == [True, True, False]
    assert log.click_order[0].tolist() == [1, 0, -1]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("q1 a,b : a;\n", 1),  # no tab
        ("q1\ta,b a;\n", 1),  # no colon
        ("q1\ta,,b : a;\n", 1),  # empty doc id
        ("q1\ta,b : a;\nq2\t : ;\n", 2),  # empty list
        ("q1\ta,b : a , , b;\n", 1),  # empty click id
        ("q1\ta,b c : a;\n", 1),  # blank inside an id
    ],
)
def test_yandex_malformed(tmp_path: Path, text: str, line: int) -> None:
    with pytest.raises(FormatError) as e:
        read_yandex(_write(tmp_path, "bad", text))
    assert e.value.line == line


def test_empty_and_missing_files(tmp_path: Path) -> None:
    for reader in (read_yandex, read_tsv, read_jsonl):
        with pytest.raises(FormatError):
            reader(_write(tmp_path, "empty", "\n\n"))
        with pytest.raises(FormatError):
            reader(tmp_path / "missing")


def test_load_yandex_sample_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANKLOOP_DATA", raising=False)
    with pytest.raises(DataNotAvailableError, match="RANKLOOP_DATA"):
        load_yandex_sample("train")
    with pytest.raises(DataNotAvailableError, match="not found"):
        load_yandex_sample("train", root=tmp_path)
    with pytest.raises(RankloopError, match="unknown split"):
        load_yandex_sample("dev", root=tmp_path)  # type: ignore[arg-type]


def _rich_log() -> ClickLog:
    return ClickLog.from_lists(
        ["q1", "q2", "q1"],
        [["a", "b", "c"], ["d"], ["c", "a"]],
        [[2, 0], [], [1]],
        timestamps=[1.5, None, 3.0],
        dwell=[[12.0, None], [], [0.25]],
        name="rich",
    )


def test_from_lists_arrays() -> None:
    log = _rich_log()
    assert log.doc_ids.shape == (3, 3)
    assert log.lengths.tolist() == [3, 1, 2]
    assert log.doc_ids[1].tolist()[1:] == [-1, -1]
    assert log.clicks.tolist() == [[True, False, True], [False] * 3, [False, True, False]]
    assert log.click_order[0].tolist() == [1, -1, 0]
    assert np.isnan(log.timestamps[1]) and log.timestamps[2] == 3.0
    assert log.dwell[0, 2] == 12.0 and np.isnan(log.dwell[0, 0]) and log.dwell[2, 1] == 0.25
    assert log.queries.tolist() == ["q1", "q2", "q1"]
    with pytest.raises(RankloopError, match="clicked twice"):
        ClickLog.from_lists(["q"], [["a", "b"]], [[0, 0]])
    with pytest.raises(RankloopError, match="outside"):
        ClickLog.from_lists(["q"], [["a", "b"]], [[2]])


def test_clicklog_validation() -> None:
    log = _rich_log()
    with pytest.raises(RankloopError, match="padded"):
        ClickLog(
            log.query_ids, log.doc_ids, np.ones_like(log.clicks), log.query_vocab, log.doc_vocab
        )
    bad = log.doc_ids.copy()
    bad[0, 0] = -1
    with pytest.raises(RankloopError, match="trail"):
        ClickLog(log.query_ids, bad, np.zeros_like(log.clicks), log.query_vocab, log.doc_vocab)


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    log = _rich_log()
    path = tmp_path / f"log.{fmt}"
    write_click_log(log, path)
    back = read_click_log(path)
    for i in range(len(log)):
        assert back.session(i) == log.session(i)
    np.testing.assert_array_equal(back.timestamps, log.timestamps)
    np.testing.assert_array_equal(back.dwell, log.dwell)
    np.testing.assert_array_equal(back.clicks, log.clicks)


def test_round_trip_plain_and_gzip(tmp_path: Path) -> None:
    log = ClickLog.from_lists(["q"], [["a", "b"]], [[1]])
    write_tsv(log, tmp_path / "p.tsv.gz")
    back = read_click_log(tmp_path / "p.tsv.gz")
    assert back.session(0) == ("q", ["a", "b"], [1])
    assert back.timestamps is None and back.dwell is None
    write_jsonl(log, tmp_path / "p.jsonl")
    assert json.loads((tmp_path / "p.jsonl").read_text()) == {
        "query": "q",
        "docs": ["a", "b"],
        "clicks": [2],
    }
    with pytest.raises(RankloopError, match="blanks"):
        write_tsv(ClickLog.from_lists(["q x"], [["a"]], [[]]), tmp_path / "x.tsv")


@pytest.mark.parametrize(
    "line",
    [
        "q\ta,b",  # too few fields
        "q\ta,b\t3",  # position past the list
        "q\ta,b\t0",  # positions are 1-based
        "q\ta,b\t1,1",  # repeated position
        "q\ta,b\tx",  # not an integer
        "q\ta,b\t1\tnan",  # non-finite timestamp
        "q\ta,b\t1\t\t1,2",  # dwell count differs from click count
        "q\ta,b\t1\t\tabc",  # dwell not a number
        "\ta,b\t1",  # empty query
        "q\ta,b\t1\t1\t1\textra",  # too many fields
    ],
)
def test_tsv_malformed(tmp_path: Path, line: str) -> None:
    path = _write(tmp_path, "bad.tsv", "# comment\nq0\tx\t\n" + line + "\n")
    with pytest.raises(FormatError) as e:
        read_tsv(path)
    assert e.value.line == 3


@pytest.mark.parametrize(
    "obj",
    [
        "[1, 2]",
        "{not json",
        '{"docs": ["a"], "clicks": []}',
        '{"query": "q", "docs": [], "clicks": []}',
        '{"query": "q", "docs": ["a"], "clicks": [2]}',
        '{"query": "q", "docs": ["a"], "clicks": [true]}',
        '{"query": "q", "docs": ["a b"], "clicks": []}',
        '{"query": "q", "docs": ["a"], "clicks": [1], "dwell": [1, 2]}',
        '{"query": "q", "docs": ["a"], "clicks": [1], "timestamp": "noon"}',
    ],
)
def test_jsonl_malformed(tmp_path: Path, obj: str) -> None:
    path = _write(
        tmp_path, "bad.jsonl", '{"query": "q", "docs": ["a"], "clicks": []}\n' + obj + "\n"
    )
    with pytest.raises(FormatError) as e:
        read_jsonl(path)
    assert e.value.line == 2


_tokens = st.sampled_from([*'ab1 \t,:;{}[]"#.-e\u00e9\x00', "nan", "true", "null", '"q"'])
_lines = st.lists(st.lists(_tokens, max_size=20).map("".join), min_size=1, max_size=4)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=_lines)
def test_fuzz_readers_raise_only_format_errors(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "fuzz"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for reader in (read_yandex, read_tsv, read_jsonl):
        try:
            log = reader(path)
        except FormatError as e:
            assert e.path == str(path)
        else:
            assert isinstance(log, ClickLog) and len(log) >= 1


_ids = st.text(st.sampled_from(list("abc123_")), min_size=1, max_size=4)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=_ids, docs=st.lists(_ids, min_size=1, max_size=5, unique=True), cut=st.integers(0, 40))
def test_fuzz_truncated_tsv_lines(tmp_path: Path, query: str, docs: list[str], cut: int) -> None:
    """A valid TSV line cut short before its docs field ends is malformed: FormatError, right line."""
    good = f"{query}\t{','.join(docs)}\t1"
    bad = good[: min(cut, len(query) + 1)]  # query plus at most the tab: never 3 fields
    path = tmp_path / "t.tsv"
    path.write_text(good + "\n" + bad + "\n", encoding="utf-8")
    if not bad.strip():
        assert len(read_tsv(path)) == 1
        return
    with pytest.raises(FormatError) as e:
        read_tsv(path)
    assert e.value.line == 2


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 5) | st.floats(allow_nan=False) | _ids,
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
)
_records = st.dictionaries(
    st.sampled_from(["query", "docs", "clicks", "timestamp", "dwell", "other"]), _json_values
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(record=_records)
def test_fuzz_jsonl_records(tmp_path: Path, record: dict) -> None:
    """Any JSON object either reads as a session or raises FormatError naming line 1."""
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    try:
        log = read_jsonl(path)
    except FormatError as e:
        assert e.line == 1
    else:
        assert len(log) == 1 and log.session(0)[1] == record["docs"]


def test_concat_logs() -> None:
    a = _rich_log()
    b = ClickLog.from_lists(["q9", "q1"], [["z", "a", "b", "c"], ["a"]], [[3], []])
    both = concat_logs([a, b])
    assert len(both) == 5 and both.max_rank == 4
    for i in range(3):
        assert both.session(i) == a.session(i)
    assert both.session(3) == b.session(0) and both.session(4) == b.session(1)
    assert both.timestamps is None and both.click_order is not None
    assert sorted(both.query_vocab.tolist()) == ["q1", "q2", "q9"]


# --- strict parsing (issue "Nothing lost, nothing silently wrong") ------------------------------


@pytest.mark.parametrize(
    ("reader", "name", "line", "needle"),
    [
        (read_yandex, "y", "q\ta,b,a : b", "'a' appears twice"),
        (read_tsv, "t.tsv", "q\ta,b,a\t1", "'a' appears twice"),
        (read_jsonl, "j.jsonl", '{"query": "q", "docs": ["a", "b", "a"], "clicks": []}', "twice"),
        (read_tsv, "t.tsv", "q\ta,b\t1\t\t-1.5", r"dwell time >= 0"),
        (read_tsv, "t.tsv", "q\ta,b\t1\t\t1_0", "numeric dwell time"),
        (read_tsv, "t.tsv", "q\ta,b\t١\t\t1", "integer clicked position"),
        (read_tsv, "t.tsv", "q\ta,b\t" + "9" * 5000, "integer clicked position"),
        (read_tsv, "t.tsv", "q\ta,b\t1\t1e999", "finite timestamp"),
        (
            read_jsonl,
            "j.jsonl",
            '{"query": "q", "docs": ["a"], "clicks": [1], "dwell": [-2]}',
            "dwell",
        ),
        (
            read_jsonl,
            "j.jsonl",
            '{"query": "q", "docs": ["a"], "clicks": [], "timestamp": 1e999}',
            "timestamp",
        ),
        (read_jsonl, "j.jsonl", '{"query": "q", "docs": ["a\\u0000"], "clicks": []}', "NUL"),
    ],
)
def test_broken_sessions_are_rejected(
    tmp_path: Path, reader: Callable[[Path], ClickLog], name: str, line: str, needle: str
) -> None:
    first = {
        "y": "q0\tx : x",
        "t.tsv": "q0\tx\t",
        "j.jsonl": '{"query": "q0", "docs": ["x"], "clicks": []}',
    }
    path = _write(tmp_path, name, "\ufeff" + first[name] + "\n\n" + line + "\n")
    with pytest.raises(FormatError, match=needle) as e:
        reader(path)
    assert e.value.line == 3


def test_jsonl_timestamp_too_large_for_a_float(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "j.jsonl",
        '{"query": "q", "docs": ["a"], "clicks": [], "timestamp": 1%s}\n' % ("0" * 400),
    )
    with pytest.raises(FormatError, match="'timestamp': a finite number") as e:
        read_jsonl(path)
    assert e.value.line == 1
    path.write_text('{"query": "q", "docs": ["a"], "clicks": [1], "timestamp": 10, "dwell": [0]}\n')
    log = read_jsonl(path)
    assert log.timestamps.tolist() == [10.0] and log.dwell[0, 0] == 0.0
