r"""Training past one machine: data-parallel SAE training with ``torch.distributed``.

Launch one process per device with ``torchrun``; every rank reads its own shard of the
activations and calls :func:`train_sae_ddp`::

    torchrun --standalone --nproc_per_node 2 -m abstopk_mini.distributed \
        --shards acts/*.pt --d-sae 16384 --k 32 --batch-size 4096 --n-tokens 100000000 --out sae_dir

What each rank does, and why the result equals one process training on the same global batches
(``tests/test_distributed.py`` checks it to fp32 tolerance, on CPU with the gloo backend):

* **Batches.** ``batch_size`` is the *global* batch; rank r trains on its B/R rows of it. Every
  loss term is a mean over rows, so the mean of the R rank gradients is the gradient of the
  global batch: :meth:`Sync.all_reduce_grads` sums them (one flat buffer) and divides by R.
* **Identical replicas.** All ranks start from rank 0's parameters (broadcast) and apply the same
  averaged gradient, the same parallel-gradient removal and clipping, the same Adam step and the same decoder
  renormalisation, so the replicas stay equal; :func:`train_sae_ddp` checks this at the end.
* **Dead latents and AuxK.** A latent fired in the global batch when it fired on any rank: the
  firing mask is all-reduced (max), so every rank holds the same ``since_fired`` counters (they
  advance by the global batch size) and the same dead set. AuxK is then a per-row loss on each
  rank's rows with a global dead set and a global scale min(n_dead / k_aux, 1), i.e. exactly the
  single-process AuxK of the global batch.
* **Batch top-k.** BatchTopK keeps the k·B largest scores of the *global* batch: each rank sends
  its k·B best scores (:meth:`Sync.all_gather`), every rank finds the same global cut and keeps its
  own entries above it; the running threshold uses the global smallest kept value. (Needs the
  fast path, ``TrainConfig.fast=True``, the default.)
* **L0 controller** (ReLU / JumpReLU with a target L0): the batch L0 is averaged over ranks.
* **One checkpoint.** Only rank 0 writes ``checkpoint_dir``; every rank can resume from it.
* **Initialisation.** The input scale and the geometric-median ``b_dec`` are computed from a sample
  gathered from all ranks, then rank 0's SAE is broadcast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .data import Batches
from .sae import SAE, SAEConfig
from .train import TrainConfig, init_from_sample, train_sae

__all__ = ["Sync", "train_sae_ddp", "init_from_env", "DistributedJob", "main"]


class Sync:
    """The collective operations one rank of a DDP run needs (any ``torch.distributed`` backend)."""

    def __init__(self, group=None):
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError(
                "torch.distributed is not initialised; launch with torchrun and call "
                "abstopk_mini.distributed.init_from_env() (or dist.init_process_group) first"
            )
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @torch.no_grad()
    def all_reduce_grads(self, module: torch.nn.Module) -> None:
        """Replace every parameter gradient by its mean over ranks (one flat all-reduce)."""
        params = [p for p in module.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, group=self.group)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def any(self, mask: torch.Tensor) -> torch.Tensor:
        """Elementwise OR over ranks.  shape: bool [n] -> bool [n]"""
        m = mask.to(torch.uint8)
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=self.group)
        return m.bool()

    def mean(self, value: float) -> float:
        """Mean of a Python number over ranks."""
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t, group=self.group)
        return t.item() / self.world_size

    def sum_int(self, value: int) -> int:
        t = torch.tensor([int(value)], dtype=torch.long)
        dist.all_reduce(t, group=self.group)
        return int(t.item())

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenation over ranks of same-shaped tensors (rank order).  shape: [n, ...] -> [R·n, ...]"""
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t.contiguous(), group=self.group)
        return torch.cat(parts)

    @torch.no_grad()
    def broadcast_module(self, module: torch.nn.Module, src: int = 0) -> None:
        """Copy rank ``src``'s parameters and buffers to every rank."""
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src, group=self.group)

    @torch.no_grad()
    def max_divergence(self, module: torch.nn.Module) -> float:
        """Largest |difference| between this rank's tensors and rank 0's, maximised over ranks."""
        worst = torch.zeros(1, dtype=torch.float64)
        for t in list(module.parameters()) + list(module.buffers()):
            ref = t.detach().clone()
            dist.broadcast(ref, src=0, group=self.group)
            worst = torch.maximum(worst, (t.detach() - ref).abs().max().double().reshape(1))
        dist.all_reduce(worst, op=dist.ReduceOp.MAX, group=self.group)
        return worst.item()


