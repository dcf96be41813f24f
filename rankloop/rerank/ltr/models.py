"""Scoring models for learning to rank (torch): linear and MLP, with built-in feature scaling.

A scorer maps features (..., d) to scores (...). Features are standardised inside the module with
the mean and standard deviation of the training rows (`set_scaling`), so saved models need no
separate scaler. Construction is seeded (`random_state`) and reproduces bit for bit on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from rankloop.errors import ConfigError, RankloopError


def resolve_device(device: str | None = "auto") -> torch.device:
    """`auto` (or None): CUDA when torch sees a GPU, else CPU; otherwise the named device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RankloopError(f"device {device!r} requested but torch sees no CUDA GPU")
    return dev


class Scorer(nn.Module):
    """Standardises features with stored statistics, then applies `body` ((..., d) -> (..., 1))."""

    def __init__(self, n_features: int, body: nn.Module) -> None:
        super().__init__()
        if n_features < 1:
            raise ConfigError(f"n_features must be >= 1, got {n_features}")
        self.n_features = n_features
        self.body = body
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))

    def set_scaling(self, features: np.ndarray) -> Scorer:
        """Store per-feature mean and std of training rows (n, d); constant features get std 1."""
        x = np.asarray(features, dtype=np.float64).reshape(-1, self.n_features)
        if not len(x):
            raise RankloopError("set_scaling: no training rows")
        std = x.std(axis=0)
        self.mean.copy_(torch.as_tensor(x.mean(axis=0), dtype=self.mean.dtype))
        self.scale.copy_(torch.as_tensor(np.where(std > 1e-12, std, 1.0), dtype=self.scale.dtype))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.n_features:
            raise RankloopError(f"scorer expects {self.n_features} features, got {x.shape[-1]}")
        return self.body((x - self.mean) / self.scale).squeeze(-1)


class LinearScorer(Scorer):
    """`w . x + b` on standardised features."""

    def __init__(self, n_features: int) -> None:
        super().__init__(n_features, nn.Linear(n_features, 1))


class MLPScorer(Scorer):
    """A feed-forward network: `hidden` ELU layers (with optional dropout), then one output."""

    def __init__(
        self, n_features: int, hidden: Sequence[int] = (32, 16), dropout: float = 0.0
    ) -> None:
        if not hidden or any(h < 1 for h in hidden):
            raise ConfigError(f"hidden sizes must be positive ints, got {list(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ELU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, 1))
        super().__init__(n_features, nn.Sequential(*layers))


SCORERS = {"linear": LinearScorer, "mlp": MLPScorer}


def make_scorer(kind: str, n_features: int, *, random_state: int = 0, **params: object) -> Scorer:
    """A seeded scorer by name (`linear`, `mlp`); `params` go to its constructor."""
    try:
        cls = SCORERS[kind]
    except KeyError:
        raise ConfigError(f"unknown model {kind!r}; choose one of {', '.join(SCORERS)}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        try:
            return cls(n_features, **params)  # type: ignore[arg-type]
        except TypeError as e:
            raise ConfigError(f"model {kind!r}: {e}") from None
