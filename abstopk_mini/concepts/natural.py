r"""The natural-text occurrence test end to end: gender words in held-out text, the all-latent scan,
and the best latent's sign accuracy, as JSON-able dicts (the ``natural`` and ``scan`` sections of
``python -m abstopk_mini concepts``).

    out = am.concepts.run_natural(sae, loaded, heldout_texts, train_texts=train_texts)
    out["natural"]["sign_accuracy"], out["scan"]["top"][0]

Steps: :func:`~abstopk_mini.concepts.occurrences.find_occurrences` on ``heldout_texts`` (at most
``max_tokens`` tokens, ``max_per_word`` occurrences per word) → split by document
(:func:`~abstopk_mini.concepts.occurrences.split_occurrences`) → :func:`~abstopk_mini.concepts.scan.scan_latents`.
The **best latent** is the scan's first (chosen on train); on the test occurrences it gets the sign
rule of :mod:`~abstopk_mini.concepts.axis` (side a iff :math:`o z_j > 0`; ``sign_accuracy``: a zero
is a coin flip, ``_strict``: wrong; balanced over the two sides), per pair and overall. The
Difference-in-Means direction of the train occurrences (side a iff :math:`x \cdot d` above the
midpoint of the train side means) is the baseline. Word counts are reported for the scanned text
and, when ``train_texts`` is given (the SAE's training text), for it too.

``choose_on="train_text"`` chooses the latent (and the DiM direction) on occurrences in
``train_texts`` (the SAE's own training text, where these words are ~10× more frequent) and tests
on **every** held-out occurrence; the two texts share no document. ``"split"`` (default) splits
the held-out occurrences by document instead.

When the text holds too few occurrences (fewer than two documents, or a side missing from the
train or test part), both sections say why in ``skipped`` instead of failing.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..lm.hooks import layer_of
from .axis import dim_direction, encode_samples, sign_accuracy
from .occurrences import GENDER_PAIRS, Occurrences, count_words, find_occurrences, split_occurrences
from .scan import scan_latents

__all__ = ["run_natural"]


def _missing_side(**parts: Occurrences) -> str | None:
    for name, occ in parts.items():
        for side, label in ((1, "side-a"), (-1, "side-b")):
            if not bool((occ.side == side).any()):
                return f"the {name} part holds no {label} occurrence"
    return None


def _pair_rows(occ: Occurrences, train: Occurrences, test: Occurrences, z_test: torch.Tensor, o: int) -> list[dict]:
    """One dict per pair: all / train / test occurrences per word and the best latent's test signs."""
    rows = []
    for a, b in occ.pairs:
        ia = torch.tensor([w == a for w in test.word], dtype=torch.bool)
        ib = torch.tensor([w == b for w in test.word], dtype=torch.bool)
        va, vb = o * z_test[ia], o * z_test[ib]
        both = bool(ia.any() and ib.any())
        rows.append({
            "pair": [a, b], "count_a": occ.counts[a], "count_b": occ.counts[b],
            "train_a": train.word.count(a), "train_b": train.word.count(b), "test_a": int(ia.sum()), "test_b": int(ib.sum()),
            "mean_sign_a": float(torch.sign(va).mean()) if ia.any() else None,
            "mean_sign_b": float(torch.sign(vb).mean()) if ib.any() else None,
            "sign_accuracy": float(sign_accuracy(va, vb)) if both else None,
        })
    return rows


