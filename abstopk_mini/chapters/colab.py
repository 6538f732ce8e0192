r"""The Colab part of every chapter's setup cell, written once.

A chapter opened on Colab needs the package and the repository's ``results/``, ``sweeps/`` and
``pretrained/``. :data:`BLOCK` gets them: it clones :data:`abstopk_mini.repo.REPO_URL` and installs
from the clone; if the clone fails it installs the package by name (a wheel carries those three
folders, see ``setup.py``); if both fail it stops with one line saying what to do. Each chapter's
first code cell holds :data:`BLOCK` verbatim — the notebook cannot import it before the package is
installed — and ``tests/test_colab.py`` checks that every copy is this one, so the URL and the
steps live here only. ``python -m abstopk_mini.chapters.colab`` rewrites the copies after a change.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ..repo import REPO_URL

__all__ = ["PACKAGE", "REPO_DIR", "BLOCK", "replace_block", "write_notebooks"]

#: the name the package is installed by when the repository cannot be cloned
PACKAGE = "abstopk_mini"
#: where Colab keeps the clone
REPO_DIR = "/content/abstopk_mini"

BLOCK = f'''if "google.colab" in sys.modules:  # on Colab: the package, results/, sweeps/ and pretrained/
    REPO_URL, REPO_DIR = "{REPO_URL}", "{REPO_DIR}"
    if os.path.isdir(REPO_DIR) or os.system(f"git clone -q --depth 1 {{REPO_URL}} {{REPO_DIR}}") == 0:
        !pip install -q -e {{REPO_DIR}}
        sys.path.insert(0, REPO_DIR)  # this kernel sees the package without a restart
        os.environ["ABSTOPK_REPO"] = REPO_DIR
    elif os.system(f"{{sys.executable}} -m pip install -q {PACKAGE}") != 0:  # its wheel carries the three folders
        raise SystemExit("could not clone the repository nor pip install {PACKAGE}: build a wheel in a checkout "
                         "(python -m build), upload dist/*.whl to Colab and pip install it")
'''

#: the block as chapters hold it: from its ``if`` line to the last indented line after it
_FOUND = re.compile(r'^if "google\.colab" in sys\.modules:.*\n(?:(?:    .*)?\n)*?(?=\S|\Z)', re.M)


def replace_block(source: str) -> str:
    """``source`` (a setup cell) with its Colab block replaced by :data:`BLOCK` (ValueError if it has none)."""
    text = source if source.endswith("\n") else source + "\n"
    new, n = _FOUND.subn(lambda m: BLOCK, text, count=1)
    if n != 1:
        raise ValueError("the setup cell has no 'if \"google.colab\" in sys.modules:' block to replace")
    return new if source.endswith("\n") else new[:-1]


def write_notebooks(paths) -> list[Path]:
    """Put :data:`BLOCK` into the first code cell of each notebook in ``paths``; returns those changed."""
    changed = []
    for path in map(Path, paths):
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        old = "".join(cell["source"])
        new = replace_block(old)
        if new != old:
            cell["source"] = new.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n")  # as nbformat writes
            changed.append(path)
    return changed


if __name__ == "__main__":  # python -m abstopk_mini.chapters.colab [notebooks...]
    targets = sys.argv[1:] or sorted(Path("notebooks").glob("[0-9][0-9]_*.ipynb"))
    for p in write_notebooks(targets):
        print(f"updated {p}")
