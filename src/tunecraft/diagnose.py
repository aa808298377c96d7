"""`tunecraft doctor RECIPE|RUN`: the run doctor's checks (evaluate/doctor.py) on a recipe before training, or on
a run folder: its data checked again, plus its outcome.

A recipe is read the way `train()` reads it (`train/job.py` `read_job`: the data, the base model's tokenizer,
the encoded splits), without building the model; a run folder through its config.yaml and the files the run
wrote (summary.json, metrics.jsonl, predictions.jsonl)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from .config import load_config
from .errors import TunecraftError
from .evaluate.doctor import Finding, outcome_findings
from .runs import CONFIG, RunFolder
from .train.job import read_job


@contextlib.contextmanager
def _quiet():
    """The findings are the command's output: not logged on the terminal as well."""
    log = logging.getLogger("tunecraft.evaluate.doctor")
    level, log.level = log.level, logging.ERROR
    try:
        yield
    finally:
        log.setLevel(level)


def doctor(target: str | Path, overrides: list[str] | None = None) -> dict:
    """{"target", "kind": "recipe" or "run", "findings": [finding dicts]}; a run folder is a directory with a
    config.yaml, anything else is read as a recipe (with dotted `overrides`)."""
    path = Path(target)
    if path.is_dir():
        return doctor_run(path, overrides)
    with _quiet():
        job = read_job(load_config(path, overrides))
    return {"target": str(path), "kind": "recipe", "findings": [f.as_dict() for f in job.findings]}


def doctor_run(run: Path, overrides: list[str] | None = None) -> dict:
    folder = RunFolder(run)
    if not folder.has_config():
        raise TunecraftError(f"{run}: not a run folder (no {CONFIG}) and not a recipe file")
    with _quiet():
        job = read_job(load_config(folder.config_file, overrides))
    summary = folder.summary() if folder.is_finished() else {}
    findings = job.findings + outcome_findings(job.task.NAME, run, summary, job.task.HEADLINE)
    if not summary and not any(f.check == "loss" for f in findings):
        findings.append(Finding("unfinished", "info", f"{run} has no summary.json: the run has not finished (or "
                                "was stopped)", "resume it: tunecraft train RECIPE --resume", {}, "outcome"))
    return {"target": str(run), "kind": "run", "findings": [f.as_dict() for f in findings]}
