"""How an RL (GRPO / RLOO) run's results are shown: reward, KL, fluency and diversity, the completions."""

from __future__ import annotations

from pathlib import Path

from ...report import fmt, line_plot
from ...runs import RunFolder
from .causal_lm import CausalLMView


def one_line(text: str) -> str:
    """A completion in a table cell: its line breaks shown as ⏎."""
    return text.replace("\r", "").replace("\n", " ⏎ ")


class RlView(CausalLMView):
    def length_row(self, summary: dict) -> tuple[str, object]:
        return ("training prompts cut to max_length − task.max_new_tokens (their end kept)",
                f"{summary['truncated']['train']} (max_length {summary['truncated']['max_length']})")

    def summary_line(self, metrics: dict) -> str:
        if not metrics:
            return "no held-out prompts"
        line = (f"reward {metrics['reward']:.4f}  KL {metrics['kl']:.3f}  ref perplexity "
                f"{metrics['ref_perplexity']:.2f}  distinct-2 {metrics['distinct_2']:.3f}")
        if "before" in metrics:
            line += f"  (base model: reward {metrics['before']['reward']:.4f})"
        return line + f"  ({metrics['prompts']} prompts × {metrics['completions'] // max(metrics['prompts'], 1)})"

    def result_blocks(self, metrics: dict, labels: list[str], plots: Path | None = None) -> list:
        before = metrics.get("before") or {}
        names = [n for n in ("reward", "kl", "ref_perplexity", "distinct_1", "distinct_2", "length", "prompts",
                             "completions") if n in metrics]
        header = ["metric", "base model", "trained"] if before else ["metric", "value"]
        table = [(n, fmt(before.get(n)) if n in before else "", fmt(metrics[n])) if before else (n, fmt(metrics[n]))
                 for n in names]
        blocks = [("table", header, table)]
        blocks += _training_curves(plots)
        shown, base_shown = metrics.get("shown") or [], before.get("shown") or []
        if shown and len(base_shown) == len(shown):
            blocks.append(("table", ["prompt", "base model", "reward", "trained", "reward"],
                           [(r["prompt"], one_line(b["completion"]), fmt(b["reward"]), one_line(r["completion"]),
                             fmt(r["reward"])) for r, b in zip(shown, base_shown)]))
        elif shown:
            blocks.append(("table", ["prompt", "completion", "reward"],
                           [(r["prompt"], one_line(r["completion"]), fmt(r["reward"])) for r in shown]))
        return blocks


def _training_curves(plots: Path | None) -> list:
    """The rollouts' reward and KL to the reference per logged step (train records of metrics.jsonl)."""
    records = [r for r in RunFolder(plots.parent).metrics() if r.get("type") == "train"] if plots is not None else []
    blocks = []
    for key, label, name in (("reward", "mean reward of the rollouts (training)", "rollout_reward.png"),
                             ("kl", "KL to the reference per completion (nats, training)", "rollout_kl.png")):
        shown = [r for r in records if key in r]
        if shown:
            blocks.append(("image", line_plot([(key, shown, key, "o-")], label, plots / name)))
    return blocks


VIEW = RlView()
