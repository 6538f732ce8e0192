r"""The live and the dead latents of sweep SAEs (:func:`abstopk_mini.dead.latent_profile`), for
every TopK and AbsTopK SAE a sweep recorded in some stages, and each of its snapshots, one record
per SAE.

    python -m abstopk_mini dead --config sweeps/auxk_window.json --stages auxk-short \
        --results results/dead_latents.jsonl --json

Records name their SAE by sweep key, with its stage, variant, optimiser steps and the dead window
it was trained with (``sae.dead_tokens``); per step, the profile on the sweep's held-out harvest.
Like ``budget`` (:func:`abstopk_mini.runs.budget.read_stage_saes`, the loop both share), it needs
no model when the held-out harvest is already in the runs directory.
"""
from __future__ import annotations

from dataclasses import dataclass

from .budget import StageSAEsJob
from .inputs import check_positive, check_runs_dir

__all__ = ["SCHEMA", "run_dead_profile", "DeadJob", "run"]

SCHEMA = "abstopk_mini.dead_profile/1"


def run_dead_profile(config, stages, *, results=None, runs_root=None, batch_size: int = 4096,
                     heldout_tokens: int | None = None, loaded=None) -> list[dict]:
    """One record per TopK/AbsTopK SAE of ``stages`` of the sweep ``config`` (module docstring),
    appended to ``results`` (JSONL; None: return only). batch_size: tokens per block (memory only;
    the profile does not depend on it). heldout_tokens: the first this many held-out activations
    (None: all of the sweep's)."""
    from ..dead import PROFILE_SAES, latent_profile
    from .budget import read_stage_saes

    def is_count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if not is_count(batch_size):
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    if heldout_tokens is not None and not is_count(heldout_tokens):
        raise ValueError(f"heldout_tokens must be an int >= 1 or None; got {heldout_tokens!r}")
    return read_stage_saes(config, stages, lambda sae, x: latent_profile(sae, x, batch_size), SCHEMA,
                           lambda x: {"heldout_tokens": len(x)}, results=results, runs_root=runs_root,
                           heldout_tokens=heldout_tokens, loaded=loaded, activations=PROFILE_SAES)


@dataclass
class DeadJob(StageSAEsJob):
    """The live and the dead latents of sweep TopK / AbsTopK SAEs: reach, pre-activation scale, encoder norm, sign
    (:func:`run_dead_profile`)."""


def run(cfg: DeadJob) -> dict:
    """``python -m abstopk_mini dead``: the flags checked, then :func:`run_dead_profile`."""
    check_positive(cfg.tokens, "--tokens")
    check_runs_dir(cfg.runs_dir)
    return {"records": run_dead_profile(cfg.config, list(cfg.stages), results=cfg.results, runs_root=cfg.runs_dir,
                                        heldout_tokens=cfg.tokens)}
