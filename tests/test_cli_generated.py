"""The command line is generated from the jobs' config dataclasses (abstopk_mini.config_flags):
every field of every job config is a flag whose default is the field's and whose help is the
field's docstring; parsing a command line gives the config built directly; no flag and no default
is written by hand in the CLI."""

import ast
import dataclasses
import re
import typing
from pathlib import Path

import pytest

import abstopk_mini as am
from abstopk_mini.cli import COMMANDS, build_parser
from abstopk_mini.config_flags import build_config, field_docs, flag_name, options
from abstopk_mini.cli.report import UsageError
from abstopk_mini.runs.jobs_store import TrainJob, train_kw
from abstopk_mini.runs.reproduce import ReproduceConfig

GENERIC = {"--help", "-h", "--json", "--debug"}  # the flags every command has: not settings


def _subparsers():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return sub.choices


def _all_fields(cls, prefix=""):
    """(dest, field) of every leaf field of a config, nested configs flattened."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _all_fields(hints[f.name], prefix + f.name + ".")
        else:
            yield prefix + f.name, f


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_field_is_a_flag_with_its_default_and_its_doc(name):
    cmd = COMMANDS[name]
    actions = {a.dest: a for a in _subparsers()[name]._actions}
    for dest, f in _all_fields(cmd.config):
        action = actions.get(dest)
        assert action is not None, f"{name}: field {dest} has no flag"
        assert flag_name(f.name) in action.option_strings, (name, dest, action.option_strings)
        default = _default(f)
        if default is dataclasses.MISSING:
            assert action.required, (name, dest)
        else:
            assert not action.required and action.default == default, (name, dest, action.default, default)
        doc = action.help.rsplit(" (default:", 1)[0].rsplit(" (required)", 1)[0]
        assert len(doc.strip()) > 5, (name, dest, action.help)


def test_every_train_config_field_is_reachable_from_train_and_reproduce_settings_from_reproduce():
    train = {a.dest for a in _subparsers()["train"]._actions}
    assert {f"train.{f.name}" for f in dataclasses.fields(am.TrainConfig)} <= train
    assert len(dataclasses.fields(am.TrainConfig)) >= 25  # not 6, as when the flags were written by hand
    reproduce = {a.dest for a in _subparsers()["reproduce"]._actions}
    assert {f"config.{f.name}" for f in dataclasses.fields(ReproduceConfig)} <= reproduce
    assert all(field_docs(am.TrainConfig).get(f.name) for f in dataclasses.fields(am.TrainConfig))


def test_no_hand_written_flag_or_default():
    """Every option of every command is generated from a config field (but --json, --debug, --help), and the
    help's defaults are the fields' defaults; the CLI's sources hold no argparse default of their own."""
    for name, p in _subparsers().items():
        cmd = COMMANDS[name]
        generated = {o.dest for o in options(cmd.config, cmd.aliases)}
        for action in p._actions:
            if set(action.option_strings) & GENERIC:
                assert not action.option_strings or action.default in (False, None, "==SUPPRESS=="), action
                continue
            assert action.dest in generated, f"{name}: {action.option_strings} is written by hand"
        text = " ".join(p.format_help().split())
        for o in options(cmd.config, cmd.aliases):
            if o.default is dataclasses.MISSING:
                continue
            shown = " ".join(map(str, o.default)) or "(none)" if isinstance(o.default, tuple) else str(o.default)
            assert f"(default: {shown})" in text, (name, o.dest, shown)
    root = Path(am.__file__).parent / "cli"
    for path in root.glob("*.py"):
        if path.name == "fields.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("add_argument", "set_defaults"):
                assert not any(k.arg == "default" for k in node.keywords), f"{path.name}:{node.lineno} a default by hand"


def _sample(kind, default, i=0):
    """A value of ``kind`` other than ``default``."""
    if kind.choices:
        return next((c for c in kind.choices if c != default), kind.choices[0])
    if kind.item is bool:
        return not default if default is not None else True
    if kind.item is int:
        return (default if isinstance(default, int) else 0) + 3 + i
    if kind.item is float:
        return (default if isinstance(default, float) else 0.0) + 0.25 + i
    return f"x{i}"


def _value(o):
    if o.kind.seq is None:
        return _sample(o.kind, o.default)
    n = o.kind.length or 2
    return o.kind.seq(_sample(o.kind, None, i) for i in range(n))


def _argv(o, value):
    if o.kind.item is bool and o.kind.seq is None:
        return [o.flags[0] if value else "--no-" + o.flags[0][2:]]
    return [o.flags[0], *map(str, value)] if o.kind.seq else [o.flags[0], str(value)]


