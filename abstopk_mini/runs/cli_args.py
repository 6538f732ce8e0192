"""Command-line plumbing shared by :mod:`abstopk_mini.runs.cli` and :mod:`abstopk_mini.runs.cli_jobs`:
the result printer (:func:`emit`), argument checks that run before any model loads, and the
one-line error report.

Every failure of a command is reported as exactly one line ``error: <message>`` on stderr and,
under ``--json``, one object ``{"error": <message>, "type": <exception class>, "bug": <bool>}``
on stdout; the exit code is 2. Expected errors (bad input or environment) carry their own
message; any other exception is reported as a bug in the package, with its traceback only under
``--debug`` or ``ABSTOPK_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

__all__ = ["UsageError", "Parser", "emit", "check_positive", "check_runs_dir", "parse_floats", "join_signed_values",
           "expected_errors", "report_error", "SIGNED_OPTIONS"]


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
    where = "--runs-dir" if root is not None else ("$ABSTOPK_RUNS" if os.environ.get("ABSTOPK_RUNS") else "./runs")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{where} {str(path)!r} is a file, not a directory; pass a directory for the run artifacts")


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
    FloatingPointError (training diverged).
    """
    return (ValueError, TypeError, OSError, FloatingPointError)


def report_error(argv: list[str], args, err: BaseException, bug: bool) -> int:
    debug = bool(getattr(args, "debug", False) or "--debug" in argv) or os.environ.get("ABSTOPK_DEBUG", "") not in ("", "0")
    message = " ".join(str(err).split()) or type(err).__name__  # one line
    if bug:
        message = (f"unexpected {type(err).__name__}: {message} — this is a bug in abstopk_mini; please report it "
                   f"with the command line (rerun with --debug or ABSTOPK_DEBUG=1 for the traceback)")
    if debug:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    print(f"error: {message}", file=sys.stderr)
    if getattr(args, "json", False) or (args is None and "--json" in argv):
        json.dump({"error": message, "type": type(err).__name__, "bug": bug}, sys.stdout)
        sys.stdout.write("\n")
    return 2
