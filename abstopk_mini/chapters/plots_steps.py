r"""Figures and tables of chapter 10: is the AbsTopK − TopK gap a matter of optimiser steps?

Everything here reads records of ``results/steps_vs_tokens.jsonl`` (written by
``python -m abstopk_mini sweep --config sweeps/steps.json``). One record is one trained SAE; a
record of a run with snapshots also holds ``snapshots``: the same SAE after ``step`` optimiser
steps, with its held-out FVU (see :mod:`abstopk_mini.runs.sweep`). :func:`points` flattens both
into rows ``(activation, seed, batch, step, tokens, fvu, final)``; the relative gap at a step is

.. math:: \mathrm{gap} = \mathrm{FVU}_{\mathrm{AbsTopK}} / \mathrm{FVU}_{\mathrm{TopK}} - 1,

between the two SAEs of the same batch size, seed and step (positive: TopK reconstructs better).
"""

from __future__ import annotations

from . import style
from .plots_sweep import get

__all__ = ["points", "pair_gaps", "final_table", "protocol_rows", "test_k_rows", "steps_figure", "test_k_figure",
           "gap_summary"]

_MARK = {128: "o", 256: "^", 1024: "s", 4096: "D"}


def points(records) -> list[dict]:
    """One row per (SAE, step): every snapshot of every record, then its final weights (``final=True``)."""
    rows = []
    for r in records:
        base = {"activation": r["activation"], "seed": r["seed"], "batch": r["batch_size"], "stage": r["stage"]}
        for s in r.get("snapshots", []):
            rows.append(base | {"step": s["step"], "tokens": s["tokens"], "fvu": s["heldout"]["fvu"], "final": False,
                                "dead_frac": get(s, "heldout.dead_frac"), "kl": get(s, "splice.kl_sae")})
        rows.append(base | {"step": r["train"]["n_steps"], "tokens": r["train"]["n_tokens"], "fvu": r["heldout"]["fvu"],
                            "final": True, "dead_frac": get(r, "heldout.dead_frac"), "kl": get(r, "splice.kl_sae"),
                            "loss_recovered": get(r, "splice.loss_recovered_zero")})
    return rows


def pair_gaps(records, a: str = "abstopk", b: str = "topk") -> list[dict]:
    """The relative FVU gap of ``a`` over ``b`` at every (batch, seed, step, final) both have."""
    rows = points(records)
    other = {(p["batch"], p["seed"], p["step"], p["final"]): p for p in rows if p["activation"] == b}
    out = []
    for p in rows:
        q = other.get((p["batch"], p["seed"], p["step"], p["final"]))
        if p["activation"] == a and q is not None:
            out.append({"batch": p["batch"], "seed": p["seed"], "step": p["step"], "tokens": p["tokens"],
                        "final": p["final"], f"fvu_{b}": q["fvu"], f"fvu_{a}": p["fvu"], "gap": p["fvu"] / q["fvu"] - 1})
    return sorted(out, key=lambda r: (r["batch"], r["seed"], r["step"], r["final"]))


