"""Counterfactual Rocchio: IPS weights by hand and the seen-query protocol on a tiny index."""

from __future__ import annotations

import numpy as np
import pytest

from rankloop.data.clicklogs import ClickLog
from rankloop.data.types import Qrels, Queries, Run
from rankloop.embed import VectorIndex
from rankloop.errors import ConfigError
from rankloop.prf.counterfactual import click_feedback, corocchio, seen_query_runs


def _index() -> VectorIndex:
    index = VectorIndex(2)
    index.add(["a", "b", "c"], np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32))
    return index


def test_ips_weights_are_rank_to_the_eta() -> None:
    log = ClickLog.from_lists(["q1", "q1"], [["a", "b"], ["b", "a"]], [[0], [1]])
    index = _index()
    plain_sum, plain_total = click_feedback(log, index, ["q1", "q2"])
    ips_sum, ips_total = click_feedback(log, index, ["q1", "q2"], eta=1.0)
    # plain: a (rank 1) and a (rank 2) each weigh 1; IPS: weights 1 and 2.
    np.testing.assert_allclose(plain_sum[0], [2, 0])
    np.testing.assert_allclose(ips_total, [3, 0])
    np.testing.assert_allclose(ips_sum[0], [3, 0])
    assert plain_total[1] == 0
    out = corocchio(np.zeros((2, 2), np.float32), ips_sum, ips_total, alpha=1, beta=1)
    np.testing.assert_allclose(out, [[1, 0], [0, 0]])
    with pytest.raises(ConfigError):
        click_feedback(log, index, ["q1"], eta=-1)


def test_seen_query_protocol_returns_three_runs() -> None:
    index = _index()
    queries = Queries(["q1"], ["x"])
    first = Run.from_dict({"q1": {"a": 3.0, "c": 2.0, "b": 1.0}})
    qrels = Qrels.from_dict({"q1": {"b": 1}})
    runs = seen_query_runs(
        index, queries, np.array([[1, 0]], np.float32), first, qrels, n_sessions=200, beta=2.0
    )
    assert set(runs) == {"clicks-unbiased", "clicks-biased-rocchio", "clicks-biased-corocchio"}
    for run in runs.values():
        assert len(run["q1"]) == 3
