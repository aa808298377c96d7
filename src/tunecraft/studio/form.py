"""The override form of the launch page, generated from the recipe's schema (the settings classes of config.py,
pretrain/config.py or continual/recipe.py): one input per field with its dotted key, type, choices, the
recipe's value, the schema's default and its doc."""

from __future__ import annotations

import json
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from ..config import models_in, tag_of, union_members
from ..settings import value_type


def _shown(value: Any) -> str:
    """A value as an override would spell it (YAML flow style, which `key=value` parses back)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _field(key: str, field, value: Any) -> dict:
    kind = value_type(field.annotation)
    optional = kind is not field.annotation
    if kind is bool:
        choices = ["true", "false"]
    elif typing.get_origin(kind) is Literal:
        choices = [_shown(c) for c in typing.get_args(kind)]
    else:
        choices = None
    if choices is not None and optional:
        choices = [*choices, "null"]
    type_name = getattr(kind, "__name__", None) if isinstance(kind, type) else None
    default = "required" if field.is_required() else _shown(to_jsonable_python(
        field.get_default(call_default_factory=True)))
    return {"key": key, "type": type_name or str(field.annotation).replace("typing.", ""), "choices": choices,
            "value": _shown(to_jsonable_python(value)), "default": default,
            "doc": " ".join((field.description or "").split())}


def sections(config: BaseModel) -> list[tuple[str, list[dict]]]:
    """(section, fields) of a validated recipe, in the schema's order: the top-level values first, then each
    settings section (nested sections flattened into dotted keys; `method` and `task` as the recipe's class)."""
    top, out = [], []

    def walk(prefix: str, model: BaseModel, into: list[dict]) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            key = f"{prefix}.{name}" if prefix else name
            if isinstance(value, BaseModel):
                walk(key, value, into)
            else:
                into.append(_field(key, field, value))

    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            fields: list[dict] = []
            walk(name, value, fields)
            tags = [t for t in map(tag_of, union_members(field)) if t is not None]
            if len(tags) > 1:  # a tagged union (method, task): its `name` may pick any of its classes
                fields[0]["choices"] = tags
            out.append((name, fields))
        elif value is not None or not models_in(field.annotation):  # an absent optional section (tune): left out
            top.append(_field(name, field, value))
    return [("run", top), *out]


def field_errors(message: str) -> dict[str, str]:
    """The lines of a recipe's validation message (config.format_errors) by the dotted key they name."""
    found = {}
    for line in message.splitlines()[1:]:
        text = line.strip()
        if text.startswith("unknown key '"):
            found[text.split("'")[1]] = text
        elif ": " in text:
            found[text.split(": ", 1)[0]] = text
    return found
