r"""Checks of the batch-level exercises (chapter 10): BatchAbsTopK's selection over a batch, its running
threshold, and the rule it codes each token with at inference.

**Training.** For a batch of pre-activations u [B, P], BatchAbsTopK keeps the k·B entries of largest
:math:`|u_{bi}|` of the whole flattened batch, with their sign, and zeroes the rest
(:meth:`abstopk_mini.nonlinearities.BatchTopK.keep`): the budget is k per token *on average*, so one
token may get no latent and another two hundred. With each training batch it moves a running threshold
θ towards the smallest :math:`|z_{bi}|` it kept, :math:`m = \min\{|z_{bi}| : z_{bi} \ne 0\}`:

.. math::  \theta \leftarrow m \ \text{(first batch; } \theta = -1 \text{ flags "none yet")},\qquad
           \theta \leftarrow \mu\,\theta + (1 - \mu)\,m \ \text{(after it; } \mu = 0.99).

**Inference** (``eval()``): each token is coded alone, :math:`z_{bi} = u_{bi}` if :math:`|u_{bi}| > \theta`
(strictly), else 0, so a token's code does not depend on the batch it comes in; an SAE that never saw a
training batch (θ < 0) keeps the k largest :math:`|u_{bi}|` of each row instead.

Each check runs the reader's function on seeded float64 inputs and compares it with the package (a
:class:`~abstopk_mini.nonlinearities.BatchAbsTopK` module) and with an independent numpy reference written
here; if those two differ it raises :class:`~abstopk_mini.exercises.harness.PackageDisagrees`. A wrong
answer is compared with the usual mistakes (per-row selection, ranking by u, k instead of k·B, a lost sign;
max for min, the moving-average weights swapped; ≥ for >, the batch rule at inference) and the first that
matches is named.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from .harness import PackageDisagrees, call, call_tensor, passed, reader_name

__all__ = ["check_batch_abstopk", "check_threshold_update", "check_batch_abstopk_eval",
           "batch_abstopk_np", "threshold_update_py", "threshold_code_np"]


# ----------------------------------------------------------------------------- independent references
def batch_abstopk_np(u: np.ndarray, k: int) -> np.ndarray:
    """The k·B entries of largest |u| of the flattened batch, sign kept (a stable sort; zeros never kept).
    shape: u [B, P] -> [B, P] (numpy)"""
    flat = u.reshape(-1)
    order = np.argsort(-np.abs(flat), kind="stable")[: k * u.shape[0]]
    out = np.zeros_like(flat)
    out[order] = flat[order]
    return out.reshape(u.shape)


def threshold_update_py(theta: float, z, momentum: float) -> float:
    """θ after one training batch with code ``z``: the smallest non-zero |z| if θ < 0, else the moving
    average μθ + (1 − μ)·that minimum; θ unchanged if nothing was kept.  z: any iterable of numbers"""
    kept = [abs(float(v)) for v in np.asarray(z).reshape(-1) if v != 0]
    if not kept:
        return theta
    smallest = min(kept)
    return smallest if theta < 0 else momentum * theta + (1 - momentum) * smallest


def threshold_code_np(u: np.ndarray, theta: float, k: int) -> np.ndarray:
    """Inference: u where |u| > θ, else 0; for θ < 0 the k largest |u| of each row.  shape: u [B, P] -> [B, P]"""
    if theta >= 0:
        return np.where(np.abs(u) > theta, u, 0.0)
    out = np.zeros_like(u)
    for b, row in enumerate(u):
        idx = np.argsort(-np.abs(row), kind="stable")[:k]
        out[b, idx] = row[idx] * (row[idx] != 0)
    return out


def _agree(package: torch.Tensor, independent: np.ndarray, what: str) -> None:
    if not (package.shape == independent.shape and torch.equal(package, torch.as_tensor(independent))):
        raise PackageDisagrees(f"{what}: the package and the independent reference differ — a bug in abstopk_mini, "
                               "not in your code; please report it")


def _module(k: int, theta: float | None = None, momentum: float = 0.99):
    from ..nonlinearities import BatchAbsTopK

    act = BatchAbsTopK(k, threshold_momentum=momentum).double()
    if theta is not None:
        act.threshold.fill_(theta)
    return act


def _first_diff(z: torch.Tensor, want: torch.Tensor) -> str:
    b, i = (z != want).nonzero()[0].tolist()
    return f"first differing entry [{b}, {i}]: got {float(z[b, i]):.4g}, expected {float(want[b, i]):.4g}"


# ----------------------------------------------------------------------------- 10.2: selection in training
def _batch_mistake(u: torch.Tensor, z: torch.Tensor, want: torch.Tensor, k: int) -> str:
    from ..coding.prox import abs_topk
    from ..nonlinearities import BatchTopK

    B, n_budget = u.shape[0], k * u.shape[0]
    by_u = torch.zeros_like(u).reshape(-1)
    top = u.reshape(-1).topk(n_budget).indices
    by_u[top] = u.reshape(-1)[top]
    if torch.equal(z, abs_topk(u, k)):
        return (f"you kept the k = {k} largest |u| of each row: that is AbsTopK; BatchAbsTopK shares a budget of "
                f"k·B = {n_budget} over the whole batch: the k·B largest |u| of u.flatten(), wherever they are")
    if torch.equal(z, want.abs()):
        return "the kept entries lost their sign; keep u itself where |u| is among the k·B largest, not |u|"
    if torch.equal(z, by_u.reshape(u.shape)) or torch.equal(z, BatchTopK(k).forward_batch(u)):
        return ("you ranked by u (or ReLU(u)), which is BatchTopK: large negative entries were dropped; rank by |u| "
                "(u.flatten().abs().topk(k * B))")
    nz, n_want = int((z != 0).sum()), int((want != 0).sum())
    if nz == k and n_want > k:
        return (f"you kept k = {k} entries in the whole batch; the budget is k·B = {n_budget} "
                f"(k per token on average, B = {B} tokens)")
    if nz > n_want:
        return f"{nz} non-zeros for a budget of k·B = {n_budget}; keep exactly the k·B largest |u| of the batch"
    if nz < n_want:
        return f"only {nz} non-zeros for a budget of k·B = {n_budget}; keep exactly the k·B largest |u| of the batch"
    kept = z != 0
    if torch.equal(kept, want != 0):
        return "the right entries are kept but their values differ from u; keep u unchanged (no shrinkage, no rescaling)"
    return f"the kept set differs from the k·B = {n_budget} largest |u| of the batch ({_first_diff(z, want)})"


def check_batch_abstopk(fn) -> None:
    """``fn(u, k)``: BatchAbsTopK's training selection: the k·B entries of largest |u| of the whole batch
    (B = u.shape[0]), with their sign, zeros elsewhere.  shape: u [B, P] -> z [B, P]"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    g = torch.Generator().manual_seed(10)
    scale = torch.logspace(-1, 1, 12, dtype=torch.float64)[torch.randperm(12, generator=g)].unsqueeze(1)
    cases = [(torch.tensor([[5.0, -4.0, 3.0, 0.2], [0.3, -0.5, 0.1, 0.2]], dtype=torch.float64), 1),
             (torch.randn(16, 64, generator=g, dtype=torch.float64), 4),
             (torch.randn(12, 32, generator=g, dtype=torch.float64) * scale, 3),  # rows of very different norms
             (torch.randn(1, 20, generator=g, dtype=torch.float64), 3),
             (-torch.rand(6, 10, generator=g, dtype=torch.float64) - 0.1, 2)]
    for n, (u, k) in enumerate(cases, 1):
        z = call_tensor(fn, u.clone(), k, what="batch_abstopk")
        if z.shape != u.shape:
            raise AssertionError(f"case {n}: the output has shape {tuple(z.shape)}, u has {tuple(u.shape)}; return a "
                                 "tensor like u (select on u.flatten(), then reshape back to [B, P])")
        want = _module(k).forward_batch(u)
        _agree(want, batch_abstopk_np(u.numpy(), k), "BatchAbsTopK's batch selection")
        z = z.to(u.dtype)
        if not torch.equal(z, want):
            raise AssertionError(f"case {n} (u {tuple(u.shape)}, k={k}): {_batch_mistake(u, z, want, k)}")
    passed(fn, "batch_abstopk", f"{len(cases)} batches (rows of very different norms, one row, all negative) equal "
           "BatchAbsTopK.forward_batch and a numpy sort of the flattened |u|")


