"""Training checkpoints: one safetensors file (``checkpoint.safetensors``), no pickle.

:func:`save_checkpoint` writes everything a run needs to continue into one file, atomically (a
temp file, then a rename), and never over a good checkpoint with non-finite parameters:

* tensors: the SAE's state (``sae/<name>``), the optimiser's per-parameter state
  (``opt/<index>/<name>``: Adam's moments and step counters) and the dead-latent counters
  (``since_fired``);
* the file's JSON metadata (``abstopk_mini_checkpoint``): the SAE config, the step, token and
  step counts, the L0 controller's coefficient, the history, the optimiser's parameter groups and
  the training settings that decide the trajectory (:data:`TRAJECTORY_FIELDS`).

One file holds both, so the tensors and the JSON always belong together. :func:`load_checkpoint`
reads the header first, checks every field against the run that resumes it (config, shapes,
dtypes, the training settings, counters that fit each other, finite values) and only then loads
the tensors; ``train_sae(..., resume=path)`` then continues bit-identically on CPU. A
``checkpoint.pt`` of earlier versions (a pickle) is never opened: it is refused with the fix.

Snapshots (:func:`save_snapshot`) are the other saved state of a run: the SAE alone, as it is after
a given step (``TrainConfig.snapshot_steps``), in an SAE directory that :meth:`SAE.load` reads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .io import atomic_write, remove_stale_tmp
from .sae import CONFIG_FILE, WEIGHTS_FILE
from .untrusted import check_shapes, saved_shapes, tensor_header

__all__ = ["CHECKPOINT_FILE", "LEGACY_CHECKPOINT_FILE", "TRAJECTORY_FIELDS", "save_checkpoint", "load_checkpoint",
           "restore_optimizer", "has_checkpoint", "remove_checkpoint", "HISTORY_KEYS", "snapshot_path", "save_snapshot"]

CHECKPOINT_FILE = "checkpoint.safetensors"
LEGACY_CHECKPOINT_FILE = "checkpoint.pt"  # pickled by earlier versions: refused, never read
FORMAT = "abstopk_mini.checkpoint/2"
_META = "abstopk_mini_checkpoint"
#: TrainConfig fields a resumed run must share with the run that wrote the checkpoint
TRAJECTORY_FIELDS = ("n_tokens", "batch_size", "lr", "adam_betas", "adam_eps", "grad_clip", "warmup_frac", "decay_frac", "lr_schedule",
                     "l1_coefficient", "l0_coefficient", "target_l0", "target_rate", "sparsity_warmup_frac", "aux_k",
                     "aux_coef", "aux_sign", "dead_tokens", "seed", "drop_nonfinite")
#: the lists of a training history, one entry per logged step
HISTORY_KEYS = ("step", "tokens", "loss", "mse", "fvu", "l0", "aux", "sparsity", "coef", "lr", "dead_frac", "grad_norm")
#: SAEConfig fields a resumed run need not repeat: set by training (input_scale) or where it runs (device)
_NOT_COMPARED = ("input_scale", "device")
_FIX = ("start without it — train_sae(..., resume=None), or train_on_harvest(..., retrain=True) "
        "(CLI: `train ... --retrain`) — or delete the checkpoint")


def save_checkpoint(directory, sae, opt, step, tokens, n_steps, since_fired, history, coef, *, train: dict | None = None) -> Path:
    """Write ``directory/checkpoint.safetensors`` and return its path (FloatingPointError on
    non-finite parameters). train: the run's :data:`TRAJECTORY_FIELDS` (checked on resume)."""
    from safetensors.torch import save_file

    bad = [name for name, p in sae.named_parameters() if not torch.isfinite(p).all()]
    if bad:  # never overwrite the last good checkpoint with a broken state
        raise FloatingPointError(f"parameters {bad} became non-finite by step {step}; the last good checkpoint in {directory} was kept")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = opt.state_dict()
    tensors = {f"sae/{key}": value.detach().cpu().contiguous().clone() for key, value in sae.state_dict().items()}
    scalars = {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"opt/{index}/{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["since_fired"] = since_fired.detach().cpu().contiguous().clone()
    meta = {"format": FORMAT, "cfg": sae.cfg.to_full_dict(), "step": step, "tokens": tokens, "n_steps": n_steps,
            "coef": coef, "history": history, "param_groups": state["param_groups"], "opt_scalars": scalars,
            "train": {key: list(v) if isinstance(v, tuple) else v for key, v in (train or {}).items()}}
    text = json.dumps(meta)
    target = directory / CHECKPOINT_FILE
    atomic_write(target, lambda tmp: save_file(tensors, tmp, metadata={_META: text}))
    (directory / LEGACY_CHECKPOINT_FILE).unlink(missing_ok=True)  # a resumed run is no longer the old one
    return target


def restore_optimizer(opt: torch.optim.Optimizer, state: dict) -> None:
    """``opt.load_state_dict(state)`` with each state tensor laid out as its parameter (the file
    stores them contiguous; fused Adam needs a moment with the strides of its parameter, e.g. the
    transposed ``W_enc``, to repeat the run bit for bit)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    laid_out = {}
    for index, per_param in state["state"].items():
        p = params[index]
        laid_out[index] = {key: torch.empty_like(p).copy_(value) if torch.is_tensor(value) and value.shape == p.shape
                           else value for key, value in per_param.items()}
    opt.load_state_dict({"state": laid_out, "param_groups": state["param_groups"]})


def has_checkpoint(directory) -> bool:
    """Whether ``directory`` holds a checkpoint, of this format or (to be refused) an old one."""
    directory = Path(directory)
    return (directory / CHECKPOINT_FILE).is_file() or (directory / LEGACY_CHECKPOINT_FILE).is_file()


def remove_checkpoint(directory) -> None:
    """Delete the checkpoint files of ``directory`` (once the run is complete)."""
    for name in (CHECKPOINT_FILE, LEGACY_CHECKPOINT_FILE):
        (Path(directory) / name).unlink(missing_ok=True)


def load_checkpoint(path, cfg=None, train: dict | None = None) -> dict:
    """The state saved by :func:`save_checkpoint`, from a file or a directory holding it.

    cfg, train: the run that resumes it (an SAEConfig and its :data:`TRAJECTORY_FIELDS`); every
    field of the checkpoint is checked against them before a tensor is loaded. A mismatch, a
    damaged file or an old pickled ``checkpoint.pt`` is a ValueError naming the fields and the fix.
    Returns ``{"cfg", "sae", "optimizer", "step", "tokens", "n_steps", "since_fired", "history", "coef"}``.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT_FILE).is_file() and (path / LEGACY_CHECKPOINT_FILE).is_file():
            path = path / LEGACY_CHECKPOINT_FILE
        else:
            path = path / CHECKPOINT_FILE
    where = f"resume={str(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no checkpoint there (train with checkpoint_dir=... first)")
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":  # a safetensors file starts with its header's length, then '{'
        old = " (a pickled checkpoint of an earlier version, never unpickled: it could run any code)" \
            if path.name.endswith(".pt") or head[:2] == b"PK" or head[:1] == b"\x80" else ""
        raise ValueError(f"{where} is not a checkpoint of this version{old}; {_FIX}")
    header = tensor_header(path, _FIX)
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(_META)
    try:
        meta = json.loads(raw) if raw is not None else None
    except (ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{where} has no readable checkpoint state (format {FORMAT!r}); {_FIX}")
    sae_cfg = _check_meta(meta, where, cfg, train)
    _check_tensors(path, header, meta, sae_cfg)
    tensors = load_file(str(path))
    for key, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{where}: tensor {key!r} holds non-finite values; the checkpoint is broken — {_FIX}")
    if (tensors["since_fired"] < 0).any():
        raise ValueError(f"{where}: since_fired holds negative counts; the checkpoint is broken — {_FIX}")
    opt_state = {}
    for key, value in tensors.items():
        if key.startswith("opt/"):
            _, index, name = key.split("/", 2)
            opt_state.setdefault(int(index), {})[name] = value
    for index, scalars in meta["opt_scalars"].items():
        opt_state.setdefault(int(index), {}).update(scalars)
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in meta["param_groups"]]
    return {"cfg": meta["cfg"], "sae": {k[4:]: v for k, v in tensors.items() if k.startswith("sae/")},
            "optimizer": {"state": opt_state, "param_groups": groups}, "step": meta["step"], "tokens": meta["tokens"],
            "n_steps": meta["n_steps"], "since_fired": tensors["since_fired"], "history": meta["history"],
            "coef": meta["coef"]}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_meta(meta: dict, where: str, cfg, train: dict | None):
    """The checkpoint's SAEConfig, after checking its JSON fields against each other and the run."""
    from .sae import SAEConfig

    try:
        sae_cfg = SAEConfig.from_dict(meta.get("cfg") if isinstance(meta.get("cfg"), dict) else {})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: its SAE config is not valid ({err}); {_FIX}") from err
    step, tokens, n_steps, coef = (meta.get(k) for k in ("step", "tokens", "n_steps", "coef"))
    problems = []
    if not (_is_int(n_steps) and n_steps >= 1 and _is_int(step) and 0 <= step <= n_steps):
        problems.append(f"step={step!r} of n_steps={n_steps!r} (need ints, 0 <= step <= n_steps >= 1)")
    if not (_is_int(tokens) and tokens >= 0):
        problems.append(f"tokens={tokens!r} (need an int >= 0)")
    if not (isinstance(coef, (int, float)) and not isinstance(coef, bool) and math.isfinite(coef) and coef >= 0):
        problems.append(f"coef={coef!r} (need a finite number >= 0)")
    for key, kind in (("history", dict), ("param_groups", list), ("opt_scalars", dict), ("train", dict)):
        if not isinstance(meta.get(key), kind):
            problems.append(f"{key} is not a JSON {kind.__name__}")
    if not problems:
        problems += _history_problems(meta["history"], step, tokens) + _optimizer_problems(meta)
    if problems:
        raise ValueError(f"{where} is damaged: {'; '.join(problems)}; {_FIX}")
    mismatches = []
    if cfg is not None:
        want, got = cfg.to_full_dict(), sae_cfg.to_full_dict()
        mismatches += [f"{key}: {got[key]!r} in the checkpoint, {want[key]!r} asked"
                       for key in want if key not in _NOT_COMPARED and got[key] != want[key]]
    saved_train = meta["train"]
    for key, value in (train or {}).items():
        value = list(value) if isinstance(value, tuple) else value
        if key in saved_train and saved_train[key] != value:
            mismatches.append(f"{key}: {saved_train[key]!r} in the checkpoint, {value!r} asked")
    batch = saved_train.get("batch_size")
    if _is_int(batch) and tokens > step * batch:
        mismatches.append(f"tokens={tokens} after {step} steps of batch_size={batch} (more than the batches hold)")
    n_tok = saved_train.get("n_tokens")
    if _is_int(batch) and _is_int(n_tok) and n_steps != math.ceil(n_tok / batch):
        mismatches.append(f"n_steps={n_steps} but n_tokens={n_tok} / batch_size={batch} gives {math.ceil(n_tok / batch)}")
    if mismatches:
        raise ValueError(f"{where} is a checkpoint of another run: {'; '.join(mismatches)}. Resume it with the "
                         f"settings it was written with, or {_FIX}")
    return sae_cfg


