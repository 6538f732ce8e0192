r"""Feature absorption scores, as SAEBench computes them (``FeatureAbsorptionCalculator``), on tensors.

A word starting with ℓ whose residual the letter probe reads correctly should light up ℓ's main
latents (:func:`abstopk_mini.saebench.first_letter.main_latents`). *Absorption* is when it does
not, and a token-specific latent (" short") carries the letter's direction instead. With

* :math:`\hat p` the probe's unit direction for ℓ, :math:`P = x \cdot \hat p` the residual's projection on it,
* :math:`c_j = \cos(\hat p, W_{\mathrm{dec},j})` and :math:`s_j = z_j c_j` latent j's share of that projection,
* :math:`M = \sum_{j \in \mathrm{main}} s_j`, and :math:`T` the sum of the (at most 3) largest
  :math:`s_j > 0` among the other latents with :math:`c_j \ge 0.1`,

the **absorption fraction** of the token is 0 when :math:`M \ge P` or :math:`T / P < 0.4` (the main
latents explain the projection, or nothing else does), 1 when :math:`M \le 0`, and otherwise
:math:`a / (a + M)` with :math:`a = \min(T, P - M)`. **Full absorption** asks more: no main latent
fires (:math:`z_j < 10^{-8}`), the latent with the largest :math:`s_j` has :math:`c \ge 0.025`,
:math:`P \ge 0`, and it alone carries at least 0.4 of :math:`P`. A letter's score is the mean over the
words the probe gets right; the SAE's score is the mean over letters whose probe has F1 > 0.6,
reported only when at least 20 letters qualify.

Signed codes. SAEBench assumes :math:`z \ge 0`. An AbsTopK latent that fires negative on a word
contributes :math:`s_j = z_j c_j` with the sign of both; :func:`split_view` instead reads each signed
latent as two non-negative ones, :math:`z^+ = \max(z, 0)` with decoder row :math:`W_{\mathrm{dec},j}` and
:math:`z^- = \max(-z, 0)` with row :math:`-W_{\mathrm{dec},j}` (the same reconstruction), so every rule
above applies to each side as to a TopK latent. For a TopK SAE the two views give the same scores.
"""

from __future__ import annotations

import statistics

import torch

__all__ = ["split_view", "absorption_scores", "aggregate", "MIN_PROBE_F1", "MIN_LETTERS"]

MIN_PROBE_F1 = 0.6   # a letter counts when its probe's F1 on the test words is above this
MIN_LETTERS = 20     # SAEBench reports nothing for an SAE with fewer such letters


def split_view(codes: torch.Tensor, W_dec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each latent as two non-negative ones: codes [n, F] -> [n, 2F] = [z⁺, z⁻]; W_dec [F, d] -> [2F, d] = [W; -W].
    Latent j's negative side is latent F + j."""
    return torch.cat([codes.clamp(min=0), (-codes).clamp(min=0)], dim=1), torch.cat([W_dec, -W_dec])


def absorption_scores(x: torch.Tensor, codes: torch.Tensor, W_dec: torch.Tensor, probe: torch.Tensor,
                      main: list[int], *, cos_full: float = 0.025, cos_fraction: float = 0.1,
                      share: float = 0.4, max_absorbers: int = 3, eps: float = 1e-8
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Absorption fraction and full absorption of each token (module docstring).

    shape: x [n, d] residuals, codes [n, F], W_dec [F, d], probe [d] (the letter's probe row),
    main: the letter's main latents -> fraction [n] float64, full [n] bool"""
    p = probe.float() / probe.float().norm()
    cos = torch.nn.functional.cosine_similarity(p[None], W_dec.float(), dim=-1)  # [F]
    s = codes.float() * cos  # [n, F]
    P = (x.float() @ p).double()
    is_main = torch.zeros(codes.shape[1], dtype=torch.bool)
    is_main[main] = True
    M = s[:, is_main].sum(1).double()
    absorbers = torch.where(~is_main & (cos >= cos_fraction) & (s > 0), s, torch.zeros(()))
    T = absorbers.topk(min(max_absorbers, codes.shape[1]), dim=1).values.sum(1).double()
    a = torch.minimum(T, P - M)
    fraction = torch.where((M >= P) | (T / P < share), torch.zeros(()).double(),
                           torch.where(M <= 0, torch.ones(()).double(), (a / (a + M)).clamp(0, 1)))
    top = s.argmax(1)
    full = ((codes[:, is_main] < eps).all(1) & (cos[top] >= cos_full) & (P >= 0)
            & (s[torch.arange(len(s)), top].double() / P >= share))
    return fraction, full


def aggregate(per_letter: list[dict]) -> dict:
    """The SAE's scores from per-letter rows ``{"letter", "probe_f1", "fractions", "full", "n_split"}``
    (fractions and full: one entry per word the probe got right): means and sample standard
    deviations over the letters with probe F1 > :data:`MIN_PROBE_F1` (None when fewer than :data:`MIN_LETTERS`)."""
    letters = []
    for r in per_letter:
        n = len(r["fractions"])
        letters.append({"letter": r["letter"], "probe_f1": r["probe_f1"], "n_true_positives": n,
                        "absorption_fraction": sum(r["fractions"]) / n if n else None,
                        "full_absorption_rate": sum(r["full"]) / n if n else None, "n_split": r["n_split"]})
    kept = [r for r in letters if r["probe_f1"] > MIN_PROBE_F1 and r["n_true_positives"] > 0]
    out = {"letters": letters, "n_letters": len(kept)}
    for key, name in (("absorption_fraction", "mean_absorption_fraction"), ("full_absorption_rate", "mean_full_absorption"),
                      ("n_split", "mean_num_split_features")):
        values = [r[key] for r in kept]
        ok = len(kept) >= MIN_LETTERS
        out[name] = statistics.mean(values) if ok else None
        out["std_" + name.removeprefix("mean_")] = statistics.stdev(values) if ok and len(values) > 1 else None
    return out
