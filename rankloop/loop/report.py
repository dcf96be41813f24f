"""What a loop run reports: per learner and round the mean and 95% interval over seeds, a
per-round table, `metrics.json`, and PNGs of the held-out measure, CTR and Gini by round."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rankloop.eval.significance import paired_t_test
from rankloop.io import atomic_write
from rankloop.loop.measures import mean_ci
from rankloop.loop.run import LoopResult

__all__ = ["held_out_measure", "summarise", "table_markdown", "write_outputs"]

PLOTTED = ("ctr", "gini")


def held_out_measure(result: LoopResult) -> str:
    """The world's main held-out measure (the first key `evaluate` returns)."""
    keys = [k for k in result.runs[0]["final"] if k != "round"] if result.runs else []
    return keys[0] if keys else "ctr"


def _keys(result: LoopResult) -> list[str]:
    first = result.runs[0]["rows"][0] if result.runs[0]["rows"] else {}
    return [k for k in first if k != "round"]


def summarise(result: LoopResult) -> dict[str, Any]:
    """learner -> measure -> {mean, ci} lists over rounds (plus `final` after the last round),
    and the paired test of the final held-out measure against round 0 over seeds."""
    out: dict[str, Any] = {}
    main = [k for k in result.runs[0]["final"] if k != "round"]
    for spec in result.config.learners:
        runs = [r for r in result.runs if r["learner"] == spec.name]
        entry: dict[str, Any] = {}
        for key in _keys(result):
            values = np.array([[row.get(key, np.nan) for row in r["rows"]] for r in runs], float)
            m, ci = mean_ci(values)
            entry[key] = {"mean": m.round(6).tolist(), "ci": ci.round(6).tolist()}
        finals = {}
        for key in main:
            start = np.array([r["rows"][0][key] for r in runs])
            end = np.array([r["final"][key] for r in runs])
            m, ci = mean_ci(end)
            finals[key] = {
                "round0": float(start.mean()),
                "mean": float(m),
                "ci": float(ci),
                "delta": float(end.mean() - start.mean()),
                "p_vs_round0": paired_t_test(end, start) if len(runs) > 1 else float("nan"),
            }
        entry["final"] = finals
        out[spec.name] = entry
    return out


def table_markdown(result: LoopResult, summary: dict[str, Any] | None = None) -> str:
    """One row per learner: the held-out measures at round 0 and after the last round (mean ±
    95% CI over seeds, p of the paired t-test), mean CTR, regret, Gini and seconds per round."""
    summary = summary or summarise(result)
    main = [k for k in result.runs[0]["final"] if k != "round"]
    head = ["learner", *(f"{k} round 0 → final (p)" for k in main),
            "CTR", "regret", "Gini", "loop s/round", "learner s/round"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in summary.items():
        cells = [name]
        for k in main:
            f = entry["final"][k]
            p = f["p_vs_round0"]
            cells.append(f"{f['round0']:.4f} → {f['mean']:.4f} ± {f['ci']:.4f} "
                         f"({'n/a' if np.isnan(p) else f'{p:.3g}'})")  # fmt: skip
        for k in ("ctr", "regret", "gini", "loop_seconds", "learner_seconds"):
            cells.append(f"{np.mean(entry[k]['mean']):.4f}" if k in entry else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rounds_table(result: LoopResult, summary: dict[str, Any], measure: str) -> str:
    """Per-round means of one measure, one column per learner."""
    names = list(summary)
    lines = ["| round | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in range(result.config.rounds):
        lines.append(f"| {r} | " + " | ".join(
            f"{summary[n][measure]['mean'][r]:.4f}" for n in names) + " |")  # fmt: skip
    return "\n".join(lines)


def _plot(result: LoopResult, summary: dict[str, Any], measure: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = np.arange(result.config.rounds)
    colours = plt.get_cmap("tab20").colors
    for i, (name, entry) in enumerate(summary.items()):
        if measure not in entry:
            continue
        m, ci = np.array(entry[measure]["mean"]), np.array(entry[measure]["ci"])
        style = ("-", "--", ":", "-.")[i // 10 % 4]
        ax.plot(x, m, style, color=colours[2 * (i % 10)], label=name)
        ax.fill_between(x, m - ci, m + ci, color=colours[2 * (i % 10) + 1], alpha=0.25)
    ax.set_xlabel("round")
    ax.set_ylabel(measure)
    ax.set_title(f"{result.config.name}: {measure} by round (mean, 95% CI over "
                 f"{len(result.config.seeds)} seeds)")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: LoopResult, out: str | Path) -> dict[str, Path]:
    """metrics.json, results.md and the PNGs into `out`; returns what was written."""
    out = Path(out)
    summary = summarise(result)
    main = held_out_measure(result)
    written = {"metrics": out / "metrics.json", "table": out / "results.md"}
    with atomic_write(written["metrics"]) as fh:
        json.dump({"name": result.config.name, "config": result.config.to_dict(),
                   "world": result.world_info, "seconds": round(result.seconds, 1),
                   "summary": summary, "runs": result.runs}, fh, indent=1, default=float)  # fmt: skip
    with atomic_write(written["table"]) as fh:
        fh.write(f"# {result.config.name}\n\n{table_markdown(result, summary)}\n\n"
                 f"## {main} by round\n\n{rounds_table(result, summary, main)}\n")  # fmt: skip
    for measure in (main, *PLOTTED):
        written[measure] = _plot(
            result, summary, measure, out / f"{measure.replace('@', '_at_')}.png"
        )
    return written
