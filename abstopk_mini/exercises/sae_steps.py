r"""Checks of the SAE exercises of chapter 6: the AbsTopK forward pass, the FVU, and the unit-norm
decoder step of training.

* Forward (:func:`check_sae_forward`), :class:`abstopk_mini.sae.SAE` without ``input_unit_norm``:
  :math:`u = (s\,x - b_{dec})W_{enc} + b_{enc}`, :math:`z` = the k entries of largest :math:`|u_i|`
  of each row with their sign, :math:`\hat x = (z W_{dec} + b_{dec})/s`. Compared with
  ``sae.encode`` / ``sae(x)`` and with :func:`abstopk_mini.exercises.twin.abstopk_forward` (numpy,
  the support found by a search over all supports).
* FVU (:func:`check_fvu`), :func:`abstopk_mini.metrics.fvu`:
  :math:`\sum_n\|x_n - \hat x_n\|^2 / \sum_n\|x_n - \bar x\|^2` with :math:`\bar x` the mean row.
  Compared with the package and :func:`fvu_loop` (a numpy loop over rows).
* Decoder step (:func:`check_decoder_step`): training keeps each decoder row :math:`w_i` at unit
  norm. Before the optimiser step it removes from the row's gradient :math:`g_i` its component
  along the row, :math:`g_i - (g_i\cdot\hat w_i)\,\hat w_i` (``SAE.remove_parallel_grad``; that
  component only changes the row's length); after it, it rescales each row to norm 1
  (``SAE.post_step``). With plain SGD, :math:`w_i \leftarrow \mathrm{normalise}(w_i - \eta\,
  (g_i - (g_i\cdot\hat w_i)\hat w_i))`. Compared with those two package methods around
  ``torch.optim.SGD`` and with :func:`decoder_step_loop` (numpy, one row at a time).

When the reader's answer differs, the usual mistakes are recomputed and the first that matches is
named in words.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .harness import PackageDisagrees, call, call_tensor, passed, reader_name
from .twin import abstopk_forward

__all__ = ["check_sae_forward", "check_fvu", "check_decoder_step", "fvu_loop", "decoder_step_loop"]


def _close(a: torch.Tensor, b, tol: float = 1e-10) -> bool:
    b = torch.as_tensor(b, dtype=a.dtype)
    return a.shape == b.shape and torch.allclose(a, b, rtol=tol, atol=tol)


def _first_difference(got: torch.Tensor, want: torch.Tensor, column: str) -> str:
    """"row r, <column> c: got …, expected …" for the first entry of [n, m] ``got`` not close to ``want``."""
    bad = (~torch.isclose(got, want, rtol=1e-10, atol=1e-10)).nonzero()[0].tolist()
    return f"row {bad[0]}, {column} {bad[1]}: got {got[tuple(bad)].item():.6g}, expected {want[tuple(bad)].item():.6g}"


# ----------------------------------------------------------------------------- the forward pass
def _abs_topk(u: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    idx = u.abs().topk(k, dim=dim).indices
    return torch.zeros_like(u).scatter(dim, idx, u.gather(dim, idx))


def _topk_relu(u: torch.Tensor, k: int) -> torch.Tensor:
    idx = u.topk(k, dim=-1).indices
    return torch.zeros_like(u).scatter(-1, idx, torch.relu(u.gather(-1, idx)))


def _forward_mistake(sae, x: torch.Tensor, z: torch.Tensor, x_hat: torch.Tensor, want_z: torch.Tensor) -> str:
    W_enc, b_enc, W_dec, b_dec = (getattr(sae, n).detach() for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    s, k = sae.cfg.input_scale, sae.cfg.k
    u = (s * x - b_dec) @ W_enc + b_enc
    if not _close(z, want_z):
        for wrong, why in (
            (_abs_topk((s * x) @ W_enc + b_enc, k), "b_dec is not subtracted before encoding: u = (s·x − b_dec) W_enc "
                                                    "+ b_enc (the pre-encoder bias)"),
            (_abs_topk((x - b_dec) @ W_enc + b_enc, k), "the input scale is ignored: encode s·x, s = sae.cfg.input_scale"),
            (_abs_topk(s * (x - b_dec) @ W_enc + b_enc, k), "the scale multiplies (x − b_dec); only x is scaled: "
                                                            "u = (s·x − b_dec) W_enc + b_enc"),
            (_abs_topk((s * x - b_dec) @ W_enc, k), "b_enc is missing: u = (s·x − b_dec) W_enc + b_enc"),
            (_abs_topk((s * x - b_dec) @ W_dec.T + b_enc, k), "the encoder uses W_dec.T; encode with sae.W_enc "
                                                              "[d_in, d_sae], which training moved away from W_dec.T"),
            (_topk_relu(u, k), "that is TopK (the k largest u_i, ReLU'd): AbsTopK keeps the k largest |u_i| with their "
                               "sign (u.abs().topk(k))"),
            (_abs_topk(u, k).abs(), "the kept entries lost their sign; keep u_i itself, not |u_i|"),
            (_abs_topk(u, k, dim=0), "you selected along the batch dimension (dim=0); keep the k largest |u_i| of each "
                                     "row, along the latents (dim=-1)"),
            (u, "z is dense: keep only the k largest |u_i| of each row and set the rest to 0"),
        ):
            if _close(z, wrong):
                return why
        bad = (~torch.isclose(z, want_z, rtol=1e-10, atol=1e-10)).nonzero()[0].tolist()
        return (f"z differs from the AbsTopK code first at row {bad[0]}, latent {bad[1]}: got {z[tuple(bad)].item():.6g}, "
                f"expected {want_z[tuple(bad)].item():.6g}")
    want = (want_z @ W_dec + b_dec) / s
    for wrong, why in (
        (want_z @ W_dec + b_dec, "the input scale is not undone: x̂ = (z W_dec + b_dec) / s"),
        (want_z @ W_dec / s, "b_dec is not added back: x̂ = (z W_dec + b_dec) / s"),
        (want_z @ W_dec / s + b_dec, "b_dec is added after dividing by s; it lives in the scaled space: "
                                     "x̂ = (z W_dec + b_dec) / s"),
        ((want_z @ W_enc.T + b_dec) / s, "the decoder uses W_enc.T; decode with sae.W_dec [d_sae, d_in]"),
    ):
        if _close(x_hat, wrong):
            return why
    return f"z is right but x̂ differs first at {_first_difference(x_hat, want, 'coordinate')}; x̂ = (z W_dec + b_dec) / s"


def check_sae_forward(fn) -> None:
    r"""``fn(sae, x)``: the AbsTopK SAE's code and reconstruction, (z, x̂) with
    :math:`u = (s x - b_{dec})W_{enc} + b_{enc}`, z = the k largest :math:`|u_i|` of each row (sign
    kept), :math:`\hat x = (z W_{dec} + b_{dec})/s`.  shape: x [B, d_in] -> (z [B, d_sae], x_hat [B, d_in])"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..sae import SAE, SAEConfig

    torch.manual_seed(11)
    P, d, B = 16, 10, 24
    sae = SAE(SAEConfig(d_in=d, d_sae=P, activation="abstopk", k=3, input_scale=1.7, dtype="float64",
                        device="cpu")).eval()
    with torch.no_grad():
        sae.W_enc.add_(0.3 * torch.randn_like(sae.W_enc))  # trained encoders are not W_dec.T
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.3)
    x = torch.randn(B, d, dtype=torch.float64) + 0.5
    with torch.no_grad():
        want_z, want = sae.encode(x), sae(x)
    ref_z, ref = abstopk_forward(x.numpy(), *(getattr(sae, n).detach().numpy() for n in ("W_enc", "b_enc", "W_dec", "b_dec")),
                                 sae.cfg.k, sae.cfg.input_scale)
    if not (_close(want_z, ref_z) and _close(want, ref)):
        raise PackageDisagrees("the SAE forward: sae.encode / sae(x) and the numpy forward differ — a bug in "
                               "abstopk_mini, not in your code; please report it")
    with torch.no_grad():
        out = call(fn, sae, x.clone(), what="sae_forward")
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        raise AssertionError(f"{reader_name(fn)} must return a pair of tensors (z, x_hat); got {type(out).__name__}")
    z, x_hat = (t.detach().to(torch.float64) for t in out)
    if z.shape != want_z.shape or x_hat.shape != want.shape:
        raise AssertionError(f"expected z {tuple(want_z.shape)} [B, d_sae] and x_hat {tuple(want.shape)} [B, d_in]; got "
                             f"z {tuple(z.shape)} and x_hat {tuple(x_hat.shape)}")
    if not (_close(z, want_z) and _close(x_hat, want)):
        raise AssertionError(_forward_mistake(sae, x, z, x_hat, want_z))
    passed(fn, "the AbsTopK SAE forward", f"on {B} inputs (input scale {sae.cfg.input_scale:g}, k = {sae.cfg.k} of "
           f"{P} latents) z equals sae.encode(x), x̂ equals sae(x), and both equal a numpy forward")


