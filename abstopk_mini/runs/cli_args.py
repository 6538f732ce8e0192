"""Command-line plumbing shared by :mod:`abstopk_mini.runs.cli` and :mod:`abstopk_mini.runs.cli_jobs`:
the result printer (:func:`emit`), argument checks that run before any model loads, and the
one-line error report.

Every failure of a command is reported as exactly one line ``error: <message>`` on stderr and,
under ``--json``, one object ``{"error": <message>, "type": <exception class>, "bug": <bool>}``
on stdout; the exit code is 2. Expected errors (bad input or environment) carry their own
message; an error of the machine (a full disk, a read-only or forbidden path: :func:`environment_problem`)
is reported with its fix whatever library raised it; any other exception is reported as a bug in
the package, with its traceback only under ``--debug`` or ``ABSTOPK_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import sys

__all__ = ["UsageError", "Parser", "emit", "check_positive", "check_runs_dir", "check_harvest_args", "check_train_fits",
           "parse_floats",
           "join_signed_values", "expected_errors", "environment_problem", "is_bug", "report_error", "SIGNED_OPTIONS"]


class UsageError(ValueError):
    """A command-line argument argparse refused (reported like every other error)."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit; main() reports it as one line
        raise UsageError(f"{self.prog}: {message} (see --help)")


def emit(args, result: dict, text: str) -> None:
    """A command's result: ``text`` for people, or with ``--json`` exactly one JSON object on stdout
    (strict JSON: a NaN or ±inf left in ``result`` is written as null and listed in ``notes``)."""
    if args.json:  # strict JSON: never NaN / Infinity
        from ..strict_json import dumps, nulls_for_nonfinite

        # commands write null with their own reason; a number that still is not finite becomes null
        # here, named in "notes" and on stderr (never a literal NaN that parsers refuse)
        result, nulls = nulls_for_nonfinite(result)
        if nulls:
            note = (f"{len(nulls)} value(s) not finite, written as null: {', '.join(nulls[:10])}"
                    + (" ..." if len(nulls) > 10 else ""))
            result["notes"] = list(result.get("notes") or []) + [note]
            print(f"note: {note}", file=sys.stderr)
        sys.stdout.write(dumps(result, what=f"the JSON result of {getattr(args, 'command', 'the command')}",
                               default=str) + "\n")
    else:
        print(text)


