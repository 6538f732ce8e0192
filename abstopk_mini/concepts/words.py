r"""Concept axes: does one SAE latent separate the two sides of a concept (male ↔ female), and by
its *sign*?

    pairs = am.concepts.load_pairs("family")                 # [("boy", "girl"), ("brother", "sister"), ...]
    report = am.concepts.run_concepts(sae, loaded_model, "family")   # JSON-able dict
    axis = am.concepts.evaluate_axis(sae, a_train, b_train, a_test, b_test)   # pure tensors

Data (offline, from the files shipped in ``gensim/test/test_data``)
--------------------------------------------------------------------
* ``"family"``: the ``: family`` section of ``questions-words.txt``. Each line is an analogy
  ``a b c d``; its pairs are ``(a, b)`` and ``(c, d)``, side a male, side b female (21 unique
  pairs). The pronoun pairs ``he/she`` and ``his/her`` are left out by default: the noun templates
  do not read with a pronoun ("I saw the he"), and *her* is both possessive and object, so it is
  not the counterpart of *his* in one sentence frame; ``include_pronouns=True`` keeps them (23).
* ``"opposite"``: ``: gram2-opposite``, pairs ``(word, antonym)`` (29 pairs; ``possibly /
  impossibly`` is an adverb pair in adjective templates, kept as the file has it).
* a path: a text file with one pair ``side_a side_b`` per line (whitespace-separated); blank lines
  and lines starting with ``#`` are skipped; exact repeats are skipped; a malformed line, a pair of
  equal words, or a word on both sides raises ``ValueError`` naming the line.
* sentiment: ``pang_lee_polarity.cor``, 200 movie-review sentences (100 ``__label__pos``, 100
  ``__label__neg``); :func:`load_sentiment`.

Samples
-------
Each word is put into every template (``"I saw the {} at the market."``) and read at the word's
**last token** in the residual stream (:func:`word_activations`). One **sample** is one (word,
template): activations have shape ``[n_words, n_templates, d_model]`` and every (word, template) is
classified on its own; a pair's two words in the same template are the two samples of a (pair,
template). Sentences (sentiment) are one sample each, pooled by the **mean over their tokens**
(BOS left out; ``pool="last"`` takes the last token), shape ``[n, 1, d_model]``.
Train and test are split **by pair** (:func:`split_pairs`, seeded), so no test word was seen when
choosing the latent or the Difference-in-Means direction.

Metrics: see :mod:`abstopk_mini.concepts.axis` (pure tensor functions; re-exported here).
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .axis import (  # noqa: F401  (re-exported: the public API of concepts)
    encode_samples, dim_direction, threshold_scores, sign_accuracy, best_latent, best_pair, relative_accuracy, AxisResult, evaluate_axis, sign_summary,
)

__all__ = [
    "PAIR_SETS", "NOUN_TEMPLATES", "ADJECTIVE_TEMPLATES", "DEFAULT_TEMPLATES", "TEMPLATES",
    "NEUTRAL_WORDS", "SIDE_NAMES", "BOUNDARY_ISSUES",
    "load_pairs", "read_pairs_file", "split_pairs", "load_sentiment", "check_templates",
    "TokenIssue", "WordActivations", "locate_word", "word_activations", "sentence_activations",
    "encode_samples", "dim_direction", "threshold_scores", "sign_accuracy", "best_latent", "best_pair",
    "relative_accuracy",
    "AxisResult", "evaluate_axis", "sign_summary", "run_concepts", "run_sentiment", "pair_word_activations",
]

QUESTIONS_FILE = "questions-words.txt"
SENTIMENT_FILE = "pang_lee_polarity.cor"
_SECTIONS = {"family": ": family", "opposite": ": gram2-opposite"}
PAIR_SETS = tuple(_SECTIONS)
_PRONOUN_PAIRS = {("he", "she"), ("his", "her")}

#: sentence frames for nouns, read naturally with singular and plural nouns, no gendered words
NOUN_TEMPLATES = (
    "I saw the {} at the market.",
    "We talked to the {} yesterday.",
    "Everyone waited for the {} outside the station.",
    "There is a photo of the {} on the wall.",
    "They invited the {} to dinner.",
    "The letter was addressed to the {}.",
    "Nobody had heard from the {} in years.",
    "The neighbours helped the {} with the move.",
    "A reporter asked the {} a question.",
    "The story begins with the {} near the sea.",
)
#: sentence frames for predicative adjectives (the ``opposite`` pairs)
ADJECTIVE_TEMPLATES = (
    "It was {}.",
    "That seems {} to me.",
    "They were {}.",
    "Everyone said it was {}.",
    "The answer is {}.",
    "We felt {} about the plan.",
    "The result looked {}.",
    "Most of them were {}.",
    "The whole thing was {}.",
    "I am {} now.",
)
DEFAULT_TEMPLATES = NOUN_TEMPLATES
TEMPLATES = {"family": NOUN_TEMPLATES, "opposite": ADJECTIVE_TEMPLATES}
#: words between the two sides, placed on the Difference-in-Means axis
NEUTRAL_WORDS = {
    "family": ("person", "parent", "child", "sibling", "spouse", "cousin", "grandparent",
               "grandchild", "relative", "baby", "friend", "monarch", "teacher", "doctor"),
    "opposite": (),
}
SIDE_NAMES = {"family": ("male", "female"), "opposite": ("word", "antonym"), "sentiment": ("pos", "neg")}
#: token-boundary problems: the word shares a token with the text around it
BOUNDARY_ISSUES = ("merges_before", "merges_after")


# =========================================================================== data
def _gensim_file(name: str) -> Path:
    from ..lm.corpus import gensim_data_dir

    path = gensim_data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; this gensim install has no test data (pip install gensim>=4)")
    return path


def _check_pairs(pairs, where: str, names: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Validate pairs: two different non-empty words without whitespace, no word on both sides;
    exact repeats are skipped. ``names[i]`` names pair i in errors (default ``"<where>: pair i"``)."""
    out, seen, side_of = [], set(), {}
    for i, pair in enumerate(pairs):
        at = names[i] if names is not None else f"{where}: pair {i}"
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(w, str) for w in pair)):
            raise ValueError(f"{at} is {pair!r}; each pair must be two words (side_a, side_b)")
        a, b = pair
        if not a or not b or any(c.isspace() for c in a + b):
            raise ValueError(f"{at} {tuple(pair)!r} has an empty word or a word with whitespace; "
                             "each side must be one word")
        if a == b:
            raise ValueError(f"{at} {tuple(pair)!r} has the same word on both sides")
        for word, side in ((a, "a"), (b, "b")):
            if side_of.setdefault(word, side) != side:
                raise ValueError(f"{at} {tuple(pair)!r} puts {word!r} on side {side}, but an earlier pair has "
                                 "it on the other side; a word can only belong to one side")
        if (a, b) not in seen:
            seen.add((a, b))
            out.append((a, b))
    return out


