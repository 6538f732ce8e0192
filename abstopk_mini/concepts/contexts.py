r"""Top contexts of one latent, scored against a gender lexicon, with a sign-flip null.

    tc = am.concepts.top_contexts(sae, token_acts, latent=17, tokenizer=loaded.tokenizer, n=50)
    tc.shares["positive"]["male"], tc.null["positive"]["male"]    # 0.62 vs {"mean": 0.11, "low": ..., "high": ...}

Data: a :class:`~abstopk_mini.lm.activations.TokenActivations` (every token of some texts) or an
:class:`~abstopk_mini.concepts.occurrences.Occurrences` (only the gender words: every context is
gendered there, so use it to compare the two sides, not the shares against the base rate).

* positive side: the ``n`` rows with the largest :math:`z_j > 0`; negative side: the ``n`` rows
  with the most negative :math:`z_j < 0`. A non-negative SAE (TopK) has no negative codes, so its
  negative side is the most negative **pre-activations** :math:`u_j < 0` (``negative_source="u"``).
* a context is *male* (*female*) when the text of its focal token and the ``window`` tokens on
  either side, decoded together, holds a whole word of the male (female) lexicon (default
  :func:`~abstopk_mini.concepts.occurrences.gender_lexicon`; matched as
  :func:`~abstopk_mini.concepts.occurrences.word_pattern` does) that overlaps those tokens;
  *gendered* = either. One more token on each side (when the data has it) completes words cut
  at the edge ("she" ending the window on "he" is not read as "he"). A side's score is the share
  of its contexts with that property.
* null: the same scores after multiplying the latent's values by seeded random signs
  :math:`s_r \in \{\pm 1\}` (``n_null`` draws): which of the strongest rows land on which side is
  then chance. Reported as the mean and the 2.5 / 97.5 % quantiles over draws; ``base_rate`` is
  the share over all rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .axis import encode_samples
from .occurrences import Occurrences, gender_lexicon, word_pattern

__all__ = ["token_windows", "TopContexts", "top_contexts"]

KINDS = ("male", "female", "gendered")


def token_windows(token_ids: torch.Tensor, doc: torch.Tensor, pos: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Token ids at pos − window .. pos + window of the same document (−1 where no such row).

    shape: token_ids, doc, pos [N] -> [N, 2·window + 1]
    """
    span = int(pos.max()) + 2 * window + 2 if len(pos) else 1
    key = doc.long() * span + pos.long()
    order = key.argsort()
    sorted_key = key[order]
    out = torch.full((len(key), 2 * window + 1), -1, dtype=torch.long)
    for k, off in enumerate(range(-window, window + 1)):
        at = torch.searchsorted(sorted_key, key + off).clamp_max(len(key) - 1)
        hit = sorted_key[at] == key + off
        out[hit, k] = token_ids.long()[order[at[hit]]]
    return out


@dataclass
class TopContexts:
    """Top contexts of one latent (module docstring). positive / negative: one dict per row in
    rank order ``{"row", "value", "context", "male", "female"}``; shares, null: ``{side: {kind: ...}}``
    (null: ``{"mean", "low", "high"}``); base_rate: ``{kind: share over all rows}``."""

    latent: int
    negative_source: str
    positive: list[dict]
    negative: list[dict]
    shares: dict
    null: dict
    base_rate: dict
    n_rows: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _lexicon_flags(window: torch.Tensor, tokenizer, lexicon: dict, core: int) -> dict[str, torch.Tensor]:
    """Per row: does a whole male / female lexicon word overlap the ±``core`` tokens of the window?
    The tokens beyond ``core`` (if any) only complete words cut at its edge.

    shape: window [N, 2W + 1] token ids (−1 = none), core <= W -> {"male", "female", "gendered"}: [N] bool
    """
    half = (window.shape[1] - 1) // 2
    pattern = word_pattern(sorted(lexicon["male"] | lexicon["female"]))
    text_of = {i: tokenizer.decode([i]) for i in window.unique().tolist() if i >= 0}
    flags = {k: torch.zeros(len(window), dtype=torch.bool) for k in ("male", "female")}
    for r, ids in enumerate(window.tolist()):
        pieces = [text_of.get(i, "") for i in ids]
        lo = sum(map(len, pieces[:half - core]))
        hi = lo + sum(map(len, pieces[half - core:half + core + 1]))
        words = {m.group(1).lower() for m in pattern.finditer("".join(pieces)) if m.start() < hi and m.end() > lo}
        for kind in ("male", "female"):
            flags[kind][r] = bool(words & lexicon[kind])
    flags["gendered"] = flags["male"] | flags["female"]
    return flags


