"""The jobs that make data and SAEs: ``toy``, ``harvest`` and ``train``.

Each job is a config dataclass (every field documented: the docstring under it, which is also its
command-line help) and a ``run_*(cfg)`` that checks what it can before any model loads and returns
the job's JSON result (:mod:`abstopk_mini.cli` builds the commands from them).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Literal

from ..coding.toy import toy_benchmark
from ..nonlinearities import SPECS
from ..train_config import TrainConfig
from .inputs import check_positive, check_runs_dir, harvest_names
from .store import HarvestSpec

__all__ = ["ToyJob", "run_toy", "HarvestJob", "run_harvest", "check_harvest_args", "TrainJob", "StoreTrainConfig",
           "run_train", "check_train_fits", "train_kw"]

_TOY = inspect.signature(toy_benchmark).parameters  # the toy's defaults live in its function
ACTIVATIONS = tuple(sorted(SPECS))


# ----------------------------------------------------------------------------- toy
@dataclass
class ToyJob:
    """Every SAE activation on P signed ground-truth axes (:func:`abstopk_mini.coding.toy.toy_benchmark`)."""

    d: int = _TOY["d"].default
    """Ambient dimension."""
    P: int = _TOY["P"].default
    """Number of signed ground-truth axes."""
    n_active: int = _TOY["n_active"].default
    """Axes active per sample (= k)."""
    tokens: int = _TOY["n_tokens"].default
    """Training samples seen per run."""
    batch_size: int = _TOY["batch_size"].default
    """Samples per training step."""
    seed: int = _TOY["seed"].default
    """Seed of the data and of the SAEs."""
    quick: bool = False
    """Tiny sizes (seconds), for smoke tests: d 16, P 8, 2 active axes, 200k samples (in place of the settings above)."""
    progress: bool | None = None
    """Progress bars on stderr; None: when stderr is a terminal and --json is not given."""


def run_toy(cfg: ToyJob) -> dict:
    import sys

    import torch

    torch.manual_seed(cfg.seed)
    settings = dict(d=cfg.d, P=cfg.P, n_active=cfg.n_active, n_tokens=cfg.tokens, batch_size=cfg.batch_size, seed=cfg.seed)
    if cfg.quick:
        settings.update(d=16, P=8, n_active=2, n_tokens=200_000, n_samples=10_000)
    progress = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    return {"settings": settings, "rows": toy_benchmark(progress=progress, **settings)}


# ----------------------------------------------------------------------------- harvest
@dataclass
class HarvestJob:
    """Residual-stream activations of a model on offline text, written to shards with a manifest."""

    spec: HarvestSpec = field(default_factory=HarvestSpec)
    """What to harvest."""
    runs_dir: str | None = None
    """Artifact root; None: $ABSTOPK_RUNS or ./runs."""
    overwrite: bool = False
    """Replace a different harvest in the target directory."""


def check_harvest_args(cfg: HarvestJob) -> None:
    """What ``harvest`` can refuse before loading the model (its shape from its config) and before
    anything is written: a size the text cannot give or the disk cannot hold
    (:func:`abstopk_mini.lm.activations.check_harvest_size`)."""
    from ..lm.activations import check_harvest_size
    from ..lm.models import check_layer_for, model_shape
    from ..lm.shards import MANIFEST

    spec = cfg.spec
    check_layer_for(spec.model, spec.layer, "--layer")
    shape = model_shape(spec.model)
    if shape is not None and shape[2] is not None and spec.context_length > shape[2]:
        raise ValueError(f"--context {spec.context_length} exceeds the {shape[2]} positions of {spec.model!r}; "
                         f"pass --context <= {shape[2]}")
    check_runs_dir(cfg.runs_dir)
    if shape is None:
        return
    out = spec.directory(cfg.runs_dir)
    if not cfg.overwrite and (out / MANIFEST).is_file():
        return  # there already (served, or resumed after the same checks inside harvest)
    texts = None  # the text bound needs the documents: local sources, as written (hub datasets: inside harvest)
    if spec.augment == "none" and not any(s.startswith("hf:") for s in spec.sources):
        from .store import offline_texts

        texts = offline_texts(spec.sources, spec.split)
    check_harvest_size(spec.n_tokens, out, d_model=shape[1], dtype_bytes=2 if spec.dtype == "bfloat16" else 4,
                       texts=texts, context_length=spec.context_length, chunk_offsets=spec.chunk_offsets)


def run_harvest(cfg: HarvestJob) -> dict:
    from ..concepts.swap import text_augmentation
    from ..lm.shards import read_manifest
    from .store import harvest_spec

    check_harvest_args(cfg)
    out = harvest_spec(cfg.spec, cfg.runs_dir, progress=True, overwrite=cfg.overwrite,
                       augment=text_augmentation(cfg.spec.augment))
    m = read_manifest(out)
    return {"dir": str(out), "model": m["model"], "layer": m["layer"], "hook_name": m["hook_name"],
            "tokens": m["tokens_written"], "n_shards": m["n_shards"], "content_sha256": m["content_sha256"]}


# ----------------------------------------------------------------------------- train
#: TrainConfig fields the store sets for a run of the train command (not part of its settings' hash)
STORE_FIELDS = ("checkpoint_dir", "snapshot_dir", "progress")


@dataclass
class StoreTrainConfig(TrainConfig):
    """:class:`~abstopk_mini.train_config.TrainConfig` of a run in the content-addressed store: its
    checkpoint and snapshots go into the run directory, so ``checkpoint_dir`` and ``snapshot_dir``
    stay None (the run directory) and ``checkpoint_every`` / ``snapshot_steps`` need neither."""

    def __post_init__(self):
        for name in ("checkpoint_dir", "snapshot_dir"):
            if getattr(self, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: the train command keeps its "
                                 "checkpoint and snapshots in its run directory (under --runs-dir; --out exports "
                                 f"the SAE); leave --{name.replace('_', '-')} out")
        run_dir = {name: "<run dir>" for name in ("checkpoint_dir", "snapshot_dir")}
        checked = TrainConfig(**(dataclasses.asdict(self) | run_dir))  # every other check of TrainConfig
        self.snapshot_steps = checked.snapshot_steps


@dataclass
class TrainJob:
    """An SAE trained on a harvest, content-addressed under the runs directory (a rerun reuses it)."""

    acts: str
    """Harvest directory (from `harvest`)."""
    activation: Literal[ACTIVATIONS] = "abstopk"
    """The SAE's activation."""
    d_sae: int = 4096
    """Latents."""
    k: int = 32
    """Non-zeros per token (the L0 that relu and the JumpReLUs are steered to)."""
    out: str | None = None
    """Save the SAE here too (the run directory is content-addressed under --runs-dir)."""
    overwrite: bool = False
    """Let --out replace an SAE (or SAE run directory) already there."""
    retrain: bool = False
    """Train again into the content-addressed run directory, replacing a cached (e.g. damaged) SAE."""
    runs_dir: str | None = None
    """Artifact root; None: $ABSTOPK_RUNS or ./runs."""
    train: StoreTrainConfig = field(default_factory=StoreTrainConfig)
    """The training settings (the seed seeds the SAE too)."""


