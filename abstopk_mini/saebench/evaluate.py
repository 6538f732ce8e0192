"""SAEBench's sparse probing and feature absorption for one SAE, from data prepared once per model and layer.

    data = letter_data(loaded, layer=6, n_words=4000, seed=0)      # words, prompts, residuals, letter probe
    absorption(sae, data, view="split")                            # {"mean_absorption_fraction": ..., ...}
    tokens = {t: task_tokens(loaded, load_task(t), 6) for t in TASKS}
    probing(sae, tokens, ks=(1, 2, 5, 20), splits=5)               # {task: {"sae": {k: accuracy}, ...}}
    tpp(sae, tokens, view="split", splits=5)                       # {"overall": {n: {"total": ...}}, ...}

Both preparations depend only on the model and layer, so several SAEs are scored on the same words,
prompts and texts.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Sequence

import torch

from . import first_letter as FL
from .absorption import aggregate, absorption_scores, split_view

__all__ = ["LetterData", "letter_data", "raw_codes", "absorption", "probing", "tpp", "tpp_classes", "tpp_inputs", "VIEWS"]

#: how a signed SAE's codes enter absorption: as they are (SAEBench), or each latent as two non-negative sides
VIEWS = ("signed", "split")


@dataclass
class LetterData:
    """The first-letter task on one model and layer (:mod:`abstopk_mini.saebench.first_letter`).

    shape: x_train [n_train, d], x_test [n_test, d], y_* [n] letters, probe_W [26, d], probe_b [26];
    x_absorb [n_tp, d]: each test word the probe gets right, in a freshly drawn prompt; y_absorb [n_tp]."""

    layer: int
    train_words: list[str]
    test_words: list[str]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    probe_W: torch.Tensor
    probe_b: torch.Tensor
    probe_f1: list[float]
    x_absorb: torch.Tensor
    y_absorb: torch.Tensor
    settings: dict


def letter_data(loaded, layer: int, *, n_words: int | None = 4000, seed: int = 0, icl_examples: int = 10,
                batch_size: int = 32) -> LetterData:
    """Words, prompts (``icl_examples`` solved examples each, SAEBench's 10) and residuals of the
    first-letter task, and the letter probe trained on them."""
    words = FL.alpha_tokens(loaded.tokenizer)
    train_words, test_words = FL.split_words(words, n_words, seed)
    rng = random.Random(seed)
    prompts_train = [FL.icl_prompt(w, train_words, rng, icl_examples) for w in train_words]
    prompts_test = [FL.icl_prompt(w, test_words, rng, icl_examples) for w in test_words]
    x_train = FL.word_residuals(loaded, prompts_train, layer, batch_size=batch_size)
    x_test = FL.word_residuals(loaded, prompts_test, layer, batch_size=batch_size)
    y_train = torch.tensor([FL.letter_index(w) for w in train_words])
    y_test = torch.tensor([FL.letter_index(w) for w in test_words])
    W, b = FL.train_probe(x_train, y_train, seed=seed)
    logits = x_test @ W.T + b
    f1 = [FL.f1_score(logits[:, i] > 0, y_test == i) for i in range(26)]
    right = (logits[torch.arange(len(y_test)), y_test] > 0)
    tp_words = [w for w, ok in zip(test_words, right.tolist()) if ok]
    prompts_absorb = [FL.icl_prompt(w, words, rng, icl_examples) for w in tp_words]  # a fresh prompt per word, examples from every word
    x_absorb = FL.word_residuals(loaded, prompts_absorb, layer, batch_size=batch_size)
    settings = {"n_alpha_tokens": len(words), "n_words": n_words, "n_train": len(train_words), "n_test": len(test_words),
                "seed": seed, "template": FL.TEMPLATE, "icl_examples": icl_examples, "word_position": FL.WORD_POSITION}
    return LetterData(layer, train_words, test_words, x_train, y_train, x_test, y_test, W, b, f1, x_absorb,
                      y_test[right], settings)


@torch.no_grad()
def raw_codes(sae, x: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    r"""The SAE's codes in the units SAEBench's absorption rules assume: decoder rows of unit norm in the
    residual stream's own space, :math:`a_j = z_j \, \|W_{dec,j}\| \, \sigma(x) / s` (:math:`s` the input
    scale, :math:`\sigma(x)` the token's standard deviation when the SAE standardises its input, else 1), so
    that :math:`a_j \cos(\hat p, W_{dec,j})` is latent j's contribution to :math:`x \cdot \hat p`.
    Training keeps our rows at unit norm and scales the input; an SAE saved for SAELens folds the scale
    into the rows (norms 1/s): both give the same a. shape: x [n, d_in] -> [n, d_sae] float32"""
    norms = sae.W_dec.detach().float().norm(dim=1) / sae.cfg.input_scale
    out = []
    for i in range(0, len(x), chunk):
        xi = x[i:i + chunk].to(sae.W_enc.dtype)
        a = sae.encode(xi).float() * norms
        stats = sae.input_stats(xi)
        out.append(a * stats[1].float() if stats is not None else a)
    return torch.cat(out)


def absorption(sae, data: LetterData, view: str = "signed", *, seed: int = 0) -> dict:
    """The SAE's absorption scores on ``data`` (:mod:`abstopk_mini.saebench.absorption`), its codes in
    raw-space units (:func:`raw_codes`).
    view: ``"signed"`` (codes as they are, SAEBench's rules) or ``"split"`` (:func:`split_view`)."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}; got {view!r}")
    W_dec = sae.W_dec.detach().float()
    z_train, z_test, z_absorb = (raw_codes(sae, x) for x in (data.x_train, data.x_test, data.x_absorb))
    if view == "split":
        z_train, z_test = split_view(z_train, W_dec)[0], split_view(z_test, W_dec)[0]
        z_absorb, W_dec = split_view(z_absorb, W_dec)
    weights = FL.sparse_probe_weights(z_train, data.y_train, seed=seed)
    mains = FL.main_latents(FL.k_sparse_f1(z_train, data.y_train, z_test, data.y_test, weights))
    rows = []
    for i, m in enumerate(mains):
        mask = data.y_absorb == i
        fraction, full = absorption_scores(data.x_absorb[mask], z_absorb[mask], W_dec, data.probe_W[i], m["main"])
        rows.append({"letter": m["letter"], "probe_f1": data.probe_f1[i], "fractions": fraction.tolist(),
                     "full": full.tolist(), "n_split": m["k"], "main": m["main"], "main_f1": m["f1"]})
    out = aggregate(rows)
    for r, row in zip(out["letters"], rows):
        r.update(main=row["main"], main_f1=row["main_f1"])
    return out | {"view": view}


def probing(sae, tokens: dict, ks: Sequence[int] = (1, 2, 5, 20), *, splits: int = 5, test_share: float = 0.3,
            seed: int = 42) -> dict:
    """Sparse probing on each task of ``tokens`` ({task: task_tokens(...)}): test accuracy at each k for
    the SAE's codes (signed and |z|) and for the residual stream, the mean and standard deviation
    over ``splits`` train/test splits of the texts (split s uses seed s; the negatives' draws ``seed``)."""
    from .probing import sparse_probing
    from .texts import pooled, pooled_codes, split_task

    out = {}
    for task, toks in tokens.items():
        codes = pooled_codes(toks, sae)
        feats = {"residual": pooled(toks), "sae": codes["signed"], "sae_abs": codes["abs"]}
        classes = list(toks)
        n = len(feats["residual"][classes[0]])
        runs = {name: [] for name in feats}
        for s in range(splits):
            train_idx, test_idx = split_task(n, classes, test_share, seed=s)
            for name, f in feats.items():
                train = {c: f[c][train_idx[c]] for c in classes}
                test = {c: f[c][test_idx[c]] for c in classes}
                runs[name].append(sparse_probing(train, test, ks, seed=seed, full=name == "residual"))
        task_out = {"classes": classes, "texts_per_class": n, "test_share": test_share, "splits": splits}
        for name, results in runs.items():
            task_out[name] = {str(k): _mean_sd([r["top_k"][k] for r in results]) for k in ks}
            if name == "residual":
                task_out[name]["full"] = _mean_sd([r["full"] for r in results])
        out[task] = task_out
    return out


def tpp_classes(tokens: dict) -> dict:
    """Every task's classes as one labelled set for TPP, ``"task:class"`` -> token activations
    (TPP needs three or more classes; each task offline has two)."""
    return {f"{task}:{c}": acts for task, classes in tokens.items() for c, acts in classes.items()}


def tpp_inputs(sae, tokens: dict, view: str = "signed") -> tuple[dict, dict, torch.Tensor]:
    """What TPP reads, from all tasks' classes together (:func:`tpp_classes`), every class cut to the
    smallest one's texts: each text's pooled residual, its pooled code in residual units (:func:`raw_codes`;
    view ``"split"``: the means of z⁺ and z⁻, from the pooled z and |z|) and the unit decoder directions.
    shape: -> x {class: [n, d]}, codes {class: [n, F or 2F]}, directions [F or 2F, d]"""
    from .texts import pooled, pooled_codes

    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}; got {view!r}")
    toks = tpp_classes(tokens)
    x, raw = pooled(toks), pooled_codes(toks, sae, encode=lambda a: raw_codes(sae, a))
    n = min(len(v) for v in x.values())
    W = sae.W_dec.detach().float()
    dirs = W / W.norm(dim=1, keepdim=True)
    if view == "signed":
        codes = {c: raw["signed"][c][:n] for c in x}
    else:  # mean of z⁺ = (|z| + z) / 2 and of z⁻ = (|z| - z) / 2
        codes = {c: torch.cat([raw["abs"][c] + raw["signed"][c], raw["abs"][c] - raw["signed"][c]], 1)[:n] / 2 for c in x}
        dirs = torch.cat([dirs, -dirs])
    return {c: v[:n] for c, v in x.items()}, codes, dirs


def tpp(sae, tokens: dict, view: str = "signed", ns: Sequence[int] | None = None, *, splits: int = 5,
        test_share: float = 0.3, seed: int = 42) -> dict:
    """SAEBench's TPP (:mod:`abstopk_mini.saebench.tpp`) on all tasks' classes together (:func:`tpp_inputs`):
    the mean and standard deviation over ``splits`` train/test splits of the texts (split s uses seed s;
    the probes and draws ``seed``, SAEBench's 42), at each N of ``ns`` (None: SAEBench's, up to the SAE's
    width). View ``"signed"`` (SAEBench's rule on z as it is) or ``"split"``."""
    from . import tpp as T
    from .texts import split_task

    ns = tuple(n for n in T.TPP_N if n <= sae.cfg.d_sae) if ns is None else tuple(ns)  # SAEBench's N up to the width
    x, codes, dirs = tpp_inputs(sae, tokens, view)
    n = len(next(iter(x.values())))
    runs = []
    for s in range(splits):
        train_idx, test_idx = split_task(n, list(x), test_share, seed=s)
        part = lambda f, idx: {c: f[c][idx[c]] for c in x}  # noqa: E731
        runs.append(T.tpp(part(x, train_idx), part(x, test_idx), part(codes, train_idx), part(codes, test_idx), dirs, ns, seed=seed))
    overall = {str(m): {p: _mean_sd([r["overall"][m][p] for r in runs]) for p in ("total", "intended", "unintended")} for m in ns}
    per_class = {c: {str(m): _mean_sd([r["per_class"][c][m]["total"] for r in runs]) for m in ns} for c in x}
    clean = {c: _mean_sd([r["clean"][c] for r in runs]) for c in x}
    return {"view": view, "classes": list(x), "texts_per_class": n, "test_share": test_share, "splits": splits,
            "clean_accuracy": clean, "overall": overall, "per_class_total": per_class}


def _mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
