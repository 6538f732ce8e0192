r"""Training an SAE: ``sae, history = train_sae(cfg, activations)``.

The recipe (Gao et al. 2024 for the top-k family; Bricken et al. 2023 / Rajamanoharan et al.
2024 for the l1 / l0 penalties), with defaults that train a good SAE from an ``[N, d_in]``
tensor and nothing else:

1. **Input scale.** ``s = sqrt(d_in / E‖x‖²)`` from a sample, so that E‖s·x‖² = d_in; stored in
   ``cfg.input_scale`` (the SAE applies it itself; :mod:`~abstopk_mini.interop` folds it into the
   weights on export).
2. **Initialisation.** Unit-norm random decoder rows, ``W_enc = W_decᵀ``, ``b_enc = 0``,
   ``b_dec`` = the geometric median of a sample (a robust centre of the data). ReLU and the
   JumpReLUs start at their target L0: θ (or ReLU's b_enc) from the sample (:mod:`~abstopk_mini.sparsity`).
   ``encoder_init="least_squares"`` then scales the encoder so the first reconstruction has the
   data's size (:mod:`~abstopk_mini.encoder_scale`; default ``"transpose"``: as it is).
3. **Loss.** mse + the activation's own sparsity penalty (``sae.act.penalty_term``: l1 for ReLU,
   the STE l0 for (Abs)JumpReLU, two-sided around a target L0, both warmed up linearly), or AuxK on dead latents for
   the top-k family (whose penalty is None). The loop reads one output type,
   :class:`~abstopk_mini.forward.TrainOutput`, whichever kernel the SAE chose to run.
4. **Optimiser.** Adam, learning rate warm-up over the first 5 % of steps, constant, then linear
   decay to 0 over the last 20 % (``lr_schedule="warmup_decay"``; ``"constant"`` keeps lr
   throughout). Default lr ``2e-4 / sqrt(d_sae / 2**14)``.
5. **Decoder constraint and clipping.** Before each step, the gradient component parallel to each
   decoder row is removed and the gradient is scaled to global norm ``grad_clip`` (1) when larger;
   after it, rows are renormalised to unit norm.
6. **Dead latents.** A latent is dead when it has not fired for ``dead_tokens`` tokens. AuxK
   scores dead latents as the activation selects (``aux_sign="activation"``: |u| with its sign for a
   signed SAE, ReLU(u) otherwise) or by ReLU(u) for every SAE (``aux_sign="positive"``).

Data (:mod:`abstopk_mini.data`): a tensor ``[N, d_in]`` (shuffled each epoch with a seeded generator), a
:class:`~abstopk_mini.lm.shards.ShardDataset` (streamed from disk, its own shuffle each epoch), or
an iterable of ``[b, d_in]`` batches (re-batched to ``batch_size``; pass a re-iterable object to
train for several epochs or to resume). Checkpoints (:mod:`abstopk_mini.checkpoint`) are single
files written atomically; ``resume=path`` continues bit-identically on CPU. Steps 1-2 are
:func:`init_from_sample`; :func:`train_sae` runs the rest in named stages (see its docstring).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import losses
from .checkpoint import (CHECKPOINT_FILE, HISTORY_KEYS, TRAJECTORY_FIELDS, load_checkpoint, restore_optimizer,
                         save_checkpoint, save_snapshot, snapshot_path)
from .data import Batches
from .encoder_scale import fit_encoder_scale
from .evaluate import final_metrics
from .io import remove_stale_tmp
from .nonlinearities import spec
from .sae import SAE, SAEConfig, standardize
from .sparsity import COEF_RANGE, check_final_l0, l0_off_target, next_aim, next_coefficient, start_at_target
from .train_config import AUX_SIGNS, LR_SCHEDULES, TrainConfig, lr_at

__all__ = ["TrainConfig", "AUX_SIGNS", "LR_SCHEDULES", "train_sae", "snapshot_path", "save_snapshot", "init_from_sample", "geometric_median", "lr_at", "input_scale", "CHECKPOINT_FILE"]

#: training stops (FloatingPointError) once the batch mse exceeds this many times its reference
#: value, max(mse at the first step, E‖x_in‖² of that batch). Measured on N(0, I) data, 128 latents:
#: healthy runs peak at 1.6x (lr 0.1, 500x the default lr) and 42x (lr 1, still converging);
#: lr 1e4 reaches 1e18x within the run. 1e3 has a margin of ~25x on both sides.
DIVERGENCE_FACTOR = 1e3
NEAR_ZERO = 1e-6  # E‖x_in‖² < NEAR_ZERO·d_in at a stop: the input is ~0 in the SAE's units (capped scale), not the lr
#: a row whose norm exceeds this many times the median row norm counts as an outlier for the input scale
OUTLIER_NORM_RATIO = 1e3


# --------------------------------------------------------------------------- helpers
def geometric_median(x: torch.Tensor, n_iter: int = 100, tol: float = 1e-7) -> torch.Tensor:
    r"""Weiszfeld's algorithm for :math:`\arg\min_m \sum_i \|x_i - m\|`.  shape: x [N, d] -> [d]"""
    x = x.double()
    m = x.mean(0)
    for _ in range(n_iter):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(1e-12)
        m_new = (w[:, None] * x).sum(0) / w.sum()
        if (m_new - m).norm() <= tol * max(1.0, m.norm().item()):
            m = m_new
            break
        m = m_new
    return m


