"""Dropout masks drawn faster on CPU.

`torch.nn.Dropout` on CPU draws its mask with `bernoulli_`, one random number at a time: 2.9 ms for the forward and
backward of one MiniLM-L6 activation (32 × 27 × 384, bf16, one thread) where the layer's arithmetic is a few
hundred microseconds. Written by hand because neither torch nor transformers has a faster CPU dropout:
`MaskedDropout` draws 32 random bits per element in bulk (`random_` over the whole int64 range, two elements per
draw), keeps an element when its bits clear a threshold, and scales by 1/(1-p) as `nn.Dropout` does: 1.7 ms for
the same forward and backward. The keep probability is 1 - round(p·2³²)/2³², within 2⁻³³ of 1 - p (torch's own
draws compare 24-bit floats). The bits come from torch's default generator, so `torch.manual_seed` reproduces
them and a checkpoint's saved RNG state resumes them; the stream differs from `bernoulli_`'s, so a run's masks
(not their law) differ from those `nn.Dropout` would draw. Whole training steps: benchmarks/cpu_dropout.py."""

from __future__ import annotations

from contextlib import contextmanager

import torch


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability 1 - p (to 2⁻³³)."""
    n = shape.numel()
    bits = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-2**63, None).view(torch.int32)[:n]  # all 64 bits
    return (bits >= round(p * 2**32) - 2**31).view(shape)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = keep_mask(x.shape, p)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return torch.ops.aten.native_dropout_backward(x, keep, ctx.scale)  # x · keep · scale in one pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.ops.aten.native_dropout_backward(grad, keep, ctx.scale), None


class MaskedDropout(torch.nn.Module):
    """`nn.Dropout(p)` with the mask drawn by `keep_mask`; the same in eval mode and for p = 0 (identity)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return torch.zeros_like(x)
        return _Dropout.apply(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@contextmanager
def masked_dropout(model: torch.nn.Module, enabled: bool = True):
    """While the block runs, the model's `nn.Dropout` layers are `MaskedDropout` layers (the loop enables it on CPU
    only: CUDA's dropout is fused and fast); afterwards the original layers are back, so what is saved is the model
    as built. Yields how many layers were swapped."""
    swapped = []
    if enabled:
        for parent in model.modules():
            for name, child in parent.named_children():
                if type(child) is torch.nn.Dropout:
                    swapped.append((parent, name, child))
        for parent, name, child in swapped:
            replacement = MaskedDropout(child.p)
            replacement.train(child.training)
            setattr(parent, name, replacement)
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)
