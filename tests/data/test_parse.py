"""The strict helpers every reader shares: lines, numbers, columns and JSON numbers."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankloop.data._parse import (
    FLOAT32_LIMIT,
    float_column,
    int_column,
    iter_lines,
    json_number,
    parse_float,
    parse_int,
    read_lines,
)
from rankloop.errors import FormatError


@pytest.mark.parametrize(
    "token",
    [
        "1_000",
        "١٢",
        "１",
        " 1",
        "1 ",
        "\x0b1",
        "1\x85",
        "nan",
        "-Infinity",
        "0x10",
        "1e",
        "",
        "+",
        "1,5",
    ],
)
def test_python_accepts_but_parse_float_rejects(token: str) -> None:
    with pytest.raises(FormatError):
        parse_float(token, "f", 7, "value")


@pytest.mark.parametrize(
    ("token", "value"), [("1", 1.0), ("-.5", -0.5), ("+2.", 2.0), ("1E-3", 1e-3), ("007", 7.0)]
)
def test_parse_float_accepts_ascii_decimals(token: str, value: float) -> None:
    assert parse_float(token, "f", 1, "value") == value


def test_ranges_and_messages() -> None:
    with pytest.raises(FormatError, match=r"f:3: expected a propensity in \(0, 1\], got '0'"):
        parse_float("0", "f", 3, "propensity", 0, 1, lo_open=True)
    with pytest.raises(FormatError, match="a dwell time >= 0"):
        parse_float("-1", "f", 3, "dwell time", 0)
    with pytest.raises(FormatError, match="overflows"):
        parse_float("1e400", "f", 3, "score")
    with pytest.raises(FormatError, match=r"integer grade in \[-2147483647, 2147483647\]"):
        parse_int("9" * 5000, "f", 3, "grade")
    assert parse_int("-0002147483647", "f", 1, "grade") == -(2**31) + 1
    assert np.isfinite(np.float32(FLOAT32_LIMIT))


_tokens = st.text(st.sampled_from(list("0123456789eE+-._ \x0bx١")), max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(_tokens, max_size=6), st.sampled_from([(-math.inf, math.inf), (0.0, 5.0)]))
def test_columns_agree_with_the_scalar_parsers(tokens: list[str], bounds: tuple) -> None:
    """The vectorised fast path accepts exactly what the per-token parsers accept."""
    lines = list(range(1, len(tokens) + 1))
    for column, scalar, lo, hi in (
        (float_column, parse_float, *bounds),
        (int_column, parse_int, -100, 100),
    ):
        try:
            expected = [scalar(t, "f", n, "x", lo, hi) for t, n in zip(tokens, lines)]
        except FormatError as e:
            with pytest.raises(FormatError) as got:
                column(tokens, "f", lines, "x", lo, hi)
            assert (got.value.line, got.value.expected) == (e.line, e.expected)
        else:
            assert column(tokens, "f", lines, "x", lo, hi).tolist() == expected


def test_read_lines_rules(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_bytes(b"\xef\xbb\xbfone\r\n\r\ntwo\rstill two\n")
    assert read_lines(p) == ["one", "", "two\rstill two"]
    assert [line for _, line in iter_lines(p)] == read_lines(p)
    gz = tmp_path / "a.txt.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    assert read_lines(gz) == read_lines(p)
    p.write_bytes(b"ok\n\nbad \xc3( here\n")
    for reader in (read_lines, lambda q: list(iter_lines(q))):
        with pytest.raises(FormatError, match="UTF-8") as e:
            reader(p)
        assert e.value.line == 3
    p.write_bytes(b"ok\nn\x00l\n")
    for reader in (read_lines, lambda q: list(iter_lines(q))):
        with pytest.raises(FormatError, match="NUL") as e:
            reader(p)
        assert e.value.line == 2
    with pytest.raises(FormatError, match="existing file"):
        read_lines(tmp_path / "absent")


def test_json_number() -> None:
    assert json_number(3) == 3.0 and json_number(-1.5) == -1.5
    assert json_number(10**400) is None and json_number(float("nan")) is None
    assert json_number(True) is None and json_number("1") is None
    assert json_number(-1, lo=0) is None