def run_natural(sae, model, heldout_texts, *, pairs: Sequence[tuple[str, str]] = GENDER_PAIRS, train_texts=None,
                count_also: Sequence[str] = (), layer: int | None = None, max_tokens: int | None = 100_000,
                max_per_word: int = 200, context_length: int | None = None, test_frac: float = 0.5, seed: int = 0,
                n_top: int = 10, batch_size: int = 16, choose_on: str = "split",
                train_max_tokens: int | None = None, occurrences: tuple | None = None) -> dict:
    """The occurrence test and the scan of ``sae`` on ``heldout_texts``; returns ``{"natural", "scan"}``.

    train_texts: the SAE's training text, for ``train_text_word_counts`` of the pair words and
    ``count_also``. context_length: default the SAE's ``cfg.context_size``, else 128.
    occurrences: ``(heldout, train)`` :class:`~abstopk_mini.concepts.occurrences.Occurrences` found
    before (``train`` None for ``choose_on="split"``), to measure several SAEs of one layer on
    the same occurrences without running the model again.
    """
    if choose_on not in ("split", "train_text"):
        raise ValueError(f"choose_on={choose_on!r}; choose 'split' (held-out occurrences split by document) or "
                         "'train_text' (choose on train_texts, test on all held-out occurrences)")
    if choose_on == "train_text" and train_texts is None:
        raise ValueError("choose_on='train_text' needs train_texts (the SAE's training text); pass train_texts=...")
    layer = layer_of(sae, layer, model=model)
    context_length = context_length or getattr(sae.cfg, "context_size", None) or 128
    given_held, given_train = occurrences if occurrences is not None else (None, None)
    occ = given_held if given_held is not None else find_occurrences(
        model, heldout_texts, pairs, layer, context_length=context_length, max_tokens=max_tokens,
        max_per_word=max_per_word, batch_size=batch_size, seed=seed)
    natural = {"layer": layer, "context_length": context_length, "max_tokens": max_tokens, "max_per_word": max_per_word,
               "n_docs": occ.n_docs, "n_tokens": occ.n_tokens, "n_occurrences": len(occ), "word_counts": occ.counts,
               "tokenization": occ.tokens, "tokenization_issues": occ.issues}
    if train_texts is not None:
        words = list(dict.fromkeys([w for p in occ.pairs for w in p] + [w.lower() for w in count_also]))
        natural["train_text_word_counts"] = count_words(train_texts, words)
    why = None if len(occ.doc.unique()) >= 2 else f"occurrences in {len(occ.doc.unique())} document(s); 2 are needed"
    why = why or _missing_side(scanned=occ)
    if why is None and choose_on == "train_text":
        train = given_train if given_train is not None else find_occurrences(
            model, train_texts, pairs, layer, context_length=context_length, max_tokens=train_max_tokens,
            max_per_word=max_per_word, batch_size=batch_size, seed=seed)
        test, test_frac = occ, 1.0
        why = _missing_side(train=train, test=test)
    elif why is None:
        train, test = split_occurrences(occ, test_frac, seed)
        why = _missing_side(train=train, test=test)
    if why is not None:
        return {"natural": {**natural, "skipped": why}, "scan": {"skipped": why}}

    scan = scan_latents(sae, train, test)
    j = int(scan.order[0])
    o = int(scan.orientation[j])
    z = encode_samples(sae, test.acts)[1][:, j].double()
    a, b = test.side == 1, test.side == -1
    d = dim_direction(train.acts[train.side == 1], train.acts[train.side == -1])
    proj = lambda occ_part: occ_part.acts.double() @ d  # noqa: E731
    mid = float((proj(train)[train.side == 1].mean() + proj(train)[train.side == -1].mean()) / 2)
    p_test = proj(test)
    natural.update({
        "n_train": len(train), "n_test": len(test), "test_frac": test_frac, "seed": seed, "choose_on": choose_on,
        "best_latent": j, "orientation": o,
        "sign_accuracy": float(sign_accuracy(z[a], z[b], o)),
        "sign_accuracy_strict": float(sign_accuracy(z[a], z[b], o, "wrong")),
        "pair_share": float(scan.pair_share_test[j]), "occurrence_share": float(scan.occurrence_share_test[j]),
        "dim_test_accuracy": float(((p_test[a] > mid).double().mean() + (p_test[b] < mid).double().mean()) / 2),
        "pairs": _pair_rows(occ, train, test, z, o),
    })
    return {"natural": natural, "scan": scan.summary(n_top)}
