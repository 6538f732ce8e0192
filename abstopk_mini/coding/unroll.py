r"""Sparse coding solvers, and why one step of them is an SAE encoder.

The sparse coding problem for an activation :math:`x \in \mathbb R^d`, a dictionary
:math:`D \in \mathbb R^{d\times P}` with unit-norm columns (atoms) and an offset :math:`b`:

.. math::  \min_z\ \tfrac12\|x - b - Dz\|_2^2 + R(z).

**Proximal gradient.** The smooth part has gradient :math:`-D^\top(x - b - Dz)` and Lipschitz
constant :math:`L = \|D\|_2^2`. With a step :math:`\eta \le 1/L`,

.. math::  z^{t+1} = \operatorname{prox}_{\eta R}\big(z^t + \eta D^\top(x - b - Dz^t)\big).

For :math:`R = \lambda\|z\|_1` this is **ISTA** (FISTA adds momentum); for the constraint
:math:`\|z\|_0 \le k` it is **IHT** (iterative hard thresholding).

**One step from zero is an SAE encoder.** From :math:`z^0 = 0` the first iterate is

.. math::  z^1 = \operatorname{prox}_{\eta R}\big(\eta D^\top (x - b)\big),

a linear map of the centred input followed by a fixed nonlinearity. In the SAE's row
convention (``u = (x - b_dec) @ W_enc + b_enc``, ``z = σ(u)``) this is the encoder with

* ``W_enc = η·D``  [d_in, d_sae] (the encoder is the scaled transpose of the decoder),
* ``b_dec = b``    (the pre-encoder bias is the offset of the generative model),
* ``W_dec = Dᵀ``   [d_sae, d_in] (decoder rows are the atoms),
* the threshold of the prox folded into ``b_enc`` or into σ:

======================  ============================================  =====================
regularizer :math:`R`   :math:`\operatorname{prox}_{\eta R}(v)`      SAE encoder
======================  ============================================  =====================
λ‖z‖₁ + z ≥ 0           :math:`\max(v - \eta\lambda, 0)`              ``relu``, b_enc = −ηλ
λ‖z‖₀ + z ≥ 0           :math:`v\,H(v - \sqrt{2\eta\lambda})`          ``jumprelu``, θ = √(2ηλ)
λ‖z‖₀                   :math:`v\,H(|v| - \sqrt{2\eta\lambda})`        ``absjumprelu``, θ = √(2ηλ)
‖z‖₀ ≤ k, z ≥ 0         ReLU of the k largest :math:`v_i`             ``topk`` (scale-free)
‖z‖₀ ≤ k                the k largest :math:`|v_i|`, sign kept         ``abstopk`` (scale-free)
======================  ============================================  =====================

(Scaling: the prox of :math:`\eta\lambda\|\cdot\|_1` cuts at :math:`\eta\lambda`; the prox of
:math:`\eta\lambda\|\cdot\|_0` keeps :math:`v_i` when :math:`v_i^2/2 > \eta\lambda`, i.e. cuts at
:math:`\sqrt{2\eta\lambda}`; a projection onto a k-sparse set ignores η.) An SAE *learns*
``W_enc`` instead of fixing it to ηD: the encoder is amortised inference, one step of a solver
whose weights are trained to make that single step good. The nonnegativity constraint in the
first, second and fourth rows is an assumption of the model, not of sparse coding; dropping it
gives AbsJumpReLU and AbsTopK.

**Unrolling deeper (beyond the paper).** The AbsTopK paper leaves multi-step encoders as future
work. :class:`UnrolledSAE` runs T steps with learnable step sizes (LISTA, Gregor & LeCun 2010):

.. math::  z^1 = \sigma\big((x - b)W_{enc} + b_{enc}\big),\quad
           z^{t+1} = \sigma\big(z^t + s_t\,((x - b) - z^t W_{dec})\,W_{enc} + b_{enc}\big),

with shared or per-step (untied) encoder weights. With ``W_enc = ηD``, ``W_dec = Dᵀ``,
``b_enc = −ηλ`` (relu) and ``s_t = 1`` its iterates are exactly ISTA's (nonneg) or IHT's.

All solvers take x [B, d], D [d, P] (columns are atoms) and return z [B, P].
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from . import prox
from ..nonlinearities import SPECS, spec
from ..forward import DenseCode, TrainOutput
from ..sae import SAE, SAEConfig

__all__ = [
    "lipschitz", "lasso_objective", "ista", "fista", "iht", "one_step", "sae_from_dictionary",
    "UnrolledSAE", "ONE_STEP_ACTIVATIONS",
]

#: the activations that are one proximal-gradient step: all but the batch ones (a budget shared
#: by the rows of a batch is no prox of a per-row regularizer)
ONE_STEP_ACTIVATIONS = tuple(name for name, s in SPECS.items() if not s.per_batch)


def _one_step_spec(activation: str, where: str):
    s = SPECS.get(activation)
    if s is None or s.per_batch:
        known = tuple(name for name, t in SPECS.items() if not t.per_batch)
        raise ValueError(f"activation={activation!r}; {where} knows {known}")
    return s


# ----------------------------------------------------------------------------- checks
def _check_problem(x: torch.Tensor, D: torch.Tensor, b, normalize: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(D, torch.Tensor) or D.ndim != 2:
        raise ValueError(f"D must be a 2-D tensor [d, P] with atoms as columns; got {getattr(D, 'shape', type(D))}")
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a 2-D tensor [B, d]; got {getattr(x, 'shape', type(x))}")
    if x.shape[1] != D.shape[0]:
        raise ValueError(f"x has d={x.shape[1]} features but D has {D.shape[0]} rows; D must be [d, P] (atoms as columns)")
    norms = D.norm(dim=0)
    if normalize:
        D = D / norms.clamp_min(1e-12)
    elif not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
        raise ValueError(
            f"D's columns must have unit norm (got norms in [{norms.min().item():.4g}, {norms.max().item():.4g}]); "
            "pass D / D.norm(dim=0) or normalize=True"
        )
    b = torch.zeros(D.shape[0], dtype=x.dtype, device=x.device) if b is None else b.to(x.dtype)
    return x, D.to(x.dtype), b


def _check_steps(n_steps: int) -> None:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be an int >= 1; got {n_steps!r}")


def _check_lam(lam) -> None:
    if lam is None or lam < 0:
        raise ValueError(f"lam must be a number >= 0; got {lam!r}")


def lipschitz(D: torch.Tensor) -> float:
    r"""L = ‖D‖₂² (largest squared singular value), the Lipschitz constant of the gradient."""
    return torch.linalg.matrix_norm(D.double(), ord=2).item() ** 2


def lasso_objective(x, D, z, lam: float, b=None) -> torch.Tensor:
    r"""½‖x − b − Dz‖² + λ‖z‖₁ per row.  shape: x [B, d], D [d, P], z [B, P] -> [B]"""
    b = 0 if b is None else b
    return 0.5 * (x - b - z @ D.T).pow(2).sum(-1) + lam * z.abs().sum(-1)


def _gradient_step(z, x, D, b, step):
    """z + η Dᵀ(x − b − Dz) in row form.  shape: z [B, P] -> [B, P]"""
    return z + step * (x - b - z @ D.T) @ D


# ----------------------------------------------------------------------------- solvers
def ista(x, D, lam: float, n_steps: int, nonneg: bool = False, b=None, step: float | None = None,
         z0=None, normalize: bool = False, return_history: bool = False):
    r"""ISTA for ½‖x − b − Dz‖² + λ‖z‖₁ (+ z ≥ 0): z ← soft_threshold(z + ηDᵀ(x − b − Dz), ηλ).

    step: η, default 1/L. Returns z [B, P], or (z, objective per step [n_steps, B]) with
    ``return_history``. The objective never increases (for η ≤ 1/L).
    """
    x, D, b = _check_problem(x, D, b, normalize)
    _check_steps(n_steps)
    _check_lam(lam)
    eta = 1.0 / lipschitz(D) if step is None else step
    z = torch.zeros(x.shape[0], D.shape[1], dtype=x.dtype, device=x.device) if z0 is None else z0.clone()
    hist = []
    for _ in range(n_steps):
        z = prox.soft_threshold(_gradient_step(z, x, D, b, eta), eta * lam, nonneg=nonneg)
        if return_history:
            hist.append(lasso_objective(x, D, z, lam, b))
    return (z, torch.stack(hist)) if return_history else z


def fista(x, D, lam: float, n_steps: int, nonneg: bool = False, b=None, step: float | None = None,
          normalize: bool = False, return_history: bool = False):
    r"""FISTA (Beck & Teboulle 2009): ISTA's step taken at an extrapolated point y,

    z⁺ = prox(y + ηDᵀ(x − b − Dy)),  t⁺ = (1 + √(1 + 4t²))/2,  y⁺ = z⁺ + ((t − 1)/t⁺)(z⁺ − z).
    Converges as O(1/t²) in objective instead of ISTA's O(1/t).
    """
    x, D, b = _check_problem(x, D, b, normalize)
    _check_steps(n_steps)
    _check_lam(lam)
    eta = 1.0 / lipschitz(D) if step is None else step
    z = torch.zeros(x.shape[0], D.shape[1], dtype=x.dtype, device=x.device)
    y, t = z, 1.0
    hist = []
    for _ in range(n_steps):
        z_next = prox.soft_threshold(_gradient_step(y, x, D, b, eta), eta * lam, nonneg=nonneg)
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = z_next + ((t - 1) / t_next) * (z_next - z)
        z, t = z_next, t_next
        if return_history:
            hist.append(lasso_objective(x, D, z, lam, b))
    return (z, torch.stack(hist)) if return_history else z


def iht(x, D, k: int, n_steps: int, nonneg: bool = False, b=None, step: float | None = None,
        z0=None, normalize: bool = False, return_history: bool = False):
    r"""Iterative hard thresholding for min ½‖x − b − Dz‖² s.t. ‖z‖₀ ≤ k (+ z ≥ 0).

    z ← abs_topk(z + ηDᵀ(x − b − Dz), k)  (``topk`` when ``nonneg``). step: η, default 1.
    The gradient is only ever taken between k-sparse points, so what matters is the Lipschitz
    constant restricted to 2k-sparse vectors, ≈ 1 for unit-norm atoms of an incoherent dictionary
    (Blumensath & Davies 2009). The global 1/L = 1/‖D‖₂² is far smaller for an overcomplete D and
    leaves IHT stuck on wrong supports more often (measured: 70 % vs 99 % exact recovery, d=64,
    P=128, k=4). Returns z [B, P], or (z, squared error per step [n_steps, B]) with
    ``return_history``.
    """
    x, D, b = _check_problem(x, D, b, normalize)
    _check_steps(n_steps)
    project = (lambda v: prox.topk(v, k)) if nonneg else (lambda v: prox.abs_topk(v, k))
    eta = 1.0 if step is None else step
    z = torch.zeros(x.shape[0], D.shape[1], dtype=x.dtype, device=x.device) if z0 is None else z0.clone()
    hist = []
    for _ in range(n_steps):
        z = project(_gradient_step(z, x, D, b, eta))
        if return_history:
            hist.append(0.5 * (x - b - z @ D.T).pow(2).sum(-1))
    return (z, torch.stack(hist)) if return_history else z


# ----------------------------------------------------------------------------- one step = SAE
def _one_step_args(activation: str, eta: float, lam, k):
    """The activation's spec, after checking the arguments its prox needs (λ for a penalty, else k)."""
    s = _one_step_spec(activation, "one_step")
    if not eta > 0:
        raise ValueError(f"eta must be > 0; got {eta}")
    if s.penalty is not None:
        _check_lam(lam)
    elif k is None:
        raise ValueError(f"activation={activation!r} needs k")
    return s


