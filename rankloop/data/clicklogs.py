"""Click logs: the vectorised `ClickLog` type, and readers/writers for the Yandex WSCD 2012
sample, a generic TSV and a generic JSONL format.

Same reading rules as every reader in `rankloop.data` (see `rankloop.data.trec`): UTF-8, `*.gz`
transparent, blank lines skipped (but counted in line numbers), numbers parsed strictly
(`rankloop.data._parse`), every malformed line raises `FormatError(path, line, ...)`. A result
list never holds the same document twice; dwell times are >= 0; timestamps are finite.

Formats (positions in files are 1-based; inside `ClickLog` they are 0-based):

- **yandex**: the PyClick sample of the WSCD 2012 relevance-prediction log. One line per query
  group; sessions separated by `;`; a session is `QUERY<TAB>DOC1,...,DOCk : CLICKED_DOC , ...`
  with clicks in click order (nothing after `:` means no click). A click on a document that is
  not in the session's list (417 in `trainSample`) is dropped; a repeated click on the same
  document keeps the first one for the click order. Both counts land in `log.meta`.
- **tsv**: `query<TAB>doc1,doc2,...<TAB>clicked positions[<TAB>timestamp[<TAB>dwell times]]`.
  Clicked positions are comma-separated, distinct, in click order (may be empty). The timestamp
  is a float (or empty). Dwell times are comma-separated floats aligned with the clicked
  positions, an empty entry meaning unknown. Lines starting with `#` are comments.
- **jsonl**: one object per line: `{"query": str, "docs": [str, ...], "clicks": [int, ...]}`
  plus optional `"timestamp": number|null` and `"dwell": [number|null, ...]` (aligned with
  `clicks`). Other keys are ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from rankloop.data._parse import INT32_MAX, iter_lines, json_number, parse_float, parse_int
from rankloop.data.beir import iter_json_objects
from rankloop.errors import DataNotAvailableError, FormatError, RankloopError
from rankloop.io import atomic_write

PathLike = str | os.PathLike[str]
ClickLogFormat = Literal["auto", "yandex", "tsv", "jsonl"]

YANDEX_SAMPLE = "clicks/yandex-wscd2012-sample"
_YANDEX_FILES = {"train": "trainSample", "test": "testSample"}
_TSV_HEADER = "# query\tdocs\tclicked_positions\ttimestamp\tdwell"


@dataclass(frozen=True, eq=False)
class ClickLog:
    """Search sessions as arrays: `n` sessions x `K` positions (the longest list).

    query_ids:   (n,) int codes into `query_vocab`.
    doc_ids:     (n, K) int codes into `doc_vocab`; -1 past the end of a shorter list.
    clicks:      (n, K) bool; never True on a padded position.
    timestamps:  (n,) float or None (NaN = unknown).
    dwell:       (n, K) float or None; NaN where unknown or not clicked.
    click_order: (n, K) int or None; 0 for the first click, 1 for the second, ...; -1 = no click.
    """

    query_ids: np.ndarray
    doc_ids: np.ndarray
    clicks: np.ndarray
    query_vocab: np.ndarray
    doc_vocab: np.ndarray
    timestamps: np.ndarray | None = None
    dwell: np.ndarray | None = None
    click_order: np.ndarray | None = None
    name: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        d, c, q = self.doc_ids, self.clicks, self.query_ids
        if d.ndim != 2 or c.shape != d.shape or q.shape != (d.shape[0],):
            raise RankloopError(
                f"ClickLog {self.name!r}: shapes query_ids {q.shape}, doc_ids {d.shape}, "
                f"clicks {c.shape} do not agree (want (n,), (n, K), (n, K))"
            )
        if (
            c.dtype != bool
            or not np.issubdtype(d.dtype, np.integer)
            or not np.issubdtype(q.dtype, np.integer)
        ):
            raise RankloopError(
                f"ClickLog {self.name!r}: want int query_ids/doc_ids and bool clicks"
            )
        if d.size and (d.min() < -1 or d.max() >= len(self.doc_vocab)):
            raise RankloopError(f"ClickLog {self.name!r}: doc code out of range of doc_vocab")
        if q.size and (q.min() < 0 or q.max() >= len(self.query_vocab)):
            raise RankloopError(f"ClickLog {self.name!r}: query code out of range of query_vocab")
        mask = d >= 0
        if d.shape[1] > 1 and np.any(~mask[:, :-1] & mask[:, 1:]):
            raise RankloopError(f"ClickLog {self.name!r}: padding (-1) must only trail a list")
        if np.any(c & ~mask):
            raise RankloopError(f"ClickLog {self.name!r}: a click on a padded position")
        for attr, shape in (("timestamps", q.shape), ("dwell", d.shape), ("click_order", d.shape)):
            value = getattr(self, attr)
            if value is not None and value.shape != shape:
                raise RankloopError(
                    f"ClickLog {self.name!r}: {attr} has shape {value.shape}, want {shape}"
                )

    # --- shape helpers -------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.doc_ids.shape[0])

    @property
    def n_sessions(self) -> int:
        return int(self.doc_ids.shape[0])

    @property
    def max_rank(self) -> int:
        """K: the number of position columns."""
        return int(self.doc_ids.shape[1])

    @property
    def mask(self) -> np.ndarray:
        """(n, K) bool: True where a document was shown."""
        return self.doc_ids >= 0

    @property
    def lengths(self) -> np.ndarray:
        """(n,) int: list length per session."""
        return self.mask.sum(axis=1)

    @property
    def queries(self) -> np.ndarray:
        """(n,) query id strings."""
        return self.query_vocab[self.query_ids]

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_lists(
        cls,
        queries: Sequence[str],
        rankings: Sequence[Sequence[str]],
        clicked: Sequence[Sequence[int]],
        timestamps: Sequence[float | None] | None = None,
        dwell: Sequence[Sequence[float | None]] | None = None,
        name: str = "",
        meta: Mapping[str, object] | None = None,
    ) -> ClickLog:
        """Build from per-session lists; `clicked` holds distinct 0-based positions in click order.

        `dwell[i]` (optional) is aligned with `clicked[i]`; None means unknown. Codes follow the
        order of first appearance.
        """
        n = len(rankings)
        if len(queries) != n or len(clicked) != n:
            raise RankloopError(
                f"ClickLog.from_lists: {len(queries)} queries, {n} rankings, {len(clicked)} click lists"
            )
        qvocab: dict[str, int] = {}
        qcodes = np.fromiter((qvocab.setdefault(q, len(qvocab)) for q in queries), np.int64, n)
        lengths = np.fromiter((len(r) for r in rankings), np.int64, n)
        k = int(lengths.max()) if n else 0
        dvocab: dict[str, int] = {}
        flat = np.fromiter(
            (dvocab.setdefault(d, len(dvocab)) for r in rankings for d in r),
            np.int64,
            int(lengths.sum()),
        )
        doc_ids = np.full((n, k), -1, np.int64)
        mask = np.arange(k) < lengths[:, None]
        doc_ids[mask] = flat
        n_clicks = np.fromiter((len(c) for c in clicked), np.int64, n)
        rows = np.repeat(np.arange(n), n_clicks)
        pos = np.fromiter((p for c in clicked for p in c), np.int64, int(n_clicks.sum()))
        if pos.size and (pos.min() < 0 or np.any(pos >= lengths[rows])):
            raise RankloopError("ClickLog.from_lists: a clicked position outside its list")
        order = np.arange(pos.size) - np.repeat(np.cumsum(n_clicks) - n_clicks, n_clicks)
        click_order = np.full((n, k), -1, np.int64)
        click_order[rows, pos] = order
        if np.count_nonzero(click_order >= 0) != pos.size:
            raise RankloopError("ClickLog.from_lists: a position is clicked twice in one session")
        ts = None
        if timestamps is not None:
            ts = np.array([np.nan if t is None else float(t) for t in timestamps], dtype=float)
        dw = None
        if dwell is not None:
            dw = np.full((n, k), np.nan)
            dflat = np.array(
                [np.nan if v is None else float(v) for dl in dwell for v in dl], dtype=float
            )
            if dflat.size != pos.size:
                raise RankloopError("ClickLog.from_lists: dwell lists must align with click lists")
            dw[rows, pos] = dflat
        return cls(
            query_ids=qcodes,
            doc_ids=doc_ids,
            clicks=click_order >= 0,
            query_vocab=np.array(list(qvocab), dtype=str),
            doc_vocab=np.array(list(dvocab), dtype=str),
            timestamps=ts,
            dwell=dw,
            click_order=click_order,
            name=name,
            meta=dict(meta or {}),
        )

    def subset(self, index: np.ndarray | slice) -> ClickLog:
        """The sessions selected by a boolean mask, an index array or a slice (vocabularies kept)."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return ClickLog(
            self.query_ids[index],
            self.doc_ids[index],
            self.clicks[index],
            self.query_vocab,
            self.doc_vocab,
            pick(self.timestamps),
            pick(self.dwell),
            pick(self.click_order),
            self.name,
            dict(self.meta),
        )

    def with_clicks(self, clicks: np.ndarray, name: str | None = None) -> ClickLog:
        """The same sessions with new clicks (simulation); dwell and click order are dropped."""
        return ClickLog(
            self.query_ids,
            self.doc_ids,
            np.asarray(clicks, dtype=bool),
            self.query_vocab,
            self.doc_vocab,
            self.timestamps,
            None,
            None,
            self.name if name is None else name,
            dict(self.meta),
        )

    def session(self, i: int) -> tuple[str, list[str], list[int]]:
        """(query, doc ids, clicked 0-based positions in click order) of session `i`."""
        length = int(self.lengths[i])
        docs = self.doc_vocab[self.doc_ids[i, :length]].tolist()
        clicked = np.flatnonzero(self.clicks[i])
        if self.click_order is not None:
            clicked = clicked[np.argsort(self.click_order[i, clicked], kind="stable")]
        return str(self.query_vocab[self.query_ids[i]]), docs, clicked.tolist()


