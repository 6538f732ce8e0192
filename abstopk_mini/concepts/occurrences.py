r"""Gender words in natural text: where they occur, how often, and the residual stream there.

The template test (:func:`~abstopk_mini.concepts.words.run_concepts`) reads kinship words in
made-up sentences; many of them are rare in training text. This module reads the **frequent**
gender words where they really occur, in held-out documents:

    counts = am.concepts.count_words(texts, ["he", "she"])          # {"he": 72, "she": 14}
    occ = am.concepts.find_occurrences(loaded, texts, GENDER_PAIRS, layer=6)
    train, test = am.concepts.split_occurrences(occ, test_frac=0.5, seed=0)

Whole words
-----------
A word occurs where it matches case-insensitively with no letter, digit or ``_`` on either side
(:func:`word_pattern`): ``He``, ``he's``, ``Mr.`` and ``women's`` count, ``heat`` and ``hers`` do
not. Each document is tokenised once (with character offsets; a fast tokenizer is needed) and cut
into chunks of ``context_length − 1`` tokens with BOS in front, as the harvest does, so every
token sees the context it sees in training. An occurrence is read at the **last token** that
overlaps the word. Per word, every occurrence is counted, and these are tallied as
``issues``: ``multi_token`` (the word spans several tokens, e.g. a rare word or a capitalised
one), ``merges_before`` / ``merges_after`` (a token of the word also covers other letters: the
read token is not the word's own) and ``chunk_boundary`` (the word's tokens straddle two chunks).

"her" is both the object (him/her) and the possessive (his/her) form; without a parser the two
cannot be told apart, so :data:`GENDER_PAIRS` holds both pairs and every "her" is read as the
female side of both.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..lm.checks import check_layer
from ..lm.hooks import pad, require_loaded, residual_stream

__all__ = ["GENDER_PAIRS", "gender_lexicon", "word_pattern", "count_words", "Occurrences", "find_occurrences",
           "split_occurrences"]

#: frequent (male, female) word pairs; "her" appears twice (object and possessive, see the module docstring)
GENDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("he", "she"), ("his", "her"), ("him", "her"), ("himself", "herself"), ("man", "woman"), ("men", "women"),
    ("boy", "girl"), ("boys", "girls"), ("father", "mother"), ("son", "daughter"), ("brother", "sister"),
    ("king", "queen"), ("mr", "mrs"), ("husband", "wife"), ("sir", "madam"), ("uncle", "aunt"),
    ("nephew", "niece"), ("grandfather", "grandmother"),
)

ISSUE_KINDS = ("multi_token", "merges_before", "merges_after", "chunk_boundary")


def gender_lexicon(pairs: Sequence[tuple[str, str]] = GENDER_PAIRS) -> dict[str, frozenset[str]]:
    """``{"male": first words, "female": second words}`` of ``pairs``, lower-cased."""
    pairs = _check_pairs(pairs)
    return {"male": frozenset(a for a, _ in pairs), "female": frozenset(b for _, b in pairs)}


def _check_pairs(pairs) -> list[tuple[str, str]]:
    if isinstance(pairs, str) or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
        raise TypeError("pairs must be a sequence of (side-a word, side-b word) tuples, e.g. [('he', 'she')]")
    out = [(a.strip().lower(), b.strip().lower()) for a, b in pairs]
    if not out or any(not w for p in out for w in p):
        raise ValueError(f"pairs must be non-empty and hold non-empty words; got {list(pairs)[:3]!r}")
    both = {a for a, _ in out} & {b for _, b in out}
    if both:
        raise ValueError(f"pairs put {sorted(both)} on both sides; a word must belong to one side")
    return out


def word_pattern(words: Sequence[str]) -> re.Pattern:
    """One regex matching any of ``words`` as a whole word, case-insensitively (longest first);
    group 1 is the matched text."""
    if isinstance(words, str):
        raise TypeError("words must be a list of strings, not one str; wrap it: [word]")
    words = sorted({w.strip().lower() for w in words}, key=lambda w: (-len(w), w))
    if not words or not all(words):
        raise ValueError(f"words must hold at least one non-empty word; got {words!r}")
    return re.compile(r"(?<!\w)(" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE)


def _text(doc) -> str:
    text = getattr(doc, "text", doc)
    if not isinstance(text, str):
        raise TypeError(f"texts must hold str or Document; got {type(doc).__name__}")
    return text


def count_words(texts, words: Sequence[str]) -> dict[str, int]:
    """Whole-word, case-insensitive counts of ``words`` in ``texts`` (str or Document), in the
    order of ``words`` (lower-cased, duplicates once)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings or Documents, not one str; wrap it: [text]")
    pattern = word_pattern(words)
    counts = dict.fromkeys((w.strip().lower() for w in words), 0)
    for doc in texts:
        for m in pattern.finditer(_text(doc)):
            counts[m.group(1).lower()] += 1
    return counts


