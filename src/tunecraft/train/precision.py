"""Pick the mixed-precision mode: bf16 where the hardware runs it natively, fp16 only on CUDA."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve(precision: str) -> tuple[str, torch.dtype | None]:
    """→ (accelerate's mixed_precision value, autocast dtype)."""
    cuda = torch.cuda.is_available()
    if precision == "auto":
        bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_bf16()
        precision = "bf16" if bf16 else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    return {"fp32": ("no", None), "bf16": ("bf16", torch.bfloat16), "fp16": ("fp16", torch.float16)}[precision]