def input_scale(sample: torch.Tensor, d_in: int) -> float:
    r"""The input scale :math:`s = \sqrt{d_{in} / E\|x\|^2}` of a float64 sample (so E‖s x‖² = d_in).

    Raises ValueError when a few outlier rows would set it: rows whose norm is more than
    ``OUTLIER_NORM_RATIO`` (1e3) times the median (non-zero) row norm, together holding more than
    half of Σ‖x‖². Such rows (a corrupt token, an unfiltered BOS) would shrink every other row to
    ~0 in the SAE's units and nothing would train. The scale itself is computed as before, so no
    existing SAE changes.

    shape: sample [N, d_in] (float64) -> float
    """
    sq = sample.pow(2).sum(-1)
    nonzero = sq[sq > 0]
    if nonzero.numel():
        median = nonzero.median()
        outlier = sq > OUTLIER_NORM_RATIO**2 * median
        share = (sq[outlier].sum() / sq.sum()).item()
        if share > 0.5:
            raise ValueError(
                f"{int(outlier.sum())} of the {sq.numel()} activation rows sampled for the input scale have a norm "
                f"over {OUTLIER_NORM_RATIO:g}x the median row norm (largest {sq.max().sqrt().item():.3g}, median "
                f"{median.sqrt().item():.3g}) and hold {100 * share:.1f} % of E‖x‖², so they would set the input "
                "scale and squash every other row to ~0. Remove or clip those rows (e.g. keep rows with "
                "x.norm(dim=1) below a bound), or pass normalize_input=False with an SAEConfig(input_scale=...) of "
                "your choice."
            )
    return math.sqrt(d_in / sq.mean().clamp_min(1e-30).item())


