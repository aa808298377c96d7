"""How a causal-LM run's results are shown: perplexity, exact match and ROUGE-L, the generated answers."""

from __future__ import annotations

from pathlib import Path

from ...report import fmt
from .base import View


class CausalLMView(View):
    def length_row(self, summary: dict) -> tuple[str, object]:
        return (f"training examples longer than max_length ({summary.get('overlong', 'drop')})",
                f"{summary['truncated']['train']} (max_length {summary['truncated']['max_length']})")

    def format_prediction(self, row: dict) -> str:
        return row["response"]

    def summary_line(self, metrics: dict) -> str:
        line = f"perplexity {metrics['perplexity']:.3f}  loss {metrics['loss']:.4f}"
        if "exact_match" in metrics:
            line += f"  exact match {metrics['exact_match']:.4f}  ROUGE-L {metrics['rouge_l']:.4f}"
        if "before" in metrics:
            line += f"  (base model: perplexity {metrics['before']['perplexity']:.3f})"
        return line + f"  ({metrics['samples']} examples)"

    def result_blocks(self, metrics: dict, labels: list[str], plots: Path | None = None) -> list:
        before = metrics.get("before") or {}
        names = [n for n in ("perplexity", "loss", "exact_match", "rouge_l", "tokens", "samples", "generated")
                 if n in metrics]
        header = ["metric", "base model", "trained"] if before else ["metric", "value"]
        table = [(n, fmt(before[n]), fmt(metrics[n])) if before else (n, fmt(metrics[n]))
                 for n in names if not before or n in before]
        blocks = [("table", header, table)]
        shown = metrics.get("samples_shown") or []
        if shown:
            if "before" in shown[0]:
                blocks.append(("table", ["prompt", "reference", "base model", "trained"],
                               [(r["prompt"], r["reference"], r["before"], r["output"]) for r in shown]))
            else:
                blocks.append(("table", ["prompt", "reference", "generated"],
                               [(r["prompt"], r["reference"], r["output"]) for r in shown]))
        return blocks


VIEW = CausalLMView()
