r"""SAEBench's targeted probe perturbation (TPP): do the latents chosen for one class move only its probe?

For each class c of a labelled set, a linear probe :math:`(w_c, b_c)` is trained on the residual
stream, mean-pooled over each text's tokens, to tell c's texts from the others' (one-vs-rest, balanced:
:func:`abstopk_mini.saebench.probing.one_vs_rest`). Each latent's **effect** on probe c is its mean pooled code on c's texts minus its
mean on the others', kept only where positive, times the alignment of its decoder direction with the
probe: :math:`e_j = \max(\bar a_j^{+} - \bar a_j^{-}, 0)\,(w_c \cdot \hat d_j)` (:func:`effects`). The
N latents of largest effect are **ablated**: each token's residual loses their contributions,
:math:`x' = x - \sum_{j \in S} a_j \hat d_j` (the SAE's error term kept, so nothing else changes), and
since pooling is a mean, the pooled residual loses the pooled contributions (:func:`ablate`).
Then every probe is tested again. TPP at N is the mean over c of c's accuracy drop minus the mean drop
of the other classes' probes (:func:`tpp_metric`): high when a class's latents carry that class and
nothing else.

The codes are in the residual stream's units, :math:`a_j \hat d_j` being latent j's contribution
(:func:`abstopk_mini.saebench.evaluate.raw_codes`), which gives SAEBench's effects and ablations for any
split of scale between codes and decoder rows. Probes are SAEBench's torch probes (AdamW, lr 1e-3,
batch 16, 20 epochs, L1 1e-3 on the weight, the epoch of best test accuracy kept, as SAEBench keeps it)
and every random draw is made in SAEBench's order from one generator, so with the same seed :func:`tpp`
reproduces ``sae_bench.evals.scr_and_tpp`` (tests/test_saebench_tpp.py).
One difference is deliberate: SAEBench zeroes the residual at the positions it masks (BOS, padding,
EOS) but ablates every position, so a masked position, whose zero input still encodes to non-zero codes
once b_dec is subtracted, adds minus its ablated contributions to the text's mean; here only a text's
own tokens are pooled, so on texts without masked positions the two agree.

SAEBench's rule ``max(·, 0)`` assumes codes ≥ 0: a signed latent that carries c by negative values has a
negative mean difference and is never chosen. The **split view** (each latent as two non-negative
latents, :func:`abstopk_mini.saebench.absorption.split_view`) lets either side be chosen and ablated
alone; for TopK the two views agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .probing import one_vs_rest

__all__ = ["TPP_N", "Probe", "train_probe", "probe_accuracy", "train_probes", "accuracies",
           "effects", "latent_effects", "top_n", "ablate", "tpp_metric", "tpp"]

#: SAEBench's numbers of ablated latents
TPP_N = (2, 5, 10, 20, 50, 100, 500)


@dataclass
class Probe:
    """A linear probe: logit = x · weight + bias. shape: weight [d], bias [1]"""

    weight: torch.Tensor
    bias: torch.Tensor

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight[None], self.bias).squeeze(-1)


def probe_accuracy(probe: Probe, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of texts the probe puts on the right side of 0."""
    return ((probe.logits(x) > 0).int() == y).float().mean().item()


