r"""AbsTopK with a dictionary D is TopK with the doubled dictionary [D, −D].

Take an AbsTopK SAE with P latents, pre-activation :math:`u = (s x - b_{dec}) W_{enc} + b_{enc}`
and code :math:`z = \mathrm{abstopk}_k(u)`. Its **doubled TopK SAE** has 2P latents::

    W_enc' = [W_enc, −W_enc]   (d_in × 2P)      b_enc' = [b_enc, −b_enc]
    W_dec' = [W_dec; −W_dec]   (2P × d_in)      b_dec' = b_dec, same input scale s

(the encoder bias is negated too: ``[b_enc, b_enc]`` would not give ``−u``). Then
:math:`u' = [u, -u]`, and the k largest of the 2P numbers :math:`\{u_i, -u_i\}` are the
:math:`|u_i|` of the k indices of largest :math:`|u_i|`: every :math:`-|u_j| \le 0 \le |u_i|`,
and of each pair only the copy with value :math:`|u_i|` can be among the largest. TopK keeps
them (ReLU changes nothing, they are ≥ 0), at index :math:`i` when :math:`u_i > 0` and
:math:`P+i` when :math:`u_i < 0`, with the atom :math:`\mathrm{sign}(u_i) W_{dec}[i]`. So

.. math:: z' W_{dec}' = \sum_{i \in S} |u_i|\,\mathrm{sign}(u_i)\,W_{dec}[i] = z\,W_{dec},

the reconstructions are identical, and the codes map one to one: :math:`z = z'_{:P} - z'_{P:}`
(:func:`fold`). The only exception is a tie at the k-th largest :math:`|u_i|` (a measure-zero
event for real activations), where the two may break it differently.

**Training.** With the ± atoms **tied** (:class:`TiedDoubledTopK`: the 2P-latent TopK SAE whose
parameters are the P-latent ones, doubled as above) the loss is the same function of the same
parameters as AbsTopK's, so the gradients, and with them the whole training trajectory, are the
same (up to the order of floating-point sums). **Untied**, the doubled SAE is an ordinary TopK SAE
with 2P latents that merely *starts* at [D, −D]: the + and − atoms of a pair get gradients from
different tokens and drift apart, and half of the pairs' capacity can go to other features.
:func:`compare_training` measures this on data.
"""

from __future__ import annotations

import torch
from torch import nn

from . import prox
from .. import metrics
from ..nonlinearities import SPECS
from ..sae import SAE, SAEConfig

__all__ = ["DOUBLES_INTO", "doubled_topk", "fold", "TiedDoubledTopK", "compare_training"]


#: signed per-row top-k activation -> the unsigned one with the same selection, which it doubles into
#: (abstopk -> topk): read from the specs, so no activation is named here
DOUBLES_INTO = {name: next(u.name for u in SPECS.values() if u.selection == s.selection and u.param == s.param and not u.signed)
                for name, s in SPECS.items() if s.signed and s.selection == "row"}


def doubled_topk(sae: SAE) -> SAE:
    """The TopK SAE with 2P latents equivalent to an AbsTopK SAE (module docstring)."""
    if sae.cfg.activation not in DOUBLES_INTO:
        raise ValueError("sae must be a signed per-row top-k SAE (" + " or ".join(f"activation={a!r}" for a in DOUBLES_INTO)
                         + f"); got activation={sae.cfg.activation!r}")
    c = sae.cfg
    cfg = SAEConfig(d_in=c.d_in, d_sae=2 * c.d_sae, activation=DOUBLES_INTO[c.activation], k=c.k, input_scale=c.input_scale,
                    dtype=c.dtype, device=str(sae.W_dec.device), model_name=c.model_name, hook_name=c.hook_name,
                    hook_layer=c.hook_layer, context_size=c.context_size, metadata={"doubled_from": c.activation})
    out = SAE(cfg)
    with torch.no_grad():
        out.W_enc.copy_(torch.cat([sae.W_enc, -sae.W_enc], dim=1))
        out.b_enc.copy_(torch.cat([sae.b_enc, -sae.b_enc]))
        out.W_dec.copy_(torch.cat([sae.W_dec, -sae.W_dec], dim=0))
        out.b_dec.copy_(sae.b_dec)
    return out.train(sae.training)


def fold(z2: torch.Tensor) -> torch.Tensor:
    """The AbsTopK code of a doubled code: z = z'[:P] − z'[P:].  shape: z2 [..., 2P] -> [..., P]"""
    if z2.shape[-1] % 2:
        raise ValueError(f"a doubled code has an even number of latents; got {z2.shape[-1]}")
    P = z2.shape[-1] // 2
    return z2[..., :P] - z2[..., P:]


