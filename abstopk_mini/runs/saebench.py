r"""``python -m abstopk_mini bench``: SAEBench's feature absorption, sparse probing and TPP on SAEs, offline.

    python -m abstopk_mini bench --sae gemma-3-270m-L6-topk-4096-k32 gemma-3-270m-L6-abstopk-4096-k32 \
        --results results/saebench.jsonl --json

The SAEs must read the same model and layer: the first-letter words, prompts, residuals and letter
probe (:func:`abstopk_mini.saebench.evaluate.letter_data`) and the labelled texts' token activations
are made once and every SAE is scored on them. One record per SAE: absorption in two views
(``signed``: codes as they are, SAEBench's rules; ``split``: each signed latent as two non-negative
ones), sparse probing per task (codes pooled signed and as |z|, beside the residual stream) and TPP
on all tasks' classes together (both views), with the settings that made them. A record names its SAE as ``--sae`` did when that is a shipped SAE,
else by its folder relative to the runs directory (never a path of the machine that wrote it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

__all__ = ["SCHEMA", "BenchJob", "run", "METRICS"]

SCHEMA = "abstopk_mini.saebench/1"
METRICS = ("absorption", "sparse_probing", "tpp")


@dataclass
class BenchJob:
    """SAEBench's feature absorption (first letter), sparse probing and TPP (offline texts) on one or more
    SAEs of the same model and layer; one JSON record per SAE."""

    sae: tuple[str, ...]
    """SAEs: shipped names (e.g. gemma-3-270m-L6-abstopk-4096-k32) or folders, SAE directories or SAELens
    directories; all of one model and layer."""
    metrics: tuple[str, ...] = METRICS
    """Which metrics: absorption, sparse_probing, tpp."""
    ks: tuple[int, ...] = (1, 2, 5, 20)
    """Latents (and residual channels) per sparse probe."""
    n_words: int = 8000
    """First-letter words kept from the vocabulary's letter-only tokens (80 % train, 20 % test)."""
    icl_examples: int = 10
    """Solved examples before the word in each first-letter prompt (SAEBench's 10)."""
    splits: int = 5
    """Train / test splits of the labelled texts; sparse probing and TPP report the mean and standard deviation."""
    seed: int = 0
    """Seed of the word split, the prompts' examples and the probes."""
    results: str | None = None
    """Append one JSON record per SAE to this file; None: print only."""


def _check(cfg: BenchJob) -> None:
    from .inputs import check_positive

    if isinstance(cfg.sae, str) or not cfg.sae:
        raise ValueError(f"--sae must name at least one SAE; got {cfg.sae!r}")
    bad = [m for m in cfg.metrics if m not in METRICS]
    if bad or not cfg.metrics:
        raise ValueError(f"--metrics must be one or more of {METRICS}; got {list(cfg.metrics)}")
    if not cfg.ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in cfg.ks):
        raise ValueError(f"--ks must be one or more ints >= 1; got {list(cfg.ks)}")
    check_positive(cfg.n_words, "--n-words")
    check_positive(cfg.splits, "--splits")
    check_positive(cfg.icl_examples, "--icl-examples")
    if cfg.n_words < 260:
        raise ValueError(f"--n-words must be >= 260 (ten words per letter on average) for a letter probe; got {cfg.n_words}")


def run(cfg: BenchJob) -> dict:
    """Score every SAE of ``cfg`` (module docstring); returns ``{"records": [...]}``."""
    import torch

    from .. import pretrained
    from ..io import relative_to_runs
    from ..saebench import evaluate as E
    from ..saebench.texts import TASKS, load_task, task_tokens
    from .inputs import load_checked_model, sae_inputs
    from .sweep import append_record, provenance

    _check(cfg)
    inputs = [sae_inputs(SimpleNamespace(sae=s), require_layer=True) for s in cfg.sae]
    where = {(i.model, i.layer) for i in inputs}
    if len(where) > 1:
        raise ValueError(f"--sae: the SAEs read different models or layers {sorted(where)}; run bench once per model and layer")
    loaded = load_checked_model(inputs[0])
    layer = inputs[0].layer
    t = time.perf_counter()
    data = E.letter_data(loaded, layer, n_words=cfg.n_words, seed=cfg.seed,
                                                icl_examples=cfg.icl_examples) if "absorption" in cfg.metrics else None
    tokens = ({task: task_tokens(loaded, load_task(task), layer) for task in TASKS}
              if {"sparse_probing", "tpp"} & set(cfg.metrics) else None)
    shared_s = time.perf_counter() - t
    shipped = pretrained.available()
    records = []
    for name, inp in zip(cfg.sae, inputs):
        t = time.perf_counter()
        sae = inp.sae.cpu().eval()
        made = {"seed": sae.cfg.seed, "recipe": sae.cfg.recipe or "ours"}
        if isinstance(shipped.get(name), dict):  # a shipped SAE: how it was trained, from the manifest
            trained = shipped[name].get("trained", {})
            made |= {k: trained[k] for k in ("seed", "recipe", "n_steps", "batch_size", "record") if k in trained}
        rec = {"schema": SCHEMA, "sae": name if name in shipped else relative_to_runs(name), "activation": sae.cfg.activation, "d_sae": sae.cfg.d_sae, "k": sae.cfg.k,
               "model": inp.model, "layer": layer, "made": made}
        with torch.no_grad():
            if data is not None:
                rec["absorption"] = {view: E.absorption(sae, data, view, seed=cfg.seed) for view in E.VIEWS}
                rec["absorption_settings"] = data.settings | {"letter_probe_f1": data.probe_f1,
                                                              "n_absorption_words": len(data.y_absorb)}
            if "sparse_probing" in cfg.metrics:
                rec["sparse_probing"] = E.probing(sae, tokens, cfg.ks, splits=cfg.splits)
            if "tpp" in cfg.metrics:
                rec["tpp"] = {view: E.tpp(sae, tokens, view, splits=cfg.splits) for view in E.VIEWS}
        rec["settings"] = {"ks": list(cfg.ks), "n_words": cfg.n_words, "icl_examples": cfg.icl_examples, "splits": cfg.splits, "seed": cfg.seed,
                           "shared_data_s": shared_s}
        rec["provenance"] = provenance(time.perf_counter() - t)
        if cfg.results is not None:
            append_record(Path(cfg.results), rec)
        records.append(rec)
    return {"records": records}


def summary(cfg: BenchJob, result: dict) -> str:
    """One block per SAE: absorption in both views, sparse probing at each k, TPP at each N."""
    lines = []
    for r in result["records"]:
        lines.append(f"{r['sae']}:")
        for view, a in r.get("absorption", {}).items():
            frac, full = a["mean_absorption_fraction"], a["mean_full_absorption"]
            lines.append(f"  absorption ({view}): " + (f"fraction {frac:.3f}, full {full:.3f}, split latents "
                                                        f"{a['mean_num_split_features']:.2f}" if frac is not None else
                                                        f"not reported ({a['n_letters']} letters with probe F1 > 0.6, < 20)"))
        for task, p in r.get("sparse_probing", {}).items():
            cells = ", ".join(f"k={k} {p['sae'][k]['mean']:.3f}/{p['sae_abs'][k]['mean']:.3f}/{p['residual'][k]['mean']:.3f}"
                              for k in p["sae"])
            lines.append(f"  sparse probing {task} (SAE z / |z| / residual): {cells}")
        for view, t in r.get("tpp", {}).items():
            cells = ", ".join(f"N={n} {v['total']['mean']:.3f}" for n, v in t["overall"].items())
            lines.append(f"  TPP ({view}): {cells}")
    return "\n".join(lines)
