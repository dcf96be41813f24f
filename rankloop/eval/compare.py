"""Experiment tables: several systems, means + deltas + significance vs a baseline.

Like PyTerrier's `pt.Experiment`: `compare([bm25, dense, hybrid], qrels, ["map", "ndcg_cut_10"],
baseline="bm25", test="t", correction="holm")` returns one table that renders as Markdown, CSV
or JSON. `compare_values` is the statistics part on its own: it takes one number per paired unit
(queries, seeds, users, ...) per system and measure, so every runner builds its significance
tests and tables the same way.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from rankloop.data.types import Qrels, Run
from rankloop.errors import RankloopError
from rankloop.eval.metrics import EvalResult, Evaluator
from rankloop.eval.significance import CORRECTIONS, TESTS, correct_pvalues, paired_test
from rankloop.io import atomic_write

__all__ = ["ComparisonTable", "compare", "compare_values"]

MARKER = "†"
_TEST_NAMES = {
    "t": "paired t-test",
    "fisher": "Fisher randomisation test",
    "bootstrap": "paired bootstrap test",
}


@dataclass(frozen=True)
class ComparisonTable:
    """Per system and measure: mean, delta vs the baseline, p-value, significance, wins/losses.

    `pvalue`/`delta`/`wins`/`losses` hold None for the baseline row. `significant` is
    p < alpha after the correction, which runs across the non-baseline systems per measure.
    `unit_ids` are the paired units the means and tests run over, and `unit` names them
    ("queries" for `compare`; "seeds", "users", ... for `compare_values`).
    """

    systems: list[str]
    measures: list[str]
    baseline: str
    test: str
    correction: str | None
    alpha: float
    unit_ids: list[str]
    mean: dict[str, dict[str, float]]
    delta: dict[str, dict[str, float | None]]
    pvalue: dict[str, dict[str, float | None]]
    significant: dict[str, dict[str, bool]]
    wins: dict[str, dict[str, int | None]]
    losses: dict[str, dict[str, int | None]]
    per_query: dict[str, EvalResult] = field(repr=False, compare=False, default_factory=dict)
    unit: str = "queries"
    seconds: dict[str, float] = field(compare=False, default_factory=dict)

    def with_seconds(self, seconds: dict[str, float]) -> ComparisonTable:
        """The same table with the wall time of each system (`Experiment` sets it)."""
        return replace(self, seconds=dict(seconds))

    @property
    def query_ids(self) -> list[str]:
        """The unit ids (the query ids for a table made by `compare`)."""
        return self.unit_ids

    def rows(self) -> list[dict[str, object]]:
        """One flat record per (system, measure)."""
        return [
            {
                "system": s,
                "measure": m,
                "mean": self.mean[s][m],
                "delta": self.delta[s][m],
                "p_value": self.pvalue[s][m],
                "significant": self.significant[s][m],
                "wins": self.wins[s][m],
                "losses": self.losses[s][m],
            }
            for s in self.systems
            for m in self.measures
        ]

    def to_dataframe(self):  # -> pandas.DataFrame
        """Wide table indexed by system: per measure `m`, `m Δ`, `m p`, `m sig`, `m +`, `m -`."""
        import pandas as pd

        cols: dict[str, list] = {}
        for m in self.measures:
            cols[m] = [self.mean[s][m] for s in self.systems]
            cols[f"{m} Δ"] = [_nan(self.delta[s][m]) for s in self.systems]
            cols[f"{m} p"] = [_nan(self.pvalue[s][m]) for s in self.systems]
            cols[f"{m} sig"] = [self.significant[s][m] for s in self.systems]
            cols[f"{m} +"] = pd.array([self.wins[s][m] for s in self.systems], dtype="Int64")
            cols[f"{m} -"] = pd.array([self.losses[s][m] for s in self.systems], dtype="Int64")
        return pd.DataFrame(cols, index=pd.Index(self.systems, name="system"))

    def to_markdown(self, path: str | os.PathLike[str] | None = None, digits: int = 4) -> str:
        """A Markdown table (mean with † when significant, Δ and p per measure) plus a legend;
        written atomically to `path` if given."""
        head = ["system"]
        for m in self.measures:
            head += [m, f"Δ {m}", f"p {m}"]
        if self.seconds:
            head.append("seconds")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for s in self.systems:
            cells = [f"{s} (baseline)" if s == self.baseline else s]
            for m in self.measures:
                mark = MARKER if self.significant[s][m] else ""
                cells.append(f"{self.mean[s][m]:.{digits}f}{mark}")
                d, p = self.delta[s][m], self.pvalue[s][m]
                cells.append("—" if d is None else f"{d:+.{digits}f}")
                cells.append("—" if p is None else _fmt_p(p))
            if self.seconds:
                t = self.seconds.get(s)
                cells.append("—" if t is None else f"{t:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        corr = f", {self.correction.capitalize()}-corrected" if self.correction else ""
        lines.append("")
        lines.append(
            f"{MARKER} p < {self.alpha:g} vs `{self.baseline}` ({_TEST_NAMES[self.test]}{corr}); "
            f"{len(self.unit_ids)} {self.unit}."
        )
        return _emit("\n".join(lines) + "\n", path)

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """One row per (system, measure); written atomically to `path` if given."""
        buf = io.StringIO()
        self.to_dataframe_long().to_csv(buf, index=False, lineterminator="\n")
        return _emit(buf.getvalue(), path)

    def to_dataframe_long(self):  # -> pandas.DataFrame
        """Long table: one row per (system, measure), the `rows()` records."""
        import pandas as pd

        df = pd.DataFrame(self.rows())
        return df.astype({"wins": "Int64", "losses": "Int64"})

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """Settings plus the `rows()` records; written atomically to `path` if given."""
        doc = {
            "baseline": self.baseline,
            "test": self.test,
            "correction": self.correction,
            "alpha": self.alpha,
            "unit": self.unit,
            f"n_{self.unit}": len(self.unit_ids),
            "systems": self.systems,
            "measures": self.measures,
            "rows": self.rows(),
        }
        if self.seconds:
            doc["seconds"] = self.seconds
        return _emit(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", path)


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def _fmt_p(p: float) -> str:
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def _emit(text: str, path: str | os.PathLike[str] | None) -> str:
    if path is not None:
        with atomic_write(path) as fh:
            fh.write(text)
    return text


def _named(runs: Sequence[Run] | Mapping[str, Run]) -> dict[str, Run]:
    if isinstance(runs, Mapping):
        named = {str(k): v for k, v in runs.items()}
    else:
        named = {}
        for i, run in enumerate(runs):
            name = run.name or f"run{i}"
            if name in named:
                raise RankloopError(f"two runs are named {name!r}; pass a dict of name -> run")
            named[name] = run
    if not named:
        raise RankloopError("compare needs at least one run")
    return named


def _check_settings(test: str, correction: str | None, alpha: float) -> None:
    if test not in TESTS:
        raise RankloopError(f"unknown test {test!r}; choose one of {', '.join(TESTS)}")
    if correction is not None and correction not in CORRECTIONS:
        raise RankloopError(
            f"unknown correction {correction!r}; choose None, 'holm' or 'bonferroni'"
        )
    if not 0 < alpha < 1:
        raise RankloopError(f"alpha must lie in (0, 1), got {alpha}")


def compare_values(
    values: Mapping[str, Mapping[str, np.ndarray]],
    baseline: str,
    *,
    test: str = "t",
    correction: str | None = None,
    alpha: float = 0.05,
    unit_ids: Sequence[str] | None = None,
    n_resamples: int = 10_000,
    random_state: int = 0,
    unit: str = "queries",
) -> ComparisonTable:
    """Means, deltas and paired tests of every system against `baseline` from per-unit numbers.

    `values[system][measure]` holds one number per paired unit (a query, a seed, a user, ...),
    aligned across systems; `unit_ids` name the units (default "0", "1", ...) and `unit` says
    what they are, for the table's legend. `test` ("t", "fisher" or "bootstrap", seeded by
    `random_state` with `n_resamples` draws) and `correction` ("holm", "bonferroni" or None,
    per measure across the non-baseline systems) are as in `compare`.
    """
    _check_settings(test, correction, alpha)
    systems = [str(s) for s in values]
    if baseline not in values:
        raise RankloopError(
            f"baseline {baseline!r} is not one of the systems: {', '.join(systems)}"
        )
    names = list(values[baseline])
    if not names:
        raise RankloopError("compare_values needs at least one measure")
    vals: dict[str, dict[str, np.ndarray]] = {}
    for s in systems:
        if set(values[s]) != set(names):
            raise RankloopError(
                f"system {s!r} has measures {sorted(values[s])}, the baseline has {sorted(names)}"
            )
        vals[s] = {m: np.asarray(values[s][m], dtype=np.float64) for m in names}
    n = len(vals[baseline][names[0]])
    ids = [str(i) for i in range(n)] if unit_ids is None else [str(u) for u in unit_ids]
    bad = [(s, m) for s in systems for m in names if vals[s][m].shape != (len(ids),)]
    if bad:
        s, m = bad[0]
        raise RankloopError(
            f"values[{s!r}][{m!r}] has shape {vals[s][m].shape}, expected ({len(ids)},): one "
            f"number per unit ({unit})"
        )
    others = [s for s in systems if s != baseline]

    mean = {s: {m: float(vals[s][m].mean()) for m in names} for s in systems}
    delta: dict[str, dict[str, float | None]] = {s: {} for s in systems}
    pvalue: dict[str, dict[str, float | None]] = {s: {} for s in systems}
    significant: dict[str, dict[str, bool]] = {s: {} for s in systems}
    wins: dict[str, dict[str, int | None]] = {s: {} for s in systems}
    losses: dict[str, dict[str, int | None]] = {s: {} for s in systems}
    for m in names:
        b = vals[baseline][m]
        raw = [
            paired_test(vals[s][m], b, test, n_resamples=n_resamples, random_state=random_state)
            for s in others
        ]
        adjusted = correct_pvalues(raw, correction) if others else np.empty(0)
        for s, p in zip(others, adjusted.tolist()):
            delta[s][m] = mean[s][m] - mean[baseline][m]
            pvalue[s][m] = p
            significant[s][m] = p < alpha
            wins[s][m] = int(np.count_nonzero(vals[s][m] > b))
            losses[s][m] = int(np.count_nonzero(vals[s][m] < b))
        delta[baseline][m] = pvalue[baseline][m] = wins[baseline][m] = losses[baseline][m] = None
        significant[baseline][m] = False
    return ComparisonTable(
        systems=systems,
        measures=names,
        baseline=baseline,
        test=test,
        correction=correction,
        alpha=alpha,
        unit_ids=ids,
        mean=mean,
        delta=delta,
        pvalue=pvalue,
        significant=significant,
        wins=wins,
        losses=losses,
        unit=unit,
    )


def compare(
    runs: Sequence[Run] | Mapping[str, Run],
    qrels: Qrels,
    measures: str | Sequence[str],
    *,
    baseline: str | int = 0,
    test: str = "t",
    correction: str | None = None,
    alpha: float = 0.05,
    level: int = 1,
    complete: bool = True,
    n_resamples: int = 10_000,
    random_state: int = 0,
) -> ComparisonTable:
    """Evaluate every run and test each one against `baseline` (a name or an index).

    Queries: with `complete=True` (default, trec_eval `-c`) every judged qrels query counts and
    a query missing from a run scores 0 in it, so every system is averaged over the same set;
    with `complete=False` only queries present in every run are used. `test` is "t", "fisher"
    or "bootstrap" (seeded by `random_state`, `n_resamples` draws); `correction` ("holm",
    "bonferroni" or None) adjusts, per measure, the p-values of all non-baseline systems.
    """
    named = _named(runs)
    systems = list(named)
    _check_settings(test, correction, alpha)
    if isinstance(baseline, int):
        if not -len(systems) <= baseline < len(systems):
            raise RankloopError(f"baseline index {baseline} out of range for {len(systems)} runs")
        base = systems[baseline]
    elif baseline in named:
        base = baseline
    else:
        raise RankloopError(f"baseline {baseline!r} is not one of the runs: {', '.join(systems)}")

    ev = Evaluator(qrels, measures, level=level, complete=True)
    results = {s: ev.evaluate(r) for s, r in named.items()}
    qids = ev.query_ids
    keep = np.ones(len(qids), bool)
    if not complete:
        for r in named.values():
            keep &= np.fromiter((q in r.data for q in qids), bool, len(qids))
        if not keep.any():
            raise RankloopError("no query is present in every run (try complete=True)")
    names = [m.name for m in ev.measures]
    table = compare_values(
        {s: {m: results[s].values[m][keep] for m in names} for s in systems},
        base,
        test=test,
        correction=correction,
        alpha=alpha,
        unit_ids=[q for q, k in zip(qids, keep.tolist()) if k],
        n_resamples=n_resamples,
        random_state=random_state,
    )
    return replace(table, per_query=results)
