"""svmlight / LETOR reader and writer: round trips, comments, and FormatError on malformed lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankloop.errors import FormatError, RankloopError
from rankloop.rerank.ltr import LtrData, read_svmlight, write_svmlight

LETOR = """\
# MSLR-style sample
2 qid:10 1:0.5 3:1.25 # docid = GX01 inc = 1
0 qid:10 2:-3 # docid = GX02 inc = 0

1 qid:7 1:1 2:2 3:3 # docid = GX03
"""


def test_reads_letor_lines_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text(LETOR)
    data = read_svmlight(path)
    assert data.features.dtype == np.float32
    np.testing.assert_array_equal(
        data.features, [[0.5, 0.0, 1.25], [0.0, -3.0, 0.0], [1.0, 2.0, 3.0]]
    )
    np.testing.assert_array_equal(data.labels, [2, 0, 1])
    assert data.query_ids == ["10", "7"]
    assert data.doc_ids is not None and data.doc_ids.tolist() == ["GX01", "GX02", "GX03"]
    assert data.comments == ["docid = GX01 inc = 1", "docid = GX02 inc = 0", "docid = GX03"]


def test_n_features_and_zero_based(tmp_path: Path) -> None:
    path = tmp_path / "z.txt"
    path.write_text("1 qid:1 0:4 2:5\n")
    data = read_svmlight(path, zero_based=True, n_features=5)
    np.testing.assert_array_equal(data.features, [[4, 0, 5, 0, 0]])
    with pytest.raises(FormatError, match="feature indexes >= 1"):
        read_svmlight(path)
    with pytest.raises(FormatError, match="at most 2 features"):
        read_svmlight(path, zero_based=True, n_features=2)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1 1:0.5", "qid:<id> after the label"),
        ("x qid:1 1:0.5", "numeric label"),
        ("nan qid:1 1:0.5", "finite label"),
        ("1 qid: 1:0.5", "qid:<id>"),
        ("1 qid:1 1-0.5", "<index>:<value>"),
        ("1 qid:1 a:0.5", "<index>:<value>"),
        ("1 qid:1 1:zz", "numeric feature value"),
        ("1 qid:1 1:inf", "finite feature value"),
        ("1 qid:1 2:1 1:1", "strictly increasing"),
        ("1 qid:1 2:1 2:1", "strictly increasing"),
        ("1", "<label> qid:<id>"),
        ("1 qid:1 99999999:1", "at most"),
        ("1 qid:1 1:1e39", r"feature value in \[-3\.40"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("0 qid:1 1:1\n" + line + "\n")
    with pytest.raises(FormatError, match=expected) as err:
        read_svmlight(path)
    assert err.value.line == 2 and err.value.path == str(path)


def test_non_contiguous_query_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "split.txt"
    path.write_text("1 qid:a 1:1\n0 qid:b 1:1\n1 qid:a 1:2\n")
    with pytest.raises(FormatError, match="contiguous") as err:
        read_svmlight(path)
    assert err.value.line == 3


def test_undecodable_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"1 qid:1 1:1 # caf\xe9\n")
    with pytest.raises(FormatError, match="UTF-8"):
        read_svmlight(path)
    with pytest.raises(FormatError, match="existing file"):
        read_svmlight(tmp_path / "absent.txt")


def test_round_trip_keeps_values_ids_and_doc_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    x[1, 2] = 0.0
    data = LtrData(
        x,
        np.array([0.0, 1.0, 4.0, 2.5, 0.0]),
        np.array(["q1", "q1", "q2", "q2", "q2"]),
        np.array(["d1", "d2", "d3", "d4", "d5"]),
    )
    path = write_svmlight(data, tmp_path / "out" / "data.txt.gz")
    back = read_svmlight(path, n_features=4)
    np.testing.assert_array_equal(back.features, x)
    np.testing.assert_array_equal(back.labels, data.labels)
    assert back.qids.tolist() == data.qids.tolist()
    assert back.doc_ids is not None and back.doc_ids.tolist() == data.doc_ids.tolist()


def test_writer_rejects_ids_that_would_not_read_back(tmp_path: Path) -> None:
    bad = LtrData(np.ones((1, 1), np.float32), np.zeros(1), np.array(["q 1"]))
    with pytest.raises(RankloopError, match="whitespace"):
        write_svmlight(bad, tmp_path / "x.txt")


_values = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    x=st.lists(st.lists(_values, min_size=3, max_size=3), min_size=1, max_size=6),
    labels=st.lists(st.integers(0, 4), min_size=6, max_size=6),
)
def test_round_trip_fuzz(tmp_path: Path, x: list[list[float]], labels: list[int]) -> None:
    n = len(x)
    data = LtrData(
        np.array(x, np.float32),
        np.array(labels[:n], float),
        np.array([f"q{i // 2}" for i in range(n)]),
    )
    back = read_svmlight(write_svmlight(data, tmp_path / "fuzz.txt"), n_features=3)
    np.testing.assert_array_equal(back.features, data.features)
    np.testing.assert_array_equal(back.labels, data.labels)


_line = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.sampled_from(
            [
                "1",
                "-2",
                "qid:",
                "qid:3",
                "qid:x",
                "1:",
                ":1",
                "3:0.5",
                "2:1e9",
                "1:nan",
                "#",
                "# docid = d",
                "0:1",
                "4:-inf",
                "x",
                " ",
                "\t",
                "9:9:9",
            ]
        ),
        max_size=8,
    ).map(" ".join),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(_line, min_size=1, max_size=5))
def test_fuzz_malformed_input_raises_only_format_error(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "fuzz.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        data = read_svmlight(path)
    except FormatError:
        return
    assert len(data) == data.features.shape[0] == len(data.labels)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=80))
def test_fuzz_bytes_raise_only_format_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "fuzz.bin"
    path.write_bytes(raw)
    try:
        read_svmlight(path)
    except FormatError:
        pass


def test_float32_extremes_read_back(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("1 qid:1 1:3.4028235e+38 2:-1.4e-45\n")
    data = read_svmlight(path)
    assert data.features[0, 0] == np.finfo(np.float32).max and data.features[0, 1] < 0


@pytest.mark.parametrize(
    "line",
    [
        "1_000 qid:1 1:1",
        "١ qid:1 1:1",
        "1 qid:1 1:1_000",
        "1 qid:1 1:٣",
        "1 qid:1 1:０.5",
        "1 qid:1 1: 1",
        "1 qid:1 ٣:1",
        "1 qid:1 1:0x10",
    ],
)
def test_numbers_are_strict_ascii(tmp_path: Path, line: str) -> None:
    """Python's float()/int() accept digit separators and non-ASCII digits; the reader does not."""
    path = tmp_path / "bad.txt"
    path.write_text("\ufeff0 qid:1 1:1\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(FormatError) as err:
        read_svmlight(path)
    assert err.value.line == 3
