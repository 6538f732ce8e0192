r"""Training an SAE: ``sae, history = train_sae(cfg, activations)``.

The recipe (Gao et al. 2024 for the top-k family; Bricken et al. 2023 / Rajamanoharan et al.
2024 for the l1 / l0 penalties), with defaults that train a good SAE from an ``[N, d_in]``
tensor and nothing else:

1. **Input scale.** ``s = sqrt(d_in / E‖x‖²)`` from a sample, so that E‖s·x‖² = d_in; stored in
   ``cfg.input_scale`` (the SAE applies it itself; :mod:`~abstopk_mini.interop` folds it into the
   weights on export).
2. **Initialisation.** Unit-norm random decoder rows, ``W_enc = W_decᵀ``, ``b_enc = 0``,
   ``b_dec`` = the geometric median of a sample (a robust centre of the data).
3. **Loss.** mse + sparsity term (:mod:`~abstopk_mini.losses`): l1 for ReLU, the STE l0 for
   (Abs)JumpReLU (both coefficients warmed up linearly), AuxK on dead latents for the top-k family.
4. **Optimiser.** Adam, learning rate warm-up over the first 5 % of steps, constant, then linear
   decay to 0 over the last 20 % (``lr_schedule="warmup_decay"``; ``"constant"`` keeps lr
   throughout). Default lr ``2e-4 / sqrt(d_sae / 2**14)``.
5. **Decoder constraint.** Before each step, the gradient component parallel to each decoder row
   is removed; after it, rows are renormalised to unit norm.
6. **Dead latents.** A latent is dead when it has not fired for ``dead_tokens`` tokens.

Data: a tensor ``[N, d_in]`` (shuffled each epoch with a seeded generator), a
:class:`~abstopk_mini.lm.shards.ShardDataset` (streamed from disk, its own shuffle each epoch), or
an iterable of ``[b, d_in]`` batches (re-batched to ``batch_size``; pass a re-iterable object to
train for several epochs or to resume). Checkpoints are single files written
atomically; ``resume=path`` continues bit-identically on CPU.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch

from .kernels import fast
from . import losses
from .nonlinearities import K_ACTIVATIONS, THRESHOLD_ACTIVATIONS
from .io import atomic_write, remove_stale_tmp
from .sae import SAE, SAEConfig, standardize

__all__ = ["TrainConfig", "train_sae", "geometric_median", "lr_at", "input_scale", "CHECKPOINT_FILE"]

CHECKPOINT_FILE = "checkpoint.pt"
LR_SCHEDULES = ("warmup_decay", "constant")
COEF_RANGE = 1e3  # the L0 controller keeps its coefficient within [c0 / 1e3, c0 * 1e3] of the configured one
#: training stops (FloatingPointError) once the batch mse exceeds this many times its reference
#: value, max(mse at the first step, E‖x_in‖² of that batch). Measured on N(0, I) data, 128 latents:
#: healthy runs peak at 1.6x (lr 0.1, 500x the default lr) and 42x (lr 1, still converging);
#: lr 1e4 reaches 1e18x within the run. 1e3 has a margin of ~25x on both sides.
DIVERGENCE_FACTOR = 1e3
#: a row whose norm exceeds this many times the median row norm counts as an outlier for the input scale
OUTLIER_NORM_RATIO = 1e3


@dataclass
class TrainConfig:
    """Training settings. ``None`` means "choose from the data and the SAE" (see each field)."""

    n_tokens: int | None = None  # None: max(N, 1000 batches) for a tensor; one pass for an iterable
    batch_size: int = 4096
    lr: float | None = None  # None: 2e-4 / sqrt(d_sae / 2**14)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 6.25e-10
    warmup_frac: float = 0.05
    decay_frac: float = 0.2
    lr_schedule: str = "warmup_decay"  # "warmup_decay": linear warm-up over warmup_frac, linear decay to 0 over decay_frac (lr_at); "constant": lr at every step
    normalize_input: bool = True
    b_dec_init: str = "geometric_median"  # or "mean" or "zeros"
    init_sample: int = 32768
    l1_coefficient: float = 0.5  # relu: weight of the mean l1 norm of z (in scaled units)
    l0_coefficient: float = 2.0  # (abs)jumprelu: weight of the mean l0 (STE)
    target_l0: float | None = None  # relu/(abs)jumprelu: adapt the coefficient towards this L0; None: cfg.k if set
    target_rate: float = 0.05  # how fast the coefficient adapts (log-scale step per unit of relative L0 error)
    sparsity_warmup_frac: float = 0.05
    aux_k: int | None = None  # None: d_in // 2
    aux_coef: float = 1 / 32
    dead_tokens: int | None = None  # None: min(10M, n_tokens // 10)
    seed: int = 0
    log_every: int | None = None  # None: about 200 records per run
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None  # steps
    drop_nonfinite: bool = False
    progress: bool = True
    fast: bool = True  # top-k family: sparse kernels of abstopk_mini.kernels.fast; False: the dense reference path

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        if self.n_tokens is not None and self.n_tokens < 1:
            raise ValueError(f"n_tokens must be >= 1 (or None); got {self.n_tokens}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"lr must be a finite number >= 0 (or None for the default); got {self.lr}")
        if self.b_dec_init not in ("geometric_median", "mean", "zeros"):
            raise ValueError(f"b_dec_init={self.b_dec_init!r}; choose 'geometric_median', 'mean' or 'zeros'")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r}; choose one of {LR_SCHEDULES}")
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every is set but checkpoint_dir is None; pass checkpoint_dir=...")


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


def _check_tensor(x, d_in: int, where: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where} must be a torch.Tensor [N, d_in] or an iterable of them; got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{where} has dtype {x.dtype}; SAEs train on real floating-point activations — use x.float()")
    if x.ndim != 2:
        raise ValueError(f"{where} must be 2-D [N, d_in]; got shape {tuple(x.shape)} (flatten tokens first: x.reshape(-1, d_in))")
    if x.shape[1] != d_in:
        raise ValueError(f"{where} has width {x.shape[1]} but cfg.d_in={d_in}; build the SAEConfig with d_in={x.shape[1]}")


def _finite_rows(x: torch.Tensor, drop: bool, where: str) -> tuple[torch.Tensor, int]:
    ok = torch.isfinite(x).all(dim=1)
    n_bad = int((~ok).sum())
    if n_bad and not drop:
        raise ValueError(
            f"{where} has {n_bad} row(s) with NaN or Inf out of {x.shape[0]}; clean them or pass "
            "drop_nonfinite=True (CLI: train --drop-nonfinite) to drop them (the count goes into "
            "history['n_dropped_nonfinite'])"
        )
    return (x[ok] if n_bad else x), n_bad


class _Batches:
    """Yields training batches from step ``start`` on, deterministically, and counts dropped rows."""

    def __init__(self, data, d_in: int, batch_size: int, seed: int, drop_nonfinite: bool):
        self.d_in, self.B, self.seed, self.drop = d_in, batch_size, seed, drop_nonfinite
        self.n_dropped = 0
        if isinstance(data, torch.Tensor):
            _check_tensor(data, d_in, "activations")
            data, self.n_dropped = _finite_rows(data, drop_nonfinite, "activations")
            if data.shape[0] == 0:
                raise ValueError("activations is empty (0 usable rows); pass at least one row")
            self.tensor, self.source = data, None
        else:
            if not (isinstance(data, Iterable) or hasattr(data, "iter_epoch")):
                raise TypeError(f"activations must be a tensor [N, d_in] or an iterable of batches; got {type(data).__name__}")
            self.tensor, self.source = None, data
        self.epochs = hasattr(data, "iter_epoch")  # e.g. a ShardDataset: its own order per epoch
        self.reiterable = self.tensor is not None or self.epochs or iter(data) is not data

    def sample(self, n: int) -> torch.Tensor:
        """Up to n rows from the start of the data (for the input scale and b_dec)."""
        if self.tensor is not None:
            gen = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(self.tensor.shape[0], generator=gen)[:n]
            return self.tensor[idx]
        if not self.reiterable:  # a one-shot iterator: keep what we read and put it back in front
            it, head, got = iter(self.source), [], 0
            for batch in it:
                head.append(batch)
                got += batch.shape[0] if isinstance(batch, torch.Tensor) else 0
                if got >= n:
                    break
            self.source = itertools.chain(head, it)
            self._head = head
        rows, got = [], 0
        for batch in self._raw_batches(epoch=0, peek=True):
            rows.append(batch)
            got += batch.shape[0]
            if got >= n:
                break
        if not rows:
            raise ValueError("activations is empty (the iterable yielded no rows)")
        return torch.cat(rows)[:n]

    def _raw_batches(self, epoch: int, peek: bool = False) -> Iterator[torch.Tensor]:
        if peek and not self.reiterable:
            source = self._head
        elif self.epochs:
            source = self.source.iter_epoch(epoch, seed=self.seed)
        else:
            source = self.source
        for i, batch in enumerate(source):
            where = f"batch {i} of epoch {epoch} of activations"
            _check_tensor(batch, self.d_in, where)
            batch, n_bad = _finite_rows(batch, self.drop, where)
            if not peek:
                self.n_dropped += n_bad
            if batch.shape[0]:
                yield batch

    def __call__(self, start: int, tokens: int | None = None) -> Iterator[torch.Tensor]:
        """Batches from step ``start`` on; for an iterable, ``tokens`` (the rows consumed by the
        first ``start`` steps) says how many rows to skip, since passes end in a partial batch."""
        if self.tensor is not None:
            N = self.tensor.shape[0]
            per_epoch = math.ceil(N / self.B)
            epoch, offset = divmod(start, per_epoch)
            while True:
                perm = torch.randperm(N, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
                for j in range(offset, per_epoch):
                    yield self.tensor[perm[j * self.B : (j + 1) * self.B]]
                epoch, offset = epoch + 1, 0
        skip, epoch = (start * self.B if tokens is None else tokens), 0
        n_dropped_before = self.n_dropped  # on resume: the count saved with the checkpoint
        while True:
            buf, n_buf = [], 0
            for batch in self._raw_batches(epoch):
                if skip:
                    cut = min(skip, batch.shape[0])
                    batch, skip = batch[cut:], skip - cut
                    if not skip:  # the rows skipped were counted before the checkpoint
                        self.n_dropped = n_dropped_before
                buf.append(batch)
                n_buf += batch.shape[0]
                while n_buf >= self.B:
                    cat = torch.cat(buf)
                    yield cat[: self.B]
                    buf, n_buf = [cat[self.B :]], n_buf - self.B
            if n_buf:
                yield torch.cat(buf)
            if not self.reiterable:
                return
            epoch += 1


# --------------------------------------------------------------------------- the loop
def train_sae(
    cfg: SAEConfig,
    activations,
    train_cfg: TrainConfig | None = None,
    *,
    resume: str | os.PathLike | None = None,
    sae: SAE | None = None,
    sync=None,
    **overrides,
) -> tuple[SAE, dict]:
    """Train an SAE on ``activations`` and return ``(sae, history)``.

    activations: tensor [N, d_in] or an iterable of [b, d_in] tensors.
    train_cfg / overrides: a :class:`TrainConfig`, or its fields as keywords
    (``train_sae(cfg, x, n_tokens=10**6, lr=1e-3)``).
    resume: a checkpoint file or a directory holding ``checkpoint.pt``; training continues from it.
    sae: start from this SAE instead of a fresh one (its config must match ``cfg``'s shape).
    sync: a :class:`~abstopk_mini.distributed.Sync` when this is one rank of a DDP run (see
    :func:`~abstopk_mini.distributed.train_sae_ddp`); None for one process.
    history: dict of lists logged every ``log_every`` steps (``step``, ``tokens``, ``loss``,
    ``mse``, ``fvu``, ``l0``, ``aux``, ``sparsity``, ``lr``, ``dead_frac``) and run totals.
    """
    if not isinstance(cfg, SAEConfig):
        raise TypeError(f"cfg must be an SAEConfig; got {type(cfg).__name__}")
    tcfg = dataclasses.replace(train_cfg or TrainConfig(), **overrides)
    batches = _Batches(activations, cfg.d_in, tcfg.batch_size, tcfg.seed, tcfg.drop_nonfinite)

    if tcfg.n_tokens is not None:
        n_tokens = int(tcfg.n_tokens)
    elif batches.tensor is not None:
        n_tokens = max(batches.tensor.shape[0], 1000 * tcfg.batch_size)
    else:
        n_tokens = None  # one pass over the iterable
    n_steps = math.ceil(n_tokens / tcfg.batch_size) if n_tokens is not None else None

    if tcfg.checkpoint_dir is not None and (sync is None or sync.is_main):
        remove_stale_tmp(tcfg.checkpoint_dir, CHECKPOINT_FILE)  # of a write killed mid-way (SIGKILL)
    state = _load_checkpoint(resume) if resume is not None else None
    if state is not None:
        cfg = SAEConfig.from_dict(state["cfg"])
        sae = SAE(cfg)
        sae.load_state_dict(state["sae"])
        n_steps = state["n_steps"]
    elif sae is None:
        sample = batches.sample(tcfg.init_sample).double()
        if cfg.input_unit_norm:  # scale and b_dec are set in the standardised space the SAE codes
            sample = standardize(sample)[0]
        if tcfg.normalize_input:
            cfg = dataclasses.replace(cfg, input_scale=input_scale(sample, cfg.d_in))
        sae = SAE(cfg)
        sample = sample * cfg.input_scale
        with torch.no_grad():
            if tcfg.b_dec_init == "geometric_median":
                sae.b_dec.copy_(geometric_median(sample))
            elif tcfg.b_dec_init == "mean":
                sae.b_dec.copy_(sample.mean(0))
    elif (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.activation) != (cfg.d_in, cfg.d_sae, cfg.activation):
        raise ValueError("sae= does not match cfg (d_in, d_sae, activation); pass a matching SAE or none")
    cfg = sae.cfg
    if n_steps is None:
        if not batches.reiterable:
            raise ValueError(
                "activations is a one-shot iterator and n_tokens is None, so the length of training "
                "(and the learning-rate schedule) is unknown; pass n_tokens=... or a re-iterable source"
            )
        n_steps = _count_steps(batches)  # one pass over a finite re-iterable
    device = sae.W_enc.device
    dtype = sae.W_enc.dtype

    lr = tcfg.lr if tcfg.lr is not None else 2e-4 / math.sqrt(cfg.d_sae / 2**14)
    # fused Adam: one kernel per parameter instead of ~8 passes (4x faster on CPU, the same numbers)
    fused = device.type in ("cpu", "cuda")
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=tcfg.adam_betas, eps=tcfg.adam_eps, fused=fused)
    aux_k = tcfg.aux_k or max(1, cfg.d_in // 2)
    dead_tokens = tcfg.dead_tokens or max(1, min(10_000_000, n_steps * tcfg.batch_size // 10))
    log_every = tcfg.log_every or max(1, n_steps // 200)

    history = {key: [] for key in ("step", "tokens", "loss", "mse", "fvu", "l0", "aux", "sparsity", "coef", "lr", "dead_frac")}
    step, tokens = 0, 0
    coef = coef0 = tcfg.l1_coefficient if cfg.activation == "relu" else tcfg.l0_coefficient
    target_l0 = None
    if cfg.activation not in K_ACTIVATIONS:
        target_l0 = tcfg.target_l0 if tcfg.target_l0 is not None else cfg.k
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        step, tokens, history, coef = state["step"], state["tokens"], state["history"], state["coef"]
        since_fired = state["since_fired"].to(device)
        batches.n_dropped = history.get("n_dropped_nonfinite", 0)
    last_ckpt = state["step"] if state is not None else None

    from tqdm.auto import tqdm

    # the sparse kernels implement the one-step encoder of am.SAE; subclasses with another encoder opt out
    use_fast = tcfg.fast and getattr(sae, "fast", False) and cfg.activation in K_ACTIVATIONS
    world, is_main = (sync.world_size, sync.is_main) if sync is not None else (1, True)
    bar = tqdm(total=n_steps, initial=step, disable=not (tcfg.progress and is_main), file=sys.stderr, desc=f"train {cfg.activation}")
    t0 = time.perf_counter()
    sae.train()
    data = batches(step, tokens)
    mse_limit = None  # DIVERGENCE_FACTOR x the reference mse, set at this call's first step
    while step < n_steps:
        try:
            x = next(data)
        except StopIteration:
            break
        x = x.to(device=device, dtype=dtype, non_blocking=True)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, n_steps, lr, tcfg.warmup_frac, tcfg.decay_frac, tcfg.lr_schedule)
        out = fast.forward_train(sae, x, sync) if use_fast else sae.forward_train(x)
        mse = losses.mse(out.x_in, out.x_hat)
        warm = min(1.0, (step + 1) / max(1, tcfg.sparsity_warmup_frac * n_steps))
        sparsity = aux = mse.new_zeros(())
        if cfg.activation == "relu":
            sparsity = coef * warm * losses.l1_penalty(out.z)
        elif cfg.activation in THRESHOLD_ACTIVATIONS:
            sparsity = coef * warm * sae.act.l0(out.u).mean()
        elif cfg.activation in K_ACTIVATIONS:
            dead = since_fired >= dead_tokens
            if use_fast:
                aux = tcfg.aux_coef * fast.auxk_loss(sae, out, dead, aux_k)
            else:
                aux = tcfg.aux_coef * losses.auxk_loss(out.x_in - out.x_hat, out.u, sae.W_dec, dead, aux_k, cfg.signed)
        loss = mse + sparsity + aux
        if mse_limit is None:
            mse_limit = DIVERGENCE_FACTOR * max(mse.item(), out.x_in.detach().double().pow(2).sum(-1).mean().item())
        if ((mse > mse_limit) | ~torch.isfinite(loss)).item():  # one device sync per step, as before
            exploded = bool(mse > mse_limit)
            where = f"step {last_ckpt}, {Path(tcfg.checkpoint_dir) / CHECKPOINT_FILE}" if last_ckpt is not None else "none saved (set checkpoint_dir/checkpoint_every)"
            bar.close()
            what = (f"diverged: the batch mse reached {mse.item():.4g}, over {DIVERGENCE_FACTOR:g}x its reference "
                    f"{mse_limit / DIVERGENCE_FACTOR:.4g} at this run's first step," if exploded and torch.isfinite(loss)
                    else f"became {loss.item()}")
            raise FloatingPointError(
                f"training loss {what} at step {step} (mse={mse.item():.4g}, lr={opt.param_groups[0]['lr']:.3g}); "
                f"last good checkpoint: {where}. Try a lower lr or check the activations."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if sync is not None:
            sync.all_reduce_grads(sae)
        sae.remove_parallel_grad()
        opt.step()
        sae.post_step()

        with torch.no_grad():
            fired = out.code.fired() if use_fast else (out.z != 0).any(0)
            if sync is not None:
                fired = sync.any(fired)
            since_fired += x.shape[0] * world
            since_fired[fired] = 0
            if target_l0 is not None:  # multiplicative controller: too dense -> larger coefficient
                batch_l0 = (out.z != 0).sum(-1).double().mean().item()
                if sync is not None:
                    batch_l0 = sync.mean(batch_l0)
                coef *= math.exp(tcfg.target_rate * max(-1.0, min(1.0, batch_l0 / target_l0 - 1.0)))
                # bounded: (abs)jumprelu's threshold moves at most ~lr per Adam step whatever the coefficient,
                # so an unbounded coefficient only grows until the loss overflows
                coef = min(max(coef, coef0 / COEF_RANGE), coef0 * COEF_RANGE)
        step += 1
        tokens += x.shape[0]
        if step % log_every == 0 or step == n_steps:
            rec = {
                "step": step, "tokens": tokens, "loss": loss.item(), "mse": mse.item(),
                "fvu": losses.batch_fvu(out.x_in, out.x_hat).item(),
                "l0": out.code.mean_l0() if use_fast else (out.z != 0).sum(-1).double().mean().item(), "aux": float(aux.detach()), "sparsity": float(sparsity.detach()), "coef": coef,
                "lr": opt.param_groups[0]["lr"], "dead_frac": (since_fired >= dead_tokens).double().mean().item(),
            }
            for key, value in rec.items():
                history[key].append(value)
            bar.set_postfix(loss=f"{rec['loss']:.4g}", fvu=f"{rec['fvu']:.4f}", l0=f"{rec['l0']:.1f}", dead=f"{rec['dead_frac']:.2f}")
        bar.update(1)
        if tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0 and step < n_steps and is_main:
            history["n_dropped_nonfinite"] = batches.n_dropped
            _save_checkpoint(tcfg.checkpoint_dir, sae, opt, step, tokens, n_steps, since_fired, history, coef)
            last_ckpt = step
    bar.close()
    history.update(
        n_steps=step, n_tokens=tokens, lr_max=lr, input_scale=cfg.input_scale, dead_tokens=dead_tokens,
        n_dropped_nonfinite=batches.n_dropped,
        wall_time_s=time.perf_counter() - t0 + (history.get("wall_time_s", 0.0) if state else 0.0),
        final_dead_frac=(since_fired >= dead_tokens).double().mean().item(),
    )
    if tcfg.checkpoint_dir is not None and is_main:
        _save_checkpoint(tcfg.checkpoint_dir, sae, opt, step, tokens, n_steps, since_fired, history, coef)
    sae.eval()
    return sae, history


def _count_steps(batches: _Batches) -> int:
    if batches.epochs and hasattr(batches.source, "__len__"):  # a ShardDataset knows its size
        return max(1, math.ceil(len(batches.source) / batches.B))
    n = sum(b.shape[0] for b in batches._raw_batches(epoch=0))
    batches.n_dropped = 0
    return max(1, math.ceil(n / batches.B))


def _save_checkpoint(directory, sae, opt, step, tokens, n_steps, since_fired, history, coef) -> Path:
    bad = [name for name, p in sae.named_parameters() if not torch.isfinite(p).all()]
    if bad:  # never overwrite the last good checkpoint with a broken state
        raise FloatingPointError(f"parameters {bad} became non-finite by step {step}; the last good checkpoint in {directory} was kept")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "cfg": sae.cfg.to_dict(), "sae": sae.state_dict(), "optimizer": opt.state_dict(),
        "step": step, "tokens": tokens, "n_steps": n_steps, "since_fired": since_fired.cpu(), "history": history,
        "coef": coef,
    }
    target = directory / CHECKPOINT_FILE
    atomic_write(target, lambda tmp: torch.save(state, tmp))
    return target


def _load_checkpoint(path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"resume={str(path)!r}: no checkpoint there (train with checkpoint_dir=... first)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"resume={str(path)!r} could not be read as a checkpoint ({err})") from err