def init_from_sample(cfg: SAEConfig, sample: torch.Tensor, tcfg: TrainConfig | None = None, *,
                     b_dec: torch.Tensor | None = None) -> SAE:
    r"""A fresh SAE set up from a sample of its data: steps 1 and 2 of the module docstring.

    With ``cfg.input_unit_norm`` the sample is standardised first (the scale and ``b_dec`` live in
    the space the SAE codes). ``tcfg.normalize_input``: ``cfg.input_scale`` = :func:`input_scale` of
    the sample (else cfg's is kept). ``b_dec``: ``tcfg.b_dec_init`` of the scaled sample (geometric
    median, mean or zeros), or the given centre (unscaled) times the scale. One initialisation for
    :func:`train_sae`, :func:`~abstopk_mini.distributed.train_sae_ddp` (a sample gathered from every
    rank) and the sweep's frozen-centre variants (:mod:`abstopk_mini.runs.sweep`).

    shape: sample [n, d_in], b_dec [d_in] -> SAE
    """
    tcfg = tcfg or TrainConfig()
    raw, sample = sample, sample.double()
    if cfg.input_unit_norm:
        sample = standardize(sample)[0]
    if tcfg.normalize_input:
        cfg = dataclasses.replace(cfg, input_scale=input_scale(sample, cfg.d_in))
    sae = SAE(cfg)
    sample = sample * cfg.input_scale
    with torch.no_grad():
        if b_dec is not None:
            sae.b_dec.copy_(b_dec * cfg.input_scale)
        elif tcfg.b_dec_init == "geometric_median":
            sae.b_dec.copy_(geometric_median(sample))
        elif tcfg.b_dec_init == "mean":
            sae.b_dec.copy_(sample.mean(0))
    target = target_l0(cfg, tcfg)
    if tcfg.sparsity_init == "target" and target is not None:
        start_at_target(sae, raw, target)  # θ (or ReLU's b_enc) so that the first batch has ~target L0
    if tcfg.encoder_init == "least_squares":
        fit_encoder_scale(sae, raw)  # W_enc, b_enc, θ times c: the same latents fire, x̂ has the data's size
    return sae


def target_l0(cfg: SAEConfig, tcfg: TrainConfig) -> float | None:
    """The L0 the penalty families are steered to: ``tcfg.target_l0``, else ``cfg.k``; None for the
    top-k family (k is its L0) and for a penalty SAE given neither (its coefficient is then fixed)."""
    if spec(cfg.activation).aux:
        return None
    return tcfg.target_l0 if tcfg.target_l0 is not None else cfg.k


# --------------------------------------------------------------------------- the loop
def train_sae(cfg: SAEConfig, activations, train_cfg: TrainConfig | None = None, *,
              resume: str | os.PathLike | None = None, sae: SAE | None = None, sync=None, **overrides) -> tuple[SAE, dict]:
    """Train an SAE on ``activations`` and return ``(sae, history)``.

    activations: tensor [N, d_in] or an iterable of [b, d_in] tensors (:class:`~abstopk_mini.data.Batches`).
    train_cfg / overrides: a :class:`TrainConfig`, or its fields as keywords
    (``train_sae(cfg, x, n_tokens=10**6, lr=1e-3)``).
    resume: a checkpoint file or a directory holding ``checkpoint.safetensors``; training continues from it
    (the checkpoint must be of this ``cfg`` and these settings, :func:`~abstopk_mini.checkpoint.load_checkpoint`).
    sae: start from this SAE instead of a fresh one (its config must match ``cfg``'s shape).
    sync: a :class:`~abstopk_mini.distributed.Sync` when this is one rank of a DDP run (see
    :func:`~abstopk_mini.distributed.train_sae_ddp`); None for one process.
    history: dict of lists logged every ``log_every`` steps (``step``, ``tokens``, ``loss``,
    ``mse``, ``fvu``, ``l0``, ``aux``, ``sparsity``, ``lr``, ``dead_frac``: each of one training batch)
    and run totals, among them ``final_fvu`` / ``final_l0`` of the trained SAE on a fixed sample of
    the training data (:func:`~abstopk_mini.evaluate.final_metrics`; not the last batch's, which may be partial).

    The stages, in order: the starting SAE (:func:`_start`), the length of the run
    (:func:`_length`), the optimiser and counters (:func:`_set_up`), the steps (:func:`_steps`:
    :func:`_loss_terms`, :func:`_guard`, :func:`_track_dead`, :func:`_steer_l0`, :func:`_record`,
    checkpoints), and the run totals (:func:`_finish`).
    """
    if not isinstance(cfg, SAEConfig):
        raise TypeError(f"cfg must be an SAEConfig; got {type(cfg).__name__}")
    tcfg = dataclasses.replace(train_cfg or TrainConfig(), **overrides)
    batches = Batches(activations, cfg.d_in, tcfg.batch_size, tcfg.seed, tcfg.drop_nonfinite)
    is_main = sync is None or sync.is_main
    if tcfg.checkpoint_dir is not None and is_main:
        remove_stale_tmp(tcfg.checkpoint_dir, CHECKPOINT_FILE)  # of a write killed mid-way (SIGKILL)
    state = load_checkpoint(resume, cfg, _trajectory(tcfg)) if resume is not None else None
    sae = _start(cfg, batches, tcfg, state, sae)
    run = _set_up(sae, batches, tcfg, _length(tcfg, batches, state), state)

    from tqdm.auto import tqdm

    bar = tqdm(total=run.n_steps, initial=run.step, disable=not (tcfg.progress and is_main), file=sys.stderr,
               desc=f"train {sae.cfg.activation}")
    t0 = time.perf_counter()
    sample = batches.sample(tcfg.init_sample)  # for the final metrics; taken first, as a one-shot source is read once
    sae.train()
    _steps(run, batches, tcfg, sync, bar)
    bar.close()
    _finish(run, batches, tcfg, state, time.perf_counter() - t0, is_main, sample)
    sae.eval()
    return sae, run.history


