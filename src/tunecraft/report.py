"""Report building blocks: number formatting, plots, and markdown / self-contained HTML pages made of sections.

A leaf: it imports nothing of tunecraft but `io` and `fonts`, so tasks, commands and reports of every kind can use it.
A page is a title and a list of sections `(heading, blocks)`; a block is `("table", header, rows)` or
`("image", png_path)`.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .fonts import use_cjk_font  # noqa: E402
from .io import write_file, write_text  # noqa: E402

__all__ = ["plt", "fmt", "save_figure", "line_plot", "plot_curves", "plot_confusion", "markdown", "html_sections",
           "html_page", "write_pages"]


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure atomically and close it."""
    fig.tight_layout()
    write_file(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return path


def line_plot(series: list[tuple[str, list[dict], str, str]], ylabel: str, path: Path) -> Path:
    """series: (label, records, key, matplotlib style) drawn against each record's step."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, records, key, style in series:
        ax.plot([r["step"] for r in records], [r[key] for r in records], style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def labelled_scatter(points: list[tuple[str, float, float]], xlabel: str, ylabel: str, path: Path) -> Path:
    """points: (label, x, y), each drawn as a dot with its label beside it (a trade-off plot)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, x, y in points:
        ax.scatter(x, y)
        ax.annotate(label, (x, y), fontsize=8, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_curves(history: list[dict], out: Path, keys: tuple[str, ...]) -> list[Path]:
    """loss.png (train and validation loss) and metrics.png (the validation `keys`) from a metrics history."""
    train = [h for h in history if h["type"] == "train"]
    evals = [h for h in history if h["type"] == "eval"]
    made = []
    losses = [("train loss", train, "loss", "-")] if train else []
    losses += [("validation loss", evals, "loss", "o-")] if evals and "loss" in evals[0] else []
    if losses:
        made.append(line_plot(losses, "loss", out / "loss.png"))
    if evals:
        scores = [(f"validation {key}", evals, key, "o-") for key in keys if key in evals[0]]
        made.append(line_plot(scores, "score", out / "metrics.png"))
    return made


MAX_ANNOTATED = 20
"""A confusion matrix over more labels than this is drawn without the count in each cell."""


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
    if max(len(rows), len(cols)) > MAX_ANNOTATED:  # the counts would not fit their cells; the colour says it
        return save_figure(fig, path)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    return save_figure(fig, path)


def _cell(value) -> str:
    return fmt(value).replace("|", "\\|")


def markdown(title: str, sections, base: Path) -> str:
    """The page as markdown; images are linked relative to `base` (the folder the page is written to)."""
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
                lines.append(f"![{block[1].stem}]({block[1].relative_to(base)})")
            lines.append("")
    return "\n".join(lines)


def _inline(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def html_sections(sections, image_src=_inline, level: int = 2) -> str:
    """The sections as an HTML fragment (headings at `level`); `image_src(path)` is an image's src (default:
    the PNG inlined)."""
    parts = []
    for heading, blocks in sections:
        parts.append(f"<h{level}>{html.escape(heading)}</h{level}>")
        for block in blocks:
            if block[0] == "table":
                _, header, rows = block
                parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
                parts += ["<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in rows]
                parts.append("</table>")
            else:
                parts.append(f"<img alt='{html.escape(block[1].stem)}' src='{html.escape(image_src(block[1]))}'>")
    return "\n".join(parts)


def html_page(title: str, sections) -> str:
    """The page as one self-contained HTML file (images inlined)."""
    return "\n".join([
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", html_sections(sections), "</body></html>"])


def write_pages(folder: Path, title: str, sections, html_too: bool = True) -> Path:
    """folder/report.md (and folder/report.html), atomically; returns the markdown's path."""
    path = write_text(folder / "report.md", markdown(title, sections, folder))
    if html_too:
        write_text(folder / "report.html", html_page(title, sections))
    return path
