"""Metrics: classification (accuracy, macro/micro P/R/F1, per-class report, confusion matrix) and entity-level
NER (seqeval P/R/F1 per type, token accuracy, entity-type confusion)."""

from __future__ import annotations

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2, IOBES
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from ..data.ner import tags_to_spans


def classification_metrics(y_true: list[int], y_pred: list[int], labels: list[str]) -> dict:
    """Macro averages are over the classes present in the gold labels (sklearn's `labels=`): a class the split
    lacks would add an F1 of 0 however good the model; those classes are listed under `absent_classes`.
    Micro and weighted averages and the per-class rows cover every class."""
    ids = list(range(len(labels)))
    present = sorted(set(y_true))
    out = {"accuracy": float(accuracy_score(y_true, y_pred)), "samples": len(y_true),
           "absent_classes": [labels[i] for i in ids if i not in present]}
    for avg in ("macro", "micro", "weighted"):
        over = (present or ids) if avg == "macro" else ids
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=over, average=avg, zero_division=0)
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


def entity_metrics(gold: list[list[str]], pred: list[list[str]], scheme: str = "bio", strict: bool = False) -> dict:
    """Entity-level P/R/F1 per type, micro and macro (seqeval), token accuracy, and an entity-type confusion
    matrix over exact-boundary matches (row/column 'none': a missed or a spurious entity)."""
    kwargs = {"mode": "strict", "scheme": IOBES if scheme == "bioes" else IOB2} if strict else {}
    report = classification_report(gold, pred, output_dict=True, zero_division=0, **kwargs)
    types = sorted({s.type for seq in gold for s in tags_to_spans(seq)[0]}
                   | {s.type for seq in pred for s in tags_to_spans(seq)[0]})
    words = sum(len(g) for g in gold)
    out = {
        "f1": float(report["micro avg"]["f1-score"]), "precision": float(report["micro avg"]["precision"]),
        "recall": float(report["micro avg"]["recall"]), "macro_f1": float(report["macro avg"]["f1-score"]),
        "macro_precision": float(report["macro avg"]["precision"]),
        "macro_recall": float(report["macro avg"]["recall"]),
        "token_accuracy": sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p)) / max(words, 1),
        "samples": len(gold), "tokens": words,
        "per_type": {t: {"precision": float(report[t]["precision"]), "recall": float(report[t]["recall"]),
                         "f1": float(report[t]["f1-score"]), "support": int(report[t]["support"])}
                     for t in types if t in report},
        "mode": "strict" if strict else "conlleval",
    }
    names = [*types, "none"]
    index = {t: i for i, t in enumerate(names)}
    matrix = [[0] * len(names) for _ in names]
    for g, p in zip(gold, pred):
        gs = {(s.start, s.end): s.type for s in tags_to_spans(g)[0]}
        ps = {(s.start, s.end): s.type for s in tags_to_spans(p)[0]}
        for key, kind in gs.items():
            matrix[index[kind]][index[ps.get(key, "none")]] += 1
        for key, kind in ps.items():
            if key not in gs:
                matrix[index["none"]][index[kind]] += 1
    out["confusion_types"], out["confusion_matrix"] = names, matrix
    return out
