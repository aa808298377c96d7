"""Human ratings → preference pairs: the bundled `<set>-pairs` sets (mr-pairs, amazon-pairs, tweets-pairs,
nyt-pairs) built from the vaderSentiment sentences and their mean human sentiment rating (−4..+4).

A pair is two sentences of the same split whose ratings differ by at least MIN_GAP; the more positive one is
`chosen`, the rating gap is the pair's `margin`, and there is no prompt (the reward scores a sentence alone).
Sentences, not pairs, are split (test, validation, the rest train; by a seeded permutation of the distinct
texts), so no held-out sentence appears in any training pair.
"""

from __future__ import annotations

import bisect
import random

from .bundled import read_vader_ratings
from .dataset import seeded_split
from .preferences import PreferencePair

MIN_GAP = 1.0
"""The smallest rating gap of a pair, in rating points (the raters' mean on −4..+4)."""
PARTNERS = 2
"""Partners drawn for each sentence of a split (pairs are de-duplicated, so a sentence is in about 2×PARTNERS)."""

BUNDLED_PAIRS = {f"{name}-pairs": name for name in ("mr", "amazon", "tweets", "nyt")}
"""Bundled pair set → the vaderSentiment set it is built from."""


def rated_sentences(name: str) -> list[tuple[str, float, str, int]]:
    """Each distinct text of the set once (its first line): (text, rating, file, line)."""
    seen: dict[str, tuple[str, float, str, int]] = {}
    for text, rating, path, line in read_vader_ratings(name):
        seen.setdefault(text, (text, rating, str(path), line))
    return list(seen.values())


def pairs_of(sentences: list[tuple[str, float, str, int]], seed: int, min_gap: float = MIN_GAP,
             partners: int = PARTNERS) -> list[PreferencePair]:
    """Pairs within one split: for each sentence, `partners` others drawn at random (seeded) among those rated
    at least `min_gap` away; the higher rated is chosen. Each unordered pair once, in the order drawn."""
    rng = random.Random(seed)
    ranked = sorted(sentences, key=lambda s: s[1])
    ratings = [s[1] for s in ranked]
    seen: set[tuple[int, int]] = set()
    out = []
    for i, (_, rating, _, _) in enumerate(ranked):
        below = bisect.bisect_right(ratings, rating - min_gap)  # ranked[:below] are low enough
        above = bisect.bisect_left(ratings, rating + min_gap)  # ranked[above:] are high enough
        candidates = below + len(ranked) - above
        for _ in range(min(partners, candidates)):
            k = rng.randrange(candidates)
            j = k if k < below else above + k - below
            key = (min(i, j), max(i, j))
            if key in seen:
                continue
            seen.add(key)
            low, high = ranked[key[0]], ranked[key[1]]
            out.append(PreferencePair("", high[0], low[0], round(high[1] - low[1], 4), high[2], high[3]))
    rng.shuffle(out)
    return out


def bundled_pairs_split(name: str, seed: int, fractions: tuple[float, float]) -> dict[str, list[PreferencePair]]:
    """A bundled pair set's fixed split (`fractions`: validation, test): sentences split first, pairs built
    within each split."""
    test, validation, train = seeded_split(rated_sentences(BUNDLED_PAIRS[name]), [fractions[1], fractions[0]], seed)
    return {split: pairs_of(part, seed + offset)
            for offset, (split, part) in enumerate((("train", train), ("validation", validation), ("test", test)))}


def describe_pairs(name: str) -> str:
    return (f"vaderSentiment '{BUNDLED_PAIRS[name]}' sentences paired by human rating: the more positive chosen, "
            f"rating gap >= {MIN_GAP} as margin, {PARTNERS} partners per sentence, split by sentence")