# ----------------------------------------------------------------------------- FVU
def fvu_loop(x: np.ndarray, x_hat: np.ndarray) -> float:
    """The FVU by loops over rows in float64: Σ_n ‖x_n − x̂_n‖² / Σ_n ‖x_n − x̄‖².  shape: [N, d] -> float"""
    x, x_hat = np.asarray(x, dtype=np.float64), np.asarray(x_hat, dtype=np.float64)
    mean = sum(row for row in x) / len(x)
    err = sum(float(np.dot(a - b, a - b)) for a, b in zip(x, x_hat))
    var = sum(float(np.dot(a - mean, a - mean)) for a in x)
    return err / var


def _fvu_candidates(x: torch.Tensor, x_hat: torch.Tensor):
    e, c, N = x - x_hat, x - x.mean(0), x.shape[0]
    yield ((e ** 2).sum() / (x ** 2).sum(), "x is not centred: that is the nMSE, Σ‖x − x̂‖² / Σ‖x‖²; divide by "
                                            "Σ‖x − x̄‖² with x̄ = x.mean(0), the mean row")
    yield ((e ** 2).sum() / ((x - x.mean(-1, keepdim=True)) ** 2).sum(),
           "x is centred by each row's own mean (the mean over features, dim=-1); subtract the mean row, x.mean(0)")
    yield ((e ** 2).sum() / ((x - x.mean()) ** 2).sum(),
           "x is centred by one scalar, the mean of all its entries; subtract the mean row, x.mean(0) (one mean per feature)")
    yield (((e ** 2).sum(-1) / (c ** 2).sum(-1)).mean(),
           "that is the mean of per-row ratios; divide the total squared error by the total centred variance")
    yield (((e ** 2).sum(0) / (c ** 2).sum(0)).mean(),
           "that is the mean of per-feature ratios; divide the total squared error by the total centred variance")
    yield (e.norm(dim=-1).sum() / c.norm(dim=-1).sum(), "the norms are not squared: use Σ‖x − x̂‖² / Σ‖x − x̄‖²")
    yield (e.abs().sum() / c.abs().sum(), "absolute errors are summed; square them: Σ‖x − x̂‖² / Σ‖x − x̄‖²")
    yield (((e ** 2).sum() / (c ** 2).sum()).sqrt(), "you took a square root: the FVU is the ratio of the squared sums")
    yield (1 - (e ** 2).sum() / (c ** 2).sum(), "that is 1 − FVU, the variance explained; return the unexplained fraction")
    yield ((e ** 2).mean() / x.var(0).mean(), "x.var() divides by N − 1 and the error by N: use sums on both sides "
                                              "(or the same divisor), Σ‖x − x̂‖² / Σ‖x − x̄‖²")
    yield ((e ** 2).mean() / ((x - x_hat.mean(0)) ** 2).mean(), "x is centred by the mean of x̂; use the mean of x")


