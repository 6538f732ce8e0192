"""End-to-end steps on real models, shared by the CLI, the notebooks and the sweep.

Every artifact lives in a directory named by a hash of the settings that determine it, under
``$ABSTOPK_RUNS`` (default ``./runs``)::

    runs/acts/gemma-3-270m-L6-train-3f2a9c1e0b/     a harvest (manifest.json + shards)
    runs/saes/abstopk-4096-k32-8d41b0a2c7/          an SAE (cfg.json, sae_weights.safetensors,
                                                     history.json, train.json)

Asking for the same harvest or the same SAE twice does the work once (:func:`harvest_spec`,
:func:`train_or_load`; both at once: :func:`harvest_and_train`): a complete directory is
reused, an interrupted one is resumed (harvests continue from their last shard, training from
its last checkpoint). A file lock next to each directory makes concurrent processes (notebooks,
the sweep, the CLI) wait for the one doing the work instead of doing it twice; training holds a
shared lock on its harvest, so overwriting a harvest waits for the runs reading it.

Nothing is served unchecked: a cached SAE is reused only if its ``cfg.json`` is the requested
config and its weights and ``cfg.json`` have the sha256 recorded in ``train.json`` when it was trained
(:func:`load_trained`; ``retrain=True`` repairs a run that fails the check), and a harvest's
shards are checked against their hashes before the first training on it
(:func:`abstopk_mini.lm.shards.verify_harvest`, remembered afterwards).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from ..checkpoint import has_checkpoint, remove_checkpoint
from ..io import flock, relative_to_runs, runs_dir
from ..sae import CONFIG_FILE, SAE, WEIGHTS_FILE, SAEConfig
from ..sparsity import recipe_key
from ..train_config import OPTIMISER_RECIPE
from .trained import (HISTORY_FILE, SNAPSHOT_DIR, TRAIN_FILE, load_history, load_snapshots, load_trained,
                      save_trained)

__all__ = [
    "runs_dir", "runs_label", "relative_to_runs", "content_key", "HarvestSpec", "harvest_spec", "offline_texts", "sae_dir", "train_or_load",
    "train_on_harvest", "harvest_and_train", "TrainedSAEs", "load_history", "load_trained", "save_trained",
    "export_sae", "harvest_lock", "CHECKPOINT_EVERY", "SNAPSHOT_DIR", "load_snapshots",
]

CHECKPOINT_EVERY = 200  # training steps between checkpoints of a pipeline run


def runs_label(quick: bool = False) -> str:
    """How a chapter names :func:`runs_dir` to its reader, never as a machine path: ``"$ABSTOPK_RUNS"``
    when that is set, else ``"./runs"``; ``"a temporary folder"`` for quick mode's throw-away runs."""
    if quick:
        return "a temporary folder"
    return "$ABSTOPK_RUNS" if os.environ.get("ABSTOPK_RUNS", "").strip() else "./runs"  # empty = unset (runs_dir)


