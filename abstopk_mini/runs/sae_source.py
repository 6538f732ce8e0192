"""Which SAE an ``--sae`` names: :func:`load_sae`, the one resolver every command uses.

An SAE may be named by

* the name of a shipped SAE (``gemma-3-270m-L6-abstopk-4096-k32``, :mod:`abstopk_mini.pretrained`),
* its folder (``pretrained/gemma-3-270m-L6-abstopk-4096-k32``: a folder listed in the
  ``manifest.json`` next to it) — both read by :func:`abstopk_mini.pretrained.load`, which checks
  every file against its SHA-256 first,
* a directory written by :meth:`abstopk_mini.sae.SAE.save` (``train --out``, a run directory
  under ``runs/saes``), read by :meth:`~abstopk_mini.sae.SAE.load`,
* a SAELens directory (``cfg.json`` + ``sae_weights.safetensors`` without our format tag), read by
  :func:`abstopk_mini.interop.from_saelens`.

    sae = load_sae("gemma-3-270m-L6-abstopk-4096-k32")
    sae = load_sae("runs/saes/abstopk-4096-k32-1a2b3c", flag="--sae")
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["load_sae", "shipped_folder"]


def shipped_folder(path) -> tuple[str, Path] | None:
    """``(name, pretrained root)`` when ``path`` is the folder of a shipped SAE (listed in the
    ``manifest.json`` of its parent folder), else None."""
    from .. import pretrained

    path = Path(path).expanduser().resolve()
    root = path.parent
    if not (root / pretrained.MANIFEST).is_file():
        return None
    for name, entry in pretrained.available(root).items():
        if isinstance(entry, dict) and entry.get("dir") == path.name:
            return name, root
    return None


def _is_ours(path: Path) -> bool:
    """Whether ``path/cfg.json`` carries our format tag (else it is read as SAELens's)."""
    from ..sae import CONFIG_FILE, FORMAT
    from ..untrusted import read_json

    try:
        raw = read_json(path / CONFIG_FILE, "")
    except (OSError, ValueError):
        return True  # missing, not JSON or nested too deeply: SAE.load says what is wrong with it
    return not isinstance(raw, dict) or raw.get("format") == FORMAT or str(raw.get("format", "")).startswith("abstopk_mini")


def load_sae(source, *, flag: str = "sae", device=None):
    """The :class:`~abstopk_mini.sae.SAE` that ``source`` names (see the module docstring).

    flag: how the argument is named in errors (``"--sae"`` from the command line). A shipped SAE's
    files are checked against their hashes (ValueError when one was changed). FileNotFoundError
    when ``source`` is neither a directory nor a shipped SAE's name, listing the shipped names.
    """
    from .. import pretrained
    from ..interop import from_saelens
    from ..sae import SAE

    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        raise TypeError(f"{flag} must name an SAE directory or a shipped SAE; got {source!r}")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        shipped = shipped_folder(path)
        if shipped is not None:
            return pretrained.load(shipped[0], root=shipped[1], device=device)
        if _is_ours(path):
            return SAE.load(path, device=device)
        return from_saelens(path, device=device)
    looks_like_path = os.sep in text or text.startswith((".", "~"))
    try:
        names = sorted(pretrained.available())
    except FileNotFoundError:
        names = None
    if not looks_like_path and names is not None and text in names:
        return pretrained.load(text, device=device)
    shipped = (f"one of the shipped SAEs {names}" if names else
               "the name of a shipped SAE (none found: set $ABSTOPK_PRETRAINED to the pretrained/ folder of a clone)")
    raise FileNotFoundError(f"{flag} {text!r} is neither a directory nor a shipped SAE; pass an SAE directory "
                            f"(train --out, a run under runs/saes), a SAELens directory, or {shipped}")
