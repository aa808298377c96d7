"""Pruning: global unstructured magnitude pruning, attention heads by importance, whole layers.

Unstructured sparsity zeroes weights inside dense matrices: the file compresses (gzip) but dense CPU
kernels run exactly as many multiply-adds, so it is not faster. Removing heads and layers shrinks the
matrices themselves, which is what makes a model faster. Each can be followed by a recovery fine-tune
(`recover_steps`), run by the ordinary training loop (unstructured masks are re-applied by a step hook).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification

from ..data.dataset import Encoded, collate
from ..errors import ConfigError
from ..methods.base import transformer_layers
from ..models import TrainedModel
from .settings import PruneSettings
from .variant import write_variant

FORMAT_HEADS = "pruned-heads"
WEIGHTS = "model.safetensors"


# -- unstructured -----------------------------------------------------------------------------------------

def prunable_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The linear layers inside the transformer blocks (embeddings, pooler and head are left dense)."""
    layers = transformer_layers(model)
    return [(f"{i}.{name}", m) for i, layer in enumerate(layers) for name, m in layer.named_modules()
            if isinstance(m, nn.Linear)]


@torch.no_grad()
def magnitude_masks(model: nn.Module, sparsity: float) -> dict[nn.Linear, torch.Tensor]:
    """Global magnitude pruning: the `sparsity` fraction of smallest |w| over all block linears, exactly
    round(sparsity × count) weights (ties broken by position), as boolean keep-masks."""
    linears = [m for _, m in prunable_linears(model)]
    flat = torch.cat([m.weight.detach().abs().flatten().float() for m in linears])
    n_prune = round(sparsity * flat.numel())
    order = torch.argsort(flat, stable=True)
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[order[:n_prune]] = False
    masks, start = {}, 0
    for m in linears:
        size = m.weight.numel()
        masks[m] = keep[start : start + size].view_as(m.weight)
        start += size
    return masks


@torch.no_grad()
def apply_masks(masks: dict[nn.Linear, torch.Tensor]) -> None:
    for module, mask in masks.items():
        module.weight.mul_(mask.to(module.weight.dtype))


def sparsity_of(model: nn.Module) -> float:
    """The measured fraction of exact zeros over the block linears' weights."""
    weights = [m.weight for _, m in prunable_linears(model)]
    return float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))


# -- heads ----------------------------------------------------------------------------------------------

def _attention(layer: nn.Module):
    return layer.attention.self, layer.attention.output.dense


def head_importance(model: nn.Module, enc: Encoded, pad_id: int, batch_size: int = 32) -> torch.Tensor:
    """Michel et al. (2019): |Σ ctx_h · ∂L/∂ctx_h| per head over the examples, L2-normalised per layer;
    ctx_h is the head's slice of the attention output before the output projection."""
    model = model.eval()
    layers = transformer_layers(model)
    n_heads = _attention(layers[0])[0].num_attention_heads
    scores = torch.zeros(len(layers), n_heads)
    captured: dict[int, torch.Tensor] = {}

    def hook_for(i):
        def hook(module, args):
            args[0].retain_grad()
            captured[i] = args[0]
        return hook

    handles = [_attention(layer)[1].register_forward_pre_hook(hook_for(i)) for i, layer in enumerate(layers)]
    try:
        for start in range(0, len(enc), batch_size):
            batch = collate(enc, list(range(start, min(start + batch_size, len(enc)))), pad_id)
            labels = batch.pop("labels")
            logits = model(**batch).logits
            loss = nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
            model.zero_grad(set_to_none=True)
            loss.backward()
            for i, ctx in captured.items():
                head_size = _attention(layers[i])[0].attention_head_size
                per_head = (ctx * ctx.grad).view(*ctx.shape[:-1], -1, head_size).sum(-1)  # B, T, heads
                scores[i, : per_head.shape[-1]] += per_head.sum(dim=(0, 1)).abs().detach()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return scores / scores.norm(dim=1, keepdim=True).clamp_min(1e-12)


def choose_heads(scores: torch.Tensor, fraction: float) -> dict[int, list[int]]:
    """Heads to keep per layer after removing the `fraction` least important over all layers."""
    n_layers, n_heads = scores.shape
    n_remove = round(fraction * scores.numel())
    removed = torch.zeros_like(scores, dtype=torch.bool)
    for flat in torch.argsort(scores.flatten(), stable=True).tolist():
        if n_remove == 0:
            break
        layer, head = divmod(flat, n_heads)
        if (~removed[layer]).sum() > 1:
            removed[layer, head] = True
            n_remove -= 1
    return {i: [h for h in range(n_heads) if not removed[i, h]] for i in range(n_layers)}


@torch.no_grad()
def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    weight = linear.weight.index_select(dim, index)
    bias = linear.bias if dim == 1 or linear.bias is None else linear.bias.index_select(0, index)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    new.weight.copy_(weight)
    if bias is not None:
        new.bias.copy_(bias)
    return new