def concat_logs(logs: Sequence[ClickLog], name: str = "") -> ClickLog:
    """One log with the sessions of all `logs`, in order (vocabularies merged, K = the largest).

    Optional columns (timestamps, dwell, click order) are kept only if every log has them.
    """
    if not logs:
        raise RankloopError("concat_logs: no logs given")
    qvocab, qinv = np.unique(np.concatenate([g.query_vocab for g in logs]), return_inverse=True)
    dvocab, dinv = np.unique(np.concatenate([g.doc_vocab for g in logs]), return_inverse=True)
    k = max(g.max_rank for g in logs)
    q_off = np.cumsum([0] + [len(g.query_vocab) for g in logs])
    d_off = np.cumsum([0] + [len(g.doc_vocab) for g in logs])

    def widen(a: np.ndarray, fill: float) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, k - a.shape[1])), constant_values=fill)

    docs = []
    for i, g in enumerate(logs):
        codes = np.where(g.mask, dinv[d_off[i] + np.maximum(g.doc_ids, 0)], -1)
        docs.append(widen(codes, -1))

    def column(attr: str, fill: float) -> np.ndarray | None:
        parts = [getattr(g, attr) for g in logs]
        if any(p is None for p in parts):
            return None
        return np.concatenate([p if p.ndim == 1 else widen(p, fill) for p in parts])

    return ClickLog(
        query_ids=np.concatenate([qinv[q_off[i] + g.query_ids] for i, g in enumerate(logs)]),
        doc_ids=np.concatenate(docs),
        clicks=np.concatenate([widen(g.clicks, False) for g in logs]),
        query_vocab=qvocab,
        doc_vocab=dvocab,
        timestamps=column("timestamps", np.nan),
        dwell=column("dwell", np.nan),
        click_order=column("click_order", -1),
        name=name or "+".join(g.name for g in logs),
    )


