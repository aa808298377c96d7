"""Durable feedback store (SQLite): each write is committed before the server answers 200."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    text TEXT NOT NULL,
    text_pair TEXT,
    prediction TEXT,
    label TEXT NOT NULL,
    model TEXT
)
"""

CHAT_SCHEMA = """
CREATE TABLE IF NOT EXISTS chat_feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    messages TEXT NOT NULL,
    response TEXT,
    rating INTEGER,
    correction TEXT,
    model TEXT
)
"""


EMPTY_CHAT_FEEDBACK = "give a rating, a correction (an edited answer), or both"
"""The answer to chat feedback that says nothing (the server's /v1/feedback and the studio's review)."""


def unknown_label(label: str, labels: list[str]) -> str:
    """The answer to label feedback with a label the model does not know."""
    return f"unknown label '{label}'; the model knows: {', '.join(labels)}"


class FeedbackStore:
    """Opened on the first write, so that a server that gets no feedback leaves no file behind."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(SCHEMA)
            db.execute(CHAT_SCHEMA)
            self._db = db
        return self._db

    def add(self, text: str, label: str, prediction: str | None = None, text_pair: str | None = None,
            model: str | None = None) -> int:
        return self._insert(
            "INSERT INTO feedback (created, text, text_pair, prediction, label, model) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), text, text_pair, prediction, label, model))

    def add_chat(self, messages: str, response: str | None, rating: int | None, correction: str | None,
                 model: str | None = None) -> int:
        """Feedback on a generated answer: the conversation (JSON), the answer, a rating and/or an edited answer."""
        return self._insert(
            "INSERT INTO chat_feedback (created, messages, response, rating, correction, model) "
            "VALUES (?, ?, ?, ?, ?, ?)", (time.time(), messages, response, rating, correction, model))

    def _insert(self, sql: str, values: tuple) -> int:
        """One row, committed (synchronous=FULL: on disk) before its id is returned."""
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute(sql, values)
            db.execute("COMMIT")
            return int(cur.lastrowid)

    def review_chat(self, row: int, **fields) -> bool:
        """A person's review of a stored answer: `rating` and/or `correction` set on row `row` (what the preference
        task reads: data/preferences.py read_feedback_store). False when there is no such row."""
        unknown = set(fields) - {"rating", "correction"}
        if unknown or not fields:
            raise ValueError(f"review_chat sets rating and correction, got {sorted(fields)}")
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute(f"UPDATE chat_feedback SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                             (*fields.values(), row))
            db.execute("COMMIT")
            return cur.rowcount == 1

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
