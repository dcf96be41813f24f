"""Closed feedback loops: search on SciFact and NFCorpus, recommendation on Coat.

    RANKLOOP_DATA=../shared/data .venv/bin/python benchmarks/loop.py [--worlds scifact nfcorpus coat]

For each world the config `configs/loop_<world>.yaml` runs through `rankloop.loop.run_loop`
into `runs/loop-<world>/` (checkpointed every round; a second call reuses finished runs and
resumes unfinished ones), then:

- search: every learner's held-out test nDCG@10 at round 0 and after the last round (mean and
  95% CI over seeds, paired t-test against round 0) and the share of the gap between round 0
  and the same model trained on the true train qrels (`full-info`) that it closes; PDGD against
  DBGD (mean nDCG over the rounds, i.e. learning speed, and the final value, paired over seeds);
  team-draft interleaving against an A/B test of clicks per impression: the impressions each
  needs to pick the better of two rankers with at most 5% error (`rankloop.loop.compare`);
  the loop's own seconds per round (serving, clicks, logging, measuring) apart from the
  learners';
- Coat: per learner the exposure Gini, popularity lift and homogenisation in the first and last
  round, and the MAR-test DCG@5 at round 0 and after the last round.

Writes benchmarks/results/loop.json and the plots under benchmarks/results/loop/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import RESULTS, write_result

from rankloop._runtime import read_yaml
from rankloop.eval.significance import paired_t_test
from rankloop.loop.measures import mean_ci
from rankloop.loop.report import summarise, table_markdown, write_outputs
from rankloop.loop.run import LoopConfig, LoopResult, run_loop

ROOT = Path(__file__).resolve().parents[1]
PLOTS = RESULTS / "loop"


ONLINE = [  # the PDGD-vs-DBGD comparison: the papers' zero start, and a first-stage start
    {"name": f"{a}{'' if init == 'zero' else '-fs'}", "type": a, "params": {"init": init}}
    for init in ("zero", "first_stage")
    for a in ("pdgd", "dbgd")
]


def _run(world: str, seeds: int | None, rounds: int | None, online: bool = False) -> LoopResult:
    raw = read_yaml(ROOT / "configs" / f"loop_{world}.yaml")
    if online:
        raw = {**raw, "name": raw["name"] + "-online", "learners": ONLINE}
    config = LoopConfig.from_dict(raw)
    if seeds is not None:
        config.seeds = list(range(seeds))
    if rounds is not None:
        config.rounds = rounds
    name = f"loop-{world}{'-online' if online else ''}"
    out = (
        ROOT / "runs" / (name if seeds is None and rounds is None else f"{name}-s{seeds}-r{rounds}")
    )
    resume = (out / "config.json").is_file()
    result = run_loop(config, out, resume=resume)
    written = write_outputs(result, out)
    tag = f"{world}-online" if online else world
    PLOTS.mkdir(parents=True, exist_ok=True)
    for path in written.values():
        if Path(path).suffix == ".png":
            shutil.copyfile(path, PLOTS / f"{tag}_{Path(path).name}")
    print(f"\n## {config.name}\n\n{table_markdown(result)}\n")
    return result


def _per_seed(result: LoopResult, learner: str, key: str, final: bool) -> np.ndarray:
    runs = sorted((r for r in result.runs if r["learner"] == learner), key=lambda r: r["seed"])
    if final:
        return np.array([r["final"][key] for r in runs])
    return np.array([[row[key] for row in r["rows"]] for r in runs])


def _search_findings(result: LoopResult) -> dict[str, Any]:
    key = "test_ndcg@10"
    names = [s.name for s in result.config.learners]
    start = _per_seed(result, names[0], key, False)[:, 0]
    ceiling = _per_seed(result, "full-info", key, True) if "full-info" in names else None
    rows = {}
    for name in names:
        end = _per_seed(result, name, key, True)
        m, ci = mean_ci(end)
        row = {"round0": float(start.mean()), "final": float(m), "ci": float(ci),
               "p_vs_round0": paired_t_test(end, start) if (end - start).any() else 1.0}  # fmt: skip
        if ceiling is not None and name != "full-info":
            gap = float(ceiling.mean() - start.mean())
            row["gap_closed"] = float((end.mean() - start.mean()) / gap) if gap > 0 else None
        rows[name] = row
    out: dict[str, Any] = {"learners": rows, "full_info": None if ceiling is None else
                           float(ceiling.mean())}  # fmt: skip
    out["pdgd_vs_dbgd"] = {}
    for suffix in ("", "-fs"):
        a, b = f"pdgd{suffix}", f"dbgd{suffix}"
        if not {a, b} <= set(names):
            continue
        p, d = _per_seed(result, a, key, False), _per_seed(result, b, key, False)
        pf, df = _per_seed(result, a, key, True), _per_seed(result, b, key, True)
        half = max(1, p.shape[1] // 3)
        out["pdgd_vs_dbgd"]["zero start" if not suffix else "first-stage start"] = {
            "mean_over_rounds": [float(p.mean()), float(d.mean())],
            "p_mean_over_rounds": paired_t_test(p.mean(axis=1), d.mean(axis=1)),
            "first_third": [float(p[:, :half].mean()), float(d[:, :half].mean())],
            "p_first_third": paired_t_test(p[:, :half].mean(axis=1), d[:, :half].mean(axis=1)),
            "final": [float(pf.mean()), float(df.mean())],
            "p_final": paired_t_test(pf, df),
        }
    loop_s = {n: float(np.mean(_per_seed(result, n, "loop_seconds", False))) for n in names}
    learn_s = {n: float(np.mean(_per_seed(result, n, "learner_seconds", False))) for n in names}
    out["seconds_per_round"] = {"loop": loop_s, "learner": learn_s}
    return out


def _references(config: LoopConfig) -> dict[str, Any]:
    """On the world of `config`: the full-information ceiling trained with LambdaRank as well as
    the config's ListNet (5 seeds each), and interleaving against A/B for two pairs of rankers."""
    from rankloop.loop.compare import interleaving_vs_ab
    from rankloop.loop.search import FullInfoLearner, StaticLearner, ndcg_at

    world = config.build_world()
    try:
        users = np.arange(world.n_users)
        cands = world.candidates(users)
        ceilings = {}
        for loss in ("listnet", "lambdarank"):
            values = []
            for seed in config.seeds:
                full = FullInfoLearner(loss=loss)
                full.start(world, seed)
                values.append(world.evaluate(full)["test_ndcg@10"])
            m, ci = mean_ci(np.array(values))
            ceilings[loss] = {"mean": float(m), "ci": float(ci), "per_seed": values}
            print(f"full information ({loss}): test nDCG@10 {m:.4f} ± {ci:.4f}")
        best = max(ceilings, key=lambda x: ceilings[x]["mean"])
        static, full = StaticLearner(), FullInfoLearner(loss=best)
        full.start(world, 0)
        rankers = {"first stage": static.scores(world, users, cands),
                   f"full-info LTR ({best})": full.scores(world, users, cands)}  # fmt: skip
        ndcg = {"first stage": world.evaluate(static)["test_ndcg@10"],
                f"full-info LTR ({best})": world.evaluate(full)["test_ndcg@10"]}  # fmt: skip
        pairs = [("first stage", f"full-info LTR ({best})")]
        for signal in world.info["signals"]:  # the signal's own order over the same candidates
            col = world.feature_names.index(f"{signal}_score")
            rankers[signal] = np.where(cands >= 0, world.train.x[users, :, col], -np.inf)
            test = np.where(world.test.mask, world.test.x[:, :, col], -np.inf)
            ndcg[signal] = float(ndcg_at(test, world.test.grades, world.test.idcg).mean())
            better = ndcg[signal] >= ndcg["first stage"]
            pairs.append(("first stage", signal) if better else (signal, "first stage"))
        out = []
        for a, b in pairs:
            if abs(ndcg[b] - ndcg[a]) < 0.02:
                print(f"{a} vs {b}: test nDCG@10 differs by less than 0.02; skipped")
                continue
            res = interleaving_vs_ab(world, rankers[a], rankers[b], k=config.k)
            res.update(a=a, b=b, test_ndcg_a=ndcg[a], test_ndcg_b=ndcg[b])
            out.append(res)
            print(f"{a} ({ndcg[a]:.4f}) vs {b} ({ndcg[b]:.4f}): interleaving needs "
                  f"{res['impressions_interleaving']:,.0f} impressions, A/B "
                  f"{res['impressions_ab']:,.0f} (ratio {res['ratio']:.1f})")  # fmt: skip
        _plot_interleaving(out, PLOTS / f"{config.world['dataset']}_interleaving_vs_ab.png")
        return {"ceilings": ceilings, "interleaving_vs_ab": out}
    finally:
        world.close()


