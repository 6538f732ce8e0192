r"""The L0 of the penalty families (ReLU, JumpReLU, AbsJumpReLU): where it starts and how it is steered.

The top-k family is told its L0 (k). The penalty families are not: their L0 is whatever the
penalty coefficient λ and the thresholds settle at. Training steers them towards a target L0 in
two ways, both read by :func:`~abstopk_mini.train.train_sae`:

1. **Start at the target** (:func:`start_at_target`). A latent i of a JumpReLU fires when its
   score :math:`s_i` (:math:`u_i`, or :math:`|u_i|` for the signed one) exceeds θ_i. Set θ_i to the
   :math:`1 - L_0^*/d_{sae}` quantile of :math:`s_i` on a sample and each latent fires on a share
   :math:`L_0^*/d_{sae}` of the rows, so the code's mean L0 is :math:`L_0^*` from the first step.
   ReLU has no threshold; its encoder bias is lowered by the same quantile instead
   (:math:`b_{enc,i} \leftarrow b_{enc,i} - q_i`), which makes ReLU(u) non-zero on the same share.

   Why it matters: the inputs are scaled so that E‖s·x‖² = d_in, so pre-activations are O(1) and
   the threshold that keeps 32 of 4,096 latents is ~2.5. A threshold that starts at 1e-3 is a
   parameter Adam moves by about ``lr`` per step: 586 steps at lr 4e-4 cannot lift it past ~0.2,
   and the STE gradient that moves it only reaches the few rows within ε of θ. The L0 then stays
   several times its target whatever λ is (measured: JumpReLU at L0 167 for a target of 32).

2. **Hold it there.** ReLU: its l1 coefficient λ is steered (:func:`next_coefficient`), a
   multiplicative controller,
   :math:`\lambda \leftarrow \lambda\, e^{r\,\mathrm{clip}(\log(L_0/L_0^*), -1, 1)}`, kept within
   ``[λ₀ / COEF_RANGE, λ₀ · COEF_RANGE]``. A bound that is hit is reported, not silent: training
   counts the steps spent there (``coef_saturated_steps``) and warns (:func:`check_final_l0`).
   The JumpReLUs: their penalty is two-sided, :math:`\lambda_0\,\tfrac{2}{L_0^*}(\bar L_0 - L_0^*)^2`
   of the batch's mean STE L0 (:func:`~abstopk_mini.losses.two_sided_l0`), with λ₀ fixed. A
   one-sided :math:`\lambda \bar L_0` can only raise θ; once the reconstruction alone raises it
   (a latent whose smallest kept values cost more error than they remove), the L0 sinks under
   its target and no λ ≥ 0 brings it back: under the controller λ fell to ~0.02 while L0 ended
   24 % under its target (4,096 latents, 586 steps of 4,096 tokens). Measured on the same harvest
   at 2,048 latents, 586 steps of 1,024 tokens, target 32 (held-out FVU / L0 on 20,000 tokens;
   the final training L0's distance from the target): controller 0.0885 / 27.4 (−10 %);
   two-sided, λ₀ = 1: 0.0874 / 30.5 (−0.4 %); λ₀ = 4: 0.0891 / 29.8 (−2.7 %); Gemma Scope 2's
   per-row form (the mean of :math:`\tfrac{2}{L_0^*}(L_{0,b} - L_0^*)^2`), λ₀ = 1: 0.0956 / 27.5
   (−11 %), λ₀ = 0.1: 0.0827 / 33.9 (+10 %).

3. **The STE's bandwidth** ε (``SAEConfig.bandwidth``, default 0.2). About B·p_i(θ_i)·ε rows of a
   batch of B reach θ_i's gradient (p_i: the density of latent i's score near θ_i, O(1) scores). Measured
   on Gemma-3-270M's residual stream (2,048 latents, 586 steps of 1,024 tokens, target L0 32), held-out
   FVU / L0: ε = 1e-3 → 0.104 / 20.7; 0.05 → 0.091 / 26.3; 0.2 → 0.089 / 27.5 (TopK k = 32: 0.077 / 32).

A run whose final L0 is more than ``L0_TOLERANCE`` (15 %) away from its target gets a warning and
the record fields ``target_l0`` and ``l0_off_target`` (final L0 / target − 1); the reports mark
its row.
"""