class TiedDoubledTopK(nn.Module):
    """TopK on 2P latents whose ± halves share P-latent parameters (module docstring).

    Parameters as an AbsTopK SAE's: ``W_enc`` [d, P], ``b_enc`` [P], ``W_dec`` [P, d], ``b_dec`` [d];
    no input scale (work in the scaled space).
    """

    def __init__(self, sae: SAE):
        super().__init__()
        self.k = sae.cfg.k
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            setattr(self, name, nn.Parameter(getattr(sae, name).detach().clone()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """shape: x [B, d] -> (z2 [B, 2P], x_hat [B, d])"""
        W_enc2 = torch.cat([self.W_enc, -self.W_enc], dim=1)
        b_enc2 = torch.cat([self.b_enc, -self.b_enc])
        W_dec2 = torch.cat([self.W_dec, -self.W_dec], dim=0)
        z2 = prox.topk((x - self.b_dec) @ W_enc2 + b_enc2, self.k)
        return z2, z2 @ W_dec2 + self.b_dec


def _dense(sae: SAE):
    """x -> (z, x_hat) of an SAE on the dense reference path, in its scaled space."""
    def f(x):
        out = sae.forward_train(x)
        return out.z, out.x_hat
    return f


def compare_training(x: torch.Tensor, d_sae: int, k: int, *, n_steps: int = 1000, batch_size: int = 256,
                     lr: float = 1e-3, seed: int = 0, log_every: int = 20) -> dict:
    """Train from one initialisation: AbsTopK (P latents), the tied doubled TopK, the untied
    doubled TopK (2P latents started at [D, −D]), and a TopK with 2P random latents.

    One loop for all: Adam on the mean squared error, unit-norm decoder rows after each step,
    same batches (no AuxK, no schedule, no input scale), so the only differences are the models.
    Returns ``{"steps": [...], "fvu": {name: [...]}, "activation": {name: the model's activation (the
    tied doubled model is a TopK)}, "max_abs_diff_tied": [...] (|x̂_tied − x̂_abstopk|
    on the batch), "antipodal_cos": [...] (untied: mean cos(W_dec'[i], −W_dec'[P+i])),
    "both_used": [...] (untied: share of pairs whose + and − latents both fired on the logged batch)}``.
    shape: x [N, d]
    """
    if x.ndim != 2:
        raise ValueError(f"x must be [N, d]; got shape {tuple(x.shape)}")
    d = x.shape[1]
    base = SAE(SAEConfig(d_in=d, d_sae=d_sae, activation="abstopk", k=k, seed=seed, device="cpu", dtype=str(x.dtype).split(".")[-1]))
    with torch.no_grad():
        base.b_dec.copy_(x.mean(0))
    base.fast = False
    untied = doubled_topk(base)
    untied.fast = False
    random2 = SAE(SAEConfig(d_in=d, d_sae=2 * d_sae, activation="topk", k=k, seed=seed + 1, device="cpu", dtype=base.cfg.dtype))
    with torch.no_grad():
        random2.b_dec.copy_(x.mean(0))
    tied = TiedDoubledTopK(base)
    models = {"abstopk": (base, _dense(base)), "tied_doubled_topk": (tied, tied),
              "untied_doubled_topk": (untied, _dense(untied)), "topk_2P_random": (random2, _dense(random2))}
    opts = {name: torch.optim.Adam(m.parameters(), lr=lr) for name, (m, _) in models.items()}
    gen = torch.Generator().manual_seed(seed)
    hist = {"steps": [], "fvu": {name: [] for name in models}, "max_abs_diff_tied": [], "antipodal_cos": [], "both_used": [],
            "activation": {"abstopk": base.cfg.activation, "tied_doubled_topk": untied.cfg.activation,
                           "untied_doubled_topk": untied.cfg.activation, "topk_2P_random": random2.cfg.activation}}
    for step in range(n_steps + 1):
        xb = x[torch.randint(0, len(x), (batch_size,), generator=gen)]
        outs = {name: f(xb) for name, (_, f) in models.items()}
        if step % log_every == 0 or step == n_steps:  # the state before this step's update
            hist["steps"].append(step)
            for name in models:
                hist["fvu"][name].append(metrics.fvu(xb, outs[name][1].detach()))
            hist["max_abs_diff_tied"].append(float((outs["tied_doubled_topk"][1] - outs["abstopk"][1]).detach().abs().max()))
            W = untied.W_dec.detach()
            hist["antipodal_cos"].append(float(nn.functional.cosine_similarity(W[:d_sae], -W[d_sae:], dim=1).mean()))
            fired = (outs["untied_doubled_topk"][0].detach() != 0).any(0)
            hist["both_used"].append(float((fired[:d_sae] & fired[d_sae:]).double().mean()))
        if step == n_steps:
            break
        for name, (m, _) in models.items():
            loss = (outs[name][1] - xb).pow(2).sum(-1).mean()
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            with torch.no_grad():
                m.W_dec.div_(m.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return hist
