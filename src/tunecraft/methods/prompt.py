"""prompt and ptuning: trained virtual-token embeddings prepended to the input (peft's prompt tuning, Lester
et al. 2021; P-tuning, Liu et al. 2021, whose virtual tokens come from a small MLP), for classification and
NER (the virtual positions are dropped from token-level logits). Nothing to merge: the run
exports the base model plus the adapter, and eval/predict/serve load the two together."""

import warnings
from typing import Literal

from peft import PromptEncoderConfig, PromptTuningConfig, get_peft_model
from pydantic import Field

from .base import Method, MethodSettings


class PromptSettings(MethodSettings):
    name: Literal["prompt"] = "prompt"
    virtual_tokens: int = Field(20, ge=1, le=512)


class PTuningSettings(MethodSettings):
    name: Literal["ptuning"] = "ptuning"
    virtual_tokens: int = Field(20, ge=1, le=512)
    encoder_hidden_size: int = Field(128, ge=1)
    """Hidden size of the MLP that produces the virtual tokens."""


class _VirtualTokens(Method):
    merged = False

    def peft_config(self, cfg, task_type):
        raise NotImplementedError

    def apply(self, model, cfg, task):
        if task.PEFT_TASK_TYPE not in ("SEQ_CLS", "TOKEN_CLS"):
            raise ValueError(f"'{self.name}' supports classification and token_classification, not '{task.NAME}' "
                             "(for causal LMs use lora or adapter)")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, self.peft_config(cfg, task.PEFT_TASK_TYPE))
        return strip_virtual_positions(peft_model)

    def load_adapter(self, model, adapter_dir):
        return strip_virtual_positions(super().load_adapter(model, adapter_dir))

    def export(self, model, model_dir, adapter_dir):
        """adapter/: the virtual tokens and the trained head; model/: the base model with the trained head,
        as plain transformers weights (peft's wrapper keys of the head unwrapped)."""
        model.save_pretrained(adapter_dir, safe_serialization=True)
        base = model.get_base_model()
        state = {k.replace(".modules_to_save.default.", "."): v for k, v in base.state_dict().items()
                 if ".original_module." not in k}
        plain = base.__class__(base.config)
        plain.load_state_dict(state, strict=True)
        plain.save_pretrained(model_dir, safe_serialization=True)
        return plain


class Prompt(_VirtualTokens):
    name = "prompt"
    Config = PromptSettings

    def peft_config(self, cfg, task_type):
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=cfg.virtual_tokens)


class PTuning(_VirtualTokens):
    name = "ptuning"
    Config = PTuningSettings

    def peft_config(self, cfg, task_type):
        return PromptEncoderConfig(task_type=task_type, num_virtual_tokens=cfg.virtual_tokens,
                                   encoder_hidden_size=cfg.encoder_hidden_size)


def strip_virtual_positions(model):
    """For token classification peft returns logits for the virtual tokens too, in front of the input's; drop
    them, so the logits line up with the input tokens everywhere they are read (loss, evaluation, serving)."""
    if type(model).__name__ != "PeftModelForTokenClassification":
        return model
    virtual = model.active_peft_config.num_virtual_tokens

    def drop(module, args, output):
        output.logits = output.logits[:, virtual:]
        return output

    model.register_forward_hook(drop)
    return model