# --- readers -----------------------------------------------------------------------------
def _split_ids(text: str, what: str, path: PathLike, lineno: int, allow_empty: bool) -> list[str]:
    """Comma-separated ids with optional spaces around commas; no empty or blank-containing id."""
    if not text.strip():
        if allow_empty:
            return []
        raise FormatError(path, lineno, f"a non-empty list of {what}", text)
    out = [t.strip() for t in text.split(",")]
    for t in out:
        if not t or len(t.split()) != 1:
            raise FormatError(
                path, lineno, f"comma-separated {what} (no empty or blank-containing id)", text
            )
    return out


def _check_distinct(docs: list[str], path: PathLike, lineno: int, line: str) -> None:
    """A result list shows each document once."""
    if len(set(docs)) != len(docs):
        twice = next(d for i, d in enumerate(docs) if d in docs[:i])
        raise FormatError(
            path, lineno, f"distinct documents in a result list ({twice!r} appears twice)", line
        )


def read_yandex(path: PathLike, name: str | None = None) -> ClickLog:
    """Read the PyClick/Yandex WSCD 2012 sample format (see the module docstring)."""
    queries: list[str] = []
    rankings: list[list[str]] = []
    clicked: list[list[int]] = []
    dropped = repeated = 0
    for lineno, line in iter_lines(path):
        for part in line.split(";"):
            if not part.strip():
                continue
            query, tab, rest = part.strip().partition("\t")
            if not tab or not query or len(query.split()) != 1:
                raise FormatError(
                    path, lineno, "a session 'QUERY<TAB>DOC,...,DOC : CLICK , ...'", part
                )
            docs_text, colon, clicks_text = rest.partition(":")
            if not colon:
                raise FormatError(path, lineno, "':' between the result list and the clicks", part)
            docs = _split_ids(docs_text, "document ids", path, lineno, allow_empty=False)
            _check_distinct(docs, path, lineno, part)
            where = {d: i for i, d in reversed(list(enumerate(docs)))}
            positions: list[int] = []
            seen: set[int] = set()
            for doc in _split_ids(
                clicks_text, "clicked document ids", path, lineno, allow_empty=True
            ):
                p = where.get(doc)
                if p is None:
                    dropped += 1
                elif p in seen:
                    repeated += 1
                else:
                    seen.add(p)
                    positions.append(p)
            queries.append(query)
            rankings.append(docs)
            clicked.append(positions)
    if not rankings:
        raise FormatError(
            path, None, "at least one session (an empty file is an error)", "no records"
        )
    meta = {
        "dropped_clicks": dropped,
        "repeated_clicks": repeated,
        "format": "yandex",
        "path": str(path),
    }
    return ClickLog.from_lists(queries, rankings, clicked, name=name or Path(path).name, meta=meta)


