"""Texts longer than max_length: a terminal warning with the counts, or overlapping windows whose logits are
pooled back into one row per document (model.long_documents: windows)."""

from __future__ import annotations

import logging
import statistics

import torch

from ..errors import TunecraftError
from .dataset import Encoded

logger = logging.getLogger(__name__)


def encode_windows(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, stride: int,
                   labels: list[int] | None, pool: str = "mean") -> Encoded:
    """Each text as overlapping windows of at most max_length tokens (special tokens included) that share
    `stride` tokens; a text that fits is one window. Every window carries its document's label, so training
    sees the whole document (a topic is usually stated all through it, not only in the first 128 tokens) and
    evaluation pools the windows' logits (per_document). With pairs, the first text is windowed and the
    second is repeated in every window."""
    if not getattr(tokenizer, "is_fast", False):
        raise TunecraftError("model.long_documents: windows needs a fast (Rust) tokenizer")
    lengths = [len(ids) for ids in tokenizer(texts, pairs)["input_ids"]]
    stride = min(stride, max_length // 2)
    out = tokenizer(texts, pairs, truncation="only_first" if pairs else True, max_length=max_length,
                    stride=stride, return_overflowing_tokens=True)
    sample = list(out["overflow_to_sample_mapping"])
    window_labels = [labels[i] for i in sample] if labels is not None else None
    return Encoded(list(out["input_ids"]), out.get("token_type_ids"), window_labels, 0, sample=sample,
                   options={"pool": pool, "documents": len(texts)}, source_lengths=lengths)


def per_document(logits: torch.Tensor, enc: Encoded) -> tuple[torch.Tensor, list[int] | None]:
    """(one row of logits per document, one label per document): the mean or the max over each document's
    windows; features that are whole documents pass through unchanged."""
    if "pool" not in enc.options:
        return logits, enc.labels
    n = enc.options["documents"]
    index = torch.tensor(enc.sample)
    if enc.options["pool"] == "max":
        pooled = torch.zeros(n, logits.shape[-1]).scatter_reduce_(0, index.unsqueeze(-1).expand_as(logits),
                                                                  logits.float(), "amax", include_self=False)
    else:
        pooled = torch.zeros(n, logits.shape[-1]).index_add_(0, index, logits.float())
        pooled /= torch.bincount(index, minlength=n).clamp(min=1).unsqueeze(-1)
    labels = None
    if enc.labels is not None:
        labels = [0] * n
        for label, doc in zip(enc.labels, enc.sample):
            labels[doc] = label
    return pooled, labels


TRAINING_ADVICE = "set model.max_length or model.long_documents=windows to read them whole"
RUN_ADVICE = "as in training; a run trained with model.long_documents=windows reads them whole"


def long_texts(enc: Encoded | None, what: str, max_length: int, advice: str = TRAINING_ADVICE) -> dict | None:
    """How many of `what` are longer than max_length and what happens to them (cut, or read as windows):
    {"message", "cut", "long", "texts", "median", "max"}; None when every text fits (or nothing was counted)."""
    lengths = getattr(enc, "source_lengths", None) if enc is not None else None
    if not lengths:
        return None
    long = sorted(n for n in lengths if n > max_length)
    if not long:
        return None
    counts = (f"{len(long):,} of {len(lengths):,} {what} are longer than max_length {max_length} tokens "
              f"(median {statistics.median(long):,.0f}, max {long[-1]:,})")
    cut = "pool" not in enc.options
    if cut:
        message = f"{counts}: they are cut, {advice}"
    else:
        message = (f"{counts}: the {len(lengths):,} texts are read as {len(enc):,} overlapping windows, "
                   f"their logits pooled ({enc.options['pool']})")
    return {"message": message, "cut": cut, "long": len(long), "texts": len(lengths),
            "median": statistics.median(long), "max": long[-1]}


def report_long_texts(enc: Encoded | None, what: str, max_length: int, advice: str = TRAINING_ADVICE) -> str | None:
    """Say on the terminal (a WARNING when they are cut, else INFO) what `long_texts` found. Returns the
    message (None when every text fits)."""
    found = long_texts(enc, what, max_length, advice)
    if found is None:
        return None
    logger.log(logging.WARNING if found["cut"] else logging.INFO, found["message"])
    return found["message"]
