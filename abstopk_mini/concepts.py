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

Metrics (:func:`evaluate_axis`; test numbers are on the test split)
-------------------------------------------------------------------
Every ``*_accuracy`` is a **per-word, absolute, balanced per-sample accuracy**: each (word,
template) sample is classified on its own by a fixed rule, and the share of side-a samples
classified a and the share of side-b samples classified b are averaged (equal to the plain
accuracy for pairs, where both sides have the same count). ``*_vote`` variants classify a *word*
by the majority of its templates (a tie counts 0.5) and average the same way over words.
``*relative_accuracy`` is the easier **per-pair, relative** task: for each test (pair, template),
is the score of the a word above the score of the b word (a tie counts 0.5)? For unpaired sides,
over all (a, b) combinations, i.e. the ROC AUC. Expect a large gap between the two on raw
residual streams: word-to-word variation along a direction can exceed the gap between the sides
even when every pair is ordered correctly.

* threshold rule of latent j: side a iff ``o·(z_j − θ) > 0``, with orientation ``o ∈ {±1}`` and
  threshold θ chosen on train (θ the midpoint between consecutive sorted train values).
  **Best latent** = the latent with the best train threshold accuracy (first index on ties).
* sign rule of latent j: side a iff ``o·z_j > 0``, side b iff ``o·z_j < 0``; **a zero counts as a
  coin flip (0.5)** in ``sign_accuracy`` and as **wrong** in ``sign_accuracy_strict``. ``o`` is
  chosen on train. A one-sided detector (non-zero on one side, zero on the other) therefore
  scores 0.75 (0.5 strict) even when its threshold accuracy is 1. For a nonnegative SAE the sign
  rule can only say "a" or "zero", so it is at most 0.75.
* ``test_accuracy`` is ``sign_accuracy`` of the best latent (the headline number).
* coverage_a / coverage_b: share of test samples of that side on which ``z_j ≠ 0``.
* preact_sign_accuracy: the sign rule applied to the pre-activation ``u_j`` (before the top-k or
  the ReLU), orientation chosen on train.
* bidirectional_share: share of test (pair, template) samples with ``o·z_j > 0`` on the a word
  **and** ``o·z_j < 0`` on the b word (sign-rule orientation o); for unpaired sides (sentiment),
  the share over all (a, b) combinations, ``P_a(o z > 0)·P_b(o z < 0)``. ``bidirectional`` is
  ``bidirectional_share ≥ 0.8``.
* sign latent: the latent with the best *train sign accuracy* (reported with the same metrics);
  for AbsTopK it answers "is there a latent that separates the sides by its sign", which the
  threshold-best latent need not be.
* relative_accuracy (of a latent): the relative task with score ``o·z_j`` (sign orientation o).
* two-latent rule ``best_pair = (i, j)``: side a iff ``z_i > z_j``, b iff ``z_i < z_j``, a tie
  (typically both zero) a coin flip (``best_pair_accuracy``; ``_strict``: wrong). Chosen on
  train among ordered pairs of the ``n_candidates`` latents with the best train threshold
  accuracy.
* Difference in Means: ``d = (mean(a_train) − mean(b_train)) / ‖·‖`` over train samples in
  activation space; side a iff ``x·d > m`` with m the midpoint of the two train side means of
  ``x·d`` (``dim_test_accuracy``; ``dim_relative_accuracy`` scores by ``x·d``). Positions on this axis are normalised as ``(x·d − m) / h`` (h half the gap), so the
  train side-a mean sits at +1 and side b at −1; neutral words (person, parent, child, ...) get
  the mean of their templates' positions.
