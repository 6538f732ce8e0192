r"""Tables and figures of chapter 10 beyond steps: the recipe ladder (at 1,172 and at 10,938 steps),
the batch-level deficit and its budget, gender in natural text and the steering controls. Each
reads records (``results/recipe_ladder.jsonl``, ``results/recipe_ladder_long.jsonl``,
``results/batch_level.jsonl``, ``results/batch_budget.jsonl``, ``results/auxk_window.jsonl``,
``results/dead_latents.jsonl``, ``results/bidirectional.jsonl``, ``results/paper_recipe_30k.jsonl``);
nothing is recomputed here.
"""

from __future__ import annotations


from matplotlib import ticker

from . import style
from .plots_steps import points
from .plots_sweep import get

__all__ = ["ladder_table", "ladder_long_table", "trajectory_rows", "trajectory_table", "trajectory_figure", "budget_table", "dead_table", "sign_table", "batch_level_table", "natural_table",
           "word_count_table", "contexts_table", "controls_table", "controls_figure", "balance_count_table", "balanced_rows"]

#: the ladder's rungs in reading order, with what each switches on
RUNGS = {
    "default": "ours",
    "paper_no_b_enc": "no encoder bias",
    "paper_unit_norm": "per-token standardisation",
    "paper_batch_select": "batch-level selection",
    "paper_b_dec_zeros": "b_dec initialised at 0",
    "paper_adam": "Adam 3e-4, (0.9, 0.99), constant lr",
    "paper_auxk": "AuxK 512, dead after 5 batches",
    "paper_enc_init": "W_enc scaled as Kaiming",
    "paper_all": "all of the paper's choices",
    "paper_batch_unit_norm": "batch-level selection + per-token standardisation",
    "paper_dead_window": "dead after 5 batches (AuxK 320 latents)",
    "paper_aux_k": "AuxK 512 latents (our dead window)",
    "paper_dead_window_positive_aux": "dead after 5 batches, AuxK on u > 0 only",
}


def _rungs(records, seed: int | None = None) -> list[tuple[str, dict, dict]]:
    """``(what the rung switches on, TopK record, AbsTopK record)`` for every rung of :data:`RUNGS`
    with both SAEs in ``records`` (of ``seed`` only, unless None), in reading order."""
    by = {}
    for r in records:
        if seed is None or r["seed"] == seed:
            by.setdefault(r["variant"], {})[r["activation"]] = r
    return [(what, by[v]["topk"], by[v]["abstopk"]) for v, what in RUNGS.items()
            if {"topk", "abstopk"} <= set(by.get(v, {}))]


def ladder_table(records, norm_mse: bool = False, seed: int = 0) -> style.Table:
    """One row per rung with both SAEs of ``seed``: held-out FVU (raw space) of TopK and AbsTopK,
    the relative gap, the dead shares, and with ``norm_mse`` the paper's per-token normalised MSE
    (standardising SAEs only)."""
    rows = []
    for what, t, a in _rungs(records, seed):
        rows.append({"rung": what, "FVU TopK": t["heldout"]["fvu"], "FVU AbsTopK": a["heldout"]["fvu"],
                     "gap %": 100 * (a["heldout"]["fvu"] / t["heldout"]["fvu"] - 1),
                     "dead TopK": t["heldout"]["dead_frac"], "dead AbsTopK": a["heldout"]["dead_frac"],
                     "norm. MSE TopK": get(t, "heldout.mse_std"), "norm. MSE AbsTopK": get(a, "heldout.mse_std")})
    cols = ["rung", "FVU TopK", "FVU AbsTopK", "gap %", "dead TopK", "dead AbsTopK"]
    if norm_mse:
        cols += ["norm. MSE TopK", "norm. MSE AbsTopK"]
    return style.Table(rows, columns=cols, digits=4, formats={"gap %": "+.1f", "dead TopK": ".3f", "dead AbsTopK": ".3f"})


def snapshot_fvu(record: dict, step: int) -> float | None:
    """Held-out FVU of ``record``'s SAE at ``step``: a snapshot, or the final SAE (None if neither)."""
    if record["train"]["n_steps"] == step:
        return record["heldout"]["fvu"]
    for snap in record.get("snapshots", []):
        if snap["step"] == step:
            return snap["heldout"]["fvu"]
    return None


