r"""One SAE on held-out activations: reconstruction, sparsity, latent health and signs in one pass.

:func:`evaluate_sae` streams activations x [N, d_in] through the SAE ``batch_size`` rows at a time
(the codes of N tokens are never held at once) and reports

* ``fvu`` :math:`= \sum_n\|x_n - \hat x_n\|^2 / \sum_n\|x_n - \bar x\|^2`, the numerator summed
  over batches and the denominator over all of x, both by the functions of
  :func:`abstopk_mini.metrics.fvu` (in float64), so it equals ``metrics.fvu(x, sae.decode(sae.encode(x)))``;
* ``l0``, ``dead_frac``, ``dense_frac`` (rate > 10 %), ``negative_share`` (of all non-zeros) and
  ``bidirectional_frac`` (bidirectional latents / alive latents): :class:`abstopk_mini.codestats.CodeStats`;
* ``antipodal_pairs``: pairs of decoder rows with cosine below −0.9 (:func:`abstopk_mini.metrics.antipodal_pairs`).

Used by ``python -m abstopk_mini reproduce`` / ``eval``, the sweep and chapters 6–8.
"""

from __future__ import annotations

import torch

from . import metrics
from .codestats import CodeStats, iter_batches

__all__ = ["evaluate_sae"]


@torch.no_grad()
def evaluate_sae(sae, x: torch.Tensor, batch_size: int = 4096, min_share: float = 0.1) -> dict:
    """FVU, L0, dead and dense fractions and sign statistics of ``sae`` on activations x (module
    docstring); ``bidirectional_frac`` is over latents alive on x, with ``min_share`` the share
    each sign must hold.  shape: x [N, d_in] -> dict of floats (and an int)"""
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty tensor [N, d_in]; got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    stats = CodeStats.zeros(sae.cfg.d_sae)
    sq_err = 0.0
    for xb in iter_batches(x, batch_size):
        z = sae.encode(xb)
        sq_err += metrics.sum_sq_error(xb.double(), sae.decode(z).double()).item()
        stats.add(z)
    return {
        "fvu": sq_err / metrics.sum_sq_centred(x.double()).item(),
        "l0": stats.l0,
        "dead_frac": stats.dead_fraction(),
        "dense_frac": stats.dense_fraction(),
        "bidirectional_frac": stats.bidirectional_fraction(min_share),
        "negative_share": stats.negative_share(),
        "antipodal_pairs": metrics.antipodal_pairs(sae.W_dec.detach()),
    }