@dataclass
class _Run:
    """What the stages of one :func:`train_sae` call share and advance."""

    sae: SAE
    opt: torch.optim.Optimizer
    n_steps: int
    lr: float  # the peak learning rate
    aux_k: int
    dead_tokens: int
    log_every: int
    coef0: float  # the configured penalty coefficient
    coef: float  # the L0 controller's current one
    target_l0: float | None
    since_fired: torch.Tensor  # tokens since each latent last fired  shape: [d_sae]
    history: dict
    step: int = 0
    tokens: int = 0
    last_ckpt: int | None = None
    mse_limit: float | None = None  # DIVERGENCE_FACTOR x the reference mse, set at this call's first step
    grad_norm: torch.Tensor | float = math.nan  # the last step's global gradient norm before clipping


def _start(cfg: SAEConfig, batches: Batches, tcfg: TrainConfig, state: dict | None, sae: SAE | None) -> SAE:
    """The SAE to train: the checkpoint's, else the one given, else one set up from a sample."""
    if state is not None:
        sae = SAE(SAEConfig.from_dict(state["cfg"]))
        sae.load_state_dict(state["sae"])
        return sae
    if sae is None:
        return init_from_sample(cfg, batches.sample(tcfg.init_sample), tcfg)
    if (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.activation) != (cfg.d_in, cfg.d_sae, cfg.activation):
        raise ValueError("sae= does not match cfg (d_in, d_sae, activation); pass a matching SAE or none")
    return sae


def _length(tcfg: TrainConfig, batches: Batches, state: dict | None) -> int:
    """Steps of the run: the checkpoint's; else ``n_tokens / batch_size``; for a tensor without
    ``n_tokens``, max(N, 1000 batches); for an iterable, one pass."""
    if state is not None:
        return state["n_steps"]
    if tcfg.n_tokens is not None:
        return math.ceil(int(tcfg.n_tokens) / tcfg.batch_size)
    if batches.tensor is not None:
        return math.ceil(max(batches.tensor.shape[0], 1000 * tcfg.batch_size) / tcfg.batch_size)
    if not batches.reiterable:
        raise ValueError(
            "activations is a one-shot iterator and n_tokens is None, so the length of training "
            "(and the learning-rate schedule) is unknown; pass n_tokens=... or a re-iterable source"
        )
    return batches.count_steps()


