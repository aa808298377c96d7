"""prefix: prefix-tuning (Li & Liang 2021) for encoders. Every self-attention layer attends, besides the
input, to `virtual_tokens` trained key/value vectors of its own; the input's positions and length do not
change, so it works for token classification as for classification. peft's prefix-tuning needs past key
values, which BERT-style encoders in transformers 5 no longer take, so the prefix enters through the
attention's own key/value cache hook instead. With `projection_hidden` the prefixes are produced by a
two-layer MLP during training (the reparameterisation of the paper, steadier), and saved as the plain
vectors it produced."""

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from .base import MethodSettings
from .inserted import InsertedMethod, Wrapper, replace_module


class PrefixSettings(MethodSettings):
    name: Literal["prefix"] = "prefix"
    virtual_tokens: int = Field(20, ge=1, le=512)
    projection_hidden: int | None = Field(None, ge=1)
    """Hidden width of the reparameterisation MLP; null trains the prefixes directly."""


class _Prefix:
    """Looks like a key/value cache to the attention: prepends this layer's prefix to its keys and values."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor):
        self.key, self.value = key, value

    def update(self, key, value, layer_idx=None, **kwargs):
        batch = key.shape[0]
        return (torch.cat([self.key.expand(batch, -1, -1, -1).to(key.dtype), key], dim=2),
                torch.cat([self.value.expand(batch, -1, -1, -1).to(value.dtype), value], dim=2))


class PrefixAttention(Wrapper):
    def __init__(self, inner: nn.Module, tokens: int, hidden: int | None):
        super().__init__()
        self.inner = inner
        heads, size = inner.num_attention_heads, inner.attention_head_size
        self.shape = (1, heads, tokens, size)
        width = heads * size
        if hidden is None:
            self.prefix = nn.Parameter(torch.randn(2, tokens, width) * 0.02)
        else:
            self.embedding = nn.Parameter(torch.randn(tokens, width) * 0.02)
            self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 2 * width))

    def prefixes(self) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.prefix if hasattr(self, "prefix") else self.mlp(self.embedding).view(-1, 2, self.shape[1] *
                                                                                      self.shape[3]).transpose(0, 1)
        tokens, heads, size = self.shape[2], self.shape[1], self.shape[3]
        key, value = (t.view(1, tokens, heads, size).transpose(1, 2) for t in kv)
        return key, value

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        if cache is not None:
            raise ValueError("prefix-tuning does not combine with a key/value cache (decoder use of an encoder)")
        if attention_mask is not None:
            if attention_mask.dim() != 4:
                raise ValueError(f"prefix-tuning expects a 4-d attention mask, got {attention_mask.dim()}-d")
            pad_shape = (*attention_mask.shape[:-1], self.shape[2])
            visible = (torch.ones(pad_shape, dtype=torch.bool, device=attention_mask.device)
                       if attention_mask.dtype == torch.bool
                       else torch.zeros(pad_shape, dtype=attention_mask.dtype, device=attention_mask.device))
            attention_mask = torch.cat([visible, attention_mask], dim=-1)
        return self.inner(hidden_states, attention_mask=attention_mask, cache=_Prefix(*self.prefixes()), **kwargs)


class Prefix(InsertedMethod):
    name = "prefix"
    Config = PrefixSettings

    def insert(self, model, cfg):
        targets = [(n, m) for n, m in model.named_modules()
                   if hasattr(m, "key") and hasattr(m, "value") and hasattr(m, "attention_head_size")
                   and not getattr(m, "is_cross_attention", False)]
        if not targets:
            raise ValueError(f"prefix-tuning supports BERT-style encoders; '{model.config.model_type}' has no "
                             "self-attention with key/value projections it can reach")
        for name, module in targets:
            replace_module(model, name, PrefixAttention(module, cfg.virtual_tokens, cfg.projection_hidden))
        model._tunecraft_method_settings = cfg.model_dump()
        return model

    def export(self, model, model_dir, adapter_dir):
        """The reparameterisation MLP is a training device: save the prefixes it produced, as plain vectors."""
        for module in model.modules():
            if isinstance(module, PrefixAttention) and not hasattr(module, "prefix"):
                with torch.no_grad():
                    key, value = module.prefixes()
                    flat = torch.stack([t.transpose(1, 2).reshape(self_tokens(module), -1) for t in (key, value)])
                module.prefix = nn.Parameter(flat.detach().clone())
                del module.embedding, module.mlp
        settings = getattr(model, "_tunecraft_method_settings", {}) or {}
        model._tunecraft_method_settings = {**settings, "projection_hidden": None}
        return super().export(model, model_dir, adapter_dir)


def self_tokens(module: PrefixAttention) -> int:
    return module.shape[2]
