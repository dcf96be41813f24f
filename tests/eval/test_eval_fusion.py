"""Rank fusion on hand-computed cases, plus a cross-check against ranx.fuse."""

from __future__ import annotations

import numpy as np
import pytest

from rankloop.data.types import Run
from rankloop.errors import RankloopError
from rankloop.eval.fusion import fuse

R1 = Run.from_dict({"q": {"a": 3.0, "b": 2.0, "c": 1.0}, "only1": {"x": 1.0}}, name="r1")
R2 = Run.from_dict({"q": {"b": 10.0, "d": 5.0, "a": 0.0}}, name="r2")


def test_rrf_by_hand():
    out = fuse([R1, R2])  # rrf_k = 60
    q = out["q"]
    assert q["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert q["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert q["c"] == pytest.approx(1 / 63)
    assert q["d"] == pytest.approx(1 / 62)
    assert [d for d, _ in out.ranked("q")] == ["b", "a", "d", "c"]
    assert out["only1"] == {"x": pytest.approx(1 / 61)}
    assert out.name == "rrf(r1,r2)"


def test_rrf_ties_use_trec_order_and_weights_and_depth():
    tied = Run.from_dict({"q": {"a": 1.0, "b": 1.0}})  # trec order: b (id desc), then a
    out = fuse([tied], rrf_k=0)
    assert out["q"] == {"a": 0.5, "b": 1.0}
    out = fuse({"x": R1, "y": R2}, weights=[2.0, 1.0], rrf_k=1, depth=1)
    assert out["q"] == {"a": pytest.approx(2 / 2), "b": pytest.approx(1 / 2)}


def test_combsum_and_combmnz_by_hand():
    assert fuse([R1, R2], "combsum")["q"] == {"a": 3.0, "b": 12.0, "c": 1.0, "d": 5.0}
    assert fuse([R1, R2], "combmnz")["q"] == {"a": 6.0, "b": 24.0, "c": 1.0, "d": 5.0}


def test_normalisations_by_hand():
    mm = fuse([R1, R2], "combsum", norm="minmax")["q"]
    # r1: a 1, b .5, c 0; r2: b 1, d .5, a 0
    assert mm == {"a": 1.0, "b": 1.5, "c": 0.0, "d": 0.5}
    rk = fuse([R1, R2], "combsum", norm="rank")["q"]
    assert rk == pytest.approx({"a": 1 + 1 / 3, "b": 2 / 3 + 1, "c": 1 / 3, "d": 2 / 3})
    z = fuse([R1], "combsum", norm="zscore")["q"]
    assert z == pytest.approx({"a": 1 / np.sqrt(2 / 3), "b": 0.0, "c": -1 / np.sqrt(2 / 3)})
    flat = Run.from_dict({"q": {"a": 2.0, "b": 2.0}})
    assert fuse([flat], "combsum", norm="minmax")["q"] == {"a": 0.0, "b": 0.0}
    assert fuse([flat], "combsum", norm="zscore")["q"] == {"a": 0.0, "b": 0.0}


def test_errors():
    for kwargs in (
        {"method": "borda"},
        {"method": "rrf", "norm": "minmax"},
        {"method": "combsum", "norm": "l2"},
        {"weights": [1.0]},
        {"depth": 0},
    ):
        with pytest.raises(RankloopError):
            fuse([R1, R2], **kwargs)
    with pytest.raises(RankloopError):
        fuse([])


def _random_run(rng: np.random.Generator, name: str) -> Run:
    data = {}
    for q in range(20):
        docs = rng.choice(200, size=50, replace=False)
        data[f"q{q}"] = {f"d{d}": float(s) for d, s in zip(docs, rng.normal(size=50))}
    return Run.from_dict(data, name=name)


@pytest.mark.slow  # ranx compiles its numba kernels on first use (about a minute)
@pytest.mark.parametrize(
    ("method", "norm"),
    [("rrf", None), ("combsum", "minmax"), ("combmnz", "minmax"), ("combsum", "zscore")],
)
def test_matches_ranx(method, norm):
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(0)
    r1, r2 = _random_run(rng, "a"), _random_run(rng, "b")
    ours = fuse([r1, r2], method, norm=norm)
    theirs = ranx.fuse(
        [ranx.Run(r1.data), ranx.Run(r2.data)],
        method={"combsum": "sum", "combmnz": "mnz"}.get(method, method),
        norm={"minmax": "min-max", "zscore": "zmuv", None: "min-max"}[norm],
        params={"k": 60} if method == "rrf" else None,
    ).to_dict()
    for q in ours.data:
        assert ours[q].keys() == theirs[q].keys()
        for d, s in ours[q].items():
            assert s == pytest.approx(theirs[q][d], rel=1e-9, abs=1e-9)
