r"""The encoder's starting scale: make the first reconstruction as large as the data.

At initialisation ``W_enc = W_decᵀ`` with unit atoms, so a latent's pre-activation is the input's
projection on its atom, :math:`u_i = \langle x - b_{dec}, w_i\rangle`, and the SAE reconstructs

.. math:: \hat x - b_{dec} = \sum_{i \in S} u_i\, w_i ,

the projections on the atoms the activation keeps (S: the k largest, or those over θ). With random
atoms these k terms are far from orthogonal to each other's errors, so :math:`\hat x - b_{dec}` is
on the right side of :math:`x - b_{dec}` but of the wrong size. Training then spends its first
steps only shrinking or growing the encoder, and Adam moves each weight by about the learning rate
per step: at 16,384 latents and lr 2e-4, hundreds of steps. Measured on Gemma-3-270M's layer 6
(``results/bench_train.txt``: 16,384 latents, k 64, batches of 128): TopK's held-out FVU after 100 steps
is 0.323 from the transpose and 0.226 from the fitted scale, after 1,000 steps 0.0834 and 0.0723.

The fix is one scalar. Every activation here is positively homogeneous of degree 1 in the
encoder's parameters ``(W_enc, b_enc, θ)``: multiplying all three by c > 0 multiplies u and the
thresholds it is compared with (θ, −b_enc, or the k-th largest score) by c, so the same latents
fire and z, and :math:`\hat x - b_{dec}`, are multiplied by c. The c that minimises
:math:`\sum_n \|x_n - b_{dec} - c\,(\hat x_n - b_{dec})\|^2` over a sample is the least-squares

.. math:: c = \frac{\sum_n \langle x_n - b_{dec},\ \hat x_n - b_{dec}\rangle}{\sum_n \|\hat x_n - b_{dec}\|^2},

clipped to ``[1 / MAX_SCALE, MAX_SCALE]``.

Where it helps (``results/encoder_init.jsonl``, ``results/bench_train.txt``): a lot when the start is a large
part of the run (16,384 latents, 1,000 steps: TopK −13 %); about 1 % for TopK, AbsTopK and JumpReLU at
2,048 latents and 586 steps of 1,024 tokens; and it *hurts* ReLU there (FVU 0.0989 → 0.1108, 34 % of
latents dead instead of 14 %), also with its starting l1 coefficient divided by c (0.1104). So it is an
option, not the default. :func:`fit_encoder_scale` applies it
(``TrainConfig.encoder_init = "least_squares"``; :func:`abstopk_mini.train.init_from_sample` calls
it after the input scale, ``b_dec`` and the starting sparsity are set).
"""

from __future__ import annotations

import torch

from .sparsity import INIT_ROWS

__all__ = ["fit_encoder_scale", "least_squares_scale", "MAX_SCALE"]

#: the fitted scale is kept within [1 / MAX_SCALE, MAX_SCALE] (a sample whose code is all zeros gives no scale)
MAX_SCALE = 1e3


def least_squares_scale(target: torch.Tensor, estimate: torch.Tensor) -> float:
    r"""The c > 0 that minimises Σ‖target − c·estimate‖², i.e. ⟨target, estimate⟩ / ‖estimate‖²
    summed over rows (in float64), clipped to [1 / MAX_SCALE, MAX_SCALE]; 1.0 when the estimate is 0.

    shape: target [n, d], estimate [n, d] -> float
    """
    if target.shape != estimate.shape:
        raise ValueError(f"target {tuple(target.shape)} and estimate {tuple(estimate.shape)} must have the same shape")
    t, e = target.double(), estimate.double()
    energy = e.pow(2).sum().item()
    if energy == 0.0:
        return 1.0
    c = (t * e).sum().item() / energy
    return min(MAX_SCALE, max(1.0 / MAX_SCALE, c))


@torch.no_grad()
def fit_encoder_scale(sae, sample: torch.Tensor, rows: int = INIT_ROWS) -> float:
    """Multiply the encoder's ``W_enc``, ``b_enc`` and threshold (where it has one) by the
    least-squares scale c of its reconstruction of ``sample`` (module docstring) and return c.

    The SAE must be in its starting state (its input scale and ``b_dec`` set); its code on the
    sample is then exactly c times the code before. It reads the sample's first ``rows`` rows, the
    ones the starting thresholds come from (:data:`abstopk_mini.sparsity.INIT_ROWS`); non-finite
    rows are left out.

    shape: sample [n, d_in] (raw, as the SAE reads it) -> float
    """
    x = sample[:rows].to(device=sae.W_enc.device, dtype=sae.W_enc.dtype)
    x = x[torch.isfinite(x).all(-1)]
    if x.shape[0] == 0:
        raise ValueError("the sample for the encoder's scale has no finite rows")
    out = sae.forward_train(x)
    c = least_squares_scale(out.x_in - sae.b_dec, out.x_hat - sae.b_dec)
    sae.W_enc.mul_(c)
    sae.b_enc.mul_(c)
    if sae.threshold is not None:
        sae.threshold.mul_(c)
    return c
