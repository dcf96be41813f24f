"""Linear bandits: LinUCB disjoint and hybrid (Li et al., WWW 2010) and Diag-LinUCB.

Per-arm inverses are kept up to date with vectorised Sherman–Morrison rank-one updates: a batch
of feedback is split into "waves" in which every arm occurs at most once, and each wave updates
all its arms' inverses at once. An arm that occurs more than `SM_MAX_REPEATS` times in one batch
is re-inverted directly instead (one batched `inv` beats many rank-one passes).

Diag-LinUCB ("Online Matching: A Real-time Bandit System for Large-scale Recommendations")
keeps only the diagonal of each arm's design matrix, so its state is additive sufficient
statistics (Σx², Σrx, n): shards that see disjoint feedback can be merged by summing, and the
merged policy equals one that saw all the feedback.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from rankloop.bandits.policies.base import Policy, register_policy, row_chunks
from rankloop.errors import ConfigError, RankloopError

SM_MAX_REPEATS = 8


def _check_linear(n_features: int, alpha: float, reg: float) -> None:
    """Validate the hyper-parameters every linear policy shares (context size, width, ridge)."""
    if not isinstance(n_features, int | np.integer) or n_features < 1:
        raise ConfigError(f"n_features must be a positive int, got {n_features!r}")
    if reg <= 0:
        raise ConfigError(f"reg must be > 0, got {reg}")
    if alpha < 0:
        raise ConfigError(f"alpha must be >= 0, got {alpha}")


def sherman_morrison(a_inv: np.ndarray, arms: np.ndarray, x: np.ndarray) -> None:
    """In place: `a_inv[arms] <- (A + x xᵀ)^-1` for distinct `arms`, x of shape (len(arms), d)."""
    m = a_inv[arms]
    mx = np.einsum("aij,aj->ai", m, x)
    denom = 1.0 + np.einsum("ai,ai->a", x, mx)
    a_inv[arms] = m - mx[:, :, None] * mx[:, None, :] / denom[:, None, None]


def segment_sum(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum the rows of `values` (n, ...) per group id in [0, n_groups): (n_groups, ...).

    A sparse one-hot product, several times faster than `np.add.reduceat` on wide rows.
    """
    n = len(groups)
    onehot = sp.csr_matrix((np.ones(n), (groups, np.arange(n))), shape=(n_groups, n))
    return np.asarray(onehot @ values.reshape(n, -1)).reshape((n_groups, *values.shape[1:]))


def ridge_update(
    a: np.ndarray,
    a_inv: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    arms: np.ndarray,
    reward: np.ndarray,
) -> np.ndarray:
    """Add rows (x, reward) to per-arm ridge statistics `A += xxᵀ`, `b += r x`, `A⁻¹` kept exact.

    Returns the distinct arms touched. Rows of the same arm are applied in their order.
    """
    if len(arms) == 1:  # the online case: one rank-one update, no grouping
        arm = arms[:1]
        a[arm[0]] += np.outer(x[0], x[0])
        b[arm[0]] += reward[0] * x[0]
        sherman_morrison(a_inv, arm, x[:1])
        return arm
    order = np.argsort(arms, kind="stable")
    arms_s, x_s = arms[order], x[order]
    uniq, start, group, count = np.unique(
        arms_s, return_index=True, return_inverse=True, return_counts=True
    )
    a[uniq] += segment_sum(x_s[:, :, None] * x_s[:, None, :], group, len(uniq))
    b[uniq] += segment_sum(reward[order][:, None] * x_s, group, len(uniq))
    heavy = count > SM_MAX_REPEATS
    if heavy.any():
        a_inv[uniq[heavy]] = np.linalg.inv(a[uniq[heavy]])
    light = ~np.repeat(heavy, count)
    if light.any():
        occurrence = np.arange(len(arms_s)) - np.repeat(start, count)
        for wave in range(int(occurrence[light].max()) + 1):
            sel = light & (occurrence == wave)
            sherman_morrison(a_inv, arms_s[sel], x_s[sel])
    return uniq


