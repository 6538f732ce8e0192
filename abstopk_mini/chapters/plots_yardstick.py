r"""Tables and figures of chapter 12 (SAEBench's yardstick). They read the records of
``python -m abstopk_mini bench`` (``results/saebench.jsonl``, :mod:`abstopk_mini.runs.saebench`);
nothing is recomputed here.
"""

from __future__ import annotations

from . import style

__all__ = ["sae_label", "probing_table", "absorption_table", "probing_figure", "absorption_figure"]

_TASKS = {"sentiment": "sentiment (movie reviews)", "newsgroups": "topic (newsgroups)"}
_VIEWS = {"signed": "codes as they are", "split": "each sign its own latent"}
_RECIPES = {"ours": "our recipe", "paper": "the paper's recipe"}


def sae_label(record: dict) -> str:
    """"AbsTopK (seed 0, our recipe)": a record's SAE by its activation and how it was made (``made``)."""
    name = style.ACTIVATION_LABELS.get(record["activation"], record["activation"])
    made = record.get("made", {})
    bits = [f"seed {made['seed']}"] if "seed" in made else []
    if made.get("recipe"):
        bits.append(_RECIPES.get(made["recipe"], f"{made['recipe']} recipe"))
    return name + (f" ({', '.join(bits)})" if bits else "")


def probing_table(records, ks=(1, 2, 5, 20)) -> style.Table:
    """One row per SAE and task: test accuracy of the top-k probe (mean over the text splits) on the
    signed codes, on |z|, and on the residual stream's top-k channels."""
    rows = []
    for r in records:
        for task, p in r["sparse_probing"].items():
            row = {"SAE": sae_label(r), "task": _TASKS.get(task, task)}
            for k in ks:
                row[f"z, k={k}"] = p["sae"][str(k)]["mean"]
            for k in ks:
                row[f"|z|, k={k}"] = p["sae_abs"][str(k)]["mean"]
            for k in ks:
                row[f"residual, k={k}"] = p["residual"][str(k)]["mean"]
            row["residual, all"] = p["residual"]["full"]["mean"]
            rows.append(row)
    key = ["SAE", "task"] + [f"z, k={k}" for k in ks] + [f"|z|, k={ks[0]}", f"residual, k={ks[0]}", "residual, all"]
    return style.Table(rows, key=key, labels={c: c for c in rows[0]})


def absorption_table(records) -> style.Table:
    """One row per SAE and view: mean absorption fraction, full-absorption rate and latents per letter,
    over the letters the probe reads (F1 > 0.6)."""
    rows = []
    for r in records:
        for view, a in r["absorption"].items():
            rows.append({"SAE": sae_label(r), "view": _VIEWS[view], "letters": a["n_letters"],
                         "absorption fraction": a["mean_absorption_fraction"], "sd": a["std_absorption_fraction"],
                         "full absorption": a["mean_full_absorption"],
                         "latents per letter": a["mean_num_split_features"]})
    return style.Table(rows, labels={c: c for c in rows[0]})


@style.styled
def probing_figure(records, ks=(1, 2, 5, 20)):
    """Accuracy against k for each task: each SAE's signed codes (solid), AbsTopK's |z| (dashed) and the
    residual stream's top-k channels (black); bars: the standard deviation over the text splits."""
    tasks = list(records[0]["sparse_probing"])
    fig, axes = style.subplots(1, len(tasks), height=3.4, squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        x = list(range(len(ks)))
        for i, r in enumerate(records):
            p = r["sparse_probing"][task]
            color = style.ACTIVATION_COLORS.get(r["activation"], style.REFERENCE)
            marker = style.ACTIVATION_MARKERS.get(r["activation"], "o")
            shift = (i - (len(records) - 1) / 2) * 0.06
            ax.errorbar([v + shift for v in x], [p["sae"][str(k)]["mean"] for k in ks],
                        yerr=[p["sae"][str(k)]["sd"] for k in ks], color=color, marker=marker, ms=4, capsize=2,
                        label=sae_label(r))
            if r["activation"] in ("abstopk", "batchabstopk"):
                ax.errorbar([v + shift for v in x], [p["sae_abs"][str(k)]["mean"] for k in ks],
                            yerr=[p["sae_abs"][str(k)]["sd"] for k in ks], color=color, marker=marker, ms=4,
                            capsize=2, ls="--", mfc="white", label=sae_label(r) + ", |z|")
        p = records[0]["sparse_probing"][task]
        ax.plot(x, [p["residual"][str(k)]["mean"] for k in ks], color=style.REFERENCE, marker=".", lw=1,
                label="residual stream, top-k channels")
        ax.axhline(0.5, color="#999999", lw=0.8, ls=":")
        ax.set_xticks(x, [str(k) for k in ks])
        style.finish(ax, "k (latents or channels per probe)", "test accuracy" if ax is axes[0][0] else "",
                     _TASKS.get(task, task), legend=False)
    style.legend_below(fig, ncol=2)
    return fig


@style.styled
def absorption_figure(records, view: str = "split"):
    """Mean absorption fraction per first letter (letters the probe reads, F1 > 0.6), one bar per SAE."""
    from ..saebench.first_letter import LETTERS

    fig, ax = style.subplots(1, 1, height=2.8)
    width = 0.8 / max(len(records), 1)
    for i, r in enumerate(records):
        rows = {row["letter"]: row for row in r["absorption"][view]["letters"]}
        xs, ys = [], []
        for j, letter in enumerate(LETTERS):
            row = rows.get(letter)
            if row and row["probe_f1"] > 0.6 and row["absorption_fraction"] is not None:
                xs.append(j + (i - (len(records) - 1) / 2) * width)
                ys.append(row["absorption_fraction"])
        ax.bar(xs, ys, width=width, color=style.ACTIVATION_COLORS.get(r["activation"], style.REFERENCE),
               label=sae_label(r))
    ax.set_xticks(range(26), list(LETTERS))
    style.finish(ax, "first letter", "absorption fraction", None, legend=False)
    style.legend_below(fig, ncol=2)
    return fig