def ladder_long_table(records, baseline, at=(1172, 2344, 4688), seed: int = 0) -> style.Table:
    """The ladder at the long budget: one row per rung with both SAEs of ``seed``, ``baseline``
    (records of our recipe at the same settings, e.g. ``sweeps/steps.json`` stage ``long``) first.

    Columns: final held-out FVU of TopK and AbsTopK (with the optimiser steps), their gap, the gap
    at each snapshot step of ``at``, and the dead shares (key columns: FVUs and gaps)."""
    rows = []
    for what, t, a in _rungs(list(baseline) + list(records), seed):
        row = {"rung": what, "steps": t["train"]["n_steps"], "FVU TopK": t["heldout"]["fvu"],
               "FVU AbsTopK": a["heldout"]["fvu"], "gap %": 100 * (a["heldout"]["fvu"] / t["heldout"]["fvu"] - 1)}
        for step in at:
            ft, fa = snapshot_fvu(t, step), snapshot_fvu(a, step)
            row[f"gap % at {step:,}"] = None if ft is None or fa is None else 100 * (fa / ft - 1)
        row |= {"dead TopK": t["heldout"]["dead_frac"], "dead AbsTopK": a["heldout"]["dead_frac"]}
        rows.append(row)
    gaps = [f"gap % at {step:,}" for step in at]
    return style.Table(rows, digits=4, formats={c: "+.1f" for c in ["gap %", *gaps]} | {"steps": ",d", "dead TopK": ".3f",
                                                                                       "dead AbsTopK": ".3f"},
                       key=["rung", "FVU TopK", "FVU AbsTopK", "gap %", *gaps])


def trajectory_rows(records, seed: int = 0) -> list[dict]:
    """One row per step at which both SAEs of one long run (the TopK and AbsTopK records of ``seed``
    in ``records``, e.g. ``results/paper_recipe_30k.jsonl``) were measured: every snapshot and the
    final SAE, in step order.

    Fields: ``steps``, ``tokens`` (training tokens seen), ``FVU TopK``, ``FVU AbsTopK``, ``gap %``
    (100 · (AbsTopK / TopK − 1)), ``dead TopK``, ``dead AbsTopK`` (share of latents that never fire
    on the held-out text) and ``final`` (the end of training)."""
    acts = {r["activation"] for r in records if r["seed"] == seed}
    if not {"topk", "abstopk"} <= acts:
        raise ValueError(f"records hold no TopK and AbsTopK pair of seed {seed} (activations of that seed: "
                         f"{sorted(acts)}); pass the records of one two-SAE run")
    at = {(p["activation"], p["step"]): p for p in points(records) if p["seed"] == seed}
    steps = sorted({s for a, s in at if a == "topk"} & {s for a, s in at if a == "abstopk"})
    rows = []
    for step in steps:
        t, a = at["topk", step], at["abstopk", step]
        rows.append({"steps": step, "tokens": t["tokens"], "FVU TopK": t["fvu"], "FVU AbsTopK": a["fvu"],
                     "gap %": 100 * (a["fvu"] / t["fvu"] - 1), "dead TopK": t["dead_frac"],
                     "dead AbsTopK": a["dead_frac"], "final": t["final"]})
    return rows


def trajectory_table(records, seed: int = 0) -> style.Table:
    """:func:`trajectory_rows` as a table (key columns: steps, the two FVUs, their gap)."""
    return style.Table(trajectory_rows(records, seed), digits=4,
                       formats={"steps": ",d", "tokens": ",d", "gap %": "+.1f", "dead TopK": ".3f", "dead AbsTopK": ".3f"},
                       key=["steps", "FVU TopK", "FVU AbsTopK", "gap %"])