from __future__ import annotations

import math
import warnings

import torch

__all__ = ["SPARSITY_RECIPES", "recipe_key", "AIM_RANGE", "next_aim", "L0_TOLERANCE", "COEF_RANGE", "INIT_ROWS", "start_at_target", "next_coefficient", "l0_off_target",
           "check_final_l0", "OffTargetL0Warning"]

#: the version of this module's recipe per penalty, part of a stored penalty-family SAE's key
#: (:func:`abstopk_mini.runs.store.sae_dir`, through :func:`recipe_key`): SAEs trained before it
#: (θ from 1e-3, a controller on L0/target − 1; then, for the JumpReLUs, a one-sided λ·L0 under
#: the controller) are not served for it. The top-k family's keys carry none (its training did not
#: change), so their stored SAEs stay valid.
SPARSITY_RECIPES = {"l1": "start-at-target/1", "l0": "start-at-target/1+two-sided-l0"}
#: a final L0 further than this (relative) from its target is off target: warned and marked
L0_TOLERANCE = 0.15
#: the controller keeps λ within [λ₀ / COEF_RANGE, λ₀ · COEF_RANGE] of the configured one
COEF_RANGE = 1e3
#: rows of the sample the starting quantiles are taken on (more only costs memory: rows × d_sae floats)
INIT_ROWS = 8192


def recipe_key(spec) -> str | None:
    """The recipe version a stored SAE of this activation spec is keyed by; None for the top-k family."""
    return None if spec.penalty is None else SPARSITY_RECIPES[spec.penalty]


class OffTargetL0Warning(UserWarning):
    """A penalty-family SAE ended more than ``L0_TOLERANCE`` from its target L0, or its controller
    spent steps at a bound of its range."""


@torch.no_grad()
def start_at_target(sae, sample: torch.Tensor, target_l0: float) -> torch.Tensor:
    r"""Set the SAE's sparsity so that its mean L0 on ``sample`` is ~``target_l0``; return the
    per-latent quantiles q [d_sae] it used.

    q_i is the :math:`1 - L_0^*/d_{sae}` quantile (the ⌈(1 − L0*/d_sae)·n⌉-th smallest value) of
    latent i's score on the first ``INIT_ROWS`` rows of the sample: u_i, or |u_i| when the SAE is
    signed. JumpReLUs: θ_i = max(q_i, 0). ReLU: b_enc_i −= q_i (needs ``cfg.use_b_enc``). The top-k
    family is left as it is (k sets its L0).

    shape: sample [n, d_in] (raw, unscaled: as the SAE reads it) -> [d_sae]
    """
    act, spec = sae.cfg.activation, sae.cfg.spec
    if spec.penalty is None:  # the top-k family: k is its L0
        raise ValueError(f"start_at_target is for the penalty families, relu, jumprelu and absjumprelu; got {act!r}")
    d_sae = sae.cfg.d_sae
    if not (isinstance(target_l0, (int, float)) and math.isfinite(target_l0) and 0 < target_l0 <= d_sae):
        raise ValueError(f"target_l0 must be a number in (0, d_sae={d_sae}]; got {target_l0!r}")
    if not spec.threshold_based and not sae.cfg.use_b_enc:
        raise ValueError("a ReLU SAE without an encoder bias (use_b_enc=False) cannot start at a target L0; "
                         "pass sparsity_init='none' or use_b_enc=True")
    x = sample[:INIT_ROWS].to(device=sae.W_enc.device, dtype=sae.W_enc.dtype)
    x = x[torch.isfinite(x).all(-1)]
    if x.shape[0] == 0:
        raise ValueError("the sample for the starting thresholds has no finite rows")
    u = sae.pre_acts(x)
    score = u.abs() if sae.cfg.signed else u
    n = score.shape[0]
    rank = min(n, max(1, math.ceil((1.0 - target_l0 / d_sae) * n)))  # 1-based: the rank-th smallest
    q = score.kthvalue(rank, dim=0).values
    if not spec.threshold_based:  # ReLU: no θ, the bias moves instead
        sae.b_enc.sub_(q)
    else:
        sae.act.threshold.copy_(q.clamp_min(0.0))
    return q


