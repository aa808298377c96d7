"""ia3: learned scaling vectors on keys, values and the feed-forward input (peft's IA³); merged on export."""

import warnings
from typing import Literal

from peft import IA3Config as PeftIA3Config
from peft import get_peft_model
from peft.utils.constants import (
    TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
)

from ..errors import ConfigError
from .base import Method, MethodSettings
from .lora import merge_export

# (target modules, the feed-forward ones among them) per architecture family: bert and llama pinned (the demo
# recipes depend on them, and they equal peft's own); any other family from peft's mapping (default_targets)
DEFAULT_TARGETS = {
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
}


class IA3Settings(MethodSettings):
    name: Literal["ia3"] = "ia3"
    target_modules: list[str] | None = None
    feedforward_modules: list[str] | None = None
    """The targets whose input (not output) is scaled; must be a subset of target_modules."""


class IA3(Method):
    name = "ia3"
    Config = IA3Settings

    def apply(self, model, cfg, task):
        targets, feedforward = default_targets(model.config.model_type)
        targets, feedforward = cfg.target_modules or targets, cfg.feedforward_modules or feedforward
        if targets is None:
            raise ConfigError(f"method.target_modules: no default IA3 targets for model type "
                              f"'{model.config.model_type}' (neither here nor in peft's mapping); set "
                              "method.target_modules and method.feedforward_modules")
        config = PeftIA3Config(task_type=task.PEFT_TASK_TYPE, target_modules=targets,
                               feedforward_modules=feedforward or [])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, config)

    def export(self, model, model_dir, adapter_dir):
        return merge_export(model, model_dir, adapter_dir)


def default_targets(model_type: str) -> tuple[list[str] | None, list[str] | None]:
    """(targets, feed-forward targets): bert and llama pinned here, any other family from peft's own mapping."""
    if model_type in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[model_type]
    return (TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING.get(model_type),
            TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(model_type))
