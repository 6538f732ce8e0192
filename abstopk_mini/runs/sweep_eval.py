r"""What the sweep measures on each SAE (:func:`evaluate_point`): held-out FVU, L0, dead and signed
latents (:func:`abstopk_mini.evaluate.evaluate_sae`), the optional measurements of the config's
``eval`` (``test_ks``: k changed at test time; ``inference_batch``: batch-level selection at
inference), the snapshots saved along a run, and the concept axes. Loss recovered is added per
block by :func:`abstopk_mini.runs.sweep.run_sweep`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["LayerContext", "evaluate_point", "evaluate_snapshots", "compact"]

# fields of a concept report left out of a record: the same for every SAE of a sweep (pairs follow from
# eval.pair_seed, words and templates from abstopk_mini.concepts.words), or long
_DROP = ("templates", "tokenization_issues", "sae", "train_pairs", "test_pairs", "dropped_pairs", "mismatch",
         "neutral_words")


@dataclass
class LayerContext:
    """What every SAE of one layer is measured on (computed once per layer by
    :func:`abstopk_mini.runs.sweep.layer_context`)."""

    layer: int
    acts_dir: Path
    heldout_dir: Path
    x_held: torch.Tensor
    word_acts: dict
    sentiment: tuple | None


def compact(v, digits: int = 6):
    """Floats rounded to ``digits`` significant digits, recursively (keeps the results file small)."""
    if isinstance(v, float):
        return float(f"{v:.{digits}g}") if math.isfinite(v) else v
    if isinstance(v, dict):
        return {k: compact(x, digits) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [compact(x, digits) for x in v]
    return v


def _survival(sae, acts: torch.Tensor, j: int) -> dict:
    """Why a side is zero: the latent's pre-activation against the smallest |z| that survived.

    For each test sample, ``bar`` = the smallest non-zero |z_i| of that sample's code (for a top-k
    SAE the k-th largest |u|). Reported: the median bar, and the median u_j per side.
    shape: acts [n, T, d_in]
    """
    from ..concepts.axis import encode_samples

    u, z = encode_samples(sae, acts)
    mag = z.abs().reshape(-1, z.shape[-1])
    bar = torch.where(mag > 0, mag, torch.full_like(mag, float("inf"))).min(-1).values
    bar = bar[torch.isfinite(bar)]
    return {"median_bar": float(bar.median()) if len(bar) else math.nan, "median_u": float(u[..., j].median())}


def _concept_records(sae, loaded, ctx: LayerContext, pair_seed: int) -> dict:
    from .. import concepts as C

    out = {}
    for name, wa in ctx.word_acts.items():
        rep = C.run_concepts(sae, loaded, name, seed=pair_seed, word_acts=wa)
        rec = {k: v for k, v in rep.items() if k not in _DROP}
        rec["n_tokenization_issues"] = len(rep["tokenization_issues"])
        side = lambda k: wa.acts[wa.index([q[k] for q in rep["test_pairs"]])]  # noqa: E731
        for who, j in (("best", rep["best_latent"]), ("sign", rep["sign_latent"]["latent"])):
            sa, sb = _survival(sae, side(0), j), _survival(sae, side(1), j)
            rec[f"{who}_survival"] = {"median_bar": sa["median_bar"], "median_u_a": sa["median_u"],
                                      "median_u_b": sb["median_u"]}
        out[name] = rec
    if ctx.sentiment is not None:
        acts, labels = ctx.sentiment
        parts = {}
        for label in (1, 0):
            idx = [i for i, y in enumerate(labels) if y == label]
            tr, te = C.split_pairs(idx, 0.5, pair_seed)
            parts[label] = (acts[tr], acts[te])
        axis = C.evaluate_axis(sae, parts[1][0], parts[0][0], parts[1][1], parts[0][1], paired=False)
        out["sentiment"] = {"concept": "sentiment", "sides": ["pos", "neg"], "pool": "mean", **axis.to_dict()}
    return out


def _at_k(sae, k: int):
    """A copy of a top-k-family ``sae`` that keeps ``k`` latents per token (same weights)."""
    from ..sae import SAE

    other = SAE(dataclasses.replace(sae.cfg, k=k))
    other.load_state_dict(sae.state_dict())
    return other.eval()


def _extra_heldout(sae, ctx: LayerContext, ev: dict) -> dict:
    """The optional held-out measurements of ``eval`` (``test_ks``, ``inference_batch``)."""
    from ..evaluate import evaluate_sae

    out = {}
    if ev.get("test_ks") and sae.cfg.spec.k_based:
        out["test_k"] = {str(k): evaluate_sae(_at_k(sae, k), ctx.x_held)["fvu"] for k in ev["test_ks"]}
    if ev.get("inference_batch") and sae.cfg.spec.selection == "batch":
        res = evaluate_sae(sae, ctx.x_held, inference="batch", eval_batch_size=ev["inference_batch"])
        out["heldout_batch_inference"] = {"batch": ev["inference_batch"], "fvu": res["fvu"], "l0": res["l0"]}
    return out


def evaluate_snapshots(path, ctx: LayerContext) -> list[dict]:
    """Held-out FVU, L0 and dead fraction of each snapshot saved in the SAE run ``path``."""
    from ..evaluate import evaluate_sae
    from .store import load_snapshots

    out = []
    for step, tokens, snap in load_snapshots(path):
        res = evaluate_sae(snap, ctx.x_held)
        out.append({"step": step, "tokens": tokens, "heldout": {k: res[k] for k in ("fvu", "l0", "dead_frac")}})
    return out


def evaluate_point(sae, history: dict, loaded, ctx: LayerContext, pair_seed: int = 0, ev: dict | None = None,
                   path=None) -> dict:
    """Held-out and concept metrics of one SAE (the splice numbers are added per block); with
    ``ev`` (the config's eval settings) its optional measurements, with ``path`` its snapshots.

    ``train``: the run's totals; ``final_fvu`` / ``final_l0`` of the trained SAE on a fixed sample of
    its training data (``final_sample`` rows; None for a run trained before they were recorded) and,
    named as such, the last training batch's ``last_batch_fvu`` / ``_l0`` / ``_loss``. Records written
    before these names hold the last batch's values under ``final_fvu`` / ``_l0`` / ``_loss`` and no
    ``final_sample``."""
    from ..evaluate import evaluate_sae

    t = time.perf_counter()
    sae = sae.to("cpu").eval()
    rec = {
        "heldout": evaluate_sae(sae, ctx.x_held),
        **_extra_heldout(sae, ctx, ev or {}),
        "train": {k: history.get(k) for k in ("n_steps", "n_tokens", "lr_max", "input_scale", "wall_time_s",
                                              "final_dead_frac", "dead_tokens")}
                 | {k: history.get(k) for k in ("final_fvu", "final_l0", "final_sample")}  # the SAE on a fixed sample
                 | {f"last_batch_{k}": history[k][-1] for k in ("fvu", "l0", "loss") if history.get(k)},
        "concepts": _concept_records(sae, loaded, ctx, pair_seed),
    }
    if path is not None and history.get("n_steps"):
        snaps = evaluate_snapshots(path, ctx)
        if snaps:
            rec["snapshots"] = snaps
    rec["eval_wall_s"] = time.perf_counter() - t
    return rec
