"""The penalty SAE family, ours vs SAELens's training SAEs: held-out FVU against L0, same Gemma activations.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_family.py            # the default budget below
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_family.py --smoke    # d_sae 256, 20 steps of 256

Default budget: d_sae 2048, 586 steps of batch 1024 (one pass over 600,064 harvested tokens), seed 0, 1 thread:

* ours: ``train_sae(SAEConfig(d_in, d_sae, activation=a, k=K), x, ...)`` for a in relu, jumprelu (their L0
  steered to K: ReLU's controller, JumpReLU's two-sided term) and topk (k = K), K in 16, 32, 64;
* SAELens (system ``saelens``): ``StandardTrainingSAE`` (ReLU, ``l1_coefficient``) and ``JumpReLUTrainingSAE``
  (``l0_coefficient``) with its defaults, trained by its own ``SAETrainer.fit()``, one run per coefficient of a grid;
* SAELens with a target (``saelens-target``): its JumpReLU's own L0-targeting mode, ``jumprelu_sparsity_loss_mode=
  "quadratic"`` (Gemma Scope 2: mean over rows of 2/K·(L0_row − K)²), coefficient 1, ``target_l0`` = K, from our θ
  at K (from its θ = 0.01 no coefficient reaches L0 < 70 in this budget: the grid below).

Shared by both systems: the same batches in the same order (our ``train_sae``'s first ``steps``), the same
initial W_enc, W_dec, b_dec and input scale s (SAELens reads s·x; s is folded into its weights afterwards by its
``fold_activation_norm_scaling_factor``), Adam with our lr (2e-4 / sqrt(d_sae / 2**14)) and betas, and our
warm-up / decay schedule (SAELens's "constant" scheduler gives exactly lr_at's values: :func:`saelens_lrs`), the
gradient clipped to global norm 1 (SAELens's default, ours since ``TrainConfig.grad_clip``).

Settings that differ (SAELens's own defaults kept):

=====================  =====================================  =============================================
setting                ours                                   SAELens
=====================  =====================================  =============================================
sparsity strength      L0 controller towards K                fixed coefficient (the grid)
start                  b_enc (ReLU) / θ (JumpReLU) set so     b_enc = 0, θ = 0.01 (jumprelu_init_threshold)
                       the first sample has L0 ≈ K
penalty warm-up        linear over the first 5 % of steps     none (l1_warm_up_steps = l0_warm_up_steps = 0)
decoder                unit-norm rows (parallel gradient      free norm; the l1 term is weighted by ‖W_dec_i‖
                       removed, rows renormalised)
JumpReLU STE           bandwidth 0.2                          bandwidth 0.05, gradient to θ only (DeepMind)
Adam eps               6.25e-10                               1e-8 (torch's default)
=====================  =====================================  =============================================

Coefficient grid (``--relu-coefs``, ``--jumprelu-coefs``), from probes (d_sae 2048, 586 steps of 128; held-out
L0): SAELens ReLU 1 -> L0 62, 2 -> 25, 4 -> 7.4; the grid 0.9, 1.4, 2, 2.8 aims at L0 ≈ 70, 40, 25, 14. SAELens
JumpReLU 0.01 -> 229, 0.1 -> 80, 1 -> 71, 100 -> 75: from θ = 0.01, with the L0 term reaching θ alone and Adam
moving θ by ~lr per step, no coefficient reaches 16–64 in this budget; the grid 0.01, 0.03, 0.1, 1 spans what it
reaches (its FVU at L0 = 32 is then None, not bracketed).

Evaluation, the same for every SAE, with our code: SAELens's SAE goes through its ``save_model`` and
:func:`abstopk_mini.interop.from_saelens`, then :func:`abstopk_mini.evaluate.evaluate_sae` on the held-out rows
(FVU, L0, never-firing share); ``--spliced`` adds loss recovered (:func:`abstopk_mini.lm.splice.evaluate_many`,
as ``runs/reproduce.py``). One JSON line per SAE goes to ``--out`` with the harvest's model and layer; the
table printed last gives each system's FVU at L0 = 32 (linear in log L0 between the bracketing points).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Iterator

import torch

import abstopk_mini as am
from abstopk_mini.data import Batches
from abstopk_mini.evaluate import evaluate_sae
from abstopk_mini.interop import from_saelens
from abstopk_mini.io import atomic_write
from abstopk_mini.train import TrainConfig, init_from_sample

ACTS = "/work/runs/acts/gemma-3-270m-L6-train-235222b195"
HELDOUT = "/work/runs/acts/gemma-3-270m-L6-heldout-3772009511"
OURS = ("relu", "jumprelu", "topk")
#: our activation -> SAELens's architecture and the name of its coefficient
SAELENS = {"relu": ("standard", "l1_coefficient"), "jumprelu": ("jumprelu", "l0_coefficient")}
GRID = {"relu": (0.9, 1.4, 2.0, 2.8), "jumprelu": (0.01, 0.03, 0.1, 1.0)}
L0_AT = 32.0
#: SAELens's default l0_coefficient, used for its quadratic (target-L0) mode
TARGET_COEF = 1.0
SYSTEMS = ("ours", "saelens", "saelens-target")


@dataclass
class Budget:
    """One benchmark's sizes. ks: ours' targets (topk's k); grid: SAELens's coefficients per activation."""

    d_sae: int = 2048
    steps: int = 586
    batch: int = 1024
    seed: int = 0
    ks: tuple[int, ...] = (16, 32, 64)
    grid: dict = field(default_factory=lambda: dict(GRID))
    systems: tuple[str, ...] = SYSTEMS
    activations: tuple[str, ...] = OURS

    def __post_init__(self):
        for name in ("d_sae", "steps", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if any(isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= self.d_sae for k in self.ks) or not self.ks \
                or len(set(self.ks)) < len(self.ks):
            raise ValueError(f"ks must be distinct ints in [1, d_sae={self.d_sae}]; got {list(self.ks)}")
        for act, coefs in self.grid.items():
            if act not in SAELENS or not coefs or len(set(coefs)) < len(coefs) \
                    or not all(isinstance(c, (int, float)) and math.isfinite(c) and c > 0 for c in coefs):
                raise ValueError(f"grid[{act!r}] must be distinct positive finite coefficients, for one of {sorted(SAELENS)}; "
                                 f"got {coefs!r}")
        if not set(self.systems) <= set(SYSTEMS) or not self.systems:
            raise ValueError(f"systems must be a non-empty subset of {', '.join(SYSTEMS)}; got {list(self.systems)}")
        if not set(self.activations) <= set(OURS) or not self.activations:
            raise ValueError(f"activations must be a non-empty subset of {OURS}; got {list(self.activations)}")

    @property
    def lr(self) -> float:
        """Our default peak learning rate (TrainConfig.lr = None), given to both systems."""
        return 2e-4 / math.sqrt(self.d_sae / 2**14)

    def train_cfg(self) -> TrainConfig:
        """Our training settings: TrainConfig's defaults but the budget's length, batch and seed."""
        return TrainConfig(n_tokens=self.steps * self.batch, batch_size=self.batch, progress=False, seed=self.seed)


SMOKE = dict(d_sae=256, steps=20, batch=256, ks=(16,), grid={act: (GRID[act][1],) for act in SAELENS})


# ----------------------------------------------------------------------------- data and start
def train_batches(x: torch.Tensor, budget: Budget) -> Iterator[torch.Tensor]:
    """The batches our train_sae reads from the tensor x, in its order (Batches(...)(0)), first ``steps``.
    shape: x [N, d_in] -> iterator of [batch, d_in]"""
    return islice(Batches(x, x.shape[1], budget.batch, budget.seed, False)(0), budget.steps)


def initial_sae(x: torch.Tensor, activation: str, k: int | None, budget: Budget, **train_overrides) -> am.SAE:
    """The SAE train_sae would start from (its _start: init_from_sample on Batches.sample). W_dec, W_enc = W_decᵀ,
    b_dec (geometric median) and the input scale do not depend on the activation; b_enc / θ do (start at k).
    train_overrides: TrainConfig fields that change the start (e.g. encoder_init).
    shape: x [N, d_in] -> SAE"""
    tcfg = replace(budget.train_cfg(), **train_overrides)
    cfg = am.SAEConfig(d_in=x.shape[1], d_sae=budget.d_sae, activation=activation, k=k, seed=budget.seed, device="cpu")
    return init_from_sample(cfg, Batches(x, x.shape[1], budget.batch, budget.seed, False).sample(tcfg.init_sample), tcfg)


@contextlib.contextmanager
def clock(out: dict) -> Iterator[None]:
    """Puts ``train_s`` (CPU seconds of this process: with one thread, the work done, whatever else shares the
    machine) and ``train_wall_s`` into ``out``."""
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    out.update(train_s=time.process_time() - cpu, train_wall_s=time.perf_counter() - wall)


# ----------------------------------------------------------------------------- the two systems
def train_ours(x: torch.Tensor, activation: str, k: int, budget: Budget) -> tuple[am.SAE, dict]:
    """Our SAE of ``activation`` at target / k = ``k``: train_sae from :func:`initial_sae` (what it builds itself).
    shape: x [N, d_in] -> (SAE, info)"""
    sae0 = initial_sae(x, activation, k, budget)
    info: dict = {}
    with clock(info):
        sae, hist = am.train_sae(sae0.cfg, x, budget.train_cfg(), sae=sae0)
    info["final_coef"] = hist["coef"][-1] if hist.get("coef") and activation != "topk" else None
    return sae.eval(), info


def saelens_sae(activation: str, coef: float, start: am.SAE, target_l0: float | None = None):
    """SAELens's training SAE for our ``activation`` with coefficient ``coef``, our W_enc, W_dec, b_dec copied in
    (SAELens's own b_enc = 0 and threshold init kept); it reads s·x (normalize_activations="none").
    target_l0 (jumprelu only): SAELens's own L0 target, its "quadratic" loss mode (Gemma Scope 2), started from
    ``start``'s θ (ours, set at that target from the data: SAELens's θ = 0.01 cannot climb to it in this budget)."""
    from sae_lens import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, StandardTrainingSAE, StandardTrainingSAEConfig

    classes = {"relu": (StandardTrainingSAE, StandardTrainingSAEConfig), "jumprelu": (JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig)}
    if activation not in classes:
        raise ValueError(f"activation={activation!r} has no SAELens penalty SAE here; choose one of {sorted(classes)}")
    cls, cfg_cls = classes[activation]
    extra = {}
    if target_l0 is not None:
        if activation != "jumprelu":
            raise ValueError(f"target_l0 is SAELens's JumpReLU quadratic mode; got activation={activation!r}")
        extra = dict(jumprelu_sparsity_loss_mode="quadratic", target_l0=float(target_l0))
    sae = cls(cfg_cls(d_in=start.cfg.d_in, d_sae=start.cfg.d_sae, normalize_activations="none", device="cpu",
                      **{SAELENS[activation][1]: float(coef)}, **extra))
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(getattr(start, name))
        if target_l0 is not None:
            sae.threshold.copy_(start.act.threshold)
    return sae


def saelens_trainer_cfg(budget: Budget):
    """SAETrainerConfig with our lr, betas and schedule (lr_end is required but unused by the "constant" scheduler)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    tcfg = budget.train_cfg()
    return SAETrainerConfig(
        total_training_samples=budget.steps * budget.batch, train_batch_size_samples=budget.batch, lr=budget.lr,
        lr_end=budget.lr, lr_scheduler_name="constant", lr_warm_up_steps=max(1, int(tcfg.warmup_frac * budget.steps)),
        lr_decay_steps=int(tcfg.decay_frac * budget.steps), adam_beta1=tcfg.adam_betas[0], adam_beta2=tcfg.adam_betas[1],
        device="cpu", feature_sampling_window=10**9, logger=LoggingConfig(log_to_wandb=False))


def saelens_lrs(budget: Budget) -> list[float]:
    """The learning rate SAELens's scheduler gives at each step under :func:`saelens_trainer_cfg` (to compare with lr_at)."""
    from sae_lens.training.optim import get_lr_scheduler

    cfg = saelens_trainer_cfg(budget)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = get_lr_scheduler(cfg.lr_scheduler_name, optimizer=opt, training_steps=cfg.total_training_steps, lr=cfg.lr,
                             warm_up_steps=cfg.lr_warm_up_steps, decay_steps=cfg.lr_decay_steps, lr_end=cfg.lr_end,
                             num_cycles=cfg.n_restart_cycles)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: scheduler.step() before optimizer.step()
        for _ in range(budget.steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


def train_saelens(x: torch.Tensor, activation: str, coef: float, start: am.SAE, budget: Budget,
                  target_l0: float | None = None):
    """SAELens's training SAE trained by its SAETrainer.fit() on s·(our batches); returned reading raw x (s folded in,
    and a JumpReLU θ clamped at 0 as its next training step would). shape: x [N, d_in] -> (SAELens SAE, info)"""
    from sae_lens.training.sae_trainer import SAETrainer

    s = float(start.cfg.input_scale)
    sae = saelens_sae(activation, coef, start, target_l0)
    trainer = SAETrainer(cfg=saelens_trainer_cfg(budget), sae=sae, data_provider=(s * xb for xb in train_batches(x, budget)))
    info: dict = {}
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
        warnings.simplefilter("ignore")
        with clock(info):
            trainer.fit()
    if trainer.n_training_steps != budget.steps:
        raise RuntimeError(f"SAELens took {trainer.n_training_steps} steps, not {budget.steps}; a batch was short")
    with torch.no_grad():
        if activation == "jumprelu":
            sae.threshold.data.clamp_(min=0.0)
        sae.fold_activation_norm_scaling_factor(s)
    return sae.eval(), info


def saelens_to_ours(sae) -> am.SAE:
    """A SAELens SAE (reading raw x) as ours: its save_model into a temp dir, read by from_saelens."""
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_model(tmp)
        return from_saelens(tmp, device="cpu")


# ----------------------------------------------------------------------------- evaluation and summary
def measure(sae: am.SAE, x_held: torch.Tensor) -> dict:
    """held_fvu, held_l0, dead_frac (latents that never fire on x_held). shape: x_held [n, d_in] -> dict"""
    ev = evaluate_sae(sae, x_held)
    return dict(held_fvu=ev["fvu"], held_l0=ev["l0"], dead_frac=ev["dead_frac"])


def fvu_at(points, l0: float = L0_AT) -> float | None:
    """FVU at ``l0``, linear in log L0 between the two adjacent (by L0) points that bracket it; None if none do.
    points: iterable of (l0, fvu)."""
    pts = sorted((float(a), float(b)) for a, b in points if a is not None and a > 0 and b is not None)
    for (l0_a, f_a), (l0_b, f_b) in zip(pts, pts[1:]):
        if l0_a <= l0 <= l0_b:
            if l0_b == l0_a:
                return (f_a + f_b) / 2
            t = (math.log(l0) - math.log(l0_a)) / (math.log(l0_b) - math.log(l0_a))
            return f_a + t * (f_b - f_a)
    return None


def frontier_at(rows: list[dict], l0: float = L0_AT) -> dict:
    """{activation: {"ours": fvu, "saelens": fvu, "saelens-target": fvu, "topk": fvu}} at ``l0`` (None where not
    bracketed)."""
    def at(system, activation):
        return fvu_at([(r["held_l0"], r["held_fvu"]) for r in rows if r["system"] == system and r["activation"] == activation], l0)

    return {act: {system: at(system, act) for system in SYSTEMS} | {"topk": at("ours", "topk")} for act in SAELENS}


def print_table(rows: list[dict], file=sys.stdout) -> None:
    """The rows, then the FVU of each system at L0 = 32 per activation."""
    print(f"{'system':8s} {'activation':10s} {'target/coef':>11s} {'held FVU':>9s} {'held L0':>8s} {'dead':>6s} "
          f"{'train CPU s':>11s}" + ("  loss rec. (mean)" if any("loss_recovered_mean" in r for r in rows) else ""), file=file)
    for r in rows:
        knob = f"K={r['target']}" if r["target"] is not None else f"c={r['coefficient']:g}"
        extra = f"  {r['loss_recovered_mean']:.4f}" if r.get("loss_recovered_mean") is not None else ""
        print(f"{r['system']:8s} {r['activation']:10s} {knob:>11s} {r['held_fvu']:9.4f} {r['held_l0']:8.1f} "
              f"{r['dead_frac']:6.3f} {r['train_s']:11.1f}{extra}", file=file)
    show = lambda v: "None" if v is None else f"{v:.4f}"  # noqa: E731
    for act, fvus in frontier_at(rows).items():
        print(f"# {act:9s} FVU at L0 = {L0_AT:g}: ours {show(fvus['ours'])}  SAELens {show(fvus['saelens'])}  "
              f"SAELens with target {show(fvus['saelens-target'])}  topk {show(fvus['topk'])}", file=file)


def write_rows(rows: list[dict], out: Path) -> None:
    """All rows so far, one JSON object per line, written atomically (a crash keeps the last complete file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rows)))


# ----------------------------------------------------------------------------- the benchmark
def run_family(x_train: torch.Tensor, x_held: torch.Tensor, budget: Budget, out: Path | None = None,
               keep: dict | None = None, log=print) -> list[dict]:
    """Train and evaluate every SAE of the budget; one row each (written to ``out`` after each, when given).
    keep: a dict that receives {row['name']: the SAE in our format} (for splicing, tests).
    shape: x_train [N >= steps·batch, d_in], x_held [n, d_in] -> list of dicts"""
    need = budget.steps * budget.batch
    for name, x in (("x_train", x_train), ("x_held", x_held)):
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor [N, d_in]; got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    if x_train.shape[0] < need or x_held.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_train has shape {tuple(x_train.shape)}, x_held {tuple(x_held.shape)}: need the same d_in and "
                         f">= steps·batch = {need} training rows (every batch full); pass more --train-tokens or fewer --steps")
    base = dict(steps=budget.steps, batch=budget.batch, d_sae=budget.d_sae, seed=budget.seed, d_in=x_train.shape[1],
                lr=budget.lr, n_heldout=x_held.shape[0])
    rows: list[dict] = []

    def add(row, sae):
        knob = f"k{row['target']}" if row["target"] is not None else f"c{row['coefficient']:g}"
        row = base | {"name": f"{row['system']}-{row['activation']}-{knob}"} | row | measure(sae, x_held)
        rows.append(row)
        if keep is not None:
            keep[row["name"]] = sae
        if out is not None:
            write_rows(rows, out)
        log(f"# {row['system']} {row['activation']} target={row['target']} coef={row['coefficient']}: held FVU "
            f"{row['held_fvu']:.4f}, L0 {row['held_l0']:.1f}, dead {row['dead_frac']:.3f}, {row['train_s']:.1f} CPU s")

    if "ours" in budget.systems:
        for act in budget.activations:
            for k in budget.ks:
                sae, info = train_ours(x_train, act, k, budget)
                add(dict(system="ours", activation=act, target=k, coefficient=None) | info, sae)
    if "saelens" in budget.systems:
        start = initial_sae(x_train, "topk", budget.ks[0], budget)  # W_enc, W_dec, b_dec, s: the same for every activation
        for act in (a for a in budget.activations if a in SAELENS):
            for coef in budget.grid.get(act, GRID[act]):
                sae, info = train_saelens(x_train, act, coef, start, budget)
                add(dict(system="saelens", activation=act, target=None, coefficient=coef,
                         saelens_architecture=SAELENS[act][0]) | info, saelens_to_ours(sae))
    if "saelens-target" in budget.systems and "jumprelu" in budget.activations:
        for k in budget.ks:
            start = initial_sae(x_train, "jumprelu", k, budget)  # θ at the target from the data, as ours starts
            sae, info = train_saelens(x_train, "jumprelu", TARGET_COEF, start, budget, target_l0=k)
            add(dict(system="saelens-target", activation="jumprelu", target=k, coefficient=TARGET_COEF,
                     saelens_architecture="jumprelu", saelens_loss_mode="quadratic") | info, saelens_to_ours(sae))
    return rows


def add_spliced(rows: list[dict], saes: dict, acts_dir, splice_tokens: int) -> None:
    """Loss recovered against mean (and zero) ablation, each SAE spliced into the harvest's model at its layer
    (abstopk_mini.lm.splice.evaluate_many on the held-out texts, as runs/reproduce.py does); into the rows."""
    from abstopk_mini.lm import splice
    from abstopk_mini.lm.models import load_model
    from abstopk_mini.lm.shards import read_manifest
    from abstopk_mini.runs.store import offline_texts

    manifest = read_manifest(acts_dir)
    loaded = load_model(manifest["model"])
    results = splice.evaluate_many(loaded, saes, offline_texts(split="heldout"), manifest["layer"],
                                   context_length=manifest["context_length"], max_tokens=splice_tokens)
    for row in rows:
        res = results[row["name"]]
        row.update(loss_recovered_mean=res.loss_recovered_mean, loss_recovered_zero=res.loss_recovered_zero,
                   splice_ce_orig=res.ce_orig, splice_ce_sae=res.ce_sae, splice_kl=res.kl_sae, splice_tokens=res.n_tokens)


def harvest_source(acts_dir, heldout_dir) -> dict:
    """What the rows were measured on, from the two harvests' manifests: model, layer, hook and the folders' names."""
    from abstopk_mini.lm.shards import read_manifest

    manifest = read_manifest(acts_dir)
    return {"model": manifest.get("model"), "layer": manifest.get("layer"), "hook_name": manifest.get("hook_name"),
            "acts": Path(acts_dir).name, "heldout": Path(heldout_dir).name}


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"{flag} {text!r}: give comma-separated numbers, e.g. {flag} 1,2,4") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--acts", default=ACTS, help="training harvest (abstopk_mini.lm.shards)")
    ap.add_argument("--heldout", default=HELDOUT, help="held-out harvest")
    ap.add_argument("--train-tokens", type=int, default=None, help="training rows loaded (default: steps·batch, one pass)")
    ap.add_argument("--heldout-tokens", type=int, default=20_000)
    ap.add_argument("--d-sae", type=int, default=None, help="default 2048 (smoke: 256)")
    ap.add_argument("--steps", type=int, default=None, help="default 586 (smoke: 20)")
    ap.add_argument("--batch", type=int, default=None, help="default 1024 (smoke: 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ks", default=None, help="ours' target L0s / topk's k, comma list (default 16,32,64; smoke: 16)")
    ap.add_argument("--relu-coefs", default=None, help=f"SAELens l1 coefficients (default {','.join(map(str, GRID['relu']))})")
    ap.add_argument("--jumprelu-coefs", default=None, help=f"SAELens l0 coefficients (default {','.join(map(str, GRID['jumprelu']))})")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list from {', '.join(SYSTEMS)} (saelens-target: "
                    "its JumpReLU's quadratic mode at each of --ks, from our θ)")
    ap.add_argument("--activations", default=",".join(OURS), help=f"comma list from {', '.join(OURS)}")
    ap.add_argument("--smoke", action="store_true", help="tiny budget: d_sae 256, 20 steps of 256, one K and coefficient each")
    ap.add_argument("--spliced", action="store_true", help="also loss recovered (mean ablation) with the model (loads it)")
    ap.add_argument("--splice-tokens", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/penalty_family.jsonl")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.heldout_tokens < 1 or args.splice_tokens < 1:
        raise SystemExit("--threads, --heldout-tokens and --splice-tokens must be >= 1")
    torch.set_num_threads(args.threads)
    kw = dict(SMOKE) if args.smoke else {}
    for name in ("d_sae", "steps", "batch"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.ks is not None:
        kw["ks"] = tuple(int(v) for v in _floats(args.ks, "--ks"))
    grid = dict(kw.get("grid", GRID))
    for act in SAELENS:
        if getattr(args, f"{act}_coefs") is not None:
            grid[act] = _floats(getattr(args, f"{act}_coefs"), f"--{act}-coefs")
    try:
        budget = Budget(seed=args.seed, systems=tuple(args.systems.split(",")), activations=tuple(args.activations.split(",")),
                        **(kw | {"grid": grid}))
    except ValueError as err:
        raise SystemExit(f"bad arguments: {err}") from None
    from abstopk_mini.lm.shards import load_activations

    need = budget.steps * budget.batch
    x_train = load_activations(args.acts, max_tokens=args.train_tokens or need)
    x_held = load_activations(args.heldout, max_tokens=args.heldout_tokens)
    print(f"# {x_train.shape[0]:,} training rows, {x_held.shape[0]:,} held-out rows, d_in {x_train.shape[1]}; d_sae "
          f"{budget.d_sae}, {budget.steps} steps of {budget.batch}, lr {budget.lr:.3g}, {torch.get_num_threads()} thread(s)",
          file=sys.stderr)
    saes: dict = {}
    out = Path(args.out)
    rows = run_family(x_train, x_held, budget, out=out, keep=saes, log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.spliced:
        add_spliced(rows, saes, args.acts, args.splice_tokens)
    for row in rows:
        row.update(harvest_source(args.acts, args.heldout))
    write_rows(rows, out)
    print_table(rows)
    print(f"# {len(rows)} rows -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
