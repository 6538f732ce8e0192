r"""Do the two sides of a latent mean opposite things? Rules over the top tokens of each side.

    verdicts = am.dashboard.judge(data)             # one Judgement per requested latent
    am.dashboard.count_verdicts(verdicts)           # {"opposite": 3, "different": 150, ...}

A latent's **two sides** are, for a signed SAE (AbsTopK), its contexts with the largest
:math:`z_i > 0` and with the most negative :math:`z_i < 0`; for an unsigned SAE (TopK), which has no
negative codes, the positive contexts of latent :math:`i` and of its antipode
:math:`j^* = \arg\min_{j \ne i} \cos(W_{dec}[i], W_{dec}[j])` — the latent that writes most nearly
:math:`-d_i`, the like-for-like "other side" (:func:`~abstopk_mini.dashboard.data.antipodes`).

Each side is summarised by the **chosen tokens** of its top contexts (the token each context was
ranked by), lower-cased, stripped of spaces and of leading/trailing punctuation; tokens that are
empty after that (punctuation, whitespace, BOS) are dropped. Rules, in this order:

1. ``"one-sided"``: a side has fewer than ``min_tokens`` chosen word tokens — nothing to compare;
2. ``"opposite"``: some pair :math:`(a, b)` of the opposition lexicon (:func:`opposite_lexicon`) has
   :math:`a` among one side's tokens and :math:`b` among the other's;
3. ``"same"``: the two sides' token *sets* overlap, Jaccard :math:`|A \cap B| / |A \cup B| \ge`
   ``same_jaccard`` — the sign carries no meaning the tokens show;
4. ``"different"``: anything else (distinct tokens, no lexicon pair between them).

The lexicon rule can only find oppositions the lexicon names, so "opposite" is a lower bound and
"different" holds both unrelated and opposite-but-unlisted sides; :class:`Judgement` keeps the
tokens, so a reader can check any verdict. The same pair test applied to the logit-lens lists
(the tokens :math:`+d_i` and :math:`-d_i` — for TopK :math:`+d_i` and :math:`+d_{j^*}` — boost most) is
reported separately as ``opposite_logits``.

:func:`lexicon_sides` asks the question the other way round: which sides, of *all* latents, are
mostly words of one group (say female words), and what is on the other side of each?
"""

from __future__ import annotations

import random
import string
from collections import Counter
from dataclasses import asdict, dataclass

__all__ = ["EXTRA_OPPOSITES", "opposite_lexicon", "normalise_token", "side_tokens", "Judgement", "judge_latent", "other_side",
           "judge", "count_verdicts", "VERDICTS", "lexicon_sides", "blind_sample", "reading_sheet"]

VERDICTS = ("opposite", "different", "same", "one-sided")

#: Common English oppositions that the shipped lists lack (closed-class words, directions, quantities).
#: Fixed before any dashboard was judged; extend it only with the same care (and say so).
EXTRA_OPPOSITES: tuple[tuple[str, str], ...] = (
    ("in", "out"), ("up", "down"), ("before", "after"), ("yes", "no"), ("first", "last"), ("more", "less"),
    ("most", "least"), ("increase", "decrease"), ("positive", "negative"), ("good", "bad"), ("open", "closed"),
    ("start", "end"), ("begin", "end"), ("win", "lose"), ("won", "lost"), ("buy", "sell"), ("left", "right"),
    ("high", "low"), ("higher", "lower"), ("big", "small"), ("large", "small"), ("new", "old"), ("young", "old"),
    ("north", "south"), ("east", "west"), ("true", "false"), ("love", "hate"), ("always", "never"),
    ("all", "none"), ("above", "below"), ("over", "under"), ("inside", "outside"), ("early", "late"),
    ("rich", "poor"), ("hot", "cold"), ("light", "dark"), ("war", "peace"), ("friend", "enemy"),
    ("male", "female"), ("masculine", "feminine"), ("plus", "minus"), ("maximum", "minimum"), ("max", "min"),
    ("past", "future"), ("ancient", "modern"), ("give", "take"), ("push", "pull"), ("import", "export"),
    ("input", "output"), ("on", "off"), ("with", "without"), ("can", "cannot"), ("did", "didn't"),
    ("is", "isn't"), ("was", "wasn't"), ("do", "don't"), ("agree", "disagree"), ("accept", "reject"),
)


def _norm_pairs(pairs) -> list[tuple[str, str]]:
    return [(a.lower(), b.lower()) for a, b in pairs]


def opposite_lexicon() -> list[tuple[str, str]]:
    """The opposition pairs the ``"opposite"`` rule looks for (lower-case, deduplicated, in order).

    The ``: family`` analogy pairs with pronouns (boy/girl, he/she, ...), the natural-text gender
    pairs (:data:`~abstopk_mini.concepts.occurrences.GENDER_PAIRS`), the ``: gram2-opposite``
    antonyms (aware/unaware, ...) — all shipped with gensim — and :data:`EXTRA_OPPOSITES`.
    """
    from ..concepts.occurrences import GENDER_PAIRS
    from ..concepts.pairs import load_pairs

    out = []
    for pairs in (load_pairs("family", include_pronouns=True), GENDER_PAIRS, load_pairs("opposite"), EXTRA_OPPOSITES):
        out.extend(_norm_pairs(pairs))
    return list(dict.fromkeys(out))


