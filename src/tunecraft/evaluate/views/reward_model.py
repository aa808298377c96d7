"""How a reward model's results are shown: pairwise accuracy, the margins' distribution, the calibration."""

from __future__ import annotations

from pathlib import Path

from ...report import fmt, plt, save_figure
from .base import View


def plot_margins(metrics: dict, path: Path) -> Path:
    hist = metrics["margin_histogram"]
    edges = hist["edges"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(edges[:-1], hist["counts"], width=[b - a for a, b in zip(edges, edges[1:])], align="edge",
           edgecolor="white")
    ax.axvline(0, color="black", lw=1)
    ax.set_xlabel("reward margin r(chosen) − r(rejected)")
    ax.set_ylabel("held-out pairs")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_calibration(metrics: dict, path: Path) -> Path:
    rows = metrics["calibration"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0.5, 1], [0.5, 1], "--", color="grey", label="calibrated")
    ax.plot([r["predicted"] for r in rows], [r["observed"] for r in rows], "o-", label="model")
    ax.set_xlabel("predicted P(preferred) = σ(|margin|)")
    ax.set_ylabel("observed: the preferred one is chosen")
    ax.set_xlim(0.48, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


class RewardModelView(View):
    def format_prediction(self, row: dict) -> str:
        prompt = row.get("prompt")
        prompt = f"{prompt if isinstance(prompt, str) else prompt[-1]['content']}\t" if prompt else ""
        return f"{row['reward']:+.4f}\t{prompt}{row['text']}"

    def summary_line(self, metrics: dict) -> str:
        return (f"pairwise accuracy {metrics['accuracy']:.4f}  mean margin {metrics['mean_margin']:.3f}  "
                f"ECE {metrics.get('ece', 0.0):.3f}  ({metrics['samples']} pairs)")

    def result_blocks(self, metrics: dict, labels: list[str], plots: Path | None = None) -> list:
        """The pairwise accuracy and margins, their distribution, the calibration and (pairs with margins) the
        accuracy per margin quartile, as report blocks."""
        names = [n for n in ("accuracy", "loss", "mean_margin", "margin_std", "ece", "samples") if n in metrics]
        blocks = [("table", ["metric", "value"],
                   [("pairwise accuracy" if n == "accuracy" else n, fmt(metrics[n])) for n in names])]
        if "margin_quantiles" in metrics:
            q = metrics["margin_quantiles"]
            blocks.append(("table", ["reward margin r(chosen) − r(rejected)", *q], [("held-out pairs",
                                                                                    *(fmt(v) for v in q.values()))]))
        if metrics.get("calibration"):
            blocks.append(("table", ["σ(|margin|) bin", "pairs", "predicted P(preferred)", "observed"],
                           [(f"{r['low']:.2f}–{r['high']:.2f}", r["pairs"], fmt(r["predicted"]), fmt(r["observed"]))
                            for r in metrics["calibration"]]))
        if metrics.get("accuracy_by_data_margin"):
            blocks.append(("table", ["the pairs' own margin", "pairs", "pairwise accuracy"],
                           [(f"{r['low']:.2f}–{r['high']:.2f}", r["pairs"], fmt(r["accuracy"]))
                            for r in metrics["accuracy_by_data_margin"]]))
        if plots is not None and metrics.get("samples"):
            blocks.append(("image", plot_margins(metrics, plots / "margins.png")))
            blocks.append(("image", plot_calibration(metrics, plots / "calibration.png")))
        return blocks

    def length_row(self, summary: dict) -> tuple[str, object]:
        return (f"training pairs longer than max_length ({summary.get('overlong', 'drop')})",
                f"{summary['truncated']['train']} (max_length {summary['truncated']['max_length']})")


VIEW = RewardModelView()
