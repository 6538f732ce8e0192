"""Command-line flags generated from config dataclasses (sparsify's way, with argparse alone).

A config is a dataclass whose every field has a docstring: the string right under the field::

    batch_size: int = 4096
    \"\"\"Tokens per training step.\"\"\"

:func:`add_config` adds one flag per field to an argparse parser: its name from the field's
(``l1_coefficient`` -> ``--l1-coefficient``, plus any legacy spellings in ``aliases``), its type
from the annotation (int, float, str; bool as ``--x`` / ``--no-x``; ``X | None``; ``tuple[X, ...]``
and ``list[X]`` as one or more values, spaces or commas between them; ``Literal[...]`` as
choices), its default from the field (shown in the help; a field without one is a required flag)
and its help from the docstring. A field whose type is a dataclass adds that config's flags.
:func:`build_config` turns the parsed namespace back into the config, checked by the config's own
``__post_init__``; a field may name presets (``metadata={"presets": {"quick": factory}}``): with
``--quick`` the nested config starts from ``factory()`` and the flags given override it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import types
import typing
from typing import Literal, NamedTuple

__all__ = ["field_docs", "Option", "options", "add_config", "build_config", "given", "flag_name"]

#: the namespace attribute listing the dests of the flags given on the command line
GIVEN = "_given_flags"


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """``{field name: docstring}`` of a dataclass and its bases (the string right under each field)."""
    docs = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source (a class made at run time): no docs
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


class Kind(NamedTuple):
    """How a field's annotation reads on the command line."""
    item: type                   # bool, int, float or str (of each value of a sequence)
    seq: type | None = None      # tuple or list: one or more values
    length: int | None = None    # a fixed-length tuple's length
    choices: tuple = ()          # a Literal's values
    optional: bool = False       # X | None


def kind_of(tp) -> Kind:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{tp}: a union other than X | None has no flag")
        tp = rest[0]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (tuple, list):
        fixed = origin is tuple and not (len(args) == 2 and args[1] is Ellipsis)
        inner = kind_of(args[0])
        return Kind(inner.item, origin, len(args) if fixed else None, inner.choices, optional)
    if origin is Literal:
        return Kind(type(args[0]), choices=tuple(args), optional=optional)
    if tp in (bool, int, float, str):
        return Kind(tp, optional=optional)
    raise TypeError(f"{tp}: no flag for this type (bool, int, float, str, X | None, tuple, list, Literal)")


class Option(NamedTuple):
    """One flag of a config: where its field is (``dest``: dotted through nested configs)."""
    dest: str
    field: dataclasses.Field
    kind: Kind
    flags: tuple[str, ...]
    default: object
    doc: str


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def options(cls, aliases: dict | None = None, prefix: str = "") -> list[Option]:
    """Every flag of ``cls`` (nested configs flattened). aliases: ``{field name: extra flag(s)}``,
    the first of which names the flag in messages and help (legacy spellings such as ``--tokens``)."""
    hints, docs, out = typing.get_type_hints(cls), field_docs(cls), []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += options(tp, aliases, prefix + f.name + ".")
            continue
        extra = (aliases or {}).get(f.name, ())
        flags = tuple(dict.fromkeys(((extra,) if isinstance(extra, str) else tuple(extra)) + (flag_name(f.name),)))
        out.append(Option(prefix + f.name, f, kind_of(tp), flags, _default(f), docs.get(f.name, "")))
    seen = [flag for o in out for flag in o.flags]
    if len(seen) != len(set(seen)):
        raise TypeError(f"{cls.__name__}: two fields share a flag: {sorted({s for s in seen if seen.count(s) > 1})}")
    return out


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value)) if value else "(none)"
    return str(value)


def _convert(kind: Kind, text: str):
    try:
        value = kind.item(text) if kind.item is not bool else {"true": True, "false": False}[text.lower()]
    except (ValueError, KeyError):
        raise ValueError(f"invalid {kind.item.__name__} value: {text!r}") from None
    if kind.choices and value not in kind.choices:
        raise ValueError(f"invalid choice: {text!r} (choose from {', '.join(map(repr, kind.choices))})")
    return value


class _Store(argparse.Action):
    """One value, or one or more (spaces or commas between them); converted and checked here."""

    def __init__(self, option_strings, dest, kind: Kind, **kw):
        self.kind = kind
        super().__init__(option_strings, dest, nargs="+" if kind.seq else None, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            if self.kind.seq is None:
                value = _convert(self.kind, values)
            else:
                items = [t.strip() for v in values for t in v.split(",") if t.strip()]
                if not items:
                    raise ValueError("expected one or more values (spaces or commas between them)")
                if self.kind.length is not None and len(items) != self.kind.length:
                    raise ValueError(f"expected {self.kind.length} values; got {len(items)}")
                value = self.kind.seq(_convert(self.kind, t) for t in items)
        except ValueError as err:
            raise argparse.ArgumentError(self, str(err)) from None
        setattr(namespace, self.dest, value)
        given(namespace).add(self.dest)


class _Bool(argparse.Action):
    """``--x`` sets True, ``--no-x`` False."""

    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no-"))
        given(namespace).add(self.dest)


def given(namespace) -> set:
    """The dests of the flags given on the command line (not left at their defaults)."""
    if not hasattr(namespace, GIVEN):
        setattr(namespace, GIVEN, set())
    return getattr(namespace, GIVEN)


def add_config(parser: argparse.ArgumentParser, cls, aliases: dict | None = None) -> list[Option]:
    """Add the flags of config ``cls`` to ``parser`` (see the module docstring); returns them."""
    opts = options(cls, aliases)
    for o in opts:
        required = o.default is dataclasses.MISSING
        text = o.doc + (" (required)" if required else f" (default: {_show(o.default)})")
        kw = dict(dest=o.dest, help=text.replace("%", "%%"), required=required)
        if not required:
            kw["default"] = o.default
        if o.kind.item is bool and o.kind.seq is None:
            flags = o.flags + tuple("--no-" + f[2:] for f in o.flags)
            parser.add_argument(*flags, action=_Bool, **kw)
            continue
        metavar = "{" + ",".join(map(str, o.kind.choices)) + "}" if o.kind.choices else o.dest.split(".")[-1].upper()
        parser.add_argument(*o.flags, action=_Store, kind=o.kind, metavar=metavar, **kw)
    return opts


def build_config(cls, namespace, prefix: str = "", base=None, aliases: dict | None = None):
    """The config ``cls`` of a parsed ``namespace`` (flags of :func:`add_config`), checked by its own
    ``__post_init__`` (a ValueError or TypeError there gets the flags of the fields it names appended).
    base: an instance whose values stand for the flags not given (a preset)."""
    hints, done, kw = typing.get_type_hints(cls), given(namespace), {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        dest = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            presets = f.metadata.get("presets", {})
            chosen = [factory for flag, factory in presets.items() if getattr(namespace, prefix + flag, False)]
            sub_base = chosen[-1]() if chosen else (getattr(base, f.name) if base is not None else None)
            kw[f.name] = build_config(hints[f.name], namespace, dest + ".", sub_base, aliases)
        elif base is not None and dest not in done:
            kw[f.name] = getattr(base, f.name)
        else:
            kw[f.name] = getattr(namespace, dest)
    try:
        return cls(**kw)
    except (ValueError, TypeError) as err:
        text = str(err)
        named = [o.flags[0] for o in options(cls, aliases) if re.search(rf"\b{o.field.name}\b", text)]
        if type(err) not in (ValueError, TypeError) or not named or "--" in text:
            raise
        raise type(err)(f"{text} (command line: {', '.join(named)})") from None
