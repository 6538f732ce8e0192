"""A trained SAE's run directory: what it holds, how it is written, and the checks it passes
before it is served again.

    runs/saes/abstopk-4096-k32-8d41b0a2c7/
        cfg.json, sae_weights.safetensors   the SAE (:meth:`abstopk_mini.sae.SAE.save`)
        train.json                          how it was trained, and the sha256 of both files above
        history.json                        the training history; written last: the run is complete
        snapshots/step_NNNNNN/              the SAE after given steps (optional)

:func:`save_trained` writes a run; :func:`load_trained` serves it only after checking that
``cfg.json`` is the config asked for and that both files still have the hashes recorded when it
was trained (so an edited input scale is not a cache hit); :func:`load_history` and
:func:`load_snapshots` read the rest. Every error says how to repair the run (retrain it).
:mod:`abstopk_mini.runs.store` names the directories and decides when to train.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ..checkpoint import snapshot_path
from ..io import atomic_write, remove_stale_tmp, sha256_file
from ..sae import CONFIG_FILE, SAE, UNREAD_THRESHOLD_FIELDS, WEIGHTS_FILE, SAEConfig
from ..untrusted import read_json

__all__ = ["HISTORY_FILE", "TRAIN_FILE", "SNAPSHOT_DIR", "load_history", "load_trained", "load_snapshots", "save_trained"]

SNAPSHOT_DIR = "snapshots"  # in an SAE run directory: the SAEs saved at TrainConfig.snapshot_steps
HISTORY_FILE, TRAIN_FILE = "history.json", "train.json"
# cfg.json fields that training itself sets, so they are not compared with the request
_SET_BY_TRAINING = ("input_scale", "device")


def _fix_hint(out: Path) -> str:
    return (f"retrain it into the same directory with train_on_harvest(..., retrain=True) (CLI: `train ... --retrain`), "
            f"or delete {str(out)!r}")


def _read_json(path: Path, out: Path):
    """The JSON object of ``path`` (a file of the SAE run ``out``), or a ValueError naming the file."""
    obj = read_json(path, f"the SAE run {str(out)!r} was damaged — {_fix_hint(out)}")
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a JSON {type(obj).__name__}, not an object; the run was damaged — {_fix_hint(out)}")
    return obj


def load_history(path) -> dict:
    """The training history of an SAE run directory (``history.json``)."""
    path = Path(path)
    return _read_json(path / HISTORY_FILE, path)


def load_trained(out, cfg: SAEConfig) -> tuple[SAE, dict]:
    """The SAE and history cached in run directory ``out``, after checking that they are what was asked.

    Checks, before anything is served: ``cfg.json`` holds the requested config (every field but
    those training sets: ``input_scale``, ``device``); the weights and ``cfg.json`` have the sha256
    recorded in ``train.json`` (a run saved before a hash was recorded gets it now, if its input
    scale is ``history.json``'s). Any mismatch is a ValueError that says what differs and how to retrain.
    """
    out = Path(out)
    saved = _read_json(out / CONFIG_FILE, out)
    record = _read_json(out / TRAIN_FILE, out)
    history = load_history(out)
    want = cfg.to_dict()
    unread = () if cfg.spec.threshold_based else tuple(UNREAD_THRESHOLD_FIELDS)  # never read: any value serves
    problems = [f"{key}: {saved.get(key)!r} in {CONFIG_FILE}, {want[key]!r} asked"
                for key in want if key not in _SET_BY_TRAINING + unread and saved.get(key) != want[key]]
    if "input_scale" in history and record.get("cfg_sha256") is None and saved.get("input_scale") != history["input_scale"]:
        problems.append(f"input_scale: {saved.get('input_scale')!r} in {CONFIG_FILE}, training set {history['input_scale']!r}")
    unrecorded = False
    for name, key in ((WEIGHTS_FILE, "weights_sha256"), (CONFIG_FILE, "cfg_sha256")):
        digest = sha256_file(out / name) if (out / name).is_file() else None
        if digest is None:
            problems.append(f"{name} is missing")
        elif record.get(key) is None:  # saved before this hash was recorded: record it now
            record[key], unrecorded = digest, True
        elif digest != record[key]:
            problems.append(f"{name} has sha256 {digest[:12]}…, but {TRAIN_FILE} recorded "
                            f"{record[key][:12]}… when it was trained (the file was replaced or edited)")
    if unrecorded and not problems:
        with contextlib.suppress(OSError):  # a read-only store stays as it is
            atomic_write(out / TRAIN_FILE, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, default=str)))
    if problems:
        raise ValueError(f"the cached SAE in {str(out)!r} is not the one asked for: " + "; ".join(problems) +
                         f". It was changed after training; {_fix_hint(out)}")
    try:
        return SAE.load(out), history
    except ValueError as err:  # e.g. non-finite weights: say how to repair it from here
        raise ValueError(f"{err} (in the SAE run {str(out)!r}: {_fix_hint(out)})") from err


def load_snapshots(out) -> list[tuple[int, int, SAE]]:
    """The snapshots of an SAE run directory, in step order: ``[(step, tokens, sae), ...]`` (empty if none)."""
    base = Path(out) / SNAPSHOT_DIR
    steps = sorted(int(p.name.split("_")[1]) for p in base.glob("step_*") if (p / "snapshot.json").is_file())
    out_list = []
    for step in steps:
        path = snapshot_path(base, step)
        meta = _read_json(path / "snapshot.json", Path(out))
        out_list.append((step, int(meta["tokens"]), SAE.load(path)))
    return out_list


def save_trained(out, sae: SAE, history: dict, record: dict) -> None:
    """Write a trained SAE run into ``out``: weights and config, ``train.json`` (``record`` plus the
    sha256 of the weights and of ``cfg.json``) and, last, ``history.json`` (its presence marks the run complete)."""
    out = Path(out)
    remove_stale_tmp(out, CONFIG_FILE, WEIGHTS_FILE, TRAIN_FILE, HISTORY_FILE)  # of a save killed mid-way; we hold the lock
    sae.save(out)
    record = record | {"weights_sha256": sha256_file(out / WEIGHTS_FILE), "cfg_sha256": sha256_file(out / CONFIG_FILE)}
    atomic_write(out / TRAIN_FILE, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, default=str)))
    atomic_write(out / HISTORY_FILE, lambda tmp: Path(tmp).write_text(json.dumps(history, default=float)))
