"""How a task's results are shown: its terminal lines and its report's sections. One small module per task in
this package, registered by task name in `__init__.py`; the task itself knows nothing of the report or the
terminal."""

from __future__ import annotations

from pathlib import Path


class View:
    """What `tunecraft train/eval/predict/report`, the run report and the studio show of a task's results."""

    def summary_line(self, metrics: dict) -> str:
        """The headline metrics in one terminal line."""
        raise NotImplementedError

    def result_blocks(self, metrics: dict, labels: list[str], plots: Path | None = None) -> list:
        """The report's result section as blocks (tables, images written under `plots`)."""
        raise NotImplementedError

    def length_row(self, summary: dict) -> tuple[str, object]:
        """The report's row saying how texts longer than max_length were handled."""
        raise NotImplementedError

    def format_prediction(self, row: dict) -> str:
        """One `predict` result as a terminal line."""
        raise NotImplementedError
