"""Strict text and number parsing shared by every reader in `rankloop.data` (and svmlight).

- Text is UTF-8, strictly: undecodable bytes raise `FormatError` naming the file and line. A
  UTF-8 byte-order mark at the very start is dropped; `*.gz` files are gunzipped.
- Only LF ends a line, as for `wc -l`; a trailing CR is dropped (CRLF files read fine) and a
  lone CR is data. Line numbers are physical line numbers: blank lines count. A NUL character
  is an error (binary data; numpy string arrays would also silently drop trailing NULs).
- Numbers are ASCII only and checked by a regex before conversion: no `1_000`, no Arabic-Indic
  or full-width digits, no `nan`/`inf`, no surrounding blanks. Python's `int()`/`float()` and
  numpy's string conversion accept all of these, so readers never call them on unchecked text.
  Values must be finite and inside the range the caller names.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from rankloop.errors import FormatError
from rankloop.io import open_text

PathLike = str | os.PathLike[str]

FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
INT32_MAX = 2**31 - 1
# the largest float64 that still rounds to a finite float32 (just above float32's max)
FLOAT32_LIMIT = math.nextafter((2.0 - 2.0**-24) * 2.0**127, 0.0)
_NONFINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
# Over these alphabets float() accepts exactly what FLOAT_RE / INT_RE match (the column fast path).
_NOT_FLOAT_CHAR = re.compile(r"[^0-9eE+.\x00-]")
_NOT_INT_CHAR = re.compile(r"[^0-9+\x00-]")
_NO_NUL = "text without NUL characters"


# ---- lines --------------------------------------------------------------------------------------
def iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its newline), wrapping every decode/IO error."""
    n = 0
    try:
        with open_text(path) as fh:
            if isinstance(fh, io.TextIOWrapper):
                fh.reconfigure(newline="\n")  # only LF ends a line; a lone CR is data
            for n, line in enumerate(fh, 1):
                if n == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                if "\x00" in line:
                    raise FormatError(path, n, _NO_NUL, line.rstrip("\r\n"))
                yield n, line.rstrip("\r\n")
    except UnicodeDecodeError:
        lineno, raw = _first_undecodable_line(path)
        raise FormatError(path, lineno, "UTF-8 text", f"undecodable bytes in {raw!r}") from None
    except FileNotFoundError:
        raise FormatError(path, None, "an existing file", "no such file") from None
    except (OSError, EOFError, zlib.error) as e:
        raise FormatError(
            path, n + 1 if n else None, "a readable (gzip) text file", str(e)
        ) from None


def _first_undecodable_line(path: PathLike) -> tuple[int | None, bytes]:
    """Locate the first line that is not UTF-8 (text mode decodes in chunks, so it cannot tell)."""
    try:
        opener = gzip.open if os.fspath(path).endswith(".gz") else open
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return lineno, raw.rstrip(b"\r\n")
    except (OSError, EOFError, zlib.error):
        pass
    return None, b""