# ----------------------------------------------------------------------------- 10.3: the running threshold
def _as_number(fn, out, where: str) -> float:
    if isinstance(out, torch.Tensor):
        if out.numel() != 1:
            raise AssertionError(f"{where}: {reader_name(fn)} returned a tensor of shape {tuple(out.shape)}; return "
                                 "the new θ, one number (a float or a 0-d tensor)")
        return float(out)
    if isinstance(out, numbers.Real) and not isinstance(out, bool):
        return float(out)
    raise AssertionError(f"{where}: {reader_name(fn)} must return the new θ as a number; it returned {type(out).__name__}")


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-12 * max(1.0, abs(b))


def _threshold_mistake(theta: float, z: torch.Tensor, mom: float, got: float) -> str:
    kept = z[z != 0]
    m, big, mean, low = float(kept.abs().min()), float(kept.abs().max()), float(kept.abs().mean()), float(kept.min())

    def ema(value, weight=mom, first_copy=True):
        return value if (theta < 0 and first_copy) else weight * theta + (1 - weight) * value

    candidates = [
        (ema(big), "you used the largest kept |z|; θ tracks the smallest kept |z| (the cut of the k·B-th "
                   "largest |u|): use the min"),
        (ema(low), f"you took the smallest z ({low:.4g}, a large negative entry); the threshold is on |z|: the min of "
                   "|z| over the kept entries"),
        (ema(0.0), "the minimum came out 0: the zeros of z are the entries not kept; take the min of |z| over z != 0"),
        (ema(m, 1 - mom), f"the moving-average weights are swapped: θ ← μθ + (1 − μ)·min, the old θ weighs "
                          f"μ = {mom:g}"),
        (ema(m, first_copy=False), "before the first batch θ = −1 only flags 'none yet': set θ to the batch's min "
                                   "instead of averaging it with −1"),
        (m, f"θ is a running (exponential moving) average: θ ← μθ + (1 − μ)·min with μ = {mom:g}, not the last "
            "batch's min alone"),
        (ema(mean), "you used the mean of the kept |z|; θ tracks the smallest kept |z|: use the min"),
    ]
    for value, said in candidates:
        if _close(got, value):
            return said
    return (f"got θ = {got:.6g}, expected {ema(m):.6g} (θ before = {theta:g}, μ = {mom:g}, smallest kept |z| = "
            f"{m:.6g})")


