"""Tuning recommenders without the MAR test: grid search on MNAR validation clicks.

`validation_splits` holds out random fractions of the training clicks, each with the propensity
estimated on what is kept; `tune_recommender` fits every grid point on every split and scores it
with the self-normalised IPS DCG (`rankloop.recsys.evaluate.unbiased_dcg`). The recsys experiment,
the semi-synthetic study and the scale benchmark all tune through here, so "tuned" means the same
everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rankloop.data.interactions import Interactions
from rankloop.recsys.propensity import Propensity
from rankloop.scale import map_tasks

Split = tuple[Interactions, Interactions, Propensity]


def validation_splits(
    clicks: Interactions,
    propensity: Callable[[Interactions], Propensity],
    *,
    fraction: float = 0.1,
    repeats: int = 1,
    random_state: int = 0,
) -> list[Split]:
    """`repeats` random (kept, held-out, θ of kept) splits of `clicks`, holding out `fraction`."""
    out = []
    for r in range(repeats):
        kept, held = clicks.split(fraction, random_state=np.random.default_rng([random_state, r]))
        out.append((kept, held, propensity(kept)))
    return out


@dataclass(frozen=True)
class Tuned:
    """The best grid point, its validation score, and every point with its score."""

    best_params: dict[str, Any]
    best_val: float
    grid: list[dict[str, Any]]


def tune_recommender(
    model_type: str,
    points: Sequence[dict[str, Any]],
    splits: Sequence[Split],
    *,
    k: int = 5,
    n_negatives: int = 100,
    random_state: int = 0,
    where: str = "",
    progress: bool = False,
    exposure: Interactions | None = None,
    uniform: Interactions | None = None,
) -> Tuned:
    """Fit `model_type` (a `RECOMMENDERS` name) at every parameter point on every split and keep
    the point with the best mean SNIPS-DCG@k on the held-out clicks (first wins ties).

    `exposure` and `uniform` go to the models that take them (see `fit_recommender`); the
    score is always on held-out MNAR clicks, never on the uniform slice."""
    from rankloop.recsys.evaluate import unbiased_dcg
    from rankloop.recsys.models import fit_recommender, make_recommender

    def exposure_for(held: Interactions) -> Interactions | None:
        # held-out clicks are unknown while tuning: not exposed-and-unclicked, so they leave the
        # exposure log too (else DR-JL learns them as negatives and is scored on them)
        if exposure is None:
            return None
        u, i, v = exposure.to_triples()
        keep = ~held.contains(u, i)
        return Interactions.from_triples(
            users=u[keep], items=i[keep], values=v[keep], n_users=exposure.n_users,
            n_items=exposure.n_items, kind=exposure.kind,
        )  # fmt: skip

    exposures = [exposure_for(held) for _, held, _ in splits]

    def score(params: dict[str, Any]) -> float:
        """Mean held-out SNIPS-DCG@k of one grid point (a Ray task under --ray)."""
        vals = []
        for (kept, held, theta), seen in zip(splits, exposures):
            model = make_recommender(model_type, params, random_state=random_state, where=where)
            fit_recommender(model, kept, theta, exposure=seen, uniform=uniform)
            vals.append(unbiased_dcg(
                model, kept, held, theta, k=k, n_negatives=n_negatives, random_state=random_state
            ))  # fmt: skip
        return float(np.mean(vals))

    scores = list(map_tasks(score, list(points), desc=f"tune {where or model_type}",
                            progress=progress))  # fmt: skip
    best = int(np.argmax(scores))
    return Tuned(
        dict(points[best]),
        scores[best],
        [{"params": dict(p), "val": s} for p, s in zip(points, scores)],
    )
