"""The loop end to end on a tiny search world: rounds, learners, explorers, measures, outputs,
checkpoints, resume (also after kill -9) and bad configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rankloop.errors import ConfigError, RankloopError
from rankloop.loop.base import LoopLog, Shown
from rankloop.loop.measures import coverage, exposure_gini, homogenisation, mean_ci, popularity_lift
from rankloop.loop.run import LoopConfig, run_loop
from rankloop.loop.search import SearchWorld, ndcg_at

WORLD = "{type: search, dataset: %s, first_stage: bm25, signals: []}"


def _config(tmp: Path, beir: Path, body: str, name: str = "loop.yaml") -> Path:
    path = tmp / name
    path.write_text(f"name: t\nworld: {WORLD % beir}\n{body}", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tiny_beir: Path) -> SearchWorld:
    w = SearchWorld(str(tiny_beir), first_stage="bm25", signals=[])
    yield w
    w.close()


def _strip(runs: list[dict]) -> list[dict]:
    """The runs without wall-clock fields."""
    return [
        {
            **r,
            "rows": [
                {k: v for k, v in row.items() if not k.endswith("seconds")} for row in r["rows"]
            ],
        }
        for r in runs
    ]


def test_world_contract(world: SearchWorld) -> None:
    assert world.n_users == 25 and len(world.test.qids) == 12
    users = np.array([0, 3, 3])
    cands = world.candidates(users)
    assert cands.shape == (3, 100) and np.all((cands >= -1) & (cands < world.n_items))
    a = world.attractiveness(users, cands, 0)
    g = world.grades(users, cands)
    assert np.allclose(a[(g == 0) & (cands >= 0)], 0.1) and np.all(a[g > 0] > 0.1)
    assert np.all(a[cands < 0] == 0)
    assert np.allclose(world.examination(4), [1, 1 / 2, 1 / 3, 1 / 4])


def test_ndcg_matches_trec_eval(world: SearchWorld) -> None:
    """The loop's fast nDCG@10 equals rankloop.eval's (trec_eval) on the same ranking."""
    from rankloop.data.types import Qrels, Run
    from rankloop.eval import evaluate

    rng = np.random.default_rng(0)
    t = world.test
    scores = np.where(t.mask, rng.random(t.mask.shape), -np.inf)
    fast = ndcg_at(scores, t.grades, t.idcg).mean()
    ids = world.item_ids
    run = Run({q: {ids[d]: float(s) for d, s in zip(t.docs[i], scores[i]) if d >= 0}
               for i, q in enumerate(t.qids)})  # fmt: skip
    qrels = Qrels({q: world._test_qrels.data[q] for q in t.qids})
    assert fast == pytest.approx(evaluate(qrels, run, ["ndcg_cut_10"])["ndcg_cut_10"], abs=1e-9)


def test_measures() -> None:
    items = np.array([[0, 1], [0, 2], [0, -1]])
    assert coverage(items, 4) == 0.75
    assert 0 < exposure_gini(items, 4) < 1 and exposure_gini(np.array([[0, 1]]), 2) == 0
    popular = np.array([True, False, False, False])
    assert popularity_lift(items, np.array([[0, 1]]), popular) == pytest.approx((3 / 5) / 0.5)
    same = homogenisation(np.array([0, 1]), np.array([[1, 2], [2, 1]]), np.random.default_rng(0))
    assert same == 1.0
    m, ci = mean_ci(np.array([1.0, 2.0, 3.0]))
    assert m == 2.0 and ci == pytest.approx(2.4841, abs=1e-3)


def test_loop_runs_learns_and_writes(tmp_path: Path, tiny_beir: Path) -> None:
    from rankloop.data.clicklogs import read_click_log
    from rankloop.loop.report import summarise, write_outputs

    cfg = _config(tmp_path, tiny_beir, (
        "rounds: 3\nsessions: 150\nseeds: 2\nlearners:\n"
        "  - {name: static, type: static}\n"
        "  - {name: ips, type: ultr, params: {estimator: ips, epochs: 3}}\n"
        "  - {name: ips-swap, type: ultr, params: {estimator: ips, propensity: swap, epochs: 3},"
        " explorer: {type: randpair}}\n"
        "  - {name: tdi, type: static, explorer: {type: interleave}}\n"
        "  - {name: pdgd, type: pdgd}\n"
        "  - {name: dbgd, type: dbgd}\n"))  # fmt: skip
    config = LoopConfig.from_yaml(cfg)
    result = run_loop(config, tmp_path / "out", verbose=False)
    assert len(result.runs) == 12
    static = [r for r in result.runs if r["learner"] == "static"]
    assert len({r["rows"][0]["test_ndcg@10"] for r in static}) == 1  # same policy every seed
    assert all(r["rows"][0]["test_ndcg@10"] == r["final"]["test_ndcg@10"] for r in static)
    for run in result.runs:
        for row in run["rows"]:
            assert 0 <= row["ctr"] <= 1 and row["regret"] >= -1e-9 and 0 <= row["gini"] <= 1
            assert row["loop_seconds"] > 0
    tdi = next(r for r in result.runs if r["learner"] == "tdi")
    assert "win_rate_vs_first_stage" in tdi["rows"][0]
    written = write_outputs(result, tmp_path / "out")
    assert all(Path(p).is_file() for p in written.values())
    summary = summarise(result)
    assert set(summary) == {"static", "ips", "ips-swap", "tdi", "pdgd", "dbgd"}
    log = read_click_log(tmp_path / "out" / "clicks" / "ips__seed0.jsonl")
    assert len(log) == 450 and log.clicks.any()
    first = json.loads(
        (tmp_path / "out" / "clicks" / "ips__seed0.jsonl").read_text().splitlines()[0]
    )
    assert first["round"] == 0 and len(first["propensities"]) == len(first["docs"])


def test_resume_equals_uninterrupted(tmp_path: Path, tiny_beir: Path, monkeypatch) -> None:
    import rankloop.loop.run as run_mod

    body = ("rounds: 4\nsessions: 100\nseeds: [3]\nlearners:\n"
            "  - {name: ips, type: ultr, params: {estimator: ips, epochs: 2}}\n"
            "  - {name: pdgd, type: pdgd}\n")  # fmt: skip
    config = LoopConfig.from_yaml(_config(tmp_path, tiny_beir, body))
    full = run_loop(config, tmp_path / "a", verbose=False)
    measures = run_mod._measures

    def crash(*args, **kwargs):
        if args[6] == 2:  # the round
            raise RuntimeError("power cut")
        return measures(*args, **kwargs)

    monkeypatch.setattr(run_mod, "_measures", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        run_loop(config, tmp_path / "b", verbose=False)
    monkeypatch.setattr(run_mod, "_measures", measures)
    with pytest.raises(ConfigError, match="--resume"):
        run_loop(config, tmp_path / "b", verbose=False)
    longer = LoopConfig.from_yaml(
        _config(tmp_path, tiny_beir, body.replace("rounds: 4", "rounds: 5"), "l.yaml")
    )
    with pytest.raises(ConfigError, match=r"rounds \(4 -> 5\)"):
        run_loop(longer, tmp_path / "b", resume=True, verbose=False)
    resumed = run_loop(config, tmp_path / "b", resume=True, verbose=False)
    assert _strip(resumed.runs) == _strip(full.runs)


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9 is POSIX")
def test_kill_9_and_resume_match(tmp_path: Path, tiny_beir: Path) -> None:
    """A run killed with SIGKILL mid-way and resumed ends with the uninterrupted run's numbers."""
    body = ("rounds: 6\nsessions: 120\nseeds: [1]\nlearners:\n"
            "  - {name: ips, type: ultr, params: {estimator: ips, epochs: 3}}\n"
            "  - {name: pdgd, type: pdgd}\n")  # fmt: skip
    cfg = _config(tmp_path, tiny_beir, body)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "rankloop.cli", "loop", str(cfg), "--quiet"]
    subprocess.run([*cmd, "--out", str(tmp_path / "full")], env=env, check=True, timeout=600,
                   capture_output=True)  # fmt: skip
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    ck = killed / "checkpoints" / "ips__seed1.pkl"
    deadline = time.monotonic() + 300
    import pickle

    while time.monotonic() < deadline:
        if ck.is_file():
            try:
                if pickle.loads(ck.read_bytes())["round"] >= 2:
                    break
            except (EOFError, pickle.UnpicklingError):
                pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run([*cmd, "--out", str(killed), "--resume"], env=env, timeout=600,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())["runs"]
    b = json.loads((killed / "metrics.json").read_text())["runs"]
    assert _strip(a) == _strip(b)


