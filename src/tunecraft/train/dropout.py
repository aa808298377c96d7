"""Dropout masks drawn faster on CPU.

`torch.nn.Dropout` on CPU draws its mask with `bernoulli_`, one random number at a time: 2.9 ms for the forward and
backward of one MiniLM-L6 activation (32 × 27 × 384, bf16, one thread) where the layer's arithmetic is a few
hundred microseconds. Written by hand because neither torch nor transformers has a faster CPU dropout:
`MaskedDropout` draws 16 random bits per element in bulk (`random_` over the whole int64 range, four elements per
draw), keeps an element when its bits clear a threshold, and scales by 1/(1-p) as `nn.Dropout` does: 1.7 ms for
the same forward and backward with 32 bits per element; with 16 the mask alone takes 0.49 ms instead of 0.70 on
2 threads (the draw is serial: half the bits, about half the drawing time). The keep probability is
1 - round(p·2¹⁶)/2¹⁶, within 2⁻¹⁷ (8·10⁻⁶) of 1 - p: p = 0.1 drops 10.0006% of the elements. The bits come from
torch's default generator, so `torch.manual_seed` reproduces them and a checkpoint's saved RNG state resumes them;
the stream differs from `bernoulli_`'s, so a run's masks (not their law) differ from those `nn.Dropout` would
draw. Whole training steps: benchmarks/cpu_dropout.py.

The attention probabilities' dropout is not a module but an argument of the attention function, and torch's SDPA
has no CPU kernel with dropout: it falls back to its math path, which upcasts bf16 to fp32 and draws with
`bernoulli_`. While training on CPU, models on transformers' SDPA attention run `attention_with_masked_dropout`
instead: the same fp32 arithmetic as that math path with `keep_mask`'s mask, and SDPA itself whenever there is no
dropout to draw (evaluation, p = 0), so inference is untouched."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

ATTENTION = "tunecraft_masked_dropout"


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability 1 - round(p·2¹⁶)/2¹⁶."""
    n = shape.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, None).view(torch.int16)[:n]  # all 64 bits
    return (bits >= round(p * 2**16) - 2**15).view(shape)


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


def attention_with_masked_dropout(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                                  value: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float = 0.0,
                                  scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """An attention function for transformers' AttentionInterface, registered as ATTENTION: SDPA itself without
    dropout, or for what this function does not do (a position bias, soft-capping, attention sinks); with dropout,
    softmax(q·kᵀ·scale + mask) with `keep_mask`'s mask, times v, computed in fp32."""
    if not dropout or any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "s_aux")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    q_len, k_len = query.shape[2], key.shape[2]
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    if attention_mask is None and causal and q_len > 1:  # SDPA's is_causal; aligned to the last key (a cache)
        attention_mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
    # in fp32 whatever the autocast, as SDPA's math path computes bf16 and fp16 inputs on CPU. With the scores
    # rounded to bf16 before the softmax, 100-step prompt tuning reached 54.2% mean test accuracy over 3 seeds
    # against 60.2% in fp32 (docs/benchmarks.md)
    with torch.autocast(query.device.type, enabled=False):
        q, k, v = query.float(), key.float(), value.float()
        scores = torch.matmul(q, k.transpose(2, 3)) * (q.shape[-1] ** -0.5 if scaling is None else scaling)
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attention_mask[..., :k_len], torch.finfo(scores.dtype).min)
            else:
                scores = scores + attention_mask[..., :k_len]
        probs = _Dropout.apply(torch.softmax(scores, dim=-1), dropout)
        out = torch.matmul(probs, v).to(query.dtype)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, attention_with_masked_dropout)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks SDPA gets (without one, transformers builds none)


def _sdpa_configs(model: torch.nn.Module) -> list:
    """The configs (each once) of the transformers models inside `model` that run SDPA attention."""
    found = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa":
            found.setdefault(id(config), config)
    return list(found.values())


@contextmanager
def masked_dropout(model: torch.nn.Module, enabled: bool = True, attention: bool = True):
    """While the block runs, the model's `nn.Dropout` layers are `MaskedDropout` layers and (with `attention`) its
    SDPA attention is `attention_with_masked_dropout` (the loop enables it on CPU only: CUDA's dropout is fused and
    fast); afterwards the original layers and attention are back, so what is saved is the model as built. Yields
    how many layers were swapped."""
    swapped = []
    configs = _sdpa_configs(model) if enabled and attention else []
    for config in configs:
        config._attn_implementation = ATTENTION
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
        for config in configs:
            config._attn_implementation = "sdpa"
        for parent, name, child in swapped:
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)
