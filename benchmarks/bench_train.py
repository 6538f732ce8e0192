"""Training speed and quality: abstopk_mini vs SAELens (AbsTopK and TopK), same run, same data.

    PYTHONPATH=. python benchmarks/bench_train.py                        # the issue's grid, batch 128 and 1024
    PYTHONPATH=. python benchmarks/bench_train.py --sizes 4096:32 --steps 10 --arch abstopk --batch 4096
    PYTHONPATH=. python benchmarks/bench_train.py --data acts.pt         # harvested activations [N, d_in]

For every (d_sae, k, architecture) both systems get: the same activations (toy signed sparse
features in d_in = 640 by default, or a harvested tensor), the same batches in the same order,
the same initial weights (our init: unit-norm decoder rows, W_enc = W_decᵀ, geometric-median
b_dec, inputs scaled so E‖s x‖² = d_in; ``--encoder-init least_squares``: then the encoder scaled to the data,
:mod:`abstopk_mini.encoder_scale`, for both systems), the same Adam (lr, betas, eps 1e-8), the same warm-up /
decay schedule, the same number of steps, the same AuxK (k_aux = d_in/2, coefficient 1/32, the
same dead window), the gradient clipped to global norm 1 (SAELens's default and ours, ``grad_clip``).
Each system keeps its own recipe otherwise: SAELens ranks by u·‖W_dec‖
(rescale_acts_by_decoder_norm) with free decoder norms; we remove the parallel gradient and
renormalise the decoder rows.

Batch sizes: ``--batch 128,1024`` (default) — 128 is the paper's batch, where the per-step
overhead (Python, optimiser, bookkeeping) weighs most; 1,024 is where the matrix products do.

Printed per row: tokens/s of each, their ratio, and the FVU of each on the same held-out rows
after the same number of tokens. tokens/s = batch size / median step time; both loops pull one
batch per step from a time-stamping iterator. By default the clock is the CPU time of this
process with one torch thread: on a machine shared with other jobs, wall time measures the
other jobs as much as ours, CPU time measures the work done. ``--clock wall --threads 2`` gives
wall-clock figures; the wall-clock ratio of the whole training calls is printed as well. ``--reference`` adds our
dense reference path (``TrainConfig(fast=False)``), to show what the fast kernels buy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

import abstopk_mini as am
from abstopk_mini.encoder_scale import fit_encoder_scale
from abstopk_mini.train import geometric_median
from abstopk_mini.train_config import ENCODER_INITS

D_IN = 640
CLOCK = time.process_time  # set by --clock


# ----------------------------------------------------------------------------- data
def toy_activations(n: int, d: int, n_features: int, n_active: int, seed: int = 0) -> torch.Tensor:
    """Signed sparse superposition: x = b + Σ_{i∈S} s_i a_i d_i + noise, |S| = n_active.

    A cheap stand-in for LM activations at any size (no [n, n_features] tensor is built).
    shape: -> [n, d]
    """
    gen = torch.Generator().manual_seed(seed)
    D = torch.randn(n_features, d, generator=gen)
    D /= D.norm(dim=1, keepdim=True)
    idx = torch.randint(n_features, (n, n_active), generator=gen)
    amp = (0.5 + torch.rand(n, n_active, generator=gen)) * torch.where(torch.rand(n, n_active, generator=gen) < 0.5, -1.0, 1.0)
    bias = torch.randn(d, generator=gen)
    x = F.embedding_bag(idx, D, per_sample_weights=amp, mode="sum") + bias
    return x + 0.05 * torch.randn(n, d, generator=gen)


def mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def peak_bytes(B: int, d_in: int, d_sae: int) -> int:
    """A generous estimate of the dense (SAELens / reference) training step's peak memory."""
    return 4 * (10 * B * d_sae + 10 * d_in * d_sae + 8 * B * d_in)