def _check_clicks(
    positions: list[int], n_docs: int, path: PathLike, lineno: int, line: str
) -> list[int]:
    """1-based distinct positions within the list -> 0-based."""
    if len(set(positions)) != len(positions):
        raise FormatError(path, lineno, "distinct clicked positions", line)
    for p in positions:
        if not 1 <= p <= n_docs:
            raise FormatError(path, lineno, f"clicked positions in 1..{n_docs}", line)
    return [p - 1 for p in positions]


def read_tsv(path: PathLike, name: str | None = None) -> ClickLog:
    """Read the generic TSV click-log format (see the module docstring)."""
    queries: list[str] = []
    rankings: list[list[str]] = []
    clicked: list[list[int]] = []
    stamps: list[float | None] = []
    dwells: list[list[float | None]] = []
    for lineno, line in iter_lines(path):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if not 3 <= len(fields) <= 5:
            raise FormatError(
                path,
                lineno,
                "3 to 5 tab-separated fields (query, docs, clicks[, timestamp[, dwell]])",
                line,
            )
        query = fields[0].strip()
        if not query or len(query.split()) != 1:
            raise FormatError(path, lineno, "a non-empty query id without blanks", line)
        docs = _split_ids(fields[1], "document ids", path, lineno, allow_empty=False)
        _check_distinct(docs, path, lineno, line)
        tokens = _split_ids(fields[2], "clicked positions", path, lineno, allow_empty=True)
        ints = [parse_int(t, path, lineno, "clicked position", 1, INT32_MAX) for t in tokens]
        positions = _check_clicks(ints, len(docs), path, lineno, line)
        ts_text = fields[3].strip() if len(fields) > 3 else ""
        stamps.append(parse_float(ts_text, path, lineno, "timestamp") if ts_text else None)
        dwell: list[float | None] = [None] * len(positions)
        if len(fields) > 4 and fields[4].strip():
            parts = [t.strip() for t in fields[4].split(",")]
            if len(parts) != len(positions):
                raise FormatError(
                    path, lineno, f"{len(positions)} dwell times (one per click)", fields[4]
                )
            dwell = [parse_float(t, path, lineno, "dwell time", 0) if t else None for t in parts]
        queries.append(query)
        rankings.append(docs)
        clicked.append(positions)
        dwells.append(dwell)
    if not rankings:
        raise FormatError(
            path, None, "at least one session (an empty file is an error)", "no records"
        )
    return _finish(queries, rankings, clicked, stamps, dwells, name or Path(path).name, "tsv", path)