def one_step(x, D, activation: str, *, eta: float, lam: float | None = None, k: int | None = None, b=None,
             normalize: bool = False) -> torch.Tensor:
    r"""One proximal-gradient step from z = 0: :math:`z^1 = \operatorname{prox}_{\eta R}(\eta D^\top(x - b))`.

    activation picks R (see the module table): ``relu`` (λ‖z‖₁ + z ≥ 0), ``jumprelu``
    (λ‖z‖₀ + z ≥ 0), ``absjumprelu`` (λ‖z‖₀), ``topk`` (‖z‖₀ ≤ k, z ≥ 0), ``abstopk`` (‖z‖₀ ≤ k).
    shape: x [B, d], D [d, P] -> z [B, P]
    """
    s = _one_step_args(activation, eta, lam, k)
    x, D, b = _check_problem(x, D, b, normalize)
    v = eta * (x - b) @ D
    if s.penalty == "l1":
        return prox.soft_threshold(v, eta * lam, nonneg=not s.signed)
    if s.penalty == "l0":
        return prox.hard_threshold(v, math.sqrt(2 * eta * lam), nonneg=not s.signed)
    return prox.abs_topk(v, k) if s.signed else prox.topk(v, k)


def sae_from_dictionary(D, activation: str, *, eta: float, lam: float | None = None, k: int | None = None,
                        b=None, normalize: bool = False, dtype: str = "float32") -> SAE:
    """The :class:`~abstopk_mini.sae.SAE` whose encoder is :func:`one_step` (and decoder is D).

    W_enc = η·D, W_dec = Dᵀ, b_dec = b, and the prox threshold in b_enc (relu: −ηλ) or in the
    JumpReLU threshold (√(2ηλ)). ``sae.encode(x) == one_step(x, D, activation, ...)``.
    """
    s = _one_step_args(activation, eta, lam, k)
    d, P = D.shape
    x_dummy = torch.zeros(1, d, dtype=D.dtype)
    _, D, b = _check_problem(x_dummy, D, b, normalize)
    cfg = SAEConfig(d_in=d, d_sae=P, activation=activation, k=k, dtype=dtype, device="cpu")
    sae = SAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(eta * D)
        sae.W_dec.copy_(D.T)
        sae.b_dec.copy_(b)
        sae.b_enc.zero_()
        if s.penalty == "l1":  # the soft threshold ηλ folded into the bias
            sae.b_enc.fill_(-eta * lam)
        elif s.penalty == "l0":  # the hard threshold √(2ηλ) is the JumpReLU's θ
            sae.threshold.fill_(math.sqrt(2 * eta * lam))
    return sae.eval()


