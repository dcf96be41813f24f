"""Rating data sets for recommenders: Coat, Yahoo! R3, MovieLens 100K/1M, any CSV/Parquet log.

Every reader validates at the boundary: a malformed row raises `FormatError(path, line,
expected, got)`, and a missing data set raises `DataNotAvailableError` naming where it looked.
Text is strict UTF-8 and numbers are strict ASCII (`rankloop.data._parse`); line numbers are
physical (blank lines are skipped but counted). Values are finite and in range: Coat ratings
0-5, Coat propensities in (0, 1], Yahoo! R3 ratings 1-5, MovieLens ratings 0.5-5, other
ratings within float32, counts >= 0, timestamps integer seconds >= 0. A file without data rows
(empty, or a header only) is an error. Ids are mapped to dense row/column indices;
`Interactions` keeps the id lists.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rankloop.data._parse import (
    FLOAT32_LIMIT,
    float_column,
    int_column,
    read_lines,
    read_table,
    table_column,
)
from rankloop.data.interactions import Interactions, Kind
from rankloop.errors import DataNotAvailableError, FormatError, RankloopError


@dataclass(frozen=True)
class RatingLog:
    """Raw feedback rows mapped to dense indices: parallel arrays plus the id lists."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    user_ids: list[str]
    item_ids: list[str]
    timestamps: np.ndarray | None = None
    value_name: str = "rating"
    name: str = ""

    def __len__(self) -> int:
        return len(self.users)

    def to_interactions(self, kind: Kind | None = None) -> Interactions:
        """The user × item matrix; ratings are explicit and counts implicit unless `kind` says."""
        kind = kind or ("explicit" if self.value_name == "rating" else "implicit")
        return Interactions.from_triples(
            users=self.users,
            items=self.items,
            values=self.values,
            n_users=len(self.user_ids),
            n_items=len(self.item_ids),
            kind=kind,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            name=self.name,
        )


@dataclass(frozen=True)
class MNARDataset:
    """A self-selected (MNAR) training set and, where one exists, a MAR test set on random items."""

    train: Interactions
    test: Interactions | None
    name: str = ""
    user_features: np.ndarray | None = None
    item_features: np.ndarray | None = None
    user_feature_names: list[str] = field(default_factory=list)
    item_feature_names: list[str] = field(default_factory=list)
    shipped_propensities: np.ndarray | None = None

    def head(self, n_users: int, n_items: int | None = None) -> MNARDataset:
        """The first `n_users` users (and `n_items` items): small slices for tests."""
        n_items = self.train.n_items if n_items is None else n_items

        def cut(x: Interactions | None) -> Interactions | None:
            if x is None:
                return None
            return Interactions(
                user_items=x.user_items[:n_users, :n_items],
                kind=x.kind,
                user_ids=x.user_ids[:n_users],
                item_ids=x.item_ids[:n_items],
                name=x.name,
            )

        return MNARDataset(
            train=cut(self.train),  # type: ignore[arg-type]
            test=cut(self.test),
            name=self.name,
            user_features=None if self.user_features is None else self.user_features[:n_users],
            item_features=None if self.item_features is None else self.item_features[:n_items],
            user_feature_names=self.user_feature_names,
            item_feature_names=self.item_feature_names,
            shipped_propensities=None
            if self.shipped_propensities is None
            else self.shipped_propensities[:n_users, :n_items],
        )


# ---- locating data ------------------------------------------------------------------------
def _resolve(name: str, path: str | os.PathLike[str] | None, local: str) -> Path:
    """An explicit path, else the registry's copy (mirror, cache, download), else `$RANKLOOP_DATA/<local>`."""
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise DataNotAvailableError(f"{name}: no such path {p}")
        return p
    from rankloop.data import registry

    if name in registry.default_registry().names():
        return Path(registry.fetch(name))
    root = os.environ.get("RANKLOOP_DATA")
    if root and (Path(root) / local).exists():
        return Path(root) / local
    where = f"$RANKLOOP_DATA/{local}" + (
        f" (RANKLOOP_DATA={root})" if root else " (RANKLOOP_DATA is not set)"
    )
    raise DataNotAvailableError(
        f"{name}: no local copy at {where}; pass an explicit path or set RANKLOOP_DATA to a data mirror"
    )


