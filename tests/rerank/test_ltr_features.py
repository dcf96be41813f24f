"""Feature extraction from runs and text, LtrData helpers, scorers and the full-information Ranker."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankloop.data.types import Corpus, Qrels, Queries, Run
from rankloop.errors import ConfigError, RankloopError
from rankloop.rerank.ltr import (
    LtrData,
    Ranker,
    build_features,
    concat_ltr,
    feature_names,
    make_scorer,
)

CORPUS = Corpus(
    ids=["d1", "d2", "d3"],
    titles=["Vitamin D and bones", "", "Sleep"],
    texts=["vitamin d helps bone health", "coffee and the heart", "sleep and vitamin intake"],
    name="tiny",
)
QUERIES = Queries(["q1", "q2"], ["vitamin bone", "coffee"], "tiny")
CAND = Run({"q1": {"d1": 9.0, "d3": 5.0, "d2": 1.0}, "q2": {"d2": 4.0}}, "bm25")
DENSE = Run({"q1": {"d3": 0.9, "d1": 0.8}, "q2": {"d2": 0.7, "d1": 0.2}}, "dense")


def col(data: LtrData, name: str) -> np.ndarray:
    assert data.feature_names is not None
    return data.features[:, data.feature_names.index(name)].astype(float)


def test_features_by_hand() -> None:
    data = build_features(
        CAND,
        QUERIES,
        CORPUS,
        signals={"dense": DENSE},
        qrels=Qrels({"q1": {"d1": 2, "d2": -1}}),
        candidate_name="bm25",
    )
    assert data.feature_names == feature_names("bm25", ["dense"])
    assert data.qids.tolist() == ["q1", "q1", "q1", "q2"]
    assert data.doc_ids is not None and data.doc_ids.tolist() == ["d1", "d3", "d2", "d2"]
    np.testing.assert_allclose(col(data, "bm25_score"), [9, 5, 1, 4])
    np.testing.assert_allclose(col(data, "bm25_rr"), [1, 1 / 2, 1 / 3, 1])
    z = (np.array([9, 5, 1]) - 5) / np.std([9, 5, 1])
    np.testing.assert_allclose(col(data, "bm25_znorm"), [*z, 0.0], rtol=1e-6)
    # dense: d2 is not retrieved for q1 -> the run's lowest score there (0.8), rank 0, missing
    np.testing.assert_allclose(col(data, "dense_score"), [0.8, 0.9, 0.8, 0.7], rtol=1e-6)
    np.testing.assert_allclose(col(data, "dense_rr"), [1 / 2, 1, 0, 1])
    np.testing.assert_allclose(col(data, "dense_missing"), [0, 0, 1, 0])
    # query terms without stopwords: q1 {vitamin, bone}, q2 {coffee}
    np.testing.assert_allclose(col(data, "title_overlap"), [0.5, 0, 0, 0])  # "bones" != "bone"
    np.testing.assert_allclose(col(data, "doc_overlap"), [1.0, 0.5, 0, 1.0])
    np.testing.assert_allclose(col(data, "log_doc_len"), np.log1p([4 + 5, 1 + 4, 4, 4]), rtol=1e-6)
    np.testing.assert_allclose(col(data, "log_query_len"), np.log1p([2, 2, 2, 1]), rtol=1e-6)
    idf_v, idf_b = math.log(4 / 2.5), math.log(4 / 1.5)  # vitamin in d1, d3; bone in d1
    np.testing.assert_allclose(
        col(data, "idf_overlap"), [1.0, idf_v / (idf_v + idf_b), 0, 1.0], rtol=1e-6
    )
    np.testing.assert_array_equal(data.labels, [2, 0, 0, 0])  # negative grades -> 0


def test_top_k_cut_and_unknown_docs() -> None:
    data = build_features(CAND, QUERIES, CORPUS, k=1)
    assert data.doc_ids is not None and data.doc_ids.tolist() == ["d1", "d2"]
    with pytest.raises(RankloopError, match="not in corpus"):
        build_features(Run({"q1": {"nope": 1.0}}), QUERIES, CORPUS)


def test_ltr_data_lists_rows_and_concat() -> None:
    data = build_features(CAND, QUERIES, CORPUS)
    x, _, mask = data.to_lists()
    assert x.shape == (2, 3, data.n_features)
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(x[1, 0], data.features[3])
    assert data.row_index(np.array(["q1", "q2", "q2"]), np.array(["d2", "d2", "d1"])).tolist() == [
        2,
        3,
        -1,
    ]
    both = concat_ltr([data.subset_queries(["q2"]), data.subset_queries(["q1"])])
    assert both.query_ids == ["q2", "q1"]
    with pytest.raises(RankloopError, match="contiguous"):
        LtrData(np.zeros((3, 1), np.float32), np.zeros(3), np.array(["a", "b", "a"]))


def test_scorers_are_seeded_and_scale_features() -> None:
    x = np.random.default_rng(0).normal(loc=100.0, scale=50.0, size=(20, 4)).astype(np.float32)
    a = make_scorer("mlp", 4, random_state=1, hidden=(8,)).set_scaling(x)
    b = make_scorer("mlp", 4, random_state=1, hidden=(8,)).set_scaling(x)
    import torch

    with torch.no_grad():
        sa, sb = a(torch.as_tensor(x)), b(torch.as_tensor(x))
        z = (torch.as_tensor(x) - a.mean) / a.scale
    assert torch.equal(sa, sb)
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std(unbiased=False)) - 1.0) < 1e-4
    with pytest.raises(ConfigError, match="unknown model"):
        make_scorer("forest", 4)
    with pytest.raises(ConfigError):
        make_scorer("mlp", 4, hidden=())


@pytest.mark.parametrize("loss", ["listnet", "lambdarank", "ranknet", "pointwise"])
def test_ranker_learns_a_linear_relevance(loss: str) -> None:
    rng = np.random.default_rng(0)
    n_q, k = 60, 6
    x = rng.normal(size=(n_q * k, 3)).astype(np.float32)
    labels = np.digitize(x[:, 0] - 0.5 * x[:, 1], [0.0, 1.0]).astype(float)
    qids = np.repeat([f"q{i}" for i in range(n_q)], k)
    docs = np.array([f"d{i}" for i in range(n_q * k)])
    data = LtrData(x, labels, qids, docs)
    model = Ranker("linear", loss, epochs=40, lr=0.05, device="cpu").fit(data)
    w = model.scorer_.body.weight.detach().numpy().ravel() / model.scorer_.scale.numpy()
    assert w[0] > 0 and w[1] < 0 and abs(w[2]) < 0.5 * w[0]
    run = model.rerank(data)
    assert set(run.query_ids) == set(qids)
