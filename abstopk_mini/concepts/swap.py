r"""Gender-swapped text: a training set in which female and male words are equally frequent.

Our training text is male-heavy ("he" 1,885 times, "she" 226). An SAE trained on it sees the
female side of the gender axis eight times less often, which could by itself keep a latent from
carrying both ends. **Counterfactual data augmentation** (Lu et al., 2018, arXiv:1807.11714)
removes the imbalance without inventing text: every document is kept and a copy is added with
each gender word replaced by its counterpart,

    he → she, she → he, his → her, him → her, man → woman, woman → man, mr → mrs, ...

so that over the original and its copy every pair of :data:`~abstopk_mini.concepts.occurrences.GENDER_PAIRS`
occurs equally often on both sides (``count_words`` of the two together is balanced pair by
pair, with "her" counted against "his" + "him").

    docs = am.concepts.gender_balanced(train_docs)      # [d0, swap(d0), d1, swap(d1), ...]
    am.concepts.swap_gender("He told her his plan.")     # 'She told him her plan.'

Rules (whole words as in :func:`~abstopk_mini.concepts.occurrences.word_pattern`, case kept:
``He`` → ``She``, ``MR`` → ``MRS``):

* Every word of a pair is replaced by the other word of the pair.
* "her" is both object (→ "him") and possessive (→ "his"). Without a parser we use the next
  word: "her" followed by a letter-initial word that is not in :data:`HER_OBJECT_NEXT` (a list of
  function words: *to, and, the, that, ...*) is possessive ("her father" → "his father"),
  otherwise it is an object ("told her the truth", "with her.", "her and" → "him"). This is a
  heuristic; it errs on phrases such as "her very own" (→ "him very own").
* Words outside the pairs are not changed: names, "lady", "lord", "hers" (so a predicative "his",
  as in "the book is his", becomes "her", not "hers"), and no grammatical agreement is repaired.

The copies are **interleaved** with the originals, so a harvest read in order, or shuffled within
a few shards, mixes both from its first batch. A harvest names the augmentation
(``HarvestSpec(augment="gender_swap")``) and its caller passes the transform,
:func:`text_augmentation` of that name, to :func:`abstopk_mini.runs.store.harvest_spec`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Sequence

from .occurrences import GENDER_PAIRS, _check_pairs, _text

__all__ = ["HER_OBJECT_NEXT", "swap_map", "swap_gender", "gender_balanced", "AUGMENTATIONS", "text_augmentation"]

#: words after which "her" is read as an object ("him"), not a possessive ("his")
HER_OBJECT_NEXT: frozenset[str] = frozenset("""
a about above across after again against ago all along also an and another any around as at away
back be because been before behind below beside between beyond both but by can could did do does
down during each either enough even ever every for from had has have he her here him his how i if
in into is it its just least like may me might more most much must my near neither never no nor not
now of off on once one only onto or our out over own past please rather round she should since so
some soon still such than that the their them then there these they this those though through
throughout till to together too toward towards under unless until up upon us very was we were what
when where whether which while who whom whose why will with within without would yet you your
""".split()) - {"own", "very"}  # "her own", "her very" are possessive

_WORD = re.compile(r"[A-Za-z]")


def swap_map(pairs: Sequence[tuple[str, str]] = GENDER_PAIRS) -> dict[str, str]:
    """``{word: counterpart}`` over ``pairs``, lower-case, both directions; "her" is absent (it
    depends on the next word, see the module docstring) and every male word maps to its female one."""
    pairs = _check_pairs(pairs)
    out: dict[str, str] = {}
    for male, female in pairs:
        out[male] = female
        if female != "her":
            out[female] = male
    return out


@lru_cache(maxsize=8)
def _swapper(pairs: tuple) -> tuple[dict[str, str], re.Pattern]:
    """The swap table of ``pairs`` and one pattern for all its words (built once per pair list)."""
    table = swap_map(pairs)
    words = sorted(set(table) | {w for p in pairs for w in p if w == "her"}, key=len, reverse=True)
    return table, re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, words)) + r")(?![A-Za-z0-9_])", re.I)


def _with_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _her(text: str, end: int) -> str:
    """"his" or "him" for a "her" ending at ``end`` of ``text`` (next-word rule, module docstring)."""
    nxt = re.match(r"\s*([A-Za-z]+)", text[end:])
    if nxt is None or nxt.group(1).lower() in HER_OBJECT_NEXT:
        return "him"
    return "his"


def swap_gender(text: str, pairs: Sequence[tuple[str, str]] = GENDER_PAIRS) -> str:
    """``text`` with every whole word of ``pairs`` replaced by its counterpart, case kept.

    >>> swap_gender("He gave her his hat; she thanked him. Mr. Smith's wife")
    "She gave him her hat; he thanked her. Mrs. Smith's husband"
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    table, pattern = _swapper(tuple(map(tuple, _check_pairs(pairs))))

    def repl(m: re.Match) -> str:
        w = m.group(1)
        new = _her(text, m.end()) if w.lower() == "her" else table[w.lower()]
        return _with_case(w, new)

    return pattern.sub(repl, text)


def gender_balanced(docs: Iterable, pairs: Sequence[tuple[str, str]] = GENDER_PAIRS) -> list:
    """Every document followed by its gender-swapped copy (same type: a ``str`` or a corpus
    ``Document`` with the same source). Documents with no gender word are kept once: their copy
    would be identical."""
    from dataclasses import replace

    out = []
    for d in docs:
        out.append(d)
        text = _text(d)
        swapped = swap_gender(text, pairs)
        if swapped != text:
            out.append(swapped if isinstance(d, str) else replace(d, text=swapped))
    return out


#: the training-text augmentations a harvest may name (:attr:`abstopk_mini.runs.store.HarvestSpec.augment`),
#: each a text transform (documents -> documents) that the caller hands to
#: :func:`abstopk_mini.runs.store.harvest_spec` (``augment=``); the store itself knows no concept
AUGMENTATIONS = {"gender_swap": gender_balanced}


def text_augmentation(name: str):
    """The text transform a harvest's ``augment`` names (:data:`AUGMENTATIONS`); None for ``"none"``."""
    if name == "none":
        return None
    try:
        return AUGMENTATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"augment must be one of {('none', *AUGMENTATIONS)}; got {name!r}") from None
