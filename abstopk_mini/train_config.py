"""The settings of one SAE training run (:class:`TrainConfig`) and its learning-rate schedule
(:func:`lr_at`), apart from the loop that reads them (:mod:`abstopk_mini.train`, which re-exports both).

Every field has a default that trains a good SAE from an ``[N, d_in]`` tensor alone; ``None`` means
"choose from the data and the SAE" (the field's docstring says how).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .limits import check_seed

__all__ = ["TrainConfig", "lr_at", "LR_SCHEDULES", "AUX_SIGNS", "SPARSITY_INITS", "ENCODER_INITS", "OPTIMISER_RECIPE"]

LR_SCHEDULES = ("warmup_decay", "constant")
#: how AuxK scores and decodes dead latents: "activation" as the SAE's own selection (|u| with its
#: sign for a signed SAE, ReLU(u) otherwise); "positive": ReLU(u) for every SAE, so a signed SAE's dead
#: latents feel AuxK only where u > 0 and can leave it by turning negative, as TopK's can
AUX_SIGNS = ("activation", "positive")
#: the version of the default optimiser step, part of every stored SAE's key (abstopk_mini.runs.store.sae_dir):
#: SAEs trained before the gradient was clipped by default (grad_clip) are not served for the new default
OPTIMISER_RECIPE = "adam+grad-clip-1"
#: where a penalty-family SAE starts: at its target L0 (abstopk_mini.sparsity.start_at_target) or as configured
SPARSITY_INITS = ("target", "none")
#: the encoder at the start: W_decᵀ as it is, or scaled to the data (abstopk_mini.encoder_scale)
ENCODER_INITS = ("transpose", "least_squares")


@dataclass
class TrainConfig:
    """Training settings. ``None`` means "choose from the data and the SAE" (see each field).

    Each field's docstring is its documentation and, in ``python -m abstopk_mini train``, its flag's help.
    """

    n_tokens: int | None = None
    """Training tokens; None: max(N, 1000 batches) for a tensor, one pass over an iterable (a harvest)."""
    batch_size: int = 4096
    """Tokens per training step."""
    lr: float | None = None
    """Adam's learning rate; None: 2e-4 / sqrt(d_sae / 2**14)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's two moment decays (beta1, beta2)."""
    adam_eps: float = 6.25e-10
    """Adam's epsilon."""
    grad_clip: float | None = 1.0
    """Scale the gradient down to this global norm before each Adam step when it is larger (None: never). The norm
    stays above 1 through a whole run on Gemma activations, so at 1 every step's gradient reaches Adam with unit
    norm; that lowered the held-out FVU of every activation by 13-32 % at equal steps (results/grad_clip.txt)."""
    warmup_frac: float = 0.05
    """Share of the steps over which the learning rate warms up linearly from 0 (warmup_decay)."""
    decay_frac: float = 0.2
    """Share of the steps at the end over which the learning rate decays linearly to 0 (warmup_decay)."""
    lr_schedule: Literal["warmup_decay", "constant"] = "warmup_decay"
    """warmup_decay: linear warm-up over warmup_frac, linear decay to 0 over decay_frac (lr_at); constant: lr at
    every step."""
    normalize_input: bool = True
    """Scale the input by s so that E||s x||^2 = d_in (s measured on init_sample rows)."""
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    """The decoder bias at the start: the geometric median or the mean of init_sample rows, or zeros."""
    init_sample: int = 32768
    """Rows drawn at the start for the input scale and b_dec (and for the final metrics)."""
    l1_coefficient: float = 0.5
    """relu: weight of the mean l1 norm of z (in scaled units)."""
    l0_coefficient: float = 2.0
    """jumprelu, absjumprelu: weight of the mean L0 (straight-through estimator); with a target L0, of the
    two-sided (2/target)·(L0 − target)² (fixed: the controller steers ReLU's l1_coefficient only)."""
    target_l0: float | None = None
    """relu, (abs)jumprelu: steer the L0 to this (ReLU: its l1 coefficient is adapted; the JumpReLUs: a two-sided
    penalty around it); None: the SAE's k if set, else a fixed one-sided penalty."""
    target_rate: float = 0.05
    """How fast the coefficient adapts: log λ moves by target_rate · clip(log(L0 / target), -1, 1) per step."""
    l0_integral_rate: float = 0.0
    """(abs)jumprelu with a target L0: each step the aim of the two-sided penalty moves by this times (target − batch L0)
    (abstopk_mini.sparsity.next_aim); 0: the aim stays at the target."""
    sparsity_init: Literal["target", "none"] = "target"
    """relu, (abs)jumprelu with a target L0: target: start at it (θ, or ReLU's b_enc, from quantiles of the first
    sample's pre-activations, abstopk_mini.sparsity); none: θ = SAEConfig.threshold_init and b_enc = 0."""
    encoder_init: Literal["transpose", "least_squares"] = "transpose"
    """The encoder at the start: transpose: W_enc = enc_init_scale·W_decᵀ; least_squares: then scaled (with b_enc and
    θ) so the first reconstruction of init_sample has the least-squares size (abstopk_mini.encoder_scale)."""
    sparsity_warmup_frac: float = 0.05
    """Share of the steps over which the sparsity penalty ramps up linearly from 0."""
    aux_k: int | None = None
    """Top-k family: dead latents AuxK lets reconstruct the residual; None: d_in // 2."""
    aux_coef: float = 1 / 32
    """Weight of the AuxK loss (top-k family)."""
    aux_sign: Literal["activation", "positive"] = "activation"
    """AuxK's scores: activation: as the SAE selects (|u| with its sign when signed, else ReLU(u)); positive:
    ReLU(u) for every SAE."""
    dead_tokens: int | None = None
    """A latent is dead when it has not fired for this many tokens; None: min(10M, n_tokens // 10)."""
    seed: int = 0
    """Seed of the SAE's initialisation and of the batch order, in [0, 2**32 - 1]."""
    log_every: int | None = None
    """Steps between history records; None: about 200 records per run."""
    checkpoint_dir: str | None = None
    """Folder of the resumable checkpoint; None: no checkpoint (the train command: its run directory)."""
    checkpoint_every: int | None = None
    """Steps between checkpoints (needs checkpoint_dir); None: none (the train command: every 200 steps)."""
    snapshot_steps: tuple[int, ...] = ()
    """Steps after which the SAE is saved to snapshot_dir/step_NNNNNN (in eval mode)."""
    snapshot_dir: str | None = None
    """Folder of the snapshots (needed with snapshot_steps; the train command: its run directory)."""
    drop_nonfinite: bool = False
    """Drop activation rows that hold NaN or Inf (counted in the history) instead of refusing them."""
    progress: bool = True
    """Show a progress bar on stderr."""
    fast: bool = True
    """Top-k family: the sparse kernels of abstopk_mini.kernels.fast; False: the dense reference path (read by
    SAE.forward_train)."""

    def __post_init__(self):
        check_seed(self.seed, "TrainConfig.seed")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        if self.n_tokens is not None and self.n_tokens < 1:
            raise ValueError(f"n_tokens must be >= 1 (or None); got {self.n_tokens}")
        if self.grad_clip is not None and (isinstance(self.grad_clip, bool) or not isinstance(self.grad_clip, (int, float))
                                           or not (math.isfinite(self.grad_clip) and self.grad_clip > 0)):
            raise ValueError(f"grad_clip must be a finite number > 0, or None for no clipping; got {self.grad_clip!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"lr must be a finite number >= 0 (or None for the default); got {self.lr}")
        if not (isinstance(self.l0_integral_rate, (int, float)) and math.isfinite(self.l0_integral_rate)
                and self.l0_integral_rate >= 0):
            raise ValueError(f"l0_integral_rate must be a finite number >= 0 (0: no integral term); got {self.l0_integral_rate!r}")
        if self.b_dec_init not in ("geometric_median", "mean", "zeros"):
            raise ValueError(f"b_dec_init={self.b_dec_init!r}; choose 'geometric_median', 'mean' or 'zeros'")
        if self.aux_sign not in AUX_SIGNS:
            raise ValueError(f"aux_sign={self.aux_sign!r}; choose one of {AUX_SIGNS}")
        if self.sparsity_init not in SPARSITY_INITS:
            raise ValueError(f"sparsity_init={self.sparsity_init!r}; choose one of {SPARSITY_INITS}")
        if self.encoder_init not in ENCODER_INITS:
            raise ValueError(f"encoder_init={self.encoder_init!r}; choose one of {ENCODER_INITS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r}; choose one of {LR_SCHEDULES}")
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every is set but checkpoint_dir is None; pass checkpoint_dir=...")
        steps = tuple(self.snapshot_steps)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in steps):
            raise ValueError(f"snapshot_steps must be ints >= 1; got {list(steps)}")
        if steps and self.snapshot_dir is None:
            raise ValueError("snapshot_steps is set but snapshot_dir is None; pass snapshot_dir=...")
        self.snapshot_steps = tuple(sorted(set(steps)))


def lr_at(step: int, n_steps: int, lr: float, warmup_frac: float, decay_frac: float, schedule: str = "warmup_decay") -> float:
    """Learning rate at ``step``: linear warm-up, constant, linear decay to 0 at ``n_steps``
    (``schedule="warmup_decay"``), or ``lr`` at every step (``schedule="constant"``)."""
    if schedule == "constant":
        return lr
    if schedule != "warmup_decay":
        raise ValueError(f"schedule={schedule!r}; choose one of {LR_SCHEDULES}")
    warm = max(1, int(warmup_frac * n_steps))
    decay = int(decay_frac * n_steps)
    if step < warm:
        return lr * (step + 1) / warm
    if decay and step >= n_steps - decay:
        return lr * max(0.0, (n_steps - step) / decay)
    return lr
