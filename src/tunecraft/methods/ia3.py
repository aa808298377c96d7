"""ia3: learned scaling vectors on keys, values and the feed-forward input (peft's IA³); merged on export."""

import warnings
from typing import Literal

from peft import IA3Config as PeftIA3Config
from peft import get_peft_model

from .base import Method, MethodSettings
from .lora import merge_export

# (target modules, the feed-forward ones among them) per architecture family, as in peft's defaults
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
        targets, feedforward = DEFAULT_TARGETS.get(model.config.model_type, (None, None))
        targets, feedforward = cfg.target_modules or targets, cfg.feedforward_modules or feedforward
        if targets is None:
            raise ValueError(f"no default IA3 targets for model type '{model.config.model_type}'; set "
                             "method.target_modules and method.feedforward_modules")
        config = PeftIA3Config(task_type=task.PEFT_TASK_TYPE, target_modules=targets,
                               feedforward_modules=feedforward or [])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, config)

    def export(self, model, model_dir, adapter_dir):
        return merge_export(model, model_dir, adapter_dir)
