"""Methods that insert small modules of our own into a transformers model (no peft equivalent exists for
transformers 5): Houlsby bottleneck adapters (`adapter`) and prefix-tuning for encoders (`prefix`).

They share one life cycle: `insert(model, cfg)` wraps chosen submodules in place; training updates only
the inserted parameters, the task head (and, for adapters, the layer norms); export writes model/ as a plain
transformers folder (the wrappers removed, trained head and norms kept) and adapter/ as `adapter.safetensors`
+ `adapter.json`; `load_adapter` re-inserts the modules into model/ and loads their weights. Nothing is
merged: a bottleneck with a non-linearity, or extra attention positions, cannot fold into the base weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import TunecraftError
from .base import Method, MethodSettings

ADAPTER_FILE, ADAPTER_CONFIG = "adapter.safetensors", "adapter.json"


class Wrapper(nn.Module):
    """Marks a module that wraps `inner`; `unwrap` puts `inner` back."""

    inner: nn.Module


def head_and_base(model: nn.Module) -> tuple[str, list[str]]:
    """The backbone attribute (e.g. 'bert') and the task head's parameter names: those outside the backbone,
    and its pooler (which only classification reads)."""
    prefix = getattr(model, "base_model_prefix", "")
    head = [n for n, _ in model.named_parameters() if not n.startswith(prefix + ".") or ".pooler." in n]
    return prefix, head


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def unwrap(model: nn.Module) -> nn.Module:
    """Remove every Wrapper in place (the base modules keep their weights); returns the model."""
    for name, module in list(model.named_modules()):
        if isinstance(module, Wrapper):
            replace_module(model, name, module.inner)
    return model


def inserted_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that belong to inserted modules (not to the modules they wrap)."""
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, Wrapper):
            for key, value in module.state_dict().items():
                if not key.startswith("inner."):
                    state[f"{name}.{key}"] = value.detach().contiguous().clone()
    return state


class InsertedMethod(Method):
    merged = False

    def insert(self, model: nn.Module, cfg: MethodSettings) -> nn.Module:
        raise NotImplementedError

    def trainable(self, name: str, cfg: MethodSettings) -> bool:
        """Whether a base-model parameter (outside the inserted modules and the head) trains too."""
        return False

    def apply(self, model, cfg, task):
        _, head = head_and_base(model)
        model.requires_grad_(False)
        self.insert(model, cfg)
        head = set(head)
        for name, param in model.named_parameters():
            inserted = any(isinstance(m, Wrapper) and not part.startswith("inner")
                           for m, part in _owners(model, name))
            param.requires_grad_(name in head or inserted or self.trainable(name, cfg))
        return model

    def export(self, model, model_dir, adapter_dir):
        adapter_dir.mkdir(parents=True, exist_ok=True)
        save_file(inserted_state(model), str(adapter_dir / ADAPTER_FILE))
        settings = getattr(model, "_tunecraft_method_settings", None)
        (adapter_dir / ADAPTER_CONFIG).write_text(json.dumps({"method": self.name, "settings": settings}, indent=2),
                                                   encoding="utf-8")
        plain = _plain_copy(model)
        plain.save_pretrained(model_dir, safe_serialization=True)
        return plain

    def load_adapter(self, model, adapter_dir: Path):
        config_path = adapter_dir / ADAPTER_CONFIG
        if not config_path.is_file() or not (adapter_dir / ADAPTER_FILE).is_file():
            raise TunecraftError(f"{adapter_dir}: no {ADAPTER_CONFIG} / {ADAPTER_FILE} for a '{self.name}' model")
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        if saved.get("method") != self.name:
            raise TunecraftError(f"{config_path}: written by method '{saved.get('method')}', not '{self.name}'")
        self.insert(model, self.Config(**saved["settings"]))
        state = load_file(str(adapter_dir / ADAPTER_FILE))
        missing = set(inserted_state(model)) - set(state)
        unexpected = set(state) - set(inserted_state(model))
        if missing or unexpected:
            raise TunecraftError(f"{adapter_dir / ADAPTER_FILE}: does not fit the model "
                                 f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
        model.load_state_dict(state, strict=False)
        return model


def _owners(model: nn.Module, param_name: str):
    """(module, rest of the name) for every module on the path to a parameter."""
    parts = param_name.split(".")
    module = model
    for i, part in enumerate(parts[:-1]):
        module = getattr(module, part)
        yield module, ".".join(parts[i + 1:])


def _plain_copy(model: nn.Module) -> nn.Module:
    """A fresh transformers model of the same class with the base weights (wrappers removed)."""
    state = {}
    for key, value in model.state_dict().items():
        if any(isinstance(m, Wrapper) and not rest.startswith("inner.") for m, rest in _owners(model, key)):
            continue
        state[re.sub(r"\.inner(?=\.)", "", key)] = value
    plain = model.__class__(model.config)
    plain.load_state_dict(state, strict=True)
    return plain