class TimedBatches:
    """Re-iterable batches that time-stamp each ``next()``: one stamp per training step in both
    loops. ``clock`` is ``time.process_time`` (CPU seconds of this process: what other processes
    on a shared machine cannot inflate) or ``time.perf_counter`` (wall clock)."""

    def __init__(self, batches, clock, forever: bool = False):
        self.batches, self.clock, self.forever, self.stamps = batches, clock, forever, []

    def __iter__(self):
        while True:
            for batch in self.batches:
                self.stamps.append(self.clock())
                yield batch
            if not self.forever:
                return

    def median_step(self, n_steps: int) -> float:
        """The median time between the training loop's pulls: the last ``n_steps`` stamps, whose
        intervals are steps 2..n (the first step's warm-up is skipped). Only the last ones: our
        train_sae reads the head of the data first (the rows of ``init_sample`` for its final
        metrics), and those near-instant pulls would drag the median down."""
        stamps = self.stamps[-n_steps:]
        steps = [b - a for a, b in zip(stamps, stamps[1:])]
        return statistics.median(steps) if steps else float("nan")


# ----------------------------------------------------------------------------- the two systems
def run_ours(x_batches, x_test, sae0: am.SAE, n_steps: int, lr: float, dead_tokens: int, fast: bool) -> dict:
    import copy

    sae = copy.deepcopy(sae0)
    timed = TimedBatches(x_batches, CLOCK)
    t0 = time.perf_counter()
    sae, hist = am.train_sae(
        sae.cfg, timed, sae=sae, batch_size=x_batches[0].shape[0], n_tokens=n_steps * x_batches[0].shape[0],
        lr=lr, adam_eps=1e-8, dead_tokens=dead_tokens, aux_coef=1 / 32, progress=False, fast=fast,
        log_every=max(1, n_steps // 4),
    )
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        x_hat = sae(x_test)
    return dict(seconds=seconds, step=timed.median_step(n_steps), fvu=am.metrics.fvu(x_test, x_hat), tokens=hist["n_tokens"])


def run_saelens(x_batches, x_test, sae0: am.SAE, arch: str, n_steps: int, lr: float, dead_steps: int, sparse: bool = False) -> dict:
    from sae_lens import AbsTopKTrainingSAE, AbsTopKTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    s = sae0.cfg.input_scale
    B = x_batches[0].shape[0]
    classes = {"abstopk": (AbsTopKTrainingSAE, AbsTopKTrainingSAEConfig), "topk": (TopKTrainingSAE, TopKTrainingSAEConfig)}
    cls, cfg_cls = classes[arch]
    extra = {"use_sparse_activations": True} if sparse else {}
    sae = cls(cfg_cls(d_in=sae0.cfg.d_in, d_sae=sae0.cfg.d_sae, k=sae0.cfg.k, aux_loss_coefficient=1 / 32,
                      normalize_activations="none", device="cpu", **extra))
    with torch.no_grad():  # the same initial weights; SAELens sees the same pre-scaled inputs s·x
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(sae, name).copy_(getattr(sae0, name))
    scaled = [s * xb for xb in x_batches]  # prepared before the clock starts, like our pre-batched list

    timed = TimedBatches(scaled, CLOCK, forever=True)

    warm = max(1, int(0.05 * n_steps))
    decay = int(0.2 * n_steps)
    tcfg = SAETrainerConfig(
        total_training_samples=n_steps * B, train_batch_size_samples=B, lr=lr, lr_end=lr / 10, lr_warm_up_steps=warm, lr_decay_steps=decay,
        adam_beta1=0.9, adam_beta2=0.999, device="cpu", dead_feature_window=dead_steps, feature_sampling_window=10**9,
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(timed))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
            trainer.fit()
    seconds = time.perf_counter() - t0
    sae.eval()
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(s * x_test)) / s
    return dict(seconds=seconds, step=timed.median_step(n_steps), fvu=am.metrics.fvu(x_test, x_hat), tokens=trainer.n_training_samples)


