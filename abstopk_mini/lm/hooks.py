r"""The truncated forward: the residual stream after one or several blocks, without running the rest
of the model; and the tokenise / pad / unwrap helpers every reader of a model shares.

The SAE input is the residual stream after block :math:`L`,
``blocks.L.hook_resid_post`` in TransformerLens/SAELens naming: with :math:`h_0` the (scaled)
token embeddings and :math:`h_{l+1} = \mathrm{block}_l(h_l)`, we read :math:`x = h_{L+1}`,
one vector :math:`x \in \mathbb{R}^{d}` per token.

Truncated forward. A forward hook on each requested block stores its output, and the hook on the
deepest one raises a private exception, so the blocks after it and the LM head (for Gemma-3 a
640 x 262144 matmul per token, the most expensive part of the model) never run. The result equals
``model(..., output_hidden_states=True).hidden_states[L + 1]`` for every layer but the last:
in transformers 5.x (checked with 5.24 for Gemma-3 and GPT-2) ``hidden_states[-1]`` has the final
norm applied, whereas ``hook_resid_post`` of the last block is the raw block output, before the
final norm (as in TransformerLens). The tests check both facts.

Batching. Sequences are right-padded with the pad id and an attention mask (:func:`pad`); with
right padding the positions of the real tokens are 0..n-1 whatever the padding.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .checks import check_layer, check_layers
from .models import LoadedModel, get_blocks

__all__ = [
    "residual_stream", "residual_streams", "batch_tokens", "encode", "pad", "unwrap", "require_loaded",
    "layer_of",
]


class _StopForward(Exception):
    """Raised by the hook on the deepest requested block: the forward pass stops there."""


def unwrap(model):
    """The transformers model inside a :class:`~abstopk_mini.lm.models.LoadedModel` (other models pass through)."""
    return model.model if isinstance(model, LoadedModel) else model


def require_loaded(model) -> LoadedModel:
    """``model`` itself, or a TypeError unless it is a LoadedModel (the tokenizer and ModelInfo are needed)."""
    if not isinstance(model, LoadedModel):
        raise TypeError("model must be the LoadedModel returned by am.models.load_model() (it carries "
                        f"the tokenizer and ModelInfo); got {type(model).__name__}")
    return model


def residual_streams(model, input_ids: torch.Tensor, layers: Sequence[int],
                     attention_mask: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    """Residual stream after each block in ``layers``, from one forward that stops after the
    deepest of them.

    model: a :class:`~abstopk_mini.lm.models.LoadedModel` or a transformers causal LM.
    shape: input_ids [B, T] (long), attention_mask [B, T] (1 = token, 0 = pad) -> {layer: x [B, T, d_model]}
    The results are normal tensors (usable in autograd), on the model's device and dtype.
    """
    lm = unwrap(model)
    blocks = get_blocks(lm)
    layers = check_layers(layers, len(blocks))
    last = layers[-1]
    device = next(lm.parameters()).device
    captured: dict[int, torch.Tensor] = {}

    def make_hook(layer):
        def hook(module, args, output):
            x = output[0] if isinstance(output, tuple) else output
            if layer == last:  # nothing runs after this block: no copy needed
                captured[layer] = x
                raise _StopForward
            captured[layer] = x.clone()  # later blocks may reuse the buffer
        return hook

    handles = [blocks[layer].register_forward_hook(make_hook(layer)) for layer in layers]
    try:
        with torch.inference_mode():
            lm(input_ids=input_ids.to(device),
               attention_mask=None if attention_mask is None else attention_mask.to(device), use_cache=False)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [layer for layer in layers if layer not in captured]
    if missing:
        raise RuntimeError(f"blocks {missing} of {type(lm).__name__} did not run during the forward pass")
    return {layer: captured[layer].clone() for layer in layers}  # clone outside inference mode: normal tensors


def residual_stream(model, input_ids: torch.Tensor, layer: int,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Residual stream after block ``layer``, running blocks 0..layer only
    (:func:`residual_streams` for one layer).

    shape: input_ids [B, T] (long), attention_mask [B, T] (1 = token, 0 = pad) -> x [B, T, d_model]
    """
    check_layer(layer, len(get_blocks(unwrap(model))))
    return residual_streams(model, input_ids, [layer], attention_mask)[layer]


def pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad. shape: B lists of length <= T -> ids [B, T] long, mask [B, T] long."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def batch_tokens(loaded: LoadedModel, seqs, layer: int, keep_special: bool = False):
    """Activations of one batch of token-id sequences, flattened over kept positions: BOS and pad
    positions are dropped unless ``keep_special``.

    shape: B sequences -> acts [n, d] float32 (CPU), ids [n], seq [n] (index in the batch), pos [n]
    """
    info = loaded.info
    ids, mask = pad(seqs, info.pad_token_id if info.pad_token_id is not None else 0)
    x = residual_stream(loaded, ids, layer, mask)
    keep = mask.bool()
    if info.bos_token_id is not None:
        keep[:, 0] &= ids[:, 0] != info.bos_token_id
    if keep_special:
        keep = torch.ones_like(keep)
    seq, pos = keep.nonzero(as_tuple=True)
    return x[seq.to(x.device), pos.to(x.device)].float().cpu(), ids[seq, pos], seq, pos


def encode(tokenizer, texts, context_length: int, prepend_bos: bool) -> list[list[int]]:
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


def layer_of(sae, layer: int | None = None, *, model=None) -> int:
    """The block whose output ``sae`` reads: ``layer``, or the SAE's ``cfg.hook_layer`` when None.

    sae: an SAE, or any callable (then ``layer`` must be given). Raises ValueError when neither
    gives a layer, or when the SAE, ``layer`` and ``model`` (a LoadedModel, when given) disagree on
    model, layer, hook or width (:func:`abstopk_mini.lm.compat.check_inputs`, the check every
    command runs).
    """
    from .compat import check_inputs

    cfg = getattr(sae, "cfg", None)
    if cfg is not None:
        layer = check_inputs(cfg, None, model, layer, reads_model=model is not None).layer
    if layer is None:
        raise ValueError("layer=None and the SAE does not record its layer (cfg.hook_layer is None); "
                         "pass layer=L, the block whose output the SAE was trained on")
    return layer
