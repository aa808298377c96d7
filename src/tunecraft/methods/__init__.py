"""Adaptation methods, one module each, behind one registry: full, freeze, lora."""

from .base import Method, count_parameters
from .freeze import Freeze, FreezeConfig
from .full import Full, FullConfig
from .lora import Lora, LoraSettings

METHODS: dict[str, Method] = {m.name: m for m in (Full(), Freeze(), Lora())}

# The tagged union the recipe schema validates `method:` against; add a method's Config here.
MethodConfig = FullConfig | FreezeConfig | LoraSettings


def get_method(name: str) -> Method:
    return METHODS[name]


__all__ = ["METHODS", "Method", "MethodConfig", "count_parameters", "get_method"]
