r"""Experiments of chapter 03: T-step unrolled encoders, with a known dictionary and trained.

**Cost model.** A T-step encoder runs one [d → P] matmul for the first step and two more
([P → d] for the residual, [d → P] back) for each further step: about 2dP(2T − 1) FLOPs per
token (:func:`encoder_flops_per_token`), plus the activation.

**Code recovery** of a learned SAE is measured against the ground truth after matching its atoms
to the true signed directions, see :func:`code_recovery`.
"""

from __future__ import annotations

import math
import time

import torch

from .. import metrics
from .experiments_theory import support_recovery
from ..coding.unroll import UnrolledSAE, iht, ista, lipschitz, sae_from_dictionary

__all__ = ["code_recovery", "unrolled_vs_solver", "solver_steps_sweep", "encoder_flops_per_token", "encode_seconds_per_token",
           "unrolled_training_sweep"]


def code_recovery(z_hat: torch.Tensor, z_true: torch.Tensor, D_true: torch.Tensor, D_learned: torch.Tensor,
                  signed: bool) -> float:
    r"""Share of the true active (axis, sign) pairs whose matched latent fires with the matching sign.

    The 2P true signed directions :math:`\pm d_i` are matched one-to-one (Hungarian, signed
    cosine; :func:`~abstopk_mini.metrics.match_atoms`) to what the code can express: each latent
    j in both directions :math:`\pm a_j` for a signed code, only :math:`+a_j` for a nonnegative one.
    Sample n's true entry :math:`z_{ni} = s\,a` (s = ±1) counts as recovered when the latent j
    matched to :math:`s\,d_i` with sign σ has :math:`\operatorname{sign}(\hat z_{nj}) = σ`.
    A true direction left without a partner (too few latents) is never recovered.
    shape: z_hat [n, Q], z_true [n, P], D_true [d, P], D_learned [d, Q] -> float
    """
    P, Q = D_true.shape[1], D_learned.shape[1]
    T = torch.cat([D_true, -D_true], dim=1)
    L = torch.cat([D_learned, -D_learned], dim=1) if signed else D_learned
    t_idx, l_idx, _ = metrics.match_atoms(T, L.to(T.dtype), signed=True)
    latent = torch.full((2 * P,), -1, dtype=torch.long)
    sigma = torch.zeros(2 * P)
    latent[t_idx] = l_idx % Q
    sigma[t_idx] = torch.where(l_idx < Q, 1.0, -1.0)
    n_idx, i_idx = torch.nonzero(z_true).unbind(1)
    t = torch.where(z_true[n_idx, i_idx] > 0, i_idx, i_idx + P)
    j, s = latent[t], sigma[t]
    ok = j >= 0
    hit = torch.zeros(len(t), dtype=torch.bool)
    hit[ok] = torch.sign(z_hat[n_idx[ok], j[ok]]).float() == s[ok]
    return hit.double().mean().item()


def unrolled_vs_solver(x: torch.Tensor, D: torch.Tensor, k: int, steps=(1, 2, 3, 5)) -> list[dict]:
    """An :class:`UnrolledSAE` built from D (W_enc = D, W_dec = Dᵀ, step sizes 1) against T steps of IHT.

    Rows {activation, T, max_abs_diff}: ``abstopk`` against ``iht(x, D, k, T)`` and ``topk``
    against ``iht(..., nonneg=True)``, both with η = 1.  shape: x [n, d], D [d, P]
    """
    rows = []
    for act in ("abstopk", "topk"):
        base = sae_from_dictionary(D, act, eta=1.0, k=k, dtype="float64")
        for T in steps:
            with torch.no_grad():
                z = UnrolledSAE.from_sae(base, n_steps=T).encode(x)
            ref = iht(x, D, k, T, nonneg=act == "topk")
            rows.append({"activation": act, "T": T, "max_abs_diff": (z - ref).abs().max().item()})
    return rows


def solver_steps_sweep(x: torch.Tensor, z_true: torch.Tensor, D: torch.Tensor, k: int, steps=(1, 2, 3, 5, 10, 20),
                       lam: float = 0.05) -> list[dict]:
    """T-step solvers with the true dictionary (no learning): FVU of x̂ = ẑ Dᵀ and code recovery vs T.

    Methods: IHT (AbsTopK steps) with η = 1 and with η = 1/L, and ISTA (signed soft threshold,
    λ = ``lam``, η = 1/L; its support read off as the k largest |ẑ_i|).
    shape: x [n, d], z_true [n, P], D [d, P] -> rows {method, T, fvu, recovery, l0}
    """
    L = lipschitz(D)
    methods = {
        "IHT, η=1": lambda T: iht(x, D, k, T),
        "IHT, η=1/L": lambda T: iht(x, D, k, T, step=1.0 / L),
        f"ISTA, λ={lam}": lambda T: ista(x, D, lam, T),
    }
    rows = []
    for name, run in methods.items():
        for T in steps:
            z = run(T)
            rows.append({"method": name, "T": T, "fvu": metrics.fvu(x, z @ D.T), "recovery": support_recovery(z, z_true),
                         "l0": metrics.l0(z)})
    return rows


