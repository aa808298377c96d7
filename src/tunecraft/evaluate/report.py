"""Run reports: report.md and a self-contained report.html with PNG plots; predictions.jsonl."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .fonts import use_cjk_font  # noqa: E402


def write_predictions(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure atomically (temporary file, then rename) and close it."""
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _line_plot(series: list[tuple[str, list[dict], str, str]], ylabel: str, path: Path) -> Path:
    """series: (label, records, key, matplotlib style) drawn against each record's step."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, records, key, style in series:
        ax.plot([r["step"] for r in records], [r[key] for r in records], style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _plot_curves(history: list[dict], out: Path, keys: tuple[str, ...]) -> list[Path]:
    train = [h for h in history if h["type"] == "train"]
    evals = [h for h in history if h["type"] == "eval"]
    made = []
    losses = [("train loss", train, "loss", "-")] if train else []
    losses += [("validation loss", evals, "loss", "o-")] if evals else []
    if losses:
        made.append(_line_plot(losses, "loss", out / "loss.png"))
    if evals:
        scores = [(f"validation {key}", evals, key, "o-") for key in keys if key in evals[0]]
        made.append(_line_plot(scores, "score", out / "metrics.png"))
    return made


def plot_confusion(matrix: list[list[int]], rows: list[str], cols: list[str], path: Path,
                   xlabel: str = "predicted", ylabel: str = "true") -> Path:
    use_cjk_font([*rows, *cols])  # Chinese labels: a CJK fallback font, or a warning, not boxes
    fig, ax = plt.subplots(figsize=(max(3.5, 0.6 * len(cols) + 2), max(3.5, 0.6 * len(rows) + 2)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    return save_figure(fig, path)


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def _cell(value) -> str:
    return fmt(value).replace("|", "\\|")


def _length_row(summary: dict) -> tuple[str, object]:
    """How the run handled texts longer than max_length."""
    cut = f"{summary['truncated']['train']} (max_length {summary['truncated']['max_length']})"
    if summary["task"] == "classification":
        return "truncated training texts", cut
    if summary["task"] == "causal_lm":
        return f"training examples longer than max_length ({summary.get('overlong', 'drop')})", cut
    return ("training windows (sentences longer than max_length are split into overlapping windows, never "
            "truncated)", summary["features"]["train"])


def _sections(summary: dict, images: dict[str, Path], results: list) -> list[tuple[str, list]]:
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
        _length_row(summary),
        ("optimizer steps", f"{summary['steps']} of {summary['planned_steps']}"
                            + (" (stopped early)" if summary["stopped_early"] else "")),
        ("best validation step", summary["best_step"]),
        ("precision / device / processes", f"{summary['precision']} / {summary['device']} / {summary['processes']}"),
    ]
    sections = [("Setup", [("table", ["", ""], setup)])]
    if m:
        sections.append((f"Results on the {summary['eval_split']} split", results))
    if summary.get("baselines") and m:
        from ..tasks import get_task

        first, second = get_task(summary["task"]).HEADLINE
        rows = [("fine-tuned: " + summary["method"], fmt(m[first]), fmt(m[second]), "")]
        for b in summary["baselines"]:
            if "accuracy_std" in b:
                note = f"± {b['accuracy_std']:.4f} over {len(b['accuracies'])} draws"
            elif "entries" in b:
                note = f"{b['entries']:,} entity strings from the training split"
            elif "template" in b:
                note = f"template '{b['template']}', verbalizers {b['verbalizers']}"
            else:
                note = (f"descriptions {b['descriptions']} (best of {b['candidates']} on validation, "
                        f"{b['validation_accuracy']:.4f})")
            rows.append((b["name"], fmt(b["metrics"][first]), fmt(b["metrics"][second]), note))
        sections.append(("Baselines (same test split): zero-shot, few-shot prototypes and fine-tunes",
                         [("table", ["", first, second, ""], rows)]))
    speed = [("training time (s)", summary["train_seconds"]), ("wall time, whole job (s)", summary["wall_seconds"]),
             ("training tokens/s (non-padding)", summary["tokens_per_second"]),
             ("training examples/s", summary["examples_per_second"]),
             ("padding fraction", summary["padding_fraction"]), ("peak RSS (MB)", summary["peak_rss_mb"])]
    sections.append(("Speed and memory", [("table", ["", ""], speed)]))
    curves = [("image", images[k]) for k in ("loss", "metrics") if k in images]
    if curves:
        sections.append(("Curves", curves))
    return sections


def _markdown(title: str, sections, run_dir: Path) -> str:
    lines = [f"# {title}", ""]
    for heading, blocks in sections:
        lines += [f"## {heading}", ""]
        for block in blocks:
            if block[0] == "table":
                _, header, rows = block
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
            else:
                lines.append(f"![{block[1].stem}]({block[1].relative_to(run_dir)})")
            lines.append("")
    return "\n".join(lines)


def _html(title: str, sections) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for heading, blocks in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for block in blocks:
            if block[0] == "table":
                _, header, rows = block
                parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
                parts += ["<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in rows]
                parts.append("</table>")
            else:
                data = base64.b64encode(block[1].read_bytes()).decode()
                parts.append(f"<img alt='{block[1].stem}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: Path, summary: dict, history: list[dict], task, extra_sections: list | None = None) -> Path:
    """report.md and report.html; `extra_sections` (heading, blocks) are appended, e.g. robustness."""
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    images = {p.stem: p for p in _plot_curves(history, plots, task.HEADLINE)}
    results = task.result_blocks(summary["metrics"], summary["labels"], plots) if summary.get("metrics") else []
    title = f"tunecraft run '{summary['name']}' — {dt.date.today().isoformat()}"
    sections = _sections(summary, images, results) + list(extra_sections or [])
    for name, text in (("report.md", _markdown(title, sections, run_dir)), ("report.html", _html(title, sections))):
        tmp = run_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, run_dir / name)
    return run_dir / "report.md"


def write_eval_report(path: Path, title: str, metrics: dict, labels: list[str], task) -> Path:
    """A markdown report for `tunecraft eval` (plots beside it)."""
    sections = [("Results", task.result_blocks(metrics, labels, path.parent))]
    path.write_text(_markdown(title, sections, path.parent), encoding="utf-8")
    return path
