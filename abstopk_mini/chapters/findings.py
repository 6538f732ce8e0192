r"""Every headline number of the book, computed from the records in ``results/``.

README's "What we measured" and the landing page's verdict, table and findings box quote these
values and nothing else: :mod:`abstopk_mini.chapters.findings_text` renders them as markdown
between marker comments, and ``python -m abstopk_mini.chapters.findings_text --check`` (run by
``tests/test_findings.py``) fails when a page differs from what the records give.

:func:`compute` returns a flat dict of named values. A gap is the relative held-out FVU difference

.. math:: \mathrm{gap} = \mathrm{FVU}_{\mathrm{AbsTopK}} / \mathrm{FVU}_{\mathrm{TopK}} - 1

between the two SAEs of one setting (positive: TopK reconstructs better), as a fraction. Nothing
here trains or loads a model; every record read is named in :data:`SOURCES`.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from ..nonlinearities import SIGNED_ACTIVATIONS

__all__ = ["SOURCES", "load", "compute", "gap", "snapshot_fvu"]

#: the record files read, relative to the repository root
SOURCES = {
    "toy": "results/toy_benchmark.json",
    "reproduce": "results/reproduce_gemma-3-270m/report.json",
    "sweep": "results/gemma_sweep.jsonl",
    "steps": "results/steps_vs_tokens.jsonl",
    "ladder": "results/recipe_ladder.jsonl",
    "ladder_long": "results/recipe_ladder_long.jsonl",
    "paper_30k": "results/paper_recipe_30k.jsonl",
    "auxk": "results/auxk_window.jsonl",
    "balanced": "results/gender_balanced.jsonl",
    "bidirectional": "results/bidirectional.jsonl",
    "bidirectional_balanced": "results/bidirectional_balanced.jsonl",
    "opposites": "results/opposite_meanings.jsonl",
    "reading": "results/opposite_reading.json",
    "saebench": "results/saebench.jsonl",
}

#: the short ladder's rungs that switch on one of the paper's choices (batch-level selection and
#: b_dec = 0 are reported on their own: they move the two SAEs apart)
SINGLE_RUNGS = ("paper_no_b_enc", "paper_unit_norm", "paper_adam", "paper_auxk", "paper_enc_init")


def load(root) -> dict:
    """The records of :data:`SOURCES` under the repository root ``root``: lists for ``.jsonl``."""
    root = Path(root)
    out = {}
    for name, rel in SOURCES.items():
        path = root / rel
        if not path.is_file():
            raise FileNotFoundError(f"root={str(root)!r} has no {rel}: point it at a checkout of the repository")
        text = path.read_text(encoding="utf-8")
        out[name] = [json.loads(line) for line in text.splitlines() if line.strip()] if rel.endswith(".jsonl") \
            else json.loads(text)
    return out


def gap(topk: dict, abstopk: dict) -> float:
    """AbsTopK's held-out FVU over TopK's, minus 1 (two sweep records)."""
    return abstopk["heldout"]["fvu"] / topk["heldout"]["fvu"] - 1


def snapshot_fvu(record: dict, step: int) -> float:
    """Held-out FVU of ``record``'s SAE after ``step`` optimiser steps (a snapshot or the final SAE)."""
    if record["train"]["n_steps"] == step:
        return record["heldout"]["fvu"]
    for snap in record.get("snapshots", []):
        if snap["step"] == step:
            return snap["heldout"]["fvu"]
    raise KeyError(f"record {record.get('key')!r} has no SAE at step {step}")


def _pick(records, **where) -> dict:
    """The one record matching every ``field=value`` of ``where`` (``train_tokens`` etc. at the top
    level); a ValueError when there is not exactly one."""
    hits = [r for r in records if all(r.get(k) == v for k, v in where.items())]
    if len(hits) != 1:
        raise ValueError(f"expected one record with {where}, found {len(hits)}")
    return hits[0]


def _pair(records, **where) -> tuple[dict, dict]:
    """(TopK-like, AbsTopK-like) records of one setting: ``topk``/``batchtopk`` against the signed one."""
    t = [r for r in records if r["activation"] in ("topk", "batchtopk") and all(r.get(k) == v for k, v in where.items())]
    a = [r for r in records if r["activation"] in ("abstopk", "batchabstopk")
         and all(r.get(k) == v for k, v in where.items())]
    if len(t) != 1 or len(a) != 1:
        raise ValueError(f"expected one TopK and one AbsTopK record with {where}, found {len(t)} and {len(a)}")
    return t[0], a[0]