def recipe_ablation(x_batches, x_test, sae0: am.SAE, n_steps: int, lr: float) -> dict:
    """FVU of our fast kernels in a plain loop (MSE only, Adam eps 1e-8, the same schedule) under
    four recipes: with/without the unit-norm decoder (parallel-gradient removal + renormalising)
    and with/without SAELens's gradient-norm clipping at 1. Separates recipe from kernels."""
    import copy

    from abstopk_mini.kernels import fast
    from abstopk_mini import losses
    from abstopk_mini.train import lr_at

    out = {}
    for constrain in (True, False):
        for clip in (False, True):
            sae = copy.deepcopy(sae0)
            opt = torch.optim.Adam(sae.parameters(), lr=lr, eps=1e-8, fused=True)
            for t, xb in enumerate(x_batches[:n_steps]):
                for group in opt.param_groups:
                    group["lr"] = lr_at(t, n_steps, lr, 0.05, 0.2)
                o = fast.forward_train(sae, xb)
                opt.zero_grad(set_to_none=True)
                losses.mse(o.x_in, o.x_hat).backward()
                if constrain:
                    sae.remove_parallel_grad()
                if clip:
                    torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
                opt.step()
                if constrain:
                    sae.post_step()
            sae.eval()
            with torch.no_grad():
                out[f"unit_norm={constrain},clip={clip}"] = am.metrics.fvu(x_test, sae(x_test))
    return out


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="4096:32,4096:64,16384:32,16384:64", help="comma list of d_sae:k")
    ap.add_argument("--arch", default="abstopk,topk", help="comma list from abstopk, topk")
    ap.add_argument("--batch", default="128,1024", help="comma list of batch sizes")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--n-test", type=int, default=8192)
    ap.add_argument("--data", default=None, help="a .pt tensor [N, d_in] of harvested activations (default: toy data)")
    ap.add_argument("--reference", action="store_true", help="also time our dense reference path")
    ap.add_argument("--saelens-sparse", action="store_true", help="also time SAELens TopK with use_sparse_activations=True")
    ap.add_argument("--recipe-ablation", action="store_true",
                    help="also report the FVU of our kernels under 4 recipes (unit-norm decoder on/off, grad clip on/off)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is then a clean measure of work)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="step times from CPU time of this process (robust on a shared machine) or wall clock")
    ap.add_argument("--encoder-init", default="transpose",
                    help="comma list from transpose, least_squares: the starting encoder both systems get (a row each)")
    ap.add_argument("--json", action="store_true", help="one JSON object per row on stdout")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in item.split(":")) for item in args.sizes.split(",")]
    archs = args.arch.split(",")
    for arch in archs:
        if arch not in ("abstopk", "topk"):
            raise SystemExit(f"--arch {arch!r}: choose from abstopk, topk")
    inits = args.encoder_init.split(",")
    for init in inits:
        if init not in ENCODER_INITS:
            raise SystemExit(f"--encoder-init {init!r}: choose from {', '.join(ENCODER_INITS)}")

    batch_sizes = [int(b) for b in str(args.batch).split(",")]
    n_steps = args.steps
    n_train_max = max(batch_sizes) * n_steps
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f} "
          f"(other processes share this machine), batch {batch_sizes}, {n_steps} steps, "
          f"tokens/s from the median step's {'CPU' if args.clock == 'cpu' else 'wall-clock'} time", file=sys.stderr)
    if args.data:
        x_all = torch.load(args.data, map_location="cpu", weights_only=True).float()
        if x_all.ndim != 2 or x_all.shape[0] < n_train_max + args.n_test:
            raise SystemExit(f"--data {args.data}: need a [N >= {n_train_max + args.n_test}, d_in] tensor; got {tuple(x_all.shape)}")
        x_all = x_all[torch.randperm(x_all.shape[0], generator=torch.Generator().manual_seed(0))[: n_train_max + args.n_test]]
        x_data = x_all
    # warm-up (imports, first-call allocations) for both systems, untimed
    xw = toy_activations(4 * 256, D_IN if not args.data else x_all.shape[1], 256, 2)
    for arch in archs:
        w = am.SAE(am.SAEConfig(d_in=xw.shape[1], d_sae=256, activation=arch, k=4, device="cpu"))
        run_ours([xw[i * 256 : (i + 1) * 256] for i in range(3)], xw[768:], w, 3, 1e-4, 256, fast=True)
        run_saelens([xw[i * 256 : (i + 1) * 256] for i in range(3)], xw[768:], w, arch, 3, 1e-4, 1)
    rows = []
    for B, (d_sae, k) in ((B, size) for B in batch_sizes for size in sizes):
        n_train = B * n_steps
        need = peak_bytes(B, x_all.shape[1] if args.data else D_IN, d_sae) + 4 * (n_train + args.n_test) * D_IN * 2
        if need > 0.8 * mem_available():
            print(f"# skip d_sae={d_sae}, k={k}, batch={B}: needs ~{need / 2**30:.1f} GiB, {mem_available() / 2**30:.1f} GiB "
                  "available; pass a smaller --batch", file=sys.stderr)
            continue
        if not args.data:
            x_all = toy_activations(n_train + args.n_test, D_IN, n_features=d_sae, n_active=max(1, k // 2), seed=d_sae + k)
        else:
            x_all = torch.cat([x_data[:n_train], x_data[n_train_max:]])
        d_in = x_all.shape[1]
        x_train, x_test = x_all[:n_train], x_all[n_train:]
        batches = [x_train[i * B : (i + 1) * B] for i in range(n_steps)]
        sample = x_train[:32768].double()
        scale = math.sqrt(d_in / sample.pow(2).sum(-1).mean().item())
        lr = 2e-4 / math.sqrt(d_sae / 2**14)
        dead_steps = max(1, n_steps // 5)
        for arch, init in ((arch, init) for arch in archs for init in inits):
            sae0 = am.SAE(am.SAEConfig(d_in=d_in, d_sae=d_sae, activation=arch, k=k, input_scale=scale, device="cpu"))
            with torch.no_grad():
                sae0.b_dec.copy_(geometric_median(sample * scale))
            if init == "least_squares":
                fit_encoder_scale(sae0, x_train[:32768])
            ours = run_ours(batches, x_test, sae0, n_steps, lr, dead_steps * B, fast=True)
            theirs = run_saelens(batches, x_test, sae0, arch, n_steps, lr, dead_steps)
            row = dict(arch=arch, encoder_init=init, d_in=d_in, d_sae=d_sae, k=k, batch=B, steps=n_steps,
                       ours_tok_s=B / ours["step"], saelens_tok_s=B / theirs["step"],
                       ours_wall_tok_s=ours["tokens"] / ours["seconds"], saelens_wall_tok_s=theirs["tokens"] / theirs["seconds"],
                       ours_fvu=ours["fvu"], saelens_fvu=theirs["fvu"])
            row["ratio"] = row["ours_tok_s"] / row["saelens_tok_s"]
            row["wall_ratio"] = row["ours_wall_tok_s"] / row["saelens_wall_tok_s"]
            if args.reference:
                ref = run_ours(batches, x_test, sae0, n_steps, lr, dead_steps * B, fast=False)
                row.update(reference_tok_s=B / ref["step"], reference_fvu=ref["fvu"])
                row["fast_vs_reference"] = row["ours_tok_s"] / row["reference_tok_s"]
            if args.saelens_sparse and arch == "topk":
                try:
                    sp = run_saelens(batches, x_test, sae0, arch, n_steps, lr, dead_steps, sparse=True)
                    row.update(saelens_sparse_tok_s=B / sp["step"], saelens_sparse_fvu=sp["fvu"])
                except Exception as err:  # noqa: BLE001 — reported, not hidden
                    row["saelens_sparse_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            if args.recipe_ablation:
                row["recipe_fvu"] = recipe_ablation(batches, x_test, sae0, n_steps, lr)
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                extra = f"  fast/reference {row['fast_vs_reference']:.2f}x" if "fast_vs_reference" in row else ""
                if "saelens_sparse_tok_s" in row:
                    extra += f"  SAELens sparse {row['saelens_sparse_tok_s']:.0f} tok/s"
                if "recipe_fvu" in row:
                    extra += "  recipe FVU: " + ", ".join(f"{key} {value:.4f}" for key, value in row["recipe_fvu"].items())
                if "saelens_sparse_error" in row:
                    extra += f"  SAELens sparse failed ({row['saelens_sparse_error']})"
                print(f"{arch:8s} {init:13s} batch={B:5d} d_sae={d_sae:6d} k={k:3d}  ours {row['ours_tok_s']:7.0f} tok/s  SAELens "
                      f"{row['saelens_tok_s']:7.0f} tok/s  ratio {row['ratio']:.2f}x (wall clock {row['wall_ratio']:.2f}x)  "
                      f"FVU ours {row['ours_fvu']:.4f} SAELens {row['saelens_fvu']:.4f}{extra}", flush=True)
    for B in batch_sizes:
        ratios = [r["ratio"] for r in rows if r["batch"] == B]
        if ratios and not args.json:
            print(f"# batch {B}: ratio ours/SAELens min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x "
                  f"over {len(ratios)} rows", flush=True)
    print(f"# load average at the end {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