def _finish(
    queries: list[str],
    rankings: list[list[str]],
    clicked: list[list[int]],
    stamps: list[float | None],
    dwells: list[list[float | None]],
    name: str,
    fmt: str,
    path: PathLike,
) -> ClickLog:
    has_ts = any(t is not None for t in stamps)
    has_dwell = any(v is not None for d in dwells for v in d)
    return ClickLog.from_lists(
        queries,
        rankings,
        clicked,
        stamps if has_ts else None,
        dwells if has_dwell else None,
        name=name,
        meta={"format": fmt, "path": str(path)},
    )


def _json_dwell(dwell: object, n_clicks: int) -> list[float | None] | None:
    """JSONL dwell times aligned with the clicks (null = unknown), or None when malformed."""
    if dwell is None:
        return [None] * n_clicks
    if not isinstance(dwell, list) or len(dwell) != n_clicks:
        return None
    out = [None if v is None else json_number(v, 0) for v in dwell]
    return None if any(o is None and v is not None for o, v in zip(out, dwell)) else out


def read_jsonl(path: PathLike, name: str | None = None) -> ClickLog:
    """Read the generic JSONL click-log format (see the module docstring)."""
    queries: list[str] = []
    rankings: list[list[str]] = []
    clicked: list[list[int]] = []
    stamps: list[float | None] = []
    dwells: list[list[float | None]] = []
    for lineno, obj, line in iter_json_objects(path, record="session"):
        query, docs, clicks = obj.get("query"), obj.get("docs"), obj.get("clicks")
        if isinstance(query, int) and not isinstance(query, bool):
            query = str(query)
        if not isinstance(query, str) or not query or len(query.split()) != 1:
            raise FormatError(path, lineno, "'query': a non-empty id without blanks", line)
        if (
            not isinstance(docs, list)
            or not docs
            or not all(
                isinstance(d, str) and d and len(d.split()) == 1 and "," not in d for d in docs
            )
        ):
            raise FormatError(
                path, lineno, "'docs': a non-empty list of ids without blanks or commas", line
            )
        _check_distinct(docs, path, lineno, line)
        if not isinstance(clicks, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in clicks
        ):
            raise FormatError(path, lineno, "'clicks': a list of 1-based integer positions", line)
        positions = _check_clicks(clicks, len(docs), path, lineno, line)
        ts = obj.get("timestamp")
        stamp = None if ts is None else json_number(ts)
        if ts is not None and stamp is None:
            raise FormatError(path, lineno, "'timestamp': a finite number or null", line)
        dwell = _json_dwell(obj.get("dwell"), len(positions))
        if dwell is None:
            raise FormatError(
                path, lineno, "'dwell': a list of numbers >= 0 or nulls, one per click", line
            )
        queries.append(query)
        rankings.append(docs)
        clicked.append(positions)
        stamps.append(stamp)
        dwells.append(dwell)
    return _finish(
        queries, rankings, clicked, stamps, dwells, name or Path(path).name, "jsonl", path
    )