def _history_problems(history: dict, step: int, tokens: int) -> list[str]:
    """The history must hold the :data:`HISTORY_KEYS` lists, of numbers, of one length, logged no
    later than the checkpoint's step and tokens."""
    lists = [history.get(key) for key in HISTORY_KEYS]
    numbers = all(isinstance(v, list) and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in v)
                  for v in lists)
    if not numbers or len({len(v) for v in lists}) != 1:
        return [f"history does not hold the lists {list(HISTORY_KEYS)}, of numbers, of one length"]
    if history["step"] and (history["step"][-1] > step or history["tokens"][-1] > tokens):
        return [f"history was logged up to step {history['step'][-1]}, after the checkpoint's step {step}"]
    return []


def _optimizer_problems(meta: dict) -> list[str]:
    """The optimiser's JSON part: parameter groups (objects with a params list, the Adam betas and
    eps the run recorded) and per-parameter scalars keyed by parameter index."""
    groups, scalars, train = meta["param_groups"], meta["opt_scalars"], meta["train"]
    if not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        return ["param_groups are not objects with a 'params' list"]
    if not all(isinstance(k, str) and k.isdigit() and isinstance(v, dict) for k, v in scalars.items()):
        return ["opt_scalars is not an object of parameter index -> object"]
    for name, key in (("betas", "adam_betas"), ("eps", "adam_eps")):
        if key in train and any(g.get(name) != train[key] for g in groups):
            return [f"the optimiser's {name} {[g.get(name) for g in groups]} are not the run's {key}={train[key]!r}"]
    return []


