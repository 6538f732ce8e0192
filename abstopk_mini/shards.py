"""Reading a harvest back: its manifest, single shards, shuffled batches for training.

A harvest directory (written by :func:`abstopk_mini.activations.harvest`) holds
``manifest.json`` and ``shard_NNNNN.safetensors`` files. :class:`ShardDataset` streams them:
only a few shards are in memory at once, so a harvest larger than RAM can train an SAE::

    ds = am.shards.ShardDataset("runs/acts/gemma-3-270m/L6")
    sae, history = am.train_sae(cfg, ds)          # reshuffled every epoch, resumable

``train_sae`` recognises the ``iter_epoch(epoch, seed)`` method and uses it, so each epoch has its
own deterministic order and a resumed run reads exactly the batches it would have read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import json

import torch

__all__ = ["ShardDataset", "iter_batches", "load_activations", "check_compatible", "read_manifest"]

MANIFEST = "manifest.json"
FORMAT = "abstopk_mini.activations/1"
_REQUIRED = ("model", "layer", "hook_name", "d_model", "context_length", "complete", "shards")


def _check_positive(**values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}")


def read_manifest(out_dir) -> dict:
    """The harvest manifest of ``out_dir`` (FileNotFoundError if there is none)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"out_dir={str(out_dir)!r} holds no {MANIFEST}; run "
                                "am.activations.harvest(...) into it first")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        raise ValueError(f"{path} is not valid JSON ({err}); re-run the harvest with --overwrite") from err
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} holds a JSON {type(manifest).__name__}, not an object; re-run the harvest with --overwrite")
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not an abstopk_mini activation manifest (format {manifest.get('format')!r})")
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}; it was edited or truncated — re-run the harvest with --overwrite")
    return manifest


class ShardDataset:
    """Read a complete harvest: its manifest, single shards, shuffled batches.

    Only ``buffer_shards`` shards (plus a remainder smaller than a batch) are in memory at once.
    """

    def __init__(self, out_dir, *, allow_incomplete: bool = False):
        self.dir = Path(out_dir)
        self.manifest = read_manifest(self.dir)
        if not self.manifest["complete"] and not allow_incomplete:
            raise ValueError(f"the harvest in {str(self.dir)!r} is incomplete ({self.manifest['n_shards']} shards "
                             "so far); run the same harvest(...) call again to finish it")
        self.shards = self.manifest["shards"]
        missing = [s["file"] for s in self.shards if not (self.dir / s["file"]).is_file()]
        if missing:
            raise FileNotFoundError(f"{str(self.dir)!r} lacks shard files {missing[:3]}; re-run the harvest")

    def __len__(self) -> int:
        return sum(s["n_tokens"] for s in self.shards)

    @property
    def d_model(self) -> int:
        return self.manifest["d_model"]

    def read_shard(self, i: int, key: str = "activations") -> torch.Tensor:
        """Shard ``i``; activations as float32. shape: [n_i, d_model] (or [n_i] for the other keys)"""
        from safetensors import SafetensorError, safe_open

        path = self.dir / self.shards[i]["file"]
        try:
            with safe_open(str(path), framework="pt") as f:
                t = f.get_tensor(key)
        except (SafetensorError, OSError) as err:
            raise ValueError(f"shard {str(path)!r} is not a readable safetensors file ({err}); it is truncated or "
                             "corrupt — re-run the harvest with --overwrite") from err
        if key == "activations" and (t.ndim != 2 or t.shape[1] != self.d_model):
            raise ValueError(f"shard {str(path)!r} holds activations of shape {list(t.shape)} but the manifest says "
                             f"d_model={self.d_model}; the two disagree — re-run the harvest with --overwrite")
        return t.float() if key == "activations" else t

    def iter_batches(self, batch_size: int, seed: int = 0, buffer_shards: int = 4, epochs: int = 1,
                     drop_last: bool = False) -> Iterator[torch.Tensor]:
        """Shuffled float32 batches: shard order shuffled, then tokens shuffled within a buffer of
        ``buffer_shards`` shards (plus the previous buffer's remainder). Same seed, same batches.
        Without ``drop_last`` each epoch ends with one smaller batch if the count does not divide.
        shape: yields [batch_size, d_model]
        """
        _check_positive(batch_size=batch_size, buffer_shards=buffer_shards, epochs=epochs)
        for epoch in range(epochs):
            yield from self.iter_epoch(epoch, seed, batch_size, buffer_shards, drop_last)

    def iter_epoch(self, epoch: int, seed: int = 0, batch_size: int = 8192, buffer_shards: int = 4,
                   drop_last: bool = False) -> Iterator[torch.Tensor]:
        """The batches of one epoch; its order depends only on (seed, epoch).
        shape: yields [batch_size, d_model] (the last one may be smaller)"""
        _check_positive(batch_size=batch_size, buffer_shards=buffer_shards)
        g = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
        order = torch.randperm(len(self.shards), generator=g).tolist()
        carry = torch.empty(0, self.d_model)
        for start in range(0, len(order), buffer_shards):
            buf = torch.cat([carry] + [self.read_shard(i) for i in order[start:start + buffer_shards]])
            perm = torch.randperm(len(buf), generator=g)
            n_full = len(buf) // batch_size * batch_size
            for b in range(0, n_full, batch_size):
                yield buf[perm[b:b + batch_size]]
            carry = buf[perm[n_full:]]
            del buf
        if len(carry) and not drop_last:
            yield carry


def iter_batches(out_dir, batch_size: int, seed: int = 0, buffer_shards: int = 4, epochs: int = 1,
                 drop_last: bool = False) -> Iterator[torch.Tensor]:
    """``ShardDataset(out_dir).iter_batches(...)``: shuffled [batch_size, d_model] float32 batches."""
    return ShardDataset(out_dir).iter_batches(batch_size, seed, buffer_shards, epochs, drop_last)


def load_activations(out_dir, max_tokens: int | None = None) -> torch.Tensor:
    """All activations (or the first ``max_tokens``) in harvest order, as one float32 tensor.
    shape: [min(N, max_tokens), d_model]"""
    ds = ShardDataset(out_dir)
    limit = len(ds) if max_tokens is None else min(max_tokens, len(ds))
    parts, n = [], 0
    for i in range(len(ds.shards)):
        if n >= limit:
            break
        part = ds.read_shard(i)[: limit - n]
        parts.append(part)
        n += len(part)
    return torch.cat(parts) if parts else torch.empty(0, ds.d_model)


def check_compatible(manifest, model_name: str, layer: int, d_model: int | None = None) -> None:
    """Raise ValueError unless the activations (a manifest dict, a harvest dir or a ShardDataset)
    come from ``model_name`` at ``layer`` (and have width ``d_model`` if given)."""
    if isinstance(manifest, ShardDataset):
        manifest = manifest.manifest
    elif not isinstance(manifest, dict):
        manifest = read_manifest(manifest)
    problems = []
    if manifest["model"] != model_name:
        problems.append(f"model {manifest['model']!r} (expected {model_name!r})")
    if manifest["layer"] != layer:
        problems.append(f"layer {manifest['layer']} / {manifest['hook_name']} (expected layer {layer})")
    if d_model is not None and manifest["d_model"] != d_model:
        problems.append(f"d_model {manifest['d_model']} (expected {d_model})")
    if problems:
        raise ValueError("these activations do not fit: they come from " + "; ".join(problems) +
                         ". Harvest activations of that model and layer, or use an SAE trained on these.")
