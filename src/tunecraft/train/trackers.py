"""Experiment trackers beyond metrics.jsonl. TensorBoard is written by the loop itself (its SummaryWriter's
purge_step drops the steps a resume repeats, which accelerate's tracker cannot); MLflow and Weights & Biases go
through accelerate's tracker API (`Accelerator(log_with=...)`, `init_trackers`, `log`, `end_training`)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import ConfigError
from ..settings import dotted_keys

THROUGH_ACCELERATE = {"mlflow": "mlflow-skinny (or mlflow)", "wandb": "wandb"}
"""The trackers accelerate drives, and the package each needs."""
PROJECT = "tunecraft"
"""The MLflow experiment / W&B project every run is logged under (a run is named after its recipe's name)."""


def check(trackers: list[str]) -> None:
    """Refuse a tracker whose package is not installed (the session opens: nothing written yet)."""
    for name in trackers:
        package = THROUGH_ACCELERATE.get(name)
        if package is not None and importlib.util.find_spec(name) is None:
            raise ConfigError(f"train.trackers: '{name}' needs the {package} package, which is not installed "
                              f"(pip install {package.split()[0]}), or leave '{name}' out of train.trackers")


def log_with(trackers: list[str]) -> list[str]:
    return [t for t in trackers if t in THROUGH_ACCELERATE]


def start(acc, config, run_dir: Path) -> None:
    """Open the accelerate trackers of a run with its resolved config as parameters. MLflow writes to a local
    SQLite store beside the runs (<output_dir>/mlflow.db, artifacts in <output_dir>/mlartifacts) unless
    $MLFLOW_TRACKING_URI names another; W&B runs offline unless $WANDB_MODE says otherwise."""
    names = log_with(config.train.trackers)
    if not names:
        return
    home = run_dir.resolve().parent
    kwargs = {}
    if "mlflow" in names:
        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
        kwargs["mlflow"] = {"run_name": config.name, "logging_dir": (home / "mlartifacts").as_uri()}
    if "wandb" in names:
        os.environ.setdefault("WANDB_MODE", "offline")
        kwargs["wandb"] = {"name": config.name, "dir": str(run_dir)}
    acc.init_trackers(PROJECT, config=dotted_keys(config.model_dump(mode="json")), init_kwargs=kwargs)
