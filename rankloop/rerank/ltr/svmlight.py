"""svmlight / LETOR files: the format of MSLR-WEB10K/30K, Yahoo LTR, Istella and LETOR 4.0.

One line per (query, document):

    <label> qid:<query id> <index>:<value> <index>:<value> ... [# comment]

- label: a number (graded relevance in LTR sets; any finite float is accepted);
- numbers are strict ASCII (`rankloop.data._parse`): no `1_000`, no non-ASCII digits, no NaN;
- qid: required, no whitespace; all lines of one query are contiguous;
- features: 1-based indexes (0-based with `zero_based=True`), strictly increasing, finite float
  values; absent features are 0 (the sparse convention);
- `# comment`: kept verbatim; LETOR's `docid = X` in it becomes the row's doc id.

Blank lines and lines starting with `#` are skipped; a file without data lines reads as an
empty `LtrData`. Reading follows `rankloop.data`'s rules:
UTF-8, `*.gz` transparent, every malformed line raises `FormatError(path, line, expected, got)`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from rankloop.data._parse import FLOAT32_LIMIT, iter_lines, parse_float
from rankloop.errors import FormatError, RankloopError
from rankloop.io import atomic_write
from rankloop.rerank.ltr.features import LtrData

PathLike = str | os.PathLike[str]
_DOCID = re.compile(r"\bdocid\s*=\s*(\S+)")
_INDEX = re.compile(r"[0-9]+", re.ASCII)
MAX_FEATURES = 1 << 16  # dense storage: wider files must pass n_features explicitly


def read_svmlight(
    path: PathLike, *, n_features: int | None = None, zero_based: bool = False
) -> LtrData:
    """Read an svmlight/LETOR ranking file into `LtrData` (dense float32 features).

    `n_features` fixes the width (an index past it is a format error); by default it is the
    largest index seen. Doc ids come from `docid = X` comments when every line has one.
    """
    if n_features is not None and n_features < 0:
        raise RankloopError(f"n_features must be >= 0, got {n_features}")
    base = 0 if zero_based else 1
    labels: list[float] = []
    qids: list[str] = []
    comments: list[str] = []
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    seen: dict[str, int] = {}
    for lineno, raw in iter_lines(path):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        body, hash_, comment = line.partition("#")
        parts = body.split()
        if len(parts) < 2:
            raise FormatError(path, lineno, "<label> qid:<id> [<index>:<value> ...]", raw)
        label = parse_float(parts[0], path, lineno, "label")
        if not parts[1].startswith("qid:") or len(parts[1]) == 4:
            raise FormatError(path, lineno, "qid:<id> after the label", raw)
        qid = parts[1][4:]
        if qid != (qids[-1] if qids else None):
            if qid in seen:
                raise FormatError(
                    path,
                    lineno,
                    f"the lines of qid {qid} to be contiguous (it also appears at line {seen[qid]})",
                    raw,
                )
            seen[qid] = lineno
        row = len(labels)
        last = base - 1
        for tok in parts[2:]:
            idx_text, colon, val_text = tok.partition(":")
            if not colon or not _INDEX.fullmatch(idx_text):
                raise FormatError(path, lineno, "<index>:<value> pairs", raw)
            idx = int(idx_text)
            if idx < base:
                raise FormatError(path, lineno, f"feature indexes >= {base}", raw)
            if idx <= last:
                raise FormatError(path, lineno, "strictly increasing feature indexes", raw)
            limit = n_features if n_features is not None else MAX_FEATURES
            if idx - base >= limit:
                raise FormatError(path, lineno, f"at most {limit} features (see n_features)", raw)
            last = idx
            rows.append(row)
            cols.append(idx - base)
            vals.append(
                parse_float(val_text, path, lineno, "feature value", -FLOAT32_LIMIT, FLOAT32_LIMIT)
            )
        labels.append(label)
        qids.append(qid)
        comments.append(comment.strip() if hash_ else "")
    width = n_features if n_features is not None else (max(cols) + 1 if cols else 0)
    features = np.zeros((len(labels), width), np.float32)
    features[np.asarray(rows, np.int64), np.asarray(cols, np.int64)] = vals
    found = [_DOCID.search(c) for c in comments]
    doc_ids = None
    if found and all(m is not None for m in found):
        doc_ids = np.array([m.group(1) for m in found], dtype=str)  # type: ignore[union-attr]
    return LtrData(
        features,
        np.asarray(labels, dtype=np.float64),
        np.array(qids, dtype=str),
        doc_ids,
        None,
        comments,
        {"source": str(path)},
    )


def _fmt(value: float | np.floating) -> str:
    """Shortest text that reads back to the same value (float32 values as float32)."""
    v = float(value)
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return str(value) if isinstance(value, np.float32) else repr(v)


def write_svmlight(data: LtrData, path: PathLike, *, zero_based: bool = False) -> Path:
    """Write `data` as svmlight/LETOR text (zeros omitted), atomically; returns the path.

    A row's comment is `docid = <doc id>` when `data.doc_ids` is set, else its stored comment.
    """
    bad = [q for q in np.unique(data.qids) if not q or re.search(r"[\s#]", str(q))]
    if bad:
        raise RankloopError(f"write_svmlight: qid {bad[0]!r} is empty or has whitespace or '#'")
    if data.doc_ids is not None:
        bad = [d for d in data.doc_ids if not d or re.search(r"\s", str(d))]
        if bad:
            raise RankloopError(f"write_svmlight: doc id {bad[0]!r} is empty or has whitespace")
    base = 0 if zero_based else 1
    path = Path(path)
    with atomic_write(path) as fh:
        for i in range(len(data)):
            row = data.features[i]
            nz = np.flatnonzero(row)
            feats = " ".join(f"{j + base}:{_fmt(np.float32(row[j]))}" for j in nz)
            if data.doc_ids is not None:
                comment = f"docid = {data.doc_ids[i]}"
            else:
                comment = data.comments[i] if data.comments is not None else ""
            comment = comment.replace("\n", " ").replace("\r", " ")
            text = f"{_fmt(float(data.labels[i]))} qid:{data.qids[i]}"
            fh.write(text + (" " + feats if feats else "") + (f" # {comment}" if comment else ""))
            fh.write("\n")
    return path