_STRIP = string.punctuation + "“”‘’«»—–…"


def normalise_token(text: str) -> str:
    """``" Women,"`` -> ``"women"``: lower-case, no surrounding spaces or punctuation ('' if nothing is left)."""
    return text.strip().lower().strip(_STRIP).strip()


def side_tokens(contexts, tokens: dict) -> list[str]:
    """The normalised chosen token of each context (best-ranked first), empty ones dropped.
    contexts: [N] :class:`~abstopk_mini.dashboard.records.Context`; tokens: id -> display string."""
    out = []
    for c in contexts:
        t = normalise_token(tokens[c.token_ids[c.max_pos]])
        if t:
            out.append(t)
    return out


@dataclass
class Judgement:
    """The verdict on one latent's two sides and the evidence it rests on.

    latent: the latent judged; other: the latent whose contexts form side B (itself for a signed
    SAE, its antipode for an unsigned one, None when it has none); antipode_cos: cos(W_dec[latent], W_dec[other]) (None for
    a signed SAE). side_a, side_b: the chosen tokens of each side (best first). verdict: one of
    :data:`VERDICTS`; pair: the lexicon pair found ("opposite"); jaccard: of the two token sets.
    opposite_logits: the lexicon pair found between the two sides' top boosted output tokens, or None.
    """

    latent: int
    other: int | None
    antipode_cos: float | None
    side_a: list
    side_b: list
    verdict: str
    pair: tuple | None
    jaccard: float
    opposite_logits: tuple | None

    def to_dict(self) -> dict:
        return asdict(self)


def _find_pair(a: set, b: set, lexicon) -> tuple | None:
    for x, y in lexicon:
        if (x in a and y in b) or (y in a and x in b):
            return (x, y)
    return None


def other_side(data, i: int) -> tuple:
    """Side B of latent ``i``: ``(other, antipode_cos, contexts, boosted logits)`` — its own negative side
    for a signed SAE, its antipode's positive side for an unsigned one (``None, None, [], []`` when it has
    no antipode)."""
    rec = data.latent(i)
    if bool(data.sae.get("signed", True)):
        return i, None, rec.top_neg, rec.logits.neg_boost
    if rec.antipode is None:  # an SAE with one latent: no other side
        return None, None, [], []
    partner = data.latent(rec.antipode)
    return rec.antipode, rec.antipode_cos, partner.top_pos, partner.logits.pos_boost


def judge_latent(data, i: int, *, lexicon=None, min_tokens: int = 5, same_jaccard: float = 0.25) -> Judgement:
    """Apply the rules of this module to latent ``i`` of a :class:`~abstopk_mini.dashboard.records.DashboardData`."""
    if lexicon is None:
        lexicon = opposite_lexicon()
    rec = data.latent(i)
    other, cos, b_ctx, b_logits = other_side(data, i)
    a, b = side_tokens(rec.top_pos, data.tokens), side_tokens(b_ctx, data.tokens)
    sa, sb = set(a), set(b)
    jac = len(sa & sb) / len(sa | sb) if sa | sb else 0.0
    pair = None
    if len(a) < min_tokens or len(b) < min_tokens:
        verdict = "one-sided"
    else:
        pair = _find_pair(sa - sb, sb - sa, lexicon)
        verdict = "opposite" if pair else ("same" if jac >= same_jaccard else "different")
    la = {normalise_token(data.tokens[t]) for t, _ in rec.logits.pos_boost} - {""}
    lb = {normalise_token(data.tokens[t]) for t, _ in b_logits} - {""}
    return Judgement(latent=i, other=other, antipode_cos=cos, side_a=a, side_b=b, verdict=verdict, pair=pair,
                     jaccard=jac, opposite_logits=_find_pair(la - lb, lb - la, lexicon))


def judge(data, latents=None, **kw) -> list[Judgement]:
    """:func:`judge_latent` for each of ``latents`` (default: the latents the data was requested for)."""
    lexicon = kw.pop("lexicon", None) or opposite_lexicon()
    return [judge_latent(data, i, lexicon=lexicon, **kw) for i in (data.requested if latents is None else latents)]


def count_verdicts(judgements) -> dict:
    """``{verdict: count}`` over :data:`VERDICTS` (zeros kept), plus ``"n"`` and ``"opposite_logits"``."""
    c = Counter(j.verdict for j in judgements)
    out = {v: c.get(v, 0) for v in VERDICTS}
    out["n"] = len(judgements)
    out["opposite_logits"] = sum(j.opposite_logits is not None for j in judgements)
    return out