@dataclass
class Occurrences:
    """Residual-stream activations at kept occurrences of the words of ``pairs``, and where they are.

    shape: acts [n, d_model] float32; side [n] long (+1 = side a, the first word of a pair; −1 =
    side b); doc [n] long (index into the texts); pos [n] long (position in its chunk, BOS = 0);
    window [n, 2w + 1] long (token ids at pos − w .. pos + w in the chunk, −1 outside it or at
    BOS); word, context: n strings (the lower-cased word; the text around it with the word in
    ``[[ ]]``). counts: every occurrence found per word (before the ``max_per_word`` cap);
    issues: ``{word: {kind: count}}`` over all occurrences; tokens: how each word tokenises after a
    space; n_tokens, n_docs: tokens and documents scanned.
    """

    acts: torch.Tensor
    side: torch.Tensor
    doc: torch.Tensor
    pos: torch.Tensor
    window: torch.Tensor
    word: list[str]
    context: list[str]
    pairs: list[tuple[str, str]]
    layer: int
    counts: dict[str, int] = field(default_factory=dict)
    issues: dict[str, dict[str, int]] = field(default_factory=dict)
    tokens: dict[str, list[str]] = field(default_factory=dict)
    n_tokens: int = 0
    n_docs: int = 0

    def __len__(self) -> int:
        return len(self.word)

    def subset(self, index: torch.Tensor) -> "Occurrences":
        """The rows ``index`` (long indices or a bool mask [n]); counts and issues are kept whole."""
        index = torch.as_tensor(index)
        rows = index.nonzero().flatten() if index.dtype == torch.bool else index.long()
        pick = rows.tolist()
        return Occurrences(self.acts[rows], self.side[rows], self.doc[rows], self.pos[rows], self.window[rows],
                           [self.word[i] for i in pick], [self.context[i] for i in pick], self.pairs, self.layer,
                           self.counts, self.issues, self.tokens, self.n_tokens, self.n_docs)


def _context(text: str, start: int, end: int, chars: int) -> str:
    left, right = text[max(0, start - chars):start], text[end:end + chars]
    return " ".join(f"{left}[[{text[start:end]}]]{right}".split())


