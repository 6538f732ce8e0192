"""The inputs of a job that reads an SAE (``--sae``, ``--acts``, ``--model``, ``--layer``), and the
checks of a job's settings that name its command-line flags.

:func:`sae_inputs` resolves ``--sae`` (:func:`~abstopk_mini.runs.sae_source.load_sae`: a shipped
SAE by name or folder, an SAE directory, a SAELens directory) and checks that the SAE, the harvest
and the model agree on model, layer, hook and width (:func:`abstopk_mini.lm.compat.check_inputs`)
— all before the model is loaded, with the model's shape read from the registry or its
``config.json``. :func:`load_checked_model` then loads it and checks the loaded model once more.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["CommandInputs", "sae_inputs", "load_checked_model", "harvest_names", "reading_harvest", "check_positive",
           "check_runs_dir", "check_finite", "StagesJob"]


@dataclass
class StagesJob:
    """The SAEs of stages of a sweep, read back by the jobs that measure them (``budget``, ``dead``,
    ``bidirectional``, ``opposites``)."""

    config: str
    """The sweep config whose records name the SAEs, e.g. sweeps/steps.json."""
    stages: tuple[str, ...]
    """Stages of that config whose SAEs are read (TopK / AbsTopK pairs: one pair per seed)."""
    results: str | None = None
    """Append the job's JSON records (one per SAE or per seed) to this file; None: print them only."""
    runs_dir: str | None = None
    """Artifact root; None: $ABSTOPK_RUNS or ./runs."""


def check_positive(value, flag: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be >= 1; got {value}")


def check_runs_dir(root) -> None:
    """Refuse a run-artifact root (``--runs-dir``, else ``$ABSTOPK_RUNS`` or ``./runs``) that is a file."""
    from .store import runs_dir

    path = runs_dir(root)
    where = "--runs-dir" if root is not None else ("$ABSTOPK_RUNS" if os.environ.get("ABSTOPK_RUNS", "").strip() else "./runs")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{where} {str(path)!r} is a file, not a directory; pass a directory for the run artifacts")


def check_finite(values, flag: str) -> list[float]:
    """``values`` as floats, every one finite and at least one (e.g. steering's clamp values)."""
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"{flag}: {v!r} is not a finite number; pass finite values, e.g. {flag}=-10,0,10")
    if not values:
        raise ValueError(f"{flag} is empty; pass e.g. {flag}=-10,0,10")
    return [float(v) for v in values]


class CommandInputs(NamedTuple):
    sae: object          # the SAE (eval mode)
    model: str           # the model to load (name or directory)
    layer: int | None    # the block the SAE reads
    names: dict          # labels of the inputs for messages (flags)


def harvest_names(args) -> dict:
    """Labels of a command's inputs for :func:`abstopk_mini.lm.compat.check_inputs`'s messages."""
    names = {"model": "--model", "layer": "--layer"}
    if getattr(args, "sae", None) is not None:
        names["sae"] = f"the SAE of --sae {args.sae!r}"
    if getattr(args, "acts", None) is not None:
        names["harvest"] = f"the harvest of --acts {str(args.acts)!r}"
    return names


def sae_inputs(args, *, acts=None, require_layer: bool = False, check=None) -> CommandInputs:
    """The SAE of ``args.sae`` and the model and layer it reads, checked against ``acts`` (a harvest
    directory, when the command reads one), ``args.model`` and ``args.layer``; then ``check(sae)``
    (the command's own checks). Nothing is loaded but the SAE."""
    from ..lm.compat import check_inputs
    from ..lm.models import DEFAULT_MODEL
    from .sae_source import load_sae

    sae = load_sae(args.sae, flag="--sae", device="cpu" if getattr(args, "cpu", False) else None)
    names = harvest_names(args)
    model, layer = getattr(args, "model", None), getattr(args, "layer", None)
    inputs = check_inputs(sae, acts, model, layer, names=names)
    if model is None:  # the model the SAE or the harvest names, else the default one; its shape checked too
        model = inputs.model or DEFAULT_MODEL
        names = names | {"model": "the default model" if inputs.model is None else "the model"}
        inputs = check_inputs(sae, acts, model, layer, names=names)
    if inputs.layer is None and require_layer:
        raise ValueError(f"the SAE of --sae {args.sae!r} records no layer (it was trained through the API, not the "
                         "pipeline); pass --layer L, the block whose output it was trained on")
    if check is not None:
        check(sae)
    return CommandInputs(sae, model, inputs.layer, names)


def load_checked_model(inputs: CommandInputs, acts=None):
    """Load the model of ``inputs`` and check the loaded model against the SAE (and the harvest)."""
    from ..lm.compat import check_inputs
    from ..lm.models import load_model

    loaded = load_model(inputs.model)
    check_inputs(inputs.sae, acts, loaded, inputs.layer, names=inputs.names)
    return loaded


@contextlib.contextmanager
def reading_harvest(acts_dir, flag: str = "--acts"):
    """Hold the shared lock of a harvest while it is read (:func:`abstopk_mini.runs.store.harvest_lock`,
    the lock training holds), so that a ``harvest --overwrite`` of it waits for the reader.
    FileNotFoundError (nothing created) when ``acts_dir`` holds no harvest."""
    from pathlib import Path

    from ..io import flock
    from ..lm.shards import MANIFEST
    from .store import harvest_lock

    if not (Path(acts_dir) / MANIFEST).is_file():
        raise FileNotFoundError(f"{flag} {str(acts_dir)!r} holds no harvest (no {MANIFEST}); pass a directory "
                                "written by `harvest`")
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(flock(harvest_lock(acts_dir), exclusive=False))
    except OSError as err:  # a harvest on read-only media: no lock file can be made there, and no one rewrites it
        if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
    with stack:
        yield