def _guess_format(path: PathLike) -> str:
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    return {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv"}.get(last, "yandex")


def read_click_log(
    path: PathLike, format: ClickLogFormat = "auto", name: str | None = None
) -> ClickLog:
    """Read a click log; `auto` picks jsonl for `*.jsonl`, tsv for `*.tsv`, else yandex."""
    fmt = _guess_format(path) if format == "auto" else format
    readers = {"yandex": read_yandex, "tsv": read_tsv, "jsonl": read_jsonl}
    if fmt not in readers:
        raise RankloopError(
            f"unknown click-log format {format!r}; choose one of auto, yandex, tsv, jsonl"
        )
    return readers[fmt](path, name)


def load_yandex_sample(
    split: Literal["train", "test"] = "train", root: PathLike | None = None
) -> ClickLog:
    """The WSCD 2012 sample's `trainSample`/`testSample` from `root` or `$RANKLOOP_DATA`."""
    if split not in _YANDEX_FILES:
        raise RankloopError(f"yandex-wscd2012-sample: unknown split {split!r} (train or test)")
    if root is None:
        base = os.environ.get("RANKLOOP_DATA")
        if not base:
            raise DataNotAvailableError(
                "yandex-wscd2012-sample: set RANKLOOP_DATA to the data folder that holds "
                f"{YANDEX_SAMPLE}/ (or pass root=)"
            )
        root = Path(base) / YANDEX_SAMPLE
    path = Path(root) / _YANDEX_FILES[split]
    if not path.is_file():
        raise DataNotAvailableError(
            f"yandex-wscd2012-sample: {path} not found (get trainSample/testSample from the "
            "PyClick examples, github.com/markovi/PyClick, examples/data)"
        )
    return read_yandex(path, name=f"yandex-wscd2012-sample/{split}")


# --- writers -----------------------------------------------------------------------------
def _sessions(
    log: ClickLog,
) -> Iterator[tuple[str, list[str], list[int], float | None, list[float | None]]]:
    for i in range(len(log)):
        query, docs, clicked = log.session(i)
        for token in [query, *docs]:
            if not token or len(token.split()) != 1 or "," in token:
                raise RankloopError(
                    f"cannot write id {token!r}: ids must be non-empty, without blanks or commas"
                )
        ts = None
        if log.timestamps is not None and not np.isnan(log.timestamps[i]):
            ts = float(log.timestamps[i])
        dwell: list[float | None] = [None] * len(clicked)
        if log.dwell is not None:
            dwell = [None if np.isnan(log.dwell[i, p]) else float(log.dwell[i, p]) for p in clicked]
        yield query, docs, clicked, ts, dwell


def write_tsv(log: ClickLog, path: PathLike) -> None:
    """Write the generic TSV format atomically (timestamp/dwell columns only when present)."""
    extra = 2 if log.dwell is not None else 1 if log.timestamps is not None else 0
    with atomic_write(path) as fh:
        fh.write(_TSV_HEADER + "\n")
        for query, docs, clicked, ts, dwell in _sessions(log):
            fields = [query, ",".join(docs), ",".join(str(p + 1) for p in clicked)]
            if extra:
                fields.append("" if ts is None else repr(ts))
            if extra == 2:
                fields.append(",".join("" if v is None else repr(v) for v in dwell))
            fh.write("\t".join(fields) + "\n")


def write_jsonl(log: ClickLog, path: PathLike) -> None:
    """Write the generic JSONL format atomically."""
    with atomic_write(path) as fh:
        for query, docs, clicked, ts, dwell in _sessions(log):
            obj: dict[str, object] = {
                "query": query,
                "docs": docs,
                "clicks": [p + 1 for p in clicked],
            }
            if log.timestamps is not None:
                obj["timestamp"] = ts
            if log.dwell is not None:
                obj["dwell"] = dwell
            fh.write(json.dumps(obj) + "\n")


def write_click_log(
    log: ClickLog, path: PathLike, format: Literal["auto", "tsv", "jsonl"] = "auto"
) -> None:
    """Write `log` as TSV or JSONL (`auto`: JSONL for `*.jsonl`/`*.json`, else TSV)."""
    fmt = format if format != "auto" else ("jsonl" if _guess_format(path) == "jsonl" else "tsv")
    if fmt == "jsonl":
        write_jsonl(log, path)
    elif fmt == "tsv":
        write_tsv(log, path)
    else:
        raise RankloopError(f"cannot write click-log format {format!r}; choose tsv or jsonl")