@style.styled
def trajectory_figure(records, others=(), names=("batchtopk", "batchabstopk")):
    """Left: held-out FVU against optimiser steps for the TopK and AbsTopK SAEs of one long run
    (``records``, seed 0: snapshots joined by a line, the final SAE a filled marker), and the final
    SAEs of shorter runs of the same recipe (``others``, every seed: open markers). Right: the gap
    AbsTopK / TopK − 1 of the long run at every step, and of the shorter runs at theirs.
    ``names``: the activations whose colours and labels the two SAEs take (the paper's recipe trains
    BatchTopK and BatchAbsTopK under the family names ``topk`` and ``abstopk``)."""
    fig, (ax, bx) = style.subplots(1, 2, height=3.2)
    rows = trajectory_rows(records)
    for act, column, name in zip(("topk", "abstopk"), ("FVU TopK", "FVU AbsTopK"), names):
        steps, fvu = [r["steps"] for r in rows], [r[column] for r in rows]
        ax.plot(steps, fvu, marker="o", ms=3, lw=1, label=f"{style.label(name)}, {steps[-1]:,} steps", **style.line_style(name))
        ax.scatter(steps[-1:], fvu[-1:], s=30, zorder=3, color=style.color(name))
        ends = [r for r in others if r["activation"] == act]
        ax.scatter([r["train"]["n_steps"] for r in ends], [r["heldout"]["fvu"] for r in ends], s=30, zorder=3,
                   facecolors="none", edgecolors=style.color(name),
                   label=f"{style.label(name)}, {ends[0]['train']['n_steps']:,} steps" if ends else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    style.finish(ax, "optimiser steps", "held-out FVU", "FVU against steps", legend=False)
    style.plain_log_labels(ax.yaxis)
    bx.plot([r["steps"] for r in rows], [r["gap %"] for r in rows], color=style.REFERENCE, marker="o", ms=3, lw=1,
            label=f"seed 0, {rows[-1]['steps']:,} steps")
    for seed in sorted({r["seed"] for r in others}):
        short = trajectory_rows(others, seed)
        bx.plot([r["steps"] for r in short], [r["gap %"] for r in short], color=style.REFERENCE, marker="s", ms=3,
                lw=1, alpha=0.5, ls=":", label=f"seed {seed}, {short[-1]['steps']:,} steps")
    bx.axhline(0, color=style.REFERENCE, lw=0.8)
    bx.set_xscale("log")
    for axis in (ax, bx):  # steps in thousands, at 1k, 2k, 5k, 10k, 30k (no crowded minor labels)
        axis.xaxis.set_major_locator(ticker.FixedLocator([1e3, 2e3, 5e3, 1e4, 3e4]))
        axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
    style.finish(bx, "optimiser steps", f"{style.label(names[1])} / {style.label(names[0])} − 1 (%)", "gap")
    return style.legend_below(fig, ncol=2)  # both panels' entries below them: no legend over the gap curves


def budget_table(records, variant: str | None = "paper_batch_select") -> style.Table:
    """How the SAEs of ``records`` (``results/batch_budget.jsonl``; only ``variant`` unless None)
    spend their budget, one row per SAE and step: FVU read three ways (top k·B of each block,
    the learned threshold, exactly k per token), the share of tokens that get no latent in the
    batch reading, the 1st and 99th percentiles of a token's L0 (``L0 p1–p99``) and the share of
    non-zeros held by the top 10 % of tokens in the batch reading, and Spearman's ρ of a token's L0 with its norm (key
    columns: the SAE, its step, the three FVUs and the spread). The SAE is named by the activation
    it was trained with (a ``paper_batch_select`` point of ``abstopk`` is a BatchAbsTopK SAE)."""
    rows = []
    for r in records:
        if variant is not None and r["variant"] != variant:
            continue
        for s in r["steps"]:
            b = s["batch"]
            q = b["l0_quantiles"]
            rows.append({"SAE": style.label(s.get("activation", r["activation"])), "seed": r["seed"], "step": s["step"],
                         f"FVU top k·B (B = {s['eval_batch_size']})": b["fvu"], "FVU threshold": s["threshold"]["fvu"],
                         "FVU k per token": s["row"]["fvu"], "L0 p1–p99": f"{q['0.01']:.0f}–{q['0.99']:.0f}",
                         "no latent %": 100 * b["share_zero"],
                         "top 10 % hold %": None if b["top_decile_share"] is None else 100 * b["top_decile_share"],
                         "ρ(L0, norm)": b["l0_norm_spearman"], "below k/4 %": 100 * b["share_below_quarter_k"],
                         "error share below k/4 %": 100 * b["error_share_below_quarter_k"],
                         "negative %": None if b["negative_share"] is None else 100 * b["negative_share"]})
    if not rows:
        raise ValueError(f"no budget record of variant {variant!r}; run python -m abstopk_mini budget (see how_to_run)")
    cols = list(rows[0])
    return style.Table(rows, digits=4, formats={"step": ",d", "no latent %": ".1f", "top 10 % hold %": ".0f",
                                               "ρ(L0, norm)": "+.2f", "below k/4 %": ".1f",
                                               "error share below k/4 %": ".1f", "negative %": ".1f"},
                       key=[c for c in cols if c not in ("no latent %", "below k/4 %", "error share below k/4 %",
                                                         "negative %")])


def dead_table(records) -> style.Table:
    """The live and the dead latents of each SAE of ``records`` (``results/dead_latents.jsonl``,
    :func:`abstopk_mini.dead.latent_profile`), at its final step: its seed and held-out FVU, the
    dead share, the dead latents' median reach (how close their best token comes to the selection
    line, 1 = on it), their pre-activation scale E|u| and encoder norm as a ratio to the live
    latents' medians, the median share of tokens on which u > 0 for the live and for the dead
    latents, and the share of dead latents that are ever positive (key columns: all but the dead
    window, the step, the encoder ratio and that share)."""
    rows = []
    for r in records:
        last = r["steps"][-1]
        alive, dead = last["alive"], last["dead"]
        some = dead["n"] > 0  # with no dead latent, the dead columns are empty
        rows.append({"SAE": style.label(r["activation"]), "variant": RUNGS.get(r["variant"], r["variant"]),
                     "seed": r["seed"], "dead after (tokens)": r["sae"]["dead_tokens"], "steps": last["step"],
                     "FVU": r["sae"].get("heldout_fvu"), "dead %": 100 * last["dead_frac"],
                     "dead: reach": dead["reach_median"],
                     "dead: E|u| / live": dead["mean_abs_u_median"] / alive["mean_abs_u_median"] if some else None,
                     "dead: ‖w_enc‖ / live": dead["enc_norm_median"] / alive["enc_norm_median"] if some else None,
                     "live: u > 0 on %": 100 * alive["positive_frac_median"],
                     "dead: u > 0 on %": 100 * dead["positive_frac_median"] if some else None,
                     "dead: ever positive %": 100 * dead["positive_share"] if some else None})
    if not rows:
        raise ValueError("no dead-latent record; run python -m abstopk_mini dead (see how_to_run)")
    cols = list(rows[0])
    return style.Table(rows, digits=2, formats={"dead after (tokens)": ",d", "steps": ",d", "FVU": ".4f", "dead %": ".1f",
                                               "live: u > 0 on %": ".1f", "dead: u > 0 on %": ".1f",
                                               "dead: ever positive %": ".0f"},
                       key=[c for c in cols if c not in ("dead after (tokens)", "steps", "dead: ‖w_enc‖ / live",
                                                         "dead: ever positive %")])


def sign_table(records, activation: str = "abstopk") -> style.Table:
    """How the SAEs of ``activation`` in ``records`` (sweep records, e.g. ``results/auxk_window.jsonl``)
    use their signs, one row per SAE: held-out FVU, the share of latents dead on the held-out text,
    the share flagged dead at the last training step (what AuxK trained), the share of alive
    latents that are bidirectional (each sign holds at least 10 % of its firings,
    :func:`abstopk_mini.metrics.bidirectional_mask`) and the share of non-zero codes that are
    negative (key columns: all)."""
    rows = [{"variant": RUNGS.get(r["variant"], r["variant"]), "seed": r["seed"], "FVU": r["heldout"]["fvu"],
             "dead %": 100 * r["heldout"]["dead_frac"], "flagged dead at the end %": 100 * r["train"]["final_dead_frac"],
             "bidirectional %": 100 * r["heldout"]["bidirectional_frac"], "negative codes %": 100 * r["heldout"]["negative_share"]}
            for r in records if r["activation"] == activation]
    if not rows:
        raise ValueError(f"no record of activation={activation!r} (activations: {sorted({r['activation'] for r in records})})")
    return style.Table(rows, digits=1, formats={"FVU": ".4f"})


def _last_batch_fvu(record):
    """The last training batch's FVU: ``train.last_batch_fvu``, or ``train.final_fvu`` in a record
    written before that name existed (no ``train.final_sample``: then final_fvu was the last batch's);
    NaN when the record has neither."""
    train = record.get("train", {})
    new = "last_batch_fvu" in train or "final_sample" in train
    return get(record, "train.last_batch_fvu" if new else "train.final_fvu")


def batch_level_table(records) -> style.Table:
    """Batch-level SAEs read two ways: the moving-average threshold (our eval) and the top k·B of
    each block of B held-out tokens (the paper's inference); with the FVU of the last training
    batch and the held-out share of dead latents."""
    rows = []
    for r in records:
        b = r.get("heldout_batch_inference", {})
        rows.append({"SAE": style.label(r["activation"]), "steps": r["train"]["n_steps"],
                     "FVU threshold": r["heldout"]["fvu"], "L0 threshold": r["heldout"]["l0"],
                     f"FVU top k·B, B = {b.get('batch', '-')}": b.get("fvu"),
                     "FVU last train batch": _last_batch_fvu(r), "dead": r["heldout"]["dead_frac"]})
    return style.Table(rows, digits=4, formats={"L0 threshold": ".1f", "dead": ".3f"})


def natural_table(records) -> style.Table:
    """Per seed and SAE: the latent chosen on training-text occurrences, tested on every held-out one
    (key columns: the latent, its sign accuracy and pair share, DiM's accuracy, the best pair of
    latents and the count of latents at a held-out pair share >= 0.8)."""
    rows = []
    for rec in records:
        for act in ("abstopk", "topk"):
            n, s = rec["natural"][act], rec["scan"][act]
            bp = s.get("best_pair", {})
            rows.append({"seed": rec["seed"], "SAE": style.label(act), "latent": n.get("best_latent"),
                         "sign acc.": n.get("sign_accuracy"), "strict": n.get("sign_accuracy_strict"),
                         "pair share": n.get("pair_share"), "occ. share": n.get("occurrence_share"),
                         "DiM acc.": n.get("dim_test_accuracy"),
                         "best pair": "/".join(str(j) for j in bp.get("latents", [])),
                         "pair of latents share": bp.get("test_pair_share"),
                         "latents ≥ 0.8": s.get("n_latents_test_pair_share_ge_0.8"),
                         "train / test occ.": f"{n.get('n_train')} / {n.get('n_test')}"})
    return style.Table(rows, digits=3, key=["seed", "SAE", "latent", "sign acc.", "pair share", "DiM acc.",
                                            "pair of latents share", "latents ≥ 0.8"])


def word_count_table(record, top: int = 12) -> style.Table:
    """Counts of the gender words in the training and held-out text (the data balance)."""
    n = record["natural"]["abstopk"]
    held, train = n["word_counts"], n.get("train_text_word_counts", {})
    rows = []
    for pair in n["pairs"][:top]:
        a, b = pair["pair"]
        rows.append({"male": a, "female": b, "train male": train.get(a), "train female": train.get(b),
                     "held-out male": held.get(a), "held-out female": held.get(b)})
    return style.Table(rows)


def contexts_table(record) -> style.Table:
    """Share of the top-n contexts of each sign with a male / female word nearby, against the null."""
    rows = []
    names = {"abstopk": "AbsTopK latent", "topk_male": "TopK male latent", "topk_female": "TopK female latent"}
    for name, c in record["contexts"].items():
        for side in ("positive", "negative"):
            sh, nl = c["shares"][side], c["null"][side]
            rows.append({"latent": f"{names.get(name, name)} {c['latent']}",
                         "side": side if side == "positive" or c["negative_source"] == "z" else "negative u",
                         "male": sh.get("male"), "female": sh.get("female"),
                         "null male": f"{nl['male']['low']:.2f}–{nl['male']['high']:.2f}",
                         "null female": f"{nl['female']['low']:.2f}–{nl['female']['high']:.2f}"})
    return style.Table(rows, digits=2)


_METHODS = {"abstopk_clamp": "AbsTopK latent clamped", "topk_add": "TopK female latent added", "dim": "DiM"}


def _method_label(m: str) -> str:
    if m.startswith("random_cos"):
        return "random, matched cos"
    if m.startswith("random"):
        return "random"
    return _METHODS.get(m, m)


def controls_table(record) -> style.Table:
    """Mean female-vs-male log-odds shift over prompts at the largest −c and +c, with 95 % intervals."""
    st = record["steering"]
    lo, hi = 0, len(st["values"]) - 1
    rows = []
    for i, m in enumerate(st["methods"]):
        rows.append({"method": _method_label(m) + ("" if not m.startswith("random") else f" ({m.rsplit('s', 1)[-1]})"),
                     f"shift at {st['values_in_q'][lo]:+g} q": st["shift"][i][lo],
                     "interval (−)": f"{st['low'][i][lo]:+.2f} … {st['high'][i][lo]:+.2f}",
                     f"shift at {st['values_in_q'][hi]:+g} q": st["shift"][i][hi],
                     "interval (+)": f"{st['low'][i][hi]:+.2f} … {st['high'][i][hi]:+.2f}"})
    return style.Table(rows, digits=2)


@style.styled
def controls_figure(record):
    """The female-vs-male log-odds shift against the value c (in units of q) for every control;
    bands: 95 % intervals over prompts."""
    st = record["steering"]
    fig, ax = style.subplots(1, 1, height=3.6)  # the book's width, so its text shows at every figure's size
    xs = st["values_in_q"]
    palette = {"AbsTopK latent clamped": style.color("abstopk"), "TopK female latent added": style.color("topk"),
               "DiM": style.REFERENCE}
    seen = set()
    for i, m in enumerate(st["methods"]):
        lab = _method_label(m)
        c = palette.get(lab, "#8c8c8c" if lab == "random" else "#bcbd22")
        ax.plot(xs, st["shift"][i], color=c, marker="o", ms=3, lw=1.2 if lab in palette else 0.8,
                label=None if lab in seen else lab)
        if lab in palette:
            ax.fill_between(xs, st["low"][i], st["high"][i], color=c, alpha=0.15, lw=0)
        seen.add(lab)
    ax.axhline(0, color=style.REFERENCE, lw=0.6)
    style.finish(ax, "value c (units of q)", "log-odds shift, female − male", f"seed {record['seed']}")
    return style.legend_below(fig, ncol=2)


def balance_count_table(counts, pairs=None) -> style.Table:
    """Gender word counts of several texts, one row per (male, female) pair: ``counts`` maps a
    text's name to ``{word: count}`` (:func:`abstopk_mini.concepts.count_words`); each cell is
    "male / female". "her" is both the female of "his" and of "him" and is counted in both rows."""
    from ..concepts.occurrences import GENDER_PAIRS

    pairs = GENDER_PAIRS if pairs is None else pairs
    rows = [{"pair": f"{a} / {b}", **{name: f"{c.get(a, 0):,} / {c.get(b, 0):,}" for name, c in counts.items()}}
            for a, b in pairs]
    return style.Table(rows)


def balanced_rows(sweeps: dict, bidirs: dict) -> list[dict]:
    """One row per (training text, seed, SAE), from the sweep records (``sweeps``: text name ->
    records of one TopK / AbsTopK stage per seed) and the bidirectional records of the same SAEs
    (``bidirs``: text name -> records): held-out FVU, spliced KL, the template test's sign latent,
    the natural-text latent chosen on training text (sign accuracy, pair share), the best held-out
    pair share of any single latent, and that of the best pair of latents."""
    rows = []
    for text, recs in sweeps.items():
        by_seed = {b["seed"]: b for b in bidirs.get(text, [])}
        for r in sorted(recs, key=lambda r: (r["seed"], r["activation"] != "abstopk")):
            act, b = r["activation"], by_seed.get(r["seed"])
            if b is not None and b["saes"][act]["key"] != r["key"]:
                raise ValueError(f"the bidirectional record of {text!r} seed {r['seed']} reads SAE {b['saes'][act]['key']}, "
                                 f"not the sweep's {r['key']}; rerun the bidirectional command on this stage")
            n, s = (b["natural"][act], b["scan"][act]) if b else ({}, {})
            top = s.get("top_by_test") or [{}]
            rows.append({"training text": text, "seed": r["seed"], "SAE": style.label(act),
                         "FVU": r["heldout"]["fvu"], "KL spliced": get(r, "splice.kl_sae"),
                         "templates sign acc.": get(r, "concepts.family.sign_latent.sign_accuracy"),
                         "natural sign acc.": n.get("sign_accuracy"), "pair share": n.get("pair_share"),
                         "best latent, held-out pair share": top[0].get("test_pair_share") if act == "abstopk" else None,
                         "pair of latents share": s.get("best_pair", {}).get("test_pair_share")})
    return rows
