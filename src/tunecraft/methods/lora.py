"""lora: low-rank adapters on chosen linear layers (peft); exported as an adapter and a merged model."""

import copy
import warnings
from typing import Literal

from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from peft.utils.error import NoMatchingPeftModuleError
from pydantic import Field

from ..errors import ConfigError
from .base import Method, MethodSettings

# Default targets per architecture family: every linear layer inside the transformer blocks. bert and llama are
# pinned (the demo recipes' results depend on them); any other family, of any modality, gets peft's "all-linear"
# (every Linear but the output layer), so a new architecture needs no entry here. Not peft's per-family LoRA table
# (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING): it lists the attention's query and value only (bert:
# query, value), so defaults would differ in kind between the pinned families and the rest.
ALL_LINEAR = "all-linear"
DEFAULT_TARGETS = {
    "bert": ["query", "key", "value", "dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


class LoraSettings(MethodSettings):
    name: Literal["lora"] = "lora"
    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter input. Off by default: on CPU its random masks made a step 1.5x slower."""
    target_modules: list[str] | None = None
    """Module names to adapt; null picks every linear layer of the blocks for known architectures."""
    modules_to_save: list[str] | None = None
    """Extra modules trained in full and saved with the adapter (the task head is always included)."""
    rslora: bool = False
    """Scale by alpha / sqrt(r) instead of alpha / r (rank-stabilised LoRA)."""
    dora: bool = False
    """Weight-decomposed LoRA (DoRA): a learned magnitude per output and LoRA on the direction."""
    quantize: Literal["none", "4bit"] = "none"
    """4bit: QLoRA (the frozen base in NF4 through bitsandbytes, LoRA on top); needs a CUDA GPU."""


class Lora(Method):
    name = "lora"
    Config = LoraSettings

    def apply(self, model, cfg, task):
        if cfg.quantize == "4bit":
            model = quantized_4bit(model)
        model_type = model.config.model_type
        targets = cfg.target_modules or DEFAULT_TARGETS.get(model_type, ALL_LINEAR)
        peft_cfg = PeftLoraConfig(
            task_type=task.PEFT_TASK_TYPE,
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=targets,
            modules_to_save=cfg.modules_to_save,
            use_rslora=cfg.rslora,
            use_dora=cfg.dora,
        )
        with warnings.catch_warnings():
            # peft 0.21 calls a transformers 5 attribute that warns of its own rename; nothing for users to do
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            try:
                return get_peft_model(model, peft_cfg)
            except NoMatchingPeftModuleError:
                if cfg.target_modules:
                    raise
                raise ConfigError(f"method.target_modules: no default LoRA targets for model type '{model_type}' "
                                  "(it has no linear layer besides the output); set method.target_modules to the "
                                  "names of the modules to adapt") from None

    def export(self, model, model_dir, adapter_dir):
        return merge_export(model, model_dir, adapter_dir)


def quantized_4bit(model):
    """The same base model reloaded with NF4 weights (bitsandbytes), ready for k-bit training (QLoRA)."""
    import torch

    if not torch.cuda.is_available():
        raise ValueError("method.quantize=4bit (QLoRA) needs a CUDA GPU and bitsandbytes; this machine has no "
                         "CUDA device. Use method.quantize=none (plain LoRA) on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ValueError("method.quantize=4bit (QLoRA) needs bitsandbytes: pip install bitsandbytes") from None
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    reloaded = type(model).from_pretrained(model.config._name_or_path, quantization_config=quant,
                                           device_map={"": 0})
    return prepare_model_for_kbit_training(reloaded)


def merge_export(model, model_dir, adapter_dir):
    """The peft adapter to `adapter_dir`, and the model with it merged in to `model_dir` (plain transformers)."""
    model.save_pretrained(adapter_dir, safe_serialization=True)
    merged = copy.deepcopy(model).merge_and_unload()
    merged.save_pretrained(model_dir, safe_serialization=True)
    return merged
