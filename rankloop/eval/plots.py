"""Per-query delta plots for a `ComparisonTable`: where does a system win or lose vs the baseline?"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rankloop.errors import RankloopError
from rankloop.eval.compare import ComparisonTable
from rankloop.io import atomic_write

__all__ = ["per_query_delta_plot"]


def per_query_delta_plot(
    table: ComparisonTable,
    measure: str,
    path: str | os.PathLike[str] | None = None,
):  # -> matplotlib.figure.Figure
    """One panel per non-baseline system: its per-query `measure` minus the baseline's, sorted.

    Saved atomically to `path` (format from the suffix, e.g. .png or .pdf) when given.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state is touched

    if measure not in table.measures:
        raise RankloopError(
            f"measure {measure!r} is not in the table ({', '.join(table.measures)})"
        )
    others = [s for s in table.systems if s != table.baseline]
    if not others:
        raise RankloopError("the table has only the baseline: nothing to plot")
    keep = set(table.query_ids)

    def values(system: str) -> np.ndarray:
        res = table.per_query[system]
        mask = np.fromiter((q in keep for q in res.query_ids), bool, len(res.query_ids))
        return res.values[measure][mask]

    base = values(table.baseline)
    fig = Figure(figsize=(6.0, 1.8 + 1.6 * len(others)), layout="constrained")
    axes = fig.subplots(len(others), 1, squeeze=False)[:, 0]
    for ax, s in zip(axes, others):
        d = np.sort(values(s) - base)[::-1]
        colours = np.where(d > 0, "tab:green", np.where(d < 0, "tab:red", "tab:gray"))
        ax.bar(np.arange(len(d)), d, width=1.0, color=colours)
        ax.axhline(0.0, color="black", linewidth=0.6)
        p = table.pvalue[s][measure]
        ax.set_title(
            f"{s} vs {table.baseline}: Δ {measure} = {table.delta[s][measure]:+.4f}, p = {p:.3g}",
            fontsize=9,
        )
        ax.set_ylabel(f"Δ {measure}")
        ax.set_xticks([])
    axes[-1].set_xlabel(f"queries, sorted by Δ ({len(base)} queries)")
    if path is not None:
        fmt = Path(path).suffix.lstrip(".") or "png"
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format=fmt)
    return fig