def read_pairs_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Pairs from a text file: one ``side_a side_b`` per line (``#`` comments and blank lines skipped).

    Raises ValueError naming ``path:line`` and the line for a line that is not exactly two words,
    a pair of equal words, or a word appearing on both sides.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {str(path)!r} does not exist; pass a file of 'side_a side_b' "
                                f"lines or one of the built-in sets {PAIR_SETS}")
    pairs, lines = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        words = text.split()
        if len(words) != 2:
            raise ValueError(f"{path}:{lineno}: expected two words 'side_a side_b' separated by whitespace, "
                             f"got {line!r}; fix or remove this line (lines starting with # are comments)")
        pairs.append(tuple(words))
        lines.append(lineno)
    out = _check_pairs(pairs, str(path), [f"{path}:{n}: pair" for n in lines])
    if len(out) < 2:
        raise ValueError(f"pairs file {str(path)!r} holds {len(out)} pair(s); at least 2 are needed "
                         "(one to choose the latent, one to test it)")
    return out


def _analogy_pairs(section: str) -> list[tuple[str, str]]:
    lines = _gensim_file(QUESTIONS_FILE).read_text(encoding="utf-8").splitlines()
    start = lines.index(section) + 1
    pairs = []
    for line in lines[start:]:
        if line.startswith(":"):
            break
        a, b, c, d = line.split()
        pairs += [(a, b), (c, d)]
    return _check_pairs(pairs, f"{QUESTIONS_FILE} {section}")