def _sides(v_pos: torch.Tensor, v_neg: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the n largest positive v_pos and the n most negative v_neg, in rank order."""
    pos = torch.topk(v_pos, min(n, int((v_pos > 0).sum()))).indices
    neg = torch.topk(-v_neg, min(n, int((v_neg < 0).sum()))).indices
    return pos, neg


def _shares(rows: torch.Tensor, flags: dict) -> dict:
    return {k: float(flags[k][rows].double().mean()) if len(rows) else None for k in KINDS}


@torch.no_grad()
def top_contexts(sae, data, latent: int, tokenizer, *, n: int = 50, lexicon: dict | None = None, window: int = 3,
                 n_null: int = 100, seed: int = 0, batch_size: int = 4096) -> TopContexts:
    """Top-``n`` positive and negative contexts of ``latent``, their lexicon shares and the null.

    data: TokenActivations (windows from its doc / pos) or Occurrences (its own windows and contexts).
    tokenizer: the model's tokenizer (to decode tokens). lexicon: ``{"male": words, "female": words}``.
    shape: data.acts [N, d_in]
    """
    if not 0 <= latent < sae.cfg.d_sae:
        raise ValueError(f"latent must satisfy 0 <= latent < d_sae = {sae.cfg.d_sae}; got {latent}")
    for name, v in (("n", n), ("n_null", n_null), ("window", window + 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= {0 if name == 'window' else 1}; got {v!r}")
    if isinstance(data, Occurrences):
        win, texts = data.window, data.context
        if win.shape[1] < 2 * window + 1:
            raise ValueError(f"window={window} but the occurrences hold ±{(win.shape[1] - 1) // 2} tokens; pass "
                             f"window <= {(win.shape[1] - 1) // 2} or find_occurrences(..., window={window + 1})")
    elif all(hasattr(data, a) for a in ("acts", "token_ids", "doc", "pos")):
        win, texts = token_windows(data.token_ids, data.doc, data.pos, window + 1), None
    else:
        raise TypeError(f"data must be Occurrences or TokenActivations; got {type(data).__name__}")
    lexicon = {k: frozenset(w.lower() for w in v) for k, v in (lexicon or gender_lexicon()).items()}
    flags = _lexicon_flags(win, tokenizer, lexicon, window)
    cols = [[t[:, latent] for t in encode_samples(sae, chunk)] for chunk in data.acts.split(batch_size)]
    u, z = (torch.cat(c).double() for c in zip(*cols))  # [N] each: one latent's u and z
    signed = bool(getattr(sae.cfg, "signed", True))
    v_neg = z if signed else u
    pos, neg = _sides(z, v_neg, n)

    def piece(ids):
        return tokenizer.decode([i for i in ids if i >= 0])

    def describe(rows, values):
        out = []
        for r in rows.tolist():
            if texts is not None:
                context = texts[r]
            else:
                w, c = win[r].tolist(), (win.shape[1] - 1) // 2
                context = " ".join(f"{piece(w[c - window:c])}[[{piece([w[c]])}]]{piece(w[c + 1:c + window + 1])}".split())
            out.append({"row": r, "value": float(values[r]), "context": context,
                        "male": bool(flags["male"][r]), "female": bool(flags["female"][r])})
        return out

    gen = torch.Generator().manual_seed(seed)
    draws = {"positive": {k: [] for k in KINDS}, "negative": {k: [] for k in KINDS}}
    for _ in range(n_null):
        s = torch.randint(0, 2, (len(z),), generator=gen).double() * 2 - 1
        for side, rows in zip(("positive", "negative"), _sides(s * z, s * v_neg, n)):
            for k, v in _shares(rows, flags).items():
                if v is not None:
                    draws[side][k].append(v)
    null = {side: {k: _interval(vals) for k, vals in kinds.items()} for side, kinds in draws.items()}
    return TopContexts(latent=latent, negative_source="z" if signed else "u", positive=describe(pos, z),
                       negative=describe(neg, v_neg), shares={"positive": _shares(pos, flags), "negative": _shares(neg, flags)},
                       null=null, base_rate={k: float(flags[k].double().mean()) for k in KINDS}, n_rows=len(z))


def _interval(values: list[float]) -> dict:
    """Mean and 2.5 / 97.5 % quantiles (None when there are no values)."""
    if not values:
        return {"mean": None, "low": None, "high": None}
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "low": float(t.quantile(0.025)), "high": float(t.quantile(0.975))}
