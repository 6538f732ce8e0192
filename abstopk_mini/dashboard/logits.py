r"""Logit effects of a latent's direction: the logit lens applied to :math:`\pm d_i`.

A latent adds :math:`z_i d_i` to the residual stream, with :math:`d_i = W_{dec}[i] / s` in the
model's space (``s`` is the SAE's input scale). Its *logit effect* is what the model's output
layer makes of that direction alone, the final norm included (as the logit lens reads a
residual stream):

.. math::
    \ell(v) = \mathrm{softcap}\big(W_U\,N(v) + b_U\big) - \mathrm{softcap}\big(W_U\,N(0) + b_U\big),

with :math:`N` the model's final norm (GPT-2: LayerNorm ``transformer.ln_f``; Gemma-3:
RMSNorm ``model.norm``), :math:`W_U` the unembedding (``get_output_embeddings()``, tied to the
token embeddings in both), and softcap the final logit soft-capping where the model has one
(Gemma-2; ``None`` for Gemma-3). Subtracting :math:`N(0)` (= the LayerNorm bias, 0 for an RMSNorm)
removes what any residual stream gets, so :math:`\ell` is odd: :math:`\ell(-v) = -\ell(v)` up to
rounding, and the tokens that :math:`-d_i` boosts are the tokens that :math:`+d_i` suppresses.
Both norms divide by the vector's scale, so :math:`\ell(d_i)` does not depend on :math:`s`
(up to the norm's epsilon) — nor on the token's :math:`\sigma(x)` by which an SAE that
standardises each token (``cfg.input_unit_norm``) lengthens :math:`d_i` (see
:func:`abstopk_mini.lm.steering.decoder_direction`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["FINAL_NORM_PATHS", "get_final_norm", "logit_effects", "LogitEffects", "top_tokens", "top_logit_tokens"]

#: where the final norm lives, tried in order (attribute paths)
FINAL_NORM_PATHS = (
    "model.norm",                       # Gemma-3 / Gemma-2 / Llama *ForCausalLM
    "model.language_model.norm",        # multimodal Gemma-3
    "transformer.ln_f",                 # GPT-2
    "gpt_neox.final_layer_norm",        # Pythia
)


def get_final_norm(model) -> nn.Module:
    """The final norm module of a transformers causal LM (or of a LoadedModel)."""
    from ..lm.models import LoadedModel

    lm = model.model if isinstance(model, LoadedModel) else model
    for path in FINAL_NORM_PATHS:
        obj = lm
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.Module):
            return obj
    raise ValueError(f"get_final_norm: unknown layout for {type(lm).__name__}; looked at {', '.join(FINAL_NORM_PATHS)}. "
                     "Add its final norm path to abstopk_mini.dashboard.logits.FINAL_NORM_PATHS.")


def _effect_chunks(model, directions: torch.Tensor, chunk: int):
    r"""Yield :math:`\ell(v)` for ``chunk`` rows of ``directions`` at a time. shape: -> [≤ chunk, vocab] float32"""
    from ..lm.models import LoadedModel

    lm = model.model if isinstance(model, LoadedModel) else model
    norm, head = get_final_norm(lm), lm.get_output_embeddings()
    cap = getattr(lm.config, "final_logit_softcapping", None)
    device, dtype = head.weight.device, head.weight.dtype

    def out(v):
        y = head(norm(v.to(device, dtype))).float()
        return cap * torch.tanh(y / cap) if cap else y

    base = out(torch.zeros(1, directions.shape[-1]))
    for part in directions.split(chunk):
        yield (out(part) - base).cpu()


@torch.no_grad()
def logit_effects(model, directions: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    r""":math:`\ell(v)` of each row v of ``directions`` (see the module docstring).

    model: a LoadedModel or a transformers causal LM. Computed in float32 on the model's device,
    ``chunk`` directions at a time (a chunk costs chunk × vocab floats; the result L × vocab:
    for many directions use :func:`top_logit_tokens`, which keeps only the top tokens).
    shape: directions [L, d_model] -> logits [L, vocab] float32 (on the CPU)
    """
    return torch.cat(list(_effect_chunks(model, directions, chunk)))


@torch.no_grad()
def top_logit_tokens(model, directions: torch.Tensor, n: int, chunk: int = 64) -> list:
    r""":func:`top_tokens` of :math:`\ell(v)` for each row v, without holding L × vocab floats
    (memory: chunk × vocab). shape: directions [L, d_model] -> L (boost, suppress) pairs of lists"""
    return [top_tokens(e, n) for part in _effect_chunks(model, directions, chunk) for e in part]


class LogitEffects(NamedTuple):
    """Top tokens of one latent's logit effect. Each list holds (token id, logit change) pairs,
    largest change first for ``*_boost`` and most negative first for ``*_suppress``; ``pos_*`` are
    the effect of +d_i and ``neg_*`` that of −d_i, each computed from its own direction (so
    neg_boost mirrors pos_suppress up to rounding; see the module docstring)."""

    pos_boost: list
    pos_suppress: list
    neg_boost: list
    neg_suppress: list


def top_tokens(effect: torch.Tensor, n: int) -> tuple[list, list]:
    """The n most boosted and the n most suppressed tokens of one logit effect.
    shape: effect [vocab] -> (boost, suppress), two lists of min(n, vocab) (id, value) pairs"""
    n = min(n, effect.numel())
    up, down = torch.topk(effect, n), torch.topk(-effect, n)
    boost = [(int(i), float(x)) for i, x in zip(up.indices.tolist(), up.values.tolist())]
    suppress = [(int(i), -float(x)) for i, x in zip(down.indices.tolist(), down.values.tolist())]
    return boost, suppress
