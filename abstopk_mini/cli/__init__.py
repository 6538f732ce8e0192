"""Command line: ``python -m abstopk_mini <command> [--json] ...``.

Every command prints a readable summary, or with ``--json`` exactly one JSON object on stdout;
progress bars and logs go to stderr. Each command is a job: a config dataclass and ``run(cfg)``
(:mod:`abstopk_mini.cli.commands`); its flags, their defaults and their help are generated from the
config's fields and docstrings (:mod:`abstopk_mini.config_flags`), so ``<command> --help`` lists every
setting. Commands:

    toy         the toy benchmark: every activation on P signed axes (no model needed)
    harvest     residual-stream activations of a model on offline text, written to shards
    train       an SAE trained on a harvest (content-addressed: a rerun reuses it); every TrainConfig field
    eval        FVU, L0, dead latents, and CE/KL/loss recovered with the SAE spliced into the model
    concepts    best single latent for a concept axis (male/female, ...), by sign, vs Difference-in-Means;
                plus gender words in held-out natural text and the all-latent sign scan
    steer       clamp a latent from negative to positive: female-vs-male next-token log-odds
    reproduce   the main job: all of the above for the SAE family on the embedded model, as a report
    sweep       a grid of SAEs (width, k, layer, ...) trained and measured, one JSON record per run
    dashboard   signed latent dashboards as one HTML page
    bidirectional  gender words in natural text, the all-latent scan and steering controls for sweep SAEs
    opposites   dashboards of the most bidirectional latents of sweep SAEs, judged: opposite meanings?
    budget      how sweep top-k SAEs spread their non-zeros over a batch's tokens (three readings)
    dead        the live and the dead latents of sweep TopK/AbsTopK SAEs (reach, scale, sign)

Errors: every failure is one line ``error: ...`` on stderr (under ``--json`` also one object
``{"error": ..., "type": ...}`` on stdout) and exit code 2. Arguments are checked before a model
is loaded. Bad input and problems of the machine (a full disk, a read-only path, a bad
``ABSTOPK_DEVICE``) are reported with their fix; an exception the package does not expect is
reported as a bug; ``--debug`` (or ``ABSTOPK_DEBUG=1``) adds its traceback.
"""

from __future__ import annotations

import argparse
import re
import sys

from .commands import COMMANDS
from ..config_flags import add_config, build_config, options
from .report import Parser, UsageError, emit, join_signed_values, report_error

__all__ = ["main", "build_parser", "UsageError", "COMMANDS"]


def _about(cls) -> str:
    """The first paragraph of a config's docstring, on one line, without reST markup: its command's help."""
    text = " ".join((cls.__doc__ or "").split("\n\n")[0].split())
    return re.sub(r":\w+:`~?([^`]*)`", r"\1", text).replace("``", "")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m abstopk_mini", description="Sparse autoencoders from sparse coding (AbsTopK and friends).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=_about(cmd.config), description=_about(cmd.config))
        add_config(p, cmd.config, cmd.aliases)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.add_argument("--debug", action="store_true", help="on an unexpected error, print its traceback (or set ABSTOPK_DEBUG=1)")
    return parser


def _run_sweep(cfg, args) -> tuple[dict, str]:
    """The sweep's own runner: it may detach itself (``--background``), passing ``--json`` and ``--debug`` on."""
    import dataclasses

    from ..runs.sweep import run_cli

    out = []
    run_cli(argparse.Namespace(**dataclasses.asdict(cfg), json=args.json, debug=args.debug),
            lambda _, result, text: out.append((result, text)))
    return out[0]


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (0, or 2 after one ``error:`` line).

    Before the command runs: ``ABSTOPK_DEVICE`` is checked (:func:`abstopk_mini.device.check_device_env`)
    and a ``--seed`` must lie in [0, 2**32 - 1]; then the job's config is built from the flags and
    checked by its own ``__post_init__``. Errors are classified by
    :func:`~abstopk_mini.cli.report.report_error`: bad input and problems of the machine (a full
    disk, a read-only path) are reported with their fix, anything else as a bug.
    """
    argv = join_signed_values(list(sys.argv[1:] if argv is None else argv))
    args = None
    try:
        args = build_parser().parse_args(argv)
        from ..device import check_device_env
        from ..limits import check_seed

        cmd = COMMANDS[args.command]
        for o in options(cmd.config, cmd.aliases):
            if o.field.name == "seed":
                check_seed(getattr(args, o.dest), o.flags[0])
        check_device_env()
        cfg = build_config(cmd.config, args, aliases=cmd.aliases)
        if cmd.run is None:
            result, text = _run_sweep(cfg, args)
        else:
            result = {"command": args.command, **cmd.run(cfg)}
            text = cmd.summary(cfg, result)
        emit(args, result, text)
        return 0
    except Exception as err:  # noqa: BLE001 - classified: user/environment error, or a bug (traceback under --debug)
        return report_error(argv, args, err)