def _sides(data, i: int):
    """[(sign, contexts of that side, (other latent, its contexts))] of latent i: a signed SAE has two
    sides, each the other's partner; an unsigned one has its positive side, partnered with the
    antipode's positive side."""
    rec = data.latent(i)
    if bool(data.sae.get("signed", True)):
        return [("+", rec.top_pos, (i, "-", rec.top_neg)), ("-", rec.top_neg, (i, "+", rec.top_pos))]
    try:
        other = data.latent(rec.antipode).top_pos if rec.antipode is not None else []
    except ValueError:  # the antipode was not computed: no other side to show
        other = []
    return [("+", rec.top_pos, (rec.antipode, "+", other))]


def lexicon_sides(data, groups: dict, *, min_share: float = 0.5, min_tokens: int = 5, latents=None) -> list[dict]:
    """Every side whose chosen tokens are mostly words of one group, with what its other side holds.

    groups: ``{name: words}`` (lower-case words; e.g. ``gender_lexicon()`` gives "male" and "female").
    A side qualifies when it has ≥ ``min_tokens`` chosen word tokens (:func:`side_tokens`) and a share
    ≥ ``min_share`` of them are in one group. latents: default every latent the data holds.

    Returns one dict per qualifying side, sorted by share (descending), then latent:
    ``latent, sign ("+"/"-"), group, share, n_fires`` (tokens on that side), ``tokens``, and
    ``other_latent, other_sign, other_tokens, other_shares`` ({group: share} of the other side;
    {} when it has fewer than ``min_tokens``) — for a signed SAE the other sign of the same latent,
    for an unsigned one the antipode's positive side.
    """
    sets = {g: {w.lower() for w in ws} for g, ws in groups.items()}

    def shares(tokens):
        return {g: sum(t in ws for t in tokens) / len(tokens) for g, ws in sets.items()} if len(tokens) >= min_tokens else {}

    rows = []
    for i in ([r.latent for r in data.latents] if latents is None else latents):
        rec = data.latent(i)
        for sign, ctx, (j, other_sign, other_ctx) in _sides(data, i):
            tokens = side_tokens(ctx, data.tokens)
            sh = shares(tokens)
            if not sh:
                continue
            group = max(sh, key=lambda g: (sh[g], g))
            if sh[group] >= min_share:
                other = side_tokens(other_ctx, data.tokens)
                rows.append({"latent": i, "sign": sign, "group": group, "share": sh[group],
                             "n_fires": rec.n_pos if sign == "+" else rec.n_neg, "tokens": tokens,
                             "other_latent": j, "other_sign": other_sign, "other_tokens": other,
                             "other_shares": shares(other)})
    return sorted(rows, key=lambda r: (-r["share"], r["latent"], r["sign"]))


def _window_text(data, c, before: int = 8) -> str:
    toks = [data.tokens[t] for t in c.token_ids]
    toks[c.max_pos] = "[" + toks[c.max_pos] + "]"
    return "".join(toks[max(0, c.max_pos - before):]).replace("\n", " ")


def blind_sample(named: dict, n: int, *, seed: int = 0, shuffle_seed: int = 1, n_contexts: int = 3) -> list[dict]:
    """A reading sample with the SAE hidden: ``n`` judged latents of each DashboardData in ``named``
    (``{"abstopk": data, "topk": data}``), drawn at random (``random.Random(seed)``) among those not
    "one-sided", then shuffled together (``random.Random(shuffle_seed)``).

    Each item: ``item`` (its number on the sheet), ``sae`` (the key of ``named``: hide it when
    reading), ``latent``, ``other``, ``side_a``, ``side_b`` (chosen tokens) and ``ctx_a``, ``ctx_b``
    (the first ``n_contexts`` contexts of each side as text, the chosen token in brackets).
    """
    items = []
    for name, data in named.items():
        judged = [j for j in judge(data) if j.verdict != "one-sided"]
        if len(judged) < n:
            raise ValueError(f"{name!r} has {len(judged)} judged latents that are not one-sided; n={n} is more")
        for j in random.Random(seed).sample(judged, n):
            rec = data.latent(j.latent)
            b_ctx = rec.top_neg if j.other == j.latent else data.latent(j.other).top_pos
            items.append({"sae": name, "latent": j.latent, "other": j.other, "side_a": j.side_a, "side_b": j.side_b,
                          "ctx_a": [_window_text(data, c) for c in rec.top_pos[:n_contexts]],
                          "ctx_b": [_window_text(data, c) for c in b_ctx[:n_contexts]]})
    random.Random(shuffle_seed).shuffle(items)
    for k, it in enumerate(items):
        it["item"] = k
    return items


def reading_sheet(items) -> str:
    """The text a reader judges: for each item its number, each side's tokens and contexts — no SAE name."""
    lines = []
    for it in items:
        lines.append(f"#{it['item']}")
        for side in ("a", "b"):
            lines.append(f"  {side.upper()}: {' '.join(it['side_' + side])}")
            lines.extend(f"     · {c}" for c in it["ctx_" + side])
    return "\n".join(lines) + "\n"