def next_coefficient(coef: float, batch_l0: float, target_l0: float, rate: float, coef0: float) -> tuple[float, bool]:
    r"""One step of the L0 controller: ``(λ', at_bound)``.

    :math:`\lambda' = \lambda\, e^{r\,\mathrm{clip}(\log(L_0/L_0^*), -1, 1)}` clipped to
    ``[coef0 / COEF_RANGE, coef0 · COEF_RANGE]``; too dense → larger λ. ``at_bound`` is True when the
    clip held λ back (the target is out of the penalty's reach, not overshot). An L0 of 0 counts as
    the lowest ratio the clip allows.

    λ stays positive. A signed λ (dual ascent on the constraint E L0 = L0*) was tried for the
    JumpReLUs on the real harvest (2,048 latents, 586 steps): θ follows λ with a lag of ~100 steps,
    so λ overshot and L0 swung between 14 and 53 for a target of 32, worse than this controller.
    """
    ratio = batch_l0 / target_l0
    error = max(-1.0, min(1.0, math.log(ratio))) if ratio > 0 else -1.0
    wanted = coef * math.exp(rate * error)
    new = min(max(wanted, coef0 / COEF_RANGE), coef0 * COEF_RANGE)
    return new, new != wanted


#: the integral term keeps the JumpReLUs' aim within [target / AIM_RANGE, target · AIM_RANGE]
AIM_RANGE = 4.0


def next_aim(aim: float, batch_l0: float, target_l0: float, rate: float) -> float:
    r"""One step of the JumpReLUs' integral term (``TrainConfig.l0_integral_rate``): the L0 their
    two-sided penalty pulls to, its aim :math:`a`, moves by the remaining error,
    :math:`a \leftarrow a + r\,(L_0^* - L_0)`, kept within ``[target / AIM_RANGE, target · AIM_RANGE]``.

    The two-sided term alone is a proportional pull: where the reconstruction pushes θ up with a
    steady force, the L0 settles under its target by an offset that shrinks as the coefficient grows
    (measured: −19 % at 4,096 latents, λ₀ = 2). Moving the aim by the accumulated error (an integral
    term; with the quadratic, the method of multipliers) removes the offset: it stops moving only
    where the batch L0 equals the target. ``rate = 0`` keeps ``aim = target``."""
    return min(max(aim + rate * (target_l0 - batch_l0), target_l0 / AIM_RANGE), target_l0 * AIM_RANGE)


def l0_off_target(final_l0: float | None, target_l0: float | None) -> float | None:
    """final L0 / target − 1 (e.g. +4.2 for L0 167 at target 32); None without a target or an L0."""
    if final_l0 is None or not target_l0:
        return None
    return final_l0 / target_l0 - 1.0


def check_final_l0(activation: str, final_l0: float | None, target_l0: float | None, saturated_steps: int,
                   n_steps: int) -> None:
    """Warn (:class:`OffTargetL0Warning`) when the final L0 is more than ``L0_TOLERANCE`` off its
    target, or the controller spent steps at a bound of its range."""
    off = l0_off_target(final_l0, target_l0)
    if off is not None and abs(off) > L0_TOLERANCE:
        warnings.warn(
            f"the {activation} SAE ended at L0 {final_l0:.1f}, {100 * off:+.0f} % from its target {target_l0:g} "
            f"(tolerance ±{100 * L0_TOLERANCE:.0f} %); compare it with other SAEs at their own L0, or train longer "
            "or with another l1_coefficient / l0_coefficient", OffTargetL0Warning, stacklevel=3)
    if saturated_steps:
        warnings.warn(
            f"the {activation} SAE's L0 controller held its coefficient at a bound of [λ₀/{COEF_RANGE:g}, "
            f"λ₀·{COEF_RANGE:g}] for {saturated_steps} of {n_steps} steps: the target L0 was out of the penalty's "
            "reach there; set the configured coefficient nearer the value it settled at", OffTargetL0Warning,
            stacklevel=3)
