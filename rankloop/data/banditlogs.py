"""Logged bandit feedback: the `BanditLog` type and the Open Bandit Dataset (OBD) reader.

OBD (Saito et al., "Open Bandit Dataset and Pipeline", NeurIPS 2021 datasets track) logs
ZOZOTOWN's fashion recommendation widget: each row is one impression of `item_id` at one of
three `position`s (1-based in the files), with the `click`, the logging policy's
`propensity_score` for that item at that position, hashed categorical user features
`user_feature_0..3` and numeric `user-item_affinity_<item>` columns. `item_context.csv` holds
the item features (`item_feature_0` numeric, `item_feature_1..3` hashed categories).

Layout: `<root>/<behavior>/<campaign>/<campaign>.csv` and `.../item_context.csv`, with
behavior in {random, bts} and campaign in {all, men, women}; the small sample ships with obp
and resolves through the registry as `obd-small`.

Reading follows `rankloop.data`'s rules (strict UTF-8, strict ASCII numbers, physical line
numbers with blank lines skipped but counted; see `rankloop.data._parse`). The first CSV
column is pandas' row index and is ignored; quotes are data. Every value is checked: item ids
are 0..n_items-1, positions 1..n_items, clicks 0 or 1, propensities in (0, 1], affinities and
`item_feature_0` finite, timestamps ISO 8601. A log or item file without data rows is an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rankloop.data._parse import INT32_MAX, read_table, table_column
from rankloop.errors import DataNotAvailableError, FormatError, RankloopError

BEHAVIORS = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
_REQUIRED = ("item_id", "position", "click", "propensity_score")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?![0-9])", re.ASCII)


@dataclass(frozen=True, eq=False)
class BanditLog:
    """Logged bandit feedback, one row per impression (arrays of length n).

    action: item ids in [0, n_actions); position: 0-based slot; reward: clicks; pscore: the
    logging policy's probability of that item at that slot; context: (n, d) user features;
    action_context: (n_actions, p) item features.
    """

    action: np.ndarray
    position: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    context: np.ndarray
    action_context: np.ndarray
    n_actions: int
    len_list: int
    timestamp: np.ndarray | None = None
    context_names: list[str] = field(default_factory=list)
    behavior: str = ""
    campaign: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        n = len(self.action)
        for what in ("position", "reward", "pscore"):
            if len(getattr(self, what)) != n:
                raise RankloopError(
                    f"BanditLog: {what} has {len(getattr(self, what))} rows, not {n}"
                )
        if self.context.shape[0] != n:
            raise RankloopError(f"BanditLog: context has {self.context.shape[0]} rows, not {n}")
        if self.action_context.shape[0] != self.n_actions:
            raise RankloopError("BanditLog: action_context needs one row per action")

    def __len__(self) -> int:
        return len(self.action)

    @property
    def ctr(self) -> float:
        """On-policy value of the logging policy: the mean reward per impression."""
        return float(self.reward.mean()) if len(self) else float("nan")

    def action_distribution(self) -> np.ndarray:
        """(n_actions, len_list) empirical frequency of each action at each position.

        For a context-free logging policy this is its time-averaged action distribution.
        """
        counts = np.zeros((self.n_actions, self.len_list))
        np.add.at(counts, (self.action, self.position), 1.0)
        return counts / np.maximum(counts.sum(axis=0, keepdims=True), 1.0)

    def subset(self, rows: np.ndarray) -> BanditLog:
        """The log restricted to `rows` (indices or a boolean mask)."""
        r = np.asarray(rows)
        return BanditLog(
            action=self.action[r],
            position=self.position[r],
            reward=self.reward[r],
            pscore=self.pscore[r],
            context=self.context[r],
            action_context=self.action_context,
            n_actions=self.n_actions,
            len_list=self.len_list,
            timestamp=None if self.timestamp is None else self.timestamp[r],
            context_names=self.context_names,
            behavior=self.behavior,
            campaign=self.campaign,
            name=self.name,
        )


def _obd_root(path: str | os.PathLike[str] | None) -> Path:
    if path is not None:
        root = Path(path)
        if not root.is_dir():
            raise DataNotAvailableError(f"obd: no folder at {root}")
        return root
    from rankloop.data.registry import fetch

    return fetch("obd-small")


def _read_csv(path: Path) -> pd.DataFrame:
    """An OBD CSV as string columns indexed by line number (pandas' index column dropped)."""
    if not path.is_file():
        raise DataNotAvailableError(f"obd: missing file {path}")
    return read_table(path, ",", index_column=True)


def _timestamps(path: Path, df: pd.DataFrame) -> np.ndarray:
    """The `timestamp` column as UTC datetimes; a value that is not ISO 8601 raises."""
    text = df["timestamp"]
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    # pandas also takes words such as "now" and "today": require a date first
    bad = parsed.isna().to_numpy() | ~np.array([bool(_ISO_DATE.match(t)) for t in text], bool)
    if bad.any():
        line = int(df.index[np.argmax(bad)])
        raise FormatError(path, line, "an ISO 8601 timestamp", str(text.loc[line]))
    return parsed.to_numpy()


def _one_hot(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """One-hot encoding of categorical columns (every category kept, sorted)."""
    if frame.shape[1] == 0:
        return np.zeros((len(frame), 0)), []
    dummies = pd.get_dummies(frame.astype(str), prefix_sep="=", dtype=np.float64)
    return dummies.to_numpy(), list(dummies.columns)


def load_obd(
    behavior: str = "random",
    campaign: str = "all",
    path: str | os.PathLike[str] | None = None,
) -> BanditLog:
    """One behavior policy × campaign of the Open Bandit Dataset as a `BanditLog`.

    Context = one-hot user features plus the user-item affinity columns; action context =
    `item_feature_0` plus one-hot item categories. `path` is the dataset root (holding
    `random/` and `bts/`); by default the registry's `obd-small` copy.
    """
    if behavior not in BEHAVIORS:
        raise RankloopError(f"obd: behavior must be one of {BEHAVIORS}, got {behavior!r}")
    if campaign not in CAMPAIGNS:
        raise RankloopError(f"obd: campaign must be one of {CAMPAIGNS}, got {campaign!r}")
    folder = _obd_root(path) / behavior / campaign
    log_path, item_path = folder / f"{campaign}.csv", folder / "item_context.csv"
    df = _read_csv(log_path)
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise FormatError(log_path, 1, f"columns {list(_REQUIRED)}", ",".join(map(str, df.columns)))
    items = _read_csv(item_path)
    if "item_id" not in items.columns:
        raise FormatError(item_path, 1, "an item_id column", ",".join(map(str, items.columns)))
    item_ids = table_column(item_path, items, "item_id", "'item_id'", 0, INT32_MAX, integer=True)
    n_actions = len(item_ids)
    seen: dict[int, int] = {}
    for line, item in zip(items.index, item_ids.tolist()):
        if item >= n_actions or item in seen:
            where = f"; {item} is already on line {seen[item]}" if item in seen else ""
            raise FormatError(
                item_path, line, f"each item id 0..{n_actions - 1} once{where}", str(item)
            )
        seen[item] = line
    items = items.iloc[np.argsort(item_ids)]

    action = table_column(log_path, df, "item_id", "'item_id'", 0, n_actions - 1, integer=True)
    # a slate shows distinct items, so it has at most n_actions positions
    position = table_column(log_path, df, "position", "'position'", 1, n_actions, integer=True)
    click = table_column(log_path, df, "click", "'click'", 0, 1, integer=True)
    pscore = table_column(
        log_path, df, "propensity_score", "'propensity_score'", 0, 1, lo_open=True
    )

    user_cols = [c for c in df.columns if str(c).startswith("user_feature_")]
    affinity_cols = [c for c in df.columns if str(c).startswith("user-item_affinity_")]
    onehot, names = _one_hot(df[user_cols])
    affinity = (
        np.column_stack([table_column(log_path, df, c, repr(c)) for c in affinity_cols])
        if affinity_cols
        else np.zeros((len(df), 0))
    )
    context = np.hstack([onehot, affinity])

    item_num = [c for c in items.columns if c == "item_feature_0"]
    item_cat = [
        c for c in items.columns if str(c).startswith("item_feature_") and c not in item_num
    ]
    numeric_part = (
        np.column_stack([table_column(item_path, items, c, repr(c)) for c in item_num])
        if item_num
        else np.zeros((n_actions, 0))
    )
    cat_part, _ = _one_hot(items[item_cat])
    timestamp = _timestamps(log_path, df) if "timestamp" in df.columns else None
    return BanditLog(
        action=action,
        position=position - 1,
        reward=click.astype(np.float64),
        pscore=pscore,
        context=context,
        action_context=np.hstack([numeric_part, cat_part]),
        n_actions=n_actions,
        len_list=int(position.max()),
        timestamp=timestamp,
        context_names=names + [str(c) for c in affinity_cols],
        behavior=behavior,
        campaign=campaign,
        name=f"obd/{behavior}/{campaign}",
    )
