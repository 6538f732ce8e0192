"""JSON that every parser reads: :func:`dumps` refuses NaN and ±Infinity.

Python's ``json.dumps`` writes ``NaN`` and ``Infinity`` by default, which ``JSON.parse`` and
most other parsers refuse (a blank dashboard, an unreadable ``--json`` line). Producers replace a
non-finite number by ``null`` and say why next to it; :func:`dumps` is the guard that makes a
missed one fail loudly, naming where it sits, instead of writing broken output.
"""

from __future__ import annotations

import json
import math

__all__ = ["dumps", "NonFiniteJSONError", "first_nonfinite", "nulls_for_nonfinite"]


class NonFiniteJSONError(RuntimeError):
    """A value to be written as JSON holds NaN or ±Infinity (a bug in the code that produced it)."""


def first_nonfinite(obj, path: str = "$") -> str | None:
    """The path (``$["key"][3]``) of the first NaN/±inf float in ``obj``, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else path
    if isinstance(obj, dict):
        for key, value in obj.items():
            found = first_nonfinite(value, f"{path}[{json.dumps(str(key))}]")
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found = first_nonfinite(value, f"{path}[{i}]")
            if found:
                return found
    return None


def dumps(obj, *, what: str = "the output", **kw) -> str:
    """``json.dumps(obj, allow_nan=False, **kw)``; NonFiniteJSONError naming the first non-finite value."""
    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError as err:
        if "Out of range float values" not in str(err):
            raise
        where = first_nonfinite(obj) or "a value converted by default="
        raise NonFiniteJSONError(f"{what} holds a non-finite number (NaN or Infinity) at {where}; JSON has no such "
                                 "number, so nothing was written") from None


def nulls_for_nonfinite(obj, path: str = "$") -> tuple[object, list[str]]:
    """``obj`` with every NaN / ±inf float replaced by None, and the paths where that happened
    (for a note saying why they are null). Dicts, lists and tuples are copied; other values kept."""
    found: list[str] = []

    def walk(value, where):
        if isinstance(value, float) and not math.isfinite(value):
            found.append(where)
            return None
        if isinstance(value, dict):
            return {k: walk(v, f"{where}[{json.dumps(str(k))}]") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(obj, path), found

