r"""The SAE activation functions: each one is the proximal map of a sparsity regularizer.

An SAE encoder computes the pre-activation :math:`u = (x - b_{dec})W_{enc} + b_{enc}` and then
:math:`z = \sigma(u)`. Each :math:`\sigma` below is a prox from :mod:`abstopk_mini.coding.prox`, made
trainable:

=================  ===============================================  ===========================
name               map (per row of u)                               regularizer
=================  ===============================================  ===========================
``relu``           :math:`\max(u, 0)`                               :math:`\ell_1` + nonneg (b_enc = -λ)
``jumprelu``       :math:`u\,H(u - \theta_i)`, θ learned per latent  :math:`\ell_0` + nonneg
``absjumprelu``    :math:`u\,H(|u| - \theta_i)`, sign kept           :math:`\ell_0`
``topk``           ReLU of the k largest :math:`u_i`                :math:`\|z\|_0\le k,\ z\ge 0`
``abstopk``        the k largest :math:`|u_i|`, sign kept            :math:`\|z\|_0\le k`
``batchtopk``      top :math:`kB` of ReLU(u) over the whole batch    same, budget shared by B rows
``batchabstopk``   top :math:`kB` of :math:`|u|` over the batch     same, sign kept
=================  ===============================================  ===========================

Gradients. TopK-style maps are piecewise linear: autograd passes the gradient to the kept
entries and nothing to the rest. JumpReLU's threshold gets a straight-through estimate with a
rectangle kernel :math:`K(t) = \mathbb 1\{|t| < \tfrac12\}` of bandwidth ε
(Rajamanoharan et al., 2024):

.. math::  \frac{\partial}{\partial\theta}\,u\,H(u-\theta) \approx -\frac{\theta}{\varepsilon}
           K\!\left(\frac{u-\theta}{\varepsilon}\right),\qquad
           \frac{\partial}{\partial\theta}\,H(u-\theta) \approx -\frac{1}{\varepsilon}
           K\!\left(\frac{u-\theta}{\varepsilon}\right).

The signed version puts :math:`|u|` inside H and K; its first estimate is :math:`-\operatorname{sign}(u)\,\theta/\varepsilon\cdot K(\cdot)`.

Batch variants train with a budget of :math:`kB` non-zeros for a batch of B rows and keep a
running estimate of the smallest value they kept (the ``threshold`` buffer); in ``eval()`` mode
they apply that global threshold row by row, so inference does not depend on the batch. Their
selection is :meth:`BatchTopK.keep`, the one implementation the module's forward and the fast path
(:func:`abstopk_mini.kernels.fast.select`, across distributed ranks too) both run.

Each module owns its training penalty, ``penalty_term(out, target_l0)`` of a :class:`~abstopk_mini.forward.TrainOutput`
(l1 of z; the STE l0 of u, two-sided around a given target: ``steers_itself``); the top-k family's is None (AuxK).

Each activation is described once, by its :class:`ActivationSpec` in :data:`SPECS`; the SAE, the fast path,
training, SAELens interop, unrolling, the CLI and the figures read the spec instead of testing names.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

from .losses import l1_penalty, two_sided_l0

__all__ = [
    "ActivationSpec",
    "SPECS",
    "spec",
    "activation_named",
    "SIGNED_ACTIVATIONS",
    "check_threshold_settings",
    "ACTIVATIONS",
    "K_ACTIVATIONS",
    "THRESHOLD_ACTIVATIONS",
    "ReLU",
    "JumpReLU",
    "AbsJumpReLU",
    "TopK",
    "AbsTopK",
    "BatchTopK",
    "BatchAbsTopK",
    "make_activation",
]


# ----------------------------------------------------------------------------- JumpReLU maths
def _rectangle(t: torch.Tensor) -> torch.Tensor:
    return (t.abs() < 0.5).to(t.dtype)


class _JumpReLUFn(torch.autograd.Function):
    """z = u * H(s(u) - θ) with s(u) = u (plain) or |u| (signed); STE gradient for θ."""

    @staticmethod
    def forward(ctx, u, threshold, bandwidth: float, signed: bool):
        s = u.abs() if signed else u
        mask = s > threshold
        ctx.save_for_backward(u, threshold, mask)
        ctx.bandwidth, ctx.signed = bandwidth, signed
        return torch.where(mask, u, torch.zeros_like(u))

    @staticmethod
    def backward(ctx, grad_z):
        u, threshold, mask = ctx.saved_tensors
        eps, signed = ctx.bandwidth, ctx.signed
        s = u.abs() if signed else u
        grad_u = grad_z * mask.to(u.dtype)
        jump = threshold * (torch.sign(u) if signed else 1.0)
        grad_theta = -(jump / eps) * _rectangle((s - threshold) / eps) * grad_z
        grad_theta = grad_theta.reshape(-1, u.shape[-1]).sum(0)
        return grad_u, grad_theta, None, None


class _StepFn(torch.autograd.Function):
    """H(s(u) - θ), the per-entry L0 count, with the STE gradient for θ (none for u)."""

    @staticmethod
    def forward(ctx, u, threshold, bandwidth: float, signed: bool):
        s = u.abs() if signed else u
        ctx.save_for_backward(s, threshold)
        ctx.bandwidth = bandwidth
        return (s > threshold).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_h):
        s, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = -(1.0 / eps) * _rectangle((s - threshold) / eps) * grad_h
        return None, grad_theta.reshape(-1, s.shape[-1]).sum(0), None, None


# ----------------------------------------------------------------------------- modules
def check_threshold_settings(threshold_init, bandwidth, where: str = "") -> None:
    """Raise unless the JumpReLU settings are usable: a finite ``bandwidth > 0`` (the STE kernel
    width ε divides the gradient, so ε = 0, NaN or Inf gives NaN/Inf or zero gradients) and a
    finite ``threshold_init >= 0`` (an infinite θ never fires and never learns)."""
    for name, value, ok, need in (("bandwidth", bandwidth, lambda v: v > 0, "> 0"),
                                  ("threshold_init", threshold_init, lambda v: v >= 0, ">= 0")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{where}{name} must be a number; got {type(value).__name__} {value!r}")
        if not (math.isfinite(value) and ok(value)):
            raise ValueError(f"{where}{name} must be a finite number {need}; got {value!r} "
                             f"(the default is 1e-3, in units of the scaled input)")


class ReLU(nn.Module):
    """z = max(u, 0), trained with the l1 penalty that ReLU is the prox of (:meth:`penalty_term`)."""

    name = "relu"
    steers_itself = False  # l1 only pushes towards sparser codes: training steers λ (sparsity.next_coefficient)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """shape: u [..., d_sae] -> z [..., d_sae]"""
        return torch.relu(u)

    def penalty_term(self, out, target_l0: float | None = None) -> torch.Tensor:
        """The mean l1 norm of the codes (:func:`~abstopk_mini.losses.l1_penalty`; target_l0 unread).  shape: -> scalar"""
        return l1_penalty(out.z)


class JumpReLU(nn.Module):
    """z = u * H(u - θ) with a learned threshold θ [d_sae] (kept >= 0)."""

    name = "jumprelu"
    signed = False
    steers_itself = True  # with a target, the penalty pulls L0 to it from both sides (a fixed coefficient)

    def __init__(self, d_sae: int, threshold_init: float = 1e-3, bandwidth: float = 1e-3):
        super().__init__()
        check_threshold_settings(threshold_init, bandwidth)
        self.threshold = nn.Parameter(torch.full((d_sae,), float(threshold_init)))
        self.bandwidth = float(bandwidth)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """shape: u [..., d_sae] -> z [..., d_sae]"""
        return _JumpReLUFn.apply(u, self.threshold, self.bandwidth, self.signed)

    def l0(self, u: torch.Tensor) -> torch.Tensor:
        """Differentiable (w.r.t. θ) count of active latents per row. shape: [..., d_sae] -> [...]"""
        return _StepFn.apply(u, self.threshold, self.bandwidth, self.signed).sum(-1)

    def penalty_term(self, out, target_l0: float | None = None) -> torch.Tensor:
        r"""The batch's mean STE l0 :math:`\bar L_0` (:meth:`l0` of ``out.u``; its gradient moves θ), or with
        a target the two-sided :func:`~abstopk_mini.losses.two_sided_l0` of it.  shape: -> scalar"""
        mean_l0 = self.l0(out.u).mean()
        return mean_l0 if target_l0 is None else two_sided_l0(mean_l0, target_l0)

    @torch.no_grad()
    def post_step(self) -> None:
        self.threshold.clamp_(min=0.0)


class AbsJumpReLU(JumpReLU):
    """z = u * H(|u| - θ): the signed JumpReLU (prox of a per-latent l0 penalty, no sign constraint)."""

    name = "absjumprelu"
    signed = True


class TopK(nn.Module):
    """ReLU of the k largest entries of each row (Gao et al., 2024)."""

    name = "topk"
    signed = False

    def __init__(self, k: int):
        super().__init__()
        self.k = int(k)

    def select(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept values and their latent indices. shape: u [..., d_sae] -> (vals [..., k], idx [..., k])"""
        if self.signed:
            idx = u.abs().topk(self.k, dim=-1, sorted=False).indices
            return u.gather(-1, idx), idx
        vals, idx = u.topk(self.k, dim=-1, sorted=False)
        return torch.relu(vals), idx

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """shape: u [..., d_sae] -> z [..., d_sae] with at most k non-zeros per row"""
        vals, idx = self.select(u)
        return torch.zeros_like(u).scatter(-1, idx, vals)

    def penalty_term(self, out, target_l0: float | None = None) -> None:
        """None: k bounds the code's L0 itself; training adds AuxK on dead latents instead."""
        return None