def content_key(obj) -> str:
    """The 10-hex-digit key of a JSON-able object (sorted keys): what names content-addressed runs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------- harvest
@dataclass(frozen=True)
class HarvestSpec:
    """What to harvest: model, layer, how many tokens of which text (each field's docstring says how).

    ``augment="none"`` is left out of :meth:`identity`, so the harvests made before the field existed
    keep their directories and keys.
    """

    model: str = "gemma-3-270m"
    """The model: a registry name, a hub id or a local folder."""
    layer: int = 6
    """The residual stream after this block."""
    n_tokens: int = 1_000_000
    """Tokens to harvest (BOS positions are not harvested)."""
    context_length: int = 128
    """Tokens per chunk, BOS included."""
    sources: tuple[str, ...] = ("wiki", "lee", "newsgroups")
    """Text sources: the offline ones of abstopk_mini.lm.corpus (wiki, lee, newsgroups), or hf:<dataset id> for a
    hub dataset (online only)."""
    split: str = "train"
    """train or heldout: which side of the split by document (abstopk_mini.lm.corpus.train_heldout_split)."""
    chunk_offsets: tuple[int, ...] = (0, 64)
    """Token offsets at which chunks are cut, one pass over the text each (abstopk_mini.lm.activations.harvest)."""
    dtype: str = "float32"
    """Stored dtype of the activations: float32 or bfloat16."""
    augment: str = "none"
    """none, or the name of a text transform applied to the training documents, which the caller passes to
    harvest_spec (gender_swap: every document followed by its gender-swapped copy,
    abstopk_mini.concepts.swap.text_augmentation); part of the harvest's identity; training split only."""

    def __post_init__(self):
        if not isinstance(self.augment, str) or not self.augment.strip():
            raise ValueError(f"augment must name a text augmentation ('none', or e.g. 'gender_swap'); got {self.augment!r}")
        if self.augment != "none" and self.split != "train":
            raise ValueError(f"augment={self.augment!r} applies to the training split only (held-out text is "
                             f"read as written); got split={self.split!r}. Use augment='none' for held-out text")
        if self.split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout'; got {self.split!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16'; got {self.dtype!r}")
        if (isinstance(self.sources, str) or not self.sources
                or not all(isinstance(s, str) and s.strip() for s in self.sources)):
            raise ValueError(f"sources must name at least one text source (wiki, lee, newsgroups or hf:<dataset>), "
                             f"none empty; got {self.sources!r}. Pass e.g. sources=('wiki', 'lee') "
                             "(CLI: --sources wiki,lee)")
        for name in ("layer", "n_tokens", "context_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int; got {value!r}")
        if self.layer < 0:
            raise ValueError(f"layer must be >= 0; got {self.layer} (CLI: --layer)")
        if self.n_tokens < 1:
            raise ValueError(f"n_tokens must be >= 1; got {self.n_tokens} (CLI: --tokens)")
        if self.context_length < 2:
            raise ValueError(f"context_length must be >= 2 (BOS plus at least one token, the BOS position is not "
                             f"harvested); got {self.context_length} (CLI: --context)")
        offsets = self.chunk_offsets
        if (isinstance(offsets, str) or not offsets
                or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)):
            raise ValueError(f"chunk_offsets must be one or more ints >= 0 (token positions to start cutting "
                             f"chunks at); got {offsets!r} (CLI: --offsets 0,64)")

    @property
    def text_source(self) -> str:
        augment = f"+{self.augment}" if self.augment != "none" else ""
        return f"{'+'.join(self.sources)}:{self.split}{augment}"

    def identity(self) -> dict:
        """The fields that name this harvest (its directory key, sweep keys and records):
        every field, less ``augment`` when it is ``"none"``."""
        d = dataclasses.asdict(self)
        if d["augment"] == "none":
            del d["augment"]
        return d

    def heldout(self, n_tokens: int) -> "HarvestSpec":
        """The matching held-out harvest: ``n_tokens`` of the held-out documents (as written), one chunk offset."""
        return dataclasses.replace(self, split="heldout", n_tokens=n_tokens, chunk_offsets=(0,), augment="none")

    def directory(self, root=None) -> Path:
        name = Path(self.model).name if os.sep in self.model else self.model.replace("/", "--")
        return runs_dir(root) / "acts" / f"{name}-L{self.layer}-{self.split}-{content_key(self.identity())}"


def offline_texts(sources=("wiki", "lee", "newsgroups"), split: str = "train", n_docs: int = 20_000) -> list:
    """The documents of ``sources`` on one side of the train/held-out split (or a hub dataset)."""
    from ..lm import corpus

    hub = [s for s in sources if s.startswith("hf:")]
    local = [s for s in sources if not s.startswith("hf:")]
    docs = corpus.load_docs(local) if local else []
    for s in hub:
        docs += [corpus.Document(text=t, source=s) for t in corpus.hf_texts(s[3:], n_docs=n_docs)]
    train, held = corpus.train_heldout_split(docs)
    return train if split == "train" else held


