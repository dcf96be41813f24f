"""BISER (Lee, Park, Lee & Lee, SIGIR 2022): bilateral self-unbiased learning from clicks, in torch.

Two autoencoders with one sigmoid hidden layer of `factors` units and a sigmoid output (the
paper's equation numbers are not cited: only its abstract and the authors' code,
github.com/Jaewoong-Lee/sigir_2022_BISER, were at hand, and the losses below are the ones that
code computes):

    U-AE  ŷᵁ_u· = σ(Dᵁ hᵤ + cᵁ),  hᵤ = σ(Eᵁᵀ y_u· + aᵁ)   (input: user u's click row)
    I-AE  ŷᴵ_·i = σ(Dᴵ gᵢ + cᴵ),  gᵢ = σ(Eᴵᵀ y_·i + aᴵ)   (input: item i's click column)

Each is trained on every (user, item) pair of its input rows with the two losses of the paper:

* SIPW, self-inverse propensity weighting: Rel-MF's IPS loss with squared errors,
  δ⁺(ŷ) = (1 − ŷ)², δ⁻(ŷ) = ŷ², whose propensity is the model's own prediction,

      L_SIPW = Σ_(u,i) (y/p̂)·(1 − ŷ)² + (1 − y/p̂)·ŷ²,   p̂ = clip(sg(ŷ), `clip`, 1),

  sg = stop-gradient: p̂ is the prediction of the current parameters at this step (the model's
  latest estimate of how strongly it exposes the item), used as an IPS weight and not
  differentiated; the clip at M = 0.1 is the authors' code. As the model is trained, p̂
  follows it, which is the "gradual" debiasing of the paper. `propensity_gradient=True`
  drops the sg, as the authors' TensorFlow code does (it differentiates through
  clip(ŷ, 0.1, 1)); on Coat the two score alike. With y ∈ {0, 1} the sum is
  computed as Σ ŷ² + Σ_(y=1) (1 − 2ŷ)/p̂ (dense part plus a correction on the clicks).

* BU, bilateral unbiased learning: on the clicked pairs only, each model is pulled towards
  the other's prediction, held fixed:

      L_BU(U) = Σ_(y=1) (ŷᵁ − sg(ŷᴵ))²,   L_BU(I) = Σ_(y=1) (ŷᴵ − sg(ŷᵁ))².

  As in the authors' code, the targets are the other model's predictions from the start of
  the epoch (a snapshot), the I-AE is trained over all items, then the U-AE over all users.

Per Adam step on a batch of B input rows with n outputs each (n = n_items for the U-AE,
n_users for the I-AE) the objective is

    (L_SIPW + λ·L_BU) / (B·n) + ½·`regularization`·‖θ‖²,

λ = `user_bu_weight` (λ_U) or `item_bu_weight` (λ_I) (the authors' Coat values 0.1 and 0.5),
θ all weights and biases of that autoencoder: standard weight decay on the full parameters as
in the paper and `TorchMF`, added to a per-pair mean loss, so a tuned `regularization` means
the same whatever the batch size or the number of users and items (the authors sum the loss
over the batch instead, so their reg values are not comparable).

Prediction. The paper averages the two models' probabilities, (ŷᵁ + ŷᴵ)/2. Here the score is
the average of the two *logits*, ½(hᵤ·Dᵁᵢ + cᵁᵢ + gᵢ·Dᴵᵤ + cᴵᵤ), which is an inner product of

    user u: [hᵤ, 1, Dᴵᵤ, cᴵᵤ]       item i: ½·[Dᵁᵢ, cᵁᵢ, gᵢ, 1]

so recommendation goes through the shared FAISS index. Each logit alone ranks exactly as its
probability; their average can order a few pairs differently from the probability average
(the deviation from the paper is only in that combination). hᵤ and gᵢ are encoded from the
training clicks given to `fit`. Clicks are binarised (any stored value is a click). Inputs are
sparse (embedding-bag sums of encoder rows); the decoder output of a batch is dense (B × n);
the full click matrix is never densified. Differences from the authors' code, on purpose:
Adam instead of Adagrad, zero-initialised biases, one batch size for both models, no early
stopping on a validation set (`iterations` epochs are run).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from rankloop.data.interactions import Interactions
from rankloop.errors import RankloopError
from rankloop.recsys.base import FactorRecommender
from rankloop.recsys.relmf import resolve_device, torch_threads

_PRED_ROWS = 4096  # rows encoded at once when taking prediction snapshots
_PRED_CELLS = 1 << 22  # dense output cells decoded at once when taking prediction snapshots


class _AE:
    """One sparse-input autoencoder: encoder E (n_in, d) + a, decoder D (n_out, d) + c."""

    def __init__(
        self, n_in: int, n_out: int, d: int, g: torch.Generator, dev: torch.device
    ) -> None:
        def xavier(n: int, fan: int) -> torch.nn.Parameter:
            a = math.sqrt(6.0 / (fan + d))
            return torch.nn.Parameter(((torch.rand(n, d, generator=g) * 2 - 1) * a).to(dev))

        self.E = xavier(n_in, n_in)
        self.D = xavier(n_out, n_out)
        self.a = torch.nn.Parameter(torch.zeros(d, device=dev))
        self.c = torch.nn.Parameter(torch.zeros(n_out, device=dev))

    def params(self) -> list[torch.nn.Parameter]:
        return [self.E, self.D, self.a, self.c]

    def numpy(self) -> dict[str, np.ndarray]:
        """The fitted weights: encoder E, a and decoder D, c (rows of D are output columns)."""
        return {k: getattr(self, k).detach().cpu().numpy() for k in ("E", "a", "D", "c")}

    def hidden(self, idx: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """σ(Eᵀx + a) of binary sparse rows given as embedding-bag indices/offsets."""
        return torch.sigmoid(F.embedding_bag(idx, self.E, offsets, mode="sum") + self.a)


class _Side:
    """The click matrix in one orientation (rows = AE inputs) with the batch helpers."""

    def __init__(self, m: sp.csr_matrix, dev: torch.device) -> None:
        self.indptr = m.indptr.astype(np.int64)
        self.indices = m.indices.astype(np.int64)
        self.n_rows, self.n_out = m.shape
        self.dev = dev

    def bag(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions of `rows`' clicks in CSR order, their columns, and per-row offsets."""
        start, stop = self.indptr[rows], self.indptr[rows + 1]
        lens = stop - start
        offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        pos = np.repeat(start - offsets, lens) + np.arange(lens.sum(), dtype=np.int64)
        return pos, self.indices[pos], offsets

    def tensors(self, *arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(self.dev) for a in arrays)