class AbsTopK(TopK):
    """The k entries of largest |u| of each row, sign kept: the AbsTopK SAE."""

    name = "abstopk"
    signed = True


class BatchTopK(nn.Module):
    """Top k·B of ReLU(u) over a batch of B rows in training; a global threshold in eval mode.

    Training: the k·B largest entries of ReLU(u) (``BatchAbsTopK``: of |u|, sign kept) over the
    flattened [B, d_sae] batch, as in the paper's code (``BatchTopKSAE``/``BatchAbsoluteKSAE``).
    ``threshold`` (a scalar buffer, -1 until the first training batch) is an exponential moving
    average (momentum 0.99) of the smallest positive score kept in each training batch (Bussmann
    et al., 2024). Eval: keep score > threshold, row by row, so a token's code does not depend on
    its batch; before any training batch, a per-row top-k. The paper's code has no threshold and
    selects over the batch at inference too; :meth:`forward_batch` replays that in any mode
    without moving the threshold (``evaluate_sae(..., inference="batch")`` uses it).
    """

    name = "batchtopk"
    signed = False

    def __init__(self, k: int, threshold_momentum: float = 0.99):
        super().__init__()
        self.k = int(k)
        self.momentum = float(threshold_momentum)
        self.register_buffer("threshold", torch.tensor(-1.0))

    def score(self, u: torch.Tensor) -> torch.Tensor:
        """What selection ranks: |u| (signed) or ReLU(u).  shape: u [..., d_sae] -> [..., d_sae]"""
        return u.abs() if self.signed else torch.relu(u)

    @torch.no_grad()
    def keep(self, u: torch.Tensor, sync=None) -> torch.Tensor:
        """The entries kept, as flat indices ``row·d_sae + col`` into ``u.reshape(-1, d_sae)`` (any order).

        Training: the k·B largest positive scores of the batch, and the running threshold moves
        towards the smallest of them. With ``sync`` (a :class:`~abstopk_mini.distributed.Sync`,
        B rows on each of R ranks) the budget k·B·R and the cut are global: every rank keeps its
        entries with score ≥ the (k·B·R)-th largest score of all ranks, and all ranks move the
        threshold alike, so DDP keeps exactly what one process keeps on the whole batch. Eval:
        score > threshold; before any training batch, a per-row top-k of the positive scores.
        :func:`abstopk_mini.kernels.fast.select` and :meth:`forward` both select here.

        shape: u [..., d_sae] -> long [N]
        """
        score = self.score(u).reshape(-1, u.shape[-1])
        if not self.training:
            if self.threshold < 0:  # never trained: fall back to a per-row top-k
                idx = score.topk(self.k, dim=-1, sorted=False).indices
                keep = torch.zeros_like(score, dtype=torch.bool).scatter(-1, idx, True) & (score > 0)
            else:
                keep = score > self.threshold
            return keep.reshape(-1).nonzero().squeeze(1)
        idx, kept_all = self._top_of_batch(score, sync)
        if kept_all.numel():
            smallest = kept_all.min().to(self.threshold.dtype)
            if self.threshold < 0:
                self.threshold.copy_(smallest)
            else:
                self.threshold.mul_(self.momentum).add_((1 - self.momentum) * smallest)
        return idx

    def _top_of_batch(self, score: torch.Tensor, sync=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch-level selection of :meth:`keep` (training mode), without touching ``threshold``:
        (flat indices kept [N], the positive scores kept across all ranks [M]).  shape: score [B, d_sae]"""
        flat = score.reshape(-1)
        world = sync.world_size if sync is not None else 1
        n_keep = min(self.k * score.shape[0] * world, flat.numel() * world)
        vals, idx = flat.topk(min(n_keep, flat.numel()), sorted=False)
        if world > 1:  # the global n_keep-th score decides, on every rank alike
            top = sync.all_gather(vals).topk(n_keep, sorted=False).values
            kept = (vals >= top.min()) & (vals > 0)
            kept_all = top[top > 0]
        else:
            kept = vals > 0
            kept_all = vals[kept]
        return idx[kept], kept_all

    @torch.no_grad()
    def keep_batch(self, u: torch.Tensor) -> torch.Tensor:
        """The training-mode selection in any mode, leaving ``threshold`` as it is: the k·B largest
        positive scores of the B rows of ``u`` (the paper's code selects so at inference too).

        shape: u [..., d_sae] -> long [N], flat indices as :meth:`keep`
        """
        return self._top_of_batch(self.score(u).reshape(-1, u.shape[-1]))[0]

    def _code(self, u: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        src = (u if self.signed else torch.relu(u)).reshape(-1)
        return torch.zeros_like(src).scatter(0, idx, src.gather(0, idx)).reshape(u.shape)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """shape: u [..., d_sae] -> z [..., d_sae]; in training the k·B budget is shared by all rows"""
        return self._code(u, self.keep(u))

    def forward_batch(self, u: torch.Tensor) -> torch.Tensor:
        """z with the k·B budget shared by the B rows of ``u`` whatever the mode (:meth:`keep_batch`);
        ``threshold`` is not moved.  shape: u [..., d_sae] -> z [..., d_sae]"""
        return self._code(u, self.keep_batch(u))

    def penalty_term(self, out, target_l0: float | None = None) -> None:
        """None: the k·B budget bounds the code's L0 itself; training adds AuxK on dead latents instead."""
        return None


class BatchAbsTopK(BatchTopK):
    """Top k·B of |u| over the batch, sign kept; a global threshold on |u| in eval mode."""

    name = "batchabstopk"
    signed = True


@dataclass(frozen=True)
class ActivationSpec:
    """Everything the package knows about one activation, in one place.

    The SAE, the fast path, training, SAELens interop, unrolling and the book's figures read these
    fields; adding an activation is one module class, one spec here, and its tests (how the book
    names and draws it, its label, colour and marker, lives beside the figures, keyed by ``name``:
    :mod:`abstopk_mini.chapters.palette`).

    name: the ``SAEConfig.activation`` string. module: the class that computes z = σ(u).
    prox: the proximal map it is, as a formula (see :mod:`abstopk_mini.coding.prox`).
    signed: codes keep their sign (no nonnegativity constraint).
    selection: ``"row"`` (k per row), ``"batch"`` (k·B over a batch of B rows) or ``"threshold"``
    (elementwise: a fixed 0 for ReLU, a learned θ per latent for the JumpReLUs).
    param: ``"k"`` (needs ``cfg.k``), ``"threshold"`` (learned θ, ``cfg.threshold_init`` and
    ``cfg.bandwidth``) or ``None``. penalty: the sparsity term training adds (``"l1"``, ``"l0"``)
    or ``None`` for the top-k family, which trains with AuxK on dead latents instead.
    architecture: the ``architecture`` written to cfg.json (SAELens names where they exist).
    """

    name: str
    module: type
    prox: str
    signed: bool
    selection: str
    param: str | None
    penalty: str | None
    architecture: str

    @property
    def k_based(self) -> bool:
        return self.param == "k"

    @property
    def threshold_based(self) -> bool:
        return self.param == "threshold"

    @property
    def per_batch(self) -> bool:
        return self.selection == "batch"

    @property
    def aux(self) -> bool:
        """Trains with the AuxK loss on dead latents (the top-k family)."""
        return self.penalty is None

    @property
    def coefficient_field(self) -> str:
        """The :class:`~abstopk_mini.train_config.TrainConfig` field that weighs the penalty,
        ``"<penalty>_coefficient"``; the top-k family has no penalty and reads ``l0_coefficient``
        (its value is only logged, as the history's ``coef``)."""
        return f"{self.penalty or 'l0'}_coefficient"


#: one spec per activation, the single source of what an activation is
SPECS: dict[str, ActivationSpec] = {spec.name: spec for spec in (
    ActivationSpec("relu", ReLU, "ReLU(u) = prox of λ‖z‖₁ + ι(z ≥ 0) with b_enc = −λ", False, "threshold", None,
                   "l1", "standard"),
    ActivationSpec("jumprelu", JumpReLU, "u·H(u − θ) = prox of ‖z‖₀ penalties + ι(z ≥ 0)", False, "threshold",
                   "threshold", "l0", "jumprelu"),
    ActivationSpec("absjumprelu", AbsJumpReLU, "u·H(|u| − θ) = prox of ‖z‖₀ penalties", True, "threshold",
                   "threshold", "l0", "absjumprelu"),
    ActivationSpec("topk", TopK, "ReLU of the k largest u_i = projection on {‖z‖₀ ≤ k, z ≥ 0}", False, "row", "k",
                   None, "topk"),
    ActivationSpec("abstopk", AbsTopK, "the k largest |u_i|, sign kept = projection on {‖z‖₀ ≤ k}", True, "row", "k",
                   None, "abstopk"),
    ActivationSpec("batchtopk", BatchTopK, "top k·B of ReLU(u) over a batch of B rows", False, "batch", "k", None,
                   "batchtopk"),
    ActivationSpec("batchabstopk", BatchAbsTopK, "top k·B of |u| over a batch of B rows, sign kept", True, "batch",
                   "k", None, "batchabstopk"),
)}

ACTIVATIONS: dict[str, type[nn.Module]] = {name: spec.module for name, spec in SPECS.items()}
#: activations that take ``k`` (a fixed number of non-zeros per row, or per row on average)
K_ACTIVATIONS = tuple(name for name, spec in SPECS.items() if spec.k_based)
#: activations with a learned per-latent threshold
THRESHOLD_ACTIVATIONS = tuple(name for name, spec in SPECS.items() if spec.threshold_based)
#: activations whose codes keep their sign
SIGNED_ACTIVATIONS = tuple(name for name, spec in SPECS.items() if spec.signed)


def spec(name: str) -> ActivationSpec:
    """The spec of activation ``name``; a clear error for an unknown one."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"activation={name!r} is not known; choose one of {sorted(SPECS)}") from None


def activation_named(activation: str | None, architecture: str | None, where="cfg.json") -> str:
    """The activation a saved config names: its ``activation``, else the one its ``architecture``
    names (:attr:`ActivationSpec.architecture`, one-to-one); the two must agree. ``activation`` is
    never guessed: a default would silently make an unsigned SAE signed or the reverse. ``where``
    (the file) starts each error message."""
    by_architecture = {s.architecture: name for name, s in SPECS.items()}
    if architecture is not None and architecture not in by_architecture:
        raise ValueError(f"{where} has architecture={architecture!r}, which is not one of "
                         f"{sorted(by_architecture)}; fix the file or re-train the SAE")
    if activation is None:
        if architecture is None:
            raise ValueError(f"{where} names neither an activation nor an architecture; add "
                             f"\"activation\": one of {sorted(SPECS)}, or re-train the SAE")
        return by_architecture[architecture]
    if activation not in SPECS:
        raise ValueError(f"{where} has activation={activation!r}; choose one of {sorted(SPECS)}")
    if architecture is not None and SPECS[activation].architecture != architecture:
        raise ValueError(f"{where} says activation={activation!r} but architecture={architecture!r} (which is "
                         f"{by_architecture[architecture]!r}); the file was edited — fix one of the two or re-train the SAE")
    return activation


def make_activation(cfg) -> nn.Module:
    """Build the activation module an :class:`~abstopk_mini.sae.SAEConfig` asks for."""
    s = spec(cfg.activation)
    if s.k_based:
        return s.module(cfg.k)
    if s.threshold_based:
        return s.module(cfg.d_sae, cfg.threshold_init, cfg.bandwidth)
    return s.module()
