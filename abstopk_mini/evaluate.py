r"""One SAE on held-out activations: reconstruction, sparsity, latent health and signs in one pass.

:func:`evaluate_sae` streams activations x [N, d_in] through the SAE ``batch_size`` rows at a time
(the codes of N tokens are never held at once) and reports

* ``fvu`` :math:`= \sum_n\|x_n - \hat x_n\|^2 / \sum_n\|x_n - \bar x\|^2` in the raw space of x
  (a standardising SAE's reconstruction is mapped back with each token's μ, σ first), the
  numerator summed over batches and the denominator over all of x, both by the functions of
  :func:`abstopk_mini.metrics.fvu` (in float64), so with the default inference it equals
  ``metrics.fvu(x, sae.decode(sae.encode(x), sae.input_stats(x)))``; like it, a ValueError on x
  without variance (every row the same), where FVU is undefined (:func:`abstopk_mini.metrics.check_variance`);
* ``mse_std``, only for an SAE with ``cfg.input_unit_norm``: the paper's per-token normalised MSE,
  :math:`\frac1N\sum_n \|\tilde x_n - \hat{\tilde x}_n\|^2 / d_{in}` in the standardised space
  :math:`\tilde x = (x - \mu(x))/(\sigma(x) + \varepsilon)` (:func:`abstopk_mini.sae.standardize`),
  with :math:`\hat{\tilde x} = (z W_{dec} + b_{dec})/s` — the SAE's reconstruction before it is
  mapped back (the input scale s divided out, so with s = 1 it is the paper's ``l2_loss``, the
  mean of squares over tokens and dimensions). Since :math:`\|\tilde x\|^2/d_{in} \approx
  (d_{in}-1)/d_{in}`, it reads as a per-token fraction of variance unexplained;
* ``l0``, ``dead_frac``, ``dense_frac`` (rate > 10 %), ``negative_share`` (of all non-zeros) and
  ``bidirectional_frac`` (bidirectional latents / alive latents): :class:`abstopk_mini.codestats.CodeStats`;
* ``antipodal_pairs``: pairs of decoder rows with cosine below −0.9 (:func:`abstopk_mini.metrics.antipodal_pairs`).

Inference of the batch-level activations (``batchtopk``, ``batchabstopk``): ``inference="threshold"``
(default) encodes with ``sae.encode`` in the SAE's current mode — in ``eval()`` mode each token is
kept where its score beats the learned global threshold, independently of the other tokens.
``inference="batch"`` replays the paper's code: consecutive blocks of ``eval_batch_size`` = B
held-out tokens are each encoded with the training-mode selection (the k·B largest scores of the
block, :meth:`~abstopk_mini.nonlinearities.BatchTopK.forward_batch`), and the SAE's threshold is
left untouched.

:func:`final_metrics` is the in-sample ``final_fvu`` / ``final_l0`` training records at its end.

Used by ``python -m abstopk_mini reproduce`` / ``eval``, the sweep and chapters 6–8.
"""

from __future__ import annotations

import math

import torch

from . import metrics
from .codestats import CodeStats, iter_batches

__all__ = ["evaluate_sae", "final_metrics", "INFERENCE_MODES"]

#: how :func:`evaluate_sae` encodes (module docstring)
INFERENCE_MODES = ("threshold", "batch")


def _check_inference(sae, inference, eval_batch_size) -> None:
    if inference not in INFERENCE_MODES:
        raise ValueError(f"inference={inference!r}; choose one of {INFERENCE_MODES}")
    if isinstance(eval_batch_size, bool) or not isinstance(eval_batch_size, int) or eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be a positive int (tokens per selection block); got {eval_batch_size!r}")
    if inference == "batch" and not sae.cfg.spec.per_batch:
        raise ValueError(
            f"inference='batch' selects the top k·B of a block of B tokens, which only the batch-level activations "
            f"(batchtopk, batchabstopk) do; this SAE has activation={sae.cfg.activation!r}, which codes each token "
            "on its own — use inference='threshold' (the default)"
        )


