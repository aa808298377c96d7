"""Batched inference over encoded examples (length-sorted batches, results in input order)."""

from __future__ import annotations

import contextlib

import torch

from ..data.dataset import Encoded, batch_order, collate, pad_multiple


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_eval(model) -> None:
    """model.eval(), only where some module is in training mode: eval() sets the flag on every module through
    nn.Module.__setattr__, 0.39 ms for MiniLM-L6 even when nothing changes, against 0.13 ms for this check (one
    thread, 2026-11-28), paid on every served request. A model that is not a torch module (an ONNX Runtime
    session) has no training mode."""
    if isinstance(model, torch.nn.Module) and any(m.training for m in model.modules()):
        model.eval()


@torch.no_grad()
def predict_logits(model, enc: Encoded, batch_size: int, pad_id: int | None, device: torch.device,
                   dtype: torch.dtype | None = None, rank: int = 0, world: int = 1,
                   gather=None) -> torch.Tensor | list[torch.Tensor]:
    """Logits for every feature, in input order: one tensor [N, C] for sequence classification, a list of
    [length, C] tensors for token classification. With world > 1 each process takes every world-th batch
    and `gather` (accelerate's gather_object) joins the parts, so no example is counted twice."""
    to_eval(model)
    lengths = enc.lengths
    batches = batch_order(lengths, batch_size, seed=0, epoch=0, shuffle=False)
    rows: list[tuple[int, torch.Tensor]] = []
    for indices in batches[rank::world]:
        batch = collate(enc, indices, pad_id, pad_multiple(device))
        batch.pop("labels", None)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast_context(device, dtype):
            logits = model(**batch).logits.float().cpu()
        if logits.dim() == 3:
            rows.extend((i, logits[row, : lengths[i]]) for row, i in enumerate(indices))
        else:
            rows.extend(zip(indices, logits))
    if world > 1 and gather is not None:
        rows = gather(rows)
    rows.sort(key=lambda pair: pair[0])
    if rows and rows[0][1].dim() == 2:
        return [logits for _, logits in rows]
    return torch.stack([logits for _, logits in rows]) if rows else torch.empty(0)


def rows_in_input_order(enc: Encoded, batch_size: int, device: torch.device, collate_batch, batch_rows, width: int,
                        rank: int = 0, world: int = 1, gather=None) -> torch.Tensor:
    """[N, width]: `batch_rows(batch)` ([B, width], on the CPU) for length-sorted batches of `enc` made by
    `collate_batch(enc, indices, pad_multiple)` and moved to `device`, in input order. With world > 1 each process
    takes every world-th batch and `gather` joins the parts (as predict_logits)."""
    rows = []
    for indices in batch_order(enc.lengths, batch_size, seed=0, epoch=0, shuffle=False)[rank::world]:
        batch = {k: v.to(device) for k, v in collate_batch(enc, indices, pad_multiple(device)).items()}
        rows.extend(zip(indices, batch_rows(batch)))
    if world > 1 and gather is not None:
        rows = gather(rows)
    rows.sort(key=lambda pair: pair[0])
    return torch.stack([r for _, r in rows]) if rows else torch.zeros(0, width)
