"""Command line: ``python -m abstopk_mini <command> [--json] ...``.

Every command prints a readable summary, or with ``--json`` exactly one JSON object on stdout;
progress bars and logs go to stderr. Commands:

    toy         the toy benchmark: every activation on P signed axes (no model needed)

Further commands (harvest, train, eval, concepts, steer, reproduce, sweep) register themselves
below as their modules land.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main", "build_parser"]


def _emit(args, result: dict, text: str) -> None:
    if args.json:
        json.dump(result, sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        print(text)


# ----------------------------------------------------------------------------- toy
def _add_toy(sub) -> None:
    p = sub.add_parser("toy", help="toy benchmark: every SAE activation on P signed ground-truth axes")
    p.add_argument("--d", type=int, default=64, help="ambient dimension (default 64)")
    p.add_argument("--P", type=int, default=32, help="number of signed ground-truth axes (default 32)")
    p.add_argument("--n-active", type=int, default=3, help="axes active per sample = k (default 3)")
    p.add_argument("--tokens", type=int, default=4_000_000, help="training samples seen per run (default 4M)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for smoke tests")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=_run_toy)


def _run_toy(args) -> int:
    import torch

    from .toy import format_table, toy_benchmark

    torch.manual_seed(args.seed)
    settings = dict(d=args.d, P=args.P, n_active=args.n_active, n_tokens=args.tokens, batch_size=args.batch_size, seed=args.seed)
    if args.quick:
        settings.update(d=16, P=8, n_active=2, n_tokens=200_000, n_samples=10_000)
    rows = toy_benchmark(progress=not args.json and sys.stderr.isatty(), **settings)
    _emit(args, {"command": "toy", "settings": settings, "rows": rows}, format_table(rows))
    return 0


# ----------------------------------------------------------------------------- main
_COMMANDS = [_add_toy]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m abstopk_mini", description="Sparse autoencoders from sparse coding (AbsTopK and friends).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