def _replace(cfg, dest, value):
    head, _, rest = dest.partition(".")
    if rest:
        return dataclasses.replace(cfg, **{head: _replace(getattr(cfg, head), rest, value)})
    return dataclasses.replace(cfg, **{head: value})


EXTRA = {"dashboard": {"latents": (0,)}}  # a dashboard needs --latents or --top-bidirectional


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_round_trip_parse_equals_the_config_built_directly(name):
    cmd = COMMANDS[name]
    opts = options(cmd.config, cmd.aliases)
    required = {o.dest: _value(o) for o in opts if o.default is dataclasses.MISSING} | EXTRA.get(name, {})
    base_argv = [a for o in opts if o.dest in required for a in _argv(o, required[o.dest])]
    base = cmd.config(**required)

    def parse(extra):
        return build_config(cmd.config, build_parser().parse_args([name, *base_argv, *extra]), aliases=cmd.aliases)

    assert parse([]) == base
    tried = 0
    for o in opts:
        if o.dest in required or (name, o.dest) == ("reproduce", "quick"):  # a preset: its own test below
            continue
        value = _value(o)
        try:
            direct = _replace(base, o.dest, value)
        except ValueError:  # a value the config refuses on its own (e.g. a folder the store sets)
            continue
        assert parse(_argv(o, value)) == direct, (name, o.dest, value)
        if o.kind.seq and o.kind.item is not bool:  # commas between the values work too
            assert parse([o.flags[0], ",".join(map(str, value))]) == direct
        tried += 1
    assert tried >= len(opts) - len(required) - 3, (name, tried)


def test_reproduce_quick_is_a_preset_the_flags_given_override():
    cmd = COMMANDS["reproduce"]
    cfg = build_config(cmd.config, build_parser().parse_args(["reproduce", "--quick"]), aliases=cmd.aliases)
    assert cfg.quick and cfg.config == ReproduceConfig.quick()
    cfg = build_config(cmd.config, build_parser().parse_args(["reproduce", "--quick", "--d-sae", "4096", "--tokens",
                                                              "5000"]), aliases=cmd.aliases)
    assert cfg.config == ReproduceConfig.quick(d_sae=4096, n_tokens=5000)  # a default value given is kept too
    cfg = build_config(cmd.config, build_parser().parse_args(["reproduce", "--k", "8"]), aliases=cmd.aliases)
    assert cfg.config == ReproduceConfig(k=8)


def test_train_run_directory_settings_are_those_of_the_hand_written_cli():
    """The run directory's hash reads the settings passed on: batch size and seed, plus what differs from
    TrainConfig's defaults, so the command lines of before name the same directories."""
    def kw(*argv):
        cmd = COMMANDS["train"]
        return train_kw(build_config(cmd.config, build_parser().parse_args(["train", "--acts", "a", *argv]),
                                     aliases=cmd.aliases).train)

    assert kw() == {"batch_size": 4096, "seed": 0}
    assert kw("--tokens", "1024", "--batch-size", "256", "--lr", "1e-3", "--drop-nonfinite", "--seed", "3") == {
        "batch_size": 256, "seed": 3, "n_tokens": 1024, "lr": 1e-3, "drop_nonfinite": True}
    assert kw("--no-progress", "--aux-coef", "0.5") == {"batch_size": 4096, "seed": 0, "aux_coef": 0.5}
    assert dataclasses.asdict(TrainJob(acts="a").train) == dataclasses.asdict(am.TrainConfig())  # the same defaults


@pytest.mark.parametrize("argv, flag", [(["--lr", "-1"], "--lr"), (["--warmup-frac", "x"], "--warmup-frac"),
                                        (["--b-dec-init", "median"], "--b-dec-init"), (["--adam-betas", "0.9"], "--adam-betas"),
                                        (["--checkpoint-dir", "c"], "--checkpoint-dir")])
def test_bad_settings_name_their_flag(argv, flag, capsys):
    from abstopk_mini.cli import main

    assert main(["train", "--acts", "nowhere", *argv, "--json"]) == 2
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert len(line) == 1 and flag in line[0], line


def test_a_config_without_docs_or_with_a_clash_is_refused():
    @dataclasses.dataclass
    class Two:
        n_tokens: int = 1
        """Tokens."""
        tokens: int = 2
        """Also tokens."""

    with pytest.raises(TypeError, match="share a flag"):
        options(Two, {"n_tokens": "--tokens"})
    with pytest.raises(UsageError, match="--tokens"):
        build_parser().parse_args(["train", "--acts", "a", "--tokens", "many"])
    assert re.fullmatch(r"--[a-z0-9-]+", flag_name("l1_coefficient")) and flag_name("l1_coefficient") == "--l1-coefficient"
