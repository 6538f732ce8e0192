r"""The experiments of chapters 7 and 8, built from the package's pieces.

The SAEs they study come from :func:`abstopk_mini.runs.reproduce.chapter_saes` (the reproduce
settings, so the content-addressed runs under ``$ABSTOPK_RUNS`` are reused, or trained once).

* :func:`concept_reports` — the family, opposite and sentiment axes for several SAEs, with each
  set's word activations computed once.
* :func:`preact_ranking` — the latents whose *pre-activation* sign separates the sides best on
  train pairs, with their test numbers before and after the top-k.
* :func:`latent_scale` — q, a strong but typical value of a latent: the 90th percentile of its
  non-zero :math:`|z|` on held-out tokens (the maximum is an outlier; as in ``reproduce``).
* Steering methods, each a map from a signed multiple :math:`m` (positive = towards side a) to
  an :class:`~abstopk_mini.lm.steering.Intervention`: :func:`clamp_method` (one signed latent to
  :math:`o\,m\,q`), :func:`pair_clamp_method` (a nonnegative SAE: the side-a latent to
  :math:`m q_a` for :math:`m \ge 0`, the side-b latent to :math:`|m| q_b` for :math:`m < 0`, the
  other one to 0), :func:`dim_method` (add :math:`m q\, v` with v the Difference-in-Means
  direction at the latent's decoder norm); :func:`steering_curves` and :func:`generation_rows`
  run them.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from ..concepts import words as concepts
from ..lm import steering
from ..lm.hooks import layer_of
from ..sae import SAE

__all__ = [
    "concept_reports", "latent_scale", "clamp_latents", "clamp_method",
    "pair_clamp_method", "dim_method", "steering_curves", "generation_rows", "preact_ranking",
]


def concept_reports(loaded, saes: Mapping[str, SAE], concept_names: Sequence[str] = ("family", "opposite", "sentiment"),
                    layer: int | None = None, seed: int = 0) -> tuple[dict, dict]:
    """``reports[concept][sae_name]`` (:func:`~abstopk_mini.concepts.words.run_concepts` for pair sets,
    :func:`~abstopk_mini.concepts.words.run_sentiment` for ``"sentiment"``) and the word activations of
    each pair set, computed once per set: ``(reports, word_acts)``."""
    if not saes:
        raise ValueError("saes is empty; pass a dict name -> SAE")
    first = next(iter(saes.values()))
    layer = first.cfg.hook_layer if layer is None else layer
    reports, word_acts = {}, {}
    for concept in concept_names:
        if concept == "sentiment":
            reports[concept] = {n: concepts.run_sentiment(s, loaded, layer=layer, seed=seed) for n, s in saes.items()}
            continue
        wa = concepts.pair_word_activations(loaded, concept, layer)
        word_acts[concept] = wa
        reports[concept] = {n: concepts.run_concepts(s, loaded, concept, layer=layer, seed=seed, word_acts=wa)
                            for n, s in saes.items()}
    return reports, word_acts


def preact_ranking(sae: SAE, word_acts, train_pairs, test_pairs, top: int = 5) -> list[dict]:
    """Rank latents by the train sign accuracy of their pre-activation u (orientation o chosen on
    train, zero a coin flip); for the ``top`` ones, the test numbers of u and of the code z.

    Rows: ``latent``, ``train_preact_sign`` / ``test_preact_sign`` (sign rule on o·u),
    ``test_code_sign`` (same rule on o·z: what survives the top-k), ``coverage_a`` / ``coverage_b``
    (test share with z ≠ 0), ``mean_u_a`` / ``mean_u_b`` (test means of u).
    """
    from ..concepts.axis import encode_samples, sign_accuracy

    side = lambda ps, k: word_acts.acts[word_acts.index([p[k] for p in ps])]  # noqa: E731
    flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
    (u_a, _), (u_b, _) = encode_samples(sae, side(train_pairs, 0)), encode_samples(sae, side(train_pairs, 1))
    (ut_a, zt_a), (ut_b, zt_b) = encode_samples(sae, side(test_pairs, 0)), encode_samples(sae, side(test_pairs, 1))
    acc = sign_accuracy(flat(u_a), flat(u_b))
    best = torch.maximum(acc, 1 - acc)
    rows = []
    for j in best.argsort(descending=True, stable=True)[:top].tolist():
        o = 1 if float(acc[j]) >= 0.5 else -1
        ua, ub, za, zb = flat(ut_a)[:, j], flat(ut_b)[:, j], flat(zt_a)[:, j], flat(zt_b)[:, j]
        rows.append({"latent": j, "train_preact_sign": float(best[j]), "test_preact_sign": float(sign_accuracy(ua, ub, o)),
                     "test_code_sign": float(sign_accuracy(za, zb, o)), "coverage_a": float((za != 0).double().mean()),
                     "coverage_b": float((zb != 0).double().mean()), "mean_u_a": float(ua.mean()), "mean_u_b": float(ub.mean())})
    return rows


@torch.no_grad()
def latent_scale(sae: SAE, latent: int, x: torch.Tensor, quantile: float = 0.9, batch_size: int = 4096) -> dict:
    """Statistics of ``latent`` on activations x [N, d_in]: ``q`` (the ``quantile`` of its non-zero
    |z|; 1.0 if it never fires, with ``fired=False``), ``max_abs``, ``fires_on`` (share of rows
    with z ≠ 0), ``positive`` and ``negative`` (shares of rows with z > 0, z < 0)."""
    steering.check_latent(sae, latent)
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1]; got {quantile}")
    device = sae.W_enc.device
    z = torch.cat([sae.encode(c.to(device))[:, latent].float().cpu() for c in x.reshape(-1, x.shape[-1]).split(batch_size)])
    nonzero = z[z != 0].abs()
    fired = len(nonzero) > 0
    return {"latent": latent, "q": float(nonzero.quantile(quantile)) if fired else 1.0, "quantile": quantile,
            "fired": fired, "max_abs": float(nonzero.max()) if fired else 0.0,
            "fires_on": float((z != 0).double().mean()), "positive": float((z > 0).double().mean()),
            "negative": float((z < 0).double().mean()), "n_tokens": len(z)}


def clamp_latents(sae: SAE, values: Mapping[int, float], layer: int | None = None) -> steering.Intervention:
    r"""Clamp several latents at once: :math:`x' = x + \sum_i (c_i - z_i(x))\, d_i(x)`, every
    :math:`z_i` read from the same unedited x (:func:`abstopk_mini.lm.steering.clamp_latent` for one;
    :math:`d_i(x) = \sigma(x)\,W_{dec}[i]/s` for an SAE that standardises each token, else
    :math:`W_{dec}[i]/s`)."""
    if not values:
        raise ValueError("values is empty; pass {latent: value}")
    for latent in values:
        steering.check_latent(sae, latent)
    layer = layer_of(sae, layer)
    idx = list(values)
    target = torch.tensor([float(values[i]) for i in idx])
    D = sae.W_dec[idx].detach() / sae.cfg.input_scale  # [m, d]: the rows d_i = W_dec[i] / s

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x_sae = x.to(D.device)
            z = sae.encode(x_sae)[..., idx]  # [..., m]
            delta = (target.to(z) - z) @ D
            stats = sae.input_stats(x_sae)
            if stats is not None:  # standardised: one unit of z_i moves the token by sigma(x) d_i
                delta = delta * stats[1]
        return x + delta.to(device=x.device, dtype=x.dtype)

    label = ", ".join(f"latent {i} to {float(values[i]):g}" for i in idx)
    return steering.Intervention(layer, fn, f"clamp {label}")


def clamp_method(sae: SAE, latent: int, q: float, orientation: int = 1) -> Callable[[float], steering.Intervention]:
    """m -> clamp ``latent`` to o·m·q (o = +1 if side a is the latent's positive side)."""
    o = 1 if orientation >= 0 else -1
    return lambda m: steering.clamp_latent(sae, latent, o * m * q)


def pair_clamp_method(sae: SAE, latent_a: int, latent_b: int, q_a: float, q_b: float) -> Callable[[float], steering.Intervention]:
    """m -> side-a latent to m·q_a and side-b latent to 0 (m ≥ 0), or side-a latent to 0 and
    side-b latent to |m|·q_b (m < 0): how a nonnegative SAE pushes an axis both ways."""
    if latent_a == latent_b:
        raise ValueError(f"latent_a and latent_b must differ; got {latent_a} twice")
    return lambda m: clamp_latents(sae, {latent_a: max(m, 0.0) * q_a, latent_b: max(-m, 0.0) * q_b})


def add_latent_method(sae: SAE, latent: int, q: float, orientation: int = 1, layer: int | None = None,
                      x: torch.Tensor | None = None) -> Callable[[float], steering.Intervention]:
    r"""m -> add :math:`o\,m\,q\,d_i` whatever the latent's code (no clamp, both signs): the steering
    any decoder row allows, signed SAE or not. With o = −1 and a TopK latent of side b, m > 0 moves
    *away* from side b (the negated female latent): the control for "one signed latent steers both
    ways". d_i: :func:`abstopk_mini.lm.steering.mean_decoder_direction` (x needed for a standardising SAE)."""
    o = 1 if orientation >= 0 else -1
    d = steering.mean_decoder_direction(sae, latent, x).float()
    layer = layer_of(sae, layer)
    return lambda m: steering.add_direction(d, o * m * q, layer)


def dim_method(direction: torch.Tensor, sae: SAE, latent: int, q: float, layer: int | None = None,
               x: torch.Tensor | None = None) -> Callable[[float], steering.Intervention]:
    """m -> add m·q·v, v = ``direction`` (side a − side b) at the norm of the latent's decoder
    row (:func:`abstopk_mini.lm.steering.match_norm`): the move of clamping the latent from 0 to m·q.
    x: activation rows, needed when the SAE standardises each token (the norm is then the mean over x)."""
    v = steering.match_norm(direction.float(), sae, latent, x)
    layer = layer_of(sae, layer)
    return lambda m: steering.add_direction(v, m * q, layer)


def steering_curves(loaded, methods: Mapping[str, Callable[[float], steering.Intervention]], multiples: Sequence[float],
                    prompts: Sequence[str] = steering.DEFAULT_PROMPTS, pairs=steering.DEFAULT_PAIRS) -> dict[str, dict]:
    """For every method, :func:`~abstopk_mini.lm.steering.logit_diff_curve` over the multiples m:
    label -> the curve's dict with ``multiples`` added."""
    out = {}
    for label, make in methods.items():
        curve = steering.logit_diff_curve(loaded, make, list(multiples), prompts=prompts, pairs=pairs)
        out[label] = curve.to_dict() | {"multiples": [float(m) for m in multiples]}
    return out


def generation_rows(loaded, prompts: Sequence[str], methods: Mapping[str, Callable[[float], steering.Intervention]],
                    multiples: Sequence[float], max_new_tokens: int = 15) -> list[dict]:
    """Greedy continuations: per prompt, one without intervention, then each method at each
    multiple. Rows: ``prompt``, ``method``, ``m``, ``continuation``."""
    rows = []
    for prompt in prompts:
        rows.append({"prompt": prompt, "method": "none", "m": 0.0,
                     "continuation": steering.generate_with(loaded, prompt, None, max_new_tokens)})
        for label, make in methods.items():
            for m in multiples:
                rows.append({"prompt": prompt, "method": label, "m": float(m),
                             "continuation": steering.generate_with(loaded, prompt, make(m), max_new_tokens)})
    return rows
