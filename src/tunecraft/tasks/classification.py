"""Sequence classification (single text or sentence pair): data, head, loss, metrics, predictions, report."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from ..data import LabelMap, load_classification_data
from ..data.balance import class_weights
from ..data.dataset import BUNDLED_CLASSIFICATION
from ..data.dataset import encode as encode_examples
from ..data.long_documents import RUN_ADVICE, encode_windows, per_document, report_long_texts
from ..data.readers import Columns, Example, read_examples
from ..metrics.labels import classification_metrics
from .base import Task, TaskSettings, records


def decode(logits: torch.Tensor, label_map: LabelMap) -> list[dict]:
    probs = torch.softmax(logits.float(), dim=-1)
    out = []
    for row in probs.tolist():
        best = max(range(len(row)), key=row.__getitem__)
        out.append({"label": label_map.labels[best], "score": row[best],
                    "probabilities": dict(zip(label_map.labels, row))})
    return out


class ClassificationSettings(TaskSettings):
    """Sequence classification: its data columns are data.*, its loss options train.class_weights/sampler."""

    name: Literal["classification"] = "classification"


class Classification(Task):
    """Sequence classification (single text or sentence pair): a head on the [CLS]/pooled representation."""

    NAME = "classification"
    METRICS = ["accuracy", "loss", *(f"{avg}_{m}" for avg in ("macro", "micro", "weighted")
                                     for m in ("precision", "recall", "f1"))]
    HEADLINE = ("accuracy", "macro_f1")
    EARLY_STOPPING = ("accuracy", "max")
    MODEL_CLASS = AutoModelForSequenceClassification
    PEFT_TASK_TYPE = "SEQ_CLS"
    OFFERS = frozenset({"robustness", "compress"})
    Settings = ClassificationSettings
    BUNDLED = BUNDLED_CLASSIFICATION

    def __init__(self, settings: ClassificationSettings | None = None):
        super().__init__(settings)
        self.weight: torch.Tensor | None = None
        """Per-class weights of this run's training loss (train.class_weights), set by `fit_training_data`;
        None: plain CE."""

    def load_data(self, data_cfg):
        return load_classification_data(data_cfg)

    def read_file(self, path: str, meta: dict, fmt: str) -> list[Example]:
        return read_examples(path, Columns(meta["text_column"], meta["label_column"], meta["text_pair_column"]), fmt)

    def options(self, config) -> dict:
        m = config.model
        return {"long_documents": m.long_documents, "window_stride": m.window_stride, "window_pool": m.window_pool}

    def encode(self, tokenizer, examples: list[Example], meta: dict, label_map: LabelMap | None = None):
        field = meta.get("label_column") or "label"
        if meta.get("long_documents") == "windows":
            pairs = [e.text_pair for e in examples] if examples and examples[0].text_pair is not None else None
            labels = [label_map.encode(e, field) for e in examples] if label_map else None
            return encode_windows(tokenizer, [e.text for e in examples], pairs, meta["max_length"],
                                  meta["window_stride"], labels, meta["window_pool"])
        return encode_examples(tokenizer, examples, meta["max_length"], label_map, field)

    def check_config(self, config) -> None:
        """Text augmentation (data.augment) is offered here, unlike the base contract."""

    def build_model(self, base, label_map: LabelMap, dropout: float | None = None):
        from ..models import instantiate

        model = instantiate(AutoModelForSequenceClassification, base, label_map, dropout)
        model.config.problem_type = "single_label_classification"
        return model

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["labels"].numel())

    def fit_training_data(self, config, label_map: LabelMap, train_enc) -> None:
        self.weight = class_weights(config.train.class_weights, train_enc.labels or [], label_map.labels)

    def loss_sum(self, outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed cross-entropy, each term times its gold class's weight (torch's `weight=`, summed); the loop
        divides by the example count, which `balanced` weights keep unbiased over the training split."""
        logits = outputs.logits.float()
        weight = None if self.weight is None else self.weight.to(logits.device)
        return F.cross_entropy(logits, batch["labels"], weight=weight, reduction="sum")

    def evaluate(self, scores: torch.Tensor, enc, label_map: LabelMap) -> dict:
        logits, labels = per_document(scores, enc)  # windows of a long text → one row per text
        result = classification_metrics(labels, logits.argmax(dim=-1).tolist(), label_map.labels)
        result["loss"] = float(F.cross_entropy(logits, torch.tensor(labels)))
        return result

    def prediction_rows(self, examples: list[Example], logits: torch.Tensor, enc, label_map: LabelMap) -> list[dict]:
        rows = []
        for example, decoded in zip(examples, decode(per_document(logits, enc)[0], label_map)):
            row = {"text": example.text}
            if example.text_pair is not None:
                row["text_pair"] = example.text_pair
            row.update({"label": example.label, "prediction": decoded["label"], "score": round(decoded["score"], 6),
                        "probabilities": {k: round(v, 6) for k, v in decoded["probabilities"].items()}})
            rows.append(row)
        return rows

    def predict(self, trained, inputs: list[str | dict], batch_size: int, dtype, warn: bool = True) -> list[dict]:
        """A raw text, or a {"text", "text_pair"} record, each. Each result says whether its text was cut to
        max_length (never, when the run reads windows)."""
        from ..runtime.inference import predict_logits

        rows = records(inputs)
        texts = [r["text"] for r in rows]
        examples = [Example(text=r["text"], text_pair=r.get("text_pair")) for r in rows]
        enc = self.encode(trained.tokenizer, examples, trained.meta)
        if warn:
            report_long_texts(enc, "texts to predict", trained.meta["max_length"], RUN_ADVICE)
        logits = predict_logits(trained.model, enc, batch_size, trained.tokenizer.pad_token_id, torch.device("cpu"),
                                dtype)
        decoded = decode(per_document(logits, enc)[0], LabelMap(trained.meta["labels"]))
        cut = enc.cut or [False] * len(texts)
        return [{"text": t, **d, "truncated": c} for t, d, c in zip(texts, decoded, cut)]
