r"""A tiny random Gemma-3 for the checks that need a language model: the book's architecture
(``Gemma3ForCausalLM``: RMSNorm, grouped-query attention, sliding and global layers, scaled
embeddings), at a size that builds and runs in well under a second on a CPU.

The checks of chapters 5–8 run the reader's hook, splice or steering function on this model and
compare it with the package's and with an independent computation (``output_hidden_states``, a
manual forward), so they take seconds and need no download; the chapter then uses the reader's
function on Gemma-3-270M itself.

    loaded = tiny_gemma3()            # LoadedModel(model, tokenizer=None, info)
    ids = tiny_ids(loaded, 3, 12)     # [3, 12] token ids, BOS first
"""

from __future__ import annotations

import functools

import torch

from ..lm.models import LoadedModel, ModelInfo

__all__ = ["tiny_gemma3", "tiny_ids", "BOS", "PAD", "VOCAB"]

#: the tiny model's vocabulary size and special ids (pad 0, eos 1, bos 2, as in Gemma)
VOCAB, PAD, BOS = 96, 0, 2


@functools.lru_cache(maxsize=4)
def _build(seed: int, n_layers: int, d_model: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=d_model, intermediate_size=2 * d_model,
                           num_hidden_layers=n_layers, num_attention_heads=2, num_key_value_heads=1,
                           head_dim=d_model // 2, max_position_embeddings=128, sliding_window=8,
                           bos_token_id=BOS, pad_token_id=PAD, eos_token_id=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(cfg).eval()
        with torch.no_grad():  # random norms' weights: every coordinate of every layer matters
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.normal_(0.0, 0.5)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def tiny_gemma3(seed: int = 0, n_layers: int = 4, d_model: int = 32) -> LoadedModel:
    """A seeded random ``Gemma3ForCausalLM`` (``n_layers`` blocks, width ``d_model``, vocabulary
    :data:`VOCAB`) as a :class:`~abstopk_mini.lm.models.LoadedModel` without a tokenizer (pass token
    ids). Built once per process and argument set; do not modify its weights."""
    if n_layers < 2 or d_model % 2 or d_model < 8:
        raise ValueError(f"tiny_gemma3: n_layers >= 2 and an even d_model >= 8; got {n_layers}, {d_model}")
    model = _build(int(seed), int(n_layers), int(d_model))
    info = ModelInfo(name="tiny-gemma3", family="gemma3", n_layers=n_layers, d_model=d_model, bos_token_id=BOS,
                     pad_token_id=PAD, vocab_size=VOCAB, source="random (abstopk_mini.exercises.tiny)")
    return LoadedModel(model, None, info)


def tiny_ids(loaded: LoadedModel, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """``[batch, length]`` seeded random token ids of the tiny model, BOS at position 0, no pad or BOS
    elsewhere.  shape: -> [batch, length] (long)"""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, loaded.info.vocab_size, (batch, length), generator=g)
    ids[:, 0] = BOS
    return ids
