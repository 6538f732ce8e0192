"""Command-line plumbing of :mod:`abstopk_mini.cli`: the parser that reports instead of exiting, the
result printer (:func:`emit`) and the one-line error report.

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
import os
import re
import sys

__all__ = ["UsageError", "Parser", "emit", "join_signed_values", "expected_errors", "environment_problem", "is_bug",
           "report_error", "SIGNED_OPTIONS"]


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


#: options whose value may start with '-' (argparse reads '--values -5,5' as two options)
SIGNED_OPTIONS = ("--values", "--offsets", "--chunk-offsets")
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
