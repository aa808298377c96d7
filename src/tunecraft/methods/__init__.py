"""Adaptation methods, one module each, behind one registry: full, freeze, lora (+ rslora, dora), adalora, ia3,
adapter (Houlsby), prefix, prompt, ptuning."""

from .adalora import AdaLora, AdaLoraSettings
from .adapter import Adapter, AdapterSettings
from .base import Method, count_parameters
from .freeze import Freeze, FreezeConfig
from .full import Full, FullConfig
from .ia3 import IA3, IA3Settings
from .lora import Lora, LoraSettings
from .prefix import Prefix, PrefixSettings
from .prompt import Prompt, PromptSettings, PTuning, PTuningSettings

METHODS: dict[str, Method] = {m.name: m for m in (Full(), Freeze(), Lora(), AdaLora(), IA3(), Adapter(), Prefix(),
                                                Prompt(), PTuning())}

# The tagged union the recipe schema validates `method:` against; add a method's Config here.
MethodConfig = (FullConfig | FreezeConfig | LoraSettings | AdaLoraSettings | IA3Settings | AdapterSettings
                | PrefixSettings | PromptSettings | PTuningSettings)


def get_method(name: str) -> Method:
    return METHODS[name]


__all__ = ["METHODS", "Method", "MethodConfig", "count_parameters", "get_method"]