def _steps(rec) -> dict:
    st = rec["steps"]
    out = {}
    for seed, stage in ((0, "short"), (1, "short-seed1")):
        t, a = _pair(st, stage=stage)
        out[f"short_gap_s{seed}"] = gap(t, a)
    out["short_steps"] = t["train"]["n_steps"]
    out["short_batch"] = t["batch_size"]
    for batch in (1024, 256):
        t, a = _pair(st, stage="mid", batch_size=batch)
        out[f"mid{batch}_gap"], out[f"mid{batch}_steps"] = gap(t, a), t["train"]["n_steps"]
    equal = []
    for seed, stage in ((0, "long"), (1, "long-seed1")):
        t, a = _pair(st, stage=stage)
        out[f"long_gap_s{seed}"] = gap(t, a)
        out[f"long_kl_abstopk_s{seed}"] = a["splice"]["kl_sae"]
        out[f"long_kl_topk_s{seed}"] = t["splice"]["kl_sae"]
        out[f"long_kl_lower_s{seed}"] = 1 - a["splice"]["kl_sae"] / t["splice"]["kl_sae"]
        out[f"protocol_gap_s{seed}"] = snapshot_fvu(a, 9375) / snapshot_fvu(t, 3125) - 1
        steps = sorted({s["step"] for s in t.get("snapshots", [])} | {t["train"]["n_steps"]})
        equal += [abs(snapshot_fvu(a, s) / snapshot_fvu(t, s) - 1) for s in steps if s >= 2344]
    out["long_steps"], out["long_batch"] = t["train"]["n_steps"], t["batch_size"]
    out["long_splice_tokens"] = t["splice"]["n_tokens"]
    out["equal_steps_max_gap"] = max(equal)
    return out