def _plot_interleaving(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in results:
        ax.plot(r["grid"], r["error_interleaving"], label=f"team-draft: {r['a']} vs {r['b']}")
        ax.plot(r["grid"], r["error_ab"], "--", label=f"A/B clicks: {r['a']} vs {r['b']}")
    ax.axhline(0.05, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("impressions")
    ax.set_ylabel("P(picks the worse ranker)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    PLOTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _coat_findings(result: LoopResult) -> dict[str, Any]:
    out = {}
    for spec in result.config.learners:
        name = spec.name
        entry = {}
        for key in ("gini", "popularity_lift", "homogenisation", "ctr", "coverage"):
            v = _per_seed(result, name, key, False)
            slope = np.polyfit(np.arange(v.shape[1]), v.T, 1)[0]  # per seed
            entry[key] = {"first": float(v[:, 0].mean()), "last": float(v[:, -1].mean()),
                          "slope_per_round": float(slope.mean()),
                          "p_slope": paired_t_test(slope, np.zeros_like(slope))}  # fmt: skip
        for key in ("dcg@5", "true_dcg@5"):
            start = _per_seed(result, name, key, False)[:, 0]
            end = _per_seed(result, name, key, True)
            entry[key] = {"round0": float(start.mean()), "final": float(end.mean()),
                          "p": paired_t_test(end, start) if (end - start).any() else 1.0}  # fmt: skip
        out[name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", nargs="+", default=["scifact", "nfcorpus", "coat"])
    ap.add_argument("--seeds", type=int, help="fewer seeds (a smoke run)")
    ap.add_argument("--rounds", type=int, help="fewer rounds (a smoke run)")
    args = ap.parse_args(argv)
    import json

    previous = RESULTS / "loop.json"
    worlds = json.loads(previous.read_text())["worlds"] if previous.is_file() else {}
    payload: dict[str, Any] = {"worlds": worlds}  # other worlds' results stay
    for world in args.worlds:
        result = _run(world, args.seeds, args.rounds)
        search = result.config.world.get("type") == "search"
        entry: dict[str, Any] = {"config": result.config.to_dict(), "world": result.world_info,
                                 "seconds": round(result.seconds, 1),
                                 "summary": summarise(result)}  # fmt: skip
        if search:
            entry["findings"] = _search_findings(result)
            online = _run(world, args.seeds, args.rounds, online=True)
            entry["online"] = {"summary": summarise(online),
                               "findings": _search_findings(online)}  # fmt: skip
            refs = _references(result.config)
            entry["ceilings"] = refs["ceilings"]
            best = max(c["mean"] for c in refs["ceilings"].values())
            start = entry["findings"]["learners"]["static"]["round0"]
            for row in entry["findings"]["learners"].values():
                row["gap_closed_best_ceiling"] = (row["final"] - start) / (best - start)
            entry["interleaving_vs_ab"] = [
                {k: v for k, v in r.items() if k not in ("grid", "error_interleaving", "error_ab")}
                for r in refs["interleaving_vs_ab"]
            ]
        else:
            entry["findings"] = _coat_findings(result)
        payload["worlds"][world] = entry
    path = write_result("loop", payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
