r"""Checks of chapter 5's exercises: the truncated forward and the mean share of the activations.

**The residual stream after block L** (:func:`check_residual_stream`). With :math:`h_0` the scaled
token embeddings and :math:`h_{l+1} = \mathrm{block}_l(h_l)`, the SAE reads :math:`x = h_{L+1}`, the
output of ``blocks[L]`` (``blocks.L.hook_resid_post``). The reader's function hooks that block, keeps
its output and stops the forward there. The check runs it on a tiny random Gemma-3
(:mod:`abstopk_mini.exercises.tiny`) and compares with :func:`abstopk_mini.lm.hooks.residual_stream`
and with the model's own ``hidden_states[L + 1]`` (``output_hidden_states=True``; for the last block
``hidden_states[-1]`` has the final norm applied, so there only the package is the reference).
Temporary counting hooks on every block and on the LM head tell whether anything after block L
ran; the hooks of every module before and after the call tell whether one was left behind.

**The mean share** (:func:`check_mean_share`). For activations :math:`x_1, \dots, x_N` with mean
:math:`\mu`, :math:`m = \lVert\mu\rVert^2 / \frac1N\sum_n \lVert x_n\rVert^2`
(:func:`abstopk_mini.lm.stats.mean_share`). The independent reference uses the identity
:math:`\frac1N\sum_n\lVert x_n\rVert^2 = \lVert\mu\rVert^2 + \operatorname{tr}\Sigma`, i.e.
:math:`m = 1 - \operatorname{tr}\Sigma / \frac1N\sum_n\lVert x_n\rVert^2` with numpy's population
covariance.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .harness import PackageDisagrees, call, call_tensor, passed, reader_name

__all__ = ["check_residual_stream", "check_mean_share", "mean_share_reference"]

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks")


# ----------------------------------------------------------------------------- 5.1 the truncated forward
def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """fp32 activations of the same computation: ~1e-5 relative to the scale of b."""
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), rtol=1e-5,
                                                      atol=1e-5 * float(b.abs().max())))


def _hook_keys(lm) -> dict:
    """{(module, dict name): the hook ids registered now} over every module of ``lm``."""
    return {(m, name): set(getattr(m, name).keys()) for m in lm.modules() for name in _HOOK_DICTS}


def _remove_new_hooks(lm, before: dict) -> list[str]:
    """Remove every hook registered since ``before`` (the tiny model is shared by the checks);
    return the names of the modules that held one."""
    names = {id(m): n for n, m in lm.named_modules()}
    left = []
    for (m, name), keys in _hook_keys(lm).items():
        for key in keys - before.get((m, name), set()):
            getattr(m, name).pop(key, None)
            for extra in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs"):
                getattr(m, extra, {}).pop(key, None)
            left.append(names.get(id(m), type(m).__name__) or "the model")
    return left


def _value_mistake(got: torch.Tensor, hidden, layer: int, n: int) -> str:
    """What ``got`` is instead of the output of block ``layer``, in words."""
    if layer + 1 < n and _close(got, hidden[-1]):
        return (f"your x is hidden_states[-1], the output of the last block with the final norm applied; the SAE "
                f"reads the output of block {layer}: hook blocks[{layer}]")
    if layer == n - 1 and _close(got, hidden[-1]):
        return ("for the last block your x has the final norm applied: transformers' hidden_states[-1] is "
                "model.norm(output of the last block); hook blocks[L] and keep its raw output")
    if _close(got, hidden[layer]):
        what = "the scaled token embeddings" if layer == 0 else f"the output of block {layer - 1}"
        return (f"layer off by one: your x is hidden_states[{layer}], {what}, i.e. the input of block {layer}; "
                f"the SAE reads the output of blocks[{layer}] (hidden_states[{layer + 1}]): use a forward hook "
                "(register_forward_hook), not a pre-hook, on blocks[L]")
    for j in range(len(hidden) - 1):
        if j != layer + 1 and _close(got, hidden[j]):
            return (f"your x is hidden_states[{j}], the output of block {j - 1}; for layer {layer} read the output "
                    f"of blocks[{layer}] (hidden_states[{layer + 1}])")
    return ""


def check_residual_stream(fn) -> None:
    r"""``fn(model, input_ids, layer)``: the residual stream after block ``layer`` from a forward that
    stops there.  shape: model a LoadedModel, input_ids [B, T] (long) -> x [B, T, d_model]"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..lm import hooks
    from ..lm.models import get_blocks
    from .tiny import tiny_gemma3, tiny_ids

    loaded = tiny_gemma3()
    lm = loaded.model
    blocks = get_blocks(loaded)
    n = len(blocks)
    head = lm.get_output_embeddings()
    ids = tiny_ids(loaded, 3, 12, seed=5)
    with torch.inference_mode():
        hidden = [h.clone() for h in lm(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states]
    layers = (1, 0, n - 1)
    wants = {layer: hooks.residual_stream(loaded, ids, layer) for layer in layers}
    for layer, want in wants.items():
        if layer + 1 < n and not _close(want, hidden[layer + 1]):
            raise PackageDisagrees(f"the residual stream after block {layer}: am.lm.hooks.residual_stream and "
                                   f"hidden_states[{layer + 1}] differ — a bug in abstopk_mini, not in your code; "
                                   "please report it")
    name = reader_name(fn)
    for layer in layers:
        want = wants[layer]
        calls = [0] * (n + 1)  # blocks, then the LM head

        def counter(i):
            def pre_hook(module, args):
                calls[i] += 1
            return pre_hook

        before = _hook_keys(lm)
        counting = [b.register_forward_pre_hook(counter(i)) for i, b in enumerate(blocks)]
        counting.append(head.register_forward_pre_hook(counter(n)))
        try:
            got = call(fn, loaded, ids.clone(), layer, what="residual_stream")
        finally:
            for h in counting:
                h.remove()
            left = _remove_new_hooks(lm, before)
        if isinstance(got, tuple):
            raise AssertionError(f"{name} returned a tuple; when a block returns a tuple (hidden, ...) its first "
                                 "element is the residual stream: unwrap output[0] in the hook and return that tensor")
        if not isinstance(got, torch.Tensor):
            raise AssertionError(f"{name} must return a torch.Tensor [B, T, d_model]; it returned {type(got).__name__}")
        if tuple(got.shape) == tuple(want.shape[1:]):
            raise AssertionError(f"{name} returned shape {tuple(got.shape)}, one sequence; expected {tuple(want.shape)} "
                                 "[B, T, d_model]. This Gemma block returns a tensor, and output[0] of a tensor is its "
                                 "first sequence: unwrap output[0] only when the output is a tuple")
        if got.shape != want.shape:
            raise AssertionError(f"{name} returned shape {tuple(got.shape)}; expected {tuple(want.shape)} = [B, T, d_model]")
        if not _close(got, want):
            msg = _value_mistake(got, hidden, layer, n)
            if not msg:
                diff = (got.double() - want.double()).abs()
                b, t, j = np.unravel_index(int(diff.argmax()), tuple(diff.shape))
                msg = (f"for layer {layer} your x differs from the output of blocks[{layer}] (max |diff| "
                       f"{float(diff.max()):.3g} at batch {b}, position {t}, coordinate {j}); return the block's "
                       "output, captured by a forward hook on blocks[L]")
            raise AssertionError(msg)
        later = [i for i in range(layer + 1, n) if calls[i]]
        if later or calls[n]:
            ran = (f"blocks {later[0]}..{later[-1]}" if len(later) > 1 else f"block {later[0]}" if later else "")
            ran = " and ".join(s for s in (ran, "the LM head" if calls[n] else "") if s)
            raise AssertionError(f"the forward did not stop after block {layer}: {ran} ran as well. Raise an exception "
                                 "of your own in the hook and catch it around the model call, so nothing after block L runs")
        if calls[layer] == 0:
            raise AssertionError(f"block {layer} never ran inside {name}: run the model on input_ids")
        if left:
            raise AssertionError(f"a hook was still registered on {left[0]} after {name} returned: keep the handle of "
                                 "register_forward_hook and call handle.remove() in a finally block (it would fire "
                                 "on every later forward)")
    passed(fn, "the truncated forward", f"on 3 layers (1, 0 and the last, {n - 1}) of a tiny random Gemma-3 equals "
           "am.lm.hooks.residual_stream and hidden_states[L + 1] (the last block: its raw output, before the final "
           "norm), runs no block after L nor the LM head, and leaves no hook behind")


# ----------------------------------------------------------------------------- 5.2 the mean share
def mean_share_reference(x: np.ndarray) -> float:
    """1 − tr Σ / mean‖x‖² (population covariance, numpy): the mean share by the identity
    mean‖x‖² = ‖μ‖² + tr Σ.  shape: x [N, d] -> float"""
    x = np.asarray(x, dtype=np.float64)
    second = float(np.mean(np.einsum("nd,nd->n", x, x)))
    cov = np.atleast_2d(np.cov(x, rowvar=False, bias=True))
    return 1.0 - float(np.trace(cov)) / second


def _mean_share_mistakes(x: torch.Tensor) -> list[tuple[float, str]]:
    """(value, what is wrong) for the usual wrong mean shares of x [N, d] (fp64)."""
    mu = x.mean(0)
    sq = x.pow(2).sum(1)  # ‖x_n‖²
    mu2, second = float(mu.pow(2).sum()), float(sq.mean())
    wrong_mu = x.mean(1)  # [N]: the mean of each token's coordinates
    return [
        (float(wrong_mu.pow(2).sum()) / second, "the mean is over the wrong dimension: x.mean(1) averages each token's "
         "coordinates; μ is the mean over tokens, x.mean(0), a vector [d]"),
        (float(wrong_mu.pow(2).mean()) / float(x.pow(2).mean()), "the mean is over the wrong dimension: x.mean(1) "
         "averages each token's coordinates; μ is the mean over tokens, x.mean(0), a vector [d]"),
        (math.sqrt(mu2) / float(sq.sqrt().mean()), "the norms are not squared: the mean share is ‖μ‖² / mean ‖x_n‖², "
         "a share of the second moment"),
        (mu2 / float(sq.sqrt().mean()) ** 2, "the denominator is (mean ‖x_n‖)², the square of the mean norm; it must be "
         "the mean of the squared norms, mean ‖x_n‖²"),
        (float((mu2 / sq).mean()), "you averaged the per-token ratios ‖μ‖² / ‖x_n‖²; divide ‖μ‖² by the mean of "
         "‖x_n‖² over the tokens instead"),
        (mu2 / float(sq.sum()), "the denominator is the sum of ‖x_n‖² over the tokens; it is their mean (divide by N)"),
        (1.0 - mu2 / second, "you returned 1 − m = tr Σ / mean ‖x_n‖², the share of the variance around the mean; "
         "the mean share is ‖μ‖² / mean ‖x_n‖²"),
    ]


def check_mean_share(fn) -> None:
    r"""``fn(x)``: :math:`\lVert\mu\rVert^2 / \frac1N\sum_n\lVert x_n\rVert^2`, the share of the mean
    squared norm held by the mean vector.  shape: x [N, d] -> a float"""
    __tracebackhide__ = True
    from ..lm import stats

    g = torch.Generator().manual_seed(11)
    N, d = 300, 16
    big = torch.zeros(d, dtype=torch.float64)
    big[3] = 6.0  # a massive coordinate, as at Gemma's layer 6
    inputs = [
        torch.randn(N, d, generator=g, dtype=torch.float64) + 2.0 * torch.randn(d, generator=g, dtype=torch.float64) + big,
        torch.randn(N, d, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3.0, d, dtype=torch.float64) + 0.3,
        (torch.randn(N, d, generator=g) * 40.0 + 100.0 * torch.randn(d, generator=g)).float(),  # float32, large norms
    ]
    name = reader_name(fn)
    for i, x in enumerate(inputs):
        want = stats.mean_share(x)
        ref = mean_share_reference(x.double().numpy())
        if not math.isclose(want, ref, rel_tol=1e-9, abs_tol=1e-12):
            raise PackageDisagrees(f"the mean share: am.lm.stats.mean_share gives {want!r}, the reference 1 − tr Σ / "
                                   f"mean‖x‖² gives {ref!r} — a bug in abstopk_mini, not in your code; please report it")
        out = call(fn, x.clone(), what="mean_share")
        if isinstance(out, torch.Tensor):
            if out.numel() != 1:
                raise AssertionError(f"{name} must return one number; it returned a tensor of shape {tuple(out.shape)} "
                                     "(sum over the coordinates and average over the tokens, then divide)")
            out = out.item()
        if isinstance(out, bool) or not isinstance(out, (int, float, np.floating)):
            raise AssertionError(f"{name} must return one number (a float); it returned {type(out).__name__}")
        got = float(out)
        tol = dict(rel_tol=1e-5 if x.dtype == torch.float32 else 1e-9, abs_tol=1e-12)
        if math.isclose(got, want, **tol):
            continue
        for value, why in _mean_share_mistakes(x.double()):
            if math.isclose(got, value, **tol):
                raise AssertionError(why)
        raise AssertionError(f"on input {i} ({N} tokens of width {d}) your mean share is {got:.6g}, the right one "
                             f"{want:.6g}: it is ‖x.mean(0)‖² / (x ** 2).sum(1).mean()")
    passed(fn, "the mean share", f"on 3 sets of {N} activations (float64 and float32) equals am.lm.stats.mean_share "
           "and 1 − tr Σ / mean‖x‖² from numpy's covariance")