# ----------------------------------------------------------------------------- unrolled encoder
class UnrolledSAE(SAE):
    r"""An SAE whose encoder runs ``n_steps`` proximal-gradient steps (LISTA-style; beyond the paper).

    .. math::  z^1 = \sigma(u^0),\ u^0 = (x_{in} - b_{dec})W_{enc} + b_{enc};\qquad
               z^{t+1} = \sigma\big(z^t + s_t\,((x_{in} - b_{dec}) - z^t W_{dec})\,W^{(t)}_{enc} + b^{(t)}_{enc}\big)

    with :math:`x_{in}` the SAE's input space (:meth:`~abstopk_mini.sae.SAE.to_sae_space`: s·x, or
    s·(x − μ)/(σ + ε) per token with ``cfg.input_unit_norm``; ``decode`` and ``forward`` map back
    to the raw space as the SAE does). ``n_steps = 1`` is exactly :class:`~abstopk_mini.sae.SAE`.
    ``tied=True`` shares W_enc and b_enc across steps; ``tied=False`` gives each step t ≥ 1 its own
    copy (initialised from the first; without ``cfg.use_b_enc`` every step's b_enc stays the zero
    buffer). ``step_sizes`` s_1..s_{T−1} start at 1 and are learned (``learn_steps``). Only the
    per-row activations (relu, the JumpReLUs, topk, abstopk) are supported: a batch-level budget
    has no per-step meaning. Decodes, trains (``train_sae(cfg, x, sae=UnrolledSAE(...))``) and
    renormalises like an SAE; ``save`` writes the first-step weights only, so use
    ``torch.save(state_dict())`` to keep every step.

    shape: x [B, d_in] -> z [B, d_sae]
    """

    def __init__(self, cfg: SAEConfig, n_steps: int = 2, tied: bool = True, learn_steps: bool = True):
        if spec(cfg.activation).per_batch:
            raise ValueError(f"UnrolledSAE supports activations {ONE_STEP_ACTIVATIONS}; got {cfg.activation!r}")
        _check_steps(n_steps)
        super().__init__(cfg)
        self.fast = False  # the sparse kernels of abstopk_mini.kernels.fast implement the one-step encoder only
        self.n_steps, self.tied = n_steps, tied
        extra = n_steps - 1
        self.step_sizes = nn.Parameter(torch.ones(extra, dtype=self.W_enc.dtype, device=self.W_enc.device),
                                       requires_grad=learn_steps)
        self.W_enc_steps, self.b_enc_steps = None, None
        if not tied and extra > 0:
            self.W_enc_steps = nn.ParameterList([nn.Parameter(self.W_enc.detach().clone()) for _ in range(extra)])
            if cfg.use_b_enc:  # else every step reads the zero buffer self.b_enc
                self.b_enc_steps = nn.ParameterList([nn.Parameter(self.b_enc.detach().clone()) for _ in range(extra)])

    @classmethod
    def from_sae(cls, sae: SAE, n_steps: int = 2, tied: bool = True, learn_steps: bool = True) -> "UnrolledSAE":
        """Start from a trained (or dictionary-built) SAE: same weights, more steps."""
        new = cls(dataclasses.replace(sae.cfg, device=str(sae.W_enc.device)), n_steps, tied, learn_steps)
        missing = new.load_state_dict(sae.state_dict(), strict=False).missing_keys
        with torch.no_grad():
            for t in range(n_steps - 1):
                if new.W_enc_steps is not None:
                    new.W_enc_steps[t].copy_(sae.W_enc)
                if new.b_enc_steps is not None:
                    new.b_enc_steps[t].copy_(sae.b_enc)
        assert all(k.startswith(("step_sizes", "W_enc_steps", "b_enc_steps")) for k in missing), missing
        return new

    def _step_weights(self, t: int):
        W = self.W_enc if self.W_enc_steps is None else self.W_enc_steps[t]
        b = self.b_enc if self.b_enc_steps is None else self.b_enc_steps[t]
        return W, b

    def _encode_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_in, last pre-activation, z).  shape: x [B, d_in] (raw) -> ([B, d_in], [B, d_sae], [B, d_sae])"""
        u = self.pre_acts(x)
        x_in = self.to_sae_space(x)
        z = self.act(u)
        centred = x_in - self.b_dec
        for t in range(self.n_steps - 1):
            W, b_enc = self._step_weights(t)
            u = z + self.step_sizes[t] * (centred - z @ self.W_dec) @ W + b_enc
            z = self.act(u)
        return x_in, u, z

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """shape: x [..., d_in] -> z [..., d_sae]"""
        lead = x.shape[:-1]
        z = self._encode_all(x.reshape(-1, x.shape[-1]))[2]
        return z.reshape(*lead, -1)

    def forward_train(self, x: torch.Tensor, sync=None, fast: bool = False) -> TrainOutput:
        """The dense path always (the sparse kernels implement the one-step encoder only; ``sync``
        and ``fast`` are accepted and ignored).  shape: x [B, d_in] -> TrainOutput"""
        x_in, u, z = self._encode_all(x)
        return TrainOutput(x_in, u, DenseCode(z), z @ self.W_dec + self.b_dec)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_steps={self.n_steps}, tied={self.tied}"
