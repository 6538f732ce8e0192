"""The one place that chooses where tensors live: CUDA when available (Colab), else CPU.

Set ``ABSTOPK_DEVICE`` (e.g. ``cpu``, ``cuda:1``) to override.
"""

from __future__ import annotations

import os

import torch

__all__ = ["get_device", "is_quick"]


def get_device() -> torch.device:
    """The default device for models, activations and SAEs."""
    name = os.environ.get("ABSTOPK_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_quick() -> bool:
    """True when ``ABSTOPK_QUICK`` is set to a true value (CI runs notebooks this way)."""
    return os.environ.get("ABSTOPK_QUICK", "0").strip().lower() in {"1", "true", "yes", "on"}