class BISER(FactorRecommender):
    """BISER: user- and item-based autoencoders with SIPW and bilateral unbiased learning.

    `factors` hidden units per autoencoder (paper: 50 on Coat, 200 on Yahoo! R3); `clip` = M,
    the floor of the self-estimated propensity; `propensity_gradient` differentiates through
    it (the authors' code) instead of treating it as a weight; `user_bu_weight` /
    `item_bu_weight` = λ_U / λ_I,
    the weights of the BU term in each model's loss. Each epoch runs Adam over all items
    (I-AE) then all users (U-AE) in batches of `batch_size` input rows. See the module
    docstring for the exact losses and the inner-product form of the score. After `fit`,
    `user_ae_` / `item_ae_` hold each autoencoder's weights (`E`, `a`, `D`, `c`) and
    `loss_curve_` the mean training loss per epoch.
    """

    def __init__(
        self,
        factors: int = 50,
        *,
        learning_rate: float = 0.005,
        regularization: float = 1e-6,
        iterations: int = 30,
        batch_size: int = 64,
        user_bu_weight: float = 0.1,
        item_bu_weight: float = 0.5,
        clip: float = 0.1,
        propensity_gradient: bool = False,
        random_state: int = 0,
        device: str = "auto",
        num_threads: int | None = 1,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.batch_size = batch_size
        self.user_bu_weight = user_bu_weight
        self.item_bu_weight = item_bu_weight
        self.clip = clip
        self.propensity_gradient = propensity_gradient
        self.random_state = random_state
        self.device = device
        self.num_threads = num_threads

    def _check(self, clicks: Interactions) -> None:
        if not isinstance(clicks, Interactions) or clicks.kind != "implicit":
            raise RankloopError("BISER.fit expects implicit Interactions (clicks)")
        if clicks.nnz == 0:
            raise RankloopError("cannot fit on interactions with no clicks")
        for name in ("factors", "iterations", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise RankloopError(f"{name} must be a positive int, got {v!r}")

        def number(name: str, ok: Callable[[float], bool], want: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                raise RankloopError(f"{name} must be a number {want}, got {v!r}")
            if not (math.isfinite(float(v)) and ok(float(v))):
                raise RankloopError(f"{name} must be {want}, got {v!r}")

        number("learning_rate", lambda v: v > 0, "> 0")
        number("regularization", lambda v: v >= 0, ">= 0")
        number("user_bu_weight", lambda v: v >= 0, ">= 0")
        number("item_bu_weight", lambda v: v >= 0, ">= 0")
        number("clip", lambda v: 0 < v <= 1, "in (0, 1]")
        if not isinstance(self.propensity_gradient, bool):
            raise RankloopError(
                f"propensity_gradient must be True or False, got {self.propensity_gradient!r}"
            )
        if isinstance(self.random_state, bool) or not isinstance(
            self.random_state, (int, np.integer)
        ):
            raise RankloopError(f"random_state must be an int, got {self.random_state!r}")

    def fit(self, clicks: Interactions) -> BISER:
        """Fit both autoencoders on implicit clicks; propensities are self-estimated."""
        self._check(clicks)
        dev = resolve_device(self.device)
        ui = clicks.user_items.copy()
        ui.data = np.arange(1, ui.nnz + 1, dtype=np.float64)  # CSR position + 1, to follow it
        iu = ui.T.tocsr()
        iu.sort_indices()
        to_ui = iu.data.astype(np.int64) - 1  # item-major click k is user-major click to_ui[k]
        users, items = _Side(ui, dev), _Side(iu, dev)
        rng = np.random.default_rng(int(self.random_state))
        g = torch.Generator().manual_seed(int(self.random_state))
        d, reg = int(self.factors), float(self.regularization)
        losses: list[float] = []
        with torch_threads(self.num_threads):
            uae = _AE(clicks.n_items, clicks.n_items, d, g, dev)
            iae = _AE(clicks.n_users, clicks.n_users, d, g, dev)
            opt_u, opt_i = (self._adam(ae, reg) for ae in (uae, iae))
            (to_ui_t,) = users.tensors(to_ui)
            for _ in range(int(self.iterations)):
                with torch.no_grad():  # BU targets: each model's predictions at the clicks
                    pu = torch.sigmoid(self._click_logits(uae, users))  # user-major order
                    pi = torch.sigmoid(self._click_logits(iae, items))  # item-major order
                loss_i = self._epoch(iae, opt_i, items, pu[to_ui_t], self.item_bu_weight, rng)
                loss_u = self._epoch(uae, opt_u, users, pi[_inverse(to_ui_t)], self.user_bu_weight,
                                     rng)  # fmt: skip
                losses.append(loss_i + loss_u)
            with torch.no_grad():
                h = self._hidden_all(uae, users)
                gi = self._hidden_all(iae, items)
        self.loss_curve_ = np.asarray(losses, np.float32)  # per epoch, without the L2 term
        self.user_ae_, self.item_ae_ = uae.numpy(), iae.numpy()
        ones_u = torch.ones(clicks.n_users, 1, device=dev)
        ones_i = torch.ones(clicks.n_items, 1, device=dev)
        with torch.no_grad():
            user_f = torch.cat([h, ones_u, iae.D, iae.c[:, None]], 1)
            item_f = 0.5 * torch.cat([uae.D, uae.c[:, None], gi, ones_i], 1)
        self._set_factors(user_f.cpu().numpy(), item_f.cpu().numpy(), clicks)
        return self

    def _adam(self, ae: _AE, reg: float) -> torch.optim.Adam:
        """Adam whose (coupled) weight decay adds reg·θ to the gradient: the gradient of
        ½·reg·‖θ‖², without computing the norm at every step."""
        fused = ae.E.device.type == "cpu"  # one fused kernel per step on the CPU
        return torch.optim.Adam(ae.params(), lr=float(self.learning_rate), weight_decay=reg,
                                fused=fused or None)  # fmt: skip

    def _hidden_all(self, ae: _AE, side: _Side) -> torch.Tensor:
        """Hidden codes of every input row, in chunks."""
        out = []
        for s in range(0, side.n_rows, _PRED_ROWS):
            _, cols, off = side.bag(np.arange(s, min(s + _PRED_ROWS, side.n_rows)))
            out.append(ae.hidden(*side.tensors(cols, off)))
        return torch.cat(out)

    def _click_logits(self, ae: _AE, side: _Side) -> torch.Tensor:
        """Logits at every clicked pair of `side`, in its CSR order (decoded in dense chunks)."""
        h = self._hidden_all(ae, side)
        step = max(1, _PRED_CELLS // side.n_out)
        out = []
        for s in range(0, side.n_rows, step):
            e = min(s + step, side.n_rows)
            a, b = side.indptr[s], side.indptr[e]
            rows = np.repeat(np.arange(e - s), np.diff(side.indptr[s : e + 1]))
            (flat,) = side.tensors(rows * side.n_out + side.indices[a:b])
            out.append(torch.addmm(ae.c, h[s:e], ae.D.T).reshape(-1)[flat])
        return torch.cat(out)

    def _epoch(
        self,
        ae: _AE,
        opt: torch.optim.Optimizer,
        side: _Side,
        target: torch.Tensor,
        bu_weight: float,
        rng: np.random.Generator,
    ) -> float:
        """One pass of Adam over all input rows in shuffled batches; returns the mean loss."""
        order = rng.permutation(side.n_rows)
        bs, clip, total = int(self.batch_size), float(self.clip), 0.0
        pgrad = bool(self.propensity_gradient)
        n_batches = 0
        for s in range(0, side.n_rows, bs):
            rows = order[s : s + bs]
            pos, cols, off = side.bag(rows)
            which = np.repeat(np.arange(len(rows)), np.diff(np.append(off, len(pos))))
            pos_t, cols_t, off_t, flat_t = side.tensors(pos, cols, off, which * side.n_out + cols)
            opt.zero_grad(set_to_none=True)
            h = ae.hidden(cols_t, off_t)
            pred = torch.sigmoid(h @ ae.D.T + ae.c)  # (B, n_out)
            clicked = pred.reshape(-1)[flat_t]
            prop = (clicked if pgrad else clicked.detach()).clamp(clip, 1.0)
            sipw = pred.pow(2).sum() + ((1.0 - 2.0 * clicked) / prop).sum()
            bu = (clicked - target[pos_t]).pow(2).sum()
            loss = (sipw + float(bu_weight) * bu) / pred.numel()  # + ½·reg·‖θ‖² via Adam
            loss.backward()
            opt.step()
            total += float(loss.detach())
            n_batches += 1
        return total / max(n_batches, 1)


def _inverse(perm: torch.Tensor) -> torch.Tensor:
    """The inverse of a permutation vector."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm), device=perm.device)
    return inv