def harvest_spec(spec: HarvestSpec, root=None, loaded=None, progress: bool = True, overwrite: bool = False,
                 augment: Callable[[list], list] | None = None) -> Path:
    """Harvest ``spec`` (or reuse / resume it) and return its directory.

    augment: the text transform ``spec.augment`` names (documents -> documents, e.g.
    :func:`abstopk_mini.concepts.swap.text_augmentation` of it), needed only when the harvest is
    made; None for ``augment="none"``."""
    from ..lm.shards import read_manifest

    if augment is not None and spec.augment == "none":
        raise ValueError("augment= was given but spec.augment='none': name the transform in the spec "
                         "(HarvestSpec(augment=...)), since the name is what keys the harvest's directory")
    out = spec.directory(root)
    lock = out.with_name(out.name + ".lock")
    if not overwrite:  # a complete harvest is read under a shared lock: trainers reading it do not block this
        with flock(lock, exclusive=False):
            if (out / "manifest.json").is_file() and read_manifest(out).get("complete"):
                return out
    # one process harvests, the others wait; an overwrite also waits for the trainers reading it
    # (train_on_harvest holds the shared lock)
    with flock(lock, exclusive=True):
        return _harvest_locked(spec, out, loaded, progress, overwrite, augment)


def _harvest_locked(spec: HarvestSpec, out: Path, loaded, progress: bool, overwrite: bool, augment) -> Path:
    from ..lm.activations import harvest
    from ..lm.shards import read_manifest

    if (out / "manifest.json").is_file() and not overwrite:
        manifest = read_manifest(out)
        if manifest.get("complete"):
            return out
    if spec.augment != "none" and augment is None:
        raise ValueError(f"spec.augment={spec.augment!r} names a text transform that was not passed: call "
                         f"harvest_spec(spec, ..., augment=abstopk_mini.concepts.swap.text_augmentation({spec.augment!r}))")
    if loaded is None:
        from ..lm.models import load_model

        loaded = load_model(spec.model)
    texts = offline_texts(spec.sources, spec.split)
    if augment is not None:
        texts = augment(texts)
    harvest(loaded, texts, spec.layer, spec.n_tokens, out, context_length=spec.context_length,
            dtype=getattr(torch, spec.dtype), text_source=spec.text_source, chunk_offsets=spec.chunk_offsets,
            overwrite=overwrite, progress=progress)
    return out


# ----------------------------------------------------------------------------- training
def sae_dir(acts_dir, cfg: SAEConfig, train_kw: dict, root=None) -> Path:
    """The content-addressed directory of an SAE trained on ``acts_dir`` with these settings."""
    from ..lm.shards import read_manifest

    manifest = read_manifest(acts_dir)
    ident = {"acts": manifest.get("content_sha256"), "cfg": cfg.key_dict() | {"device": None}, "train": train_kw}
    ident["optimiser"] = OPTIMISER_RECIPE  # the step every SAE takes changed (gradient clipping): new keys
    if recipe_key(cfg.spec) is not None:  # the penalty families' training changed: a new key, not the old SAE
        ident["sparsity_recipe"] = recipe_key(cfg.spec)
    k = f"-k{cfg.k}" if cfg.k is not None else ""
    return runs_dir(root) / "saes" / f"{cfg.activation}-{cfg.d_sae}{k}-{content_key(ident)}"


def harvest_lock(acts_dir) -> Path:
    """The lock file of a harvest directory (shared while training reads it, exclusive while writing;
    on read-only media a reader goes without it: :func:`abstopk_mini.io.flock`)."""
    acts_dir = Path(acts_dir).resolve()
    return acts_dir.with_name(acts_dir.name + ".lock")


