r"""Concept data: word pairs (the two sides of a concept), the sentence templates they are read in,
the train/test split by pair, and the sentiment sentences.

    pairs = am.concepts.load_pairs("family")      # [("boy", "girl"), ("brother", "sister"), ...]
    train, test = am.concepts.split_pairs(pairs, test_frac=0.5, seed=0)

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

Activations of these words and the end-to-end measurement: :mod:`abstopk_mini.concepts.words`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Sequence

from ..lm.corpus import gensim_file

__all__ = [
    "PAIR_SETS", "NOUN_TEMPLATES", "ADJECTIVE_TEMPLATES", "DEFAULT_TEMPLATES", "TEMPLATES",
    "NEUTRAL_WORDS", "SIDE_NAMES", "check_pairs", "load_pairs", "read_pairs_file", "split_pairs",
    "load_sentiment", "check_templates",
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


def check_pairs(pairs, where: str, names: Sequence[str] | None = None) -> list[tuple[str, str]]:
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
    out = check_pairs(pairs, str(path), [f"{path}:{n}: pair" for n in lines])
    if len(out) < 2:
        raise ValueError(f"pairs file {str(path)!r} holds {len(out)} pair(s); at least 2 are needed "
                         "(one to choose the latent, one to test it)")
    return out


def _analogy_pairs(section: str) -> list[tuple[str, str]]:
    lines = gensim_file(QUESTIONS_FILE).read_text(encoding="utf-8").splitlines()
    start = lines.index(section) + 1
    pairs = []
    for line in lines[start:]:
        if line.startswith(":"):
            break
        a, b, c, d = line.split()
        pairs += [(a, b), (c, d)]
    return check_pairs(pairs, f"{QUESTIONS_FILE} {section}")


def load_pairs(source: str | os.PathLike | Sequence = "family", *, include_pronouns: bool = False
               ) -> list[tuple[str, str]]:
    """Word pairs ``(side_a, side_b)``: a built-in set (``"family"``, ``"opposite"``), a pairs
    file path, or a list of pairs (validated). Order: first appearance in the source.
    ``include_pronouns`` only affects ``"family"`` (see the module docstring)."""
    if isinstance(source, (list, tuple)):
        return check_pairs(source, "pairs")
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
    path = gensim_file(SENTIMENT_FILE)
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