def check_threshold_update(fn) -> None:
    """``fn(theta, z, momentum)``: BatchAbsTopK's threshold after one training batch: with m the smallest
    non-zero |z|, m if ``theta`` < 0 (no batch yet), else momentum·theta + (1 − momentum)·m.
    theta: float; z [B, P], the batch's code (zeros where not kept); momentum: float -> the new θ (a number)"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    g = torch.Generator().manual_seed(11)
    runs, n = [(0.99, 5, 4), (0.9, 3, 2)], 0
    for mom, steps, k in runs:
        act = _module(k, momentum=mom).train()
        for step in range(steps):
            n += 1
            u = torch.randn(16, 48, generator=g, dtype=torch.float64) * (1 + step)
            theta = float(act.threshold)
            z = act.forward_batch(u)  # the code the batch kept, without moving θ
            act.keep(u)  # the package moves θ
            want = float(act.threshold)
            ref = threshold_update_py(theta, z.numpy(), mom)
            if not _close(want, ref):
                raise PackageDisagrees("BatchAbsTopK's threshold: the package and the independent reference differ — "
                                       "a bug in abstopk_mini, not in your code; please report it")
            where = f"batch {step + 1} of a run with momentum {mom:g} (θ before = {theta:g})"
            got = _as_number(fn, call(fn, theta, z.clone(), mom, what="threshold_update"), where)
            if not _close(got, want):
                raise AssertionError(f"{where}: {_threshold_mistake(theta, z, mom, got)}")
    passed(fn, "threshold_update", f"θ after each of {n} training batches (the first from θ = −1; momentum 0.99 and "
           "0.9) equals BatchAbsTopK's threshold buffer and a plain-Python moving average")


# ----------------------------------------------------------------------------- 10.4: inference
def _eval_mistake(u: torch.Tensor, theta: float, k: int, z: torch.Tensor, want: torch.Tensor) -> str:
    from ..coding.prox import abs_topk

    zero = torch.zeros_like(u)
    if theta < 0 and torch.equal(z, torch.where(u.abs() > theta, u, zero)):
        return ("θ = −1 means the SAE never saw a training batch, and |u| > −1 keeps everything: fall back to the "
                "k largest |u| of each row (AbsTopK)")
    if theta >= 0 and torch.equal(z, _module(k).forward_batch(u)):
        return ("you selected the k·B largest |u| of the batch, the training rule (the paper's code does so at "
                "inference too); in eval each token is coded alone: keep u where |u| > θ, so its code does not "
                "depend on the batch it comes in")
    if theta >= 0 and torch.equal(z, abs_topk(u, k)):
        return "you kept k per row; with a learned θ each token keeps every entry with |u| > θ, however many"
    if torch.equal(z, want.abs()):
        return "the kept entries lost their sign; keep u itself where |u| > θ"
    if theta >= 0 and torch.equal(z, torch.where(u.abs() >= theta, u, zero)):
        return f"you kept entries with |u| = θ = {theta:g} exactly; the rule is strict: |u| > θ"
    if theta >= 0 and (torch.equal(z, torch.where(u > theta, u, zero)) or torch.equal(z, torch.where(u >= theta, u, zero))):
        return "you compared u with θ, so negative entries were dropped; compare |u| with θ and keep u's sign"
    return f"the code differs from u·1[|u| > θ] ({_first_diff(z, want)})"


def check_batch_abstopk_eval(fn) -> None:
    """``fn(u, theta, k)``: BatchAbsTopK at inference: u where |u| > theta (strictly), 0 elsewhere; if
    theta < 0 (never trained) the k largest |u| of each row, sign kept.  shape: u [B, P] -> z [B, P]"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    g = torch.Generator().manual_seed(12)
    big = torch.randn(32, 64, generator=g, dtype=torch.float64)
    big[0, 0], big[1, 1] = 1.8, -1.8  # exactly at θ: not kept
    with_zeros = torch.randn(8, 16, generator=g, dtype=torch.float64)
    with_zeros[:, ::4] = 0.0
    cases = [(torch.tensor([[0.5, -2.0, 1.0, 0.1], [-1.0, 0.3, 3.0, -0.7]], dtype=torch.float64), 1.0, 1),
             (big, 1.8, 4),
             (torch.randn(8, 16, generator=g, dtype=torch.float64), -1.0, 3),
             (with_zeros, 0.0, 2)]
    for n, (u, theta, k) in enumerate(cases, 1):
        z = call_tensor(fn, u.clone(), theta, k, what="batch_abstopk_eval")
        if z.shape != u.shape:
            raise AssertionError(f"case {n}: the output has shape {tuple(z.shape)}, u has {tuple(u.shape)}; return a "
                                 "tensor like u, zeros where an entry is not kept")
        want = _module(k, theta).eval()(u)
        _agree(want, threshold_code_np(u.numpy(), theta, k), "BatchAbsTopK at inference")
        z = z.to(u.dtype)
        if not torch.equal(z, want):
            raise AssertionError(f"case {n} (u {tuple(u.shape)}, θ = {theta:g}, k = {k}): "
                                 f"{_eval_mistake(u, theta, k, z, want)}")
    passed(fn, "batch_abstopk_eval", f"{len(cases)} cases (entries exactly at θ, θ = 0, θ = −1: never trained) equal "
           "BatchAbsTopK in eval mode and a numpy comparison with θ")
