r"""Tables and figures of chapter 12 (SAEBench's yardstick). They read the records of
``python -m abstopk_mini bench`` (``results/saebench.jsonl``, :mod:`abstopk_mini.runs.saebench`);
nothing is recomputed here. Tables list every record; figures draw one SAE kind (activation and
recipe) per colour, the mean over its seeds, with each seed's value as a small mark.
"""

from __future__ import annotations

from ..nonlinearities import SIGNED_ACTIVATIONS
from . import style

__all__ = ["sae_label", "kind_label", "kinds", "probing_table", "absorption_table", "tpp_table", "probing_figure",
           "absorption_figure", "tpp_figure"]

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


def kind_label(record: dict) -> str:
    """"AbsTopK (our recipe)": a record's SAE kind, its activation and recipe, without the seed."""
    name = style.ACTIVATION_LABELS.get(record["activation"], record["activation"])
    recipe = record.get("made", {}).get("recipe")
    return name + (f" ({_RECIPES.get(recipe, f'{recipe} recipe')})" if recipe else "")


def kinds(records) -> dict[str, list[dict]]:
    """The records grouped by :func:`kind_label`, in the order each kind first appears."""
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(kind_label(r), []).append(r)
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


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


def tpp_table(records, ns=(2, 5, 20, 100, 500)) -> style.Table:
    """One row per SAE and view: TPP (mean over the text splits) at each N, and at N = 20 its two parts:
    the ablated class's own accuracy drop and the mean drop of the other classes' probes."""
    rows = []
    for r in records:
        for view, t in r["tpp"].items():
            row = {"SAE": sae_label(r), "view": _VIEWS[view]}
            for n in ns:
                if str(n) in t["overall"]:
                    row[f"TPP, N={n}"] = t["overall"][str(n)]["total"]["mean"]
            row["own drop, N=20"] = t["overall"]["20"]["intended"]["mean"]
            row["others' drop, N=20"] = t["overall"]["20"]["unintended"]["mean"]
            rows.append(row)
    return style.Table(rows, labels={c: c for c in rows[0]})


def _seeds(ax, x, per_seed, color, marker):
    """Each seed's values as small marks beside the kind's mean."""
    for values in per_seed:
        ax.plot(x, values, ls="none", marker=marker, ms=2.5, color=color, alpha=0.5)


@style.styled
def probing_figure(records, ks=(1, 2, 5, 20)):
    """Accuracy against k for each task: each SAE kind's signed codes (solid), a signed kind's |z|
    (dashed) and the residual stream's top-k channels (black); mean over the kind's seeds (marks: each seed)."""
    tasks = list(records[0]["sparse_probing"])
    groups = kinds(records)
    fig, axes = style.subplots(1, len(tasks), height=3.4, squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        x = list(range(len(ks)))
        for i, (label, recs) in enumerate(groups.items()):
            act = recs[0]["activation"]
            color = style.ACTIVATION_COLORS.get(act, style.REFERENCE)
            marker = style.ACTIVATION_MARKERS.get(act, "o")
            xs = [v + (i - (len(groups) - 1) / 2) * 0.06 for v in x]
            for codes, ls, suffix in (("sae", "-", ""), ("sae_abs", "--", ", |z|")):
                if codes == "sae_abs" and act not in SIGNED_ACTIVATIONS:
                    continue
                per_seed = [[r["sparse_probing"][task][codes][str(k)]["mean"] for k in ks] for r in recs]
                ax.plot(xs, [_mean(v) for v in zip(*per_seed)], color=color, marker=marker, ms=4, ls=ls,
                        mfc="white" if ls == "--" else color, label=label + suffix)
                _seeds(ax, xs, per_seed, color, marker)
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
    """Mean absorption fraction per first letter (letters the probe reads, F1 > 0.6), one bar per SAE
    kind: the mean over its seeds of the letter's fraction."""
    from ..saebench.first_letter import LETTERS

    groups = kinds(records)
    fig, ax = style.subplots(1, 1, height=2.8)
    width = 0.8 / max(len(groups), 1)
    for i, (label, recs) in enumerate(groups.items()):
        xs, ys = [], []
        for j, letter in enumerate(LETTERS):
            rows = [{row["letter"]: row for row in r["absorption"][view]["letters"]}.get(letter) for r in recs]
            if all(row and row["probe_f1"] > 0.6 and row["absorption_fraction"] is not None for row in rows):
                xs.append(j + (i - (len(groups) - 1) / 2) * width)
                ys.append(_mean(row["absorption_fraction"] for row in rows))
        ax.bar(xs, ys, width=width, color=style.ACTIVATION_COLORS.get(recs[0]["activation"], style.REFERENCE),
               label=label)
    ax.set_xticks(range(26), list(LETTERS))
    style.finish(ax, "first letter", "absorption fraction", None, legend=False)
    style.legend_below(fig, ncol=2)
    return fig


@style.styled
def tpp_figure(records):
    """TPP against the number N of ablated latents, one line per SAE kind: the split view (solid) and, for
    signed kinds, SAEBench's rule on the codes as they are (dashed); mean over seeds (marks: each seed)."""
    groups = kinds(records)
    fig, ax = style.subplots(1, 1, height=3.2)
    for label, recs in groups.items():
        act = recs[0]["activation"]
        color = style.ACTIVATION_COLORS.get(act, style.REFERENCE)
        marker = style.ACTIVATION_MARKERS.get(act, "o")
        for view, ls in (("split", "-"), ("signed", "--")):
            if view == "signed" and act not in SIGNED_ACTIVATIONS:
                continue  # a TopK code has no negative side: both views are one
            ns = [int(n) for n in recs[0]["tpp"][view]["overall"]]
            per_seed = [[r["tpp"][view]["overall"][str(n)]["total"]["mean"] for n in ns] for r in recs]
            ax.plot(ns, [_mean(v) for v in zip(*per_seed)], color=color, marker=marker, ms=4, ls=ls,
                    mfc="white" if ls == "--" else color,
                    label=label + (", codes as they are" if view == "signed" else ""))
            _seeds(ax, ns, per_seed, color, marker)
    ax.axhline(0.0, color="#999999", lw=0.8, ls=":")
    ax.set_xscale("log")
    style.plain_log_labels(ax.xaxis)
    style.finish(ax, "N (latents ablated per class)", "TPP", None, legend=False)
    style.legend_below(fig, ncol=2)
    return fig