def _raw_line(path: Path, line: int) -> str:
    """Error path only: the text of a file line."""
    lines = read_lines(path)
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _row_text(path: Path, df: pd.DataFrame, line: int) -> str:
    """What an error shows as `got`: the raw text line, or a Parquet row's values."""
    if path.suffix == ".parquet":
        return ", ".join(f"{k}={v}" for k, v in df.loc[line].items())
    return _raw_line(path, line)


# ---- delimited triples --------------------------------------------------------------------
def _check_present(path: Path, df: pd.DataFrame, cols: list[str]) -> None:
    for c in cols:
        empty = (df[c].astype(str).str.strip() == "").to_numpy()
        if empty.any():
            line = int(df.index[np.argmax(empty)])
            raise FormatError(path, line, f"a non-empty {c!r} field", _row_text(path, df, line))


def _check_unique_pairs(path: Path, df: pd.DataFrame, user_col: str, item_col: str) -> None:
    dup = df.duplicated(subset=[user_col, item_col], keep="first").to_numpy()
    if dup.any():
        line = int(df.index[np.argmax(dup)])
        raise FormatError(
            path, line, "at most one row per (user, item) pair", _row_text(path, df, line)
        )


def _id_index(*columns: pd.Series) -> tuple[list[str], list[np.ndarray]]:
    """A shared id list over several (stripped string) columns and their codes; numeric ids sort numerically."""
    allv = pd.unique(pd.concat(list(columns), ignore_index=True))
    num = pd.to_numeric(pd.Series(allv), errors="coerce")
    order = (
        np.argsort(num.to_numpy(), kind="stable")
        if num.notna().all()
        else np.argsort(allv, kind="stable")
    )
    ids = [str(v) for v in np.asarray(allv)[order]]
    lookup = pd.Index(ids)
    return ids, [lookup.get_indexer(c).astype(np.int64) for c in columns]


def _log_from_frames(
    frames: list[tuple[Path, pd.DataFrame]],
    user_col: str,
    item_col: str,
    value_col: str,
    timestamp_col: str | None,
    value_name: str,
    name: str,
    value_range: tuple[float, float],
) -> list[RatingLog]:
    """Validated logs sharing one user and one item index (train and test must agree on rows)."""
    frames = [
        (path, df.assign(**{c: df[c].astype(str).str.strip() for c in (user_col, item_col)}))
        for path, df in frames
    ]
    for path, df in frames:
        _check_present(path, df, [user_col, item_col])
        _check_unique_pairs(path, df, user_col, item_col)
    user_ids, ucodes = _id_index(*[df[user_col] for _, df in frames])
    item_ids, icodes = _id_index(*[df[item_col] for _, df in frames])
    logs = []
    for (path, df), u, i in zip(frames, ucodes, icodes):
        what = f"{value_name} in column {value_col!r}"
        vals = table_column(path, df, value_col, what, *value_range)
        ts = None
        if timestamp_col is not None:
            what = f"timestamp (seconds) in column {timestamp_col!r}"
            ts = table_column(path, df, timestamp_col, what, 0, 2**53 - 1, integer=True)
        logs.append(
            RatingLog(u, i, vals.astype(np.float32), user_ids, item_ids, ts, value_name, name)
        )
    return logs


# ---- Coat ---------------------------------------------------------------------------------
_BLANKS = re.compile(r"[ \t]+")


def _read_matrix(
    path: Path,
    n_cols: int | None,
    what: str,
    lo: float,
    hi: float,
    *,
    integer: bool = True,
    lo_open: bool = False,
) -> np.ndarray:
    """A blank-separated numeric matrix (blank lines skipped) with every value in range."""
    if not path.exists():
        raise DataNotAvailableError(f"missing file {path}")
    tokens: list[str] = []
    linenos: list[int] = []
    n_rows = 0
    for n, text in enumerate(read_lines(path), 1):
        if not text.strip():
            continue
        parts = _BLANKS.split(text.strip())
        n_cols = len(parts) if n_cols is None else n_cols
        if len(parts) != n_cols:
            kind = "integers" if integer else "numbers"
            raise FormatError(
                path, n, f"{n_cols} {kind} per line ({what})", f"{len(parts)} fields: {text}"
            )
        tokens += parts
        linenos += [n] * n_cols
        n_rows += 1
    if not n_rows:
        raise FormatError(path, None, f"a {what} matrix", "no records")
    if integer:
        values = int_column(tokens, path, linenos, what, int(lo), int(hi))
    else:
        values = float_column(tokens, path, linenos, what, lo, hi, lo_open=lo_open)
    return values.reshape(n_rows, -1)


