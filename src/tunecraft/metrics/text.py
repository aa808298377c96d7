"""Metrics of generated text against a reference: exact match and ROUGE-L (LCS F-measure), written here
because both are a few lines (the `rouge-score` package would add nltk and absl for the same number)."""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when equal after case folding and collapsing whitespace."""
    return float(normalise(prediction) == normalise(reference))


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation-free tokens; each CJK character is a token of its own."""
    text = _CJK.sub(lambda m: f" {m.group()} ", normalise(text))
    return re.findall(r"\w+", text)


def lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (Lin 2004, beta = 1) over words(): 2PR / (P + R) of the longest common subsequence."""
    p, r = words(prediction), words(reference)
    if not p or not r:
        return float(p == r)
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)
