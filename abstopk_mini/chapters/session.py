r"""The one set-up call of every chapter: what each notebook's first cell used to spell out.

Every chapter's first code cell is, in this order:

1. ``import`` lines for what the chapter itself uses;
2. the Colab lines (:data:`COLAB`, three lines; the package is not importable before them);
3. ``import abstopk_mini as am`` and ``QUICK, MODEL, T0 = am.chapters.session.start()``.

:func:`start` reads ``ABSTOPK_QUICK`` (quick mode: tiny sizes, the same code path; CI runs every
chapter so, two at a time on two cores, hence one torch thread) and ``ABSTOPK_MODEL`` (the model
the chapters that load one use; the book's is Gemma-3-270M), prints exactly one line
``quick mode: on`` or ``quick mode: off``, and starts the chapter's clock.
``python -m abstopk_mini.chapters.session`` rewrites the Colab lines of every chapter from
:data:`COLAB` after a change; ``tests/test_colab.py`` checks each chapter holds them and runs them
as Colab would.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

from ..repo import REPO_URL
from .exercise_versions import render

__all__ = ["COLAB", "REPO_DIR", "Session", "start", "colab_lines", "write_notebooks"]

#: where Colab keeps the clone of the repository
REPO_DIR = "/content/abstopk_mini"

#: the Colab lines of every chapter: clone the repository (the chapters read its results/, sweeps/
#: and pretrained/), install it editable, and let this kernel import it without a restart
COLAB = f'''if "google.colab" in sys.modules:  # Colab: clone the repository (results/, sweeps/, pretrained/), install it
    !test -d {REPO_DIR} || git clone -q --depth 1 {REPO_URL} {REPO_DIR}
    !pip install -q -e {REPO_DIR}
    sys.path.insert(0, "{REPO_DIR}")
'''


class Session(NamedTuple):
    """``QUICK, MODEL, T0 = start()``."""

    quick: bool  #: ABSTOPK_QUICK=1: tiny sizes, same code (CI)
    model: str  #: ABSTOPK_MODEL, else the book's model
    t0: float  #: time.perf_counter() when the chapter started


def start(default_model: str = "gemma-3-270m") -> Session:
    """Quick mode, model name and start time of a chapter; prints ``quick mode: on|off`` (one line).
    In quick mode torch runs on one thread (CI runs two chapters at once on two cores)."""
    from ..device import is_quick

    quick = is_quick()
    if quick:
        import torch

        torch.set_num_threads(1)
    print(f"quick mode: {'on' if quick else 'off'}")
    return Session(quick, os.environ.get("ABSTOPK_MODEL") or default_model, time.perf_counter())


def colab_lines(source: str) -> str:
    """``source`` (a chapter's first code cell) with its Colab lines replaced by :data:`COLAB`
    (ValueError if it has none)."""
    lines = source.splitlines(keepends=True)
    try:
        first = next(i for i, line in enumerate(lines) if line.startswith('if "google.colab" in sys.modules:'))
    except StopIteration:
        raise ValueError("the setup cell has no 'if \"google.colab\" in sys.modules:' line") from None
    end = first + 1
    while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
        end += 1
    return "".join(lines[:first]) + COLAB + "".join(lines[end:])


def write_notebooks(paths) -> list[Path]:
    """Put :data:`COLAB` into the first code cell of each notebook in ``paths``; returns those changed."""
    changed = []
    for path in map(Path, paths):
        nb = json.loads(path.read_text(encoding="utf-8"))
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        old = "".join(cell["source"])
        new = colab_lines(old)
        if new != old:
            cell["source"] = new.splitlines(keepends=True)
            path.write_text(render(nb), encoding="utf-8")
            changed.append(path)
    return changed


if __name__ == "__main__":  # python -m abstopk_mini.chapters.session [notebooks...]
    targets = sys.argv[1:] or sorted(Path("notebooks").glob("[0-9][0-9]_*.ipynb"))
    for p in write_notebooks(targets):
        print(f"updated {p}")
