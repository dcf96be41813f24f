"""Exposure propensity estimators θ for MNAR feedback, and the lookup the models use.

A propensity is one of three shapes: per item `(n_items,)`; dense per pair
`(n_users, n_items)`; or sparse CSR per pair, which only needs values on the clicked pairs
(the IPS losses use θ only where Y = 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp

from rankloop.data.interactions import Interactions
from rankloop.errors import ConfigError, RankloopError

if TYPE_CHECKING:
    from rankloop.data.ratings import MNARDataset

Propensity = np.ndarray | sp.csr_matrix
# What `estimate_propensity` accepts as `estimator`.
PROPENSITY_ESTIMATORS = ("popularity", "naive_bayes", "logistic", "shipped")

_DENSE_LIMIT = 50_000_000  # pairs; a dense per-pair matrix beyond this is a mistake


def popularity_propensity(
    clicks: Interactions,
    *,
    eta: float = 0.5,
    normalize: Literal["max", "users"] = "max",
    floor: float = 1e-6,
) -> np.ndarray:
    """θ_i = (n_i / max_j n_j)^η per item (Saito et al., η = 0.5), shape (n_items,).

    `n_i` counts the users with a stored positive entry for item i. `normalize="users"`
    divides by the number of users instead (the authors' Coat variant). Items never clicked get
    `floor`; θ only matters where Y = 1, so their value never enters the loss.
    """
    if eta < 0:
        raise RankloopError(f"eta must be >= 0, got {eta}")
    m = clicks.user_items
    counts = np.bincount(m.indices[m.data > 0], minlength=clicks.n_items).astype(np.float64)
    if normalize == "max":
        denom = counts.max() if counts.max() > 0 else 1.0
    elif normalize == "users":
        denom = float(clicks.n_users)
    else:
        raise RankloopError(f"normalize must be 'max' or 'users', got {normalize!r}")
    return np.clip((counts / denom) ** eta, floor, 1.0)


def naive_bayes_rating_propensity(
    mnar: Interactions,
    mar: Interactions,
    *,
    levels: np.ndarray | None = None,
    smoothing: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """P(O = 1 | Y = r) per rating level r, from a randomised-exposure (MAR) sample.

    Bayes' rule as in Schnabel et al. (ICML 2016): P(O=1|r) = P(r|O=1) P(O=1) / P(r), with
    P(r|O=1) from the self-selected ratings, P(O=1) their density, and P(r) from the MAR sample
    (add-`smoothing` counts). Returns (levels, propensities), both sorted by level.
    """
    if mnar.kind != "explicit" or mar.kind != "explicit":
        raise RankloopError("naive_bayes_rating_propensity needs explicit ratings for both samples")
    if mnar.shape[1] != mar.shape[1]:
        raise RankloopError(
            f"MNAR and MAR samples have different item counts: {mnar.shape} vs {mar.shape}"
        )
    obs, rnd = mnar.user_items.data, mar.user_items.data
    if len(rnd) == 0 or len(obs) == 0:
        raise RankloopError("naive_bayes_rating_propensity needs non-empty MNAR and MAR samples")
    levels = (
        np.unique(np.concatenate([obs, rnd]))
        if levels is None
        else np.sort(np.asarray(levels, np.float32))
    )
    c_obs = np.array([(obs == v).sum() for v in levels], np.float64) + smoothing
    c_rnd = np.array([(rnd == v).sum() for v in levels], np.float64) + smoothing
    p_r_given_o = c_obs / c_obs.sum()
    p_o = len(obs) / (mnar.n_users * mnar.n_items)
    p_r = c_rnd / c_rnd.sum()
    return levels, np.clip(p_r_given_o * p_o / p_r, 1e-6, 1.0)


def naive_bayes_propensity(
    mnar: Interactions, mar: Interactions, *, smoothing: float = 1.0
) -> sp.csr_matrix:
    """Per-pair θ_ui = P(O=1 | Y=r_ui) on every rated MNAR pair, as CSR aligned with `mnar`."""
    levels, prop = naive_bayes_rating_propensity(mnar, mar, smoothing=smoothing)
    m = mnar.user_items.copy()
    pos = np.searchsorted(levels, m.data)
    if np.any(pos >= len(levels)) or np.any(levels[np.minimum(pos, len(levels) - 1)] != m.data):
        raise RankloopError("MNAR ratings hold a level missing from the estimated table")
    m.data = prop[pos].astype(np.float32)
    return m


def logistic_propensity(
    observed: Interactions,
    *,
    user_features: np.ndarray,
    item_features: np.ndarray,
    pairwise: bool = False,
    C: float = 1.0,
    random_state: int = 0,
    floor: float = 1e-3,
) -> np.ndarray:
    """θ_ui = P(O_ui = 1 | x_u, x_i) from a logistic regression on user/item features.

    Fits scikit-learn's `LogisticRegression` on every (user, item) pair, the label being whether
    the pair is stored in `observed` (Coat ships binary user and item features). `pairwise`
    adds the user × item feature products. Returns a dense (n_users, n_items) matrix clipped to
    [floor, 1].
    """
    from sklearn.linear_model import LogisticRegression

    uf = np.asarray(user_features, np.float32)
    itf = np.asarray(item_features, np.float32)
    n_u, n_i = observed.shape
    if uf.ndim != 2 or uf.shape[0] != n_u:
        raise RankloopError(f"user_features must be ({n_u}, d), got {uf.shape}")
    if itf.ndim != 2 or itf.shape[0] != n_i:
        raise RankloopError(f"item_features must be ({n_i}, d), got {itf.shape}")
    if n_u * n_i > _DENSE_LIMIT:
        raise RankloopError(
            f"logistic_propensity builds all {n_u * n_i:,} pairs; too many (limit {_DENSE_LIMIT:,})"
        )
    parts = [np.repeat(uf, n_i, axis=0), np.tile(itf, (n_u, 1))]
    if pairwise:
        parts.append(np.einsum("ua,ib->uiab", uf, itf).reshape(n_u * n_i, -1))
    x = np.hstack(parts)
    y = (observed.user_items.toarray() != 0).ravel()
    if y.all() or not y.any():
        raise RankloopError("logistic_propensity needs both observed and unobserved pairs")
    model = LogisticRegression(C=C, max_iter=1000, random_state=random_state)
    model.fit(x, y)
    return np.clip(model.predict_proba(x)[:, 1].reshape(n_u, n_i), floor, 1.0)


def estimate_propensity(
    estimator: str,
    data: MNARDataset,
    clicks: Interactions,
    *,
    mar_sample: Interactions | None = None,
    **options: Any,
) -> Propensity:
    """θ for training on `clicks` (drawn from `data.train`), by one of `PROPENSITY_ESTIMATORS`.

    "popularity": item popularity in `clicks`; "naive_bayes": the MNAR ratings against
    `mar_sample`, MAR ratings set aside for it; "logistic": `data`'s user/item features;
    "shipped": the propensities `data` ships. `options` go to the estimator (e.g. `eta`), so
    one config entry picks and tunes any of them.
    """
    try:
        if estimator == "popularity":
            return popularity_propensity(clicks, **options)
        if estimator == "naive_bayes":
            if mar_sample is None:
                raise RankloopError("the naive_bayes propensity needs a MAR sample (mar_sample)")
            return naive_bayes_propensity(data.train, mar_sample, **options)
        if estimator == "logistic":
            if data.user_features is None or data.item_features is None:
                raise RankloopError(
                    f"{data.name or 'the data set'} ships no user/item features for the "
                    "logistic estimator"
                )
            return logistic_propensity(
                data.train,
                user_features=data.user_features,
                item_features=data.item_features,
                **options,
            )
    except TypeError as e:
        raise ConfigError(f"propensity {estimator}: bad option ({e})") from None
    if estimator != "shipped":
        raise ConfigError(
            f"unknown propensity estimator {estimator!r}; valid names: "
            f"{', '.join(PROPENSITY_ESTIMATORS)}"
        )
    if data.shipped_propensities is None:
        raise RankloopError(f"{data.name or 'the data set'} ships no propensities")
    return data.shipped_propensities


def _bad_values(values: np.ndarray) -> str:
    """'' when every value is a probability in (0, 1], else what is wrong and how often."""
    v = np.asarray(values, np.float64)
    problems = [
        (np.isnan(v), "NaN"),
        (np.isinf(v), "infinite"),
        (v == 0, "zero"),
        (v < 0, "negative"),
        (np.isfinite(v) & (v > 1), "above 1"),
    ]
    said = [f"{int(m.sum()):,} {what}" for m, what in problems if m.any()]
    return ", ".join(said)


def check_propensity(propensity: Propensity, shape: tuple[int, int]) -> None:
    """Refuse a propensity whose shape does not fit `shape` (users, items) or whose values are
    not all probabilities in (0, 1] (NaN, infinite, zero, negative or above 1), before training.

    Sparse per-pair propensities are checked on their stored entries, which must cover the
    clicked pairs (`propensity_at` checks those when it reads them).
    """
    n_u, n_i = shape
    if sp.issparse(propensity):
        if propensity.shape != shape:
            raise RankloopError(
                f"propensity matrix shape {propensity.shape} != interactions {shape}"
            )
        values = sp.csr_matrix(propensity).data
    else:
        values = np.asarray(propensity)
        if not np.issubdtype(values.dtype, np.number) or np.issubdtype(
            values.dtype, np.complexfloating
        ):
            raise RankloopError(f"propensity must hold real numbers, got dtype {values.dtype}")
        if not (values.shape == (n_i,) or values.shape == (n_u, n_i)):
            raise RankloopError(
                f"propensity must be ({n_i},) per item or ({n_u}, {n_i}) per pair, got {values.shape}"
            )
    bad = _bad_values(values)
    if bad:
        raise RankloopError(
            f"propensities must be probabilities in (0, 1]; got {bad} of {values.size:,} values "
            "(estimate them on the training clicks, or clip them before use)"
        )


def propensity_at(
    propensity: Propensity, users: np.ndarray, items: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """θ at each (users[j], items[j]) pair for any of the three propensity shapes; must be > 0."""
    n_u, n_i = shape
    if sp.issparse(propensity):
        if propensity.shape != shape:
            raise RankloopError(
                f"propensity matrix shape {propensity.shape} != interactions {shape}"
            )
        out = Interactions(user_items=sp.csr_matrix(propensity), kind="implicit").values_at(
            users, items
        )
    else:
        p = np.asarray(propensity)
        if p.ndim == 1:
            if p.shape[0] != n_i:
                raise RankloopError(f"per-item propensity has {p.shape[0]} entries for {n_i} items")
            out = p[items]
        elif p.shape == (n_u, n_i):
            out = p[users, items]
        else:
            raise RankloopError(f"propensity must be ({n_i},) or ({n_u}, {n_i}), got {p.shape}")
    out = np.asarray(out, np.float32)
    bad = _bad_values(out) if len(out) else ""
    if bad:
        raise RankloopError(
            f"propensity at the clicked pairs must be in (0, 1]; got {bad} of {len(out):,} "
            "(a zero there usually means it is missing: estimate it on the training clicks)"
        )
    return out
