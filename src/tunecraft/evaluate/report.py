"""The run report: report.md and a self-contained report.html with PNG plots, built from a run's summary by
the task's view's result blocks (evaluate/views/; the blocks, plots and rendering come from the leaf
`tunecraft.report`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ..io import write_text
from ..report import fmt, markdown, plot_curves, write_pages
from .baselines import below_baseline
from .views import view_of


def run_sections(summary: dict, images: dict[str, Path], results: list, task) -> list[tuple[str, list]]:
    """The run report's sections (setup, results, baselines, speed, curves), for report.md/html and the studio."""
    m = summary.get("metrics") or {}
    frac = summary["trainable_params"] / max(summary["total_params"], 1)
    setup = [
        ("base model", summary["base_model"]), ("method", summary["method"]),
        ("trainable parameters", f"{summary['trainable_params']:,} of {summary['total_params']:,} ({frac:.2%})"),
        ("data", summary["data"]), *([("labels", ", ".join(summary["labels"]))] if summary["labels"] else []),
        ("examples (train / validation / test)",
         f"{summary['sizes']['train']} / {summary['sizes']['validation']} / {summary['sizes']['test']}"),
        *([("entities per split", "; ".join(f"{split}: " + ", ".join(f"{t} {n}" for t, n in counts.items())
                                             for split, counts in summary["entities"].items()))]
          if summary.get("entities") else []),
        view_of(task.NAME).length_row(summary),
        ("optimizer steps", f"{summary['steps']} of {summary['planned_steps']}"
                            + (" (stopped early)" if summary["stopped_early"] else "")),
        ("best validation step", summary["best_step"]),
        ("precision / device / processes", f"{summary['precision']} / {summary['device']} / {summary['processes']}"),
    ]
    sections = [("Setup", [("table", ["", ""], setup)])]
    if m:
        sections.append((f"Results on the {summary['eval_split']} split", results))
    if summary.get("baselines") and m:
        first, second = task.HEADLINE
        below = "; ".join(below_baseline(m, summary["baselines"], task.HEADLINE))
        rows = [("fine-tuned: " + summary["method"], fmt(m[first]), fmt(m[second]), below)]
        for b in summary["baselines"]:
            if "note" in b:
                note = b["note"]
            elif "accuracy_std" in b:
                note = f"± {b['accuracy_std']:.4f} over {len(b['accuracies'])} draws"
            elif "entries" in b:
                note = f"{b['entries']:,} entity strings from the training split"
            elif "template" in b:
                note = f"template '{b['template']}', verbalizers {b['verbalizers']}"
            else:
                note = (f"{descriptions_note(b['descriptions'])} (best of {b['candidates']} on validation, "
                        f"{b['validation_accuracy']:.4f})")
            rows.append((b["name"], fmt(b["metrics"][first]), fmt(b["metrics"][second]), note))
        sections.append(("Baselines (same test split): TF-IDF, zero-shot, few-shot prototypes and fine-tunes",
                         [("table", ["", first, second, ""], rows)]))
    if summary.get("doctor"):
        sections.append(doctor_section(summary["doctor"]))
    unit = summary.get("unit", "tokens")  # what a step trains on (the objective's UNIT); older runs: tokens
    speed = [("training time (s)", summary["train_seconds"]), ("wall time, whole job (s)", summary["wall_seconds"]),
             (f"training {unit}/s (non-padding)", summary[f"{unit}_per_second"]),
             ("training examples/s", summary["examples_per_second"]),
             ("padding fraction", summary["padding_fraction"]), ("peak RSS (MB)", summary["peak_rss_mb"])]
    sections.append(("Speed and memory", [("table", ["", ""], speed)]))
    curves = [("image", images[k]) for k in ("loss", "metrics") if k in images]
    if curves:
        sections.append(("Curves", curves))
    return sections


SHOWN_DESCRIPTIONS = 4
"""A zero-shot baseline's label descriptions shown in its one-line note; more are counted, not listed."""


def descriptions_note(descriptions) -> str:
    """One line for a zero-shot baseline's label descriptions: all of a few, the first few and a count of many."""
    items = list(descriptions.items()) if isinstance(descriptions, dict) else list(enumerate(descriptions))
    shown = ", ".join(f"{k}: '{v}'" for k, v in items[:SHOWN_DESCRIPTIONS])
    more = len(items) - SHOWN_DESCRIPTIONS
    return f"descriptions {shown}" + (f" and {more} more" if more > 0 else "")


def doctor_section(findings: list[dict]) -> tuple[str, list]:
    """The doctor's findings (evaluate/doctor.py): warnings first, each with what to do."""
    rows = [(f["severity"], f["check"], f["message"], f["advice"])
            for f in sorted(findings, key=lambda f: f["severity"] != "warn")]
    warns = sum(f["severity"] == "warn" for f in findings)
    return (f"Doctor: {warns} warning{'s' * (warns != 1)}", [("table", ["", "check", "finding", "what to do"], rows)])


def write_report(run_dir: Path, summary: dict, history: list[dict], task, extra_sections: list | None = None) -> Path:
    """report.md and report.html; `extra_sections` (heading, blocks) are appended, e.g. robustness."""
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    images = {p.stem: p for p in plot_curves(history, plots, task.HEADLINE)}
    view = view_of(task.NAME)
    results = view.result_blocks(summary["metrics"], summary["labels"], plots) if summary.get("metrics") else []
    title = f"tunecraft run '{summary['name']}' — {dt.date.today().isoformat()}"
    sections = run_sections(summary, images, results, task) + list(extra_sections or [])
    return write_pages(run_dir, title, sections)


def write_eval_report(path: Path, title: str, metrics: dict, labels: list[str], task) -> Path:
    """A markdown report for `tunecraft eval` (plots beside it)."""
    sections = [("Results", view_of(task.NAME).result_blocks(metrics, labels, path.parent))]
    return write_text(path, markdown(title, sections, path.parent))