def _check_tensors(path: Path, header: dict, meta: dict, sae_cfg) -> None:
    """The header's tensors: exactly the SAE's (shapes of ``sae_cfg``), the optimiser's (one set
    per parameter, shaped like it) and ``since_fired`` [d_sae] — checked before any is loaded."""
    shapes = saved_shapes(sae_cfg)  # of the SAE's own tensors; in its state_dict θ is "act.threshold"
    required = {f"sae/{'act.' if key == 'threshold' else ''}{key}": shape for key, shape in shapes.items()}
    trained = ("W_dec", "W_enc") + (("b_enc",) if sae_cfg.use_b_enc else ()) + ("b_dec",)
    params = [shapes[key] for key in trained] + ([shapes["threshold"]] if sae_cfg.spec.threshold_based else [])
    required["since_fired"] = (sae_cfg.d_sae,)
    optional = {}
    for index, shape in enumerate(params):
        for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            optional[f"opt/{index}/{name}"] = shape
        optional[f"opt/{index}/step"] = ()
    check_shapes(path, header, required, optional, fix=_FIX, what=f"the checkpoint's own config (d_in={sae_cfg.d_in}, "
                 f"d_sae={sae_cfg.d_sae}, activation={sae_cfg.activation!r})")
    stored = {"float32": "F32", "float64": "F64", "bfloat16": "BF16", "float16": "F16"}[sae_cfg.dtype]
    wrong = sorted(f"{key} ({header[key][0]})" for key in required if key.startswith("sae/") and header[key][0] != stored)
    if wrong:
        raise ValueError(f"resume={str(path)!r}: tensors {wrong} are not {sae_cfg.dtype} ({stored}) as the checkpoint's "
                         f"config says; the checkpoint is damaged — {_FIX}")
    groups = meta["param_groups"]
    indices = [i for g in groups if isinstance(g, dict) and isinstance(g.get("params"), list) for i in g["params"]]
    if not all(_is_int(i) for i in indices) or sorted(indices) != list(range(len(params))):
        raise ValueError(f"resume={str(path)!r}: the optimiser state covers parameters {indices}, the SAE has "
                         f"{len(params)}; the checkpoint is damaged — {_FIX}")
    if header["since_fired"][0] != "I64":
        raise ValueError(f"resume={str(path)!r}: since_fired has dtype {header['since_fired'][0]}, not int64; {_FIX}")


# --------------------------------------------------------------------------- snapshots
def snapshot_path(snapshot_dir, step: int) -> Path:
    """Where :func:`train_sae` saves the SAE after ``step`` steps (``TrainConfig.snapshot_steps``)."""
    return Path(snapshot_dir) / f"step_{step:06d}"


def save_snapshot(snapshot_dir, sae, step: int, tokens: int) -> Path:
    """Save ``sae`` as it is after ``step`` optimiser steps and ``tokens`` training tokens (an SAE
    directory loadable by :meth:`SAE.load`, plus ``snapshot.json`` with the step and tokens)."""
    out = snapshot_path(snapshot_dir, step)
    remove_stale_tmp(out, CONFIG_FILE, WEIGHTS_FILE, "snapshot.json")  # of a save killed mid-way (one writer: rank 0)
    was_training = sae.training
    sae.eval()
    sae.save(out)
    sae.train(was_training)
    atomic_write(out / "snapshot.json", lambda tmp: Path(tmp).write_text(json.dumps({"step": step, "tokens": tokens})))
    return out
