"""Figures of the reproduce report (:func:`abstopk_mini.runs.reproduce.reproduce`): SAEs on a
language model.

Every figure function returns a :class:`abstopk_mini.chapters.style.Figure` registered with pyplot,
with labelled axes and a title; colours, sizes and fonts come from
:mod:`abstopk_mini.chapters.style`. :func:`report_figures` draws them all from a report and saves
them beside it (the ``figures`` that ``python -m abstopk_mini reproduce`` hands to the run).
"""

from __future__ import annotations

from pathlib import Path

from . import style

__all__ = ["fvu_l0_frontier", "fvu_vs_k", "concept_bars", "steering_curves", "report_figures", "reference_frontier",
           "reference_table", "recipe_table", "recipe_label", "REFERENCE_SYSTEMS", "RECIPE_VARIANTS"]

#: the trainers of ``results/penalty_family.jsonl`` (benchmarks/bench_family.py): label and line style
REFERENCE_SYSTEMS = {"ours": ("ours", "-"), "saelens": ("SAELens", ":"), "saelens-target": ("SAELens, target L0", "--")}

#: the variants of ``results/grad_clip.jsonl`` (benchmarks/ablate_recipe.py): what each changes from ours
#: unclipped (``base``); ``name=X`` variants are spelled out by :func:`recipe_label`
RECIPE_VARIANTS = {
    "base": "ours, gradient not clipped", "clip": "gradient clipped at global norm 1",
    "bw05": "STE bandwidth 0.05 (ours 0.2)", "eps": "Adam eps 1e-8 (ours 6.25e-10)",
    "coef1": "L0 coefficient 1 (ours 2)", "nowarm": "no warm-up of the L0 term", "row": "L0 term per row",
    "free": "free decoder norms, clipped", "lsq": "encoder scaled to the data at the start",
    "lsqc": "encoder scaled to the data, l1 coefficient divided by the scale", "free+noclip": "free decoder norms, not clipped",
    "bw05+eps+free+row+coef1+nowarm": "all of SAELens's choices at once",
}
_RECIPE_KNOBS = {"b2": "Adam beta2 {} (ours 0.999)", "eps": "Adam eps {}", "clipat": "clipped at norm {}", "c": "L0 coefficient {}"}


def recipe_label(variant: str) -> str:
    """What a variant of ``benchmarks/ablate_recipe.py`` changes, in words: ``"clip+eps=1e-13"`` ->
    ``"gradient clipped at global norm 1 + Adam eps 1e-13"``."""
    if variant in RECIPE_VARIANTS:
        return RECIPE_VARIANTS[variant]
    parts = []
    for part in variant.split("+"):
        name, _, value = part.partition("=")
        parts.append(_RECIPE_KNOBS[name].format(value) if value and name in _RECIPE_KNOBS else RECIPE_VARIANTS.get(part, part))
    return " + ".join(parts)


#: dots per inch of the report's PNGs
REPORT_DPI = 110


def fvu_l0_frontier(rows: list[dict], title: str = "Reconstruction vs sparsity"):
    """rows: the report's SAE rows (activation, l0, fvu and, optionally, splice_loss_recovered_mean). Drawn by
    chapter 6's :func:`abstopk_mini.chapters.plots_real.frontier`: one curve per activation through its SAEs
    at several k, FVU and, when every row has it, loss recovered (mean ablation) against L0."""
    from .plots_real import frontier

    return frontier([r | {"loss_recovered_mean": r["splice_loss_recovered_mean"]}
                     if r.get("splice_loss_recovered_mean") is not None else r for r in rows], title=title)


@style.styled
def fvu_vs_k(rows: list[dict], title: str = "TopK vs AbsTopK at equal width"):
    """rows: dicts with activation (topk/abstopk), k, fvu and dead_frac. Two panels."""
    fig, (a1, a2) = style.subplots(1, 2, height=3.0, pyplot=True)
    for act in ("topk", "abstopk"):
        pts = sorted((r["k"], r["fvu"], r["dead_frac"]) for r in rows if r["activation"] == act)
        if not pts:
            continue
        ks, fvus, dead = zip(*pts)
        a1.plot(ks, fvus, "o-", color=style.color(act), label=style.label(act))
        a2.plot(ks, [100 * d for d in dead], "o-", color=style.color(act), label=style.label(act))
    for ax, ylabel, t in ((a1, "FVU (held-out)", title), (a2, "dead latents (%)", "Dead latents")):
        ax.set_xscale("log", base=2)
        style.finish(ax, "k", ylabel, t)
    return fig


@style.styled
def concept_bars(results: dict[str, dict], title: str = "Gender (family pairs), test split"):
    """results: name -> a concepts report. Bars: sign, threshold, pair rule and DiM accuracy (one
    grey per rule, DiM black; the SAEs are the groups on the x axis)."""
    metrics = [("sign_accuracy", "best latent, sign"), ("threshold_accuracy", "best latent, threshold"),
               ("best_pair_accuracy", "best two-latent rule"), ("dim_test_accuracy", "Difference in Means")]
    names = list(results)
    fig, ax = style.subplots(height=3.8, pyplot=True)
    width = 0.8 / len(metrics)
    shades = ("0.82", "0.6", "0.38", style.REFERENCE)  # rules, not methods: greys, DiM black
    for i, ((key, label), shade) in enumerate(zip(metrics, shades)):
        ax.bar([j + i * width for j in range(len(names))], [results[n][key] for n in names], width, label=label,
               color=shade)
    ax.axhline(0.5, color=style.REFERENCE, lw=0.8, ls=":")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    ax.set_ylim(0, 1.05)
    style.finish(ax, "SAE", "accuracy (balanced, per word)", title, legend=False, grid=False)
    fig.legend(loc="outside lower center", ncol=2)
    return fig