def encoder_flops_per_token(d: int, P: int, T: int) -> int:
    """Multiply-adds ×2 of a T-step encoder: one [d→P] matmul, then 2 per extra step ([P→d], [d→P])."""
    return 2 * d * P * (2 * T - 1)


def encode_seconds_per_token(saes, x: torch.Tensor, repeats: int = 10) -> list[float]:
    """Wall time of ``sae.encode(x)`` per row, for each SAE: the best of ``repeats`` rounds.

    The rounds interleave the SAEs (round r times every SAE once), so a burst of load from other
    processes slows all of them alike instead of one; the best round is the least disturbed.
    shape: x [n, d_in] -> one float (seconds per token) per SAE
    """
    best = [math.inf] * len(saes)
    with torch.no_grad():
        for sae in saes:
            sae.encode(x[:8])  # warm-up
        for _ in range(repeats):
            for i, sae in enumerate(saes):
                t0 = time.perf_counter()
                sae.encode(x)
                best[i] = min(best[i], time.perf_counter() - t0)
    return [b / x.shape[0] for b in best]


def unrolled_training_sweep(x_train: torch.Tensor, x_test: torch.Tensor, z_test: torch.Tensor, D_true: torch.Tensor,
                            *, k: int, activations=(("abstopk", 1), ("topk", 2)), steps=(1, 2, 3, 5),
                            n_tokens: int = 1_000_000, batch_size: int = 256, seeds=(0,), lr: float | None = None,
                            inference_only: bool = True, timing_repeats: int = 10, progress: bool = False) -> list[dict]:
    """Train :class:`~abstopk_mini.coding.unroll.UnrolledSAE` for every (activation, width multiple) × T × seed.

    Every run sees the same data, the same ``n_tokens`` and batch size, the same learning rate
    and the same input scale s = sqrt(d / E‖x‖²) (so T = 1 is a plain SAE trained the same way).
    d_sae = multiple · P. ``relu`` steers its L0 to k. With ``inference_only``, the T = 1 SAE is also
    run with T steps without retraining (``UnrolledSAE.from_sae``; rows with ``trained_T = 1``).
    Returns rows {activation, d_sae, T, trained_T, seed, fvu, recovery, mcc, l0, train_s,
    flops_per_token, encode_us_per_token} measured on the held-out ``x_test``; the encode times are
    taken after all training, interleaved (:func:`encode_seconds_per_token`).
    """
    from ..sae import SAE, SAEConfig
    from ..train import train_sae

    d, P = D_true.shape
    scale = math.sqrt(d / x_train.double().pow(2).sum(-1).mean().item())
    rows, saes = [], []  # saes[i] produced rows[i]; timed together at the end

    def measure(sae, act, T, trained_T, seed, train_s):
        saes.append(sae)
        with torch.no_grad():
            z = sae.encode(x_test)
            x_hat = sae.decode(z)
        A = sae.W_dec.detach().T.double()
        return {"activation": act, "d_sae": sae.cfg.d_sae, "T": T, "trained_T": trained_T, "seed": seed,
                "fvu": metrics.fvu(x_test, x_hat), "recovery": code_recovery(z, z_test, D_true.double(), A, sae.cfg.signed),
                "mcc": metrics.mcc(D_true, A), "l0": metrics.l0(z), "train_s": train_s,
                "flops_per_token": encoder_flops_per_token(d, sae.cfg.d_sae, T)}

    for act, mult in activations:
        for seed in seeds:
            base = None
            for T in steps:
                cfg = SAEConfig(d_in=d, d_sae=mult * P, activation=act, k=k, seed=seed, device="cpu", input_scale=scale)
                t0 = time.perf_counter()
                # T = 1: a plain SAE (same initialisation); UnrolledSAE.from_sae then accepts it
                start = SAE(cfg) if T == 1 else UnrolledSAE(cfg, n_steps=T)
                sae, _ = train_sae(cfg, x_train, sae=start, n_tokens=n_tokens,
                                   batch_size=batch_size, seed=seed, lr=lr, progress=progress)
                rows.append(measure(sae, act, T, T, seed, time.perf_counter() - t0))
                if T == 1:
                    base = sae
            if inference_only and base is not None:
                for T in steps:
                    if T > 1:
                        rows.append(measure(UnrolledSAE.from_sae(base, n_steps=T).eval(), act, T, 1, seed, 0.0))
    for row, seconds in zip(rows, encode_seconds_per_token(saes, x_test, repeats=timing_repeats)):
        row["encode_us_per_token"] = 1e6 * seconds
    return rows