def train_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                generator: torch.Generator, *, batch_size: int = 16, epochs: int = 20, lr: float = 1e-3,
                l1: float = 1e-3, patience: int = 20) -> tuple[Probe, float]:
    """SAEBench's probe: a linear layer (torch's default init, drawn from ``generator``) trained by
    AdamW on the logistic loss plus ``l1``·‖w‖₁, one shuffle per epoch; the epoch of best test
    accuracy is kept (SAEBench's choice: the test texts select the probe). Returns (probe, its test accuracy)."""
    with torch.enable_grad():
        net = torch.nn.Linear(x_train.shape[1], 1, dtype=x_train.dtype)
        with torch.no_grad():  # nn.Linear.reset_parameters, drawn from the generator
            torch.nn.init.kaiming_uniform_(net.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(x_train.shape[1])
            net.bias.uniform_(-bound, bound, generator=generator)
        opt = torch.optim.AdamW(net.parameters(), lr=lr)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        best, best_acc, stale = None, 0.0, 0
        for _ in range(epochs):
            order = torch.randperm(len(x_train), generator=generator)
            for i in range(0, len(x_train), batch_size):
                idx = order[i:i + batch_size]
                loss = loss_fn(net(x_train[idx]).squeeze(-1), y_train[idx].to(x_train.dtype))
                loss = loss + l1 * net.weight.abs().sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            probe = Probe(net.weight.detach()[0].clone(), net.bias.detach().clone())
            acc = probe_accuracy(probe, x_test, y_test)
            if acc > best_acc:
                best, best_acc, stale = probe, acc, 0
            else:
                stale += 1
            if stale >= patience:
                break
    if best is None:
        raise ValueError("the probe never classified a test text correctly; check the labels")
    return best, best_acc


def train_probes(train: dict[str, torch.Tensor], test: dict[str, torch.Tensor], generator: torch.Generator,
                 **kw) -> dict[str, Probe]:
    """One probe per class (:func:`train_probe` on one-vs-rest draws). shape: {class: [n_c, d]}"""
    probes = {}
    for c in train:
        xtr, ytr = one_vs_rest(train, c, generator)
        xte, yte = one_vs_rest(test, c, generator)
        probes[c] = train_probe(xtr, ytr, xte, yte, generator, **kw)[0]
    return probes


def accuracies(probes: dict[str, Probe], test: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, float]:
    """Each probe's accuracy on a fresh one-vs-rest draw of the test texts."""
    out = {}
    for c in probes:
        x, y = one_vs_rest(test, c, generator)
        out[c] = probe_accuracy(probes[c], x, y)
    return out


def effects(codes: dict[str, torch.Tensor], directions: torch.Tensor, probe: Probe, cls: str,
            generator: torch.Generator) -> torch.Tensor:
    """Each latent's effect on probe ``cls`` (module docstring), from a fresh one-vs-rest draw of the
    pooled codes. shape: codes {class: [n_c, F]}, directions [F, d] unit rows -> [F]"""
    x, y = one_vs_rest(codes, cls, generator)
    return latent_effects(x, y, directions, probe.weight)


def latent_effects(codes: torch.Tensor, y: torch.Tensor, directions: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    r"""SAEBench's effect of each latent on a probe: :math:`e_j = \max(\bar a_j^{+} - \bar a_j^{-}, 0)\,(w \cdot \hat d_j)`,
    the means over the texts labelled 1 and 0. shape: codes [n, F], y [n] (1 / 0), directions [F, d], weight [d] -> [F]"""
    diff = (codes[y == 1].mean(0) - codes[y == 0].mean(0)).clamp(min=0)
    return diff * (directions @ weight.to(directions.dtype))


def top_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Mask of the ``n`` largest scores, as many as there are non-zero scores when fewer (SAEBench's rule).
    As in SAEBench, when fewer than ``n`` scores are positive the mask takes zeros before negatives, and
    which zero-effect latents it takes is the order ``topk`` leaves ties in. shape: [F] -> [F] bool"""
    if n > scores.numel():
        raise ValueError(f"n = {n} is more than the {scores.numel()} latents")
    mask = torch.zeros_like(scores, dtype=torch.bool)
    m = min(n, int((scores != 0).sum()))
    if m:
        mask[scores.topk(m).indices] = True
    return mask


def ablate(x: torch.Tensor, codes: torch.Tensor, directions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pooled residuals without the masked latents' pooled contributions: x − codes[:, S] @ directions[S].
    shape: x [n, d], codes [n, F], directions [F, d], mask [F] -> [n, d]"""
    return x - codes[:, mask].to(x.dtype) @ directions[mask].to(x.dtype)


def tpp_metric(ablated: dict[str, dict[int, dict[str, float]]], clean: dict[str, float]) -> dict:
    """SAEBench's TPP numbers from ``ablated[c][n][e]`` (probe e's accuracy once c's top n are ablated)
    and the clean accuracies: per n, ``total`` = mean over c of (c's drop − mean drop of the others),
    with its two parts ``intended`` and ``unintended``; and the same per class."""
    per_class = {}
    for c in clean:
        per_class[c] = {}
        for n, acc in ablated[c].items():
            intended = clean[c] - acc[c]
            unintended = sum(clean[e] - acc[e] for e in clean if e != c) / (len(clean) - 1)
            per_class[c][n] = {"total": intended - unintended, "intended": intended, "unintended": unintended}
    ns = next(iter(per_class.values())).keys()
    overall = {n: {part: sum(per_class[c][n][part] for c in clean) / len(clean) for part in ("total", "intended", "unintended")}
               for n in ns}
    return {"overall": overall, "per_class": per_class}


def tpp(x_train: dict[str, torch.Tensor], x_test: dict[str, torch.Tensor], codes_train: dict[str, torch.Tensor],
        codes_test: dict[str, torch.Tensor], directions: torch.Tensor, ns: Sequence[int] = TPP_N, *,
        seed: int = 42, **probe_kw) -> dict:
    """TPP for one SAE (module docstring), every draw in SAEBench's order from one generator seeded with
    ``seed`` (SAEBench draws the same numbers from torch's global generator after ``torch.manual_seed(seed)``).

    shape: x_* {class: [n, d]} pooled residuals, codes_* {class: [n, F]} pooled codes (residual units),
    directions [F, d] unit decoder rows -> {"clean": {class: acc}, "overall": {n: ...}, "per_class": ...}"""
    if len(x_train) < 3:
        raise ValueError(f"TPP needs at least 3 classes (with 2, one class's probe mirrors the other's); got {list(x_train)}")
    g = torch.Generator().manual_seed(seed)
    probes = train_probes(x_train, x_test, g, **probe_kw)
    clean = accuracies(probes, x_test, g)
    scores = {c: effects(codes_train, directions, probes[c], c, g) for c in probes}
    ablated = {}
    for c in probes:
        ablated[c] = {}
        for n in ns:
            mask = top_n(scores[c], n)
            moved = {e: ablate(x_test[e], codes_test[e], directions, mask) for e in x_test}
            ablated[c][n] = accuracies(probes, moved, g)
    return {"clean": clean} | tpp_metric(ablated, clean)