def test_bad_configs_fail_before_round_0(tmp_path: Path, tiny_beir: Path) -> None:
    cases = {
        "world: {type: nowhere}\nlearners: [{name: s, type: static}]\n": r"loop\.yaml:2.*unknown loop world 'nowhere'",
        f"world: {WORLD % tiny_beir}\nlearners: [{{name: s, type: teleport}}]\n": "unknown loop learner 'teleport'",
        f"world: {WORLD % tiny_beir}\nexplorer: {{type: shuffle}}\nlearners: [{{name: s, type: static}}]\n": "unknown loop explorer 'shuffle'",
        f"world: {WORLD % tiny_beir}\nlearners: [{{name: s, type: ultr, params: {{estimatr: ips}}}}]\n": "no parameter 'estimatr'",
        f"world: {WORLD % tiny_beir}\nlearners: [{{name: s, type: pdgd, explorer: {{type: randpair}}}}]\n": "learns online",
        f"world: {WORLD % tiny_beir}\nlearners: [{{name: s, type: static}}, {{name: s, type: static}}]\n": "unique",
        f"world: {WORLD % tiny_beir}\nrounds: 0\nlearners: [{{name: s, type: static}}]\n": "rounds",
    }
    for body, match in cases.items():
        path = tmp_path / "loop.yaml"
        path.write_text("name: t\n" + body, encoding="utf-8")
        with pytest.raises(ConfigError, match=match):
            LoopConfig.from_yaml(path)


