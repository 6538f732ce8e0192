r"""Check of the spliced-loss exercise (chapter 6): the next-token cross entropy of the model, untouched
and with an SAE's reconstruction in place of its residual stream after block :math:`L`.

.. math::
    \mathrm{CE} = -\frac1N \sum_{(b,p)\in S} \log p_\theta(t_{b,p+1} \mid t_{b,\le p})

in nats per scored prediction, as :mod:`abstopk_mini.lm.splice` defines it: the output of block
:math:`L` (``hidden_states[L + 1]``) is replaced by :math:`\hat x` = ``sae(x)`` at every position whose
token is not BOS; the prediction at position :math:`p` (of token :math:`p + 1`) is scored when
:math:`p` is edited and :math:`p + 1` exists, so the prediction made from BOS alone is not counted
and :math:`N = B\,(T - 2)` for B sequences of T tokens with BOS first.

The reader's function runs on the tiny random Gemma-3 of :mod:`~abstopk_mini.exercises.tiny` with
a random AbsTopK SAE (input scale ≠ 1) and is compared with the package
(:func:`abstopk_mini.lm.splice.evaluate` on the same token ids) and with :func:`spliced_ce_loop`,
an independent forward hook on ``model.model.layers[L]`` written here with a per-position loop over
the log-probabilities. When the reader's numbers differ, the usual mistakes are recomputed with
that loop (BOS replaced or its prediction counted, the block before or after, logits not shifted,
the reconstruction left in the SAE's scaled space, bits, a sum) and the first that matches is named.
"""

from __future__ import annotations

import math
import numbers
import types

import torch

from .harness import PackageDisagrees, call, passed, reader_name

__all__ = ["check_spliced_ce", "spliced_ce_loop"]

#: relative and absolute tolerance on a CE in nats: the model runs in float32
TOL = 1e-5


def _block_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def spliced_ce_loop(lm, reconstruct, ids: torch.Tensor, layer: int, bos: int, *, replace_bos: bool = False,
                    count_bos: bool = False, block: int | None = None, shift: int = 1, roll: bool = False,
                    ) -> tuple[float, float]:
    """(CE untouched, CE spliced) in nats per scored prediction, by a forward hook on
    ``lm.model.layers[block]`` (default ``layer``) and a loop over positions in float64.

    The keyword arguments recompute the usual mistakes: ``replace_bos`` edits BOS too,
    ``count_bos`` scores the prediction made from BOS, ``block`` hooks another block, ``shift=0``
    scores logits[p] against token p, ``roll`` scores every position against ``ids.roll(-1)``.
    lm: a Gemma-3 / Llama style ``*ForCausalLM``; reconstruct: rows -> rows.
    shape: ids [B, T] (no padding) -> (float, float)
    """
    edit = torch.ones_like(ids, dtype=torch.bool) if replace_bos else ids != bos

    def hook(module, args, output):
        h = _block_output(output).clone()
        h[edit] = reconstruct(h[edit]).to(h.dtype)
        return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h

    with torch.no_grad():
        logits = {"orig": lm(input_ids=ids, use_cache=False).logits}
        handle = lm.model.layers[layer if block is None else block].register_forward_hook(hook)
        try:
            logits["sae"] = lm(input_ids=ids, use_cache=False).logits
        finally:
            handle.remove()
    B, T = ids.shape
    targets = ids.roll(-1, dims=1) if roll else ids
    ces = []
    for key in ("orig", "sae"):
        lp = logits[key].double().log_softmax(-1)
        total, n = 0.0, 0
        for b in range(B):
            for p in range(T if roll else T - 1):
                if ids[b, p] == bos and not count_bos:
                    continue
                total -= lp[b, p, targets[b, p + shift if not roll else p]].item()
                n += 1
        ces.append(total / n)
    return ces[0], ces[1]


