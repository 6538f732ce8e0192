r"""Proximal operators: the maps that turn one gradient step into an SAE encoder.

For a regularizer :math:`R` the proximal operator is

.. math::  \operatorname{prox}_R(u) = \arg\min_z \tfrac12 \|u - z\|_2^2 + R(z).

Sparse coding solves :math:`\min_z \tfrac12\|x - Dz - b\|^2 + R(z)` by proximal gradient
steps :math:`z \leftarrow \operatorname{prox}_{\eta R}(z + \eta D^\top(x - b - Dz))`.
One step from :math:`z = 0` is :math:`\operatorname{prox}_{\eta R}(\eta D^\top (x-b))`: a linear
map followed by the prox, which is exactly an SAE encoder (see :mod:`abstopk_mini.coding.unroll`).
Each choice of :math:`R` gives one SAE activation:

======================================  =================================  ====================
regularizer :math:`R(z)`                prox                               SAE activation
======================================  =================================  ====================
:math:`\lambda\|z\|_1`                  ``soft_threshold(u, lam)``         (signed ReLU)
:math:`\lambda\|z\|_1 + \iota_{z\ge0}`  ``soft_threshold(u, lam, True)``   ReLU(u - lam)
:math:`\lambda\|z\|_0`                  ``hard_threshold(u, sqrt(2 lam))`` AbsJumpReLU
:math:`\lambda\|z\|_0 + \iota_{z\ge0}`  ``hard_threshold(.., True)``       JumpReLU
:math:`\iota\{\|z\|_0\le k, z\ge0\}`    ``topk(u, k)``                     TopK
:math:`\iota\{\|z\|_0\le k\}`           ``abs_topk(u, k)``                 AbsTopK
======================================  =================================  ====================

(:math:`\iota_C` is 0 on the set C and :math:`+\infty` outside it.)

All functions act on the last dimension of a tensor ``u`` of shape ``[..., n]`` and return a
tensor of the same shape and dtype. They are the readable reference maps; the SAE module uses
its own (batched, differentiable, faster) versions and the tests check the two agree.

Ties. Where two entries are equally good for the last place in a top-k support, the entry
with the **lower index** wins. This is deterministic on every device (we sort with a stable
sort instead of relying on ``torch.topk``, whose tie order is unspecified).
"""

from __future__ import annotations

import math

import torch

__all__ = ["soft_threshold", "hard_threshold", "topk", "abs_topk", "l0_lambda_to_threshold"]


def _check_lam(lam, name: str = "lam") -> None:
    if isinstance(lam, torch.Tensor):
        if torch.any(lam < 0):
            raise ValueError(f"{name} must be >= 0 everywhere; got a tensor with min {lam.min().item():.3g}")
    elif lam < 0:
        raise ValueError(f"{name} must be >= 0; got {lam}. A threshold or penalty weight is never negative.")


def _check_k(k: int, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int; got {type(k).__name__} {k!r}")
    if not 0 <= k <= n:
        raise ValueError(f"k must satisfy 0 <= k <= n = {n} (the size of the last dim); got k={k}")


def soft_threshold(u: torch.Tensor, lam, nonneg: bool = False) -> torch.Tensor:
    r"""Prox of :math:`\lambda\|z\|_1` (plus :math:`\iota_{z\ge0}` if ``nonneg``).

    .. math::  z_i = \operatorname{sign}(u_i)\max(|u_i| - \lambda, 0)
               \qquad\text{nonneg: } z_i = \max(u_i - \lambda, 0) = \mathrm{ReLU}(u_i - \lambda).

    shape: u [..., n], lam scalar or broadcastable to u -> z [..., n]
    """
    _check_lam(lam)
    if nonneg:
        return torch.relu(u - lam)
    return torch.sign(u) * torch.relu(u.abs() - lam)


def hard_threshold(u: torch.Tensor, lam, nonneg: bool = False) -> torch.Tensor:
    r"""Keep :math:`u_i` where :math:`|u_i| > \lambda` (where :math:`u_i > \lambda` if ``nonneg``).

    Here ``lam`` is the **threshold** :math:`\theta`. This map is the prox of
    :math:`\tfrac{\theta^2}{2}\|z\|_0`: keeping :math:`u_i` costs :math:`\theta^2/2` of penalty and
    saves :math:`u_i^2/2` of squared error, so it pays exactly when :math:`|u_i| > \theta`.
    Equivalently, the prox of :math:`\lambda\|z\|_0` is ``hard_threshold(u, sqrt(2*lambda))``
    (see :func:`l0_lambda_to_threshold`). With ``nonneg=True`` it is the prox of
    :math:`\tfrac{\theta^2}{2}\|z\|_0 + \iota_{z\ge0}`, i.e. **JumpReLU** with threshold θ:
    :math:`z_i = u_i\,H(u_i - \theta)`. At :math:`|u_i| = \theta` both choices are optimal; we
    return 0 (strict inequality), the sparser one.

    shape: u [..., n], lam scalar or broadcastable to u -> z [..., n]
    """
    _check_lam(lam)
    keep = (u > lam) if nonneg else (u.abs() > lam)
    return torch.where(keep, u, torch.zeros_like(u))


def l0_lambda_to_threshold(lam: float) -> float:
    r"""The hard threshold :math:`\theta = \sqrt{2\lambda}` at which the prox of :math:`\lambda\|z\|_0` cuts."""
    _check_lam(lam)
    return math.sqrt(2.0 * lam)


def _stable_top_indices(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries of ``score`` along the last dim; ties -> lower index first."""
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices
    return order[..., :k]


def topk(u: torch.Tensor, k: int) -> torch.Tensor:
    r"""Projection onto :math:`\{z : \|z\|_0 \le k,\ z \ge 0\}` (the prox of its indicator): **TopK**.

    Keep the k largest :math:`u_i` and apply ReLU to them. The projection picks the support S
    that maximises :math:`\sum_{i\in S}\max(u_i,0)^2`, which is any set of k largest entries;
    negative entries among them become 0, so fewer than k entries may be non-zero.

    shape: u [..., n] -> z [..., n], at most k non-zeros per row
    """
    _check_k(k, u.shape[-1])
    idx = _stable_top_indices(u, k)
    z = torch.zeros_like(u)
    return z.scatter(-1, idx, torch.relu(u.gather(-1, idx)))


def abs_topk(u: torch.Tensor, k: int) -> torch.Tensor:
    r"""Projection onto :math:`\{z : \|z\|_0 \le k\}` (no sign constraint): **AbsTopK**.

    Keep the k entries of largest :math:`|u_i|` **with their sign**; zero the rest. The projection
    maximises :math:`\sum_{i\in S} u_i^2` over supports :math:`|S| = k`.

    shape: u [..., n] -> z [..., n], at most k non-zeros per row
    """
    _check_k(k, u.shape[-1])
    idx = _stable_top_indices(u.abs(), k)
    z = torch.zeros_like(u)
    return z.scatter(-1, idx, u.gather(-1, idx))
