"""The strict pydantic base every settings class derives from, and the generation of command-line options
from settings classes.

Why argparse generated from the pydantic models, not typer: typer would build the options from function
signatures, so every default and doc would live a second time beside the settings class; its parsing also
differs from the `RECIPE [key=value ...]` commands (which stay argparse). `add_options` is the small piece
that reads a class's fields instead: flag name, type, choices (a Literal), limits, doc and default all come
from the field, so they live once.
"""

from __future__ import annotations

import argparse
import copy
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from .errors import ConfigError


class Strict(BaseModel):
    """A settings section that refuses unknown keys (a typo is an error, never a silently ignored value).
    A field's docstring is its description: the same text in `--help`, the OpenAPI page and the docs."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), use_attribute_docstrings=True)


class TaskSettings(Strict):
    """A recipe's `task:` section: `name` picks the task (the tag), the rest are that task's settings. Each task
    (tunecraft/tasks) subclasses it with `name: Literal["<its name>"]` and its own fields; config.py validates
    `task:` by the class the task registry gives for its name."""

    name: str
    LEGACY: ClassVar[dict[str, str]] = {}
    """Old recipe sections this task read before `task:` held them (e.g. "data.sft") → where they go inside
    `task:` now ("" for the section itself, "generation" for `task.generation`); config.py moves them."""


def borrow(cls: type[BaseModel], name: str) -> Any:
    """Field `name` of `cls` (default, limits, doc), for a class that sets it on that class's behalf: the
    value has one default, in the class that uses it."""
    return copy.deepcopy(cls.model_fields[name])


def value_type(annotation: Any) -> Any:
    """`int | None` → int; other annotations as they are."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _help(field: FieldInfo, shown_default: Any) -> str:
    text = (field.description or "").strip().replace("\n", " ").replace("%", "%%")
    if shown_default is not None:
        text = f"{text} (default: {shown_default})" if text else f"default: {shown_default}"
    return text


@dataclass(frozen=True)
class Arg:
    """How a field is spelled on the command line where `add_options`' default shape does not fit, given as
    `Annotated[type, Arg(...)]`: a positional with a default (`overrides`, `texts`: zero or more), a flag of
    another name (`--for` for `target`; a required field with a flag is a required option), several values
    after one flag (`--ood A B`, where a bare `--ood` is the empty list), or a metavar."""

    positional: bool = False
    flag: str | None = None
    many: bool = False
    metavar: str | None = None


def _arg(field: FieldInfo) -> Arg:
    return next((m for m in field.metadata if isinstance(m, Arg)), Arg())


def flag_of(name: str, field: FieldInfo) -> str:
    """The option that sets field `name` (its own name for a positional)."""
    arg = _arg(field)
    if arg.positional or (field.is_required() and arg.flag is None):
        return name
    return arg.flag or "--" + name.replace("_", "-")


def _choices(kind: Any) -> dict:
    if typing.get_origin(kind) is not Literal:
        return {}
    choices = list(typing.get_args(kind))
    return {"choices": choices, "type": type(choices[0])}


def _add_list(parser: argparse.ArgumentParser, name: str, field: FieldInfo, item: Any) -> None:
    arg = _arg(field)
    kw = {"metavar": arg.metavar, **_choices(item)}
    if item is not str and not kw.get("choices"):
        raise TypeError(f"{name}: no command-line form for list[{item}] (skip it)")
    if field.is_required() or arg.positional:
        parser.add_argument(name, nargs="+" if field.is_required() else "*", help=_help(field, None), **kw)
    elif arg.many:
        parser.add_argument(flag_of(name, field), dest=name, nargs="*", default=None, help=_help(field, None),
                            **kw)
    else:  # repeated: --name A --name B
        parser.add_argument(flag_of(name, field), dest=name, action="append", default=None,
                            help=_help(field, field.get_default(call_default_factory=True) or None), **kw)


def _add_one(parser: argparse.ArgumentParser, name: str, field: FieldInfo, kind: Any) -> None:
    flag = flag_of(name, field)
    typed = {"type": kind, "metavar": _arg(field).metavar, **_choices(kind)}  # a Literal's type: its values'
    if flag == name:
        parser.add_argument(name, help=_help(field, None), **typed)
        return
    if field.is_required():
        parser.add_argument(flag, dest=name, required=True, help=_help(field, None), **typed)
        return
    default = field.get_default(call_default_factory=False)
    if kind is bool and default is True:
        parser.add_argument("--no-" + flag[2:], dest=name, action="store_false", default=None,
                            help=_help(field, "on"))
    elif kind is bool:
        parser.add_argument(flag, dest=name, action="store_true", default=None, help=_help(field, None))
    else:
        parser.add_argument(flag, dest=name, default=None, help=_help(field, default), **typed)


def add_options(parser: argparse.ArgumentParser, cls: type[BaseModel], *, skip: tuple[str, ...] = ()) -> None:
    """One command-line option per field of `cls` (required fields become positionals, in order): `--name`
    typed from the annotation, choices from a Literal, help from the field's doc and default; a bool that is
    on by default becomes `--no-name`; a list[str] is repeated (`--name A --name B`), or a positional that
    takes one or more values when it is required; `Arg` spells the rest. Options not given are left out
    (None), so the class fills in its own default; build the settings with `from_args`."""
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        kind = value_type(field.annotation)
        if typing.get_origin(kind) is list:
            _add_list(parser, name, field, typing.get_args(kind)[0])
            continue
        if kind not in (str, int, float, bool) and typing.get_origin(kind) is not Literal:
            raise TypeError(f"{cls.__name__}.{name}: no command-line form for {field.annotation} (skip it)")
        _add_one(parser, name, field, kind)


def from_args(cls: type[BaseModel], args: argparse.Namespace, **values: Any):
    """`cls` from the options `add_options` made (those given) and `values`; invalid ones name their flag."""
    given = {k: getattr(args, k) for k in cls.model_fields if getattr(args, k, None) is not None}
    try:
        return cls(**{**given, **values})
    except ValidationError as err:
        problems = []
        for e in err.errors():
            name = str(e["loc"][0]) if e["loc"] else ""
            field = cls.model_fields.get(name)
            flag = flag_of(name, field) if field is not None else "--" + name.replace("_", "-")
            problems.append(f"{flag}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError("; ".join(problems)) from None


def dotted_keys(values: dict, prefix: str = "") -> dict:
    """A nested config as dotted keys (the override spelling): what trackers store as parameters and what
    `tunecraft report` compares between runs."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out.update(dotted_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