@style.styled
def steering_curves(curves: dict[str, dict], xlabel: str = "clamp value c", title: str = "Steering: female vs male log-odds"):
    """curves: label -> a CurveResult dict (values, log_odds). One line each, in its method's
    colour when the label starts with an activation name."""
    fig, ax = style.subplots(height=3.6, pyplot=True)
    for i, (label, c) in enumerate(curves.items()):
        ax.plot(c["values"], c["log_odds"], "o-", color=style.color(label, default=f"C{i}"), label=label)
    ax.axhline(0, color=style.REFERENCE, lw=0.8, ls=":")
    return style.finish(ax, xlabel, "mean log p(female) − log p(male)", title)


@style.styled
def reference_frontier(rows: list[dict], title: str = "Ours and SAELens on the same activations"):
    """rows: the records of ``benchmarks/bench_family.py`` (system, activation, held_l0, held_fvu). Held-out
    FVU against L0, one curve per (trainer, activation): colour by activation, line style by trainer."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = style.subplots(height=3.8, pyplot=True)
    groups = dict.fromkeys((r["system"], r["activation"]) for r in rows)
    for system, act in groups:
        pts = sorted((r["held_l0"], r["held_fvu"]) for r in rows if (r["system"], r["activation"]) == (system, act))
        name, ls = REFERENCE_SYSTEMS.get(system, (system, "-."))
        ax.plot(*zip(*pts), marker="o", ls=ls, color=style.color(act), label=f"{style.label(act)}: {name}")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    style.finish(ax, "L0 (held-out)", "FVU (held-out)", title, legend=False)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2)
    return fig


def reference_table(rows: list[dict]) -> style.Table:
    """rows: the records of ``benchmarks/bench_family.py``. One row per SAE: trainer, activation, its knob
    (our target L0 / k, SAELens's coefficient), held-out FVU, L0, dead %, and loss recovered (mean
    ablation) where the record has it."""
    out = []
    for r in rows:
        knob = (f"coef. {r['coefficient']:g}" if r["system"] == "saelens"
                else f"{'k' if r['activation'] == 'topk' else 'target'} {r['target']}")
        row = {"trainer": REFERENCE_SYSTEMS.get(r["system"], (r["system"],))[0], "SAE": style.label(r["activation"]),
               "setting": knob, "FVU": r["held_fvu"], "L0": r["held_l0"], "dead %": 100 * r["dead_frac"]}
        if "loss_recovered_mean" in r:
            row["loss rec. (mean)"] = r["loss_recovered_mean"]
        out.append(row)
    return style.Table(out, digits=4, formats={"L0": ".1f", "dead %": ".1f", "loss rec. (mean)": ".3f"})


def recipe_table(rows: list[dict], keep=None) -> style.Table:
    """rows: the records of ``benchmarks/ablate_recipe.py`` (act, K, v, held_fvu, held_l0, dead_frac), in
    their order; keep(row) selects some. One row per run: the SAE, its k or target L0, what the run
    changed (:func:`recipe_label`), held-out FVU, L0 and the share of latents that never fire."""
    out = [{"SAE": style.label(r["act"]), "k / target": r["K"], "change": recipe_label(r["v"]),
            "FVU": r["held_fvu"], "L0": r["held_l0"], "never fire %": 100 * r["dead_frac"]}
           for r in rows if keep is None or keep(r)]
    return style.Table(out, digits=4, formats={"L0": ".1f", "never fire %": ".1f"})


def report_figures(report: dict, out) -> list[str]:
    """Draw the figures of a reproduce ``report`` (the dict :func:`abstopk_mini.runs.reproduce.reproduce`
    returns and writes as ``report.json``) into the folder ``out``, at :data:`REPORT_DPI`; returns
    their file names: the reconstruction-sparsity frontier and the k sweep always, the gender axis
    and the steering curves when the report has them."""
    import matplotlib.pyplot as plt

    from ..runs.reproduce import K_SWEEP

    s, rows, steer = report["settings"], report["saes"], report.get("steering")
    figs = {
        "fvu_l0.png": fvu_l0_frontier(rows, title=f"{s['model']} L{s['layer']}, d_sae={s['d_sae']}"),
        "k_sweep.png": fvu_vs_k([r for r in rows if r["activation"] in K_SWEEP]),
    }
    if report["gender"]:
        figs["gender.png"] = concept_bars(report["gender"])
    if steer and "clamp" in steer:
        figs["steering.png"] = steering_curves({f"AbsTopK latent {steer['latent']} (clamp)": steer["clamp"],
                                                "DiM at matched norm (add)": steer["dim"]})
    for name, fig in figs.items():
        fig.savefig(Path(out) / name, dpi=REPORT_DPI)
        plt.close(fig)
    return list(figs)
