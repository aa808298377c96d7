"""The feedback a run's server stored (serve/feedback.py: <run>/feedback.sqlite) as a labelling queue.

Label feedback (table `feedback`): each row confirmed or corrected by a person (kept in
RUNS/.studio/feedback/<run>.json, the server's rows untouched), and the reviewed rows written as a CSV a
training run can take (data.train). Chat feedback (table `chat_feedback`): a person rates an answer or edits it
in the store itself (FeedbackStore.review_chat), since the store is the preference task's training file
(data.train=RUN/feedback.sqlite, read by data/preferences.py read_feedback_store)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..data.preferences import PreferencePair, read_feedback_store, read_store_table
from ..errors import DataError
from ..io import write_json, write_text
from ..serve.feedback import FeedbackStore
from .runs import STUDIO_DIR

STORE = "feedback.sqlite"
"""The store's name in a run folder (serve/app.py's default --feedback-db)."""


class FeedbackQueue:
    def __init__(self, runs: Path):
        self.folder = runs / STUDIO_DIR / "feedback"

    def reviews(self, name: str) -> dict[str, str]:
        path = self.folder / f"{name}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def rows(self, run: Path) -> list[dict]:
        """The server's label feedback, oldest first, each with the label a person gave it (or None)."""
        reviews = self.reviews(run.name)
        rows = read_store_table(run / STORE, "feedback") or []
        return [{**row, "reviewed": reviews.get(str(row["id"]))} for row in rows]

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

    # -- chat feedback ------------------------------------------------------------------------------------------
    def chat_rows(self, run: Path) -> list[dict]:
        """The server's chat feedback, oldest first: the conversation (a list of messages), the answer, rating and
        correction, and what the row trains as (`read_feedback_store`'s own reading: pair, good, bad, or None
        for a row it leaves out)."""
        rows = read_store_table(run / STORE, "chat_feedback") or []
        if not rows:
            return []
        try:
            examples = read_feedback_store(run / STORE)
        except DataError:  # no row to learn from yet
            examples = []
        kinds = {e.line: "pair" if isinstance(e, PreferencePair) else "good" if e.desirable else "bad"
                 for e in examples}
        return [{**row, "messages": json.loads(row["messages"]), "trains_as": kinds.get(row["id"])} for row in rows]

    def review_chat(self, run: Path, row: int, **fields) -> bool:
        """A rating and/or a correction set on a stored answer; False when the run's store has no such row."""
        store = FeedbackStore(run / STORE)
        try:
            return store.review_chat(row, **fields)
        finally:
            store.close()