def find_occurrences(model, texts, pairs: Sequence[tuple[str, str]] = GENDER_PAIRS, layer: int = 6, *,
                     context_length: int = 128, max_per_word: int = 200, max_tokens: int | None = None,
                     window: int = 4, context_chars: int = 40, batch_size: int = 16, seed: int = 0) -> Occurrences:
    """Every whole-word occurrence of the words of ``pairs`` in ``texts``, and the residual stream
    after block ``layer`` at up to ``max_per_word`` of them per word (a seeded random choice).

    model: a :class:`~abstopk_mini.lm.models.LoadedModel`. texts: str or Document. max_tokens:
    stop after this many text tokens (BOS not counted; None = all). Only chunks holding a kept
    occurrence go through the model, so the cost grows with the occurrences, not the text.
    window: token ids kept on each side (:func:`~abstopk_mini.concepts.contexts.top_contexts` reads
    ±3 and one more to complete words cut at the edge). seed: the choice under ``max_per_word``.
    shape: -> acts [n, d_model] with n = Σ_words min(count, max_per_word)
    """
    loaded = require_loaded(model)
    check_layer(layer, loaded.info.n_layers)
    pairs = _check_pairs(pairs)
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings or Documents, not one str; wrap it: [text]")
    for name, v in (("context_length", context_length), ("max_per_word", max_per_word), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "context_length" else 1):
            raise ValueError(f"{name} must be an int >= {2 if name == 'context_length' else 1}; got {v!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0):
        raise ValueError(f"max_tokens must be None (all text) or an int >= 0; got {max_tokens!r}")
    tok = loaded.tokenizer
    side_of = {a: 1 for a, _ in pairs} | {b: -1 for _, b in pairs}
    pattern = word_pattern(list(side_of))
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    body = context_length - len(bos)
    budget = float("inf") if max_tokens is None else max_tokens
    counts = dict.fromkeys(side_of, 0)
    issues = {w: dict.fromkeys(ISSUE_KINDS, 0) for w in side_of}
    found, doc_ids, n_tokens, n_docs = [], {}, 0, 0  # found: (word, doc, last token, start, end)
    for d, doc in enumerate(texts):
        if n_tokens >= budget:
            break
        text = _text(doc)
        try:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:
            raise TypeError("find_occurrences needs a fast (Rust) tokenizer that returns offset mappings") from None
        keep = int(min(len(enc["input_ids"]), budget - n_tokens))
        ids, offsets = list(enc["input_ids"])[:keep], list(enc["offset_mapping"])[:keep]
        n_tokens, n_docs = n_tokens + keep, n_docs + 1
        starts, ends = [s for s, _ in offsets], [e for _, e in offsets]
        for m in pattern.finditer(text):
            s, e = m.span()
            first, last = bisect_right(ends, s), bisect_left(starts, e) - 1
            if last >= keep or last < first:  # past the token budget (or no token: never for real text)
                continue
            word = m.group(1).lower()
            counts[word] += 1
            kinds = issues[word]
            kinds["multi_token"] += last > first
            kinds["merges_before"] += bool(text[starts[first]:s].strip())
            kinds["merges_after"] += ends[last] > e
            kinds["chunk_boundary"] += first // body != last // body
            found.append((word, d, last, s, e))
            doc_ids.setdefault(d, (ids, text))
    kept = _cap(found, max_per_word, seed)
    acts, pos, win = _read(loaded, kept, doc_ids, bos, body, layer, window, batch_size)
    return Occurrences(
        acts=acts, side=torch.tensor([side_of[f[0]] for f in kept], dtype=torch.long),
        doc=torch.tensor([f[1] for f in kept], dtype=torch.long), pos=pos, window=win, word=[f[0] for f in kept],
        context=[_context(doc_ids[f[1]][1], f[3], f[4], context_chars) for f in kept], pairs=pairs, layer=layer,
        counts=counts, issues={w: k for w, k in issues.items() if any(k.values())},
        tokens={w: tok.convert_ids_to_tokens(tok(" " + w, add_special_tokens=False)["input_ids"]) for w in side_of},
        n_tokens=n_tokens, n_docs=n_docs)


def _cap(found: list, max_per_word: int, seed: int) -> list:
    """At most ``max_per_word`` occurrences per word (a seeded choice), in text order."""
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for word in dict.fromkeys(f[0] for f in found):
        rows = [i for i, f in enumerate(found) if f[0] == word]
        if len(rows) > max_per_word:
            rows = sorted(rows[i] for i in torch.randperm(len(rows), generator=gen)[:max_per_word].tolist())
        keep += rows
    return [found[i] for i in sorted(keep)]


def _read(loaded, kept, doc_ids, bos, body, layer, window, batch_size):
    """Run the chunks holding ``kept`` occurrences; gather x at each one's last token and its token window.

    shape: -> acts [n, d_model], pos [n], window [n, 2·window + 1]"""
    chunk_key = [(f[1], f[2] // body) for f in kept]
    chunks = list(dict.fromkeys(chunk_key))
    seqs = [bos + doc_ids[d][0][c * body:(c + 1) * body] for d, c in chunks]
    pos = torch.tensor([len(bos) + f[2] % body for f in kept], dtype=torch.long)
    row_of = {key: i for i, key in enumerate(chunks)}
    chunk = torch.tensor([row_of[k] for k in chunk_key], dtype=torch.long)
    d_model = loaded.info.d_model
    acts = torch.zeros(len(kept), d_model)
    win = torch.full((len(kept), 2 * window + 1), -1, dtype=torch.long)
    pad_id = loaded.info.pad_token_id if loaded.info.pad_token_id is not None else 0
    for s in range(0, len(seqs), batch_size):
        ids, mask = pad(seqs[s:s + batch_size], pad_id)
        x = residual_stream(loaded, ids, layer, mask).float().cpu()
        rows = ((chunk >= s) & (chunk < s + batch_size)).nonzero().flatten()
        b, p = chunk[rows] - s, pos[rows]
        acts[rows] = x[b, p]
        for k, off in enumerate(range(-window, window + 1)):
            q = p + off
            ok = (q >= len(bos)) & (q < mask[b].sum(1))
            win[rows[ok], k] = ids[b[ok], q[ok]]
    return acts, pos, win


def split_occurrences(occ: Occurrences, test_frac: float = 0.5, seed: int = 0) -> tuple[Occurrences, Occurrences]:
    """Split by document (seeded): all occurrences of a document fall on one side.
    ``round(test_frac · n_docs)`` documents (at least one, at most n_docs − 1) go to test."""
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test_frac must be in (0, 1); got {test_frac}")
    docs = occ.doc.unique()
    if len(docs) < 2:
        raise ValueError(f"the occurrences come from {len(docs)} document(s); a split by document needs >= 2: "
                         "pass more texts (or a larger max_tokens)")
    n_test = min(max(1, round(test_frac * len(docs))), len(docs) - 1)
    test_docs = docs[torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed))[:n_test]]
    is_test = torch.isin(occ.doc, test_docs)
    return occ.subset(~is_test), occ.subset(is_test)
