r"""Tables and the figure of chapter 11 (two sides of a latent). They read the records of
``python -m abstopk_mini opposites`` (``results/opposite_meanings.jsonl``) and the blinded reading
(``results/opposite_reading.json``); nothing is recomputed here.
"""

from __future__ import annotations

from collections import Counter

from . import style

__all__ = ["LABEL", "READING_LABELS", "verdict_table", "gender_sides_table", "gendered_other_sides", "side_cosine_table", "reading_table",
           "verdict_figure"]

#: how the tables name an SAE by its activation (the palette's labels)
LABEL = style.ACTIVATION_LABELS
#: the reader's four labels, in the order tables and the figure show them
READING_LABELS = ("opposite", "related", "unrelated", "unclear")
#: verdicts (rules) and labels (reading) drawn alike, as (legend entry, colour), in legend order
_LEGEND = {"opposite": ("opposite", style.BAND), "related": ("related (reading)", "#98df8a"),
           "different": ("different / unrelated", "#c7c7c7"), "unrelated": ("different / unrelated", "#c7c7c7"),
           "same": ("same (rules)", "#8c8c8c"), "one-sided": ("one-sided / unclear", "#f2f2f2"),
           "unclear": ("one-sided / unclear", "#f2f2f2")}


def _order(records):
    return sorted(records, key=lambda r: (r["activation"] != "abstopk", r["seed"]))


def verdict_table(records) -> style.Table:
    """One row per SAE: the rule verdicts on its n most bidirectional latents (counts and the share
    opposite; key columns: all but the SAE's step count)."""
    rows = []
    for r in _order(records):
        v = r["verdicts"]
        rows.append({"SAE": LABEL[r["activation"]], "seed": r["seed"], "steps": r["sae"]["n_steps"],
                     "latents": v["n"], "opposite": v["opposite"], "different": v["different"], "same": v["same"],
                     "one-sided": v["one-sided"], "opposite %": 100 * v["opposite"] / v["n"],
                     "opposite by logits": v["opposite_logits"]})
    return style.Table(rows, formats={"opposite %": ".1f"}, key=[c for c in rows[0] if c != "steps"] if rows else None)


def _short(tokens, n: int = 6) -> str:
    """The n most frequent tokens, 'her ×6 · she ×2'."""
    return " · ".join(f"{t} ×{k}" for t, k in Counter(tokens).most_common(n))


def gender_sides_table(records, n_tokens: int = 2) -> style.Table:
    """One row per gendered side (a side whose top tokens are mostly gender words) of every SAE:
    the SAE and seed, the latent and sign, the group and the share of its top tokens in it, its
    most frequent tokens, and the other side's (the other sign of the same latent, or for TopK the
    antipode's positive side; the record names the antipode)."""
    rows = []
    for r in _order(records):
        for s in r["gender_sides"]:
            rows.append({"SAE": f"{LABEL[r['activation']]} s{r['seed']}", "side": f"{s['latent']} {s['sign']}",
                         "group": f"{s['group']} {s['share']:.0%}", "top tokens": _short(s["tokens"], n_tokens),
                         "other side": _short(s["other_tokens"], n_tokens) if s["other_tokens"] else "-"})
    if not rows:
        raise ValueError("no record has a gendered side; nothing to show")
    return style.Table(rows)


def gendered_other_sides(records, min_share: float = 0.5) -> int:
    """How many gendered sides have a gendered other side (≥ ``min_share`` of its top tokens in one group)."""
    return sum(bool(s["other_shares"]) and max(s["other_shares"].values()) >= min_share
               for r in records for s in r["gender_sides"])


def side_cosine_table(record, W_dec) -> style.Table:
    r"""For one SAE's record: the cosine between the direction each female side writes and the
    direction each male side writes, :math:`\cos(\sigma_f d_f, \sigma_m d_m)` with :math:`\sigma = \pm 1`
    the side's sign and :math:`d = W_{dec}[i]` (so −1 would be one axis read in both directions).
    W_dec: that SAE's decoder [d_sae, d_in] (e.g. ``am.pretrained.load(name).W_dec``)."""
    import torch

    W = torch.as_tensor(W_dec).detach().double()
    by = {"female": [], "male": []}
    for s in record["gender_sides"]:
        if s["group"] in by:
            by[s["group"]].append(s)
    rows = []
    for f in by["female"]:
        for m in by["male"]:
            df = W[f["latent"]] * (1 if f["sign"] == "+" else -1)
            dm = W[m["latent"]] * (1 if m["sign"] == "+" else -1)
            rows.append({"SAE": LABEL[record["activation"]], "female side": f"{f['latent']} {f['sign']}",
                         "male side": f"{m['latent']} {m['sign']}",
                         "cosine": float(df @ dm / (df.norm() * dm.norm()))})
    if not rows:
        raise ValueError("the record has no female side and male side to compare")
    return style.Table(rows, formats={"cosine": "+.2f"})


def reading_table(reading) -> style.Table:
    """One row per SAE of the blinded reading: how many sampled latents the reader labelled each way."""
    rows = []
    for sae in ("abstopk", "topk"):
        labels = Counter(it["label"] for it in reading["items"] if it["sae"] == sae)
        n = sum(labels.values())
        if n:
            rows.append({"SAE": LABEL[sae], "read": n, **{lab: labels.get(lab, 0) for lab in READING_LABELS},
                         "opposite %": 100 * labels.get("opposite", 0) / n})
    return style.Table(rows, formats={"opposite %": ".1f"})


@style.styled
def verdict_figure(records, reading=None):
    """Stacked bars: the share of each verdict among the judged latents of every SAE (rules), and of
    each label in the blinded reading; the tick labels name the SAE, seed and sample size."""
    bars = []
    for r in _order(records):
        v = r["verdicts"]
        bars.append((f"{LABEL[r['activation']]} seed {r['seed']}\nrules, n={v['n']}",
                     [(k, v[k] / v["n"]) for k in ("opposite", "different", "same", "one-sided")]))
    if reading is not None:
        for sae in ("abstopk", "topk"):
            labels = Counter(it["label"] for it in reading["items"] if it["sae"] == sae)
            n = sum(labels.values())
            if n:
                bars.append((f"{LABEL[sae]} seed {reading['seed']}\nread blind, n={n}",
                             [(k, labels.get(k, 0) / n) for k in READING_LABELS]))
    from matplotlib.patches import Patch

    fig, ax = style.subplots(1, 1, height=0.5 * len(bars) + 1.1, width=6.0)
    for y, (name, parts) in enumerate(reversed(bars)):
        left = 0.0
        for key, share in parts:
            ax.barh(y, share, left=left, color=_LEGEND[key][1], edgecolor="#555555", lw=0.4)
            if share >= 0.08:  # a narrower segment has no room for its label at the book's font size
                ax.text(left + share / 2, y, f"{100 * share:.0f}%", ha="center", va="center", fontsize=style.FONT)
            left += share
    ax.set_yticks(range(len(bars)), [b[0] for b in reversed(bars)])
    ax.set_xlim(0, 1)
    entries = dict.fromkeys(_LEGEND.values())
    ax.legend(handles=[Patch(facecolor=c, edgecolor="#555555", lw=0.4, label=lab) for lab, c in entries],
              loc="upper center", bbox_to_anchor=(0.4, -0.16), ncol=3, frameon=False, fontsize=style.FONT)
    return style.finish(ax, "share of latents", "", None, legend=False, grid=False)