def check_fvu(fn) -> None:
    r"""``fn(x, x_hat)``: the fraction of variance unexplained,
    :math:`\sum_n\|x_n - \hat x_n\|^2 / \sum_n\|x_n - \bar x\|^2`, as :func:`abstopk_mini.metrics.fvu`.
    shape: x, x_hat [N, d] -> float (or a 0-dim tensor)"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..metrics import fvu

    g = torch.Generator().manual_seed(4)
    scales = torch.logspace(-0.5, 0.5, 8, dtype=torch.float64)
    x1 = 3.0 + scales * torch.randn(40, 8, generator=g, dtype=torch.float64)
    x3 = torch.randn(6, 5, generator=g, dtype=torch.float64) - 1.0
    cases = [(x1, x1 + 0.4 * torch.randn(40, 8, generator=g, dtype=torch.float64) * scales.flip(0), "a noisy reconstruction"),
             (x1, x1.mean(0).expand_as(x1).clone(), "the mean row (FVU 1)"),
             (x3, torch.zeros_like(x3), "the zero reconstruction")]
    for n, (x, x_hat, what) in enumerate(cases, 1):
        want = fvu(x, x_hat)
        ref = fvu_loop(x.numpy(), x_hat.numpy())
        if not math.isclose(want, ref, rel_tol=1e-12):
            raise PackageDisagrees(f"the FVU: am.metrics.fvu gives {want!r} and the numpy loop {ref!r} — a bug in "
                                   "abstopk_mini, not in your code; please report it")
        got = call(fn, x.clone(), x_hat.clone(), what="fvu")
        if isinstance(got, torch.Tensor):
            if got.numel() != 1:
                raise AssertionError(f"{reader_name(fn)} must return one number; got a tensor of shape {tuple(got.shape)} "
                                     "(sum over rows and features before dividing)")
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, numbers.Real):
            raise AssertionError(f"{reader_name(fn)} must return a float (or a 0-dim tensor); got {type(got).__name__}")
        got = float(got)
        if not math.isclose(got, want, rel_tol=1e-10, abs_tol=1e-12):
            for wrong, why in _fvu_candidates(x, x_hat):
                if math.isclose(got, wrong.item(), rel_tol=1e-10, abs_tol=1e-12):
                    raise AssertionError(f"case {n} ({what}): {why}")
            raise AssertionError(f"case {n} ({what}, x {tuple(x.shape)}): got {got:.6g}, expected {want:.6g} = "
                                 "Σ‖x − x̂‖² / Σ‖x − x̄‖² (x̄ the mean row)")
    passed(fn, "the FVU", f"{len(cases)} cases (a noisy reconstruction, the mean row, the zero reconstruction) equal "
           "am.metrics.fvu and a numpy loop over rows")


# ----------------------------------------------------------------------------- the decoder step
def decoder_step_loop(W: np.ndarray, G: np.ndarray, lr: float) -> np.ndarray:
    """One SGD step that keeps decoder rows at unit norm, one row at a time in numpy: remove from
    the row's gradient its component along the row, step, rescale the row to norm 1.
    shape: W, G [d_sae, d_in] -> [d_sae, d_in]"""
    out = np.empty_like(W, dtype=np.float64)
    for i in range(W.shape[0]):
        w = W[i] / np.linalg.norm(W[i])
        g = G[i] - np.dot(G[i], w) * w
        v = W[i] - lr * g
        out[i] = v / np.linalg.norm(v)
    return out


def _rows(M: torch.Tensor) -> torch.Tensor:
    return M / M.norm(dim=1, keepdim=True)


def _step_mistake(W: torch.Tensor, G: torch.Tensor, lr: float, got: torch.Tensor, want: torch.Tensor) -> str:
    par = (G * W).sum(1, keepdim=True) * W  # W has unit rows
    proj = G - par
    norms = got.norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-10):
        if _close(got, W - lr * proj):
            return ("the rows are not renormalised after the step (their norms run from "
                    f"{norms.min().item():.6f} to {norms.max().item():.6f}): divide each row by its norm")
        if _close(got.norm(dim=0), torch.ones(got.shape[1], dtype=got.dtype)):
            return "you normalised the columns (dim=0); each decoder row is an atom: normalise along dim=1"
        return (f"a row has norm {norms[(norms - 1).abs().argmax()].item():.6f} after your step; training keeps every "
                "decoder row at norm 1 (divide each row by its norm after the step)")
    for wrong, why in (
        (_rows(W - lr * G), "the gradient was not projected: remove from each row of grad its component along that row, "
                            "grad − (grad·w)w, before the step"),
        (_rows(W - lr * (G - (G * W).sum(0, keepdim=True) * W)),
         "the dot products are summed over the rows (dim=0), along each column of W_dec; each row is an atom: "
         "(grad * W_dec).sum(1, keepdim=True)"),
        (_rows(W - lr * par), "you kept the parallel component (grad·w)w and dropped the rest; remove it: "
                              "grad − (grad·w)w"),
        (_rows(W - (G * W).sum(1, keepdim=True) * W - lr * G),
         "the projection was applied to W_dec instead of grad: grad ← grad − (grad·w)w, then W_dec − lr·grad"),
        (_rows(W + lr * proj), "the step goes up the gradient: W_dec − lr·(projected grad)"),
        (_rows(W - lr * (G + par)), "the parallel component is added, not removed: grad − (grad·w)w"),
    ):
        if _close(got, wrong):
            return why
    return f"the new W_dec differs first at {_first_difference(got, want, 'column')}"


def check_decoder_step(fn) -> None:
    r"""``fn(W_dec, grad, lr)``: one SGD step on the decoder that keeps its rows at unit norm, as
    training does (``SAE.remove_parallel_grad``, the optimiser step, ``SAE.post_step``):
    :math:`w_i \leftarrow \mathrm{normalise}(w_i - \eta\,(g_i - (g_i\cdot w_i)\,w_i))` for unit rows :math:`w_i`.
    shape: W_dec, grad [d_sae, d_in], lr float -> the new W_dec [d_sae, d_in]"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..sae import SAE, SAEConfig

    P, d, lr = 12, 7, 0.3
    sae = SAE(SAEConfig(d_in=d, d_sae=P, activation="abstopk", k=2, dtype="float64", seed=6, device="cpu"))
    W = sae.W_dec.detach().clone()  # unit rows, as after every training step
    G = torch.randn(P, d, generator=torch.Generator().manual_seed(60), dtype=torch.float64)  # not 6 (W_dec)
    sae.W_dec.grad = G.clone()
    sae.remove_parallel_grad()
    torch.optim.SGD([sae.W_dec], lr=lr).step()
    sae.post_step()
    want = sae.W_dec.detach().clone()
    if not _close(want, decoder_step_loop(W.numpy(), G.numpy(), lr)):
        raise PackageDisagrees("the decoder step: SAE.remove_parallel_grad + SGD + SAE.post_step and the numpy loop "
                               "differ — a bug in abstopk_mini, not in your code; please report it")
    with torch.no_grad():
        got = call_tensor(fn, W.clone(), G.clone(), lr, what="decoder_step").detach().to(torch.float64)
    if got.shape != W.shape:
        raise AssertionError(f"the new W_dec has shape {tuple(got.shape)}; expected {tuple(W.shape)} [d_sae, d_in], "
                             "like the W_dec passed in")
    if not _close(got, want):
        raise AssertionError(_step_mistake(W, G, lr, got, want))
    passed(fn, "the unit-norm decoder step", f"on a {P} × {d} decoder (lr {lr:g}) it equals SAE.remove_parallel_grad, "
           "an SGD step and SAE.post_step, and a numpy loop over rows; every row keeps norm 1")
