r"""The budget of sweep SAEs over the tokens of a batch (:func:`abstopk_mini.budget.token_budget`),
for every top-k SAE a sweep recorded in some stages, and each of its snapshots, one record per SAE.

    python -m abstopk_mini budget --config sweeps/ladder_long.json --stages ladder-long \
        --results results/batch_budget.jsonl --json

Each record names its SAE by sweep key (never by an absolute path), carries the settings that made
it (stage, variant, batch size, optimiser steps, tokens) and, per step (snapshots, then the final
SAE), the three readings of the budget on the sweep's held-out harvest in blocks of
``eval_batch_size`` tokens. It needs no model when the held-out harvest is already in the runs
directory (a sweep makes it); otherwise the model is loaded to harvest it.

The loop over the SAEs and snapshots of sweep stages, :func:`read_stage_saes`, takes any reading
``(sae, x) -> dict``; ``python -m abstopk_mini dead`` (:mod:`abstopk_mini.runs.dead`) uses it too.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path

from .inputs import StagesJob, check_positive, check_runs_dir

__all__ = ["SCHEMA", "read_stage_saes", "run_budget", "StageSAEsJob", "BudgetJob", "run"]

SCHEMA = "abstopk_mini.budget/1"


def _stage_records(cfg, stages, activations=None) -> list[dict]:
    from ..nonlinearities import spec
    from .sweep import read_results

    cfg.check_stages(stages)
    recs = [r for r in read_results(cfg.results_path) if r.get("stage") in stages and spec(r["activation"]).k_based
            and (activations is None or r["activation"] in activations)]
    if not recs:
        which = "top-k SAE" if activations is None else f"SAE of activation {'/'.join(activations)}"
        raise ValueError(f"no {which} of stages {list(stages)} is recorded in {cfg.results_path}; "
                         "run the sweep first (python -m abstopk_mini sweep --config ...)")
    return recs


def read_stage_saes(config, stages, reading, schema: str, settings, *, results=None, runs_root=None,
                    heldout_tokens: int | None = None, loaded=None, activations=None) -> list[dict]:
    """One record per top-k SAE of ``stages`` of the sweep ``config`` (of ``activations`` only,
    unless None): ``reading(sae, x)`` of each of its snapshots and of the final SAE on the sweep's
    held-out harvest ``x`` (its first ``heldout_tokens``), appended to ``results`` (a JSONL file;
    None: return only). ``settings(x)`` (a dict) is stored with each record, with the held-out
    harvest's identity added."""
    from ..lm.shards import load_activations
    from ..sae import SAE
    from .store import harvest_spec, load_snapshots
    from .sweep import append_record, load_config, provenance, record_path

    cfg = load_config(config) if not hasattr(config, "stages") else config
    recs = _stage_records(cfg, stages, activations)
    held = {}
    out = []
    for r in recs:
        t0 = time.perf_counter()
        spec = cfg.harvest_spec(r["layer"], "heldout")
        if r["layer"] not in held:
            directory = spec.directory(runs_root)
            if not (directory / "manifest.json").is_file():
                from ..lm.models import load_model

                loaded = loaded if loaded is not None else load_model(cfg.model)
            held[r["layer"]] = load_activations(harvest_spec(spec, runs_root, loaded=loaded, progress=False),
                                                heldout_tokens)
        x = held[r["layer"]]
        run_dir = record_path(r["provenance"]["sae_dir"], runs_root)
        if not (run_dir / "history.json").is_file():
            raise FileNotFoundError(f"the SAE of record {r['key']} ({r['provenance']['sae_dir']}) is not in the runs "
                                    f"directory {record_path('.', runs_root)}; rerun the sweep there, or pass --runs-dir")
        steps = load_snapshots(run_dir)
        steps.append((r["train"]["n_steps"], r["train"]["n_tokens"], SAE.load(run_dir, device="cpu")))
        per_step = [{"step": step, "tokens": tokens, **reading(sae.cpu(), x)} for step, tokens, sae in steps]
        rec = {"schema": schema, "sweep": cfg.name, "stage": r["stage"], "activation": r["activation"],
               "variant": r["variant"], "seed": r["seed"], "layer": r["layer"], "d_sae": r["d_sae"], "k": r["k"],
               "sae": {"key": r["key"], "batch_size": r["batch_size"], "n_steps": r["train"]["n_steps"],
                       "n_tokens": r["train"]["n_tokens"], "heldout_fvu": r["heldout"]["fvu"],
                       "dead_tokens": r["train"]["dead_tokens"]},
               "settings": {**settings(x), "heldout_harvest": spec.identity()},
               "steps": per_step,
               "provenance": provenance(time.perf_counter() - t0)}
        if results is not None:
            append_record(Path(results), rec)
        out.append(rec)
    return out


def run_budget(config, stages, *, results=None, runs_root=None, eval_batch_size: int = 128,
               heldout_tokens: int | None = None, loaded=None) -> list[dict]:
    """One record per top-k SAE of ``stages`` of the sweep ``config`` (module docstring), appended
    to ``results`` (a JSONL file; None: return only). heldout_tokens: the first this many held-out
    activations (None: the whole held-out harvest of the sweep)."""
    from ..budget import token_budget

    if isinstance(eval_batch_size, bool) or not isinstance(eval_batch_size, int) or eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be an int >= 1 (tokens per block); got {eval_batch_size!r}")
    if heldout_tokens is not None and (isinstance(heldout_tokens, bool) or not isinstance(heldout_tokens, int)
                                       or heldout_tokens < eval_batch_size):
        raise ValueError(f"heldout_tokens must be an int >= eval_batch_size={eval_batch_size} or None; "
                         f"got {heldout_tokens!r}")
    return read_stage_saes(config, stages, lambda sae, x: token_budget(sae, x, eval_batch_size), SCHEMA,
                           lambda x: {"eval_batch_size": eval_batch_size,
                                      "heldout_tokens": len(x) // eval_batch_size * eval_batch_size},
                           results=results, runs_root=runs_root, heldout_tokens=heldout_tokens, loaded=loaded)


@dataclass
class StageSAEsJob(StagesJob):
    """Every SAE of sweep stages (and its snapshots) on the sweep's held-out activations (:func:`read_stage_saes`)."""

    tokens: int | None = None
    """The first this many held-out activations; None: all of the sweep's."""


@dataclass
class BudgetJob(StageSAEsJob):
    """How sweep top-k SAEs spread their non-zeros over the tokens of a batch: batch, threshold and per-token
    readings of the same weights (:func:`run_budget`)."""

    batch: int = inspect.signature(run_budget).parameters["eval_batch_size"].default
    """Tokens per block of the batch reading (the paper's batch)."""


def run(cfg: BudgetJob) -> dict:
    """``python -m abstopk_mini budget``: the flags checked, then :func:`run_budget`."""
    check_positive(cfg.batch, "--batch")
    check_positive(cfg.tokens, "--tokens")
    check_runs_dir(cfg.runs_dir)
    return {"records": run_budget(cfg.config, list(cfg.stages), results=cfg.results, runs_root=cfg.runs_dir,
                                  eval_batch_size=cfg.batch, heldout_tokens=cfg.tokens)}
