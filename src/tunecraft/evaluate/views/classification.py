"""How a classification run's results are shown: accuracy and F1, the per-class table, the confusion matrix."""

from __future__ import annotations

from pathlib import Path

from ...report import fmt, plot_confusion
from .base import View


class ClassificationView(View):
    def length_row(self, summary: dict) -> tuple[str, object]:
        return ("truncated training texts",
                f"{summary['truncated']['train']} (max_length {summary['truncated']['max_length']})")

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


VIEW = ClassificationView()