def arm_matvec(mats: np.ndarray, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
    """`out[i, j] = mats[cands[i, j]]ᵀ x[i]`, shape (n, N, q), for per-arm mats (m, d, q).

    Small catalogues (or `cands=None`) use one GEMM against every arm and then gather; large
    ones gather the candidates' matrices. Rows are chunked to bound temporary memory.
    """
    m, d, q = mats.shape
    n = x.shape[0]
    if cands is None or m <= 8 * cands.shape[1]:
        width = m if cands is None else cands.shape[1]
        out = np.empty((n, width, q))
        for rows in row_chunks(n, m * q):
            full = np.tensordot(x[rows], mats, axes=([1], [1]))  # (c, m, q)
            out[rows] = (
                full if cands is None else np.take_along_axis(full, cands[rows][:, :, None], 1)
            )
        return out
    out = np.empty((*cands.shape, q))
    for rows in row_chunks(n, cands.shape[1] * d * q):
        out[rows] = np.matmul(x[rows][:, None, None, :], mats[cands[rows]])[:, :, 0, :]
    return out


class _LinearPolicy(Policy):
    """Validated `n_features`, exploration `alpha` and ridge `reg`, shared by the linear policies."""

    context_dim_attr: ClassVar[str | None] = "n_features"

    def __init__(
        self,
        n_arms: int,
        n_features: int,
        alpha: float = 1.0,
        *,
        reg: float = 1.0,
        batch_size: int = 1,
        random_state: int = 0,
        tie_break: str = "random",
    ) -> None:
        _check_linear(n_features, alpha, reg)
        super().__init__(
            n_arms, batch_size=batch_size, random_state=random_state, tie_break=tie_break
        )
        self.n_features = int(n_features)
        self.alpha = float(alpha)
        self.reg = float(reg)
        self._init_state()


class RidgeArms(_LinearPolicy):
    """Disjoint per-arm ridge regression state: `A_` (m, d, d), `A_inv_`, `b_` (m, d), `theta_`.

    `A = reg·I + Σ x xᵀ`, `b = Σ r x`, `theta = A⁻¹ b` per arm.
    """

    _state: ClassVar[tuple[str, ...]] = ("A_", "A_inv_", "b_", "theta_", "counts_")

    def _init_state(self) -> None:
        m, d = self.n_arms, self.n_features
        eye = np.eye(d)
        self.A_ = np.broadcast_to(self.reg * eye, (m, d, d)).copy()
        self.A_inv_ = np.broadcast_to(eye / self.reg, (m, d, d)).copy()
        self.b_ = np.zeros((m, d))
        self.theta_ = np.zeros((m, d))
        self.counts_ = np.zeros(m)

    def _apply(self, x: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        d = self.n_features
        for rows in row_chunks(len(action), d * d):
            touched = ridge_update(
                self.A_, self.A_inv_, self.b_, x[rows], action[rows], reward[rows]
            )
            self.theta_[touched] = np.einsum("aij,aj->ai", self.A_inv_[touched], self.b_[touched])
        self.counts_ += np.bincount(action, minlength=self.n_arms)

    def mean_and_variance(
        self, x: np.ndarray, cands: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, N) predicted reward `xᵀθ_a` and `xᵀA_a⁻¹x` per row and candidate arm.

        For all arms (or a small catalogue) `xᵀA_a⁻¹x = vec(x xᵀ) · vec(A_a⁻¹)`: one GEMM of
        the rows' outer products against the flattened inverses.
        """
        m, d = self.n_arms, self.n_features
        n = x.shape[0]
        if cands is None or m <= 8 * cands.shape[1]:
            flat = self.A_inv_.reshape(m, d * d)
            mean_all = x @ self.theta_.T
            var_all = np.empty((n, m))
            for rows in row_chunks(n, d * d + m):
                xx = (x[rows, :, None] * x[rows, None, :]).reshape(-1, d * d)
                var_all[rows] = xx @ flat.T
            if cands is None:
                return mean_all, np.maximum(var_all, 0.0)
            mean = np.take_along_axis(mean_all, cands, axis=1)
            return mean, np.maximum(np.take_along_axis(var_all, cands, axis=1), 0.0)
        ax = arm_matvec(self.A_inv_, x, cands)
        var = np.einsum("cnd,cd->cn", ax, x)
        mean = np.einsum("cnd,cd->cn", self.theta_[cands], x)
        return mean, np.maximum(var, 0.0)


@register_policy("linucb")
class LinUCB(RidgeArms):
    """LinUCB with disjoint linear models (Li et al. 2010, Algorithm 1).

    Score of arm a for context x: `xᵀθ_a + alpha·sqrt(xᵀA_a⁻¹x)`.
    """

    def _scores(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        mean, var = self.mean_and_variance(x, cands)
        return mean + self.alpha * np.sqrt(var)


@register_policy("hybrid_linucb")
class HybridLinUCB(Policy):
    """LinUCB with hybrid linear models (Li et al. 2010, Algorithm 2).

    Expected reward `zᵀβ + xᵀθ_a`: β is shared by all arms over `z = vec(x ⊗ f_a)` (the user
    context crossed with the arm's features `arm_features[a]`, as in the paper's Yahoo! setup),
    θ_a is per arm over the context `x`. The shared matrix A0 changes by more than rank one per
    update, so its inverse is refactorised once per applied batch; the per-arm inverses use
    Sherman–Morrison.
    """

    context_dim_attr: ClassVar[str | None] = "n_features"
    _state: ClassVar[tuple[str, ...]] = (
        "A0_",
        "A0_inv_",
        "b0_",
        "beta_",
        "A_",
        "A_inv_",
        "B_",
        "b_",
        "counts_",
    )

    def __init__(
        self,
        n_arms: int,
        n_features: int,
        arm_features: np.ndarray,
        alpha: float = 1.0,
        *,
        reg: float = 1.0,
        batch_size: int = 1,
        random_state: int = 0,
        tie_break: str = "random",
    ) -> None:
        f = np.asarray(arm_features, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] != n_arms:
            raise ConfigError(f"arm_features must be (n_arms={n_arms}, p), got shape {f.shape}")
        if not np.isfinite(f).all():
            raise ConfigError("arm_features contain NaN or infinity")
        _check_linear(n_features, alpha, reg)
        super().__init__(
            n_arms, batch_size=batch_size, random_state=random_state, tie_break=tie_break
        )
        self.n_features = int(n_features)
        self.arm_features = f
        self.alpha = float(alpha)
        self.reg = float(reg)
        self._init_state()

    @property
    def n_shared(self) -> int:
        """Dimension k of the shared features z."""
        return self.n_features * self.arm_features.shape[1]

    def _init_state(self) -> None:
        m, d, k = self.n_arms, self.n_features, self.n_shared
        self.A0_ = self.reg * np.eye(k)
        self.A0_inv_ = np.eye(k) / self.reg
        self.b0_ = np.zeros(k)
        self.beta_ = np.zeros(k)
        self.A_ = np.broadcast_to(self.reg * np.eye(d), (m, d, d)).copy()
        self.A_inv_ = np.broadcast_to(np.eye(d) / self.reg, (m, d, d)).copy()
        self.B_ = np.zeros((m, d, k))
        self.b_ = np.zeros((m, d))
        self.counts_ = np.zeros(m)
        self._after_load()

    def _after_load(self) -> None:
        # caches per arm: M_a = A_a⁻¹B_a (d, k) and c_a = A_a⁻¹b_a (d,)
        self._M = np.matmul(self.A_inv_, self.B_)
        self._c = np.einsum("aij,aj->ai", self.A_inv_, self.b_)

    def shared_features(self, x: np.ndarray, arms: np.ndarray) -> np.ndarray:
        """z = vec(x ⊗ f_a): (..., k) for x (n, d) and arms (n, ...) broadcast per row."""
        f = self.arm_features[arms]  # (n, ..., p)
        xs = x.reshape(x.shape[:1] + (1,) * (arms.ndim - 1) + x.shape[1:])
        z = xs[..., :, None] * f[..., None, :]
        return z.reshape(*arms.shape, self.n_shared)

    def _cross_terms(self, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Σ_a B_aᵀA_a⁻¹B_a (k, k) and Σ_a B_aᵀA_a⁻¹b_a (k,) over the distinct `arms`."""
        k = self.n_shared
        b_flat = self.B_[arms].reshape(-1, k)
        return b_flat.T @ self._M[arms].reshape(-1, k), self._M[arms].reshape(-1, k).T @ self.b_[
            arms
        ].reshape(-1)

    def _apply(self, x: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        d, k = self.n_features, self.n_shared
        for rows in row_chunks(len(action), d * (d + k) + k):
            xr, ar, rr = x[rows], action[rows], reward[rows]
            z = self.shared_features(xr, ar)
            touched, group = np.unique(ar, return_inverse=True)
            old_bab, old_bab_r = self._cross_terms(touched)
            ridge_update(self.A_, self.A_inv_, self.b_, xr, ar, rr)
            self.B_[touched] += segment_sum(xr[:, :, None] * z[:, None, :], group, len(touched))
            self._M[touched] = np.matmul(self.A_inv_[touched], self.B_[touched])
            self._c[touched] = np.einsum("aij,aj->ai", self.A_inv_[touched], self.b_[touched])
            new_bab, new_bab_r = self._cross_terms(touched)
            self.A0_ += z.T @ z + old_bab - new_bab
            self.b0_ += z.T @ rr + old_bab_r - new_bab_r
        self.A0_inv_ = np.linalg.inv(self.A0_)
        self.beta_ = self.A0_inv_ @ self.b0_
        self.counts_ += np.bincount(action, minlength=self.n_arms)

    def mean_and_variance(
        self, x: np.ndarray, cands: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, N) expected reward `zᵀβ + xᵀθ_a` and the paper's s_{t,a}.

        With v = B_aᵀA_a⁻¹x and θ_a = A_a⁻¹(b_a - B_aβ): the mean is `(z - v)ᵀβ + xᵀA_a⁻¹b_a`
        and s_{t,a} = `(z - v)ᵀA0⁻¹(z - v) + xᵀA_a⁻¹x`, Algorithm 2's four terms regrouped.
        """
        n = x.shape[0]
        full = np.broadcast_to(np.arange(self.n_arms), (n, self.n_arms))
        c = full if cands is None else cands
        u = self.shared_features(x, c) - arm_matvec(self._M, x, cands)  # z - v, (n, N, k)
        ax = arm_matvec(self.A_inv_, x, cands)
        var = np.einsum("cnk,cnk->cn", u @ self.A0_inv_, u) + np.einsum("cnd,cd->cn", ax, x)
        mean = u @ self.beta_ + np.einsum("cnd,cd->cn", self._c[c], x)
        return mean, np.maximum(var, 0.0)

    def _scores(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        mean, var = self.mean_and_variance(x, cands)
        return mean + self.alpha * np.sqrt(var)


@register_policy("diag_linucb")
class DiagLinUCB(_LinearPolicy):
    """LinUCB with a diagonal design matrix per arm; its state is mergeable sufficient statistics.

    Per arm: `sq_ = Σ x²`, `xr_ = Σ r x`, `counts_` (all additive). Precision `reg + sq_`,
    `θ = xr_ / (reg + sq_)`, score `xᵀθ_a + alpha·sqrt(Σ_j x_j² / (reg + sq_aj))`.
    """

    _state: ClassVar[tuple[str, ...]] = ("sq_", "xr_", "counts_")

    def _init_state(self) -> None:
        self.sq_ = np.zeros((self.n_arms, self.n_features))
        self.xr_ = np.zeros((self.n_arms, self.n_features))
        self.counts_ = np.zeros(self.n_arms)

    def _apply(self, x: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        np.add.at(self.sq_, action, x * x)
        np.add.at(self.xr_, action, reward[:, None] * x)
        self.counts_ += np.bincount(action, minlength=self.n_arms)

    def statistics(self) -> dict[str, np.ndarray]:
        """Copies of the additive sufficient statistics (what a shard ships to be merged)."""
        return {name: getattr(self, name).copy() for name in self._state}

    def merge(self, *others: DiagLinUCB | dict[str, np.ndarray]) -> DiagLinUCB:
        """A new policy whose statistics are the sums of this one's and the others'.

        Others are policies of the same shape and hyper-parameters (with no queued feedback) or
        their `statistics()`. The new policy keeps this one's parameters and RNG state.
        """
        out: DiagLinUCB = Policy._restore(*self._dump_flushed(), "")  # type: ignore[assignment]
        for other in others:
            if isinstance(other, DiagLinUCB):
                if other.n_pending:
                    raise RankloopError("merge: a shard has queued feedback; flush() it first")
                if (other.n_arms, other.n_features, other.reg) != (
                    self.n_arms,
                    self.n_features,
                    self.reg,
                ):
                    raise RankloopError(
                        "merge: shards differ in n_arms, n_features or reg "
                        f"({other.n_arms}, {other.n_features}, {other.reg}) vs "
                        f"({self.n_arms}, {self.n_features}, {self.reg})"
                    )
                stats = other.statistics()
            else:
                stats = other
            for name in self._state:
                if name not in stats or np.shape(stats[name]) != getattr(out, name).shape:
                    raise RankloopError(f"merge: statistics {name!r} missing or of the wrong shape")
                setattr(out, name, getattr(out, name) + stats[name])
            out.n_updates_ += int(np.sum(stats["counts_"]))
        return out

    def _dump_flushed(self) -> tuple[dict, dict]:
        if self.n_pending:
            raise RankloopError("merge: this shard has queued feedback; flush() it first")
        return self._dump()

    def _scores(self, x: np.ndarray, cands: np.ndarray | None) -> np.ndarray:
        prec = self.reg + self.sq_
        theta = self.xr_ / prec
        if cands is None:
            return x @ theta.T + self.alpha * np.sqrt((x * x) @ (1.0 / prec).T)
        mean = np.einsum("cnd,cd->cn", theta[cands], x)
        var = np.einsum("cnd,cd->cn", 1.0 / prec[cands], x * x)
        return mean + self.alpha * np.sqrt(var)