def _read_names(path: Path) -> list[str]:
    return [ln.strip() for ln in read_lines(path) if ln.strip()] if path.exists() else []


def load_coat(path: str | os.PathLike[str] | None = None) -> MNARDataset:
    """Coat (Schnabel et al., ICML 2016): 290 users × 300 items, ratings 1-5.

    `train` holds the self-selected (MNAR) ratings of `train.ascii`, `test` the ratings on
    uniformly random items (MAR) of `test.ascii`; both as explicit `Interactions`. Features and
    the authors' shipped propensities come along when present.
    """
    root = _resolve("coat", path, "recsys/coat")
    what = "rating (0 = unrated)"
    train = _read_matrix(root / "train.ascii", None, what, 0, 5)
    test = _read_matrix(root / "test.ascii", train.shape[1], what, 0, 5)
    if test.shape != train.shape:
        raise FormatError(
            root / "test.ascii",
            None,
            f"{train.shape[0]} rows like train.ascii",
            f"{test.shape[0]} rows",
        )
    feat = root / "user_item_features"
    uf = itf = None
    if (feat / "user_features.ascii").exists():
        uf = _read_matrix(feat / "user_features.ascii", None, "binary user feature", 0, 1)
        itf = _read_matrix(feat / "item_features.ascii", None, "binary item feature", 0, 1)
        uf, itf = uf.astype(np.float32), itf.astype(np.float32)
        if uf.shape[0] != train.shape[0] or itf.shape[0] != train.shape[1]:
            raise FormatError(
                feat,
                None,
                f"{train.shape[0]} user and {train.shape[1]} item feature rows",
                f"{uf.shape[0]} and {itf.shape[0]}",
            )
    prop = None
    if (root / "propensities.ascii").exists():
        prop = _read_matrix(
            root / "propensities.ascii",
            train.shape[1],
            "propensity",
            0,
            1,
            integer=False,
            lo_open=True,
        )
        if prop.shape != train.shape:
            raise FormatError(
                root / "propensities.ascii",
                None,
                f"{train.shape[0]} rows like train.ascii",
                f"{prop.shape[0]} rows",
            )
    return MNARDataset(
        train=Interactions.from_dense(ratings=train, kind="explicit", name="coat/train"),
        test=Interactions.from_dense(ratings=test, kind="explicit", name="coat/test"),
        name="coat",
        user_features=uf,
        item_features=itf,
        user_feature_names=_read_names(feat / "user_features_map.txt"),
        item_feature_names=_read_names(feat / "item_features_map.txt"),
        shipped_propensities=prop,
    )


# ---- Yahoo! R3 ----------------------------------------------------------------------------
_YAHOO_NAMES = {
    "train": ("train.txt", "ydata-ymusic-rating-study-v1_0-train.txt"),
    "test": ("test.txt", "ydata-ymusic-rating-study-v1_0-test.txt"),
}


