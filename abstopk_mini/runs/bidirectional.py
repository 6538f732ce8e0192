r"""Is a trained AbsTopK latent bidirectional where the model meets gendered words, and is its
steering specific to it? One record per seed for the TopK / AbsTopK pair of a sweep stage.

    python -m abstopk_mini bidirectional --config sweeps/steps.json --stages long long-seed1 \
        --results results/bidirectional.jsonl --json

For each seed, the two SAEs recorded by the sweep (same layer, width, k, batch, steps) are read
back and measured on the same inputs:

1. **Occurrences** (:mod:`abstopk_mini.concepts.natural`): every gender word of
   :data:`~abstopk_mini.concepts.occurrences.GENDER_PAIRS` in the held-out text, pronouns
   included; the latent is chosen on occurrences in the training text (``choose_on="train_text"``)
   and tested on all held-out ones. The **all-latent scan** gives, for every latent, the share of
   pairs and of occurrences on which it takes opposite signs on the two sides.
2. **Top contexts** (:func:`~abstopk_mini.concepts.contexts.top_contexts`): the top-n positive and
   negative held-out contexts of the AbsTopK latent and of TopK's two pair latents, scored against
   the gender lexicon, with the random-sign-flip null.
3. **Steering controls** (:mod:`abstopk_mini.lm.steering_controls`): the AbsTopK latent clamped at
   ±c against TopK's female latent added with ±c (the male direction by negation), random
   directions of matched norm (and of matched cosine with DiM) and DiM itself; c in units of
   ``q``, the 90th percentile of |z| of the AbsTopK latent on the training occurrences.

Records store the SAEs' sweep keys (not paths) and every setting.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .inputs import StagesJob, check_positive, check_runs_dir

__all__ = ["SCHEMA", "VALUES", "pair_records", "stage_pairs", "run_bidirectional", "BidirectionalJob", "run"]

SCHEMA = "abstopk_mini.bidirectional/1"
VALUES = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)  # clamp / add values, in units of q (module docstring)


def pair_records(records, stages) -> dict[int, dict[str, dict]]:
    """``{seed: {"topk": record, "abstopk": record}}`` for the records of ``stages`` (one pair per seed)."""
    out: dict[int, dict[str, dict]] = {}
    for r in records:
        if r["stage"] in stages and r["activation"] in ("topk", "abstopk"):
            seen = out.setdefault(r["seed"], {})
            if r["activation"] in seen:
                raise ValueError(f"stages {list(stages)} hold two {r['activation']} SAEs of seed {r['seed']}; "
                                 "pass stages with one TopK / AbsTopK pair per seed")
            seen[r["activation"]] = r
    return {s: d for s, d in sorted(out.items()) if len(d) == 2}


def stage_pairs(config, stages) -> tuple:
    """``(cfg, {seed: {"topk": record, "abstopk": record}})`` for ``stages`` of the sweep ``config``
    (a path, a dict or a SweepConfig); ValueError naming the fix when a stage is unknown or no
    seed has both records."""
    from .sweep import load_config, read_results

    cfg = load_config(config) if not hasattr(config, "stages") else config
    cfg.check_stages(stages)
    pairs = pair_records(read_results(cfg.results_path), stages)
    if not pairs:
        raise ValueError(f"no seed of stages {list(stages)} has both a TopK and an AbsTopK record in "
                         f"{cfg.results_path}; run the sweep first (python -m abstopk_mini sweep --config ...)")
    return cfg, pairs


def _token_data(loaded, texts, layer: int, context_length: int, max_tokens: int):
    """Per-token activations of the first ``max_tokens`` tokens of ``texts``, in harvest-style chunks."""
    from ..lm.activations import token_activations
    from ..lm.corpus import chunk

    chunks, n = [], 0
    for c in chunk(loaded.tokenizer, texts, context_length):
        if n >= max_tokens:
            break
        chunks.append(c)
        n += len(c)
    return token_activations(loaded, chunks, layer, context_length=context_length)


def _q(sae, latent: int, acts: torch.Tensor) -> float:
    """The 90th percentile of |z_latent| over ``acts`` (its non-zero values; 1.0 if it never fires)."""
    from ..concepts.axis import encode_samples

    z = encode_samples(sae, acts)[1][:, latent].abs()
    z = z[z > 0]
    return float(z.quantile(0.9)) if len(z) else 1.0


def measure_seed(pair: dict, loaded, runs_root, texts: tuple, occ: tuple, tokens, *, top_n: int, values,
                 n_random: int, seed: int, n_scan: int) -> dict:
    """The record of one seed (module docstring, steps 1-3)."""
    from .. import concepts as C
    from ..lm import steering_controls as SC
    from ..sae import SAE
    from .sweep import record_path

    train_texts, heldout = texts
    held_occ, train_occ = occ
    saes = {a: SAE.load(record_path(r["provenance"]["sae_dir"], runs_root), device="cpu").eval()
            for a, r in pair.items()}
    natural, scan, contexts = {}, {}, {}
    for act, sae in saes.items():
        out = C.run_natural(sae, loaded, heldout, train_texts=train_texts, choose_on="train_text", seed=seed,
                            n_top=n_scan, occurrences=(held_occ, train_occ))
        natural[act], scan[act] = out["natural"], out["scan"]
    j_abs = natural["abstopk"]["best_latent"]
    male_j, female_j = scan["topk"]["best_pair"]["latents"]
    for name, act, j in (("abstopk", "abstopk", j_abs), ("topk_male", "topk", male_j), ("topk_female", "topk", female_j)):
        contexts[name] = C.top_contexts(saes[act], tokens, j, loaded.tokenizer, n=top_n, seed=seed).to_dict() | {"latent": j}
    dim = C.dim_direction(train_occ.acts[train_occ.side == -1], train_occ.acts[train_occ.side == 1])  # female − male
    q = _q(saes["abstopk"], j_abs, train_occ.acts)
    methods = SC.standard_controls(saes["abstopk"], j_abs, saes["topk"], female_j, dim, n_random=n_random, seed=seed)
    res = SC.steering_controls(loaded, layer=saes["abstopk"].cfg.hook_layer, methods=methods,
                               values=[v * q for v in values])
    return {"natural": natural, "scan": scan, "contexts": contexts,
            "steering": res.to_dict() | {"q": q, "values_in_q": list(values),
                                         "methods_info": {k: m.info for k, m in methods.items()}}}


def run_bidirectional(config, stages, *, results=None, runs_root=None, loaded=None, max_per_word: int = 200,
                      context_tokens: int = 32_768, top_n: int = 50, values=VALUES, n_random: int = 3, seed: int = 0,
                      n_scan: int = 10, progress: bool = True) -> list[dict]:
    """Measure each seed's TopK / AbsTopK pair of ``stages`` of the sweep ``config`` (module
    docstring) and append one record per seed to ``results`` (a JSONL file; None: return only)."""
    from .. import concepts as C
    from ..lm.models import load_model
    from .store import HarvestSpec, offline_texts
    from .sweep import append_record, provenance

    cfg, pairs = stage_pairs(config, stages)
    layers = {r["layer"] for d in pairs.values() for r in d.values()}
    if len(layers) != 1:
        raise ValueError(f"the records read layers {sorted(layers)}; pass stages of one layer")
    layer = layers.pop()
    t0 = time.perf_counter()
    loaded = loaded if loaded is not None else load_model(cfg.model)
    sources = cfg.harvest.get("sources", HarvestSpec.sources)
    ctx_len = cfg.harvest.get("context_length", 128)
    train_texts, heldout = offline_texts(sources, "train"), offline_texts(sources, "heldout")
    held_occ = C.find_occurrences(loaded, heldout, C.GENDER_PAIRS, layer, context_length=ctx_len, max_tokens=None,
                                  max_per_word=max_per_word, seed=seed)
    train_occ = C.find_occurrences(loaded, train_texts, C.GENDER_PAIRS, layer, context_length=ctx_len, max_tokens=None,
                                   max_per_word=max_per_word, seed=seed)
    tokens = _token_data(loaded, heldout, layer, ctx_len, context_tokens)
    shared_s = time.perf_counter() - t0
    out = []
    for s, pair in pairs.items():
        t = time.perf_counter()
        rec = measure_seed(pair, loaded, runs_root, (train_texts, heldout), (held_occ, train_occ), tokens,
                           top_n=top_n, values=values, n_random=n_random, seed=seed, n_scan=n_scan)
        rec = {"schema": SCHEMA, "sweep": cfg.name, "stages": list(stages), "seed": s, "layer": layer,
               "saes": {a: {"key": r["key"], "stage": r["stage"], "batch_size": r["batch_size"],
                            "n_steps": r["train"]["n_steps"], "heldout_fvu": r["heldout"]["fvu"]} for a, r in pair.items()},
               "settings": {"max_per_word": max_per_word, "context_tokens": len(tokens), "top_n": top_n,
                            "values_in_q": list(values), "n_random": n_random, "seed": seed, "sources": list(sources),
                            "choose_on": "train_text"},
               **rec,
               "provenance": provenance(time.perf_counter() - t + shared_s / len(pairs))}
        if results is not None:
            append_record(Path(results), rec)
        out.append(rec)
    return out


_DEFAULTS = inspect.signature(run_bidirectional).parameters


@dataclass
class BidirectionalJob(StagesJob):
    """Gender words in natural text, the all-latent scan, top contexts and steering controls for the TopK /
    AbsTopK pairs of sweep stages (:func:`run_bidirectional`)."""

    max_per_word: int = _DEFAULTS["max_per_word"].default
    """Occurrences read per word and text."""
    context_tokens: int = _DEFAULTS["context_tokens"].default
    """Held-out tokens searched for top contexts."""
    top_n: int = _DEFAULTS["top_n"].default
    """Contexts per sign."""


def run(cfg: BidirectionalJob) -> dict:
    """``python -m abstopk_mini bidirectional``: the flags checked, then :func:`run_bidirectional`."""
    for flag in ("max_per_word", "context_tokens", "top_n"):
        check_positive(getattr(cfg, flag), "--" + flag.replace("_", "-"))
    check_runs_dir(cfg.runs_dir)
    return {"records": run_bidirectional(cfg.config, list(cfg.stages), results=cfg.results, runs_root=cfg.runs_dir,
                                         max_per_word=cfg.max_per_word, context_tokens=cfg.context_tokens,
                                         top_n=cfg.top_n)}