def _as_pair(out, fn) -> tuple[float, float]:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise AssertionError(f"{reader_name(fn)} must return a pair (ce_original, ce_spliced); got {type(out).__name__}"
                             + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    values = []
    for name, v in zip(("ce_original", "ce_spliced"), out):
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                raise AssertionError(f"{name} must be one number (nats per scored prediction); got a tensor of shape "
                                     f"{tuple(v.shape)}: average over the scored positions")
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise AssertionError(f"{name} must be a finite number (a float or a 0-dim tensor); got {v!r}")
        values.append(float(v))
    return values[0], values[1]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def _mistake(got, want, loop, sae, L: int, n_layers: int, n_scored: int) -> str:
    """The first usual mistake that gives ``got``, in words (each from :func:`spliced_ce_loop`)."""
    (g0, g1), (w0, w1) = got, want
    if _close(g0, w1) and _close(g1, w0):
        return "the two numbers are swapped: return (ce_original, ce_spliced), the untouched model first"
    if _close(g0, w0 / math.log(2)) and _close(g1, w1 / math.log(2)):
        return "the CEs are in bits (log base 2); report nats, the natural log (F.cross_entropy / log_softmax)"
    if _close(g0, w0 * n_scored) and _close(g1, w1 * n_scored):
        return (f"the CEs are summed over the {n_scored} scored predictions: average them (a mean, in nats per "
                "predicted token)")
    if not _close(g0, w0):
        for kwargs, why in (
            (dict(count_bos=True), "the prediction made from BOS alone is counted; score position p only when its "
                                   "token is not BOS (that prediction is the same with and without the SAE)"),
            (dict(shift=0), "the logits at position p are scored against token p itself: logits[:, p] predicts token "
                            "p + 1, so compare logits[:, :-1] with input_ids[:, 1:]"),
            (dict(roll=True), "the last position is scored (against a wrapped-around token): it has no next token, so "
                              "score logits[:, :-1] against input_ids[:, 1:]"),
            (dict(count_bos=True, replace_bos=True), "BOS is replaced and its prediction counted; leave BOS's residual "
                                                     "as it is and score only predictions made from non-BOS positions"),
        ):
            if _close(g0, loop(**kwargs)[0]):
                return why
        return (f"ce_original = {g0:.6f}, expected {w0:.6f} (the untouched model's mean next-token CE over the "
                "positions whose token is not BOS, each predicting the next token)")
    candidates = [
        (dict(replace_bos=True), "BOS's residual was replaced too; edit only the positions whose token is not BOS "
                                 "(input_ids != model.info.bos_token_id): the SAEs are trained without BOS"),
        ({"block": L - 1} if L > 0 else None, "you replaced the output of block L − 1 (hidden_states[L], the input of "
                                              "block L); replace the output of block L, am.lm.models.get_blocks(model)[L]"),
        ({"block": L + 1} if L + 1 < n_layers else None, "you replaced the output of block L + 1; the SAE reads the "
                                                         "output of block L, am.lm.models.get_blocks(model)[L] (hidden_states[L + 1])"),
    ]
    for kwargs, why in candidates:
        if kwargs is not None and _close(g1, loop(**kwargs)[1]):
            return why
    s = sae.cfg.input_scale
    scaled = loop(reconstruct=lambda x: sae.forward_train(x).x_hat)[1]
    if _close(g1, scaled):
        return (f"the reconstruction is left in the SAE's scaled space (z W_dec + b_dec is s·x̂ with s = {s:g}): splice "
                "sae(x), which divides by the input scale")
    if _close(g1, w0):
        return ("ce_spliced equals the untouched model's CE: the hook did not change the forward (a forward hook "
                "must return the edited output, the tensor or the tuple with it first)")
    return (f"ce_spliced = {g1:.6f}, expected {w1:.6f} (ce_original {w0:.6f} is right): replace the output of block L "
            "by sae(x) at every non-BOS position and score the same predictions")


def check_spliced_ce(fn) -> None:
    r"""``fn(model, sae, input_ids, layer)``: the mean next-token cross entropy (nats per scored
    prediction) of ``model`` untouched and with the output of block ``layer`` replaced by ``sae(x)``
    at every non-BOS position, as :func:`abstopk_mini.lm.splice.evaluate` computes them.
    model: a LoadedModel; shape: input_ids [B, T] (BOS first, no padding) -> (float, float)"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..lm.models import LoadedModel
    from ..lm.splice import evaluate
    from ..sae import SAE, SAEConfig
    from .tiny import tiny_gemma3, tiny_ids

    model = tiny_gemma3()
    L, bos, n_layers = 1, model.info.bos_token_id, model.info.n_layers
    ids = tiny_ids(model, 3, 12, seed=1)
    torch.manual_seed(5)
    sae = SAE(SAEConfig(d_in=model.info.d_model, d_sae=64, activation="abstopk", k=6, input_scale=0.25,
                        device="cpu")).eval()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.5)

    def loop(reconstruct=None, **kwargs):
        with torch.no_grad():
            return spliced_ce_loop(model.model, reconstruct or sae, ids, L, bos, **kwargs)

    want = loop()
    # evaluate reads token-id lists through the tokenizer's bos_token_id only (the tiny model has no tokenizer)
    with_tokenizer = LoadedModel(model.model, types.SimpleNamespace(bos_token_id=bos), model.info)
    res = evaluate(with_tokenizer, sae, ids.tolist(), L, context_length=ids.shape[1], batch_size=len(ids))
    if not (_close(res.ce_orig, want[0]) and _close(res.ce_sae, want[1]) and res.n_tokens == ids.numel() - 2 * len(ids)):
        raise PackageDisagrees("the spliced CE: am.lm.splice.evaluate and the hook written in the check differ "
                               f"(({res.ce_orig:.6f}, {res.ce_sae:.6f}) vs ({want[0]:.6f}, {want[1]:.6f})) — a bug in "
                               "abstopk_mini, not in your code; please report it")
    with torch.no_grad():
        got = _as_pair(call(fn, model, sae, ids.clone(), L, what="spliced_ce"), fn)
    if not (_close(got[0], want[0]) and _close(got[1], want[1])):
        raise AssertionError(_mistake(got, want, loop, sae, L, n_layers, res.n_tokens))
    passed(fn, "the spliced CE", f"on {len(ids)} sequences of {ids.shape[1]} tokens of a tiny Gemma-3 ({res.n_tokens} "
           f"scored predictions, block {L} replaced) it equals am.lm.splice.evaluate and a hook written in the check: "
           f"CE {want[0]:.4f} untouched, {want[1]:.4f} spliced")