def load_yahoo_r3(path: str | os.PathLike[str] | None = None) -> MNARDataset:
    """Yahoo! R3 from a user-supplied folder holding `train.txt`/`test.txt` (user item rating).

    The licence forbids redistribution, so there is no download: pass the folder you obtained
    from Yahoo! Webscope (or keep it in a mirror the registry knows). `train` is the users' own
    selections (MNAR), `test` the ten random songs each of the first 5,400 users rated (MAR).
    The Webscope file names (`ydata-ymusic-rating-study-v1_0-*.txt`) are accepted too.
    """
    if path is None:
        from rankloop.data import registry

        if "yahoo-r3" not in registry.default_registry().names():
            raise DataNotAvailableError(
                "yahoo-r3: its licence forbids redistribution; pass the folder with train.txt/test.txt "
                "obtained from https://webscope.sandbox.yahoo.com/catalog.php?datatype=r"
            )
        path = _resolve("yahoo-r3", None, "recsys/yahoo-r3")
    root = Path(path)
    files = {}
    for split, names in _YAHOO_NAMES.items():
        found = next((root / n for n in names if (root / n).exists()), None)
        if found is None:
            raise DataNotAvailableError(f"yahoo-r3: no {' or '.join(names)} in {root}")
        files[split] = found
    cols = ["user", "item", "rating"]
    frames = [(p, read_table(p, "\t", cols)) for p in files.values()]
    train, test = _log_from_frames(
        frames, "user", "item", "rating", None, "rating", "yahoo-r3", (1, 5)
    )
    return MNARDataset(train=train.to_interactions(), test=test.to_interactions(), name="yahoo-r3")


# ---- MovieLens ----------------------------------------------------------------------------
_MOVIELENS = {
    "movielens-100k": ("ml-100k", "u.data", "\t"),
    "movielens-1m": ("ml-1m", "ratings.dat", "::"),
}


def load_movielens(
    name: str = "movielens-100k", path: str | os.PathLike[str] | None = None
) -> RatingLog:
    """MovieLens 100K (`u.data`) or 1M (`ratings.dat`) as a rating log with timestamps.

    Resolves through the data registry (GroupLens URL and checksum) unless `path` names the
    unzipped folder. There is no MAR test set: split it yourself (by time or at random).
    """
    if name not in _MOVIELENS:
        raise RankloopError(f"unknown MovieLens set {name!r}; choose from {sorted(_MOVIELENS)}")
    folder, fname, sep = _MOVIELENS[name]
    root = _resolve(name, path, f"recsys/{folder}")
    f = root / fname
    if not f.exists() and (root / folder / fname).exists():
        f = root / folder / fname
    if not f.exists():
        raise DataNotAvailableError(f"{name}: no {fname} under {root}")
    df = read_table(f, sep, ["user", "item", "rating", "timestamp"])
    (log,) = _log_from_frames(
        [(f, df)], "user", "item", "rating", "timestamp", "rating", name, (0.5, 5)
    )
    return log


# ---- any CSV / Parquet --------------------------------------------------------------------
def read_ratings(
    path: str | os.PathLike[str],
    *,
    user_col: str = "user",
    item_col: str = "item",
    value_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str = ",",
) -> RatingLog:
    """A CSV (with header) or Parquet file of (user, item, rating | count[, timestamp]) rows.

    `value_col` defaults to `rating`, else `count`, else every row counts 1. A rating column
    gives explicit feedback, anything else implicit. For Parquet, "line" in errors is the
    1-based row number.
    """
    p = Path(path)
    if not p.exists():
        raise DataNotAvailableError(f"no such file {p}")
    if p.suffix == ".parquet":
        try:
            df = pd.read_parquet(p).astype(str)
        except Exception as e:  # pyarrow raises many types for a corrupt file
            raise FormatError(
                p, None, "a readable Parquet file", f"{type(e).__name__}: {e}"
            ) from None
        df.index = df.index + 1
        header = list(df.columns)
    else:
        df = read_table(p, sep)
        header = list(df.columns)
    if value_col is None:
        value_col = next((c for c in ("rating", "count") if c in header), None)
    need = (
        [user_col, item_col]
        + ([value_col] if value_col else [])
        + ([timestamp_col] if timestamp_col else [])
    )
    missing = [c for c in need if c not in header]
    if missing:
        raise FormatError(p, 1, f"columns {need}", f"header {header}")
    if value_col is None:
        df = df.assign(_value="1")
        value_col = "_value"
    value_name = "rating" if value_col == "rating" else "count"
    value_range = (-FLOAT32_LIMIT if value_name == "rating" else 0.0, FLOAT32_LIMIT)
    (log,) = _log_from_frames(
        [(p, df)], user_col, item_col, value_col, timestamp_col, value_name, p.stem, value_range
    )
    return log
