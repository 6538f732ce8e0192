"""Labelled texts for sparse probing, offline, and each text's pooled residual and SAE code.

SAEBench probes eight hub datasets (professions in biographies, Amazon review sentiment and
category, news topics, programming and natural languages). Offline, the gensim wheel carries two
labelled sets, used here:

* ``sentiment``: ``pang_lee_polarity.cor``, 200 movie-review sentences, 100 positive, 100 negative;
* ``newsgroups``: ``mini_newsgroup``, posts from alt.atheism and sci.space (the 159 of ≥ 200
  characters after headers and quotes are stripped, :func:`abstopk_mini.lm.corpus.newsgroup_docs`).

Each class is cut to the size of the smallest (SAEBench's sets are balanced by construction), and
split into train and test texts per class (:func:`split_task`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

__all__ = ["TASKS", "Task", "load_task", "split_task", "task_tokens", "pooled", "pooled_codes"]

TASKS = ("sentiment", "newsgroups")


@dataclass(frozen=True)
class Task:
    """A labelled text set: ``texts[c]`` are the texts of class c (equal counts)."""

    name: str
    texts: dict[str, list[str]]


def load_task(name: str) -> Task:
    """One of :data:`TASKS`, classes cut to equal size (the first texts of each, in file order)."""
    if name == "sentiment":
        from ..concepts.pairs import load_sentiment

        texts, labels = load_sentiment()
        by_class = {"negative": [t for t, y in zip(texts, labels) if y == 0],
                    "positive": [t for t, y in zip(texts, labels) if y == 1]}
    elif name == "newsgroups":
        from ..lm.corpus import newsgroup_docs

        by_class = {}
        for d in newsgroup_docs():
            by_class.setdefault(d.label, []).append(d.text)
        by_class = dict(sorted(by_class.items()))
    else:
        raise ValueError(f"task must be one of {TASKS}; got {name!r}")
    n = min(len(v) for v in by_class.values())
    return Task(name, {c: v[:n] for c, v in by_class.items()})


def split_task(n_per_class: int, classes: list[str], test_share: float = 0.3, seed: int = 0
               ) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Indices of each class's train and test texts: a seeded shuffle, the first ``test_share`` to test."""
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be in (0, 1); got {test_share}")
    n_test = max(1, round(test_share * n_per_class))
    if n_test >= n_per_class:
        raise ValueError(f"{n_per_class} texts per class leave none to train on with test_share={test_share}")
    train, test = {}, {}
    for c in classes:
        order = list(range(n_per_class))
        random.Random(f"{seed}:{c}").shuffle(order)
        test[c], train[c] = sorted(order[:n_test]), sorted(order[n_test:])
    return train, test


@torch.no_grad()
def task_tokens(loaded, task: Task, layer: int, *, context_length: int = 128, batch_size: int = 16) -> dict:
    """Each class's token activations at ``layer`` (:class:`abstopk_mini.lm.activations.TokenActivations`;
    texts cut to ``context_length`` tokens, BOS included, as SAEBench cuts them; BOS left out)."""
    from ..lm.activations import token_activations

    return {c: token_activations(loaded, texts, layer, context_length=context_length, batch_size=batch_size)
            for c, texts in task.texts.items()}


@torch.no_grad()
def pooled_codes(tokens: dict, sae, chunk: int = 2048, encode=None) -> dict[str, dict[str, torch.Tensor]]:
    """Each text's mean over its tokens of the SAE code, pooled both ways from one encoding:
    ``{"signed": {class: mean z}, "abs": {class: mean |z|}}``; ``encode``: x -> codes, None: ``sae.encode``
    (e.g. :func:`abstopk_mini.saebench.evaluate.raw_codes` for codes in residual units). shape: [n_texts, d_sae] each"""
    encode = encode or (lambda x: sae.encode(x.to(sae.W_enc.dtype)))
    out = {"signed": {}, "abs": {}}
    for c, acts in tokens.items():
        n_texts = int(acts.doc.max()) + 1
        signed, absolute = torch.zeros(n_texts, sae.cfg.d_sae), torch.zeros(n_texts, sae.cfg.d_sae)
        for start in range(0, len(acts), chunk):  # [chunk, d_sae] codes at a time
            z = encode(acts.acts[start:start + chunk]).float()
            doc = acts.doc[start:start + chunk]
            signed.index_add_(0, doc, z)
            absolute.index_add_(0, doc, z.abs())
        count = torch.bincount(acts.doc, minlength=n_texts).clamp(min=1)[:, None]
        out["signed"][c], out["abs"][c] = signed / count, absolute / count
    return out


def pooled(tokens: dict, sae=None, codes: str = "signed") -> dict[str, torch.Tensor]:
    """Each text's mean over its tokens of the residual (``sae`` None) or of the SAE code
    (``codes="signed"``: z; ``"abs"``: |z|; :func:`pooled_codes` gives both from one encoding).
    shape: {class: [n_texts, d_model or d_sae]}"""
    from .probing import CODES, pool_by_text

    if codes not in CODES:
        raise ValueError(f"codes must be one of {CODES}; got {codes!r}")
    if sae is not None:
        return pooled_codes(tokens, sae)[codes]
    return {c: pool_by_text(acts.acts, acts.doc, int(acts.doc.max()) + 1) for c, acts in tokens.items()}