def init_from_env(backend: str | None = None) -> Sync:
    """Initialise the default process group from torchrun's environment (gloo on CPU, nccl on CUDA)."""
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise ValueError("RANK/WORLD_SIZE are not set: launch this under torchrun (torchrun --nproc_per_node N ...)")
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return Sync()


def _initial_sae(cfg: SAEConfig, activations, tcfg: TrainConfig, sync: Sync) -> SAE:
    """train_sae's initialisation (:func:`~abstopk_mini.train.init_from_sample`) on a sample gathered
    from every rank, then rank 0's SAE on every rank."""
    # this rank's rows as train_sae would sample them: a seeded subset of a tensor, else the first batches
    mine = Batches(activations, cfg.d_in, tcfg.batch_size, tcfg.seed + sync.rank, tcfg.drop_nonfinite)
    local = mine.sample(max(1, tcfg.init_sample // sync.world_size))
    n = _min_over_ranks(local.shape[0], sync)  # all_gather needs equal shapes
    sae = init_from_sample(cfg, sync.all_gather(local[:n].double()), tcfg)
    sync.broadcast_module(sae)
    return sae


def _min_over_ranks(value: int, sync: Sync) -> int:
    t = torch.tensor([int(value)], dtype=torch.long)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=sync.group)
    return int(t.item())


def train_sae_ddp(
    cfg: SAEConfig,
    activations,
    train_cfg: TrainConfig | None = None,
    *,
    sync: Sync | None = None,
    sae: SAE | None = None,
    resume: str | os.PathLike | None = None,
    **overrides,
) -> tuple[SAE, dict]:
    """Train on this rank's shard ``activations`` as one rank of a data-parallel run.

    Call it on every rank with the same ``cfg`` and settings. ``batch_size`` and ``n_tokens`` are
    global (``batch_size`` must be divisible by the number of ranks); ``n_tokens`` is required
    when ``activations`` is an iterable. Returns ``(sae, history)`` on every rank (identical SAEs);
    ``history`` counts global tokens. See the module docstring for what is synchronised.
    """
    sync = sync or init_from_env()
    R = sync.world_size
    tcfg = dataclasses.replace(train_cfg or TrainConfig(), **overrides)
    if tcfg.batch_size % R:
        raise ValueError(
            f"batch_size={tcfg.batch_size} (the global batch) must be divisible by the {R} ranks; "
            f"use e.g. batch_size={max(R, tcfg.batch_size // R * R)}"
        )
    if cfg.spec.per_batch and not tcfg.fast:
        raise ValueError(
            f"activation={cfg.activation!r} under DDP needs the fast path (fast=True): the reference path would "
            "keep the k·B largest scores of each rank's shard instead of the global batch"
        )
    if isinstance(activations, torch.Tensor):
        n_global = sync.sum_int(activations.shape[0])
        n_tokens = tcfg.n_tokens if tcfg.n_tokens is not None else max(n_global, 1000 * tcfg.batch_size)
    elif tcfg.n_tokens is None:
        raise ValueError("n_tokens is required when activations is an iterable (the ranks must agree on the number of steps)")
    else:
        n_tokens = tcfg.n_tokens
    n_steps = math.ceil(n_tokens / tcfg.batch_size)
    dead_tokens = tcfg.dead_tokens or max(1, min(10_000_000, n_steps * tcfg.batch_size // 10))
    local = dataclasses.replace(
        tcfg, batch_size=tcfg.batch_size // R, n_tokens=n_steps * (tcfg.batch_size // R), dead_tokens=dead_tokens,
        seed=tcfg.seed,
    )
    if sae is None and resume is None:
        sae = _initial_sae(cfg, activations, tcfg, sync)
    elif sae is not None:
        sync.broadcast_module(sae)
    sae, history = train_sae(cfg, activations, local, sae=sae, resume=resume, sync=sync)
    gap = sync.max_divergence(sae)
    if gap > 0:
        raise RuntimeError(f"DDP replicas diverged (max |difference| {gap:.3g}); the ranks did not run the same steps")
    history["n_tokens"] = history["n_tokens"] * R
    history["tokens"] = [t * R for t in history["tokens"]]
    history.update(world_size=R, global_batch_size=tcfg.batch_size)
    return sae, history


# ----------------------------------------------------------------------------- torchrun entry point
def _load_shards(files: list[str], rank: int, world: int) -> torch.Tensor:
    from safetensors.torch import load_file

    mine = files[rank::world]
    if not mine:
        raise ValueError(f"{len(files)} shard file(s) for {world} ranks: rank {rank} has none; pass at least one shard per rank")
    parts = []
    for name in mine:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"shard {name!r} does not exist")
        if path.suffix == ".safetensors":
            tensors = load_file(str(path))
            if len(tensors) != 1:
                raise ValueError(f"shard {name!r} holds {len(tensors)} tensors; expected one [n, d_in] tensor")
            parts.append(next(iter(tensors.values())))
        else:
            parts.append(torch.load(path, map_location="cpu", weights_only=True))
    return torch.cat([p.float() for p in parts])


@dataclasses.dataclass
class DistributedJob:
    """``torchrun ... -m abstopk_mini.distributed``: train on shard files, rank 0 saves the SAE.

    Its flags are generated from these fields and every :class:`~abstopk_mini.train.TrainConfig`
    field (:mod:`abstopk_mini.config_flags`): ``--batch-size`` is the global batch, ``--seed`` seeds
    the SAE and the training, ``--no-fast`` takes the dense reference path."""

    shards: list[str]
    """Tensor files [n, d_in] (.pt or .safetensors); rank r takes files r, r+R, ..."""
    out: str
    """Directory for the trained SAE (written by rank 0)."""
    d_sae: int
    """Latents of a fresh SAE (ignored with --init)."""
    k: int | None = None
    """k of a top-k SAE, or the target L0 of a penalty SAE."""
    activation: str = "abstopk"
    """The SAE's activation (abstopk_mini.nonlinearities)."""
    init: str | None = None
    """Start from this SAE directory (SAE.save) instead of a fresh one."""
    shuffle: bool = True
    """Shuffle each rank's rows; --no-shuffle reads them in order, one batch after another."""
    json: bool = False
    """Print one JSON summary line on stdout (rank 0)."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def main(argv: list[str] | None = None) -> int:
    """Parse a :class:`DistributedJob` from the command line, train this rank's part, rank 0 saves the SAE."""
    from .config_flags import add_config, build_config

    ap = argparse.ArgumentParser(prog="python -m abstopk_mini.distributed", description=DistributedJob.__doc__.split("\n")[0])
    add_config(ap, DistributedJob)
    job = build_config(DistributedJob, ap.parse_args(argv))
    tcfg = job.train

    sync = init_from_env()
    x = _load_shards(job.shards, sync.rank, sync.world_size)
    sae = SAE.load(job.init, device="cpu") if job.init else None
    cfg = sae.cfg if sae is not None else SAEConfig(d_in=x.shape[1], d_sae=job.d_sae, activation=job.activation, k=job.k,
                                                      seed=tcfg.seed)
    data = x
    if not job.shuffle:
        B = tcfg.batch_size // sync.world_size
        data = [x[i : i + B] for i in range(0, x.shape[0], B)]
        if tcfg.n_tokens is None:  # one pass over the shortest shard
            tcfg = dataclasses.replace(tcfg, n_tokens=_min_over_ranks(len(data), sync) * tcfg.batch_size)
    sae, history = train_sae_ddp(cfg, data, tcfg, sync=sync, sae=sae)
    if sync.is_main:
        sae.save(job.out)
        if job.json:
            keep = ("n_steps", "n_tokens", "world_size", "global_batch_size", "wall_time_s", "final_dead_frac")
            print(json.dumps({key: history[key] for key in keep} | {"out": str(job.out), "fvu": history["fvu"][-1]}))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
