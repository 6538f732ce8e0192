"""The compact JSON a dashboard page carries: :func:`payload` and :func:`to_script`.

The page needs far less than :class:`~abstopk_mini.dashboard.records.DashboardData` holds: values are
rounded to ``digits`` significant digits (3 by default: the colour scale and the hover text need
no more), zeros are written ``0``, token strings are stored once in a table and referred to by
position, and records are short-keyed objects. Layout::

    {"v": 1, "title": str, "signed": bool, "n_tokens": int, "meta": {sae, harvest, settings},
     "tok": [display strings], "req": [requested latent ids],
     "L": [{"i": id, "np": n_pos, "nn": n_neg, "hw": bin width, "hc": [counts],
            "P": [ctx, ...], "N": [ctx, ...],          ctx = [[tok], [z], max_pos, z_max, doc, position]
            "lg": [pos_boost, pos_suppress, neg_boost, neg_suppress],   each [[tok, logit], ...]
            "sp": summary +, "sn": summary −, "ap": antipode, "ac": its cosine}, ...]}
    ("ap" and "ac" are null for an SAE with one latent: it has no antipode)
"""

from __future__ import annotations

from ..strict_json import dumps
from .records import DashboardData

__all__ = ["payload", "to_script"]


def _round(v: float, digits: int):
    if v == 0:
        return 0
    r = float(f"{v:.{digits}g}")
    return int(r) if r.is_integer() and abs(r) < 2**53 else r


def payload(data: DashboardData, latents=None, *, digits: int = 3, title: str | None = None) -> dict:
    """The compact page data of ``latents`` (default: all of ``data``; an unsigned SAE's partners
    come along so the "other side" can be shown). See the module docstring for the layout."""
    if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 9:
        raise ValueError(f"digits must be an int in 1..9 (significant digits kept); got {digits!r}")
    signed = bool(data.sae.get("signed", True))
    wanted = [r.latent for r in data.latents] if latents is None else [int(i) for i in latents]
    recs = [data.latent(i) for i in wanted]
    if not signed:
        have = set(wanted)
        for r in list(recs):
            if r.antipode not in have and any(x.latent == r.antipode for x in data.latents):
                recs.append(data.latent(r.antipode))
                have.add(r.antipode)
    table: dict = {}

    def tok(t: int) -> int:
        return table.setdefault(int(t), len(table))

    def ctx(c):
        return [[tok(t) for t in c.token_ids], [_round(v, digits) for v in c.values], c.max_pos,
                _round(c.value, digits), c.doc, c.position]

    L = []
    for r in recs:
        L.append({"i": r.latent, "np": r.n_pos, "nn": r.n_neg, "hw": r.hist_width, "hc": r.hist_counts,
                  "P": [ctx(c) for c in r.top_pos], "N": [ctx(c) for c in r.top_neg],
                  "lg": [[[tok(t), _round(v, digits)] for t, v in lst] for lst in r.logits],
                  "sp": r.summary_pos, "sn": r.summary_neg, "ap": r.antipode,
                  "ac": None if r.antipode_cos is None else _round(r.antipode_cos, digits)})
    sae = data.sae
    name = title or (f"{sae.get('activation', 'SAE')} (k={sae.get('k')}, d_sae={sae.get('d_sae')}) on "
                     f"{data.harvest.get('model', '?')} {data.harvest.get('hook_name', '')}")
    requested = [i for i in (data.requested if latents is None else wanted)]
    return {"v": 1, "title": name, "signed": signed, "n_tokens": data.n_tokens,
            "meta": {"sae": data.sae, "harvest": data.harvest, "settings": data.settings},
            "tok": [data.tokens[t] for t in table], "req": requested, "L": L}


def to_script(obj: dict) -> str:
    """Compact JSON that is safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&``
    are written as \\u escapes, so no token text can close the script element. Strict JSON: a NaN
    or Infinity (which ``JSON.parse`` refuses, leaving a blank page) raises instead."""
    text = dumps(obj, what="the dashboard page data", separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
