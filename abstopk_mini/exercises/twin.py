r"""Check of the [D, −D] twin exercise (chapter 4): the TopK SAE with 2P latents that computes what
an AbsTopK SAE with P latents does.

The reader's twin is run on seeded inputs and compared with the AbsTopK SAE (the package) and with
an independent numpy forward of the AbsTopK SAE's weights, u = (s x − b_dec) W_enc + b_enc,
z = the k largest |u_i| with their sign, x̂ = (z W_dec + b_dec)/s. When the twin differs, its
configuration and then its weights are compared half by half with [W, −W], [b, −b], [D; −D], b_dec,
and the first wrong one is named.
"""

from __future__ import annotations

import numpy as np
import torch

from .coding import brute_abs_topk
from .harness import PackageDisagrees, call, passed, reader_name

__all__ = ["check_twin", "abstopk_forward"]


def abstopk_forward(x: np.ndarray, W_enc, b_enc, W_dec, b_dec, k: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(z, x̂) of an AbsTopK SAE in numpy (z by a search over supports: small P only).  shape: x [B, d_in] -> (z [B, P], x_hat [B, d_in])"""
    u = (scale * x - b_dec) @ W_enc + b_enc
    z = brute_abs_topk(u, k)
    return z, (z @ W_dec + b_dec) / scale


def _halves(name: str, got: torch.Tensor, want: torch.Tensor, dim: int) -> str | None:
    """What is wrong with ``got`` = [want, −want] along ``dim``, in words, or None."""
    if got.shape != torch.Size([*want.shape[:dim], 2 * want.shape[dim], *want.shape[dim + 1:]]):
        return f"the twin's {name} has shape {tuple(got.shape)}; expected the doubled shape of the SAE's {tuple(want.shape)}"
    first, second = got.split(want.shape[dim], dim=dim)
    close = lambda a, b: torch.allclose(a, b, atol=1e-12)  # noqa: E731
    if not close(first, want):
        return f"the first half of the twin's {name} must be the SAE's {name} itself (latent i fires where u_i > 0)"
    if close(second, -want):
        return None
    if close(second, want):
        return f"the second half of {name} is a copy; it must be −{name}, negated"
    if not second.any():
        return f"the second half of {name} is zero; it must be −{name}"
    return f"the second half of the twin's {name} is not −{name}"


def _weights_mistake(sae, twin) -> str:
    p = {n: getattr(twin, n).detach().to(torch.float64) for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    for name, dim, why in (("W_enc", 1, "latent P + i reads −u_i"),
                           ("b_enc", 0, "without it u' = [u, −u] fails: the bias is part of u"),
                           ("W_dec", 0, "latent P + i writes −d_i, so z⁺ d_i + z⁻ (−d_i) = z d_i")):
        if (msg := _halves(name, p[name], getattr(sae, name).detach(), dim)) is not None:
            return f"{msg} ({why})"
    if not torch.allclose(p["b_dec"], sae.b_dec.detach(), atol=1e-12):
        said = "zero" if not p["b_dec"].any() else "−b_dec" if torch.allclose(p["b_dec"], -sae.b_dec) else "changed"
        return f"the twin's b_dec is {said}; b_dec stays as it is (copy sae.b_dec: the twin subtracts and adds the same b_dec)"
    return "the weights look right but the twin computes something else; is it in train mode or on another device?"


def check_twin(fn) -> None:
    r"""``fn(sae)``: from an AbsTopK SAE with P latents, the TopK SAE with 2P latents (encoder columns
    :math:`[W, -W]`, biases :math:`[b, -b]`, decoder rows :math:`[D; -D]`, the same ``b_dec`` and
    input scale) that reconstructs every input exactly as the AbsTopK SAE does."""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..sae import SAE, SAEConfig

    torch.manual_seed(3)
    P, d = 20, 12
    sae = SAE(SAEConfig(d_in=d, d_sae=P, activation="abstopk", k=3, input_scale=1.7, dtype="float64")).eval()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.3)
    x = torch.randn(64, d, dtype=torch.float64)
    with torch.no_grad():
        want_z, want = sae.encode(x), sae(x)
    ref_z, ref = abstopk_forward(x.numpy(), *(getattr(sae, n).detach().numpy() for n in ("W_enc", "b_enc", "W_dec", "b_dec")),
                                 sae.cfg.k, sae.cfg.input_scale)
    if not (np.allclose(want_z.numpy(), ref_z, atol=1e-10) and np.allclose(want.numpy(), ref, atol=1e-10)):
        raise PackageDisagrees("the [D, −D] twin: the package's AbsTopK SAE and the numpy forward differ — a bug in "
                               "abstopk_mini, not in your code; please report it")
    twin = call(fn, sae, what="twin")
    if not isinstance(twin, SAE):
        raise AssertionError(f"{reader_name(fn)} must return an abstopk_mini SAE (am.SAE(am.SAEConfig(...))); "
                             f"got {type(twin).__name__}")
    c = twin.cfg
    if c.activation != "topk" or c.d_sae != 2 * P or c.k != sae.cfg.k:
        raise AssertionError(f"the twin must be a TopK SAE with 2P = {2 * P} latents and the same k = {sae.cfg.k}; got "
                             f"activation={c.activation!r}, d_sae={c.d_sae}, k={c.k}")
    if c.input_scale != sae.cfg.input_scale:
        raise AssertionError(f"the twin's input scale is {c.input_scale:g}, the SAE's {sae.cfg.input_scale:g}: pass "
                             "input_scale=sae.cfg.input_scale, so that the twin scales x as the SAE does")
    with torch.no_grad():
        twin = twin.to(torch.float64)
        got, z2 = twin(x), twin.encode(x)
    if torch.allclose(z2[:, :P] - z2[:, P:], want_z, atol=1e-10) and torch.allclose(got, want, atol=1e-10):
        passed(fn, "the [D, −D] twin", "on 64 inputs its codes fold back to AbsTopK's (z⁺ − z⁻ = z) and its "
               "reconstructions equal the AbsTopK SAE's and a numpy forward of it")
        return
    raise AssertionError(_weights_mistake(sae, twin))
