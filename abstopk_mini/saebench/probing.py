r"""Sparse probing, as SAEBench defines it (Karvonen et al. 2025, ``sae_bench.evals.sparse_probing``).

Question: does an SAE put a concept into a *few* latents? For each class :math:`c` of a labelled
text set, one binary probe "class c or not" is trained on

* the **k latents** whose pooled code differs most between the classes on the training texts,
  :math:`\operatorname{top}_k |\bar z_{+} - \bar z_{-}|` (the mean over the positives minus the
  mean over the negatives), for k = 1, 2, 5, 20, and for comparison
* the k residual-stream channels chosen the same way, and all d residual channels.

A text is one vector: the mean of its tokens' codes (or residuals), BOS and padding left out
(:func:`pool_by_text`). The probe is logistic regression with an L2 penalty (C = 1, 1,000 iterations),
scikit-learn's, as SAEBench's ``train_sklearn_probe`` uses; the score is its accuracy on held-out
texts, averaged over the classes. High accuracy at small k means the concept sits in few latents.

Negatives are balanced the way SAEBench's ``prepare_probe_data`` draws them (:func:`one_vs_rest`):
every positive, and as many negatives, ``ceil(n_pos / (C - 1))`` from each other class, then cut to
``n_pos``; the draws come from one ``torch.Generator`` in the same order as SAEBench's calls, so
seeding it as SAEBench seeds torch gives the same samples (``tests/test_saebench_probing.py``
checks the whole chain against the installed ``sae-bench``).

Signed codes. SAEBench was written for codes ≥ 0. An AbsTopK code is signed, so a text's mean can
cancel a latent that fires with both signs. ``codes="signed"`` pools z as SAEBench does;
``codes="abs"`` pools |z| (a latent "fires" whatever its sign). Both are the same for TopK.

shape: class name -> [n_texts, F] pooled features, F = d_sae or d_model.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

__all__ = ["POSITIVE", "NEGATIVE", "one_vs_rest", "top_k_mean_diff", "fit_probe", "probe_classes",
           "sparse_probing", "pool_by_text", "CODES"]

POSITIVE, NEGATIVE = 1, 0
#: how a signed code is pooled over a text's tokens (module docstring)
CODES = ("signed", "abs")


def one_vs_rest(feats: Mapping[str, torch.Tensor], cls: str, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class ``cls`` against the others, balanced: all n positives and n negatives drawn from the
    other classes, ``ceil(n / (C - 1))`` from each, cut to n; shuffled.

    shape: feats {class: [n_c, F]} -> x [2n, F], y [2n] int (1 = ``cls``)"""
    pos = feats[cls]
    n = len(pos)
    others = [name for name in feats if name != cls]
    if not others:
        raise ValueError(f"one_vs_rest needs at least two classes; got only {cls!r}")
    per_class = math.ceil(n / len(others))
    neg = torch.cat([feats[o][torch.randperm(len(feats[o]), generator=generator)[:per_class]] for o in others])
    neg = neg[torch.randperm(len(neg), generator=generator)[:n]]
    if len(neg) != n:
        raise ValueError(f"class {cls!r} has {n} texts but the other classes only {len(neg)} to draw as negatives; "
                         "a balanced probe needs at least as many")
    x = torch.cat([pos, neg])
    y = torch.full((2 * n,), NEGATIVE, dtype=torch.int)
    y[:n] = POSITIVE
    order = torch.randperm(2 * n, generator=generator)
    return x[order], y[order]


def top_k_mean_diff(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The k features whose mean differs most between positives and negatives, ascending.

    shape: x [n, F], y [n] -> indices [k] long"""
    if not 1 <= k <= x.shape[1]:
        raise ValueError(f"k must be in 1..{x.shape[1]} (the number of features); got {k}")
    diff = (x[y == POSITIVE].mean(0) - x[y == NEGATIVE].mean(0)).abs()
    return torch.argsort(diff, descending=True)[:k].sort().values


def fit_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
              C: float = 1.0, max_iter: int = 1000):
    """Logistic regression with an L2 penalty (scikit-learn, float32 inputs); returns
    ``(probe, test accuracy)``. shape: x [n, F], y [n]"""
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(C=C, max_iter=max_iter)
    probe.fit(x_train.float().numpy(), y_train.numpy())
    accuracy = float((probe.predict(x_test.float().numpy()) == y_test.numpy()).mean())
    return probe, accuracy


def probe_classes(train: Mapping[str, torch.Tensor], test: Mapping[str, torch.Tensor], k: int | None,
                  generator: torch.Generator) -> dict[str, float]:
    """One probe per class (one-vs-rest) on the top-``k`` features (None: all of them); test accuracy
    per class. The order of draws is SAEBench's ``train_probe_on_activations``'s."""
    if list(train) != list(test):
        raise ValueError(f"train and test must hold the same classes in the same order; got {list(train)} and {list(test)}")
    accuracy = {}
    for cls in train:
        x_tr, y_tr = one_vs_rest(train, cls, generator)
        x_te, y_te = one_vs_rest(test, cls, generator)
        if k is not None:
            keep = top_k_mean_diff(x_tr, y_tr, k)
            x_tr, x_te = x_tr[:, keep], x_te[:, keep]
        accuracy[cls] = fit_probe(x_tr, y_tr, x_te, y_te)[1]
    return accuracy


def sparse_probing(train: Mapping[str, torch.Tensor], test: Mapping[str, torch.Tensor], ks: Sequence[int] = (1, 2, 5, 20),
                   *, seed: int = 42, full: bool = False) -> dict:
    """Test accuracy of the top-k probes for each k (and of the probe on every feature when ``full``):
    ``{"top_k": {k: mean over classes}, "per_class": {k: {class: accuracy}}, "full": ...}``.
    seed: the generator of the negatives' draws (SAEBench's default 42)."""
    g = torch.Generator().manual_seed(seed)
    per_class = {}
    if full:
        per_class["full"] = probe_classes(train, test, None, g)
    for k in ks:
        per_class[k] = probe_classes(train, test, k, g)
    mean = {k: sum(v.values()) / len(v) for k, v in per_class.items()}
    return {"top_k": {k: mean[k] for k in ks}, "full": mean.get("full"), "per_class": per_class}


def pool_by_text(values: torch.Tensor, text: torch.Tensor, n_texts: int) -> torch.Tensor:
    """Mean of each text's rows. shape: values [N, F], text [N] (index of the row's text) -> [n_texts, F]"""
    count = torch.bincount(text, minlength=n_texts).clamp(min=1).to(values.dtype)
    return torch.zeros(n_texts, values.shape[1], dtype=values.dtype).index_add_(0, text, values) / count[:, None]
