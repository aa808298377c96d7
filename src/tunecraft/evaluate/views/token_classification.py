"""How an NER run's results are shown: entity-level scores, the per-type table, the entity-type confusion."""

from __future__ import annotations

from pathlib import Path

from ...report import fmt, plot_confusion
from .base import View


class TokenClassificationView(View):
    def length_row(self, summary: dict) -> tuple[str, object]:
        return ("training windows (sentences longer than max_length are split into overlapping windows, never "
                "truncated)", summary["features"]["train"])

    def format_prediction(self, row: dict) -> str:
        found = "  ".join(f"{e['type']}:{e['text']}[{e['start']}:{e['end']}]={e['score']:.3f}" for e in row["entities"])
        return f"{row['text']}\n  {found or '(no entities)'}"

    def summary_line(self, metrics: dict) -> str:
        return (f"entity F1 {metrics['f1']:.4f}  precision {metrics['precision']:.4f}  recall {metrics['recall']:.4f}  "
                f"macro-F1 {metrics['macro_f1']:.4f}  token accuracy {metrics['token_accuracy']:.4f}  "
                f"({metrics['samples']} sentences)")

    def result_blocks(self, metrics: dict, labels: list[str], plots: Path | None = None) -> list:
        names = [n for n in ("f1", "precision", "recall", "macro_f1", "macro_precision", "macro_recall",
                             "token_accuracy", "loss", "samples", "tokens", "mode") if n in metrics]
        per_type = [(t, fmt(v["precision"]), fmt(v["recall"]), fmt(v["f1"]), v["support"])
                    for t, v in metrics["per_type"].items()]
        types = metrics["confusion_types"]
        confusion = [(f"true {t}", *row) for t, row in zip(types, metrics["confusion_matrix"])]
        blocks = [("table", ["metric (entity-level unless named)", "value"], [(n, fmt(metrics[n])) for n in names]),
                  ("table", ["entity type", "precision", "recall", "F1", "support"], per_type),
                  ("table", ["", *(f"pred {t}" for t in types)], confusion)]
        if plots is not None:
            blocks.append(("image", plot_confusion(metrics["confusion_matrix"], types, types, plots / "confusion.png",
                                                   "predicted entity type", "true entity type")))
        return blocks


VIEW = TokenClassificationView()
