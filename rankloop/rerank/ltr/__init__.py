"""Learning to rank and unbiased learning to rank from clicks.

Features from the toolkit's signals (`build_features`), svmlight/LETOR files, torch scorers
(linear, MLP), ranking losses, a full-information `Ranker`, and the click estimators Naive, IPS,
DLA, regression-EM, PairD and the two-tower additive model over aggregated click logs.

    from rankloop.rerank.ltr import build_features, Ranker, aggregate_clicks, IPSEstimator
"""

from rankloop.rerank.ltr.features import LtrData, build_features, concat_ltr, feature_names
from rankloop.rerank.ltr.losses import (
    LOSSES,
    get_loss,
    lambdarank_loss,
    listnet_loss,
    pairwise_logistic,
    pointwise_loss,
    ranknet_loss,
)
from rankloop.rerank.ltr.models import LinearScorer, MLPScorer, Scorer, make_scorer, resolve_device
from rankloop.rerank.ltr.svmlight import read_svmlight, write_svmlight
from rankloop.rerank.ltr.train import ListModel, Ranker, train_lists
from rankloop.rerank.ltr.ultr import (
    ESTIMATORS,
    ClickData,
    ClickEstimator,
    DLAEstimator,
    IPSEstimator,
    NaiveEstimator,
    PairDEstimator,
    RegressionEMEstimator,
    TwoTowerEstimator,
    aggregate_clicks,
    ips_weights,
    make_estimator,
    rem_e_step,
    rem_update_theta,
)

__all__ = [
    "ESTIMATORS",
    "LOSSES",
    "ClickData",
    "ClickEstimator",
    "DLAEstimator",
    "IPSEstimator",
    "LinearScorer",
    "ListModel",
    "LtrData",
    "MLPScorer",
    "NaiveEstimator",
    "PairDEstimator",
    "Ranker",
    "RegressionEMEstimator",
    "Scorer",
    "TwoTowerEstimator",
    "aggregate_clicks",
    "build_features",
    "concat_ltr",
    "feature_names",
    "get_loss",
    "ips_weights",
    "lambdarank_loss",
    "listnet_loss",
    "make_estimator",
    "make_scorer",
    "pairwise_logistic",
    "pointwise_loss",
    "ranknet_loss",
    "read_svmlight",
    "rem_e_step",
    "rem_update_theta",
    "resolve_device",
    "train_lists",
    "write_svmlight",
]