def test_world_needs_judged_splits(tmp_path: Path, tiny_beir: Path) -> None:
    with pytest.raises(RankloopError, match="split 'dev'"):
        SearchWorld(str(tiny_beir), first_stage="bm25", signals=[], train_split="dev")


def test_warm_start_log_must_match_the_world(
    tmp_path: Path, tiny_beir: Path, world: SearchWorld
) -> None:
    from rankloop.data.clicklogs import ClickLog

    log = ClickLog.from_lists(["nope"], [["x", "y"]], [[0]], name="other")
    with pytest.raises(RankloopError, match="query id"):
        LoopLog.from_click_log(log, world, 10, world.examination(10))
    q, docs = world.user_ids[0], [world.item_ids[d] for d in world.train.docs[0, :3]]
    good = ClickLog.from_lists([q], [docs], [[1]], name="ok")
    warm = LoopLog.from_click_log(good, world, 10, world.examination(10))
    assert len(warm) == 1 and warm.clicks[0, 1] and warm.items[0, 3] == -1


def test_shown_checks_shapes() -> None:
    with pytest.raises(RankloopError):
        Shown(np.zeros(2, int), np.zeros((3, 4), int), np.zeros((3, 4), bool), np.zeros((3, 4)))


def test_recommendation_loop_through_the_runner(tmp_path: Path) -> None:
    """A synthetic recommendation world: recommenders, exploration and a bandit, end to end."""
    path = tmp_path / "rec.yaml"
    path.write_text(
        "name: rec\nworld: {type: recommend, dataset: synthetic, n_users: 40, n_items: 30}\n"
        "rounds: 3\nsessions: 80\nk: 5\nseeds: 2\nlearners:\n"
        "  - {name: static, type: static}\n"
        "  - {name: wmf, type: recommender, params: {model: wmf}}\n"
        "  - {name: wmf-eps, type: recommender, params: {model: wmf}, explorer: {type: epsilon, epsilon: 0.3}}\n"
        "  - {name: linucb, type: bandit, params: {policy: linucb}}\n",
        encoding="utf-8",
    )
    result = run_loop(LoopConfig.from_yaml(path), tmp_path / "out", verbose=False)
    assert len(result.runs) == 8
    for run in result.runs:
        assert set(run["final"]) == {"round", "true_dcg@5"}
        assert all(
            0 <= row["popularity_lift"] and 0 <= row["homogenisation"] <= 1 for row in run["rows"]
        )
    static = [r for r in result.runs if r["learner"] == "static"]
    assert static[0]["rows"][0]["true_dcg@5"] == static[1]["rows"][0]["true_dcg@5"]


def test_online_learners_can_start_from_the_first_stage(world: SearchWorld) -> None:
    from rankloop.loop.search import DBGDLearner, PDGDLearner, StaticLearner

    base = world.evaluate(StaticLearner())["test_ndcg@10"]
    for learner in (PDGDLearner(init="first_stage"), DBGDLearner(init="first_stage")):
        learner.start(world, 0)
        assert world.evaluate(learner)["test_ndcg@10"] == pytest.approx(base)
    with pytest.raises(ConfigError, match="init"):
        PDGDLearner(init="random")
