"""Where the repository's files are: ``results/``, ``sweeps/``, ``pretrained/``.

The chapters read records the repository ships (``results/*.jsonl``), sweep configs and the shipped
SAEs. A notebook may run anywhere — in ``notebooks/``, in a scratch folder, on Colab — so these
files are found by :func:`repo_root`, in this order:

1. ``$ABSTOPK_REPO``, when set (it must be a checkout: a folder with ``results/``);
2. the current folder or the nearest parent that is a checkout (``results/`` and ``_toc.yml``);
3. the folder above the installed package, when the package is installed from a checkout
   (``pip install -e .``, what the README and the Colab setup cell do);
4. the copy of ``results/``, ``sweeps/`` and ``pretrained/`` that a wheel carries inside the package
   (``abstopk_mini/_repo/``, written by the repository's ``setup.py``), when it is installed from a
   wheel (``pip install abstopk_mini-*.whl``) and no checkout is found.

    am.repo.find("results/steps_vs_tokens.jsonl")  # -> Path, or FileNotFoundError saying how to get it
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_URL", "BUNDLED", "repo_root", "find", "is_checkout"]

REPO_URL = "https://github.com/abstopk-mini/abstopk_mini"
_MARKERS = ("results", "_toc.yml")
#: the repository's folders that an installed wheel carries in ``abstopk_mini/_repo/`` (setup.py)
BUNDLED = ("results", "sweeps", "pretrained")
_BUNDLE = Path(__file__).resolve().parent / "_repo"


def is_checkout(path) -> bool:
    """Whether ``path`` holds the repository's top-level files (``results/`` and ``_toc.yml``)."""
    p = Path(path)
    return (p / "results").is_dir() and (p / "_toc.yml").is_file()


def repo_root(start=None) -> Path | None:
    """The checkout this session can read (module docstring), or None when there is none."""
    env = os.environ.get("ABSTOPK_REPO")
    if env:
        if not (Path(env) / "results").is_dir():
            raise FileNotFoundError(f"ABSTOPK_REPO={env!r} has no results/ folder; point it at a clone of {REPO_URL} "
                                    "(git clone --depth 1 ...) or unset it")
        return Path(env).resolve()
    here = Path(start or Path.cwd()).resolve()
    for base in (here, *here.parents):
        if is_checkout(base):
            return base
    installed = Path(__file__).resolve().parent.parent
    if is_checkout(installed):
        return installed
    return _BUNDLE if all((_BUNDLE / name).is_dir() for name in BUNDLED) else None


def find(name: str, start=None) -> Path:
    """The file or folder ``name`` (a path relative to the repository root) in :func:`repo_root`.

    FileNotFoundError when there is no checkout or it lacks ``name``; the message says how to get one.
    """
    root = repo_root(start)
    if root is None:
        raise FileNotFoundError(
            f"{name!r} ships with the repository, and no checkout was found (not in {str(Path(start or Path.cwd()))!r} "
            f"or its parents, not next to the installed package, and the package was not installed from a wheel that "
            f"carries it). Clone it and install from it: "
            f"git clone --depth 1 {REPO_URL} && pip install -e abstopk_mini; or set ABSTOPK_REPO to a clone")
    if not (root / name).exists():
        raise FileNotFoundError(f"{name!r} is not in the checkout {str(root)!r}; update it (git pull) or set "
                                "ABSTOPK_REPO to a clone that has it")
    return root / name
