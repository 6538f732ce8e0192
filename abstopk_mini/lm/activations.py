r"""Residual-stream activations: read them with a truncated forward, harvest them to disk, stream
them back shuffled.

The SAE input is the residual stream after block :math:`L`,
``blocks.L.hook_resid_post`` in TransformerLens/SAELens naming: with :math:`h_0` the (scaled)
token embeddings and :math:`h_{l+1} = \mathrm{block}_l(h_l)`, we read :math:`x = h_{L+1}`,
one vector :math:`x \in \mathbb{R}^{d}` per token.

Truncated forward. A forward hook on block :math:`L` stores its output and raises a private
exception, so blocks :math:`L+1, \dots` and the LM head (for Gemma-3 a 640 x 262144 matmul per
token, the most expensive part of the model) never run. The result equals
``model(..., output_hidden_states=True).hidden_states[L + 1]`` for every layer but the last:
in transformers 5.x (checked with 5.24 for Gemma-3 and GPT-2) ``hidden_states[-1]`` has the final
norm applied, whereas ``hook_resid_post`` of the last block is the raw block output, before the
final norm (as in TransformerLens). The tests check both facts.

Batching. Sequences are right-padded with the pad id and an attention mask; with right padding the
positions of the real tokens are 0..n-1 whatever the padding. The BOS position and pad positions
are dropped by default (BOS activations are huge outliers and carry no text; pads are not tokens).

Harvest layout (``out_dir``)::

    manifest.json              model, layer, hook name, context length, dtype, d_model, shards, hashes
    shard_00000.safetensors    activations [shard_tokens, d_model] (dtype), token_ids [n] int32,
    shard_00001.safetensors    doc_index [n] int64, chunk_index [n] int64, position [n] int32
    ...

All shards hold ``shard_tokens`` tokens but the last. Each shard is written to a temporary file
and renamed, then the manifest is rewritten (also atomically), so an interrupted harvest leaves
only complete shards, and running the same call again continues where it stopped. Batches are
formed the same way on resume, so a resumed harvest is identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..io import atomic_write, sha256_tensors
from .models import LoadedModel, _check_layer, get_blocks
from .shards import FORMAT, MANIFEST, VERIFIED, _check_positive, read_manifest

__all__ = [
    "residual_stream", "TokenActivations", "token_activations", "harvest", "read_manifest",
    "ShardDataset", "iter_batches", "load_activations", "check_compatible",
]

# settings that must match for a directory to be resumed (n_tokens may change: it extends)
_IDENTITY = ("model", "layer", "hook_name", "d_model", "context_length", "dtype", "text_source",
             "prepend_bos", "min_length", "batch_size", "shard_tokens", "chunk_offsets")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class _StopForward(Exception):
    """Raised by the hook on block L: the forward pass stops there."""


# --------------------------------------------------------------------------- truncated forward
def _unwrap(model):
    return model.model if isinstance(model, LoadedModel) else model


def residual_stream(model, input_ids: torch.Tensor, layer: int,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Residual stream after block ``layer``, running blocks 0..layer only.

    model: a :class:`~abstopk_mini.lm.models.LoadedModel` or a transformers causal LM.
    shape: input_ids [B, T] (long), attention_mask [B, T] (1 = token, 0 = pad) -> x [B, T, d_model]
    The result is a normal tensor (usable in autograd), on the model's device and dtype.
    """
    lm = _unwrap(model)
    blocks = get_blocks(lm)
    _check_layer(layer, len(blocks))
    device = next(lm.parameters()).device
    captured = {}

    def hook(module, args, output):
        captured["x"] = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    handle = blocks[layer].register_forward_hook(hook)
    try:
        with torch.inference_mode():
            lm(input_ids=input_ids.to(device),
               attention_mask=None if attention_mask is None else attention_mask.to(device),
               use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "x" not in captured:
        raise RuntimeError(f"block {layer} of {type(lm).__name__} did not run during the forward pass")
    return captured["x"].clone()  # clone outside inference mode: a normal tensor


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad. shape: B lists of length <= T -> ids [B, T] long, mask [B, T] long."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def _batch_tokens(loaded: LoadedModel, seqs, layer: int, keep_special: bool = False):
    """Activations of one batch of token-id sequences, flattened over kept positions.

    shape: B sequences -> acts [n, d], ids [n], seq [n] (index in the batch), pos [n]
    """
    info = loaded.info
    ids, mask = _pad(seqs, info.pad_token_id if info.pad_token_id is not None else 0)
    x = residual_stream(loaded, ids, layer, mask)
    keep = mask.bool()
    if info.bos_token_id is not None:
        keep[:, 0] &= ids[:, 0] != info.bos_token_id
    if keep_special:
        keep = torch.ones_like(keep)
    seq, pos = keep.nonzero(as_tuple=True)
    return x[seq.to(x.device), pos.to(x.device)].float().cpu(), ids[seq, pos], seq, pos


def _encode(tokenizer, texts, context_length: int, prepend_bos: bool) -> list[list[int]]:
    """Texts -> token-id lists (BOS first when asked), truncated to ``context_length``;
    token-id lists pass through (truncated)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings (or of token-id lists), not one str; wrap it: [text]")
    texts = list(texts)
    bos = tokenizer.bos_token_id if prepend_bos else None
    out = []
    strings = [t for t in texts if isinstance(t, str)]
    encoded = iter(tokenizer(strings, add_special_tokens=False)["input_ids"]) if strings else iter(())
    for t in texts:
        if isinstance(t, str):
            ids = ([bos] if bos is not None else []) + list(next(encoded))
        elif isinstance(t, (list, tuple, torch.Tensor)):
            ids = [int(i) for i in t]
        else:
            raise TypeError(f"texts must hold str or token-id lists; got {type(t).__name__}")
        if not ids:
            raise ValueError("texts holds an empty text; it has no tokens to read activations at")
        out.append(ids[:context_length])
    return out


@dataclass
class TokenActivations:
    """Per-token activations and where each token came from.

    shape: acts [N, d_model] float32, token_ids [N], doc [N] (index into the texts), pos [N]
    (position in the model input, BOS = 0); tokens: N token strings.
    """

    acts: torch.Tensor
    token_ids: torch.Tensor
    doc: torch.Tensor
    pos: torch.Tensor
    tokens: list[str]
    layer: int
    hook_name: str

    def __len__(self) -> int:
        return len(self.token_ids)


def token_activations(model: LoadedModel, texts, layer: int, *, context_length: int = 128,
                      batch_size: int = 16, prepend_bos: bool = True,
                      keep_special: bool = False) -> TokenActivations:
    """Activations of every token of ``texts`` (each truncated to ``context_length`` tokens,
    BOS included) at ``blocks.layer.hook_resid_post``; BOS and pad positions are left out
    unless ``keep_special``. ``texts`` may also hold token-id lists (e.g. from
    :func:`abstopk_mini.lm.corpus.chunk`)."""
    loaded = _require_loaded(model)
    _check_layer(layer, loaded.info.n_layers)
    _check_positive(batch_size=batch_size, context_length=context_length)
    seqs = _encode(loaded.tokenizer, texts, context_length, prepend_bos)
    parts = []
    for start in range(0, len(seqs), batch_size):
        acts, ids, seq, pos = _batch_tokens(loaded, seqs[start:start + batch_size], layer, keep_special)
        parts.append((acts, ids, seq + start, pos))
    acts, ids, doc, pos = (torch.cat(p) for p in zip(*parts))
    tokens = loaded.tokenizer.convert_ids_to_tokens(ids.tolist())
    return TokenActivations(acts, ids, doc, pos, tokens, layer, loaded.info.hook_name(layer))


def _require_loaded(model) -> LoadedModel:
    if not isinstance(model, LoadedModel):
        raise TypeError("model must be the LoadedModel returned by am.models.load_model() (it carries "
                        f"the tokenizer and ModelInfo); got {type(model).__name__}")
    return model


# --------------------------------------------------------------------------- harvest
_sha256 = sha256_tensors


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def _shard_sizes(n_tokens: int, shard_tokens: int) -> list[int]:
    return [min(shard_tokens, n_tokens - s) for s in range(0, n_tokens, shard_tokens)]


def _shard_files(out: Path) -> list[Path]:
    """Shard files and the temporary files of interrupted shard writes (both naming schemes)."""
    return list(out.glob("shard_*.safetensors")) + list(out.glob("shard_*.safetensors.tmp")) + \
        list(out.glob(".shard_*.safetensors.*.tmp"))


def _clear(out: Path) -> None:
    for p in _shard_files(out):
        p.unlink()
    for name in (MANIFEST, MANIFEST + ".tmp", VERIFIED):
        (out / name).unlink(missing_ok=True)


def _start_or_resume(out: Path, settings: dict, n_tokens: int, overwrite: bool) -> list[dict]:
    """Completed shards to keep (verified), after refusing a directory of another harvest."""
    from safetensors.torch import load_file

    if overwrite:
        _clear(out)
        return []
    if not (out / MANIFEST).exists():
        if any(out.glob("shard_*.safetensors")):
            raise ValueError(f"out_dir={str(out)!r} holds shard files but no {MANIFEST}; pass "
                             "overwrite=True to replace them or choose another out_dir")
        return []
    old = read_manifest(out)
    differ = [k for k in _IDENTITY if old.get(k) != settings.get(k)]
    if differ:
        what = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} asked" for k in differ)
        raise ValueError(f"out_dir={str(out)!r} already holds a different harvest ({what}); pass "
                         "overwrite=True to replace it, or choose another out_dir")
    sizes = _shard_sizes(n_tokens, settings["shard_tokens"])
    kept = []
    for i, rec in enumerate(old["shards"]):
        path = out / rec["file"]
        if i >= len(sizes) or rec["n_tokens"] != sizes[i] or not path.is_file():
            break
        try:
            t = load_file(str(path))
            ok = _sha256(t["activations"], t["token_ids"]) == rec["sha256"]
        except Exception:  # unreadable shard: recompute it
            ok = False
        if not ok:
            break
        kept.append(rec)
    keep = {rec["file"] for rec in kept}  # drop the rest, and files an interruption left unlisted
    for p in _shard_files(out):
        if p.name not in keep:
            p.unlink()
    return kept


def harvest(model: LoadedModel, texts: Iterable, layer: int, n_tokens: int, out_dir, *,
            context_length: int = 128, batch_size: int = 16, shard_tokens: int = 65536,
            dtype: torch.dtype = torch.float32, text_source: str = "custom", min_length: int = 16,
            overwrite: bool = False, progress: bool = True, chunk_offsets: Sequence[int] = (0,)) -> dict:
    """Write ``n_tokens`` residual-stream activations of ``texts`` at ``layer`` to ``out_dir``.

    texts: documents (str or :class:`~abstopk_mini.lm.corpus.Document`), cut into chunks of
    ``context_length`` tokens with BOS in front by :func:`abstopk_mini.lm.corpus.iter_doc_chunks`;
    the BOS position is not harvested, so a full chunk gives ``context_length - 1`` tokens.
    dtype: storage dtype (float32 or bfloat16, which halves the disk); readers return float32.
    text_source: a label of where the texts come from (checked on resume).
    chunk_offsets: one pass over the texts per offset, chunks cut from that token on (see
    :func:`abstopk_mini.lm.corpus.iter_doc_chunks`); ``(0, context_length // 2)`` reads a small
    corpus twice with every token in a new position and context.
    Returns the manifest. Re-running the same call resumes (or returns at once when complete);
    a directory of another harvest is refused unless ``overwrite=True``.
    shape: shards of activations [shard_tokens, d_model]
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    from .. import __version__
    from .corpus import iter_doc_chunks

    loaded = _require_loaded(model)
    info = loaded.info
    _check_layer(layer, info.n_layers)
    _check_positive(n_tokens=n_tokens, batch_size=batch_size, shard_tokens=shard_tokens,
                    context_length=context_length)
    dtype_name = next((k for k, v in _DTYPES.items() if v == dtype), None)
    if dtype_name is None:
        raise ValueError(f"dtype must be one of {list(_DTYPES.values())}; got {dtype!r}")
    if context_length < 2:  # checked before anything is written
        raise ValueError(f"context_length must be >= 2 (BOS plus at least one token; the BOS position is not "
                         f"harvested); got {context_length}")
    chunk_offsets = [int(o) for o in chunk_offsets]
    if not chunk_offsets or min(chunk_offsets) < 0:
        raise ValueError(f"chunk_offsets must be one or more ints >= 0 (token positions to start cutting "
                         f"chunks at); got {chunk_offsets!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"model": info.name, "layer": layer, "hook_name": info.hook_name(layer),
                "d_model": info.d_model, "context_length": context_length, "dtype": dtype_name,
                "text_source": text_source, "prepend_bos": True, "min_length": min_length,
                "batch_size": batch_size, "shard_tokens": shard_tokens}
    chunk_offsets = [int(o) for o in chunk_offsets]
    if chunk_offsets != [0]:  # recorded only when used, so older harvests still resume
        settings["chunk_offsets"] = chunk_offsets
        texts = list(texts)
    shards = _start_or_resume(out, settings, n_tokens, overwrite)
    sizes = _shard_sizes(n_tokens, shard_tokens)
    manifest = {"format": FORMAT, **settings, "n_tokens": n_tokens, "family": info.family,
                "package_version": __version__, "torch_version": torch.__version__,
                "complete": False, "shards": shards}

    def save_manifest(complete: bool) -> None:
        manifest.update(complete=complete, tokens_written=sum(s["n_tokens"] for s in shards),
                        n_shards=len(shards),
                        content_sha256=hashlib.sha256("".join(s["sha256"] for s in shards).encode()).hexdigest())
        _write_json(out / MANIFEST, manifest)

    resume_at = sum(s["n_tokens"] for s in shards)
    if len(shards) == len(sizes):
        save_manifest(True)
        return manifest
    save_manifest(False)

    bos = info.bos_token_id
    skipped: list[int] = []           # token ids of the kept shards, re-derived to check the texts
    pending: list[tuple] = []         # (acts, ids, doc, chunk, pos) pieces of the shard being filled
    n_pending = 0
    stream_pos = 0                    # tokens of the stream seen so far
    bar = tqdm(total=n_tokens, initial=resume_at, unit="tok", unit_scale=True, disable=not progress,
               desc=f"harvest {info.name} L{layer}", dynamic_ncols=True)

    def write_shard(n: int) -> None:
        nonlocal pending, n_pending
        cat = [torch.cat(col) for col in zip(*pending)]
        head, rest = [c[:n] for c in cat], [c[n:] for c in cat]
        pending, n_pending = ([tuple(rest)] if len(rest[0]) else []), len(rest[0])
        acts = head[0].to(dtype).contiguous()
        tensors = {"activations": acts, "token_ids": head[1].to(torch.int32),
                   "doc_index": head[2].long(), "chunk_index": head[3].long(), "position": head[4].to(torch.int32)}
        name = _shard_name(len(shards))
        atomic_write(out / name, lambda tmp: save_file(tensors, tmp))
        shards.append({"file": name, "n_tokens": n, "sha256": _sha256(acts, tensors["token_ids"]),
                       "tokens_sha256": _sha256(tensors["token_ids"])})
        save_manifest(False)

    def check_skipped() -> None:
        """The texts must give the same tokens as the harvest being resumed."""
        ids = torch.tensor(skipped[:resume_at], dtype=torch.int32)
        start = 0
        for rec in shards:
            part = ids[start:start + rec["n_tokens"]]
            if len(part) != rec["n_tokens"] or _sha256(part) != rec["tokens_sha256"]:
                raise ValueError(f"texts differ from those of the harvest being resumed in {str(out)!r} "
                                 f"(tokens of {rec['file']} do not match); pass the same texts, or "
                                 "overwrite=True to start again")
            start += rec["n_tokens"]

    chunks = (c for o in chunk_offsets
              for c in iter_doc_chunks(loaded.tokenizer, texts, context_length, min_length=min_length, offset=o))
    chunk_base = 0
    checked = resume_at == 0
    try:
        while len(shards) < len(sizes):
            batch = list(islice(chunks, batch_size))
            if not batch:
                break
            seqs = [c for _, c in batch]
            kept_ids = [s[1:] if bos is not None and s[0] == bos else s for s in seqs]
            n_batch = sum(len(k) for k in kept_ids)
            if stream_pos + n_batch <= resume_at:  # inside shards already on disk: no forward
                for k in kept_ids:
                    skipped.extend(k)
                stream_pos += n_batch
                chunk_base += len(batch)
                continue
            acts, ids, seq, pos = _batch_tokens(loaded, seqs, layer)
            skip = max(0, resume_at - stream_pos)
            if not checked:
                skipped.extend(ids[:skip].tolist())
                check_skipped()
                checked = True
            docs = torch.tensor([d for d, _ in batch])[seq]
            piece = (acts[skip:], ids[skip:], docs[skip:], (seq + chunk_base)[skip:], pos[skip:])
            pending.append(piece)
            n_pending += n_batch - skip
            bar.update(min(n_batch - skip, n_tokens - bar.n))
            stream_pos += n_batch
            chunk_base += len(batch)
            while len(shards) < len(sizes) and n_pending >= sizes[len(shards)]:
                write_shard(sizes[len(shards)])
        if not checked:
            check_skipped()
        if len(shards) < len(sizes) and n_pending:  # texts ran out
            write_shard(n_pending)
    finally:
        bar.close()
    written = sum(s["n_tokens"] for s in shards)
    if written < n_tokens:
        warnings.warn(f"harvest: the texts gave only {written} of n_tokens={n_tokens} tokens; pass more texts",
                      stacklevel=2)
    save_manifest(True)
    return manifest


# The reader lives in its own module; these names stay importable from here.
from .shards import ShardDataset, check_compatible, iter_batches, load_activations  # noqa: E402,F401
