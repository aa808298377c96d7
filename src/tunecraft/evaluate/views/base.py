"""How a task's results are shown: its terminal lines and its report's sections. One small module per task in
this package, registered by task name in `__init__.py`; the task itself knows nothing of the report or the
terminal."""

from __future__ import annotations

import json
from pathlib import Path

from ...report import fmt


def _scalars(metrics: dict) -> list[tuple[str, object]]:
    return [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


class View:
    """What `tunecraft train/eval/predict/report`, the run report and the studio show of a task's results. This
    base is also the view of a task that registers none (a plug-in task): its scalar metrics, as they are."""

    def summary_line(self, metrics: dict) -> str:
        """The headline metrics in one terminal line."""
        return "  ".join(f"{k} {fmt(v)}" for k, v in _scalars(metrics))

    def result_blocks(self, metrics: dict, labels: list[str], plots: Path | None = None) -> list:
        """The report's result section as blocks (tables, images written under `plots`)."""
        return [("table", ["metric", "value"], [(k, fmt(v)) for k, v in _scalars(metrics)])]

    def length_row(self, summary: dict) -> tuple[str, object]:
        """The report's row saying how texts longer than max_length were handled."""
        return "inputs cut at max_length (train)", summary.get("truncated", {}).get("train", 0)

    def format_prediction(self, row: dict) -> str:
        """One `predict` result as a terminal line."""
        return json.dumps(row, ensure_ascii=False)
