"""Sequence classification (single text or sentence pair): data, head, loss, metrics, predictions, report."""

from __future__ import annotations

from pathlib import Path
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
from ..evaluate.baselines import check_classification_baselines, classification_baselines, finetune_shots
from ..evaluate.metrics import classification_metrics
from ..report import fmt, plot_confusion
from .base import Task, TaskSettings


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

    def predict(self, trained, texts: list[str], batch_size: int, dtype, pairs: list[str] | None = None,
                warn: bool = True) -> list[dict]:
        """`warn`: say on the terminal how many texts are cut (off for the server, which would say it per batch).
        Each result says whether its text was cut to max_length (never, when the run reads windows)."""
        from ..runtime.inference import predict_logits

        examples = [Example(text=t, text_pair=pairs[i] if pairs else None) for i, t in enumerate(texts)]
        enc = self.encode(trained.tokenizer, examples, trained.meta)
        if warn:
            report_long_texts(enc, "texts to predict", trained.meta["max_length"], RUN_ADVICE)
        logits = predict_logits(trained.model, enc, batch_size, trained.tokenizer.pad_token_id, torch.device("cpu"),
                                dtype)
        decoded = decode(per_document(logits, enc)[0], LabelMap(trained.meta["labels"]))
        cut = enc.cut or [False] * len(texts)
        return [{"text": t, **d, "truncated": c} for t, d, c in zip(texts, decoded, cut)]

    def length_row(self, summary: dict) -> tuple[str, object]:
        return ("truncated training texts",
                f"{summary['truncated']['train']} (max_length {summary['truncated']['max_length']})")

    def check_baselines(self, config, data, base) -> None:
        check_classification_baselines(config, data, base)

    def baselines(self, config, data, base, run_dir: Path, fit=None) -> list[dict]:
        found = classification_baselines(config, data, base.path)
        if config.baselines.finetune_shots and fit is not None:
            found += finetune_shots(config, data, run_dir, fit)
        return found

    def routes(self, server):
        from ..serve.classify import classification_routes
        from ..serve.embeddings import embedding_routes

        router = classification_routes(server, self.predict)
        router.include_router(embedding_routes(server))
        return router

    def format_prediction(self, row: dict) -> str:
        probs = "  ".join(f"{k}={v:.3f}" for k, v in row["probabilities"].items())
        return f"{row['label']}\t{row['score']:.3f}\t[{probs}]\t{row['text']}"

    def summary_line(self, metrics: dict) -> str:
        absent = metrics.get("absent_classes")
        over = f" over the {len(metrics['per_class']) - len(absent)} classes present" if absent else ""
        return (f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}{over}  "
                f"micro-F1 {metrics['micro_f1']:.4f}  ({metrics['samples']} examples)")

    def result_blocks(self, metrics: dict, labels: list[str], plots: Path | None = None) -> list:
        """The headline metrics, the per-class report and the confusion matrix, as report blocks."""
        names = [n for n in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "micro_f1", "weighted_f1",
                             "loss", "samples") if n in metrics]
        per_class = [(label, fmt(v["precision"]), fmt(v["recall"]), fmt(v["f1"]), v["support"])
                     for label, v in metrics["per_class"].items()]
        confusion = [(f"true {label}", *row) for label, row in zip(labels, metrics["confusion_matrix"])]
        rows = [(n, fmt(metrics[n])) for n in names]
        if metrics.get("absent_classes"):  # macro averages leave out the classes the scored split lacks
            rows.append(("classes absent (not in macro averages)", ", ".join(metrics["absent_classes"])))
        blocks = [("table", ["metric", "value"], rows),
                  ("table", ["class", "precision", "recall", "F1", "support"], per_class),
                  ("table", ["", *(f"pred {label}" for label in labels)], confusion)]
        if plots is not None:
            blocks.append(("image", plot_confusion(metrics["confusion_matrix"], labels, labels,
                                                   plots / "confusion.png")))
        return blocks

