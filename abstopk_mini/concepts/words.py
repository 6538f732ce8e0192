r"""Concept axes: does one SAE latent separate the two sides of a concept (male ↔ female), and by
its *sign*? Word and sentence activations, and the end-to-end measurement.

    report = am.concepts.run_concepts(sae, loaded_model, "family")   # JSON-able dict
    wa = am.concepts.word_activations(loaded_model, ["king", "queen"], layer=6)

The pairs, templates and the split come from :mod:`abstopk_mini.concepts.pairs`; the metrics
are pure tensor functions in :mod:`abstopk_mini.concepts.axis`.

Samples
-------
Each word is put into every template (``"I saw the {} at the market."``) and read at the word's
**last token** in the residual stream (:func:`word_activations`). One **sample** is one (word,
template): activations have shape ``[n_words, n_templates, d_model]`` and every (word, template) is
classified on its own; a pair's two words in the same template are the two samples of a (pair,
template). Sentences (sentiment) are one sample each, pooled by the **mean over their tokens**
(BOS left out; ``pool="last"`` takes the last token), shape ``[n, 1, d_model]``.
Train and test are split **by pair** (:func:`~abstopk_mini.concepts.pairs.split_pairs`, seeded),
so no test word was seen when choosing the latent or the Difference-in-Means direction.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import torch

from ..lm.checks import check_layer
from ..lm.hooks import layer_of, pad, require_loaded, residual_stream
from .axis import evaluate_axis, sign_summary
from .pairs import (DEFAULT_TEMPLATES, NEUTRAL_WORDS, SIDE_NAMES, TEMPLATES, check_pairs, check_templates,
                    load_pairs, load_sentiment, split_pairs)

__all__ = [
    "BOUNDARY_ISSUES", "TokenIssue", "WordActivations", "locate_word", "word_activations", "sentence_activations",
    "pair_word_activations", "run_concepts", "run_sentiment",
]

#: token-boundary problems: the word shares a token with the text around it
BOUNDARY_ISSUES = ("merges_before", "merges_after")


@dataclass
class TokenIssue:
    """A word whose tokens in a template are not its own clean tokens.

    kind: ``merges_before`` (a token of the word also covers text before it), ``merges_after``
    (covers text after it: the "last token of the word" then ends past the word), or
    ``context_split`` (clean boundaries, but different tokens than the word tokenized alone,
    with the same leading whitespace).
    """

    word: str
    template: str
    kind: str
    detail: str


def locate_word(tokenizer, template: str, word: str) -> tuple[list[int], list[int], list[TokenIssue]]:
    """Token ids of ``template`` filled with ``word``, the indices of the word's tokens, and issues.

    Uses the fast tokenizer's character offsets: the word's tokens are those overlapping its
    characters; the last of them is read, even when it also covers following text (then a
    ``merges_after`` issue says so).
    """
    text = template.replace("{}", word)
    start = template.index("{}")
    end = start + len(word)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise TypeError("locate_word needs a fast (Rust) tokenizer that returns offset mappings; load the "
                        "model's tokenizer with use_fast=True") from None
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    inside = [i for i, (s, e) in enumerate(offsets) if s < end and e > start]
    if not inside:
        raise ValueError(f"word {word!r} has no token in {text!r}; the tokenizer dropped its characters")
    issues = []
    first_start, last_end = offsets[inside[0]][0], offsets[inside[-1]][1]
    if first_start < start and text[first_start:start].strip():
        issues.append(TokenIssue(word, template, "merges_before",
                                 f"token {text[first_start:offsets[inside[0]][1]]!r} also covers {text[first_start:start]!r}"))
    if last_end > end:
        issues.append(TokenIssue(word, template, "merges_after",
                                 f"last token {text[offsets[inside[-1]][0]:last_end]!r} also covers {text[end:last_end]!r}"))
    if not issues:
        lead = text[first_start:start]  # whitespace that the word's first token carries
        alone = list(tokenizer(lead + word, add_special_tokens=False)["input_ids"])
        in_context = [ids[i] for i in inside]
        if alone != in_context:
            issues.append(TokenIssue(word, template, "context_split",
                                     f"in context {tokenizer.convert_ids_to_tokens(in_context)}, alone "
                                     f"{tokenizer.convert_ids_to_tokens(alone)}"))
    return ids, inside, issues


@dataclass
class WordActivations:
    """Residual-stream activations of words in templates, at each word's last token.

    shape: acts [n_words, n_templates, d_model] float32; n_tokens [n_words, n_templates] (tokens
    the word spans in context). issues: every :class:`TokenIssue` found (none is dropped here).
    """

    acts: torch.Tensor
    words: list[str]
    templates: tuple[str, ...]
    n_tokens: torch.Tensor
    issues: list[TokenIssue]
    layer: int

    def index(self, words: Iterable[str]) -> list[int]:
        pos = {w: i for i, w in enumerate(self.words)}
        return [pos[w] for w in words]

    def issue_words(self, kinds: Iterable[str] = BOUNDARY_ISSUES) -> set[str]:
        kinds = set(kinds)
        return {issue.word for issue in self.issues if issue.kind in kinds}


def _run_batches(loaded, seqs: list[list[int]], positions: list[int], layer: int, batch_size: int) -> torch.Tensor:
    """Residual stream at one position per sequence.  shape: n sequences -> [n, d_model]"""
    pad_id = loaded.info.pad_token_id if loaded.info.pad_token_id is not None else 0
    out = []
    for s in range(0, len(seqs), batch_size):
        batch, pos = seqs[s:s + batch_size], positions[s:s + batch_size]
        ids, mask = pad(batch, pad_id)
        x = residual_stream(loaded, ids, layer, mask)
        out.append(x[torch.arange(len(batch), device=x.device), torch.tensor(pos, device=x.device)].float().cpu())
    return torch.cat(out)


def word_activations(model, words: Sequence[str], layer: int, templates=DEFAULT_TEMPLATES, *,
                     batch_size: int = 32, prepend_bos: bool = True) -> WordActivations:
    """Put each word into each template and read ``blocks.layer.hook_resid_post`` at its last token.

    model: the :class:`~abstopk_mini.lm.models.LoadedModel` of ``am.models.load_model()``.
    shape: words n, templates T -> acts [n, T, d_model]
    """
    loaded = require_loaded(model)
    check_layer(layer, loaded.info.n_layers)
    templates = check_templates(templates)
    if isinstance(words, str):
        raise TypeError("words must be a list of strings, not one str; wrap it: [word]")
    words = list(dict.fromkeys(words))
    bad = [w for w in words if not isinstance(w, str) or not w.strip()]
    if bad:
        raise ValueError(f"words holds empty or non-string entries {bad[:3]!r}; pass non-empty strings")
    bos = [loaded.tokenizer.bos_token_id] if prepend_bos and loaded.tokenizer.bos_token_id is not None else []
    seqs, positions, n_tokens, issues = [], [], [], []
    for w in words:
        for t in templates:
            ids, inside, found = locate_word(loaded.tokenizer, t, w)
            seqs.append(bos + ids)
            positions.append(len(bos) + inside[-1])
            n_tokens.append(len(inside))
            issues += found
    acts = _run_batches(loaded, seqs, positions, layer, batch_size)
    return WordActivations(acts.reshape(len(words), len(templates), -1), words, templates,
                           torch.tensor(n_tokens).reshape(len(words), len(templates)), issues, layer)


def sentence_activations(model, texts: Sequence[str], layer: int, *, pool: str = "mean",
                         context_length: int = 128, batch_size: int = 16) -> torch.Tensor:
    """One vector per text: the mean over its tokens (``pool="mean"``, BOS left out) or its last
    token (``pool="last"``), at ``blocks.layer.hook_resid_post``.

    shape: n texts -> [n, 1, d_model] (one "template", to match :func:`word_activations`)
    """
    from ..lm.activations import token_activations

    if pool not in ("mean", "last"):
        raise ValueError(f"pool must be 'mean' or 'last'; got {pool!r}")
    ta = token_activations(model, list(texts), layer, context_length=context_length, batch_size=batch_size)
    n = len(texts)
    if pool == "mean":
        total = torch.zeros(n, ta.acts.shape[1]).index_add_(0, ta.doc, ta.acts)
        count = torch.zeros(n).index_add_(0, ta.doc, torch.ones(len(ta.doc)))
        return (total / count[:, None]).unsqueeze(1)
    last = torch.full((n,), -1, dtype=torch.long).scatter_reduce(0, ta.doc, torch.arange(len(ta.doc)), "amax")
    return ta.acts[last].unsqueeze(1)


def _sae_info(sae) -> dict:
    c = sae.cfg
    return {"activation": c.activation, "k": c.k, "d_sae": c.d_sae, "d_in": c.d_in, "hook_layer": c.hook_layer}


def pair_word_activations(model, pairs="family", layer: int = 6, templates=None, neutral_words=None, *,
                          include_pronouns: bool = False, batch_size: int = 32) -> WordActivations:
    """Word activations of every word of ``pairs`` and the neutral words, in the set's templates:
    what :func:`run_concepts` computes, once, to pass as ``word_acts=`` for several SAEs."""
    name = os.fspath(pairs) if isinstance(pairs, (str, os.PathLike)) else "custom"
    all_pairs = load_pairs(pairs, include_pronouns=include_pronouns)
    templates = check_templates(templates if templates is not None else TEMPLATES.get(name, DEFAULT_TEMPLATES))
    words = [w for p in all_pairs for w in p]
    neutral = list(neutral_words) if neutral_words is not None else list(NEUTRAL_WORDS.get(name, ()))
    neutral = [w for w in neutral if w not in set(words)]
    return word_activations(model, words + neutral, layer, templates, batch_size=batch_size)


def run_concepts(sae, model, pairs="family", *, test_pairs=None, layer: int | None = None, templates=None,
                 test_frac: float = 0.5, seed: int = 0, neutral_words: Sequence[str] | None = None,
                 mismatch: str = "keep", token_acts: torch.Tensor | None = None, include_pronouns: bool = False,
                 batch_size: int = 32, word_acts: "WordActivations | None" = None) -> dict:
    """Measure a concept axis of ``sae`` on ``model`` end to end; returns a JSON-able dict.

    pairs: a built-in set, a pairs file or a list (:func:`load_pairs`). test_pairs: if given,
    train on all of ``pairs`` and test on these; else a seeded ``test_frac`` split of ``pairs``.
    templates: default the set's templates (:data:`TEMPLATES`), else :data:`DEFAULT_TEMPLATES`.
    layer: default ``sae.cfg.hook_layer``. neutral_words: default :data:`NEUTRAL_WORDS` of the set.
    mismatch: what to do with a pair whose word has a token-boundary issue (:data:`BOUNDARY_ISSUES`)
    in some template: ``"keep"`` (read its last overlapping token, list the issue), ``"drop"``
    (leave the pair out, listed in ``dropped_pairs``) or ``"raise"``. Issues of every kind are
    always listed in ``tokenization_issues``.
    token_acts: a token sample [N, d_in] for :func:`sign_summary` (skipped when None).
    word_acts: the :class:`WordActivations` of an earlier call (same model, layer, templates and
    words), to score several SAEs without running the model again: see :func:`pair_word_activations`.
    """
    if mismatch not in ("keep", "drop", "raise"):
        raise ValueError(f"mismatch must be 'keep', 'drop' or 'raise'; got {mismatch!r}")
    layer = layer_of(sae, layer, model=model)
    name = os.fspath(pairs) if isinstance(pairs, (str, os.PathLike)) else "custom"
    all_pairs = load_pairs(pairs, include_pronouns=include_pronouns)
    if test_pairs is not None:
        train, test = all_pairs, load_pairs(test_pairs, include_pronouns=include_pronouns)
        check_pairs(train + test, "pairs + test_pairs")
        overlap = {w for p in train for w in p} & {w for p in test for w in p}
        if overlap:
            raise ValueError(f"test_pairs share words with pairs: {sorted(overlap)[:5]}; test words must be unseen")
    else:
        train, test = split_pairs(all_pairs, test_frac, seed)
    templates = check_templates(templates if templates is not None else TEMPLATES.get(name, DEFAULT_TEMPLATES))
    neutral = list(neutral_words) if neutral_words is not None else list(NEUTRAL_WORDS.get(name, ()))
    words = [w for p in train + test for w in p]
    neutral = [w for w in neutral if w not in set(words)]
    if word_acts is not None:
        missing = [w for w in words + neutral if w not in set(word_acts.words)]
        if missing or tuple(word_acts.templates) != tuple(templates) or word_acts.layer != layer:
            raise ValueError("word_acts does not match this call (words, templates or layer differ: "
                             f"missing {missing[:5]}); pass word_acts=None to recompute")
        wa = word_acts
    else:
        wa = word_activations(model, words + neutral, layer, templates, batch_size=batch_size)
    bad = wa.issue_words()
    dropped = []
    if bad and mismatch == "raise":
        raise ValueError("words whose tokens merge with the template text: "
                         + "; ".join(f"{i.word!r} in {i.template!r} ({i.detail})" for i in wa.issues if i.kind in BOUNDARY_ISSUES)
                         + ". Change the templates or pass mismatch='keep' or 'drop'")
    if mismatch == "drop":
        dropped = [p for p in train + test if set(p) & bad]
        train = [p for p in train if not set(p) & bad]
        test = [p for p in test if not set(p) & bad]
        neutral = [w for w in neutral if w not in bad]
        if not train or not test:
            raise ValueError(f"after dropping pairs with tokenization issues ({dropped}) no train or test pair is left")
    side = lambda ps, k: wa.acts[wa.index([p[k] for p in ps])]  # noqa: E731
    axis = evaluate_axis(sae, side(train, 0), side(train, 1), side(test, 0), side(test, 1),
                         neutral_acts=wa.acts[wa.index(neutral)] if neutral else None)
    report = {
        "concept": name, "sides": list(SIDE_NAMES.get(name, ("a", "b"))), "layer": layer, "sae": _sae_info(sae),
        "templates": list(templates), "train_pairs": [list(p) for p in train], "test_pairs": [list(p) for p in test],
        "neutral_words": neutral, "mismatch": mismatch, "dropped_pairs": [list(p) for p in dropped],
        "tokenization_issues": [asdict(i) for i in wa.issues],
        **axis.to_dict(),
    }
    if token_acts is not None:
        report["sign_summary"] = sign_summary(sae, token_acts)
    return report


def run_sentiment(sae, model, *, layer: int | None = None, pool: str = "mean", test_frac: float = 0.5,
                  seed: int = 0, batch_size: int = 16) -> dict:
    """The sentiment axis (side a = positive, b = negative sentences of :func:`load_sentiment`).

    Each class is split with a seeded ``test_frac`` split; sentences are pooled per ``pool`` (see
    :func:`sentence_activations`); the sides are unpaired (``paired=False``).
    """
    layer = layer_of(sae, layer, model=model)
    texts, labels = load_sentiment()
    acts = sentence_activations(model, texts, layer, pool=pool, batch_size=batch_size)
    parts = {}
    for label in (1, 0):
        idx = [i for i, y in enumerate(labels) if y == label]
        tr, te = split_pairs(idx, test_frac, seed)
        parts[label] = (acts[tr], acts[te])
    axis = evaluate_axis(sae, parts[1][0], parts[0][0], parts[1][1], parts[0][1], paired=False)
    return {"concept": "sentiment", "sides": ["pos", "neg"], "layer": layer, "pool": pool, "sae": _sae_info(sae),
            **axis.to_dict()}
