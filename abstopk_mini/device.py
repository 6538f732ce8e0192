"""The one place that chooses where tensors live: CUDA when available (Colab), else CPU.

Set ``ABSTOPK_DEVICE`` to override: ``cpu``, ``cuda`` or ``cuda:N`` (a CUDA device this machine
has), or ``mps`` (Apple GPUs, where torch has it). Anything else — a typo, ``meta`` (tensors
without data, nothing can be computed on them), CUDA on a machine without it — is refused with a
ValueError naming the variable, the value and what to set instead.
"""

from __future__ import annotations

import os
import re

import torch

__all__ = ["get_device", "check_device_env", "is_quick", "DEVICE_ENV", "DEVICE_CHOICES"]

DEVICE_ENV = "ABSTOPK_DEVICE"
#: the values ``ABSTOPK_DEVICE`` may take (``cuda:N`` with N a device index)
DEVICE_CHOICES = ("cpu", "cuda", "cuda:N", "mps")


def _parse_device(name: str) -> torch.device:
    """``name`` as a torch.device this machine can compute on (ValueError naming ABSTOPK_DEVICE otherwise)."""
    value = name.strip().lower()
    fix = f"set {DEVICE_ENV} to one of {', '.join(DEVICE_CHOICES)}, or unset it (CUDA when available, else CPU)"
    if value == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", value)
    if match:
        if not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV}={name!r} but CUDA is not available on this machine (no GPU, or a CPU-only "
                             f"torch {torch.__version__}); set {DEVICE_ENV}=cpu or unset it")
        index = int(match.group(1)) if match.group(1) is not None else None
        count = torch.cuda.device_count()
        if index is not None and index >= count:
            raise ValueError(f"{DEVICE_ENV}={name!r} but this machine has {count} CUDA device(s) "
                             f"(cuda:0 .. cuda:{count - 1}); pick one of them or unset {DEVICE_ENV}")
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    if value == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{DEVICE_ENV}={name!r} but torch has no MPS device on this machine; {fix}")
        return torch.device("mps")
    why = (" (the meta device holds no data: nothing can be computed on it)" if value == "meta" else "")
    raise ValueError(f"{DEVICE_ENV}={name!r} is not a device this package runs on{why}; {fix}")


def get_device() -> torch.device:
    """The default device for models, activations and SAEs: ``$ABSTOPK_DEVICE`` (checked, see the
    module docstring), else CUDA when available, else CPU."""
    name = os.environ.get(DEVICE_ENV, "")
    if name.strip():
        return _parse_device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device_env() -> None:
    """Check ``$ABSTOPK_DEVICE`` now (the CLI does it before any work): ValueError naming it if bad."""
    get_device()


def is_quick() -> bool:
    """True when ``ABSTOPK_QUICK`` is set to a true value (CI runs notebooks this way)."""
    return os.environ.get("ABSTOPK_QUICK", "0").strip().lower() in {"1", "true", "yes", "on"}
