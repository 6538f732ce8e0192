"""A verified on-disk cache: a directory built once, checked against its manifest on every use.

:func:`ensure_cache` returns a cache directory after checking it (:func:`verify_cache`: file sizes,
sha256 hashes, safetensors tensor names and shapes), building it first when it is missing or
invalid. The build writes into a temporary sibling that is renamed into place, under a file lock,
so readers never see a half-built cache and two processes build it once. The Gemma-3 weights of
:func:`abstopk_mini.lm.models.load_model` live in such a cache under :func:`cache_dir`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

from ..io import default_file_mode, flock, sha256_file

__all__ = ["cache_dir", "verify_cache", "ensure_cache"]

_MANIFEST = "manifest.json"
_CACHE_FORMAT = 1


def cache_dir() -> Path:
    """Root of the package's cache: ``$ABSTOPK_CACHE`` or ``~/.cache/abstopk_mini``."""
    root = os.environ.get("ABSTOPK_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "abstopk_mini"


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}


def _write_manifest(directory: Path, source: str) -> dict:
    files, tensors = {}, {}
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.name != _MANIFEST:
            files[p.name] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
            if p.suffix == ".safetensors":
                tensors[p.name] = _safetensors_shapes(p)
    manifest = {"format": _CACHE_FORMAT, "source": source, "files": files, "tensors": tensors,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tmp = directory / (_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, directory / _MANIFEST)
    return manifest


def verify_cache(directory: str | os.PathLike, source: str | None = None) -> str | None:
    """Check a cache directory against its manifest; return None if valid, else the reason.

    Checks: manifest readable, same ``source`` (if given), every listed file present with the
    recorded size and sha256, and each safetensors file holding the recorded tensor names and
    shapes. Costs one read of the files (about 1 s for the 1 GB Gemma cache).
    """
    directory = Path(directory)
    try:
        manifest = json.loads((directory / _MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {_MANIFEST} in {directory}" if directory.exists() else f"{directory} does not exist"
    except (OSError, ValueError) as err:
        return f"unreadable {_MANIFEST}: {err}"
    if not isinstance(manifest, dict) or manifest.get("format") != _CACHE_FORMAT or not manifest.get("files"):
        return f"{_MANIFEST} has an unknown format"
    if source is not None and manifest.get("source") != source:
        return f"built from {manifest.get('source')!r}, expected {source!r}"
    for name, rec in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            return f"missing file {name}"
        size = path.stat().st_size
        if size != rec["size"]:
            return f"{name} has {size} bytes, manifest says {rec['size']} (truncated or replaced)"
    for name, shapes in manifest.get("tensors", {}).items():
        try:
            found = _safetensors_shapes(directory / name)
        except Exception as err:  # safetensors raises its own error types on a bad header
            return f"{name} is not a readable safetensors file ({err})"
        if found != shapes:
            diff = sorted(k for k in set(found) | set(shapes) if found.get(k) != shapes.get(k))
            return f"{name}: tensor names/shapes differ from the manifest (e.g. {diff[:3]})"
    for name, rec in manifest["files"].items():
        if sha256_file(directory / name) != rec["sha256"]:
            return f"{name}: sha256 differs from the manifest (corrupted)"
    return None


def ensure_cache(directory: str | os.PathLike, build: Callable[[Path], None], *,
                 source: str = "", load: Callable[[Path], Any] | None = None):
    """Return ``load(directory)`` for a verified cache directory, building it first if needed.

    ``build(tmp_dir)`` writes the files into an empty temporary directory next to ``directory``;
    the manifest is written after it, and the directory is renamed into place in one step, so a
    reader never sees a half-built cache. A shared file lock (fcntl, ``<directory>.lock``) is held
    while verifying and loading and an exclusive one while building, so two processes (e.g.
    ``pytest -n 2``) build the cache once and never read it mid-rebuild. An invalid cache (see
    :func:`verify_cache`) is rebuilt with a warning.
    """
    directory = Path(directory).expanduser()
    load = load if load is not None else (lambda p: p)
    lock = directory.with_name(directory.name + ".lock")
    for _ in range(3):
        with flock(lock, exclusive=False):
            if verify_cache(directory, source) is None:
                return load(directory)
        with flock(lock, exclusive=True):
            reason = verify_cache(directory, source)
            if reason is not None:
                _rebuild(directory, build, source, reason)
    raise RuntimeError(f"cache at {directory} did not verify after rebuilding; see the warnings above")


def _rebuild(directory: Path, build: Callable[[Path], None], source: str, reason: str) -> None:
    """Build into a temporary sibling, then swap it in (caller holds the exclusive lock)."""
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{directory.name}.tmp-*"):  # left by a killed build
        shutil.rmtree(stale, ignore_errors=True)
    if directory.exists():
        warnings.warn(f"cache at {directory} is invalid ({reason}); rebuilding it", stacklevel=3)
    else:
        print(f"abstopk_mini: building the cache at {directory} (one time)", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a cache is meant to be read by others too
    try:
        build(tmp)
        for p in tmp.rglob("*"):  # builders (safetensors) may write 0600; a cache is for everyone who reads it
            if p.is_file():
                os.chmod(p, default_file_mode())
        _write_manifest(tmp, source)
        if directory.exists():
            old = parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(directory, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