def train_or_load(acts_dir, cfg: SAEConfig, root=None, *, progress: bool = True, retrain: bool = False,
                  start=None, **train_kw) -> tuple[SAE, dict, Path]:
    """Train ``cfg`` on a harvest, or load the SAE trained before with the same settings.

    The one path from a harvest to a stored SAE: shared lock on the harvest → the run directory
    (:func:`sae_dir`) → its lock → reuse after :func:`load_trained` checked it, or train → save.
    The SAE's config records the model, hook and layer of the activations, so later steps can
    refuse activations of another model or layer. ``retrain=True`` trains again into the same
    directory (the repair for a damaged run). The harvest's shards are checked against their hashes
    before the first training on it (:func:`abstopk_mini.lm.shards.verify_harvest`), and the shared
    lock on the harvest is held throughout, so ``harvest_spec(..., overwrite=True)`` waits.

    start: None (``train_sae`` sets the SAE up from the data; checkpoints every
    ``CHECKPOINT_EVERY`` steps, so an interrupted run resumes), or a function
    ``(cfg, acts_dir) -> (sae, ident)`` called under the harvest lock that builds the starting SAE
    (e.g. a frozen ``b_dec``, :mod:`abstopk_mini.runs.sweep`): the run is then named by ``sae.cfg``
    and ``ident`` instead of ``train_kw``, and trains without checkpoints (a resumed state would
    not keep what ``start`` froze). Returns ``(sae, history, directory)``.
    """
    from ..lm.shards import ShardDataset

    with flock(harvest_lock(acts_dir), exclusive=False):
        ds = ShardDataset(acts_dir)
        m = ds.manifest
        if cfg.d_in != ds.d_model:
            raise ValueError(f"cfg.d_in={cfg.d_in} but the activations in {str(acts_dir)!r} have width {ds.d_model} "
                             f"({m['model']}, {m['hook_name']}); use d_in={ds.d_model}")
        cfg = dataclasses.replace(cfg, model_name=m["model"], hook_name=m["hook_name"], hook_layer=m["layer"],
                                  context_size=m["context_length"])
        sae, ident = start(cfg, acts_dir) if start is not None else (None, train_kw)
        cfg = sae.cfg if sae is not None else cfg
        out = sae_dir(acts_dir, cfg, ident, root)
        with flock(out.with_name(out.name + ".lock"), exclusive=True):  # one process trains, the others wait
            if not retrain and (out / HISTORY_FILE).is_file():
                return (*load_trained(out, cfg), out)
            sae, history = _train(ds, acts_dir, cfg, out, sae, progress, retrain, train_kw)
            record = {"acts_dir": str(acts_dir), "acts_sha256": m.get("content_sha256"), "train_kw": ident}
            save_trained(out, sae, history, record)
            remove_checkpoint(out / "checkpoint")
            return sae, history, out


#: the name the CLI, the recipes and the notebooks call it by
train_on_harvest = train_or_load


def _train(ds, acts_dir, cfg: SAEConfig, out: Path, sae: SAE | None, progress: bool, retrain: bool, train_kw: dict):
    from ..lm.shards import verify_harvest
    from ..train import train_sae

    if retrain:  # the run is incomplete until retrained: an interruption resumes, it does not serve the old files
        (out / HISTORY_FILE).unlink(missing_ok=True)
    verify_harvest(acts_dir)
    if train_kw.get("snapshot_steps"):  # SAEs saved along the way: out/snapshots/step_NNNNNN
        train_kw = train_kw | {"snapshot_dir": str(out / SNAPSHOT_DIR)}
    if sae is not None:
        return train_sae(cfg, ds, sae=sae, progress=progress, **train_kw)
    ckpt = out / "checkpoint"
    resume = ckpt if has_checkpoint(ckpt) and not retrain else None
    kw = {"checkpoint_every": CHECKPOINT_EVERY} | train_kw
    return train_sae(cfg, ds, resume=resume, checkpoint_dir=str(ckpt), progress=progress, **kw)