def read_lines(path: PathLike) -> list[str]:
    """Every line of a (small or medium) text file at once; `lines[i]` is line `i + 1`.

    Same rules as `iter_lines`, faster for files that are read whole anyway.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if os.fspath(path).endswith(".gz"):
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise FormatError(path, None, "an existing file", "no such file") from None
    except (OSError, EOFError, zlib.error) as e:
        raise FormatError(path, None, "a readable (gzip) text file", str(e)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        start = raw.rfind(b"\n", 0, e.start) + 1
        end = raw.find(b"\n", e.start)
        bad = raw[start : len(raw) if end < 0 else end].rstrip(b"\r")
        lineno = raw.count(b"\n", 0, e.start) + 1
        raise FormatError(path, lineno, "UTF-8 text", f"undecodable bytes in {bad!r}") from None
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    if "\x00" in text:
        lineno = next(n for n, line in enumerate(lines, 1) if "\x00" in line)
        raise FormatError(path, lineno, _NO_NUL, lines[lineno - 1])
    return [line.rstrip("\r") for line in lines]


# ---- numbers ------------------------------------------------------------------------------------
def _show(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _range_text(lo: float, hi: float, lo_open: bool) -> str:
    if hi == math.inf:
        return "" if lo == -math.inf else f" {'>' if lo_open else '>='} {_show(lo)}"
    if lo == -math.inf:
        return f" <= {_show(hi)}"
    return f" in {'(' if lo_open else '['}{_show(lo)}, {_show(hi)}]"


def _in_range(value: float, lo: float, hi: float, lo_open: bool) -> bool:
    return (lo < value if lo_open else lo <= value) and value <= hi


def _plain_float(token: str) -> float | None:
    """`float(token)` when `token` is a finite number as FLOAT_RE writes it, else None.

    float() alone also takes NaN/inf, `1_000`, non-ASCII digits and surrounding blanks; with
    those ruled out it accepts exactly FLOAT_RE, and is faster than the regex.
    """
    if not token.isascii() or "_" in token or token != token.strip():
        return None
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_float(
    token: str,
    path: PathLike,
    lineno: int | None,
    what: str,
    lo: float = -math.inf,
    hi: float = math.inf,
    *,
    lo_open: bool = False,
) -> float:
    """An ASCII decimal number, finite, in `[lo, hi]` (`(lo, hi]` with `lo_open`)."""
    value = _plain_float(token)
    if value is None:
        if _NONFINITE.fullmatch(token):
            raise FormatError(
                path, lineno, f"a finite {what} (NaN and infinities are not allowed)", token
            )
        if not FLOAT_RE.fullmatch(token):
            raise FormatError(
                path, lineno, f"a numeric {what} (ASCII digits, no digit separators)", token
            )
        raise FormatError(path, lineno, f"a finite {what} (overflows a 64-bit float)", token)
    if not _in_range(value, lo, hi, lo_open):
        raise FormatError(path, lineno, f"a {what}{_range_text(lo, hi, lo_open)}", token)
    return value


def parse_int(
    token: str,
    path: PathLike,
    lineno: int | None,
    what: str,
    lo: int = -INT32_MAX,
    hi: int = INT32_MAX,
) -> int:
    """An ASCII integer (optional sign, digits only) in `[lo, hi]`; the default is 32-bit."""
    if not INT_RE.fullmatch(token):
        raise FormatError(path, lineno, f"an integer {what} (ASCII digits only)", token)
    digits = token.lstrip("+-").lstrip("0")
    value = int(token) if len(digits) <= 20 else None  # no 10**4300-digit int() conversions
    if value is None or not lo <= value <= hi:
        raise FormatError(path, lineno, f"an integer {what}{_range_text(lo, hi, False)}", token)
    return value


def float_column(
    tokens: Sequence[str],
    path: PathLike,
    linenos: Sequence[int],
    what: str,
    lo: float = -math.inf,
    hi: float = math.inf,
    *,
    lo_open: bool = False,
) -> np.ndarray:
    """`parse_float` over a column (`linenos[i]` is the line of `tokens[i]`), vectorised.

    Raises for the first bad token in file order.
    """
    if tokens and not _NOT_FLOAT_CHAR.search("\x00".join(tokens)):
        try:
            values = np.array(tokens, dtype=np.float64)
        except ValueError:
            pass
        else:
            lower = values > lo if lo_open else values >= lo
            if np.all(np.isfinite(values) & lower & (values <= hi)):
                return values
    return np.array(
        [parse_float(t, path, n, what, lo, hi, lo_open=lo_open) for t, n in zip(tokens, linenos)],
        dtype=np.float64,
    )


def int_column(
    tokens: Sequence[str],
    path: PathLike,
    linenos: Sequence[int],
    what: str,
    lo: int = -INT32_MAX,
    hi: int = INT32_MAX,
) -> np.ndarray:
    """`parse_int` over a column, vectorised (int64); bounds must lie within +-(2**53 - 1)."""
    if tokens and not _NOT_INT_CHAR.search("\x00".join(tokens)):
        try:
            values = np.array(tokens, dtype=np.float64)  # exact for the integers allowed here
        except ValueError:
            pass
        else:
            if np.all((values >= lo) & (values <= hi)):
                return values.astype(np.int64)
    return np.array(
        [parse_int(t, path, n, what, lo, hi) for t, n in zip(tokens, linenos)], dtype=np.int64
    )


def json_number(value: object, lo: float = -math.inf, hi: float = math.inf) -> float | None:
    """A decoded JSON value as a finite float in `[lo, hi]`, or None when it is not one.

    Booleans are not numbers; integers too large for a float (`10**400`) are rejected.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and lo <= number <= hi else None


# ---- delimited tables ---------------------------------------------------------------------------
def read_table(
    path: PathLike, sep: str, names: list[str] | None = None, *, index_column: bool = False
) -> pd.DataFrame:
    """A delimited text file as string columns, indexed by physical line number.

    `names=None` takes the column names from the first line; they must be distinct and
    non-empty, except with `index_column`: a leading row-index column (as pandas writes), which
    is dropped. Blank lines are skipped. A line with the wrong number of fields, or a file
    without data rows, raises FormatError. Quotes are data (no CSV quoting).
    """
    lines = read_lines(path)
    first = 0
    if names is None:
        if not lines:
            raise FormatError(path, 1, f"a header line of {sep!r}-separated names", "empty file")
        names = [h.strip() for h in lines[0].split(sep)]
        first = 1
    start = 1 if index_column else 0
    keep = names[start:]
    if not all(keep) or len(set(keep)) != len(keep):
        raise FormatError(
            path, 1, f"distinct, non-empty {sep!r}-separated column names", sep.join(names)
        )
    expected = f"{len(names)} {sep!r}-separated fields"
    rows: list[list[str]] = []
    linenos: list[int] = []
    for n, line in enumerate(lines[first:], first + 1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != len(names):
            raise FormatError(path, n, expected, f"{len(fields)} fields: {line}")
        rows.append(fields[start:])
        linenos.append(n)
    if not rows:
        raise FormatError(path, None, f"at least one data row of {expected}", "no records")
    return pd.DataFrame(rows, columns=keep, index=linenos, dtype=object)


def table_column(
    path: PathLike,
    df: pd.DataFrame,
    col: str,
    what: str,
    lo: float = -math.inf,
    hi: float = math.inf,
    *,
    integer: bool = False,
    lo_open: bool = False,
) -> np.ndarray:
    """A string column of a frame indexed by line number (`read_table`) parsed strictly."""
    tokens = df[col].tolist()
    lines = df.index.tolist()
    if integer:
        return int_column(tokens, path, lines, what, int(lo), int(hi))
    return float_column(tokens, path, lines, what, lo, hi, lo_open=lo_open)
