"""Sequence classification (single text or sentence pair): head, loss, decoding and metrics."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from ..data import LabelMap
from ..evaluate.metrics import classification_metrics

NAME = "classification"
METRICS = ["accuracy", "loss", *(f"{avg}_{m}" for avg in ("macro", "micro", "weighted")
                                 for m in ("precision", "recall", "f1"))]


def build_model(model_path: Path, label_map: LabelMap, dropout: float | None = None):
    overrides = {}
    if dropout is not None:
        overrides = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout,
                     "classifier_dropout": dropout}
    return AutoModelForSequenceClassification.from_pretrained(
        str(model_path),
        num_labels=len(label_map.labels),
        id2label=label_map.id2label,
        label2id=label_map.label2id,
        problem_type="single_label_classification",
        **overrides,
    )


def count(batch: dict[str, torch.Tensor]) -> int:
    """How many loss terms a batch contributes (the denominator of the mean loss)."""
    return int(batch["labels"].numel())


def loss_sum(outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(outputs.logits.float(), batch["labels"], reduction="sum")


def decode(logits: torch.Tensor, label_map: LabelMap) -> list[dict]:
    probs = torch.softmax(logits.float(), dim=-1)
    out = []
    for row in probs.tolist():
        best = max(range(len(row)), key=row.__getitem__)
        out.append({"label": label_map.labels[best], "score": row[best],
                    "probabilities": dict(zip(label_map.labels, row))})
    return out


def metrics(logits: torch.Tensor, labels: list[int], label_map: LabelMap) -> dict:
    preds = logits.argmax(dim=-1).tolist()
    return classification_metrics(labels, preds, label_map.labels)
