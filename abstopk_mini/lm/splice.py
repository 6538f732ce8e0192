r"""Splice an SAE into the model: how much of the language-model loss does the reconstruction keep?

Splicing replaces the residual stream after block :math:`L` (``blocks.L.hook_resid_post``, the
tensor :func:`abstopk_mini.lm.hooks.residual_stream` returns) by :math:`f(x)` — the SAE
reconstruction :math:`\hat x`, zero, or a mean vector — and lets blocks :math:`L+1, \dots` and
the LM head run on it. With next-token cross entropies

.. math::
    \mathrm{CE} = -\frac1N \sum_{(b,p)\in S} \log p_\theta(t_{b,p+1} \mid t_{b,\le p})

over the scored positions :math:`S` (below), we report

* ``ce_orig`` (model untouched), ``ce_sae`` (:math:`x \to \hat x`), ``ce_zero`` (:math:`x \to 0`),
  ``ce_mean`` (:math:`x \to \bar x`, the mean activation over the edited positions of the
  evaluated text, or a mean passed in);
* ``kl_sae`` :math:`= \frac1N\sum_S \mathrm{KL}(p_{orig} \,\|\, p_{sae})`, in nats per token;
* loss recovered :math:`= (\mathrm{CE}_{ablate} - \mathrm{CE}_{sae}) / (\mathrm{CE}_{ablate} -
  \mathrm{CE}_{orig})` for zero and mean ablation: 1 when splicing costs nothing, 0 when the
  SAE is as bad as deleting the layer's output;
* ``fvu`` of the reconstruction at the edited positions (:func:`abstopk_mini.metrics.fvu`, streamed
  by :class:`abstopk_mini.metrics.RunningFVU`).

Which positions. A position is *edited* when it is a real token (attention mask 1) and, with
``skip_bos=True`` (the default), its input token is not BOS: our SAEs are trained without the
BOS position (its activation is a huge outlier, see :mod:`abstopk_mini.lm.hooks`), so the BOS
residual is left as it is; pass ``skip_bos=False`` to replace it too. A prediction at position
:math:`p` (of token :math:`p+1`) is *scored* when :math:`p` is edited and :math:`p+1` is a real
token. So with the default the prediction made from BOS alone (identical in every variant,
since nothing before it changes) is not counted; :math:`N` = ``n_tokens`` is the number of
scored predictions.

Exactness. The original logits come from the same batches as the spliced ones, so splicing the
identity gives ``ce_sae == ce_orig`` bit for bit (loss recovered exactly 1, KL exactly 0), and a
zero reconstruction gives ``ce_sae == ce_zero`` (loss recovered against zero ablation exactly 0).

    res = am.splice.evaluate(loaded, sae, heldout_docs, max_tokens=4096)   # layer from sae.cfg
    res.loss_recovered_zero, res.ce_sae, res.to_dict()
    with am.splice.splice_residual(loaded, 6, lambda x: sae(x)):            # any edit, any forward
        loaded.model(input_ids=ids)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from ..metrics import RunningFVU
from .checks import check_layer, check_positive
from .hooks import encode, layer_of, pad, require_loaded, residual_stream, unwrap
from .models import LoadedModel, get_blocks

__all__ = ["splice_residual", "edit_mask", "as_reconstruct", "loss_recovered", "SpliceResult", "evaluate", "evaluate_many"]

Reconstruct = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- the hook
def edit_mask(input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, shape: tuple[int, int],
              bos_token_id: int | None, skip_bos: bool = True) -> torch.Tensor:
    """Which positions of a block's output are edited (see the module docstring).

    shape: input_ids [B, T] or None, attention_mask [B, T_total >= T] or None -> mask [B, T] bool.
    The attention mask may be longer than the input (generation with a KV cache passes the mask
    of the whole sequence); its last T columns are the current positions. Without input_ids
    (a forward on ``inputs_embeds``) BOS cannot be recognised and every real position is edited.
    """
    B, T = shape
    mask = torch.ones(B, T, dtype=torch.bool)
    if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[0] == B \
            and attention_mask.shape[1] >= T:
        mask &= attention_mask[:, -T:].bool().cpu()
    if skip_bos and bos_token_id is not None and input_ids is not None and tuple(input_ids.shape) == (B, T):
        mask &= input_ids.cpu() != bos_token_id
    return mask


def _bos_id(model) -> int | None:
    if isinstance(model, LoadedModel):
        return model.info.bos_token_id
    return getattr(getattr(model, "config", None), "bos_token_id", None)


@contextlib.contextmanager
def splice_residual(model, layer: int, fn: Reconstruct, *, skip_bos: bool = True) -> Iterator[None]:
    """Inside the ``with`` block, every forward of ``model`` replaces the residual stream after
    block ``layer`` by ``fn`` of it at the edited positions (all real, non-BOS positions; BOS too
    when ``skip_bos=False``). The hooks are removed on exit, also after an exception.

    model: a :class:`~abstopk_mini.lm.models.LoadedModel` or a transformers causal LM.
    fn: rows -> rows, shape: x [n, d_model] -> x' [n, d_model] (any dtype/device; the result is
    cast back). Works with a KV cache: only the new positions pass through the block then.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable x [n, d_model] -> x' [n, d_model]; got {type(fn).__name__}")
    lm = unwrap(model)
    blocks = get_blocks(lm)
    check_layer(layer, len(blocks))
    bos = _bos_id(model)
    inputs: dict = {}

    def read_inputs(module, args, kwargs):  # forward pre-hook on the whole model
        inputs["ids"] = kwargs.get("input_ids", args[0] if args else None)
        inputs["mask"] = kwargs.get("attention_mask")  # keyword only: its position differs between models

    def replace(module, args, output):  # forward hook on block `layer`
        h = output[0] if isinstance(output, tuple) else output
        edit = edit_mask(inputs.get("ids"), inputs.get("mask"), tuple(h.shape[:2]), bos, skip_bos).to(h.device)
        new = h.clone()
        rows = fn(h[edit])
        if tuple(rows.shape) != (int(edit.sum()), h.shape[-1]):
            raise ValueError(f"fn returned shape {tuple(rows.shape)} for input rows {(int(edit.sum()), h.shape[-1])}; "
                             "it must map x [n, d_model] to a tensor of the same shape")
        new[edit] = rows.to(device=h.device, dtype=h.dtype)
        return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new

    handles = [lm.register_forward_pre_hook(read_inputs, with_kwargs=True),
               blocks[layer].register_forward_hook(replace)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def as_reconstruct(sae_or_fn) -> Reconstruct:
    """An SAE (its ``forward``: encode then decode, input scale included, on the SAE's device)
    or any callable ``x -> x_hat``, as a function of activation rows on any device.

    The SAE is used in its current mode: :func:`~abstopk_mini.train.train_sae` and ``SAE.load``
    return it in eval mode, where the batch top-k activations use their learned threshold, so
    the result does not depend on which rows share a batch.

    shape: x [n, d_model] -> x_hat [n, d_model]
    """
    from ..sae import SAE

    if isinstance(sae_or_fn, SAE):
        sae = sae_or_fn
        device = sae.W_dec.device

        def reconstruct(x: torch.Tensor) -> torch.Tensor:
            return sae(x.to(device)).to(device=x.device, dtype=x.dtype)

        return reconstruct
    if callable(sae_or_fn):
        return sae_or_fn
    raise TypeError(f"sae must be an am.SAE or a callable x -> x_hat; got {type(sae_or_fn).__name__}")


# --------------------------------------------------------------------------- the numbers
def loss_recovered(ce_ablate: float, ce_sae: float, ce_orig: float) -> float:
    """(CE_ablate − CE_sae) / (CE_ablate − CE_orig); NaN when ablation does not change the loss."""
    denominator = ce_ablate - ce_orig
    return (ce_ablate - ce_sae) / denominator if denominator != 0 else math.nan


@dataclass
class SpliceResult:
    """CE (nats per scored token), KL and loss recovered; see the module docstring."""

    ce_orig: float
    ce_sae: float
    ce_zero: float
    ce_mean: float
    kl_sae: float
    loss_recovered_zero: float
    loss_recovered_mean: float
    fvu: float
    n_tokens: int
    layer: int
    skip_bos: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _sequences(loaded: LoadedModel, texts, context_length: int, max_tokens: int | None,
               skip_bos: bool) -> list[list[int]]:
    """Token-id sequences (BOS first) whose scored predictions total ``max_tokens`` (the last
    sequence cut to fit), or all of them."""
    from .corpus import Document, chunk

    if isinstance(texts, str):
        raise TypeError("texts must be a list of texts, Documents or token-id lists, not one str; wrap it: [text]")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty; pass held-out texts (e.g. am.corpus.train_heldout_split(docs)[1])")
    if all(isinstance(t, Document) for t in texts):
        seqs = chunk(loaded.tokenizer, texts, context_length)
    else:
        seqs = encode(loaded.tokenizer, texts, context_length, prepend_bos=True)
    if max_tokens is None:
        return seqs
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int or None; got {max_tokens!r}")
    bos = loaded.info.bos_token_id
    out, left = [], max_tokens
    for s in seqs:
        scored = [p for p in range(len(s) - 1) if not (skip_bos and s[p] == bos)]
        if len(scored) >= left:
            out.append(s[:scored[left - 1] + 2])
            return out
        out.append(s)
        left -= len(scored)
    return out


def _measured(reconstruct: Reconstruct, fvu: RunningFVU) -> Reconstruct:
    """``reconstruct``, adding each batch and its reconstruction to ``fvu`` (the FVU, streamed)."""
    def fn(x):
        x_hat = reconstruct(x)
        fvu.update(x, x_hat)
        return x_hat
    return fn


def _mean_activation(loaded, seqs, layer, batch_size, skip_bos, pad_id) -> torch.Tensor:
    """Mean residual after block ``layer`` over the edited positions (truncated forwards)."""
    total, n = None, 0
    for start in range(0, len(seqs), batch_size):
        ids, mask = pad(seqs[start:start + batch_size], pad_id)
        x = residual_stream(loaded, ids, layer, mask)
        edit = edit_mask(ids, mask, tuple(ids.shape), loaded.info.bos_token_id, skip_bos).to(x.device)
        s = x[edit].double().sum(0)
        total = s if total is None else total + s
        n += int(edit.sum())
    if n == 0:
        raise ValueError("texts have no edited positions (only BOS/pad); pass longer texts")
    return (total / n).float()


def evaluate(model: LoadedModel, sae, texts, layer: int | None = None, *, context_length: int = 128,
             batch_size: int = 4, max_tokens: int | None = None, mean: torch.Tensor | None = None,
             skip_bos: bool = True) -> SpliceResult:
    """CE, KL and loss recovered with ``sae`` spliced in after block ``layer`` (module docstring).

    model: the LoadedModel of :func:`abstopk_mini.lm.models.load_model`.
    sae: an :class:`~abstopk_mini.sae.SAE`, or any callable ``x [n, d] -> x_hat [n, d]``.
    texts: held-out texts — Documents (cut by :func:`abstopk_mini.lm.corpus.chunk` into chunks of
    ``context_length`` tokens, BOS first), or strings / token-id lists (BOS prepended to strings,
    each truncated to ``context_length``).
    layer: default ``sae.cfg.hook_layer``. max_tokens: score this many predictions (the last
    sequence is cut to fit), or all. mean: the mean-ablation vector [d_model] (default: the mean
    over the edited positions of ``texts``, from an extra truncated forward).
    batch_size: sequences per forward; memory is about 3 x batch x context x vocab x 4 bytes
    (Gemma-3: 1.6 GB at the defaults).
    """
    return evaluate_many(model, {"sae": sae}, texts, layer, context_length=context_length, batch_size=batch_size,
                         max_tokens=max_tokens, mean=mean, skip_bos=skip_bos)["sae"]


def evaluate_many(model: LoadedModel, saes: dict, texts, layer: int | None = None, *, context_length: int = 128,
                  batch_size: int = 4, max_tokens: int | None = None, mean: torch.Tensor | None = None,
                  skip_bos: bool = True) -> dict[str, SpliceResult]:
    """:func:`evaluate` for several SAEs of one layer on the same texts: the original, zero- and
    mean-ablated forwards run once and are shared, so n SAEs cost n + 3 forwards per batch, not 4n.
    Returns ``{name: SpliceResult}`` in the order of ``saes``.
    """
    if not isinstance(saes, dict) or not saes:
        raise ValueError("saes must be a non-empty dict {name: SAE or callable}")
    loaded = require_loaded(model)
    layers = {layer_of(sae, layer) for sae in saes.values()}
    if len(layers) != 1:
        raise ValueError(f"the SAEs read different layers {sorted(layers)}; evaluate each layer separately")
    layer = layers.pop()
    check_layer(layer, loaded.info.n_layers)
    for name, sae in saes.items():
        d_in = getattr(getattr(sae, "cfg", None), "d_in", None)
        if d_in is not None and d_in != loaded.info.d_model:
            raise ValueError(f"SAE {name!r} reads d_in={d_in} but {loaded.info.name} has d_model={loaded.info.d_model}; "
                             "pass an SAE trained on this model")
    check_positive(batch_size=batch_size, context_length=context_length)
    seqs = _sequences(loaded, texts, context_length, max_tokens, skip_bos)
    lm, info = loaded.model, loaded.info
    device = next(lm.parameters()).device
    pad_id = info.pad_token_id if info.pad_token_id is not None else 0
    if mean is None:
        mean = _mean_activation(loaded, seqs, layer, batch_size, skip_bos, pad_id)
    elif not isinstance(mean, torch.Tensor) or tuple(mean.shape) != (info.d_model,):
        raise ValueError(f"mean must be a tensor of shape ({info.d_model},); got "
                         f"{tuple(mean.shape) if isinstance(mean, torch.Tensor) else type(mean).__name__}")

    stats = {name: RunningFVU() for name in saes}
    variants: dict[str, Reconstruct | None] = {
        "orig": None,
        "zero": torch.zeros_like,
        "mean": lambda x: mean.to(device=x.device, dtype=x.dtype).expand_as(x),
    }
    variants.update({("sae", name): _measured(as_reconstruct(sae), stats[name]) for name, sae in saes.items()})
    ce = dict.fromkeys(variants, 0.0)
    kl = dict.fromkeys(saes, 0.0)
    n_tokens = 0
    with torch.inference_mode():
        for start in range(0, len(seqs), batch_size):
            ids, mask = pad(seqs[start:start + batch_size], pad_id)
            scored = edit_mask(ids, mask, tuple(ids.shape), info.bos_token_id, skip_bos)[:, :-1] & mask[:, 1:].bool()
            targets = ids[:, 1:][scored].to(device)
            n_tokens += int(scored.sum())
            scored = scored.to(device)
            lp_orig = None
            for key, fn in variants.items():
                context = splice_residual(loaded, layer, fn, skip_bos=skip_bos) if fn else contextlib.nullcontext()
                with context:
                    logits = lm(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
                logprobs = logits[:, :-1][scored].float().log_softmax(-1)  # [n, vocab]
                del logits
                ce[key] -= logprobs.gather(1, targets[:, None]).double().sum().item()
                if key == "orig":
                    lp_orig = logprobs
                elif isinstance(key, tuple):
                    kl[key[1]] += F.kl_div(logprobs, lp_orig, log_target=True, reduction="sum").double().item()
            del lp_orig, logprobs
    if n_tokens == 0:
        raise ValueError("texts gave no scored predictions (each needs at least one edited token followed by "
                         "another token); pass longer texts")
    ce = {key: value / n_tokens for key, value in ce.items()}
    return {
        name: SpliceResult(
            ce_orig=ce["orig"], ce_sae=ce[("sae", name)], ce_zero=ce["zero"], ce_mean=ce["mean"], kl_sae=kl[name] / n_tokens,
            loss_recovered_zero=loss_recovered(ce["zero"], ce[("sae", name)], ce["orig"]),
            loss_recovered_mean=loss_recovered(ce["mean"], ce[("sae", name)], ce["orig"]),
            fvu=stats[name].value(), n_tokens=n_tokens, layer=layer, skip_bos=skip_bos,
        )
        for name in saes
    }