def _set_up(sae: SAE, batches: Batches, tcfg: TrainConfig, n_steps: int, state: dict | None) -> _Run:
    """Optimiser, defaults that depend on the run, the penalty and its controller (from the
    activation's :data:`~abstopk_mini.nonlinearities.SPECS` entry), counters; restored on resume."""
    cfg, act = sae.cfg, spec(sae.cfg.activation)
    lr = tcfg.lr if tcfg.lr is not None else 2e-4 / math.sqrt(cfg.d_sae / 2**14)
    # fused Adam: one kernel per parameter instead of ~8 passes (4x faster on CPU, the same numbers)
    fused = sae.W_enc.device.type in ("cpu", "cuda")
    # eps under float16's smallest normal number rounds to ~0 there, and a clipped gradient's square underflows:
    # Adam's denominator would be 0 (inf steps); float32, bfloat16 and float64 keep the eps asked for
    eps = max(tcfg.adam_eps, torch.finfo(sae.W_enc.dtype).tiny)
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=tcfg.adam_betas, eps=eps, fused=fused)
    coef0 = getattr(tcfg, act.coefficient_field)
    run = _Run(
        sae, opt, n_steps, lr, aux_k=tcfg.aux_k or max(1, cfg.d_in // 2),
        dead_tokens=tcfg.dead_tokens or max(1, min(10_000_000, n_steps * tcfg.batch_size // 10)),
        log_every=tcfg.log_every or max(1, n_steps // 200), coef0=coef0, coef=coef0, target_l0=target_l0(cfg, tcfg),
        since_fired=torch.zeros(cfg.d_sae, dtype=torch.long, device=sae.W_enc.device),
        history={key: [] for key in HISTORY_KEYS} | {"coef_saturated_steps": 0},
    )
    if state is not None:
        restore_optimizer(opt, state["optimizer"])
        run.step, run.tokens, run.history, run.coef = state["step"], state["tokens"], state["history"], state["coef"]
        run.history.setdefault("coef_saturated_steps", 0)
        run.since_fired = state["since_fired"].to(sae.W_enc.device)
        run.last_ckpt = state["step"]
        batches.n_dropped = run.history.get("n_dropped_nonfinite", 0)
    if run.target_l0 is not None and act.module.steers_itself:  # where the two-sided penalty pulls (sparsity.next_aim)
        run.history.setdefault("l0_aim", float(run.target_l0))
    return run


def _steps(run: _Run, batches: Batches, tcfg: TrainConfig, sync, bar) -> None:
    """Train from ``run.step`` to ``run.n_steps`` (or the end of a one-pass source)."""
    sae, opt = run.sae, run.opt
    device, dtype = sae.W_enc.device, sae.W_enc.dtype
    is_main = sync is None or sync.is_main
    data = batches(run.step, run.tokens)
    while run.step < run.n_steps:
        try:
            x = next(data)
        except StopIteration:
            break
        x = x.to(device=device, dtype=dtype, non_blocking=True)
        for group in opt.param_groups:
            group["lr"] = lr_at(run.step, run.n_steps, run.lr, tcfg.warmup_frac, tcfg.decay_frac, tcfg.lr_schedule)
        out = sae.forward_train(x, sync=sync, fast=tcfg.fast)  # the SAE picks its kernel
        mse, sparsity, aux = _loss_terms(run, tcfg, out)
        loss = mse + sparsity + aux
        _guard(run, tcfg, out, mse, loss, bar)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if sync is not None:
            sync.all_reduce_grads(sae)
        sae.remove_parallel_grad()
        run.grad_norm = torch.nn.utils.clip_grad_norm_(sae.parameters(), tcfg.grad_clip or math.inf)  # no host sync
        opt.step()
        sae.post_step()
        with torch.no_grad():
            _track_dead(run, out, x, sync)
            _steer_l0(run, tcfg, out, sync)
        run.step += 1
        run.tokens += x.shape[0]
        if run.step % run.log_every == 0 or run.step == run.n_steps:
            _record(run, out, loss, mse, sparsity, aux, bar)
        bar.update(1)
        if run.step in tcfg.snapshot_steps and is_main:
            save_snapshot(tcfg.snapshot_dir, sae, run.step, run.tokens)
        if tcfg.checkpoint_every and run.step % tcfg.checkpoint_every == 0 and run.step < run.n_steps and is_main:
            run.history["n_dropped_nonfinite"] = batches.n_dropped
            save_checkpoint(tcfg.checkpoint_dir, sae, opt, run.step, run.tokens, run.n_steps, run.since_fired,
                             run.history, run.coef, train=_trajectory(tcfg))
            run.last_ckpt = run.step


def _loss_terms(run: _Run, tcfg: TrainConfig, out) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mse, sparsity, aux): the activation's penalty (``sae.act.penalty_term``: l1 of z, or the STE
    l0 of the JumpReLUs), warmed up linearly over ``sparsity_warmup_frac``; or, where the activation
    has none (the top-k family), AuxK on dead latents, computed on the kernel that made ``out``."""
    mse = losses.mse(out.x_in, out.x_hat)
    sparsity = aux = mse.new_zeros(())
    term = run.sae.act.penalty_term(out, run.history.get("l0_aim", run.target_l0))
    if term is not None:
        warm = min(1.0, (run.step + 1) / max(1, tcfg.sparsity_warmup_frac * run.n_steps))
        sparsity = run.coef * warm * term
    else:
        dead = run.since_fired >= run.dead_tokens
        signed = run.sae.cfg.signed and tcfg.aux_sign == "activation"
        aux = tcfg.aux_coef * out.auxk_loss(run.sae, dead, run.aux_k, signed)
    return mse, sparsity, aux


def _guard(run: _Run, tcfg: TrainConfig, out, mse: torch.Tensor, loss: torch.Tensor, bar) -> None:
    """Stop (FloatingPointError) on a non-finite loss or an mse over DIVERGENCE_FACTOR x its reference."""
    if run.mse_limit is None:
        run.mse_limit = DIVERGENCE_FACTOR * max(mse.item(), out.x_in.detach().double().pow(2).sum(-1).mean().item())
    if not ((mse > run.mse_limit) | ~torch.isfinite(loss)).item():  # one device sync per step
        return
    exploded = bool(mse > run.mse_limit)
    where = (f"step {run.last_ckpt}, {Path(tcfg.checkpoint_dir) / CHECKPOINT_FILE}" if run.last_ckpt is not None
             else "none saved (set checkpoint_dir/checkpoint_every)")
    bar.close()
    what = (f"diverged: the batch mse reached {mse.item():.4g}, over {DIVERGENCE_FACTOR:g}x its reference "
            f"{run.mse_limit / DIVERGENCE_FACTOR:.4g} at this run's first step," if exploded and torch.isfinite(loss)
            else f"became {loss.item()}")
    d_in, size = out.x_in.shape[-1], out.x_in.detach().double().pow(2).sum(-1).mean().item()  # E‖x_in‖² ~ d_in normally
    if exploded and size < NEAR_ZERO * d_in:
        raise FloatingPointError(
            f"training stopped at step {run.step}: the activations are (near) zero — E‖x‖² of this batch is {size:.3g} in "
            f"the SAE's units (input scale {run.sae.cfg.input_scale:.3g}; ~d_in = {d_in} expected), so the SAE's own "
            f"weights give an mse ({mse.item():.3g}) over {DIVERGENCE_FACTOR:g}x the data's. A lower lr will not help: "
            "check the activations (all zero, or scaled by ~1e-16 or less), rescale them, or pass normalize_input=False "
            "with an SAEConfig(input_scale=...) that brings them to ~1.")
    raise FloatingPointError(
        f"training loss {what} at step {run.step} (mse={mse.item():.4g}, lr={run.opt.param_groups[0]['lr']:.3g}); "
        f"last good checkpoint: {where}. Try a lower lr or check the activations."
    )


def _track_dead(run: _Run, out, x: torch.Tensor, sync) -> None:
    """Advance the tokens-since-fired counters by the (global) batch; reset those that fired."""
    fired = out.fired()
    if sync is not None:
        fired = sync.any(fired)
    run.since_fired += x.shape[0] * (sync.world_size if sync is not None else 1)
    run.since_fired[fired] = 0


def _steer_l0(run: _Run, tcfg: TrainConfig, out, sync) -> None:
    """The L0 controller (:func:`~abstopk_mini.sparsity.next_coefficient`): too dense -> a larger
    penalty coefficient; steps it spends at a bound of its range are counted (``coef_saturated_steps``).
    Activations whose penalty pulls L0 to the target itself (``steers_itself``: the JumpReLUs) keep λ fixed
    and move the penalty's aim instead (:func:`~abstopk_mini.sparsity.next_aim`)."""
    if run.target_l0 is None:
        return
    batch_l0 = out.mean_l0()
    if sync is not None:
        batch_l0 = sync.mean(batch_l0)
    if run.sae.act.steers_itself:
        run.history["l0_aim"] = next_aim(run.history["l0_aim"], batch_l0, run.target_l0, tcfg.l0_integral_rate)
        return
    run.coef, at_bound = next_coefficient(run.coef, batch_l0, run.target_l0, tcfg.target_rate, run.coef0)
    run.history["coef_saturated_steps"] += int(at_bound)


def _record(run: _Run, out, loss, mse, sparsity, aux, bar) -> None:
    """Append one record to the history and show it on the progress bar."""
    rec = {
        "step": run.step, "tokens": run.tokens, "loss": loss.item(), "mse": mse.item(),
        "fvu": losses.batch_fvu(out.x_in, out.x_hat).item(),
        "l0": out.mean_l0(),
        "aux": float(aux.detach()), "sparsity": float(sparsity.detach()), "coef": run.coef,
        "lr": run.opt.param_groups[0]["lr"], "dead_frac": (run.since_fired >= run.dead_tokens).double().mean().item(),
        "grad_norm": float(run.grad_norm),
    }
    for key, value in rec.items():
        run.history[key].append(value)
    bar.set_postfix(loss=f"{rec['loss']:.4g}", fvu=f"{rec['fvu']:.4f}", l0=f"{rec['l0']:.1f}", dead=f"{rec['dead_frac']:.2f}")


def _trajectory(tcfg: TrainConfig) -> dict:
    """The settings a checkpoint records and a resumed run must repeat (:data:`TRAJECTORY_FIELDS`)."""
    return {name: getattr(tcfg, name) for name in TRAJECTORY_FIELDS}


def _finish(run: _Run, batches: Batches, tcfg: TrainConfig, state: dict | None, wall_s: float, is_main: bool,
            sample: torch.Tensor) -> None:
    """The run totals and the final metrics (:func:`~abstopk_mini.evaluate.final_metrics`) into the history, and the last checkpoint."""
    run.history.update(final_metrics(run.sae, sample))
    run.history.update(
        n_steps=run.step, n_tokens=run.tokens, lr_max=run.lr, input_scale=run.sae.cfg.input_scale,
        dead_tokens=run.dead_tokens, n_dropped_nonfinite=batches.n_dropped,
        wall_time_s=wall_s + (run.history.get("wall_time_s", 0.0) if state else 0.0),
        final_dead_frac=(run.since_fired >= run.dead_tokens).double().mean().item(),
        target_l0=run.target_l0, l0_off_target=l0_off_target(run.history["final_l0"], run.target_l0),
    )
    if is_main:
        check_final_l0(run.sae.cfg.activation, run.history["final_l0"], run.target_l0,
                       run.history["coef_saturated_steps"], run.step)
    if tcfg.checkpoint_dir is not None and is_main:
        save_checkpoint(tcfg.checkpoint_dir, run.sae, run.opt, run.step, run.tokens, run.n_steps, run.since_fired,
                         run.history, run.coef, train=_trajectory(tcfg))
