r"""SAEs shipped with the book: ``am.pretrained.load(name)``.

    am.pretrained.available()                          # {name: manifest entry}
    sae = am.pretrained.load("gemma-3-270m-L6-abstopk-4096-k32")

The repository's ``pretrained/`` folder holds one SAELens directory per SAE (``cfg.json`` and
``sae_weights.safetensors``, :func:`~abstopk_mini.interop.to_saelens`, stored in float16: half the
size, each weight rounded once) and ``manifest.json``::

    {"format": "abstopk_mini.pretrained/1",
     "saes": {name: {"dir": name, "sha256": {file: hex digest}, "activation", "d_sae", "k", "model",
                     "layer", "hook_name", "dtype", "trained": {how it was made: record, key, steps, ...},
                     "heldout_fvu": {"float32": ..., "shipped": ...}, ...}}}

:func:`load` finds the folder (``root=``, else ``$ABSTOPK_PRETRAINED``, else ``pretrained/`` of the
checkout, :func:`abstopk_mini.repo.find`), checks every file against its SHA-256, and reads it with
:func:`~abstopk_mini.interop.from_saelens` into an :class:`~abstopk_mini.sae.SAE` that runs in
float32 on raw activations (the input scale is folded into the weights). SAELens itself reads the
same folders (``sae_lens.SAE.load_from_disk``). :func:`ship` writes a new entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .io import atomic_write
from .untrusted import read_json

__all__ = ["MANIFEST", "FORMAT", "pretrained_root", "available", "load", "ship", "sha256"]

MANIFEST = "manifest.json"
FORMAT = "abstopk_mini.pretrained/1"
_FILES = ("cfg.json", "sae_weights.safetensors")


def sha256(path) -> str:
    """The hex SHA-256 of a file (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pretrained_root(root=None) -> Path:
    """The folder of shipped SAEs: ``root``, else ``$ABSTOPK_PRETRAINED``, else the checkout's ``pretrained/``."""
    if root is None:
        root = os.environ.get("ABSTOPK_PRETRAINED")
    if root is None:
        from .repo import find

        return find("pretrained")
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"root={str(root)!r} has no {MANIFEST}; pass the pretrained/ folder of a clone "
                                "(or a folder written by am.pretrained.ship)")
    return root


_FIX = "restore it (git checkout -- pretrained/) or re-clone the repository"


def _read_manifest(root: Path) -> dict:
    """The manifest of ``root`` (empty if none), checked: a JSON object of this format whose
    ``saes`` maps names to entries, each with a plain ``dir`` and a SHA-256 per file."""
    path = root / MANIFEST
    if not path.is_file():
        return {"format": FORMAT, "saes": {}}
    m = read_json(path, _FIX)
    if not isinstance(m, dict):
        raise ValueError(f"{path} holds a JSON {type(m).__name__}, not a manifest object; {_FIX}")
    if m.get("format") != FORMAT:
        raise ValueError(f"{path} has format {m.get('format')!r}, not {FORMAT!r}; update the package (pip install -e .)")
    if not isinstance(m.get("saes"), dict):
        raise ValueError(f"{path} has no 'saes' object (name -> entry); {_FIX}")
    for name, entry in m["saes"].items():
        problem = _entry_problem(entry)
        if problem:
            raise ValueError(f"{path}: the entry of {name!r} {problem}; {_FIX}")
    return m


def _entry_problem(entry) -> str | None:
    """What is wrong with one manifest entry, or None."""
    if not isinstance(entry, dict):
        return f"is a JSON {type(entry).__name__}, not an object"
    folder = entry.get("dir")
    if not isinstance(folder, str) or not folder or "/" in folder or "\\" in folder or folder.startswith("."):
        return f"has dir={folder!r}, not a plain folder name"
    digests = entry.get("sha256")
    if not isinstance(digests, dict) or any(not isinstance(digests.get(f), str) for f in _FILES):
        return f"has no 'sha256' of each of {list(_FILES)}"
    return None


def available(root=None) -> dict:
    """``{name: manifest entry}`` of the shipped SAEs."""
    return dict(_read_manifest(pretrained_root(root))["saes"])


def load(name: str, root=None, *, device=None, verify: bool = True):
    """The shipped SAE ``name`` as an :class:`~abstopk_mini.sae.SAE` (float32, eval mode).

    verify: check each file's SHA-256 against the manifest first (a changed or truncated file
    raises ValueError saying how to restore it). FileNotFoundError when the folder or the SAE's
    files are missing, with what to do.
    """
    from .interop import from_saelens

    base = pretrained_root(root)
    saes = _read_manifest(base)["saes"]
    if name not in saes:
        raise ValueError(f"name={name!r} is not a shipped SAE; available: {sorted(saes)}")
    entry = saes[name]
    folder = base / entry["dir"]
    for file in _FILES:
        path = folder / file
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; restore it from the repository (git checkout -- pretrained/) "
                                    "or re-clone it")
        if verify and sha256(path) != entry["sha256"][file]:
            raise ValueError(f"{path} does not match its SHA-256 in {base / MANIFEST}: the file was changed or is "
                             "incomplete; restore it (git checkout -- pretrained/) or pass verify=False to use it as is")
    sae = from_saelens(folder, d_in=entry.get("d_in"), hook_name=entry.get("hook_name"), device=device)
    return sae.eval()


def ship(sae, name: str, root, info: dict, *, dtype: str = "float16", overwrite: bool = False) -> dict:
    """Write ``sae`` under ``root/name`` (SAELens format, ``dtype``) and its entry into the manifest.

    info: how it was made (record, key, steps, tokens, measured FVU, ...), stored as given next to
    the fields read from the SAE. Returns the entry. An existing name needs ``overwrite=True``.
    """
    from .interop import to_saelens

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain folder name such as 'gemma-3-270m-L6-abstopk-4096-k32'; got {name!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(root)
    if name in manifest["saes"] and not overwrite:
        raise ValueError(f"{name!r} is already in {root / MANIFEST}; pass overwrite=True to replace it")
    folder = to_saelens(sae, root / name, dtype=dtype)
    cfg = sae.cfg
    entry = {"dir": name, "format": "saelens", "dtype": dtype,
             "sha256": {f: sha256(folder / f) for f in _FILES},
             "size_bytes": sum((folder / f).stat().st_size for f in _FILES),
             "activation": cfg.activation, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "k": cfg.k,
             "model": cfg.model_name, "hook_name": cfg.hook_name, **info}
    manifest["saes"][name] = entry
    manifest["saes"] = dict(sorted(manifest["saes"].items()))
    atomic_write(root / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1) + "\n"))
    return entry