def keep_heads(model: nn.Module, kept: dict[int, list[int]]) -> nn.Module:
    """Remove the heads not in `kept` by slicing Q/K/V rows and output-projection columns (in place). BERT's
    attention reshapes to (-1, head_size), so a layer simply runs with fewer heads."""
    for i, layer in enumerate(transformer_layers(model)):
        attn, out = _attention(layer)
        heads = sorted(kept[int(i)])
        size = attn.attention_head_size
        index = torch.tensor([h * size + j for h in heads for j in range(size)])
        for name in ("query", "key", "value"):
            setattr(attn, name, _slice_linear(getattr(attn, name), index, 0))
        layer.attention.output.dense = _slice_linear(out, index, 1)
        attn.num_attention_heads, attn.all_head_size = len(heads), len(heads) * size
    return model


def load(folder: Path, meta: dict) -> nn.Module:
    """A head-pruned folder: build the full model from config.json, slice it to the kept heads, load."""
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(str(folder)))
    keep_heads(model, {int(k): v for k, v in meta["kept_heads"].items()})
    model.load_state_dict(load_file(folder / WEIGHTS), strict=True)
    return model.eval()


# -- layers ---------------------------------------------------------------------------------------------

def keep_layers(model: nn.Module, indices: list[int]) -> nn.Module:
    """Keep only the transformer layers at `indices` (in that order); the config follows."""
    layers = transformer_layers(model)
    if not indices or any(i < 0 or i >= len(layers) for i in indices):
        raise ConfigError(f"layer indices {indices} are out of range for a {len(layers)}-layer model")
    kept = nn.ModuleList([layers[i] for i in indices])
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is layers:
                setattr(parent, name, kept)
    model.config.num_hidden_layers = len(indices)
    return model


@torch.no_grad()
def _loss(model: nn.Module, enc: Encoded, pad_id: int, batch_size: int = 64) -> float:
    total = 0.0
    for start in range(0, len(enc), batch_size):
        batch = collate(enc, list(range(start, min(start + batch_size, len(enc)))), pad_id)
        labels = batch.pop("labels")
        total += float(nn.functional.cross_entropy(model(**batch).logits.float(), labels, reduction="sum"))
    return total / max(len(enc), 1)


def layers_to_drop(model: nn.Module, n: int, enc: Encoded, pad_id: int) -> tuple[list[int], dict[int, float]]:
    """The n layers whose removal alone raises the loss on `enc` least (one model per candidate)."""
    count = len(transformer_layers(model))
    if n >= count:
        raise ConfigError(f"prune layers={n}: the model has {count} layers; at least one must stay")
    model = model.eval()
    base = _loss(model, enc, pad_id)
    cost = {}
    for i in range(count):
        trial = keep_layers(copy.deepcopy(model), [j for j in range(count) if j != i])
        cost[i] = _loss(trial, enc, pad_id) - base
    return sorted(sorted(cost, key=cost.get)[:n]), cost


# -- the job --------------------------------------------------------------------------------------------

def prune(source: TrainedModel, settings: PruneSettings, importance_enc: Encoded) -> tuple[nn.Module, dict]:
    """The pruned model (a copy) and what was done to it."""
    model = copy.deepcopy(source.model).float()
    pad_id = source.pad_id
    if settings.kind == "unstructured":
        masks = magnitude_masks(model, settings.sparsity)
        apply_masks(masks)
        return model, {"masks": masks, "target_sparsity": settings.sparsity}
    if settings.kind == "heads":
        scores = head_importance(model, importance_enc, pad_id)
        kept = choose_heads(scores, settings.heads)
        keep_heads(model, kept)
        return model, {"kept_heads": kept, "head_importance": [[round(v, 4) for v in row]
                                                              for row in scores.tolist()]}
    dropped, cost = layers_to_drop(model, settings.layers, importance_enc, pad_id)
    count = len(transformer_layers(model))
    keep_layers(model, [i for i in range(count) if i not in dropped])
    return model, {"dropped_layers": dropped, "loss_increase_per_layer": {i: round(c, 4) for i, c in cost.items()}}


def mask_hook(masks: dict[nn.Linear, torch.Tensor]):
    """A training-loop step hook that keeps pruned weights at zero during recovery fine-tuning."""
    def hook(loop) -> None:
        apply_masks(masks)
    return hook


def save(model: nn.Module, source: TrainedModel, target: Path, info: dict, overwrite: bool) -> dict:
    """Write the pruned model (no recovery) as a variant folder; returns the meta it carries."""
    meta = pruned_meta(model, info)
    fmt = FORMAT_HEADS if "kept_heads" in info else "transformers"

    def write(tmp: Path) -> dict:
        if fmt == FORMAT_HEADS:
            model.config.save_pretrained(tmp)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / WEIGHTS)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        return meta

    write_variant(target, source, fmt, write, overwrite)
    return meta


def pruned_meta(model: nn.Module, info: dict) -> dict:
    meta = {"pruning": {k: v for k, v in info.items() if k != "masks"}}
    if "masks" in info:
        meta["pruning"]["measured_sparsity"] = sparsity_of(model)
    if "kept_heads" in info:
        meta["kept_heads"] = {str(k): v for k, v in info["kept_heads"].items()}
    return meta
