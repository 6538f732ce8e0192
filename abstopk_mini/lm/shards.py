"""Reading a harvest back: its manifest, single shards, shuffled batches for training.

A harvest directory (written by :func:`abstopk_mini.lm.activations.harvest`) holds
``manifest.json`` and ``shard_NNNNN.safetensors`` files. :class:`ShardDataset` streams them:
only a few shards are in memory at once, so a harvest larger than RAM can train an SAE::

    ds = am.shards.ShardDataset("runs/acts/gemma-3-270m/L6")
    sae, history = am.train_sae(cfg, ds)          # reshuffled every epoch, resumable

``train_sae`` recognises the ``iter_epoch(epoch, seed)`` method and uses it, so each epoch has its
own deterministic order and a resumed run reads exactly the batches it would have read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import torch

from .checks import check_positive

__all__ = ["ShardDataset", "iter_batches", "load_activations", "check_compatible", "read_manifest", "verify_harvest"]

MANIFEST = "manifest.json"
FORMAT = "abstopk_mini.activations/1"  # written into every manifest: a format id, not a module path
VERIFIED = ".verified.json"  # remembers that the shards matched their hashes (see verify_harvest)
_REQUIRED = ("model", "layer", "hook_name", "d_model", "context_length", "complete", "shards")


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
        if self.manifest["complete"] and not any(isinstance(s, dict) and s.get("n_tokens") for s in self.shards):
            offsets = self.manifest.get("chunk_offsets", [0])
            raise ValueError(f"the harvest in {str(self.dir)!r} holds no tokens (0 of the {self.manifest.get('n_tokens')} "
                             f"asked): its texts gave none from chunk offsets {offsets}. Harvest again with smaller "
                             "--offsets (e.g. 0,64) and --overwrite, or delete that directory")
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
        check_positive(batch_size=batch_size, buffer_shards=buffer_shards, epochs=epochs)
        for epoch in range(epochs):
            yield from self.iter_epoch(epoch, seed, batch_size, buffer_shards, drop_last)

    def iter_epoch(self, epoch: int, seed: int = 0, batch_size: int = 8192, buffer_shards: int = 4,
                   drop_last: bool = False) -> Iterator[torch.Tensor]:
        """The batches of one epoch; its order depends only on (seed, epoch).
        shape: yields [batch_size, d_model] (the last one may be smaller)"""
        check_positive(batch_size=batch_size, buffer_shards=buffer_shards)
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


def _fingerprint(out: Path, manifest_bytes: bytes, shards: list) -> str:
    """What the verified-marker is keyed by: the manifest's bytes and each shard file's identity
    (size, mtime, inode). Any rewrite, swap or edit of the files changes it."""
    h = hashlib.sha256(manifest_bytes)
    for rec in shards:
        st = (out / rec["file"]).stat()
        h.update(f"|{rec['file']}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode())
    return h.hexdigest()


def verify_harvest(out_dir) -> bool:
    """Check a complete harvest against its manifest; once, then remembered.

    Checks: every shard file exists, holds ``activations`` [n_tokens, d_model] of the manifest's
    dtype and ``token_ids`` [n_tokens], and their bytes have the sha256 the manifest recorded; the
    shard counts add up (``tokens_written``, ``n_shards``, ``n_tokens`` >= ``tokens_written``) and
    ``content_sha256`` is the hash of the shard hashes. A success is remembered in
    ``.verified.json``, keyed by the manifest's bytes and the shard files' sizes, mtimes and
    inodes, so the next call costs a few ``stat`` calls; a swapped shard or an edited manifest is
    checked again. Returns True when the shards were hashed now, False when the check was
    remembered. Raises ValueError naming the file and what differs.
    """
    from safetensors import safe_open

    from ..io import atomic_write, sha256_tensors

    out = Path(out_dir)
    manifest = read_manifest(out)
    fix = "the harvest was changed after it was written; re-run it (CLI: harvest ... --overwrite)"
    if not manifest.get("complete"):
        raise ValueError(f"the harvest in {str(out)!r} is incomplete; run the same harvest again to finish it")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(isinstance(r, dict) and {"file", "n_tokens", "sha256"} <= set(r)
                                                  for r in shards):
        raise ValueError(f"{out / MANIFEST} lists no valid shards; {fix}")
    missing = [r["file"] for r in shards if not (out / r["file"]).is_file()]
    if missing:
        raise FileNotFoundError(f"{str(out)!r} lacks shard files {missing[:3]}; {fix}")
    key = _fingerprint(out, (out / MANIFEST).read_bytes(), shards)
    try:
        if json.loads((out / VERIFIED).read_text()).get("fingerprint") == key:
            return False
    except (OSError, ValueError, AttributeError):
        pass
    problems = []
    written = sum(r["n_tokens"] for r in shards)
    if manifest.get("tokens_written") != written:
        problems.append(f"tokens_written={manifest.get('tokens_written')!r} but the shards list {written} tokens")
    if manifest.get("n_shards") != len(shards):
        problems.append(f"n_shards={manifest.get('n_shards')!r} but {len(shards)} shards are listed")
    if not isinstance(manifest.get("n_tokens"), int) or manifest["n_tokens"] < written:
        problems.append(f"n_tokens={manifest.get('n_tokens')!r} is less than the {written} tokens written")
    content = hashlib.sha256("".join(r["sha256"] for r in shards).encode()).hexdigest()
    if manifest.get("content_sha256") != content:
        problems.append("content_sha256 is not the hash of the shards' hashes")
    for rec in shards:
        path = out / rec["file"]
        try:
            with safe_open(str(path), framework="pt") as f:
                acts, ids = f.get_tensor("activations"), f.get_tensor("token_ids")
        except Exception as err:  # safetensors raises its own error types on a bad file
            problems.append(f"{rec['file']} is not a readable shard ({type(err).__name__}: {err})")
            continue
        n = rec["n_tokens"]
        if tuple(acts.shape) != (n, manifest.get("d_model")) or tuple(ids.shape) != (n,):
            problems.append(f"{rec['file']} holds activations {tuple(acts.shape)} and token_ids {tuple(ids.shape)}, "
                            f"the manifest says {n} tokens of width {manifest.get('d_model')}")
        elif str(acts.dtype).removeprefix("torch.") != manifest.get("dtype"):
            problems.append(f"{rec['file']} holds {acts.dtype} activations, the manifest says {manifest.get('dtype')}")
        elif sha256_tensors(acts, ids) != rec["sha256"]:
            problems.append(f"{rec['file']}: sha256 differs from the manifest's (the shard was replaced or edited)")
    if problems:
        raise ValueError(f"the harvest in {str(out)!r} does not match its manifest: " + "; ".join(problems[:5]) +
                         (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "") + f". {fix}")
    try:
        atomic_write(out / VERIFIED, lambda tmp: Path(tmp).write_text(json.dumps({"fingerprint": key})))
    except OSError:  # a read-only harvest: verified now, checked again next time
        pass
    return True


def iter_batches(out_dir, batch_size: int, seed: int = 0, buffer_shards: int = 4, epochs: int = 1,
                 drop_last: bool = False) -> Iterator[torch.Tensor]:
    """``ShardDataset(out_dir).iter_batches(...)``: shuffled [batch_size, d_model] float32 batches."""
    return ShardDataset(out_dir).iter_batches(batch_size, seed, buffer_shards, epochs, drop_last)


def load_activations(out_dir, max_tokens: int | None = None) -> torch.Tensor:
    """All activations (or the first ``max_tokens``) in harvest order, as one float32 tensor.
    shape: [min(N, max_tokens), d_model]"""
    from ..limits import check_memory

    ds = ShardDataset(out_dir)
    limit = len(ds) if max_tokens is None else min(max_tokens, len(ds))
    check_memory(2 * limit * ds.d_model * 4, f"loading {limit:,} activations of width {ds.d_model} from {str(out_dir)!r} "
                 "(the shards read, then joined into one tensor)",
                 "ask for fewer tokens (CLI: --acts-tokens / --tokens), or stream the harvest with ShardDataset")
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