* cos_to_dim: cosine between ``o·W_dec[j]`` (threshold orientation o, so positive means the
  latent's side-a direction points from b to a) and d.

SAE-level: :func:`sign_summary` gives the share of alive latents that are bidirectional on a token
sample (:func:`abstopk_mini.metrics.sign_stats`: each sign ≥ 10 % of a latent's non-zeros).
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

__all__ = [
    "PAIR_SETS", "NOUN_TEMPLATES", "ADJECTIVE_TEMPLATES", "DEFAULT_TEMPLATES", "TEMPLATES",
    "NEUTRAL_WORDS", "SIDE_NAMES", "BOUNDARY_ISSUES",
    "load_pairs", "read_pairs_file", "split_pairs", "load_sentiment", "check_templates",
    "TokenIssue", "WordActivations", "locate_word", "word_activations", "sentence_activations",
    "encode_samples", "dim_direction", "threshold_scores", "sign_accuracy", "best_latent", "best_pair",
    "relative_accuracy",
    "AxisResult", "evaluate_axis", "sign_summary", "run_concepts", "run_sentiment",
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
    from .corpus import gensim_data_dir

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


def split_pairs(pairs: Sequence, test_frac: float = 0.5, seed: int = 0) -> tuple[list, list]:
    """Seeded split by pair: ``round(n·test_frac)`` pairs (at least 1, at most n − 1) go to test.
    Both parts keep the input order. Same pairs, fraction and seed → same split."""
    pairs = list(pairs)
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test_frac must be in (0, 1); got {test_frac}")
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 pairs to split into train and test; got {len(pairs)}")
    n_test = min(max(1, round(len(pairs) * test_frac)), len(pairs) - 1)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    test_idx = set(order[:n_test])
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
    from .activations import residual_stream

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

    model: the :class:`~abstopk_mini.models.LoadedModel` of ``am.models.load_model()``.
    shape: words n, templates T -> acts [n, T, d_model]
    """
    from .activations import _require_loaded
    from .models import _check_layer

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
    from .activations import token_activations

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


# =========================================================================== analysis (pure tensors)
def _samples(acts: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(acts, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [n, T, d] or [n, d]; got {type(acts).__name__}")
    if acts.ndim == 2:
        acts = acts.unsqueeze(1)
    if acts.ndim != 3 or acts.shape[0] == 0:
        raise ValueError(f"{name} must have shape [n, T, d] or [n, d] with n >= 1; got {tuple(acts.shape)}")
    return acts


@torch.no_grad()
def encode_samples(sae, acts: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-activations and codes of the SAE in eval mode.  shape: acts [..., d_in] -> u, z [..., d_sae] (CPU)"""
    was_training = sae.training
    sae.eval()
    try:
        flat = acts.reshape(-1, acts.shape[-1])
        device = sae.W_enc.device
        us, zs = [], []
        for chunk in flat.split(batch_size):
            u = sae.pre_acts(chunk.to(device))
            us.append(u.float().cpu())
            zs.append(sae.act(u).float().cpu())
    finally:
        sae.train(was_training)
    shape = (*acts.shape[:-1], -1)
    return torch.cat(us).reshape(shape), torch.cat(zs).reshape(shape)


def dim_direction(acts_a: torch.Tensor, acts_b: torch.Tensor) -> torch.Tensor:
    """Difference in Means: unit vector along mean(a) − mean(b) over all samples.

    shape: acts_a [..., d], acts_b [..., d] -> [d] (float64)
    """
    d = acts_a.reshape(-1, acts_a.shape[-1]).double().mean(0) - acts_b.reshape(-1, acts_b.shape[-1]).double().mean(0)
    norm = d.norm()
    if norm == 0:
        raise ValueError("the two sides have the same mean; the Difference-in-Means direction is undefined")
    return d / norm


def threshold_scores(v_a: torch.Tensor, v_b: torch.Tensor, block: int = 4096):
    """Best threshold rule of every column: side a iff ``o·(v − θ) > 0``.

    Balanced accuracy ``(share of a classified a + share of b classified b) / 2`` at every cut
    between distinct sorted values (and below / above all), both orientations.
    Returns (accuracy [m] float64, orientation [m] long in {+1, −1}, threshold [m] float64);
    on ties, the lowest cut and orientation +1.
    shape: v_a [n_a, m], v_b [n_b, m]
    """
    n_a, n_b = v_a.shape[0], v_b.shape[0]
    label = torch.cat([torch.ones(n_a), torch.zeros(n_b)]).double()
    accs, orients, thrs = [], [], []
    for s in range(0, v_a.shape[1], block):
        v = torch.cat([v_a[:, s:s + block], v_b[:, s:s + block]]).double()  # [N, m]
        vs, order = v.sort(dim=0)
        la = label[order]
        zero = torch.zeros(1, v.shape[1], dtype=torch.float64)
        a_below = torch.cat([zero, la.cumsum(0)])  # [N + 1, m]: a-samples among the c lowest
        b_below = torch.cat([zero, (1 - la).cumsum(0)])
        acc_up = ((n_a - a_below) / n_a + b_below / n_b) / 2  # o = +1: a above the cut
        valid = torch.ones_like(acc_up, dtype=torch.bool)
        valid[1:-1] = vs[1:] > vs[:-1]
        best = torch.where(valid, torch.maximum(acc_up, 1 - acc_up), torch.full_like(acc_up, -1.0))
        acc, cut = best.max(0)
        up = acc_up.gather(0, cut[None])[0] >= 0.5
        N = v.shape[0]
        lo = torch.where(cut > 0, vs.gather(0, (cut - 1).clamp_min(0)[None])[0], vs[0] - 1)
        hi = torch.where(cut < N, vs.gather(0, cut.clamp_max(N - 1)[None])[0], vs[-1] + 1)
        accs.append(acc)
        orients.append(torch.where(up, 1, -1))
        thrs.append((lo + hi) / 2)
    return torch.cat(accs), torch.cat(orients).long(), torch.cat(thrs)


def _sign_correct(v: torch.Tensor, want: int, zero: str) -> torch.Tensor:
    """Per sample: 1 if sign(v) == want, 0.5 (coin) or 0 (wrong) if v == 0, else 0."""
    return (torch.sign(v) == want).double() + (0.5 if zero == "coin" else 0.0) * (v == 0).double()


def sign_accuracy(v_a: torch.Tensor, v_b: torch.Tensor, orientation: int = 1, zero: str = "coin") -> torch.Tensor:
    """Balanced accuracy of the sign rule (a iff o·v > 0, b iff o·v < 0; zero: "coin" = 0.5, "wrong" = 0).

    shape: v_a [n_a, ...], v_b [n_b, ...] -> [...] (per column)
    """
    if zero not in ("coin", "wrong"):
        raise ValueError(f"zero must be 'coin' or 'wrong'; got {zero!r}")
    return (_sign_correct(orientation * v_a, 1, zero).mean(0) + _sign_correct(orientation * v_b, -1, zero).mean(0)) / 2


def best_latent(z_a: torch.Tensor, z_b: torch.Tensor, rule: str = "threshold") -> dict:
    """The latent with the best balanced train accuracy under ``rule``.

    rule "threshold": side a iff ``o·(z_j − θ) > 0`` (:func:`threshold_scores`); "sign": side a iff
    ``o·z_j > 0`` with zero a coin flip (:func:`sign_accuracy`). First index on ties.
    Returns ``{"latent", "orientation", "threshold" (None for "sign"), "train_accuracy"}``.
    shape: z_a [n_a, m], z_b [n_b, m]
    """
    if rule == "threshold":
        acc, orient, thr = threshold_scores(z_a, z_b)
        j = int(acc.argmax())
        return {"latent": j, "orientation": int(orient[j]), "threshold": float(thr[j]), "train_accuracy": float(acc[j])}
    if rule == "sign":
        acc = sign_accuracy(z_a, z_b)  # orientation -1 scores 1 - acc
        j = int(torch.maximum(acc, 1 - acc).argmax())
        o = 1 if float(acc[j]) >= 0.5 else -1
        return {"latent": j, "orientation": o, "threshold": None, "train_accuracy": max(float(acc[j]), 1 - float(acc[j]))}
    raise ValueError(f"rule must be 'threshold' or 'sign'; got {rule!r}")


def _pair_correct(z: torch.Tensor, i: int, j: int, side: int, zero: str) -> torch.Tensor:
    return _sign_correct(side * (z[..., i] - z[..., j]), 1, zero)


def best_pair(z_a: torch.Tensor, z_b: torch.Tensor, n_candidates: int = 64) -> tuple[int, int, float]:
    """Best two-latent rule "a iff z_i > z_j" (tie = coin flip) among ordered pairs of the
    ``n_candidates`` latents with the best threshold accuracy.  shape: z_a [n_a, m], z_b [n_b, m]
    Returns (i, j, balanced train accuracy)."""
    acc, _, _ = threshold_scores(z_a, z_b)
    cand = acc.argsort(descending=True, stable=True)[:max(2, n_candidates)]
    ca, cb = z_a[:, cand].double(), z_b[:, cand].double()
    diff_a = ca[:, :, None] - ca[:, None, :]  # [n_a, c, c]: z_i - z_j
    diff_b = cb[:, :, None] - cb[:, None, :]
    score = (_sign_correct(diff_a, 1, "coin").mean(0) + _sign_correct(diff_b, -1, "coin").mean(0)) / 2
    score.fill_diagonal_(-1.0)
    flat = int(score.reshape(-1).argmax())
    i, j = divmod(flat, len(cand))
    return int(cand[i]), int(cand[j]), float(score[i, j])


def relative_accuracy(s_a: torch.Tensor, s_b: torch.Tensor, paired: bool = True) -> float:
    """Share of (a, b) sample pairs with ``s_a > s_b`` (a tie counts 0.5): the pair task "which of
    the two is side a". paired: row-aligned pairs (same word pair, same template); else every
    (a, b) combination (the ROC AUC of the score).  shape: s_a [n_a, T], s_b [n_b, T]"""
    if paired:
        return float(_sign_correct(s_a.double() - s_b.double(), 1, "coin").mean())
    return float(_sign_correct(s_a.double().reshape(-1, 1) - s_b.double().reshape(1, -1), 1, "coin").mean())


def _balanced(correct_a: torch.Tensor, correct_b: torch.Tensor) -> float:
    return float((correct_a.double().mean() + correct_b.double().mean()) / 2)


def _vote(correct_a: torch.Tensor, correct_b: torch.Tensor) -> float:
    """Word-level: a word [T templates] is right if most of its templates are (tie = 0.5)."""
    def words(c):
        m = c.double().mean(1)
        return ((m > 0.5).double() + 0.5 * (m == 0.5).double()).mean()
    return float((words(correct_a) + words(correct_b)) / 2)


@dataclass
class AxisResult:
    """All measurements of one concept axis (definitions in the module docstring).

    Counts are samples (word × template). Accuracies are balanced, on the test split unless named
    ``train_*``. ``sign_latent`` holds the same metrics for the latent with the best train sign
    accuracy. Positions are on the normalised DiM axis (train side a = +1, side b = −1).
    """

    n_train_a: int
    n_train_b: int
    n_test_a: int
    n_test_b: int
    paired: bool
    best_latent: int
    orientation: int
    threshold: float
    train_threshold_accuracy: float
    threshold_accuracy: float
    threshold_accuracy_vote: float
    sign_orientation: int
    sign_accuracy: float
    sign_accuracy_strict: float
    sign_accuracy_vote: float
    coverage_a: float
    coverage_b: float
    mean_z_a: float
    mean_z_b: float
    preact_sign_accuracy: float
    preact_sign_orientation: int
    mean_u_a: float
    mean_u_b: float
    bidirectional_share: float
    bidirectional: bool
    relative_accuracy: float
    cos_to_dim: float
    sign_latent: dict
    best_pair: tuple[int, int]
    train_best_pair_accuracy: float
    best_pair_accuracy: float
    best_pair_accuracy_strict: float
    dim_train_accuracy: float
    dim_test_accuracy: float
    dim_accuracy_vote: float
    dim_relative_accuracy: float
    test_position_a: float
    test_position_b: float
    neutral_positions: list[float] | None = None
    neutral_z: list[float] | None = None

    @property
    def test_accuracy(self) -> float:
        """The headline number: test sign accuracy of the best latent (zero = coin flip)."""
        return self.sign_accuracy

    def to_dict(self) -> dict:
        d = asdict(self)
        d["best_pair"] = list(self.best_pair)
        d["test_accuracy"] = self.test_accuracy
        return d


def _latent_metrics(j, o_sign, z_a, z_b, u_a, u_b, u_a_tr, u_b_tr, paired, min_bidirectional):
    """Sign-rule metrics of latent j on test codes z_a [n_a, T, m] (and pre-activations u)."""
    za, zb = z_a[..., j].double(), z_b[..., j].double()
    ca, cb = _sign_correct(o_sign * za, 1, "coin"), _sign_correct(o_sign * zb, -1, "coin")
    o_pre = 1 if float(sign_accuracy(u_a_tr[..., j].reshape(-1), u_b_tr[..., j].reshape(-1))) >= 0.5 else -1
    if paired:
        share = float(((o_sign * za > 0) & (o_sign * zb < 0)).double().mean())
    else:
        share = float((o_sign * za > 0).double().mean() * (o_sign * zb < 0).double().mean())
    return dict(
        sign_orientation=o_sign, sign_accuracy=_balanced(ca, cb),
        sign_accuracy_strict=float(sign_accuracy(za.reshape(-1), zb.reshape(-1), o_sign, "wrong")),
        sign_accuracy_vote=_vote(ca, cb),
        coverage_a=float((za != 0).double().mean()), coverage_b=float((zb != 0).double().mean()),
        mean_z_a=float(za.mean()), mean_z_b=float(zb.mean()),
        preact_sign_accuracy=float(sign_accuracy(u_a[..., j].reshape(-1), u_b[..., j].reshape(-1), o_pre)),
        preact_sign_orientation=o_pre, mean_u_a=float(u_a[..., j].mean()), mean_u_b=float(u_b[..., j].mean()),
        bidirectional_share=share, bidirectional=share >= min_bidirectional,
        relative_accuracy=relative_accuracy(o_sign * za, o_sign * zb, paired),
    )


def evaluate_axis(sae, acts_a_train: torch.Tensor, acts_b_train: torch.Tensor, acts_a_test: torch.Tensor,
                  acts_b_test: torch.Tensor, *, neutral_acts: torch.Tensor | None = None, paired: bool = True,
                  n_candidates: int = 64, min_bidirectional: float = 0.8) -> AxisResult:
    """Choose latents and the DiM direction on train, measure them on test (see the module docstring).

    paired: row i of side a pairs with row i of side b (same template columns); False for two
    unpaired sets such as positive / negative sentences.
    shape: acts_* [n, T, d_in] or [n, d_in]; neutral_acts [n_neutral, T', d_in]
    """
    A_tr, B_tr = _samples(acts_a_train, "acts_a_train"), _samples(acts_b_train, "acts_b_train")
    A_te, B_te = _samples(acts_a_test, "acts_a_test"), _samples(acts_b_test, "acts_b_test")
    if paired and (A_tr.shape != B_tr.shape or A_te.shape != B_te.shape):
        raise ValueError(f"paired=True needs equal shapes per split; got a {tuple(A_tr.shape)} / b "
                         f"{tuple(B_tr.shape)} (train), a {tuple(A_te.shape)} / b {tuple(B_te.shape)} (test); "
                         "pass paired=False for unpaired sides")
    u_a_tr, z_a_tr = encode_samples(sae, A_tr)
    u_b_tr, z_b_tr = encode_samples(sae, B_tr)
    u_a, z_a = encode_samples(sae, A_te)
    u_b, z_b = encode_samples(sae, B_te)
    m = z_a.shape[-1]
    flat = lambda t: t.reshape(-1, m)  # noqa: E731

    # best latent by train threshold accuracy, then its sign orientation on train
    best_thr = best_latent(flat(z_a_tr), flat(z_b_tr), "threshold")
    j, o, theta = best_thr["latent"], best_thr["orientation"], best_thr["threshold"]
    o_sign = 1 if float(sign_accuracy(flat(z_a_tr)[:, j], flat(z_b_tr)[:, j])) >= 0.5 else -1
    ta = (o * (z_a[..., j].double() - theta) > 0).double()
    tb = (o * (z_b[..., j].double() - theta) < 0).double()
    best = _latent_metrics(j, o_sign, z_a, z_b, u_a, u_b, u_a_tr, u_b_tr, paired, min_bidirectional)

    # latent with the best train sign accuracy
    best_sgn = best_latent(flat(z_a_tr), flat(z_b_tr), "sign")
    js, o_js = best_sgn["latent"], best_sgn["orientation"]
    sign_latent = dict(latent=js, train_sign_accuracy=best_sgn["train_accuracy"],
                       **_latent_metrics(js, o_js, z_a, z_b, u_a, u_b, u_a_tr, u_b_tr, paired, min_bidirectional))

    # two-latent rule
    pi, pj, pair_train = best_pair(flat(z_a_tr), flat(z_b_tr), n_candidates)
    pa, pb = _pair_correct(z_a.double(), pi, pj, 1, "coin"), _pair_correct(z_b.double(), pi, pj, -1, "coin")
    pa_s, pb_s = _pair_correct(z_a.double(), pi, pj, 1, "wrong"), _pair_correct(z_b.double(), pi, pj, -1, "wrong")

    # Difference in Means
    d = dim_direction(A_tr, B_tr)
    proj = lambda x: x.double() @ d.to(x.device)  # noqa: E731  [n, T]
    mean_a, mean_b = float(proj(A_tr).mean()), float(proj(B_tr).mean())
    mid, half = (mean_a + mean_b) / 2, (mean_a - mean_b) / 2
    pos = lambda x: (proj(x) - mid) / half  # noqa: E731
    da, db = (proj(A_te) > mid).double(), (proj(B_te) < mid).double()
    dim_train = _balanced(proj(A_tr) > mid, proj(B_tr) < mid)
    row = sae.W_dec[j].detach().double().cpu() * o
    cos = float(row @ d / row.norm().clamp_min(1e-12))
    row_s = sae.W_dec[js].detach().double().cpu() * o_js
    sign_latent["cos_to_dim"] = float(row_s @ d / row_s.norm().clamp_min(1e-12))

    neutral_positions = neutral_z = None
    if neutral_acts is not None:
        N = _samples(neutral_acts, "neutral_acts")
        neutral_positions = pos(N).mean(1).tolist()
        neutral_z = encode_samples(sae, N)[1][..., j].mean(1).tolist()

    return AxisResult(
        n_train_a=A_tr.shape[0] * A_tr.shape[1], n_train_b=B_tr.shape[0] * B_tr.shape[1],
        n_test_a=A_te.shape[0] * A_te.shape[1], n_test_b=B_te.shape[0] * B_te.shape[1], paired=paired,
        best_latent=j, orientation=o, threshold=theta, train_threshold_accuracy=best_thr["train_accuracy"],
        threshold_accuracy=_balanced(ta, tb), threshold_accuracy_vote=_vote(ta, tb), **best, cos_to_dim=cos,
        sign_latent=sign_latent, best_pair=(pi, pj), train_best_pair_accuracy=pair_train,
        best_pair_accuracy=_balanced(pa, pb), best_pair_accuracy_strict=_balanced(pa_s, pb_s),
        dim_train_accuracy=dim_train, dim_test_accuracy=_balanced(da, db), dim_accuracy_vote=_vote(da, db),
        dim_relative_accuracy=relative_accuracy(proj(A_te), proj(B_te), paired),
        test_position_a=float(pos(A_te).mean()), test_position_b=float(pos(B_te).mean()),
        neutral_positions=neutral_positions, neutral_z=neutral_z,
    )


@torch.no_grad()
def sign_summary(sae, token_acts: torch.Tensor, *, batch_size: int = 4096, min_share: float = 0.1) -> dict:
    """Alive and bidirectional latents on a token sample.

    ``bidirectional_fraction`` = bidirectional latents / alive latents, with a latent
    bidirectional when each sign holds ≥ ``min_share`` of its non-zeros
    (:func:`abstopk_mini.metrics.sign_stats`). shape: token_acts [N, d_in]
    """
    n_pos = n_neg = 0
    for chunk in token_acts.reshape(-1, token_acts.shape[-1]).split(batch_size):
        z = encode_samples(sae, chunk, batch_size)[1]
        n_pos, n_neg = n_pos + (z > 0).sum(0), n_neg + (z < 0).sum(0)
    n = n_pos + n_neg
    alive = n > 0
    bidir = alive & (n_pos >= min_share * n) & (n_neg >= min_share * n)
    n_alive = int(alive.sum())
    return {"n_tokens": int(token_acts.reshape(-1, token_acts.shape[-1]).shape[0]),
            "alive_fraction": n_alive / n.numel(), "n_bidirectional": int(bidir.sum()),
            "bidirectional_fraction": int(bidir.sum()) / n_alive if n_alive else 0.0}


# =========================================================================== runners
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


def run_concepts(sae, model, pairs="family", *, test_pairs=None, layer: int | None = None, templates=None,
                 test_frac: float = 0.5, seed: int = 0, neutral_words: Sequence[str] | None = None,
                 mismatch: str = "keep", token_acts: torch.Tensor | None = None, include_pronouns: bool = False,
                 batch_size: int = 32) -> dict:
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
