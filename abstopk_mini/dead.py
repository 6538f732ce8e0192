r"""What a dead latent of a top-k SAE looks like, against the live ones.

A per-token top-k SAE keeps, for token t, the k latents with the largest scores

    s_i(t) = ReLU(u_i(t))  (TopK)        s_i(t) = |u_i(t)|  (AbsTopK, sign kept),

with u = (x_in − b_dec) W_enc + b_enc. Write θ(t) for the k-th largest score of token t. Latent i
fires on t when s_i(t) ≥ θ(t), so it is dead on a set of tokens exactly when its **reach**

    r_i = max_t s_i(t) / θ(t)

is below 1 there (ties aside); r_i says how far below the selection line it stays. A latent can be
dead in two ways that AuxK treats differently:

- **pushed negative**: u_i is large but of the wrong sign (max_t u_i(t) ≤ 0). TopK does not see
  it (ReLU(u) = 0) and neither does TopK's AuxK, which also scores by ReLU(u). AbsTopK would select
  it by |u|, so an AbsTopK latent cannot be dead this way.
- **shrunk**: |u_i| is small on every token (a small encoder column or a pre-activation that
  cancels), so it loses to the live latents under either score.

:func:`latent_profile` measures, for the live and the dead latents of an SAE on a set of tokens,
the medians of the reach r_i, of the pre-activation scale E_t|u_i(t)|, of the share of tokens with
u_i(t) > 0, of the encoder column norm ‖W_enc[:, i]‖ (in the SAE's space) and of b_enc,i, and the
share of latents with max_t u_i(t) > 0.

shapes: x [N, d_in] raw activations; per-latent quantities are [d_sae].
"""
from __future__ import annotations

import torch

__all__ = ["PROFILE_SAES", "latent_stats", "latent_profile"]

#: the activations :func:`latent_profile` reads (per-token selection, so θ(t) is the token's own)
PROFILE_SAES = ("topk", "abstopk")


def _check(sae, x: torch.Tensor, batch_size: int) -> None:
    if sae.cfg.activation not in PROFILE_SAES:
        raise ValueError(f"latent_profile reads per-token top-k SAEs {PROFILE_SAES}; this SAE has activation="
                         f"{sae.cfg.activation!r} (its selection line is not a per-token k-th score): pick a topk or "
                         f"abstopk SAE")
    if x.ndim != 2 or x.shape[1] != sae.cfg.d_in or len(x) == 0:
        raise ValueError(f"x must be [N >= 1, d_in={sae.cfg.d_in}] raw activations; got shape {tuple(x.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1 (tokens per block); got {batch_size!r}")


@torch.no_grad()
def latent_stats(sae, x: torch.Tensor, batch_size: int = 4096) -> dict[str, torch.Tensor]:
    """Per-latent statistics of ``sae`` over the tokens ``x`` (module docstring), in float64:
    ``fired`` (bool: selected on some token), ``reach`` (max_t s_i(t)/θ(t)), ``mean_abs_u``
    (E_t|u_i(t)|), ``positive_frac`` (share of tokens with u_i(t) > 0), ``max_u`` (max_t u_i(t)),
    ``enc_norm`` (‖W_enc[:, i]‖), ``b_enc``.

    θ(t) is the k-th largest score of token t; a latent fires on t when s_i(t) ≥ θ(t) and θ(t) > 0
    (a zero score never counts as a firing, as z = 0 there). Reach uses θ(t) > 0 tokens only.

    shape: x [N, d_in] -> each value [d_sae]
    """
    _check(sae, x, batch_size)
    k, d_sae = sae.cfg.k, sae.cfg.d_sae
    reach = torch.zeros(d_sae, dtype=torch.float64)
    max_u = torch.full((d_sae,), -torch.inf, dtype=torch.float64)
    sum_abs = torch.zeros(d_sae, dtype=torch.float64)
    n_pos = torch.zeros(d_sae, dtype=torch.float64)
    for start in range(0, len(x), batch_size):
        u = sae.pre_acts(x[start:start + batch_size]).double()  # [b, d_sae]
        s = u.abs() if sae.cfg.signed else u.clamp_min(0)
        theta = s.topk(k, dim=-1).values[:, -1:]  # [b, 1], the k-th largest score
        live = theta[:, 0] > 0
        if live.any():
            reach = torch.maximum(reach, (s[live] / theta[live]).max(0).values)
        max_u = torch.maximum(max_u, u.max(0).values)
        sum_abs += u.abs().sum(0)
        n_pos += (u > 0).sum(0)
    # a latent fired on some token exactly when its best ratio to the line reached 1
    return {"fired": reach >= 1, "reach": reach, "mean_abs_u": sum_abs / len(x),
            "positive_frac": n_pos / len(x), "max_u": max_u,
            "enc_norm": sae.W_enc.detach().double().norm(dim=0), "b_enc": sae.b_enc.detach().double()}


#: the per-latent statistics whose median :func:`latent_profile` reports for each group
_MEDIANS = ("reach", "mean_abs_u", "positive_frac", "enc_norm", "b_enc")


def _group(stats: dict[str, torch.Tensor], mask: torch.Tensor) -> dict:
    n = int(mask.sum())
    medians = {f"{name}_median": stats[name][mask].median().item() if n else None for name in _MEDIANS}
    return {"n": n, **medians, "positive_share": (stats["max_u"][mask] > 0).double().mean().item() if n else None}


def latent_profile(sae, x: torch.Tensor, batch_size: int = 4096) -> dict:
    """The live and the dead latents of ``sae`` on the tokens ``x``, summarised (module docstring):
    ``{"dead_frac", "alive": {...}, "dead": {...}}`` where each group has ``n``, the medians
    ``reach_median``, ``mean_abs_u_median``, ``positive_frac_median`` (of the share of tokens with
    u > 0), ``enc_norm_median``, ``b_enc_median``, and ``positive_share`` (share of the group's
    latents with max_t u_i(t) > 0); a group with no latent has None for each.

    shape: x [N, d_in] raw activations
    """
    stats = latent_stats(sae, x, batch_size)
    dead = ~stats["fired"]
    return {"dead_frac": dead.double().mean().item(), "alive": _group(stats, ~dead), "dead": _group(stats, dead)}
