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


class FeedbackStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)
        self._db.execute(CHAT_SCHEMA)

    def add(self, text: str, label: str, prediction: str | None = None, text_pair: str | None = None,
            model: str | None = None) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute(
                "INSERT INTO feedback (created, text, text_pair, prediction, label, model) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), text, text_pair, prediction, label, model),
            )
            self._db.execute("COMMIT")
            return int(cur.lastrowid)

    def add_chat(self, messages: str, response: str | None, rating: int | None, correction: str | None,
                 model: str | None = None) -> int:
        """Feedback on a generated answer: the conversation (JSON), the answer, a rating and/or an edited answer."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute(
                "INSERT INTO chat_feedback (created, messages, response, rating, correction, model) "
                "VALUES (?, ?, ?, ?, ?, ?)", (time.time(), messages, response, rating, correction, model))
            self._db.execute("COMMIT")
            return int(cur.lastrowid)

    def close(self) -> None:
        with self._lock:
            self._db.close()
