"""End-to-end steps on real models, shared by the CLI, the notebooks and the sweep.

Every artifact lives in a directory named by a hash of the settings that determine it, under
``$ABSTOPK_RUNS`` (default ``./runs``)::

    runs/acts/gemma-3-270m-L6-train-3f2a9c1e0b/     a harvest (manifest.json + shards)
    runs/saes/abstopk-4096-k32-8d41b0a2c7/          an SAE (cfg.json, sae_weights.safetensors,
                                                     history.json, train.json)

Asking for the same harvest or the same SAE twice does the work once: a complete directory is
reused, an interrupted one is resumed (harvests continue from their last shard, training from
its last checkpoint). A file lock next to each directory makes concurrent processes (notebooks,
the sweep, the CLI) wait for the one doing the work instead of doing it twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .models import _flock
from .sae import SAE, SAEConfig, _atomic_write

__all__ = [
    "runs_dir", "HarvestSpec", "harvest_spec", "offline_texts", "sae_dir", "train_on_harvest",
    "load_history", "CHECKPOINT_EVERY",
]

CHECKPOINT_EVERY = 200  # training steps between checkpoints of a pipeline run


def runs_dir(root: str | os.PathLike | None = None) -> Path:
    """Where pipeline artifacts go: ``root``, else ``$ABSTOPK_RUNS``, else ``./runs``."""
    return Path(root if root is not None else os.environ.get("ABSTOPK_RUNS", "runs"))


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------- harvest
@dataclass(frozen=True)
class HarvestSpec:
    """What to harvest: model, layer, how many tokens of which text.

    sources: offline sources of :mod:`abstopk_mini.corpus` (``wiki``, ``lee``, ``newsgroups``) or
    ``hf:<dataset id>`` for a hub dataset (online only). split: ``train`` or ``heldout`` (by
    document, see :func:`abstopk_mini.corpus.train_heldout_split`). chunk_offsets: one pass per
    offset (see :func:`abstopk_mini.activations.harvest`).
    """

    model: str = "gemma-3-270m"
    layer: int = 6
    n_tokens: int = 1_000_000
    context_length: int = 128
    sources: tuple[str, ...] = ("wiki", "lee", "newsgroups")
    split: str = "train"
    chunk_offsets: tuple[int, ...] = (0, 64)
    dtype: str = "float32"

    def __post_init__(self):
        if self.split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout'; got {self.split!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16'; got {self.dtype!r}")

    @property
    def text_source(self) -> str:
        return f"{'+'.join(self.sources)}:{self.split}"

    def directory(self, root=None) -> Path:
        name = Path(self.model).name if os.sep in self.model else self.model.replace("/", "--")
        return runs_dir(root) / "acts" / f"{name}-L{self.layer}-{self.split}-{_key(dataclasses.asdict(self))}"


def offline_texts(sources=("wiki", "lee", "newsgroups"), split: str = "train", n_docs: int = 20_000) -> list:
    """The documents of ``sources`` on one side of the train/held-out split (or a hub dataset)."""
    from . import corpus

    hub = [s for s in sources if s.startswith("hf:")]
    local = [s for s in sources if not s.startswith("hf:")]
    docs = corpus.load_docs(local) if local else []
    for s in hub:
        docs += [corpus.Document(text=t, source=s) for t in corpus.hf_texts(s[3:], n_docs=n_docs)]
    train, held = corpus.train_heldout_split(docs)
    return train if split == "train" else held


def harvest_spec(spec: HarvestSpec, root=None, loaded=None, progress: bool = True, overwrite: bool = False) -> Path:
    """Harvest ``spec`` (or reuse / resume it) and return its directory."""

    out = spec.directory(root)
    with _flock(out.with_name(out.name + ".lock"), exclusive=True):  # one process harvests, the others wait
        return _harvest_locked(spec, out, loaded, progress, overwrite)


def _harvest_locked(spec: HarvestSpec, out: Path, loaded, progress: bool, overwrite: bool) -> Path:
    from .activations import harvest
    from .shards import read_manifest

    if (out / "manifest.json").is_file() and not overwrite:
        manifest = read_manifest(out)
        if manifest.get("complete"):
            return out
    if loaded is None:
        from .models import load_model

        loaded = load_model(spec.model)
    texts = offline_texts(spec.sources, spec.split)
    harvest(loaded, texts, spec.layer, spec.n_tokens, out, context_length=spec.context_length,
            dtype=getattr(torch, spec.dtype), text_source=spec.text_source, chunk_offsets=spec.chunk_offsets,
            overwrite=overwrite, progress=progress)
    return out


# ----------------------------------------------------------------------------- training
def sae_dir(acts_dir, cfg: SAEConfig, train_kw: dict, root=None) -> Path:
    """The content-addressed directory of an SAE trained on ``acts_dir`` with these settings."""
    from .shards import read_manifest

    manifest = read_manifest(acts_dir)
    ident = {"acts": manifest.get("content_sha256"), "cfg": cfg.to_dict() | {"device": None}, "train": train_kw}
    k = f"-k{cfg.k}" if cfg.k is not None else ""
    return runs_dir(root) / "saes" / f"{cfg.activation}-{cfg.d_sae}{k}-{_key(ident)}"


def load_history(path) -> dict:
    return json.loads((Path(path) / "history.json").read_text())


def train_on_harvest(acts_dir, cfg: SAEConfig, root=None, *, progress: bool = True, retrain: bool = False,
                     **train_kw) -> tuple[SAE, dict, Path]:
    """Train ``cfg`` on a harvest (or load the SAE trained before with the same settings).

    The SAE's config records the model, hook and layer of the activations, so later steps can
    refuse activations of another model or layer. Returns ``(sae, history, directory)``.
    """
    from .shards import ShardDataset

    ds = ShardDataset(acts_dir)
    m = ds.manifest
    if cfg.d_in != ds.d_model:
        raise ValueError(f"cfg.d_in={cfg.d_in} but the activations in {str(acts_dir)!r} have width {ds.d_model} "
                         f"({m['model']}, {m['hook_name']}); use d_in={ds.d_model}")
    cfg = dataclasses.replace(cfg, model_name=m["model"], hook_name=m["hook_name"], hook_layer=m["layer"],
                              context_size=m["context_length"])
    out = sae_dir(acts_dir, cfg, train_kw, root)
    with _flock(out.with_name(out.name + ".lock"), exclusive=True):  # one process trains, the others wait
        return _train_locked(ds, cfg, out, acts_dir, m, progress, retrain, train_kw)


def _train_locked(ds, cfg, out: Path, acts_dir, m: dict, progress: bool, retrain: bool, train_kw: dict):
    from .train import CHECKPOINT_FILE, train_sae

    if not retrain and (out / "history.json").is_file() and (out / "cfg.json").is_file():
        return SAE.load(out), load_history(out), out
    ckpt = out / "checkpoint"
    resume = ckpt if (ckpt / CHECKPOINT_FILE).is_file() and not retrain else None
    kw = {"checkpoint_every": CHECKPOINT_EVERY} | train_kw
    sae, history = train_sae(cfg, ds, resume=resume, checkpoint_dir=str(ckpt), progress=progress, **kw)
    sae.save(out)
    record = {"acts_dir": str(acts_dir), "acts_sha256": m.get("content_sha256"), "train_kw": train_kw}
    _atomic_write(out / "train.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, default=str)))
    _atomic_write(out / "history.json", lambda tmp: Path(tmp).write_text(json.dumps(history, default=float)))
    (ckpt / CHECKPOINT_FILE).unlink(missing_ok=True)
    return sae, history, out
