"""ExpoMF (Liang et al., WWW 2016): exposure matrix factorisation fitted by EM, in torch.

Each pair has a latent exposure a_ui ~ Bernoulli(μ_i); if exposed, y_ui ~ N(θ_u·β_i, 1/λ_y),
else y_ui = 0. The E-step gives the posterior exposure p_ui (1 on clicks); the M-step solves
weighted ridge regressions for user and item factors and updates μ_i under a Beta(a, b) prior.
Dense over all pairs, processed in row blocks; fine for Coat / Yahoo! R3 / MovieLens sizes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError
from rankloop.recsys.base import FactorRecommender
from rankloop.recsys.relmf import resolve_device, torch_threads

_BLOCK_ELEMS = 1 << 24  # rows x cols x factors^2 budget per block


class ExpoMF(FactorRecommender):
    """Exposure MF. After `fit`: `user_factors_`, `item_factors_`, and `exposure_` (μ_i, shape (n_items,)).

    `score_with_exposure=True` scales item factors by μ_i, so recommendations rank by
    μ_i·θ_u·β_i (Liang et al.'s exposure-aware score); the default ranks by θ_u·β_i.
    """

    def __init__(
        self,
        factors: int = 64,
        *,
        lambda_theta: float = 1e-5,
        lambda_beta: float = 1e-5,
        lambda_y: float = 1.0,
        init_mu: float = 0.01,
        a: float = 1.0,
        b: float = 1.0,
        init_std: float = 0.01,
        iterations: int = 10,
        score_with_exposure: bool = False,
        random_state: int = 0,
        device: str = "auto",
        num_threads: int | None = 1,
    ) -> None:
        self.factors = factors
        self.lambda_theta = lambda_theta
        self.lambda_beta = lambda_beta
        self.lambda_y = lambda_y
        self.init_mu = init_mu
        self.a = a
        self.b = b
        self.init_std = init_std
        self.iterations = iterations
        self.score_with_exposure = score_with_exposure
        self.random_state = random_state
        self.device = device
        self.num_threads = num_threads

    def _posterior(self, y: torch.Tensor, pred: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """E[a_ui | y_ui] for a block: 1 where clicked, else μ·φ / (μ·φ + 1 − μ)."""
        phi = math.sqrt(self.lambda_y / (2 * math.pi)) * torch.exp(-0.5 * self.lambda_y * pred**2)
        p = mu * phi / (mu * phi + 1.0 - mu)
        return torch.where(y > 0, torch.ones_like(p), p)

    def _solve(
        self, y: torch.Tensor, fixed: torch.Tensor, old: torch.Tensor, mu: torch.Tensor, lam: float
    ) -> torch.Tensor:
        """New factors for every row of y (rows x cols) given the other side's `fixed` factors.

        `mu` is (cols,) when rows are users, (rows, 1) when rows are items.
        """
        n_rows, n_cols = y.shape
        k = fixed.shape[1]
        # Gram matrices Σ_c p_rc f_c f_cᵀ are symmetric: form only the k(k+1)/2 upper-triangle
        # products (half the work of all k² products), then mirror them
        ia, ib = torch.triu_indices(k, k, device=fixed.device)
        outer = fixed[:, ia] * fixed[:, ib]
        eye = torch.eye(k, dtype=fixed.dtype, device=fixed.device) * (lam / self.lambda_y)
        step = max(1, _BLOCK_ELEMS // max(1, n_cols * k))
        out = torch.empty_like(old)
        for s in range(0, n_rows, step):
            yb = y[s : s + step]
            p = self._posterior(
                yb, old[s : s + step] @ fixed.T, mu[s : s + step] if mu.ndim == 2 else mu
            )
            tri = p @ outer
            gram = eye.repeat(len(yb), 1, 1)
            gram[:, ia, ib] += tri
            gram[:, ib[ia != ib], ia[ia != ib]] += tri[:, ia != ib]
            rhs = (p * yb) @ fixed
            chol = torch.linalg.cholesky(gram)
            out[s : s + step] = torch.cholesky_solve(rhs.unsqueeze(2), chol).squeeze(2)
        return out

    def _em(self, clicks: Interactions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """EM sweeps; returns (user factors, item factors, exposure priors μ)."""
        dev = resolve_device(self.device)
        n_u, n_i = clicks.shape
        g = torch.Generator().manual_seed(int(self.random_state))
        theta = (torch.randn(n_u, self.factors, generator=g) * self.init_std).to(dev)
        beta = (torch.randn(n_i, self.factors, generator=g) * self.init_std).to(dev)
        mu = torch.full((n_i,), self.init_mu, device=dev)
        y = torch.from_numpy((clicks.user_items.toarray() > 0).astype(np.float32)).to(dev)
        yt = y.T.contiguous()
        for _ in range(self.iterations):
            theta = self._solve(y, beta, theta, mu, self.lambda_theta)
            beta = self._solve(yt, theta, beta, mu[:, None], self.lambda_beta)
            p_sum = torch.zeros(n_i, device=dev)
            step = max(1, _BLOCK_ELEMS // max(1, n_i * self.factors))
            for s in range(0, n_u, step):
                p_sum += self._posterior(y[s : s + step], theta[s : s + step] @ beta.T, mu).sum(0)
            mu = ((self.a + p_sum - 1.0) / (self.a + self.b + n_u - 2.0)).clamp(1e-8, 1.0 - 1e-8)
        return theta, beta, mu

    def fit(self, clicks: Interactions) -> ExpoMF:
        """Fit by `iterations` EM sweeps on implicit clicks (binary: any stored value counts 1)."""
        if not isinstance(clicks, Interactions) or clicks.kind != "implicit":
            raise RankloopError("ExpoMF.fit expects implicit Interactions (clicks)")
        if clicks.nnz == 0:
            raise RankloopError("cannot fit on interactions with no clicks")
        if not 0.0 < self.init_mu < 1.0:
            raise RankloopError(f"init_mu must be in (0, 1), got {self.init_mu}")
        with torch_threads(self.num_threads):
            theta, beta, mu = self._em(clicks)
        self.exposure_ = mu.cpu().numpy()
        items = beta.cpu().numpy()
        if self.score_with_exposure:
            items = items * self.exposure_[:, None]
        self._set_factors(theta.cpu().numpy(), items, clicks)
        return self
