"""EDA-style text augmentation of training examples (Wei & Zou 2019), reproducible by seed.

Synonyms come from the small lexicon bundled with the package (`lexicon/synonyms.txt`, see its header):
no WordNet installs offline from a wheel, and EDA's gains come mostly from the swap/delete/insert noise.
"""

from __future__ import annotations

import random
from dataclasses import replace
from functools import lru_cache
from importlib import resources

from .readers import Example


@lru_cache(maxsize=1)
def synonym_lexicon() -> dict[str, tuple[str, ...]]:
    """word → its synonyms (the other words of every group it is in)."""
    text = resources.files("tunecraft.data").joinpath("lexicon/synonyms.txt").read_text(encoding="utf-8")
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        group = [w.strip() for w in line.split(",") if w.strip()]
        for word in group:
            out.setdefault(word, set()).update(w for w in group if w != word)
    return {w: tuple(sorted(s)) for w, s in out.items()}


def _synonyms(word: str) -> tuple[str, ...]:
    found = synonym_lexicon().get(word.lower(), ())
    if word[:1].isupper():
        found = tuple(w.capitalize() for w in found)
    return found


def synonym_replace(words: list[str], n: int, rng: random.Random) -> list[str]:
    words = list(words)
    candidates = [i for i, w in enumerate(words) if _synonyms(w)]
    rng.shuffle(candidates)
    for i in candidates[:n]:
        words[i] = rng.choice(_synonyms(words[i]))
    return words


def random_insert(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Insert a synonym of a random word (one that has synonyms) at a random position, n times."""
    words = list(words)
    for _ in range(n):
        candidates = [w for w in words if _synonyms(w)]
        if not candidates:
            break
        words.insert(rng.randrange(len(words) + 1), rng.choice(_synonyms(rng.choice(candidates))).lower())
    return words


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    words = list(words)
    if len(words) < 2:
        return words
    for _ in range(n):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return words


def random_delete(words: list[str], p: float, rng: random.Random) -> list[str]:
    """Delete each word with probability p; never leave the text empty."""
    if len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() >= p]
    return kept or [rng.choice(words)]


OPS = {"synonym": synonym_replace, "insert": random_insert, "swap": random_swap}


def augment_text(text: str, ops: list[str], alpha: float, rng: random.Random) -> str:
    """One augmented copy: one operation, drawn from `ops`, applied to about alpha of the words (EDA draws
    one operation per copy too)."""
    words = text.split()
    op = rng.choice(ops)
    if op == "delete":
        out = random_delete(words, alpha, rng)
    else:
        out = OPS[op](words, max(1, round(alpha * len(words))), rng)
    return " ".join(out)


def augment_examples(examples: list[Example], cfg, seed: int) -> list[Example]:
    """The examples followed by cfg.copies augmented copies of each (same label); the same seed gives the
    same output. Apply to the training split only."""
    if not cfg.copies:
        return examples
    rng = random.Random(cfg.seed if cfg.seed is not None else seed)
    extra = []
    for example in examples:
        for _ in range(cfg.copies):
            extra.append(replace(example, text=augment_text(example.text, list(cfg.ops), cfg.alpha, rng)))
    return examples + extra
