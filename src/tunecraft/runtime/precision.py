"""Pick the mixed-precision mode: bf16 where the hardware runs it natively, fp16 only on CUDA."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import ConfigError


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve(precision: str, auto: str = "native") -> tuple[str, torch.dtype | None]:
    """→ (accelerate's mixed_precision value, autocast dtype). What "auto" means is `auto`: "native" (bf16 where
    the hardware runs it natively, else fp32) or "fp32" (a task's `AUTO_PRECISION` for inference, tasks/base.py)."""
    cuda = torch.cuda.is_available()
    if precision == "auto" and auto == "fp32":
        precision = "fp32"
    if precision == "auto":
        bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_bf16()
        precision = "bf16" if bf16 else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    return {"fp32": ("no", None), "bf16": ("bf16", torch.bfloat16), "fp16": ("fp16", torch.float16)}[precision]


def castable_linear_params(model: torch.nn.Module, exact: bool = False) -> list[torch.nn.Parameter]:
    """The fp32 weights and biases of `nn.Linear` layers (with `exact`, of that very class, not subclasses) that
    autocast would cast at every use, so that holding them in the autocast dtype changes no value. Left out:
    parameters that a non-Linear module also holds (an output layer tied to the word embeddings: the lookup is not
    cast) and the base layers of DoRA, which computes its weight norm from the base weight outside autocast."""
    def linear(module) -> bool:
        return type(module) is torch.nn.Linear if exact else isinstance(module, torch.nn.Linear)

    owners: dict[int, list[torch.nn.Module]] = {}
    skip = set()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            owners.setdefault(id(param), []).append(module)
        if getattr(module, "lora_magnitude_vector", None):  # DoRA reads its base weight itself, in fp32
            skip.add(id(module.get_base_layer()))
    found: dict[int, torch.nn.Parameter] = {}  # a weight shared by two Linear layers once
    for module in model.modules():
        if linear(module) and id(module) not in skip:
            for param in (module.weight, module.bias):
                if (param is not None and param.dtype == torch.float32
                        and all(linear(m) for m in owners[id(param)])):
                    found.setdefault(id(param), param)
    return list(found.values())


@contextmanager
def frozen_linears_cast(model: torch.nn.Module, dtype: torch.dtype | None):
    """Hold the frozen fp32 weights and biases of `nn.Linear` layers in `dtype` while training under autocast,
    and give the fp32 tensors back afterwards.

    Autocast casts a linear layer's inputs to the autocast dtype at every call, but caches the cast only for
    leaf tensors that require grad: with LoRA and the other parameter-efficient methods the frozen base weights
    were re-cast in every forward (10% of a LoRA step on CPU, docs/benchmarks.md). Casting once gives autocast
    the very same bf16 values, so the training is bit-for-bit the same (tested for every method). Which
    parameters: `castable_linear_params`. Yields the cast copies (held in memory beside the fp32 weights until
    the block ends)."""
    if dtype is None:
        yield []
        return
    kept = []
    for param in castable_linear_params(model):
        if not param.requires_grad:
            kept.append((param, param.data))
            param.data = param.data.to(dtype)
    try:
        yield [param.data for param, _ in kept]
    finally:
        for param, data in kept:
            param.data = data
