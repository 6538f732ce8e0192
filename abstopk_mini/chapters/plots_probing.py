r"""Probing and steering a concept axis (chapters 7 and 8): single-latent probes against
Difference in Means, and steering curves. Re-exported by :mod:`abstopk_mini.chapters.plots_concepts`
(the chapters call them as ``pc.X``).

* :func:`probe_rows` / :func:`probe_figure` — single-latent probes vs DiM on several concepts;
  :func:`gender_rows` — chapter 7's gender test, one row per probe (:data:`GENDER_COLUMNS`).
* :func:`steering_figure` — log-odds curves of several steering methods against :math:`c/q`;
  :func:`steering_rows`, :func:`steering_pair_rows` — the same curves as table rows.

Figures are :class:`abstopk_mini.chapters.style.Figure` objects registered with pyplot; colours,
sizes and fonts come from :mod:`abstopk_mini.chapters.style`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import style

__all__ = ["probe_rows", "GENDER_COLUMNS", "GENDER_KEY", "gender_rows", "probe_figure", "steering_figure", "steering_rows",
           "steering_pair_rows"]


# =============================================================================== probing
def probe_rows(reports: Mapping[str, Mapping[str, dict]]) -> list[dict]:
    """Table rows from concept reports: ``reports[concept][sae_name]`` is a
    :func:`~abstopk_mini.concepts.words.run_concepts` / ``run_sentiment`` dict. One row per (concept,
    probe): the SAE's best single latent (threshold rule), its best two-latent rule, and DiM once
    per concept. Columns: ``per_word`` (balanced per-sample accuracy), ``per_pair`` (relative
    accuracy; None where not measured), ``sign`` (sign rule of the latent), ``coverage`` (a / b)."""
    rows = []
    for concept, by_sae in reports.items():
        first = None
        for name, r in by_sae.items():
            first = first or r
            rows.append({"concept": concept, "probe": f"{name} latent {r['best_latent']}", "per_word": r["threshold_accuracy"],
                         "per_pair": r["relative_accuracy"], "sign": r["sign_accuracy"],
                         "coverage": f"{r['coverage_a']:.2f} / {r['coverage_b']:.2f}"})
            i, j = r["best_pair"]
            rows.append({"concept": concept, "probe": f"{name} pair {i} > {j}", "per_word": r["best_pair_accuracy"],
                         "per_pair": None, "sign": None, "coverage": None})
        rows.append({"concept": concept, "probe": "DiM", "per_word": first["dim_test_accuracy"],
                     "per_pair": first["dim_relative_accuracy"], "sign": None, "coverage": None})
    return rows


#: the columns of :func:`gender_rows`, in order (the table's full view); :data:`GENDER_KEY` is the
#: key view printed in the page.
GENDER_COLUMNS = ("SAE", "latent", "chosen by", "sign acc.", "sign strict", "per word", "per pair", "cover male",
                  "cover female", "pre-act sign", "both signs", "cos DiM")
GENDER_KEY = ("SAE", "latent", "chosen by", "sign acc.", "per word", "per pair", "both signs")


def gender_rows(reports: Mapping[str, dict]) -> list[dict]:
    """Table rows for chapter 7's gender test from ``reports[sae_name]``, each a
    :func:`~abstopk_mini.concepts.words.run_concepts` family report. Per SAE: the latent chosen by
    the threshold rule (``best_latent``, with its per-word accuracy), the latent chosen by the sign
    rule (``sign_latent``), and the best two-latent rule (``best_pair``, "i > j"); then DiM once, from
    the first report. Every row has every column of :data:`GENDER_COLUMNS`; None where a probe has
    no such number (a pair rule has no single sign, DiM no coverage)."""
    rows = []
    for name, r in reports.items():
        for which, s in (("threshold", r), ("sign", r["sign_latent"])):
            rows.append({"SAE": name, "latent": s["best_latent"] if which == "threshold" else s["latent"],
                         "chosen by": which, "sign acc.": s["sign_accuracy"], "sign strict": s["sign_accuracy_strict"],
                         "per word": r["threshold_accuracy"] if which == "threshold" else None,
                         "per pair": s["relative_accuracy"], "cover male": s["coverage_a"],
                         "cover female": s["coverage_b"], "pre-act sign": s["preact_sign_accuracy"],
                         "both signs": s["bidirectional_share"], "cos DiM": s["cos_to_dim"]})
    for name, r in reports.items():
        rows.append({"SAE": name, "latent": "{} > {}".format(*r["best_pair"]), "chosen by": "pair rule",
                     "sign acc.": r["best_pair_accuracy"], "sign strict": r["best_pair_accuracy_strict"]})
    first = next(iter(reports.values()))
    rows.append({"SAE": "-", "latent": "DiM", "chosen by": "mean difference", "per word": first["dim_test_accuracy"],
                 "per pair": first["dim_relative_accuracy"]})
    return [{c: row.get(c) for c in GENDER_COLUMNS} for row in rows]


@style.styled
def probe_figure(reports: Mapping[str, Mapping[str, dict]], sae_colors: Sequence[str] | None = None):
    """Two panels, per-word and per-pair test accuracy by concept: each SAE's best single latent
    (and, per word, its best two-latent rule, hatched) against Difference in Means (black).
    ``sae_colors``: one per SAE (default: its activation's colour, read from its name)."""
    concepts = list(reports)
    names = list(next(iter(reports.values())))
    # (label, color, hatch, report to read, per-word key, per-pair key or None)
    series = []
    for name, color in zip(names, sae_colors or [style.color(n) for n in names]):
        series.append((f"{name} best latent", color, None, name, "threshold_accuracy", "relative_accuracy"))
        series.append((f"{name} best pair", color, "//", name, "best_pair_accuracy", None))
    series.append(("Difference in Means", style.REFERENCE, None, names[0], "dim_test_accuracy", "dim_relative_accuracy"))
    fig, axes = style.subplots(1, 2, height=3.4, pyplot=True, sharey=True)
    for ax, col, title in ((axes[0], 4, "per word (threshold rule)"), (axes[1], 5, "per pair (which word is side a)")):
        shown = [s for s in series if s[col] is not None]
        width = 0.8 / len(shown)
        for g, s in enumerate(shown):
            x = [i + (g - (len(shown) - 1) / 2) * width for i in range(len(concepts))]
            vals = [reports[c][s[3]][s[col]] for c in concepts]
            ax.bar(x, vals, width, color=s[1] if s[2] is None else "white", edgecolor=s[1], hatch=s[2], label=s[0])
        ax.axhline(0.5, color="k", lw=0.8, ls=":")
        ax.set_xticks(range(len(concepts)), concepts)
        ax.set_ylim(0, 1.05)
        ax.set_title(title)
        ax.set_xlabel("concept axis")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("test accuracy (balanced)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3))
    return fig


# =============================================================================== steering
@style.styled
def steering_figure(curves: Mapping[str, dict], xlabel: str = "steering strength c / q (positive: towards side a)",
                    ylabel: str = "log p(female) − log p(male)", title: str = "Steering the gender axis",
                    colors: Sequence[str] | None = None, linestyles: Sequence[str] | None = None):
    """Log-odds against the signed multiple m = c/q, one line per method. ``curves``: label -> a
    dict with ``multiples`` [V] and ``log_odds`` [V] (and ``baseline``, drawn once, dashed);
    ``colors``: one per curve (default: the colour of the activation the label starts with,
    e.g. ``"AbsTopK latent 398"``; black and greys for the others); ``linestyles``: one per curve
    (default solid), to tell apart two methods of one SAE."""
    fig, ax = style.subplots(height=3.6, pyplot=True)
    baseline = None
    for i, (label, c) in enumerate(curves.items()):
        color = colors[i] if colors else style.color(label, default=style.SERIES[i % len(style.SERIES)]["color"])
        ax.plot(c["multiples"], c["log_odds"], marker="o", ls=linestyles[i] if linestyles else "-", color=color, label=label)
        baseline = c.get("baseline", baseline)
    if baseline is not None:
        ax.axhline(baseline, color=style.REFERENCE, lw=0.8, ls="--", label=f"no intervention ({baseline:.2f})")
    ax.axvline(0, color=style.REFERENCE, lw=0.5, ls=":")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=1)  # below: the curves fill the panel
    return style.finish(ax, xlabel, ylabel, title, legend=False)


def steering_rows(curves: Mapping[str, dict], short: Mapping[str, str] | None = None) -> list[dict]:
    """One row per method of ``curves`` (as :func:`steering_figure`): its short name (``short``:
    label -> name; default the label), its full label and the mean log-odds at every multiple
    (columns ``m=-2``, ``m=+0.5``, ...)."""
    short = dict(short or {})
    return [{"method": short.get(label, label), "label": label,
             **{f"m={m:+g}": v for m, v in zip(c["multiples"], c["log_odds"])}} for label, c in curves.items()]


def steering_pair_rows(curves: Mapping[str, dict], short: Mapping[str, str] | None = None,
                       multiples: Sequence[float] = (-1, 1)) -> list[dict]:
    """One row per word pair of ``curves`` (each with ``pairs``, ``multiples``, ``per_pair`` [V, P]
    and ``baseline_per_pair`` [P]): the pair's log-odds with no intervention, then, per method and
    multiple m, its change from there (column ``"<short name> <m>"``, e.g. ``"DiM -1"``)."""
    short = dict(short or {})
    first = next(iter(curves.values()))
    rows = [{"pair": f"{a}/{b}", "no intervention": base}
            for (a, b), base in zip(first["pairs"], first["baseline_per_pair"])]
    for label, c in curves.items():
        for m in multiples:
            if m not in c["multiples"]:
                raise ValueError(f"multiples={list(multiples)}: {m} is not one of the curve's {c['multiples']}")
            i = c["multiples"].index(m)
            for row, v, base in zip(rows, c["per_pair"][i], c["baseline_per_pair"]):
                row[f"{short.get(label, label)} {m:+g}"] = v - base
    return rows
