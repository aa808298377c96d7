"""The run header every recipe that writes a run folder starts with: `name`, `output_dir`, `seed`, and the
folder they name (`run_dir`, a Path; `folder`, its RunFolder). The train, pretrain and continual recipes derive
from it, each with its own default name."""

from __future__ import annotations

from pathlib import Path

from ..settings import Strict
from .folder import RunFolder


class RunRecipe(Strict):
    name: str = "run"
    output_dir: str = "runs"
    seed: int = 42

    @property
    def run_dir(self) -> Path:
        """<output_dir>/<name>."""
        return Path(self.output_dir) / self.name

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)
