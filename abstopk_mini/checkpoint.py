"""Training checkpoints: one file (``checkpoint.pt``) holding everything a run needs to continue.

:func:`save_checkpoint` writes the SAE's config and weights, the optimiser state, the step and
token counters, the dead-latent counters, the history and the L0 controller's coefficient,
atomically (a temp file, then a rename), and never over a good checkpoint with non-finite
parameters. :func:`load_checkpoint` reads it back for ``train_sae(..., resume=path)``, which then
continues bit-identically on CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .io import atomic_write

__all__ = ["CHECKPOINT_FILE", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(directory, sae, opt, step, tokens, n_steps, since_fired, history, coef) -> Path:
    """Write ``directory/checkpoint.pt`` and return its path (FloatingPointError on non-finite parameters)."""
    bad = [name for name, p in sae.named_parameters() if not torch.isfinite(p).all()]
    if bad:  # never overwrite the last good checkpoint with a broken state
        raise FloatingPointError(f"parameters {bad} became non-finite by step {step}; the last good checkpoint in {directory} was kept")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "cfg": sae.cfg.to_dict(), "sae": sae.state_dict(), "optimizer": opt.state_dict(),
        "step": step, "tokens": tokens, "n_steps": n_steps, "since_fired": since_fired.cpu(), "history": history,
        "coef": coef,
    }
    target = directory / CHECKPOINT_FILE
    atomic_write(target, lambda tmp: torch.save(state, tmp))
    return target


def load_checkpoint(path) -> dict:
    """The state saved by :func:`save_checkpoint`, from a file or a directory holding ``checkpoint.pt``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"resume={str(path)!r}: no checkpoint there (train with checkpoint_dir=... first)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"resume={str(path)!r} could not be read as a checkpoint ({err})") from err
