"""The bundled sentiment sets (vaderSentiment ground truth): mr, amazon, tweets, nyt."""

from __future__ import annotations

from ..assets import VADER_FILES, vader_file
from ..errors import DataError
from .readers import Example

THRESHOLD = 0.5
LABELS = ("negative", "positive")


def is_bundled(name: str | None) -> bool:
    return name in VADER_FILES


def read_bundled(name: str) -> list[Example]:
    """Binary sentiment: mean rating > +0.5 is positive, < -0.5 negative, the rest dropped."""
    path = vader_file(name)
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise DataError(path, number, None, "expected id<TAB>score<TAB>text")
        _, score, text = parts
        value = float(score)
        if abs(value) <= THRESHOLD or not text.strip():
            continue
        out.append(Example(text=text.strip(), label=LABELS[value > 0], path=str(path), line=number))
    return out