@torch.no_grad()
def evaluate_sae(sae, x: torch.Tensor, batch_size: int = 4096, min_share: float = 0.1, *,
                 inference: str = "threshold", eval_batch_size: int = 128) -> dict:
    """FVU (raw space), L0, dead and dense fractions and sign statistics of ``sae`` on activations x,
    plus ``mse_std`` for a standardising SAE (module docstring); ``bidirectional_frac`` is over
    latents alive on x, with ``min_share`` the share each sign must hold.

    inference: ``"threshold"`` (``sae.encode``, batch_size rows at a time) or ``"batch"`` (batch-level
    activations only: blocks of ``eval_batch_size`` consecutive rows, each with the top k·B selection
    of training; the last block may be shorter and gets k·its length; ``batch_size`` is then unused).
    eval_batch_size: B of ``inference="batch"``; 128 is the paper's training batch.

    shape: x [N, d_in] -> dict of floats (and an int)
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty tensor [N, d_in]; got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    _check_inference(sae, inference, eval_batch_size)
    centred = metrics.check_variance(metrics.sum_sq_centred(x.double()), len(x))  # FVU's denominator, checked first
    standardised = sae.cfg.input_unit_norm
    stats = CodeStats.zeros(sae.cfg.d_sae)
    sq_err = sq_err_std = 0.0
    blocks = iter_batches(x, eval_batch_size if inference == "batch" else batch_size)
    for xb in blocks:
        z = sae.act.forward_batch(sae.pre_acts(xb)) if inference == "batch" else sae.encode(xb)
        y = z @ sae.W_dec + sae.b_dec  # the reconstruction in the SAE's space
        sq_err += metrics.sum_sq_error(xb.double(), sae.from_sae_space(y, sae.input_stats(xb)).double()).item()
        if standardised:
            s = sae.cfg.input_scale
            sq_err_std += metrics.sum_sq_error(sae.to_sae_space(xb).double() / s, y.double() / s).item()
        stats.add(z)
    out = {
        "fvu": sq_err / centred.item(),
        "l0": stats.l0,
        "dead_frac": stats.dead_fraction(),
        "dense_frac": stats.dense_fraction(),
        "bidirectional_frac": stats.bidirectional_fraction(min_share),
        "negative_share": stats.negative_share(),
        "antipodal_pairs": metrics.antipodal_pairs(sae.W_dec.detach()),
    }
    if standardised:
        out["mse_std"] = sq_err_std / (len(x) * sae.cfg.d_in)
    return out


@torch.no_grad()
def final_metrics(sae, x: torch.Tensor, chunk: int = 4096) -> dict:
    """``final_fvu`` / ``final_l0``: the trained SAE (eval mode) on a fixed sample of the training data,
    its first ``init_sample`` rows (those that set the input scale; non-finite rows left out), FVU in
    the model's space — never one (possibly partial) batch. In-sample, not held-out; ``final_fvu`` is
    None when the sample has no variance. ``final_sample``: its number of rows."""
    x = x[torch.isfinite(x).all(-1)].to(device=sae.W_enc.device, dtype=sae.W_enc.dtype)
    was_training, err, nnz = sae.training, 0.0, 0
    sae.eval()
    for xb in x.split(chunk):
        z = sae.encode(xb)
        err += metrics.sum_sq_error(xb.double(), sae.decode(z, sae.input_stats(xb)).double()).item()
        nnz += int((z != 0).sum())
    sae.train(was_training)
    denom = metrics.sum_sq_centred(x.double()).item() if x.shape[0] > 1 else 0.0
    fvu = err / denom if denom > 0 else None
    return {"final_fvu": fvu if fvu is None or math.isfinite(fvu) else None,
            "final_l0": nnz / x.shape[0] if x.shape[0] else None, "final_sample": x.shape[0]}