def check_positive(value, flag: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be >= 1; got {value}")


def check_runs_dir(root) -> None:
    from .store import runs_dir

    path = runs_dir(root)
    where = "--runs-dir" if root is not None else ("$ABSTOPK_RUNS" if os.environ.get("ABSTOPK_RUNS", "").strip() else "./runs")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{where} {str(path)!r} is a file, not a directory; pass a directory for the run artifacts")


def check_harvest_args(args, spec=None) -> None:
    """What ``harvest`` (``args``; ``spec``, its HarvestSpec) can refuse before loading the model (the
    model's shape from its config), and before anything is written: a size the text cannot give or
    the disk cannot hold (:func:`abstopk_mini.lm.activations.check_harvest_size`)."""
    from ..lm.activations import check_harvest_size
    from ..lm.models import check_layer_for, model_shape
    from ..lm.shards import MANIFEST

    check_positive(args.tokens, "--tokens")
    if args.context < 2:
        raise ValueError(f"--context must be >= 2 (BOS plus at least one token); got {args.context}")
    check_layer_for(args.model, args.layer, "--layer")
    shape = model_shape(args.model)
    if shape is not None and shape[2] is not None and args.context > shape[2]:
        raise ValueError(f"--context {args.context} exceeds the {shape[2]} positions of {args.model!r}; "
                         f"pass --context <= {shape[2]}")
    check_runs_dir(args.runs_dir)
    if spec is None or shape is None:
        return
    out = spec.directory(args.runs_dir)
    if not args.overwrite and (out / MANIFEST).is_file():
        return  # there already (served, or resumed after the same checks inside harvest)
    texts = None  # the text bound needs the documents: local sources, as written (hub datasets: inside harvest)
    if spec.augment == "none" and not any(s.startswith("hf:") for s in spec.sources):
        from .store import offline_texts

        texts = offline_texts(spec.sources, spec.split)
    check_harvest_size(spec.n_tokens, out, d_model=shape[1], dtype_bytes=2 if spec.dtype == "bfloat16" else 4,
                       texts=texts, context_length=spec.context_length, chunk_offsets=spec.chunk_offsets)


def check_train_fits(cfg, batch_size: int, runs_root=None) -> None:
    """Refuse an SAE (``cfg``; ``train --batch-size``, ``--runs-dir``) whose training cannot fit this
    machine, before anything is allocated: memory for its weights, their gradients and two Adam
    moments (4 x the parameters) and a batch's pre-activations, codes and their gradient
    (3 x batch x d_sae); disk for its run directory (the weights, and a checkpoint of weights and
    moments written beside the previous one: 6 x the parameters)."""
    import torch

    from ..device import get_device
    from ..limits import check_disk, check_memory, format_bytes

    from .store import runs_dir

    item = torch.empty(0, dtype=getattr(torch, cfg.dtype)).element_size()
    n_params = 2 * cfg.d_in * cfg.d_sae + 2 * cfg.d_sae + cfg.d_in  # W_enc, W_dec, b_enc, threshold, b_dec
    what = f"an SAE of --d-sae {cfg.d_sae:,} on d_in={cfg.d_in}"
    fix = "pass a smaller --d-sae (or --batch-size)"
    device = get_device()
    weights, batch = 4 * n_params * item, 3 * batch_size * cfg.d_sae * item
    check_memory(weights + batch, f"training {what} ({n_params:,} parameters with their gradients and Adam moments: "
                 f"{format_bytes(weights)}; a batch of {batch_size:,} tokens: {format_bytes(batch)})", fix,
                 device=None if device.type == "cpu" else device)
    check_disk(6 * item * n_params, runs_dir(runs_root), f"the run directory of {what}",
               f"{fix}, or --runs-dir on a disk with room")


def parse_floats(text: str, flag: str) -> list[float]:
    """``"-5,0,5"`` -> [-5.0, 0.0, 5.0]; every item a finite number, at least one."""
    values = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            v = float(item)
        except ValueError:
            raise ValueError(f"{flag}: {item!r} is not a number; pass comma-separated numbers, e.g. {flag}=-10,0,10") from None
        if not math.isfinite(v):
            raise ValueError(f"{flag}: {item!r} is not a finite number; pass finite values, e.g. {flag}=-10,0,10")
        values.append(v)
    if not values:
        raise ValueError(f"{flag} is empty; pass e.g. {flag}=-10,0,10")
    return values


#: options whose value may start with '-' (argparse reads '--values -5,5' as two options)
SIGNED_OPTIONS = ("--values", "--offsets")
SIGNED_VALUE = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


def join_signed_values(argv: list[str]) -> list[str]:
    """Rewrite ``--values -5,5`` as ``--values=-5,5`` (argparse takes a value starting with '-' and
    holding a comma for an option)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in SIGNED_OPTIONS and i + 1 < len(argv) and SIGNED_VALUE.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe bad input or a bad environment; their message is the report.

    ValueError/TypeError (arguments, files with wrong content), OSError (missing files, a path that
    is a file, permissions, a full disk, the hub unreachable: HubUnavailableError), and
    FloatingPointError (training diverged). Errors of the machine that other libraries raise as
    their own types are recognised by :func:`environment_problem`.
    """
    return (ValueError, TypeError, OSError, FloatingPointError)


# what a full disk, a read-only file system or a forbidden path look like in the messages of the
# libraries that write files without raising OSError: safetensors ("I/O error: No space left on
# device (os error 28)") and torch.save (a failed write ends in its zip writer: "[enforce fail at
# inline_container.cc] ... unexpected pos", "PytorchStreamWriter failed writing file")
_ENV_PATTERNS = (
    (errno.ENOSPC, re.compile(r"no space left on device|os error 28\b|storagefull", re.IGNORECASE)),
    (errno.EDQUOT, re.compile(r"disk quota exceeded|os error 122\b", re.IGNORECASE)),
    (errno.EROFS, re.compile(r"read-only file system|os error 30\b", re.IGNORECASE)),
    (errno.EACCES, re.compile(r"permission denied|os error 13\b", re.IGNORECASE)),
    (None, re.compile(r"inline_container\.cc|PytorchStreamWriter failed writing|file write failed", re.IGNORECASE)),
)
_ENV_FIX = {
    errno.ENOSPC: "the disk is full: free space there, or pass --runs-dir (or --out) on a disk with room, then "
                  "run the same command again (finished shards and checkpoints are kept)",
    errno.EDQUOT: "the disk quota is used up: free space, or pass --runs-dir (or --out) elsewhere, then run the same "
                  "command again",
    errno.EROFS: "the file system is read-only: pass --runs-dir (or --out) on a writable disk",
    errno.EACCES: "this user may not write or read that path: fix its permissions, or pass --runs-dir (or --out) "
                  "in a folder you own",
    errno.EPERM: "this user may not write or read that path: fix its permissions, or pass --runs-dir (or --out) "
                 "in a folder you own",
    None: "writing a file failed (torch could not write it out; a full disk or a read-only path does this): free "
          "space or pass --runs-dir (or --out) on a writable disk with room, then run the same command again",
}


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def environment_problem(err: BaseException) -> str | None:
    """The fix, when ``err`` (or an exception it was raised from) is a problem of the machine rather
    than of the package: a full disk, a used-up quota, a read-only file system, a forbidden path,
    or a file write that failed inside torch. None otherwise.

    An OSError says so by its errno; safetensors and torch.save report the same failures as their
    own exception types, recognised here by their messages (``_ENV_PATTERNS``).
    """
    for e in _chain(err):
        code = getattr(e, "errno", None) if isinstance(e, OSError) else None
        if code is not None and code in _ENV_FIX:
            return _ENV_FIX[code]
        text = str(e)
        for key, pattern in _ENV_PATTERNS:
            if pattern.search(text):
                return _ENV_FIX[key]
    return None


def is_bug(err: BaseException) -> bool:
    """Whether ``err`` is an internal failure of the package (reported as a bug): not an expected
    error (:func:`expected_errors`) and not a problem of the machine (:func:`environment_problem`)."""
    return not isinstance(err, expected_errors()) and environment_problem(err) is None


def _close_progress_bars() -> None:
    """Close the progress bars an exception left open, so the ``error:`` line starts a line of its own."""
    if "tqdm" not in sys.modules:
        return
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a broken bar must not hide the error report
            pass


def report_error(argv: list[str], args, err: BaseException, bug: bool | None = None) -> int:
    """Print the one-line report of ``err`` (and the JSON object under ``--json``); return 2.

    bug: None decides by :func:`is_bug`; a problem of the machine gets its fix appended."""
    debug = bool(getattr(args, "debug", False) or "--debug" in argv) or os.environ.get("ABSTOPK_DEBUG", "") not in ("", "0")
    bug = is_bug(err) if bug is None else bug
    message = " ".join(str(err).split()) or type(err).__name__  # one line
    fix = environment_problem(err)
    if bug:
        message = (f"unexpected {type(err).__name__}: {message} — this is a bug in abstopk_mini; please report it "
                   f"with the command line (rerun with --debug or ABSTOPK_DEBUG=1 for the traceback)")
    elif fix is not None and fix not in message:
        message = f"{message} — {fix}"
    _close_progress_bars()
    if debug:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    print(f"error: {message}", file=sys.stderr)
    if getattr(args, "json", False) or (args is None and "--json" in argv):
        json.dump({"error": message, "type": type(err).__name__, "bug": bug}, sys.stdout)
        sys.stdout.write("\n")
    return 2
