"""The continual report: a comparison table, each strategy's accuracy matrix and heatmap (md + html + PNG)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ..report import fmt, plt, save_figure, write_pages


def plot_matrix(matrix: list[list[float | None]], tasks: list[str], title: str, path: Path) -> Path:
    """R[i][j] as a heatmap: rows = after training task i, columns = tested on task j (blank: not scorable)."""
    values = [[float("nan") if v is None else v for v in row] for row in matrix]
    fig, ax = plt.subplots(figsize=(0.9 * len(tasks) + 2.5, 0.8 * len(tasks) + 1.8))
    image = ax.imshow(values, cmap="viridis", vmin=0.5, vmax=1.0)
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), [f"after {t}" for t in tasks])
    ax.set_xlabel("tested on")
    ax.set_title(title)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value is not None:
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white" if value < 0.8 else "black")
    fig.colorbar(image, ax=ax, label="test accuracy")
    return save_figure(fig, path)


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def comparison_rows(results: dict) -> list[tuple]:
    rows = []
    for name, r in results["strategies"].items():
        trainable = r["trainable_params_per_task"]
        rows.append((name, _pct(r["average_accuracy"]), _pct(r["backward_transfer"]), _pct(r["forgetting"]),
                     "/".join(str(s) for s in r["steps_per_task"]),
                     f"{max(trainable):,} ({max(trainable) / r['total_params']:.2%})",
                     f"{r['extra_memory_bytes'] / 2**20:.2f} MB ({r['extra_memory']})",
                     f"{r['train_seconds']:.0f}", f"{r['wall_seconds']:.0f}"))
    return rows


COMPARISON_HEADER = ["strategy", "avg acc %", "BWT (pts)", "forgetting (pts)", "steps per task",
                     "trainable params per task", "extra memory", "train s", "wall s"]


def write_continual_report(run_dir: Path, results: dict) -> Path:
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    tasks = results["tasks"]
    sizes = [(t, results["sizes"][t]["train"], results["sizes"][t]["test"]) for t in tasks]
    sections = [
        ("Stream", [("table", ["task", "train examples", "test examples"], sizes)]),
        ("Comparison", [("table", COMPARISON_HEADER, comparison_rows(results))]),
    ]
    for name, r in results["strategies"].items():
        matrix = [(f"after {tasks[i]}", *("–" if v is None else fmt(v) for v in row))
                  for i, row in enumerate(r["matrix"])]
        image = plot_matrix(r["matrix"], tasks, name, plots / f"heatmap-{name}.png")
        forgetting = [(t, _pct(f)) for t, f in zip(tasks, r["forgetting_per_task"])]
        sections.append((f"Strategy: {name}", [
            ("table", ["", *(f"test {t}" for t in tasks)], matrix),
            ("table", ["task", "forgetting (pts)"], forgetting),
            ("image", image),
        ]))
    sections.append(("Definitions", [("table", ["metric", "definition"], [
        ("R[i][j]", "test accuracy on task j after training tasks 0..i"),
        ("avg acc", "mean over j of R[T-1][j]"),
        ("BWT", "GEM (Lopez-Paz & Ranzato 2017): mean over j < T-1 of R[T-1][j] - R[j][j]"),
        ("forgetting", "Chaudhry et al. 2018: mean over j < T-1 of max over l in [j, T-2] of R[l][j], "
                       "minus R[T-1][j]"),
        ("extra memory", "what the strategy holds beyond the model being trained"),
    ])]))
    title = f"tunecraft continual '{results['name']}' — {dt.date.today().isoformat()}"
    return write_pages(run_dir, title, sections)
