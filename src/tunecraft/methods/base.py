"""The shape every adaptation method shares: a config, apply(model), and export to HF folders."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..settings import Strict


class MethodSettings(Strict):
    """The settings of one method (its recipe `method:` section)."""


class Method:
    """One adaptation method. Subclasses set `name`, `Config`, and override `apply` (and `export` if the
    trained model is not a plain transformers model)."""

    name: str = ""
    Config: type[MethodSettings] = MethodSettings
    merged: bool = True
    """Whether model/ alone is the trained model; if not, eval/predict/serve apply adapter/ to it."""

    def apply(self, model: nn.Module, cfg: MethodSettings, task) -> nn.Module:
        """Return the model to train for `task` (tasks/base.py), with requires_grad set on exactly the
        trainable parameters."""
        raise NotImplementedError

    def plugins(self, model: nn.Module, task, total_steps: int) -> list:
        """The step plug-ins (tunecraft/plugins.py) the method needs during training, e.g. AdaLoRA's budget."""
        return []

    def export(self, model: nn.Module, model_dir: Path, adapter_dir: Path) -> nn.Module:
        """Write a plain Hugging Face model folder to `model_dir`; return that plain model."""
        model.save_pretrained(model_dir, safe_serialization=True)
        return model

    def load_adapter(self, model: nn.Module, adapter_dir: Path) -> nn.Module:
        """For methods that are not merged: model/ with adapter/ applied (a peft adapter by default)."""
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(adapter_dir))


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks (BERT's encoder.layer, Llama's layers, GPT-2's h, ...)."""
    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} transformer layers of {type(model).__name__}")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
