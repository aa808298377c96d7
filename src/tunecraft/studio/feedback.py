"""The feedback a run's server stored (serve/feedback.py: <run>/feedback.sqlite) as a labelling queue: each row
confirmed or corrected by a person (kept in RUNS/.studio/feedback/<run>.json, the server's store untouched), and
the reviewed rows written as a CSV a training run can take (data.train)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

from ..io import write_json, write_text
from .runs import STUDIO_DIR


class FeedbackQueue:
    def __init__(self, runs: Path):
        self.folder = runs / STUDIO_DIR / "feedback"

    def reviews(self, name: str) -> dict[str, str]:
        path = self.folder / f"{name}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def rows(self, run: Path) -> list[dict]:
        """The server's label feedback, oldest first, each with the label a person gave it (or None)."""
        db = run / "feedback.sqlite"
        if not db.is_file():
            return []
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            found = con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='feedback'").fetchone()
            rows = con.execute("SELECT id, text, text_pair, prediction, label FROM feedback ORDER BY id").fetchall() \
                if found else []
        reviews = self.reviews(run.name)
        return [{"id": i, "text": text, "text_pair": pair, "prediction": prediction, "label": label,
                 "reviewed": reviews.get(str(i))} for i, text, pair, prediction, label in rows]

    def review(self, run: Path, row: int, label: str) -> None:
        reviews = self.reviews(run.name)
        reviews[str(row)] = label
        write_json(self.folder / f"{run.name}.json", reviews)

    def export(self, run: Path, text_column: str, label_column: str) -> tuple[Path, int]:
        """The reviewed rows as a CSV with the run's own column names; (its path, the number of rows)."""
        rows = [r for r in self.rows(run) if r["reviewed"] is not None]
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow([text_column, label_column])
        writer.writerows([r["text"], r["reviewed"]] for r in rows)
        return write_text(self.folder / f"{run.name}.csv", buf.getvalue()), len(rows)
