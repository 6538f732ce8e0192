"""Argument checks shared by the language-model modules: block indices and positive counts.

Each raises a ValueError (or TypeError) that names the argument, the value received and the
range it must lie in.
"""

from __future__ import annotations

__all__ = ["check_layer", "check_layers", "check_positive"]


def check_layer(layer, n_layers: int) -> None:
    """Raise unless ``layer`` is an int block index, ``0 <= layer < n_layers``."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int; got {type(layer).__name__} {layer!r}")
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer must satisfy 0 <= layer < n_layers = {n_layers}; got layer={layer}")


def check_layers(layers, n_layers: int) -> list[int]:
    """Block indices as a sorted list without repeats; each checked by :func:`check_layer`."""
    if isinstance(layers, int):
        raise TypeError(f"layers must be a sequence of ints such as range({n_layers}); got the int {layers}; wrap it: [{layers}]")
    layers = sorted(set(layers))
    if not layers:
        raise ValueError("layers is empty; pass at least one block index, e.g. range(n_layers)")
    for layer in layers:
        check_layer(layer, n_layers)
    return layers


def check_positive(**values) -> None:
    """Raise unless every keyword value is an int >= 1 (bools refused); the keyword names it."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}")
