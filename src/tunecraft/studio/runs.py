"""The studio's view of a folder of run folders: one row per run (status, headline metric, speed), a run's
metrics history, its predictions with the errors first. Rows of finished runs are `tunecraft report`'s own
(evaluate/compare.py `summary_row`), cached by the summary's modification time."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from ..evaluate.compare import summary_row
from ..runs import RunFolder
from ..tasks import TASKS

RUNNING_WITHIN_S = 120
"""A run without summary.json whose metrics.jsonl (or config.yaml) changed this recently counts as running
when no process of the studio's tells more."""
STUDIO_DIR = ".studio"
"""The studio's own folder inside the runs folder (launch records, logs, uploaded recipes, page images)."""


def is_run(folder: Path) -> bool:
    return RunFolder(folder).is_run()


def read_history(run: Path, after: int = 0) -> list[dict]:
    """metrics.jsonl's records from line `after` on (a line being written is left for the next read)."""
    return RunFolder(run).metrics(after)


class RunIndex:
    """The rows of the runs table; `launches` (studio/launch.py) tells the status of the runs it started."""

    def __init__(self, folder: Path, launches):
        self.folder, self.launches = folder, launches
        self._rows: dict[Path, tuple[float, dict]] = {}
        self._lock = threading.Lock()  # the studio's start-up read and a first page load share the work

    def rows(self) -> list[dict]:
        found = sorted((p for p in self.folder.iterdir() if not p.name.startswith(".") and is_run(p)),
                       key=lambda p: p.name) if self.folder.is_dir() else []
        with self._lock:
            return [self.row(p) for p in found]

    def row(self, run: Path) -> dict:
        summary = RunFolder(run).summary_file
        if summary.is_file():
            stamp = summary.stat().st_mtime
            cached = self._rows.get(run)
            if cached is None or cached[0] != stamp:
                self._rows[run] = (stamp, self._finished(run))
            return self._rows[run][1]
        return self._unfinished(run)

    def _finished(self, run: Path) -> dict:
        s = RunFolder(run).summary()
        if s.get("task") not in TASKS:
            return self._unfinished(run)
        r = summary_row(run, s)  # no settings: they are in the run page's recipe and in comparisons
        first, second = TASKS[s["task"]].HEADLINE
        frac = r["trainable"] / r["total"] if r["trainable"] is not None and r["total"] else None
        return {"name": run.name, "task": s["task"], "base": s.get("base_model", ""), "method": r["method"],
                "metric": first, "score": r["score"], "second_metric": second,
                "second": r["second"], "trainable_pct": frac and 100 * frac, "train_seconds": r["train_seconds"],
                "tokens_per_second": r["tokens_per_second"], "steps": r["steps"],
                "status": "stopped early" if s.get("stopped_early") else "finished",
                "doctor": sum(f.get("severity") == "warn" for f in s.get("doctor") or []),
                "started": _started(RunFolder(run))}

    def _unfinished(self, run: Path) -> dict:
        folder = RunFolder(run)
        config, history = folder.config_file, folder.metrics_file
        raw = folder.raw_config()
        task = raw.get("task") or ""
        task = task.get("name", "") if isinstance(task, dict) else task  # `task: {name: ...}` or an older `task: name`
        changed = max((p.stat().st_mtime for p in (config, history) if p.is_file()), default=0)
        status = self.launches.status(run.name)
        if status is None:
            status = "running" if time.time() - changed < RUNNING_WITHIN_S else "failed"
        steps = None
        if history.is_file():
            records = read_history(run)
            steps = max((r.get("step", 0) for r in records), default=None)
            if records and records[-1].get("type") == "failed":  # a NaN/inf loss ended it (train/loop.py)
                status = "failed"
        first, second = TASKS[task].HEADLINE if task in TASKS else ("", "")
        return {"name": run.name, "task": task, "base": (raw.get("model") or {}).get("base", ""),
                "method": (raw.get("method") or {}).get("name", ""), "metric": first, "score": None,
                "second_metric": second, "second": None, "trainable_pct": None, "train_seconds": None,
                "tokens_per_second": None, "steps": steps, "status": status, "doctor": 0,
                "started": _started(folder)}


def predictions(run: Path, limit: int = 200) -> tuple[list[str], list[dict], int, int]:
    """(columns, rows with the errors first, errors, total) of the run's predictions.jsonl. A row is an error
    when it has both a `label` and a `prediction` and they differ."""
    path = RunFolder(run).predictions_file
    if not path.is_file():
        return [], [], 0, 0
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    wrong = [r for r in rows if "label" in r and "prediction" in r and r["label"] != r["prediction"]]
    right = [r for r in rows if not ("label" in r and "prediction" in r and r["label"] != r["prediction"])]
    columns = list(dict.fromkeys(k for r in rows[:50] for k in r))
    return columns, (wrong + right)[:limit], len(wrong), len(rows)


def example_text(rows: list[dict], errors: int) -> str:
    """A text from the run's own held-out predictions to prefill "Try it" with: the first one it got right (then
    any), so a question classifier is tried on a question, not on a movie review."""
    for row in rows[errors:] + rows[:errors]:
        if isinstance(row.get("text"), str) and row["text"].strip():
            return row["text"]
    return ""


def _started(folder: RunFolder) -> float | None:
    """When the run started: config.yaml is its first write."""
    return folder.config_file.stat().st_mtime if folder.has_config() else None