def _chapter6_9(rec) -> dict:
    saes = {s["name"]: s for s in rec["reproduce"]["saes"]}
    s = rec["reproduce"]["settings"]
    out = {f"ch6_gap_k{k}": saes[f"abstopk-k{k}"]["fvu"] / saes[f"topk-k{k}"]["fvu"] - 1 for k in s["ks"]}
    out |= {f"ch6_kl_{a}_k{k}": saes[f"{a}-k{k}"]["splice_kl_sae"] for k in s["ks"] for a in ("topk", "abstopk")}
    out |= {"ch6_ks": list(s["ks"]), "ch6_gap": out["ch6_gap_k32"], "ch6_steps": -(-s["train_tokens"] // s["batch_size"]),
            "ch6_batch": s["batch_size"], "ch6_optimiser": s.get("optimiser"), "ch6_splice_tokens": s["splice_tokens"]}
    sw = rec["sweep"]
    t, a = _pair(sw, stage="tokens", layer=6, d_sae=4096, k=32, train_tokens=2400000)
    out["ch9_2344_gap"], out["ch9_2344_steps"] = gap(t, a), t["train"]["n_steps"]
    t, a = _pair(sw, stage="grid", layer=6, d_sae=512, k=32, seed=0)
    out["small_gap"], out["small_d_sae"] = gap(t, a), t["d_sae"]
    return out


def _ladders(rec) -> dict:
    out = {}
    by = {}
    for r in rec["ladder"]:
        by.setdefault(r["variant"], {})[r["activation"]] = r
    g = {v: gap(d["topk"], d["abstopk"]) for v, d in by.items()}
    singles = [g[v] for v in SINGLE_RUNGS]
    out |= {"ladder_min": min(singles), "ladder_max": max(singles), "ladder_ours": g["default"],
            "ladder_batch_select": g["paper_batch_select"], "ladder_b_dec_zeros": g["paper_b_dec_zeros"],
            "ladder_steps": by["default"]["topk"]["train"]["n_steps"],
            "ladder_all_ratio_topk": by["paper_all"]["topk"]["heldout"]["fvu"] / by["default"]["topk"]["heldout"]["fvu"],
            "ladder_all_ratio_abstopk": by["paper_all"]["abstopk"]["heldout"]["fvu"] / by["default"]["abstopk"]["heldout"]["fvu"]}
    ll = rec["ladder_long"]
    for seed in (0, 1):
        t, a = _pair(ll, variant="paper_all", seed=seed)
        out[f"long_all_gap_s{seed}"] = gap(t, a)
        t, a = _pair(ll, variant="paper_batch_select", seed=seed)
        out[f"batch_gap_s{seed}"] = gap(t, a)
        out[f"batch_early_gap_s{seed}"] = snapshot_fvu(a, 1172) / snapshot_fvu(t, 1172) - 1
    out["long_ladder_steps"] = t["train"]["n_steps"]
    for v in ("paper_unit_norm", "paper_adam", "paper_auxk", "paper_no_b_enc", "paper_enc_init"):
        t, a = _pair(ll, variant=v, seed=0)
        out[f"long_{v}"] = gap(t, a)
    t, a = _pair(ll, variant="paper_batch_unit_norm", seed=0)
    out["batch_unit_norm_gap"] = gap(t, a)
    t, a = _pair(rec["paper_30k"], variant="paper_all", seed=0)
    out |= {"p30k_gap": gap(t, a), "p30k_fvu_topk": t["heldout"]["fvu"], "p30k_fvu_abstopk": a["heldout"]["fvu"],
            "p30k_kl_topk": t["splice"]["kl_sae"], "p30k_kl_abstopk": a["splice"]["kl_sae"],
            "p30k_kl_gap": a["splice"]["kl_sae"] / t["splice"]["kl_sae"] - 1, "p30k_steps": t["train"]["n_steps"],
            "p30k_tokens": t["train"]["n_tokens"],
            "p30k_gap_10938": snapshot_fvu(a, 10938) / snapshot_fvu(t, 10938) - 1,
            "p30k_gap_20000": snapshot_fvu(a, 20000) / snapshot_fvu(t, 20000) - 1}
    return out


def _auxk(rec) -> dict:
    ax = rec["auxk"]
    out = {}
    for seed in (0, 1):
        a = _pick(ax, activation="abstopk", variant="paper_dead_window", seed=seed)
        out[f"window_dead_abstopk_s{seed}"] = a["heldout"]["dead_frac"]
        p = _pick(ax, activation="abstopk", variant="paper_dead_window_positive_aux", seed=seed)
        out[f"positive_dead_s{seed}"] = p["heldout"]["dead_frac"]
        out[f"positive_bidir_s{seed}"] = p["heldout"]["bidirectional_frac"]
    t = _pick(ax, activation="topk", variant="paper_dead_window", seed=0)
    out["window_dead_topk"], out["auxk_steps"] = t["heldout"]["dead_frac"], t["train"]["n_steps"]
    return out


def _sweep(rec) -> dict:
    sw = rec["sweep"]
    out = {"sweep_n": len(sw), "sweep_signed": sum(r["activation"] in SIGNED_ACTIVATIONS for r in sw)}
    for act in ("abstopk", "topk"):
        rs = [r for r in sw if r["activation"] == act and r["k"] >= 32]
        out[f"dead_max_{act}"] = max(r["heldout"]["dead_frac"] for r in rs)
        out[f"dead_max_{act}_default"] = max(r["heldout"]["dead_frac"] for r in rs if r["variant"] == "default")
        out[f"dead_n_{act}"] = len(rs)
    signed = [r for r in sw if r["activation"] in SIGNED_ACTIVATIONS]
    out["sweep_best_pair_share"] = max(r["concepts"]["family"]["sign_latent"]["bidirectional_share"] for r in signed)
    out["sweep_bidirectional"] = sum(bool(r["concepts"]["family"]["sign_latent"]["bidirectional"]) for r in signed)
    out["sweep_train_tokens_min"] = min(r["train"]["n_tokens"] for r in sw)
    return out


def _gender(rec) -> dict:
    out = {}
    detectors = 0
    for r in rec["balanced"]:
        s = r["concepts"]["family"]["sign_latent"]
        detectors += s["coverage_a"] == 0.0 and s["coverage_b"] == 1.0     # sides (male, female): female only
    out["balanced_female_detectors"], out["balanced_n"] = detectors, len(rec["balanced"])
    for name in ("bidirectional", "bidirectional_balanced"):
        out[f"{name}_ge_08"] = sum(b["scan"]["abstopk"]["n_latents_test_pair_share_ge_0.8"] for b in rec[name])
        out[f"{name}_seeds"] = len(rec[name])
    for b in rec["bidirectional"]:
        s = b["steering"]
        q = list(s["values_in_q"])
        lo, hi = q.index(-2.0), q.index(2.0)
        shift = dict(zip(s["methods"], s["shift"]))
        seed = b["seed"]
        out[f"clamp_lo_s{seed}"], out[f"clamp_hi_s{seed}"] = shift["abstopk_clamp"][lo], shift["abstopk_clamp"][hi]
        out[f"topk_add_lo_s{seed}"], out[f"topk_add_hi_s{seed}"] = shift["topk_add"][lo], shift["topk_add"][hi]
        out[f"dim_lo_s{seed}"], out[f"dim_hi_s{seed}"] = shift["dim"][lo], shift["dim"][hi]
        rand = [v[hi] for m, v in shift.items() if m.startswith("random_s")]
        out[f"random_hi_min_s{seed}"], out[f"random_hi_max_s{seed}"] = min(rand), max(rand)
        out["n_prompts"] = len(s["prompts"])
    return out


def _opposites(rec) -> dict:
    out = {"opposite_rules": sum(r["verdicts"]["opposite"] for r in rec["opposites"]),
           "opposite_n": rec["opposites"][0]["verdicts"]["n"], "opposite_saes": len(rec["opposites"]),
           "opposite_seeds": len({r["seed"] for r in rec["opposites"]})}
    rd = rec["reading"]
    items = rd["items"]
    out["reading_opposite"] = sum(i["label"] == "opposite" for i in items)
    out["reading_n_per_sae"] = rd["sample"]["n_per_sae"]
    out["reading_seed"] = rd["seed"]
    return out


def _bench_diffs(a: dict, b: dict) -> dict:
    """AbsTopK (``a``) minus TopK (``b``), split view, with standard errors: absorption paired by letter (the
    letters both probes read), TPP at N = 20 from the spread over the text splits (unpaired, so conservative)."""
    la = {x["letter"]: x["absorption_fraction"] for x in a["absorption"]["split"]["letters"] if x["probe_f1"] > 0.6}
    lb = {x["letter"]: x["absorption_fraction"] for x in b["absorption"]["split"]["letters"] if x["probe_f1"] > 0.6}
    d = [la[k] - lb[k] for k in la if k in lb and la[k] is not None and lb[k] is not None]
    ta, tb = a["tpp"]["split"]["overall"]["20"]["total"], b["tpp"]["split"]["overall"]["20"]["total"]
    splits = a["tpp"]["split"]["splits"]
    return {"bench_absorption_diff": statistics.mean(d), "bench_absorption_diff_se": statistics.stdev(d) / math.sqrt(len(d)),
            "bench_tpp20_diff": ta["mean"] - tb["mean"], "bench_tpp20_diff_se": math.hypot(ta["sd"], tb["sd"]) / math.sqrt(splits)}


def _saebench(rec) -> dict:
    """SAEBench's metrics (chapter 12) of our-recipe TopK and AbsTopK (10,938 steps) at each seed: absorption
    (both views), TPP at N = 20 (both views) and sparse probing at k = 1 (codes pooled as z and |z|, and the
    residual stream's top channel) per task. Keys of seed 0 have no suffix; other seeds end in ``_s<seed>``."""
    ours = [r for r in rec["saebench"] if r["made"].get("recipe") == "ours" and r["activation"] in ("topk", "abstopk")]
    first = next(r for r in ours if r["made"].get("seed") == 0)
    out = {"bench_letters": first["absorption"]["split"]["n_letters"],
           "bench_words": first["absorption_settings"]["n_words"],
           "bench_splits": first["settings"]["splits"], "bench_n_saes": len(rec["saebench"]),
           "bench_seeds": sorted({r["made"]["seed"] for r in ours}),
           "bench_tpp_classes": len(first["tpp"]["split"]["classes"]),
           "bench_tpp_texts": first["tpp"]["split"]["texts_per_class"]}
    for r in ours:
        seed = r["made"]["seed"]
        end = "" if seed == 0 else f"_s{seed}"
        act = r["activation"]
        for view, a in r["absorption"].items():
            out[f"bench_absorption_{act}_{view}{end}"] = a["mean_absorption_fraction"]
            out[f"bench_full_{act}_{view}{end}"] = a["mean_full_absorption"]
        for view, t in r["tpp"].items():
            out[f"bench_tpp20_{act}_{view}{end}"] = t["overall"]["20"]["total"]["mean"]
        if act == "abstopk":  # AbsTopK − TopK at this seed and its standard error (module ``_bench_diffs``)
            out |= {f"{k}{end}": v for k, v in _bench_diffs(r, next(t for t in ours if t["activation"] == "topk"
                                                                   and t["made"]["seed"] == seed)).items()}
        for task, p in r["sparse_probing"].items():
            out[f"bench_k1_{act}_{task}{end}"] = p["sae"]["1"]["mean"]
            out[f"bench_k1abs_{act}_{task}{end}"] = p["sae_abs"]["1"]["mean"]
            out[f"bench_k1_residual_{task}"] = p["residual"]["1"]["mean"]
    return out


def compute(root=None) -> dict:
    """Every headline number, by name, from the records under ``root`` (default: this checkout)."""
    if root is None:
        from ..repo import find
        root = find("results").parent
    rec = load(root)
    toy = {(r["activation"], r["d_sae"]): r for r in rec["toy"]["rows"]}
    out = {"toy_axes": rec["toy"]["settings"]["P"], "toy_abstopk_mcc": toy[("abstopk", 32)]["mcc"],
           "toy_topk_split": toy[("topk", 64)]["split_axes"]}
    for part in (_steps, _chapter6_9, _ladders, _auxk, _sweep, _gender, _opposites, _saebench):
        out |= part(rec)
    tokens = [r["train"]["n_tokens"] for name in ("sweep", "steps", "ladder", "ladder_long", "paper_30k", "auxk", "balanced")
              for r in rec[name]]
    out["train_tokens_min"], out["train_tokens_max"] = min(tokens), max(tokens)
    return out