def train_kw(cfg: TrainConfig) -> dict:
    """The settings that name a run directory: batch size and seed, and every other field of ``cfg``
    that differs from its default (so the runs made before a field was on the command line keep
    their directories); the store's own fields left out."""
    default = TrainConfig()
    kw = {"batch_size": cfg.batch_size, "seed": cfg.seed}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        if f.name not in STORE_FIELDS and f.name not in kw and value != getattr(default, f.name):
            kw[f.name] = value
    return kw


def check_train_fits(cfg, batch_size: int, runs_root=None) -> None:
    """Refuse an SAE (``cfg``; ``train --batch-size``, ``--runs-dir``) whose training cannot fit this
    machine, before anything is allocated: memory for its weights, their gradients and two Adam
    moments (4 x the parameters) and a batch's pre-activations, codes and their gradient
    (3 x batch x d_sae); disk for its run directory (the weights, and a checkpoint of weights and
    moments written beside the previous one: 6 x the parameters)."""
    import torch

    from ..device import get_device
    from ..limits import check_disk, check_memory, format_bytes
    from .store import runs_dir

    item = torch.empty(0, dtype=getattr(torch, cfg.dtype)).element_size()
    n_params = 2 * cfg.d_in * cfg.d_sae + 2 * cfg.d_sae + cfg.d_in  # W_enc, W_dec, b_enc, threshold, b_dec
    what = f"an SAE of --d-sae {cfg.d_sae:,} on d_in={cfg.d_in}"
    fix = "pass a smaller --d-sae (or --batch-size)"
    device = get_device()
    weights, batch = 4 * n_params * item, 3 * batch_size * cfg.d_sae * item
    check_memory(weights + batch, f"training {what} ({n_params:,} parameters with their gradients and Adam moments: "
                 f"{format_bytes(weights)}; a batch of {batch_size:,} tokens: {format_bytes(batch)})", fix,
                 device=None if device.type == "cpu" else device)
    check_disk(6 * item * n_params, runs_dir(runs_root), f"the run directory of {what}",
               f"{fix}, or --runs-dir on a disk with room")


def run_train(cfg: TrainJob) -> dict:
    from ..lm.compat import check_inputs
    from ..lm.shards import read_manifest
    from ..sae import SAEConfig
    from .store import export_sae, train_on_harvest

    check_runs_dir(cfg.runs_dir)
    check_positive(cfg.d_sae, "--d-sae")
    manifest = read_manifest(cfg.acts)
    # the harvest against the shape of the model it names (registry or config.json; nothing loaded)
    check_inputs(harvest=manifest, model=manifest["model"], names=harvest_names(cfg) | {"model": "the model it names"},
                 model_fix="the manifest does not fit its model (edited, or the model changed); re-run the harvest "
                           "with --overwrite")
    sae_cfg = SAEConfig(d_in=manifest["d_model"], d_sae=cfg.d_sae, activation=cfg.activation, k=cfg.k,
                        seed=cfg.train.seed)
    check_train_fits(sae_cfg, cfg.train.batch_size, cfg.runs_dir)
    sae, hist, path = train_on_harvest(cfg.acts, sae_cfg, cfg.runs_dir, progress=cfg.train.progress,
                                       retrain=cfg.retrain, **train_kw(cfg.train))
    if cfg.out:
        export_sae(sae, cfg.out, overwrite=cfg.overwrite, run_dir=path)
    # final_fvu / final_l0: the trained SAE on a fixed sample (train._final_metrics). A run cached by an earlier
    # version has none: null (its last batch's value is no summary of the SAE)
    last = {key: hist.get(f"final_{key}") for key in ("fvu", "l0", "dead_frac")}
    return {"dir": str(path), "out": cfg.out, "activation": cfg.activation, "d_sae": cfg.d_sae, "k": cfg.k,
            "n_tokens": hist["n_tokens"], "wall_time_s": hist["wall_time_s"], **{f"final_{k}": v for k, v in last.items()}}