def load_pairs(source: str | os.PathLike | Sequence = "family", *, include_pronouns: bool = False
               ) -> list[tuple[str, str]]:
    """Word pairs ``(side_a, side_b)``: a built-in set (``"family"``, ``"opposite"``), a pairs
    file path, or a list of pairs (validated). Order: first appearance in the source.
    ``include_pronouns`` only affects ``"family"`` (see the module docstring)."""
    if isinstance(source, (list, tuple)):
        return _check_pairs(source, "pairs")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a set name {PAIR_SETS}, a path or a list of pairs; got {type(source).__name__}")
    name = os.fspath(source)
    if name in _SECTIONS:
        pairs = _analogy_pairs(_SECTIONS[name])
        if name == "family" and not include_pronouns:
            pairs = [p for p in pairs if p not in _PRONOUN_PAIRS]
        return pairs
    if not Path(name).exists():
        raise FileNotFoundError(f"source={name!r} is neither a built-in pair set {PAIR_SETS} nor an existing file")
    return read_pairs_file(name)


def _word_groups(pairs: list) -> list[list[int]]:
    """Indices of ``pairs`` grouped so that pairs sharing a word (directly or through other pairs)
    are in one group; items that are not word pairs are groups of their own. Groups are ordered by
    their first member."""
    parent = list(range(len(pairs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, p in enumerate(pairs):
        if isinstance(p, (tuple, list)) and all(isinstance(w, str) for w in p):
            for w in p:
                j = owner.setdefault(w, i)
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(pairs)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def split_pairs(pairs: Sequence, test_frac: float = 0.5, seed: int = 0) -> tuple[list, list]:
    """Seeded split by pair: ``round(n·test_frac)`` pairs (at least 1, at most n − 1) go to test.
    Both parts keep the input order. Same pairs, fraction and seed → same split.

    No word lands on both sides: pairs that share a word (``his her`` and ``him her``) are kept
    together, as one unit of the shuffle, and test takes whole units until it holds about
    ``round(n·test_frac)`` pairs. When no pair shares a word (the built-in sets) every unit is one
    pair and the split is the plain seeded split. ValueError when all pairs hang together."""
    pairs = list(pairs)
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test_frac must be in (0, 1); got {test_frac}")
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 pairs to split into train and test; got {len(pairs)}")
    n_test = min(max(1, round(len(pairs) * test_frac)), len(pairs) - 1)
    groups = _word_groups(pairs)
    if len(groups) == len(pairs):  # no shared words: the plain split, unchanged
        order = list(range(len(pairs)))
        random.Random(seed).shuffle(order)
        test_idx = set(order[:n_test])
    else:
        if len(groups) < 2:
            raise ValueError(f"all {len(pairs)} pairs are linked by shared words (e.g. {pairs[0]!r}), so no split keeps "
                             "the test words unseen; add pairs with new words or pass separate test pairs")
        order = list(range(len(groups)))
        random.Random(seed).shuffle(order)
        test_idx: set[int] = set()
        for g in order[:-1]:  # at least one unit stays in train
            if test_idx and len(test_idx) + len(groups[g]) > n_test:
                continue
            test_idx.update(groups[g])
            if len(test_idx) >= n_test:
                break
    return ([p for i, p in enumerate(pairs) if i not in test_idx], [p for i, p in enumerate(pairs) if i in test_idx])


def load_sentiment() -> tuple[list[str], list[int]]:
    """The 200 sentences of ``pang_lee_polarity.cor``: ``(texts, labels)``, label 1 = positive.
    The file is Windows-1252 encoded (é, em dashes), and is decoded so."""
    path = _gensim_file(SENTIMENT_FILE)
    texts, labels = [], []
    for lineno, line in enumerate(path.read_text(encoding="cp1252").splitlines(), start=1):
        if not line.strip():
            continue
        tag, _, text = line.partition(" ")
        if tag not in ("__label__pos", "__label__neg") or not text.strip():
            raise ValueError(f"{path}:{lineno}: expected '__label__pos TEXT' or '__label__neg TEXT', got {line[:60]!r}")
        texts.append(text.strip())
        labels.append(int(tag == "__label__pos"))
    return texts, labels


def check_templates(templates) -> tuple[str, ...]:
    """Templates as a tuple; each must be a str holding ``{}`` exactly once (the word's slot)."""
    if isinstance(templates, str):
        raise TypeError("templates must be a list of strings, not one str; wrap it: [template]")
    templates = tuple(templates)
    if not templates:
        raise ValueError("templates is empty; pass at least one sentence with a '{}' slot")
    for i, t in enumerate(templates):
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(f"templates[{i}] = {t!r} must be a str with exactly one '{{}}' where the word goes, "
                             "e.g. 'I saw the {} at the market.'")
    return templates


# =========================================================================== activations
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
    from ..lm.activations import residual_stream

    pad = loaded.info.pad_token_id if loaded.info.pad_token_id is not None else 0
    out = []
    for s in range(0, len(seqs), batch_size):
        batch, pos = seqs[s:s + batch_size], positions[s:s + batch_size]
        T = max(len(q) for q in batch)
        ids = torch.full((len(batch), T), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        for i, q in enumerate(batch):
            ids[i, :len(q)] = torch.tensor(q)
            mask[i, :len(q)] = 1
        x = residual_stream(loaded, ids, layer, mask)
        out.append(x[torch.arange(len(batch), device=x.device), torch.tensor(pos, device=x.device)].float().cpu())
    return torch.cat(out)


def word_activations(model, words: Sequence[str], layer: int, templates=DEFAULT_TEMPLATES, *,
                     batch_size: int = 32, prepend_bos: bool = True) -> WordActivations:
    """Put each word into each template and read ``blocks.layer.hook_resid_post`` at its last token.

    model: the :class:`~abstopk_mini.lm.models.LoadedModel` of ``am.models.load_model()``.
    shape: words n, templates T -> acts [n, T, d_model]
    """
    from ..lm.activations import _require_loaded
    from ..lm.models import _check_layer

    loaded = _require_loaded(model)
    _check_layer(layer, loaded.info.n_layers)
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


def _layer_for(sae, model, layer):
    if layer is None:
        layer = sae.cfg.hook_layer
        if layer is None:
            raise ValueError("layer=None and the SAE's cfg.hook_layer is None; pass layer=<the block the SAE reads>")
    if sae.cfg.d_in != model.info.d_model:
        raise ValueError(f"the SAE reads d_in={sae.cfg.d_in} but the model's d_model is {model.info.d_model}; "
                         "pass the model the SAE was trained on")
    return layer


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
    layer = _layer_for(sae, model, layer)
    name = os.fspath(pairs) if isinstance(pairs, (str, os.PathLike)) else "custom"
    all_pairs = load_pairs(pairs, include_pronouns=include_pronouns)
    if test_pairs is not None:
        train, test = all_pairs, load_pairs(test_pairs, include_pronouns=include_pronouns)
        _check_pairs(train + test, "pairs + test_pairs")
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
    layer = _layer_for(sae, model, layer)
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
