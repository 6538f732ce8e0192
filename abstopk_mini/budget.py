r"""How a top-k SAE spends its budget of non-zeros over the tokens of a batch.

A per-token top-k SAE gives every token exactly k latents. The batch-level ones
(``batchtopk``, ``batchabstopk``) share a budget of k·B non-zeros among the B tokens of a
batch: the k·B largest scores s_{bi} of the flattened [B, d_sae] batch are kept, with

    s_{bi} = ReLU(u_{bi})  (BatchTopK)      s_{bi} = |u_{bi}|  (BatchAbsTopK, sign kept).

So one token may get 0 latents and another 200. :func:`token_budget` measures how unevenly the
budget is spread and what that costs: the distribution of the per-token count L0_b, how it
follows the norm of the token in the SAE's space, the share of the squared error carried by
the tokens that got few latents, and the FVU of the *same weights* read three ways:

- ``"batch"``: the top k·B of each block of B held-out tokens (the training rule);
- ``"threshold"``: the SAE's own inference, s_{bi} > θ (θ a running average from training);
- ``"row"``: exactly k latents per token, the top k of s_{b·} (TopK's / AbsTopK's rule).

If the row reading of a batch-trained SAE is much better than its batch reading, the batch rule
mis-spends the budget on these weights; if all three agree, the weights themselves are worse.

shapes: x [N, d_in] raw activations; every per-token quantity is [N].
"""
from __future__ import annotations

import torch

from .metrics import sum_sq_centred
from .nonlinearities import AbsTopK, TopK

READINGS = ("batch", "threshold", "row")
QUANTILES = (0.01, 0.1, 0.5, 0.9, 0.99)


def _check(sae, x: torch.Tensor, eval_batch_size: int) -> None:
    if not sae.cfg.spec.k_based:
        raise ValueError(f"token_budget reads top-k SAEs (topk, abstopk, batchtopk, batchabstopk); this SAE has "
                         f"activation={sae.cfg.activation!r}, which has no budget k: pick a top-k SAE")
    if x.ndim != 2 or x.shape[1] != sae.cfg.d_in:
        raise ValueError(f"x must be [N, d_in={sae.cfg.d_in}] raw activations; got shape {tuple(x.shape)}")
    if not isinstance(eval_batch_size, int) or eval_batch_size < 1 or eval_batch_size > len(x):
        raise ValueError(f"eval_batch_size={eval_batch_size!r}: pass a whole number of tokens from 1 to "
                         f"len(x)={len(x)} (128 is the paper's training batch)")


def row_code(sae, u: torch.Tensor) -> torch.Tensor:
    """Exactly k latents per row, as the per-token SAE of the same sign does
    (:class:`~abstopk_mini.nonlinearities.AbsTopK` if signed, else :class:`~abstopk_mini.nonlinearities.TopK`).
    shape: u [B, d_sae] -> z [B, d_sae]"""
    return (AbsTopK if sae.cfg.signed else TopK)(sae.cfg.k)(u)


def _code(sae, u: torch.Tensor, reading: str) -> torch.Tensor:
    if reading == "row":
        return row_code(sae, u)
    if reading == "batch" and sae.cfg.spec.per_batch:
        return sae.act.forward_batch(u)
    return sae.act(u)  # eval mode: the threshold (batch-level) or the per-row top k


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank), for Spearman's correlation.  shape: [N] -> [N]"""
    v = v.double()
    order = v.argsort()
    ranks = torch.empty_like(v)
    ranks[order] = torch.arange(len(v), dtype=torch.float64)
    uniq, inv = torch.unique(v, return_inverse=True)
    total = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, ranks)
    count = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, torch.ones_like(ranks))
    return (total / count)[inv]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman's rank correlation of two [N] tensors (None if either is constant: undefined)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = (ra.pow(2).sum() * rb.pow(2).sum()).sqrt()
    return float((ra * rb).sum() / den) if den > 0 else None


@torch.no_grad()
def token_budget(sae, x: torch.Tensor, eval_batch_size: int = 128) -> dict:
    """The budget of ``sae`` over held-out activations ``x``, read in blocks of ``eval_batch_size``.

    Returns, for each reading in :data:`READINGS` (``"batch"`` equals ``"row"`` for per-token
    SAEs), a dict: ``fvu`` (raw space, the same denominator as :func:`abstopk_mini.metrics.fvu`),
    ``l0_mean``, ``l0_quantiles`` (at :data:`QUANTILES`), ``share_zero`` (tokens with no latent),
    ``share_below_quarter_k`` (fewer than k/4), ``top_decile_share`` (the share of all non-zeros
    held by the 10 % of tokens with the most), ``l0_norm_spearman`` (rank correlation of L0_b with
    ‖x_in,b − b_dec‖; None where L0_b is the same for every token), ``error_share_below_quarter_k`` (the share of the squared error on those
    tokens), ``negative_share`` (non-zeros < 0); plus ``n_tokens``, ``eval_batch_size``, ``k``.
    A trailing partial block is dropped, so every block has B tokens.
    """
    _check(sae, x, eval_batch_size)
    sae = sae.eval()
    n = (len(x) // eval_batch_size) * eval_batch_size
    x = x[:n]
    k = sae.cfg.k
    l0 = {r: [] for r in READINGS}
    err = {r: [] for r in READINGS}
    neg = dict.fromkeys(READINGS, 0)
    norms = []
    for xb in x.split(eval_batch_size):
        u = sae.pre_acts(xb)
        stats = sae.input_stats(xb)
        norms.append((sae.to_sae_space(xb) - sae.b_dec).norm(dim=-1).double())
        for r in READINGS:
            z = _code(sae, u, r)
            x_hat = sae.decode(z, stats)
            l0[r].append((z != 0).sum(-1))
            err[r].append((xb.double() - x_hat.double()).pow(2).sum(-1))
            neg[r] += int((z < 0).sum())
    centred = float(sum_sq_centred(x.double()))
    norm = torch.cat(norms)
    out = {"n_tokens": n, "eval_batch_size": eval_batch_size, "k": k, "activation": sae.cfg.activation}
    for r in READINGS:
        c, e = torch.cat(l0[r]), torch.cat(err[r])
        low = c < k / 4
        top = c.sort(descending=True).values[: max(1, n // 10)]
        total = int(c.sum())
        out[r] = {
            "fvu": float(e.sum()) / centred,
            "l0_mean": float(c.double().mean()),
            "l0_quantiles": dict(zip([str(q) for q in QUANTILES],
                                     torch.quantile(c.double(), torch.tensor(QUANTILES, dtype=torch.float64)).tolist())),
            "share_zero": float((c == 0).double().mean()),
            "share_below_quarter_k": float(low.double().mean()),
            "top_decile_share": float(top.sum()) / total if total else None,
            "l0_norm_spearman": spearman(c, norm),
            "error_share_below_quarter_k": float(e[low].sum() / e.sum()),
            "negative_share": neg[r] / total if total else None,
        }
    return out
