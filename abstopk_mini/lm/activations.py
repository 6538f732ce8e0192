r"""Residual-stream activations of texts: in memory (:func:`token_activations`), or harvested to disk
in shards (:func:`harvest`); :mod:`abstopk_mini.lm.shards` streams a harvest back shuffled.

Both read ``blocks.L.hook_resid_post`` with the truncated forward of :mod:`abstopk_mini.lm.hooks`
(blocks after L and the LM head never run). The BOS position and pad positions are dropped by
default (BOS activations are huge outliers and carry no text; pads are not tokens).

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

import contextlib
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
from .checks import check_layer, check_positive
from .hooks import batch_tokens, encode, require_loaded
from .models import LoadedModel
from .shards import FORMAT, MANIFEST, VERIFIED, read_manifest

__all__ = [
    "TokenActivations", "token_activations", "harvest", "read_manifest", "max_text_tokens", "check_harvest_size",
    "ShardDataset", "iter_batches", "load_activations", "check_compatible",
]

# settings that must match for a directory to be resumed (n_tokens may change: it extends)
_IDENTITY = ("model", "layer", "hook_name", "d_model", "context_length", "dtype", "text_source",
             "prepend_bos", "min_length", "batch_size", "shard_tokens", "chunk_offsets")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    loaded = require_loaded(model)
    check_layer(layer, loaded.info.n_layers)
    check_positive(batch_size=batch_size, context_length=context_length)
    seqs = encode(loaded.tokenizer, texts, context_length, prepend_bos)
    parts = []
    for start in range(0, len(seqs), batch_size):
        acts, ids, seq, pos = batch_tokens(loaded, seqs[start:start + batch_size], layer, keep_special)
        parts.append((acts, ids, seq + start, pos))
    acts, ids, doc, pos = (torch.cat(p) for p in zip(*parts))
    tokens = loaded.tokenizer.convert_ids_to_tokens(ids.tolist())
    return TokenActivations(acts, ids, doc, pos, tokens, layer, loaded.info.hook_name(layer))


# --------------------------------------------------------------------------- harvest


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


class _ShardSizes:
    """The sizes of the shards of an ``n_tokens`` harvest (all ``shard_tokens`` but the last),
    computed on demand: a list of them would hold n_tokens / shard_tokens entries."""

    def __init__(self, n_tokens: int, shard_tokens: int):
        self.n_tokens, self.shard_tokens = n_tokens, shard_tokens

    def __len__(self) -> int:
        return -(-self.n_tokens // self.shard_tokens)

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return min(self.shard_tokens, self.n_tokens - i * self.shard_tokens)


def _shard_sizes(n_tokens: int, shard_tokens: int) -> _ShardSizes:
    return _ShardSizes(n_tokens, shard_tokens)


#: per text byte at most this many tokens: a token of a byte-level BPE (GPT-2) or of SentencePiece
#: with byte fallback (Gemma) covers at least one byte, plus one dummy-prefix piece per document;
#: the factor leaves room for tokenizers whose normaliser lengthens the text (NFKC)
TOKENS_PER_BYTE = 4
#: bytes a harvested token takes on disk besides its activation: token_ids int32, doc_index and
#: chunk_index int64, position int32
_INDEX_BYTES = 4 + 8 + 8 + 4


def max_text_tokens(texts, context_length: int, chunk_offsets: Sequence[int] = (0,), min_length: int = 16) -> int | None:
    """An upper bound on the tokens a harvest of ``texts`` can give, from the texts' UTF-8 sizes
    (no tokenizer): per document and chunk offset o, at most ``TOKENS_PER_BYTE * bytes + 1 - o``
    tokens, none when that is below a chunk's ``min_length`` (the BOS is not harvested).
    texts: a sequence of str or :class:`~abstopk_mini.lm.corpus.Document` (None for anything else)."""
    body = context_length - 1
    least = min(min_length, body)
    total = 0
    for doc in texts:
        text = getattr(doc, "text", doc)
        if not isinstance(text, str):
            return None  # harvest refuses it with its own error
        bound = TOKENS_PER_BYTE * len(text.encode("utf-8", "surrogatepass")) + 1
        total += sum(bound - o for o in chunk_offsets if bound - o >= least)
    return total


def check_harvest_size(n_tokens: int, out_dir, *, d_model: int, dtype_bytes: int = 4, texts=None,
                       context_length: int = 128, chunk_offsets: Sequence[int] = (0,), min_length: int = 16) -> None:
    """Refuse, before anything is loaded or written, a harvest the texts cannot give or the disk cannot hold.

    texts (a list or tuple; other iterables are not read): ValueError when
    :func:`max_text_tokens` is 0 (no document reaches past the chunk offsets) or below
    ``n_tokens``. Disk: ``n_tokens`` x (``d_model`` x ``dtype_bytes`` + 24 index bytes) must fit in
    the free space of ``out_dir``'s file system plus the shard files already there (reused or
    replaced). Messages name the API argument and the CLI flag.
    """
    from ..limits import check_disk, format_bytes

    offsets = list(chunk_offsets)
    bound = max_text_tokens(texts, context_length, offsets, min_length) if isinstance(texts, (list, tuple)) else None
    if bound is not None:
        if bound == 0:
            raise ValueError(f"the texts give no tokens from chunk_offsets={offsets} (CLI: --offsets): no document "
                             f"is long enough to reach past offset {min(offsets)} ({len(texts)} documents); pass "
                             "smaller offsets, e.g. --offsets 0,64, or longer texts. Nothing was written")
        elif n_tokens > bound:
            raise ValueError(f"n_tokens={n_tokens:,} (CLI: --tokens; eval: --acts-tokens) but these texts can give at "
                             f"most {bound:,} tokens ({len(texts)} documents with chunk_offsets={offsets}); pass fewer "
                             "tokens, more chunk offsets (--offsets) or more text (--sources). Nothing was written")
    out = Path(out_dir)
    per_token = d_model * dtype_bytes + _INDEX_BYTES
    already = sum(p.stat().st_size for p in _shard_files(out)) if out.is_dir() else 0
    check_disk(n_tokens * per_token, out, f"a harvest of n_tokens={n_tokens:,} (CLI: --tokens; eval: --acts-tokens) "
               f"at d_model={d_model} ({format_bytes(per_token)} a token)",
               "pass fewer tokens, or --runs-dir on a disk with room. Nothing was written", already=already)


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
            ok = sha256_tensors(t["activations"], t["token_ids"]) == rec["sha256"]
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

    loaded = require_loaded(model)
    info = loaded.info
    check_layer(layer, info.n_layers)
    check_positive(n_tokens=n_tokens, batch_size=batch_size, shard_tokens=shard_tokens,
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
    if not isinstance(texts, (list, tuple)) and chunk_offsets != [0]:
        texts = list(texts)  # read once per offset
    check_harvest_size(n_tokens, out_dir, d_model=info.d_model, dtype_bytes=torch.empty(0, dtype=dtype).element_size(),
                       texts=texts, context_length=context_length, chunk_offsets=chunk_offsets, min_length=min_length)
    out = Path(out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    settings = {"model": info.name, "layer": layer, "hook_name": info.hook_name(layer),
                "d_model": info.d_model, "context_length": context_length, "dtype": dtype_name,
                "text_source": text_source, "prepend_bos": True, "min_length": min_length,
                "batch_size": batch_size, "shard_tokens": shard_tokens}
    if chunk_offsets != [0]:  # recorded only when used, so older harvests still resume
        settings["chunk_offsets"] = chunk_offsets
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
        shards.append({"file": name, "n_tokens": n, "sha256": sha256_tensors(acts, tensors["token_ids"]),
                       "tokens_sha256": sha256_tensors(tensors["token_ids"])})
        save_manifest(False)

    def check_skipped() -> None:
        """The texts must give the same tokens as the harvest being resumed."""
        ids = torch.tensor(skipped[:resume_at], dtype=torch.int32)
        start = 0
        for rec in shards:
            part = ids[start:start + rec["n_tokens"]]
            if len(part) != rec["n_tokens"] or sha256_tensors(part) != rec["tokens_sha256"]:
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
            acts, ids, seq, pos = batch_tokens(loaded, seqs, layer)
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
    if written == 0:  # never cache an empty harvest as complete: a later train could not say why it is empty
        _clear(out)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise ValueError(f"the texts gave no tokens to harvest with chunk_offsets={chunk_offsets} (CLI: --offsets) "
                         f"and min_length={min_length}: every document is shorter than that past its offset; pass "
                         "smaller offsets (e.g. --offsets 0,64) or longer texts. Nothing was kept")
    if written < n_tokens:
        warnings.warn(f"harvest: the texts gave only {written} of n_tokens={n_tokens} tokens; pass more texts",
                      stacklevel=2)
    save_manifest(True)
    return manifest


# The reader lives in its own module; these names stay importable from here.
from .shards import ShardDataset, check_compatible, iter_batches, load_activations  # noqa: E402,F401
