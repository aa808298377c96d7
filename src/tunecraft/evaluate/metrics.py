"""Classification metrics: accuracy, macro/micro P/R/F1, per-class report, confusion matrix."""

from __future__ import annotations

from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true: list[int], y_pred: list[int], labels: list[str]) -> dict:
    ids = list(range(len(labels)))
    out = {"accuracy": float(accuracy_score(y_true, y_pred)), "samples": len(y_true)}
    for avg in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=avg, zero_division=0)
        out.update({f"{avg}_precision": float(p), f"{avg}_recall": float(r), f"{avg}_f1": float(f)})
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=None, zero_division=0)
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(labels)
    }
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=ids).tolist()
    return out


def headline(metrics: dict) -> dict:
    """The scalar metrics (for logs, curves and early stopping)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "samples"}
