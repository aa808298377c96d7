"""freeze: embeddings and the lowest N transformer layers are frozen, the rest (and the head) train."""

from typing import Literal

from pydantic import Field

from .base import Method, MethodSettings, transformer_layers


class FreezeConfig(MethodSettings):
    name: Literal["freeze"] = "freeze"
    layers: int = Field(3, ge=0)
    """How many of the lowest transformer layers to freeze."""
    embeddings: bool = True


class Freeze(Method):
    name = "freeze"
    Config = FreezeConfig

    def apply(self, model, cfg, task):
        model.requires_grad_(True)
        layers = transformer_layers(model)
        if cfg.layers > len(layers):
            raise ValueError(f"method.layers={cfg.layers} but the model has {len(layers)} layers")
        for layer in list(layers)[: cfg.layers]:
            layer.requires_grad_(False)
        if cfg.embeddings:
            for name, module in model.named_modules():
                if name.endswith("embeddings") or name.endswith("embed_tokens"):
                    module.requires_grad_(False)
        return model
