"""The weights a server holds: bf16 copies of the linear layers, cast once at load, where it serves in bf16.

Autocast casts every fp32 linear weight to bf16 at every call and caches nothing outside a grad-enabled
forward: holding them in bf16 took a one-text MiniLM-L6 forward on one core from 8.43 to 6.65 ms
(docs/benchmarks.md, "One-text serving latency"). Casting the
nn.Linear weights once gives autocast the very same bf16 values, so the served logits are bit-for-bit those
of `tunecraft predict` under bf16 autocast (the same reasoning as runtime/precision.py frozen_linears_cast, which
restores the fp32 weights after training; a server never needs them back, so here they are dropped)."""

from __future__ import annotations

import torch

from ..models import TrainedModel
from ..runtime.precision import castable_linear_params, resolve


def cast_linears(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Cast the fp32 weights and biases of `nn.Linear` layers (that very class: quantized subclasses compute their
    own way) to `dtype` in place, for inference under autocast; which ones: runtime/precision.py
    `castable_linear_params`. Returns how many tensors were cast."""
    params = castable_linear_params(model, exact=True)
    for param in params:
        param.requires_grad_(False)
        param.data = param.data.to(dtype)
    return len(params)


def serving_model(trained: TrainedModel, precision: str,
                  auto: str = "native") -> tuple[TrainedModel, torch.dtype | None]:
    """The model as the server holds it and the autocast dtype its forward passes run under: for bf16 (or auto
    meaning native bf16, on a CPU that has it: `auto` as runtime/precision.resolve) the linear weights in bf16
    under bf16 autocast; fp32 as loaded. A model that is
    not a torch module (an ONNX Runtime variant) runs as it is, with no autocast."""
    _, dtype = resolve(precision, auto)
    if not isinstance(trained.model, torch.nn.Module):
        return trained, None
    if dtype is not None:
        cast_linears(trained.model, dtype)
    return trained, dtype
