r"""Named training recipes: ``cfg, train_kw = recipe_configs("paper", d_in=640, activation="abstopk")``.

A recipe is a set of :class:`~abstopk_mini.sae.SAEConfig` and
:class:`~abstopk_mini.train.TrainConfig` options, not a fork of the code: the SAE and the
training loop are the same, the options differ. Use the result as

    sae, history = am.train_sae(cfg, acts, **train_kw)              # or
    sae, history, path = train_on_harvest(acts_dir, cfg, **train_kw)  # content-addressed

``train_kw`` holds only the options that differ from ``TrainConfig``'s defaults, so
``recipe_configs("ours", ...)`` gives ``{}`` and the same run keys as before recipes existed
(its ``cfg`` differs from a plain config only by the label ``recipe="ours"``).

========================  ====================================  ========================================
option                    ``"ours"`` (the defaults)             ``"paper"`` (AbsTopK paper's code)
========================  ====================================  ========================================
selection                 per row (``topk``, ``abstopk``)       per batch: top k·B of ReLU(u) / of |u|
                                                                (``batchtopk``, ``batchabstopk``)
encoder bias              u = (s x − b_dec) W_enc + b_enc       none: u = (x' − b_dec) W_enc
input                     s x, E‖s x‖² = d_in                   x' = (x − μ)/(σ + 1e-5) per token
loss space                s x                                   x' (decoded back: σ x̂' + μ)
b_dec init                geometric median                      0
W_enc init                W_decᵀ (unit columns)                 c W_decᵀ, c = sqrt(2 d_in / d_sae)
Adam                      lr 2e-4/sqrt(d_sae/2^14),             lr 3e-4, betas (0.9, 0.99), eps 1e-8
                          betas (0.9, 0.999), eps 6.25e-10
schedule                  5 % warm-up, 20 % linear decay        constant
gradient clipping         global norm 1 (``grad_clip``)         none (its 1e5 is never reached)
AuxK                      k_aux = d_in/2, coefficient 1/32      k_aux = 512, coefficient 1/32
dead after                n_tokens/10 tokens (≤ 10M)            5 batches (5·B tokens)
width, k, batch           given, given, 4096                    16 d_in, round(d_in/10), 128
========================  ====================================  ========================================

What we read where ("paper" column): a stored copy of the code that trains the paper's SAEs
(``trainer.py`` with ``--sae_name batchabsolutek|batchtopk``, ``sae.py`` with
``BatchAbsoluteKSAE``/``BatchTopKSAE``, derived from bartbussmann/BatchTopK): ``input_unit_norm``
True, ``acts = x_cent @ W_enc`` (``b_enc`` unused), ``b_dec`` zeros,
``W_enc = kaiming_uniform_`` and ``W_dec`` its normalised transpose (so the encoder columns have
expected norm sqrt(2 d_in / d_sae), which ``enc_init_scale`` reproduces; the directions are
uniform-cube rather than Gaussian draws, immaterial for a random start), ``torch.optim.Adam(lr=3e-4,
betas=(0.9, 0.99))`` (torch's eps 1e-8) with no scheduler, ``top_k_aux=512``, ``aux_penalty=1/32``,
``n_batches_to_dead=5``, ``dictionary_factor=16``, ``batch_size=128``.

Not reproduced (differences that remain, each a possible experiment): the paper's code trains in
bfloat16 by default (``--torch_dtype``); its AuxK regresses the *non-detached* residual with no
:math:`\min(n_\text{dead}/k_\text{aux}, 1)` factor and averages over B·d_in rather than summing
over d_in (a constant factor d_in on every term, which Adam ignores up to eps); and its batch variants select over the batch at inference
too, where ours switch to a threshold (:class:`~abstopk_mini.nonlinearities.BatchTopK`) —
``evaluate_sae(sae, x, inference="batch", eval_batch_size=128)`` measures the paper's way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .sae import SAEConfig
from .train import TrainConfig

__all__ = ["Recipe", "RECIPES", "recipe_configs"]


@dataclass(frozen=True)
class Recipe:
    """A named set of options (see the module docstring for the table).

    sae: SAEConfig keywords; train: TrainConfig keywords that differ from the defaults;
    activations: how the family names ``topk``/``abstopk`` map to this recipe's activation;
    width_mult, k_div: d_sae = width_mult·d_in and k = round(d_in / k_div) when not given;
    enc_init_gain: W_enc = c·W_decᵀ with c = sqrt(enc_init_gain·d_in/d_sae) (None: c = 1);
    dead_batches: a latent is dead after this many batches without firing (dead_tokens = this·B).
    """

    name: str
    sae: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    activations: dict = field(default_factory=dict)
    width_mult: int | None = None
    k_div: int | None = None
    enc_init_gain: float | None = None
    dead_batches: int | None = None


RECIPES: dict[str, Recipe] = {
    "ours": Recipe("ours"),
    "paper": Recipe(
        "paper",
        sae={"use_b_enc": False, "input_unit_norm": True},
        train={"batch_size": 128, "lr": 3e-4, "adam_betas": (0.9, 0.99), "adam_eps": 1e-8, "lr_schedule": "constant",
               "grad_clip": None, "aux_k": 512, "aux_coef": 1 / 32, "b_dec_init": "zeros", "normalize_input": False},
        activations={"topk": "batchtopk", "abstopk": "batchabstopk"},
        width_mult=16,
        k_div=10,
        enc_init_gain=2.0,
        dead_batches=5,
    ),
}


def recipe_configs(
    name: str,
    d_in: int,
    activation: str,
    *,
    d_sae: int | None = None,
    k: int | None = None,
    batch_size: int | None = None,
    **sae_kw,
) -> tuple[SAEConfig, dict]:
    """The :class:`SAEConfig` and TrainConfig keywords of recipe ``name`` for activations of width d_in.

    activation: ``"topk"``/``"abstopk"`` name the family and become the recipe's variant
    (``"paper"``: ``batchtopk``/``batchabstopk``); any other activation name is used as given.
    d_sae, k: default to the recipe's width and k (``"ours"`` has none: pass them).
    batch_size: overrides the recipe's batch and moves the dead window with it (``"paper"``: 5·B tokens).
    sae_kw: further SAEConfig fields (seed, dtype, device, ...); they win over the recipe's.
    Returns ``(cfg, train_kw)``, ``cfg.recipe == name``; ``train_kw`` lists only non-default options.
    """
    if name not in RECIPES:
        raise ValueError(f"recipe={name!r} is not known; choose one of {sorted(RECIPES)}")
    r = RECIPES[name]
    if d_sae is None:
        if r.width_mult is None:
            raise ValueError(f"recipe {name!r} has no default width; pass d_sae=... (e.g. d_sae={16 * d_in})")
        d_sae = r.width_mult * d_in
    if k is None:
        if r.k_div is None:
            raise ValueError(f"recipe {name!r} has no default k; pass k=... (e.g. k={max(1, round(d_in / 10))})")
        k = max(1, round(d_in / r.k_div))
    train = dict(r.train)
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        train["batch_size"] = batch_size
    if r.dead_batches is not None:
        train["dead_tokens"] = r.dead_batches * train.get("batch_size", TrainConfig.batch_size)
    sae = dict(r.sae)
    if r.enc_init_gain is not None:
        sae["enc_init_scale"] = math.sqrt(r.enc_init_gain * d_in / d_sae)
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, activation=r.activations.get(activation, activation), k=k,
                    **(sae | sae_kw | {"recipe": name}))
    return cfg, train
