"""How a preference (DPO family) run's results are shown: implicit-reward accuracy and margins, the KL to the
reference, the answers' log-probs over training, the generated answers."""

from __future__ import annotations

from pathlib import Path

from ...report import fmt, line_plot
from ...runs import RunFolder
from .causal_lm import CausalLMView


class PreferenceView(CausalLMView):
    def summary_line(self, metrics: dict) -> str:
        line = f"implicit-reward accuracy {metrics['accuracy']:.4f}  margin {metrics['margin']:.4f}"
        if "kl" in metrics:
            line += f"  KL to the reference {metrics['kl']:.3f} nats"
        if "before" in metrics:
            line += f"  (base model: accuracy {metrics['before']['accuracy']:.4f})"
        return line + f"  ({metrics['samples']} examples)"

    def length_row(self, summary: dict) -> tuple[str, object]:
        return (f"training examples longer than max_length ({summary.get('overlong', 'drop')})",
                f"{summary['truncated']['train']} (max_length {summary['truncated']['max_length']})")

    def result_blocks(self, metrics: dict, labels: list[str], plots: Path | None = None) -> list:
        before = metrics.get("before") or {}
        names = [n for n in ("accuracy", "margin", "chosen_reward", "rejected_reward", "chosen_logps",
                             "rejected_logps", "chosen_logratio", "loss", "kl", "kl_per_token", "exact_match",
                             "rouge_l", "samples", "generated") if n in metrics]
        header = ["metric", "base model", "trained"] if before else ["metric", "value"]
        table = [(n, fmt(before.get(n, "")), fmt(metrics[n])) if before else (n, fmt(metrics[n])) for n in names]
        blocks = [("table", header, table)]
        if "kl" in metrics:
            blocks.append(("table", ["", ""], [("KL to the reference", (
                f"{metrics['kl']:.4f} nats per answer ({metrics['kl_per_token']:.4f} per token): the mean of "
                "log π(y|x) − log π_ref(y|x) over one answer y sampled (temperature 1) from the trained model for "
                f"each of {metrics['kl_prompts']} held-out prompts; π_ref is the base with the adapter off"))]))
        evals = RunFolder(plots.parent).metrics() if plots is not None else []
        evals = [e for e in evals if e.get("type") == "eval" and "chosen_logps" in e]
        if evals and plots is not None:
            image = line_plot([("chosen", evals, "chosen_logps", "o-"), ("rejected", evals, "rejected_logps", "o-")],
                              "mean log-prob of the answer (validation)", plots / "logps.png")
            blocks.append(("image", image))
        shown = metrics.get("samples_shown") or []
        if shown:
            if "before" in shown[0]:
                blocks.append(("table", ["prompt", "chosen (reference)", "base model", "trained"],
                               [(r["prompt"], r["reference"], r["before"], r["output"]) for r in shown]))
            else:
                blocks.append(("table", ["prompt", "chosen (reference)", "generated"],
                               [(r["prompt"], r["reference"], r["output"]) for r in shown]))
        return blocks


VIEW = PreferenceView()