@dataclass
class TrainedSAEs:
    """What :func:`harvest_and_train` returns: the two harvests, the held-out activations ``x_held``
    [N, d_in], and by name each SAE (in eval mode), its history and run directory; ``wall_s``: the
    seconds of the harvests (``harvest_s``) and of each SAE (``train_<name>_s``; ~0 when reused)."""

    acts_dir: Path
    held_dir: Path
    x_held: torch.Tensor
    saes: dict
    histories: dict
    dirs: dict
    wall_s: dict


def harvest_and_train(spec: HarvestSpec, cfgs: Mapping[str, SAEConfig], root=None, *, heldout_tokens: int,
                      loaded=None, progress: bool = True, log=None, augment=None, **train_kw) -> TrainedSAEs:
    """Harvest ``spec`` and its held-out counterpart (:meth:`HarvestSpec.heldout`), then train or
    reuse each config of ``cfgs`` (name -> SAEConfig) on the harvest with ``train_kw``
    (:func:`train_or_load`). The one path of ``reproduce`` and the book's chapters 6-8, so they
    share their runs. loaded: the model (else loaded for a harvest that is not there yet).
    log: called with one line before each step. augment: the text transform ``spec.augment``
    names (:func:`harvest_spec`)."""
    from ..lm.shards import load_activations

    log = log or (lambda msg: None)
    wall, t = {}, time.perf_counter()
    log(f"harvest {spec.n_tokens:,} tokens of {spec.model} layer {spec.layer}")
    acts_dir = harvest_spec(spec, root, loaded=loaded, progress=progress, augment=augment)
    held_dir = harvest_spec(spec.heldout(heldout_tokens), root, loaded=loaded, progress=progress)
    x_held = load_activations(held_dir)
    wall["harvest_s"] = time.perf_counter() - t
    saes, histories, dirs = {}, {}, {}
    for name, cfg in cfgs.items():
        n = train_kw.get("n_tokens")
        log(f"train {name} (d_sae={cfg.d_sae}, {f'{n:,} tokens' if n else 'one pass'})")
        t = time.perf_counter()
        sae, histories[name], dirs[name] = train_or_load(acts_dir, cfg, root, progress=progress, **train_kw)
        saes[name] = sae.eval()
        wall[f"train_{name}_s"] = time.perf_counter() - t
    return TrainedSAEs(acts_dir, held_dir, x_held, saes, histories, dirs, wall)


def export_sae(sae: SAE, out, *, overwrite: bool = False, run_dir=None) -> Path:
    """Save ``sae`` into directory ``out`` too (``train --out``), never silently over another SAE.

    ``out`` that already holds an SAE (``cfg.json`` or ``sae_weights.safetensors``) or is an SAE
    run directory (``history.json``/``train.json``) is refused unless ``overwrite``; with it, a run
    directory loses its ``history.json`` and ``train.json`` first, so the store no longer serves it
    and trains it again when next asked. ``out`` equal to ``run_dir`` (where the SAE already is) is
    left as it is. Returns ``out``.
    """
    out = Path(out)
    if run_dir is not None and out.exists() and out.resolve() == Path(run_dir).resolve():
        return out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; pass a directory path")
    full = out.resolve()
    with flock(full.with_name(full.name + ".lock"), exclusive=True):  # the store's lock, if out is a run directory
        held = [name for name in (CONFIG_FILE, WEIGHTS_FILE, HISTORY_FILE, TRAIN_FILE) if (out / name).exists()]
        if held and not overwrite:
            what = "an SAE run directory" if {HISTORY_FILE, TRAIN_FILE} & set(held) else "another SAE"
            raise ValueError(f"--out {str(out)!r} already holds {what} ({', '.join(held)}); pass --overwrite "
                             "(overwrite=True) to replace it, or choose another --out")
        for name in (HISTORY_FILE, TRAIN_FILE):
            (out / name).unlink(missing_ok=True)
        sae.save(out)
    return out