def final_table(records) -> style.Table:
    """The final SAEs, one row per (batch, seed): steps, passes, FVU of each, gap, KL and loss recovered
    (the page shows every column but the passes; the collapsed full table has them too)."""
    by = {}
    for r in records:
        by.setdefault((r["batch_size"], r["seed"]), {})[r["activation"]] = r
    rows = []
    for (batch, seed), d in sorted(by.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        if not {"topk", "abstopk"} <= set(d):
            continue
        t, a = d["topk"], d["abstopk"]
        rows.append({"batch": batch, "seed": seed, "steps": t["train"]["n_steps"],
                     "passes": t["train"]["n_tokens"] / t["harvest"]["n_tokens"],
                     "FVU TopK": t["heldout"]["fvu"], "FVU AbsTopK": a["heldout"]["fvu"],
                     "gap %": 100 * (a["heldout"]["fvu"] / t["heldout"]["fvu"] - 1),
                     "KL TopK": get(t, "splice.kl_sae"), "KL AbsTopK": get(a, "splice.kl_sae"),
                     "LR TopK": get(t, "splice.loss_recovered_zero"), "LR AbsTopK": get(a, "splice.loss_recovered_zero")})
    return style.Table(rows, digits=4, formats={"passes": ".2f", "gap %": "+.1f", "KL TopK": ".3f", "KL AbsTopK": ".3f"},
                       key=[c for c in rows[0] if c != "passes"])


def gap_summary(records) -> dict:
    """The final gaps (%) by batch size, each a list over seeds: what the prose quotes."""
    out = {}
    for g in pair_gaps(records):
        if g["final"]:
            out.setdefault(g["batch"], []).append(round(100 * g["gap"], 1))
    return out


def protocol_rows(records, ratio: int = 3) -> list[dict]:
    """The paper's comparison replayed on our snapshots: AbsTopK after S steps against TopK after
    S steps (equal) and after S/ratio steps (TopK stopped ``ratio`` times earlier), for every S
    whose S/ratio is also a snapshot of the same run (same batch size and seed)."""
    rows = points(records)
    fvu = {(p["activation"], p["batch"], p["seed"], p["step"]): p["fvu"] for p in rows if not p["final"]}
    out = []
    for (act, batch, seed, step), v in sorted(fvu.items()):
        early = (("topk", batch, seed, step // ratio) if step % ratio == 0 else None)
        if act != "abstopk" or early not in fvu or ("topk", batch, seed, step) not in fvu:
            continue
        out.append({"batch": batch, "seed": seed, "AbsTopK steps": step, "FVU AbsTopK": v,
                    "FVU TopK, equal steps": fvu[("topk", batch, seed, step)],
                    f"FVU TopK, steps/{ratio}": fvu[early],
                    "gap % equal": 100 * (v / fvu[("topk", batch, seed, step)] - 1),
                    f"gap % 1:{ratio}": 100 * (v / fvu[early] - 1)})
    return out


def test_k_rows(records) -> list[dict]:
    """FVU when an SAE trained at one k keeps another k at test time, one row per (SAE, k)."""
    out = []
    for r in records:
        for k, v in sorted(r.get("test_k", {}).items(), key=lambda kv: int(kv[0])):
            out.append({"activation": r["activation"], "seed": r["seed"], "batch": r["batch_size"],
                        "trained k": r["k"], "test k": int(k), "fvu": v})
    return out


@style.styled
def steps_figure(records, log_tokens: bool = False):
    """Left: held-out FVU against optimiser steps, per SAE (colour: activation; marker: batch
    size; lines join the snapshots of one run, seed 0; filled markers are final, decayed SAEs).
    Right: the relative gap at each step both SAEs have."""
    fig, (ax, bx) = style.subplots(1, 2, height=3.8)
    rows = points(records)
    for act in ("topk", "abstopk"):
        for batch in sorted({p["batch"] for p in rows}):
            for seed in sorted({p["seed"] for p in rows}):
                run = sorted((p for p in rows if (p["activation"], p["batch"], p["seed"]) == (act, batch, seed)),
                             key=lambda p: p["step"])
                if not run:
                    continue
                c = style.color(act)
                if seed == 0 and len(run) > 1:
                    ax.plot([p["step"] for p in run], [p["fvu"] for p in run], color=c, lw=1, alpha=0.7,
                            ls=style.line_style(act)["ls"])
                fin = [p for p in run if p["final"]]
                ax.scatter([p["step"] for p in fin], [p["fvu"] for p in fin], color=c, marker=_MARK.get(batch, "o"),
                           s=28, zorder=3, label=f"{style.label(act)}, batch {batch}" if seed == 0 else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    style.finish(ax, "optimiser steps", "held-out FVU", "FVU against steps", legend=False)
    style.plain_log_labels(ax.yaxis)
    gaps = pair_gaps(records)
    for batch in sorted({g["batch"] for g in gaps}):
        for seed in sorted({g["seed"] for g in gaps}):
            run = [g for g in gaps if (g["batch"], g["seed"]) == (batch, seed)]
            if not run:
                continue
            kw = {"color": style.REFERENCE, "marker": _MARK.get(batch, "o"), "ms": 4, "lw": 1,
                  "alpha": 1.0 if seed == 0 else 0.5}
            bx.plot([g["step"] for g in run], [100 * g["gap"] for g in run], **kw)  # marker: batch, as on the left
    bx.axhline(0, color=style.REFERENCE, lw=0.8)
    bx.set_xscale("log")
    style.finish(bx, "optimiser steps", "AbsTopK / TopK − 1 (%)", "gap (seed 1 faint)")
    return style.legend_below(fig, ncol=2)  # both panels' entries below them: no legend over the gaps


@style.styled
def test_k_figure(records, batch: int | None = None):
    """Held-out FVU when an SAE trained at k keeps another k at test time (the final SAEs of one
    batch size, default the smallest; one line per activation and seed)."""
    rows = test_k_rows(records)
    batch = batch if batch is not None else min(r["batch"] for r in rows)
    fig, ax = style.subplots(1, 1, height=3.2)  # the book's width, so its text shows at every figure's size
    for act in ("topk", "abstopk"):
        for seed in sorted({r["seed"] for r in rows}):
            run = [r for r in rows if (r["activation"], r["seed"], r["batch"]) == (act, seed, batch)]
            if run:
                ax.plot([r["test k"] for r in run], [r["fvu"] for r in run], marker="o", ms=3,
                        label=f"{style.label(act)}, seed {seed}", alpha=1.0 if seed == 0 else 0.5,
                        **style.line_style(act))
                ax.axvline(run[0]["trained k"], color=style.REFERENCE, lw=0.6, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    style.plain_log_labels(ax.yaxis)
    style.finish(ax, "k at test time", "held-out FVU", f"trained at k = 32, batch {batch}")
    return style.legend_below(fig, ncol=2)


