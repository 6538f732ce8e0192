r"""The training losses, as small pure functions of tensors.

The SAE loss is reconstruction plus a sparsity term that depends on the activation:

.. math::
    \mathcal L = \underbrace{\tfrac1B\sum_b \|x_b - \hat x_b\|^2}_{\text{mse}}
    \;+\; \begin{cases}
      \lambda_1 \tfrac1B\sum_b \|z_b\|_1 & \text{relu (the l1 that ReLU is the prox of)}\\
      \lambda_0 \bar L_0 & \text{(abs)jumprelu, no target; STE for } \theta\\
      \lambda_0 \tfrac{2}{L_0^*}(\bar L_0 - L_0^*)^2 & \text{(abs)jumprelu with a target } L_0^*\\
      \alpha\,\mathcal L_{\text{aux}} & \text{top-k family (revives dead latents)}
    \end{cases}

with :math:`\bar L_0 = \tfrac1B\sum_b \sum_i H(|u_{bi}| - \theta_i)` the batch's mean L0 (STE gradient
for θ). All in the scaled input space (see :mod:`abstopk_mini.sae`). Decoder rows have unit norm, so
the l1 term needs no decoder-norm factor.
"""

from __future__ import annotations

import torch

from .metrics import sum_sq_centred, sum_sq_error

__all__ = ["mse", "batch_fvu", "l1_penalty", "two_sided_l0", "auxk_loss"]


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Squared error summed over features, averaged over rows.  shape: [B, d] -> scalar"""
    return (x_hat - x).pow(2).sum(-1).mean()


@torch.no_grad()
def batch_fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """FVU on one batch (for logging): the formula of :func:`abstopk_mini.metrics.fvu`, kept as a
    tensor in the batch's dtype and device (no float64 copy and no host sync inside the training
    step) and with the denominator clamped, so a constant batch logs a large number, not inf.
    shape: [B, d] -> scalar"""
    return sum_sq_error(x, x_hat) / sum_sq_centred(x).clamp_min(1e-12)


def l1_penalty(z: torch.Tensor) -> torch.Tensor:
    """Mean l1 norm of the codes.  shape: z [B, d_sae] -> scalar"""
    return z.abs().sum(-1).mean()


def two_sided_l0(mean_l0: torch.Tensor, target_l0: float) -> torch.Tensor:
    r"""The two-sided L0 term :math:`\tfrac{2}{L_0^*}(\bar L_0 - L_0^*)^2` of a batch's mean L0.

    Its gradient :math:`\tfrac{4}{L_0^*}(\bar L_0 - L_0^*)\,\partial \bar L_0` raises θ when the
    code is too dense and lowers it when too sparse; a one-sided :math:`\lambda \bar L_0` can only
    raise it. It is Gemma Scope 2's quadratic L0 loss (SAELens's ``jumprelu_sparsity_loss_mode=
    "quadratic"``) taken on the batch's mean instead of per row: the per-row form also penalises
    the spread of L0 across tokens, which pulled the mean L0 under its target on our harvest
    (:mod:`abstopk_mini.sparsity`).  shape: mean_l0 scalar -> scalar"""
    return 2.0 / target_l0 * (mean_l0 - target_l0) ** 2


def auxk_loss(
    residual: torch.Tensor,
    u: torch.Tensor,
    W_dec: torch.Tensor,
    dead: torch.Tensor,
    k_aux: int,
    signed: bool,
) -> torch.Tensor:
    r"""AuxK loss (Gao et al., 2024): let the dead latents explain what the live ones missed.

    Among dead latents only, keep the ``k_aux`` largest pre-activations (by :math:`|u|` with sign
    kept when ``signed``, else ReLU(u)), decode them without bias and regress the detached
    residual :math:`e = x - \hat x`:  :math:`\|e - \hat e\|^2`, scaled by
    :math:`\min(n_\text{dead} / k_\text{aux}, 1)` so a few dead latents do not get a full-size loss.
    Returns 0 when nothing is dead.

    shape: residual [B, d_in], u [B, d_sae], W_dec [d_sae, d_in], dead [d_sae] bool -> scalar
    """
    n_dead = int(dead.sum())
    if n_dead == 0:
        return u.new_zeros(())
    k = min(k_aux, n_dead)
    score = u.abs() if signed else torch.relu(u)
    score = score.masked_fill(~dead, -1.0)
    idx = score.topk(k, dim=-1, sorted=False).indices  # [B, k]
    vals = u.gather(-1, idx) if signed else torch.relu(u.gather(-1, idx))
    e_hat = torch.zeros_like(u).scatter(-1, idx, vals) @ W_dec
    scale = min(n_dead / k_aux, 1.0)
    return scale * (e_hat - residual.detach()).pow(2).sum(-1).mean()
