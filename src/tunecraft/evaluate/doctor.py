"""The run doctor: fast checks on a run's data and base model before training, and on its outcome after it.

A reader of the data and of the run folder (predictions.jsonl, metrics.jsonl, summary.json), not a second
pipeline: `train()` hands it the splits it loaded and encoded, `tunecraft doctor RECIPE|RUN` does the same
through the same functions. What a check knows about a task (how to read an example's text, its classes,
a prediction row) is registered here by task name; tasks import nothing of this module, and a task without
an entry gets the checks that need no such knowledge (overlap, tokenizer fit, truncation, the loss, baselines).

Each finding has a severity (`warn`: the result is probably misleading or poor; `info`: a number worth
knowing), a one-line message with its numbers, and what to do (a recipe key to set, a base model to try).
The doctor never blocks a run: data that is unusable (no text, one label) is refused by the readers.
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data.long_documents import long_texts
from ..data.ner import tags_to_spans
from ..runs import RunFolder
from .baselines import below_baseline

logger = logging.getLogger(__name__)

IMBALANCE_RATIO = 10.0
"""Largest over smallest training class: from about 10:1 on, an unweighted cross-entropy fine-tune tends to
stop predicting the small classes (#36: a 50-class set where the full fine-tune predicted 24 of 50 classes)."""
TINY_CLASS = 20
"""Training examples below which a class (or entity type) is too small to learn reliably, and too small for its
validation/test share to score it with any precision (10 % of 20 is 2 examples)."""
UNKNOWN_RATE = 0.05
"""Share of the data's sub-word tokens that are the tokenizer's unknown token: English text through an English
WordPiece vocabulary has well under 0.1 %; above 5 % the model cannot read a noticeable part of the data."""
FERTILITY_PER_WORD = 3.0
"""Sub-word tokens per whitespace word: English WordPiece/BPE vocabularies give about 1.2-1.5; above 3 the
vocabulary spells the words out in pieces (a language it was not built for). A character-level tokenizer sits at
the mean word length and is flagged as info only (it is built to read characters)."""
FERTILITY_PER_CHARACTER = 2.0
"""Tokens per character for unspaced scripts (CJK, Thai): a vocabulary that knows the script gives about 1 (one
token per character or less); above 2 it falls back to bytes."""
UNSPACED_SHARE = 0.3
"""Share of a text's characters in an unspaced script from which fertility is counted per character."""
TOKENIZER_SAMPLE = 2000
"""Training texts tokenized for the unknown rate and fertility: enough for a rate to ±1 %, fast on any tokenizer."""
MAX_POSITIONS = 512
"""The longest max_length the doctor proposes: BERT-family encoders have 512 positions; past it, windows."""
DIVERGENCE_FACTOR = 2.0
"""The last logged training loss above this many times the lowest logged one: the run diverged (a healthy run's
loss goes down and wobbles; it does not double)."""

OVERLAP_SHARE = 0.01
"""Share of a validation/test split also found in an earlier split from which the overlap is a warning: below 1 %
it moves a score by less than the seed-to-seed spread of a fine-tune (an info then)."""

SEVERITIES = ("warn", "info")
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_PUNCTUATION_OR_SPACE = re.compile(r"[\W_]+", re.UNICODE)


@dataclass
class Finding:
    check: str
    """What was checked: imbalance, tiny_classes, overlap, tokenizer, truncation, never_predicted, baseline, loss."""
    severity: str
    message: str
    advice: str
    numbers: dict = field(default_factory=dict)
    stage: str = "data"
    """"data": before training (the splits, the tokenizer); "outcome": after it (the run folder)."""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TaskView:
    """What the checks need to know of one task's data and predictions."""

    text: Callable[[object], str | None]
    classes: Callable[[list], Counter] | None = None
    """The class (or entity type) counts of a split."""
    kind: str = "class"
    kinds: str = "classes"
    balance_advice: str = ""
    predicted: Callable[[dict], tuple[list[str], list[str]]] | None = None
    """A predictions.jsonl row → (its gold classes, its predicted classes)."""


def _plain_text(example) -> str | None:
    text = getattr(example, "text", None)
    return text if isinstance(text, str) else None


def _pair_text(example) -> str:
    return example.text if example.text_pair is None else f"{example.text}\n{example.text_pair}"


def _entity_types(sentences: list) -> Counter:
    return Counter(span.type for s in sentences if s.tags for span in tags_to_spans(s.tags)[0])


VIEWS: dict[str, TaskView] = {
    "classification": TaskView(
        _pair_text, lambda examples: Counter(e.label for e in examples), "class", "classes",
        "set train.class_weights: balanced (or train.sampler: balanced)",
        lambda row: ([row["label"]] if row.get("label") is not None else [], [row["prediction"]])),
    "token_classification": TaskView(
        _plain_text, _entity_types, "entity type", "entity types",
        "add training sentences with the rare types (data.max_train_samples, if it caps the split) or leave them "
        "out of the tags",
        lambda row: ([e["type"] for e in row.get("entities") or []],
                     [e["type"] for e in row.get("predicted_entities") or []])),
}
"""Registered by task name; `register` adds a task's own."""


def register(task: str, view: TaskView) -> None:
    VIEWS[task] = view


def _view(task: str) -> TaskView:
    return VIEWS.get(task, TaskView(_plain_text))


# -- before training: the data and the base model ---------------------------------------------------------------

def data_findings(task: str, splits: dict[str, list], tokenizer, encoded: dict, max_length: int) -> list[Finding]:
    """The fast checks: `splits` name → examples (train, validation, test), `encoded` name → the task's
    encoding of that split (for the lengths), `tokenizer` the base model's."""
    view = _view(task)
    found = balance_findings(view, splits) if view.classes else []
    texts = {name: [t for t in map(view.text, examples) if t] for name, examples in splits.items() if examples}
    found += overlap_findings(texts)
    if tokenizer is not None and texts.get("train"):
        found += tokenizer_findings(tokenizer, texts["train"][:TOKENIZER_SAMPLE])
    found += truncation_findings(encoded, max_length)
    return found


def balance_findings(view: TaskView, splits: dict[str, list]) -> list[Finding]:
    counts = view.classes(splits.get("train") or [])
    if len(counts) < 2:
        return []
    ranked = counts.most_common()
    (big, most), (small, least) = ranked[0], ranked[-1]
    out = []
    ratio = most / max(least, 1)
    if ratio >= IMBALANCE_RATIO:
        out.append(Finding("imbalance", "warn", f"training {view.kinds} are imbalanced {ratio:.1f}:1 ('{big}' "
                           f"{most:,} examples, '{small}' {least:,})", view.balance_advice,
                           {"ratio": round(ratio, 2), "largest": [big, most], "smallest": [small, least]}))
    tiny = {name: n for name, n in ranked if n < TINY_CLASS}
    if tiny:
        shown = ", ".join(f"'{k}' {n}" for k, n in list(tiny.items())[-5:])
        out.append(Finding("tiny_classes", "warn", f"{len(tiny)} of {len(counts)} {view.kinds} have fewer than "
                           f"{TINY_CLASS} training examples ({shown})", view.balance_advice
                           or "add examples of them", {"classes": tiny, "threshold": TINY_CLASS}))
    missing = sorted(set(counts) - set(view.classes(splits.get("test") or []))) if splits.get("test") else []
    if missing:
        out.append(Finding("absent_classes", "info", f"{len(missing)} training {view.kinds} have no test "
                           f"example: {', '.join(missing[:5])}", "a larger test split (data.split.test) scores them",
                           {"classes": missing}))
    return out


def normalise(text: str) -> str:
    """The text a near-duplicate shares: NFKC (full-width → ASCII), casefolded, runs of punctuation and white
    space made one space."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCTUATION_OR_SPACE.sub(" ", folded).strip()


def overlap_findings(texts: dict[str, list[str]]) -> list[Finding]:
    """Texts of a later split (validation, test) that also occur in an earlier one, exactly or once normalised."""
    out = []
    names = [n for n in ("train", "validation", "test") if texts.get(n)]
    for i, later in enumerate(names):
        for earlier in names[:i]:
            seen, seen_norm = set(texts[earlier]), {normalise(t) for t in texts[earlier]}
            exact = sum(t in seen for t in texts[later])
            near = sum(t not in seen and normalise(t) in seen_norm for t in texts[later])
            if exact + near:
                total = len(texts[later])
                warn = (exact + near) / total >= OVERLAP_SHARE
                out.append(Finding(
                    "overlap", "warn" if warn else "info", f"{exact + near:,} of {total:,} {later} texts also "
                    f"appear in {earlier} ({exact:,} exact, {near:,} near-duplicates once case, width, spaces and "
                    f"punctuation are normalised)" + (f": the {later} score is inflated" if warn else ""),
                    f"de-duplicate the data before it is split, or drop those texts from the {earlier} data",
                    {"split": later, "against": earlier, "exact": exact, "near": near, "texts": total}))
    return out


def _unspaced(text: str) -> bool:
    letters = [c for c in text if not c.isspace()]
    return bool(letters) and len(_UNSPACED.findall(text)) / len(letters) >= UNSPACED_SHARE


def tokenizer_findings(tokenizer, texts: list[str]) -> list[Finding]:
    """The unknown-token rate and the fertility (tokens per word, per character for unspaced scripts)."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    tokens = sum(len(row) for row in ids)
    unknown = sum(t == unk for row in ids for t in row) if unk is not None else 0
    unspaced = sum(map(_unspaced, texts)) > len(texts) / 2
    units = sum(len(t.replace(" ", "")) if unspaced else len(t.split()) for t in texts)
    rate, fertility = unknown / max(tokens, 1), tokens / max(units, 1)
    unit = "character" if unspaced else "word"
    limit = FERTILITY_PER_CHARACTER if unspaced else FERTILITY_PER_WORD
    chars = _char_level(tokenizer)
    numbers = {"unknown_rate": round(rate, 4), "fertility": round(fertility, 3), "per": unit,
               "texts": len(texts), "tokens": tokens}
    message = (f"{len(texts):,} training texts through the base model's tokenizer: {rate:.1%} unknown tokens, "
               f"{fertility:.2f} tokens per {unit}")
    if rate > UNKNOWN_RATE or (fertility > limit and not chars):
        return [Finding("tokenizer", "warn", message + ": the base model does not fit the data's language",
                        "another model.base whose vocabulary covers the language, or a scratch:<size> base with a "
                        "tokenizer trained on it (`tunecraft tokenizer`)", numbers)]
    return [Finding("tokenizer", "info", message, "", numbers)]


def _char_level(tokenizer) -> bool:
    """A tokenizer whose vocabulary is single characters (model.tokenizer: chars)."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    plain = [t for t in vocab if not (t.startswith("[") and t.endswith("]")) and not t.startswith("<")]
    return bool(plain) and sum(len(t) == 1 for t in plain) / len(plain) > 0.95


def truncation_findings(encoded: dict, max_length: int) -> list[Finding]:
    """Texts longer than max_length, per split (data/long_documents.py counts them)."""
    out = []
    for name, what in (("train", "training texts"), ("validation", "validation texts"), ("test", "test texts")):
        found = long_texts(encoded.get(name), what, max_length)
        if found is None:
            continue
        numbers = {k: found[k] for k in ("long", "texts", "median", "max")}
        advice = ""
        if found["cut"] and found["max"] <= MAX_POSITIONS:
            advice = f"model.max_length={_round_up(found['max'])} or model.long_documents: windows"
        elif found["cut"]:
            advice = f"model.long_documents: windows (the longest is {found['max']:,} tokens)"
        out.append(Finding("truncation", "warn" if found["cut"] else "info", found["message"], advice,
                           {"split": name, **numbers}))
    return out


def _round_up(n: float) -> int:
    return 1 << max(int(math.ceil(math.log2(max(n, 2)))), 1)


# -- after training: the run folder -------------------------------------------------------------------------------

def outcome_findings(task: str, run_dir: Path, summary: dict, headline: tuple[str, ...]) -> list[Finding]:
    """The checks on a finished run: its loss (metrics.jsonl), its predictions (predictions.jsonl) and its
    result against the bar baselines (summary.json's `baselines`)."""
    folder = RunFolder(run_dir)
    found = loss_findings(_jsonl(folder.metrics_file))
    view = _view(task)
    if view.predicted is not None:
        found += never_predicted(view, _jsonl(folder.predictions_file), summary.get("eval_split", "test"))
    return found + baseline_findings(summary.get("metrics") or {}, summary.get("baselines") or [], headline)


def baseline_findings(metrics: dict, baselines: list[dict], headline: tuple[str, ...]) -> list[Finding]:
    """One finding per bar baseline the result falls short of (evaluate/baselines.py `below_baseline`)."""
    out = []
    for b in baselines:
        for line in below_baseline(metrics, [b], headline):
            gaps = {k: [b["metrics"][k], metrics[k]] for k in headline
                    if k in metrics and k in b["metrics"] and metrics[k] < b["metrics"][k]}
            out.append(Finding("baseline", "warn", "the fine-tune is " + line, "try method.name=full, more "
                               "train.epochs or a higher train.lr; with imbalanced classes train.class_weights: "
                               "balanced", {"baseline": b["name"], "baseline_vs_run": gaps}, "outcome"))
    return out


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def loss_findings(history: list[dict]) -> list[Finding]:
    """A NaN/inf loss (the record of a run that failed on it, or a logged one), or a loss that diverged."""
    failed = [r for r in history if r.get("type") == "failed"]
    if failed:
        return [Finding("loss", "warn", f"the run failed: the training loss is {failed[-1].get('loss')} at step "
                        f"{failed[-1]['step']}", "lower train.lr, or train.max_grad_norm",
                        {"step": failed[-1]["step"], "loss": failed[-1].get("loss")}, "outcome")]
    losses = [(r["step"], r["loss"]) for r in history if r.get("type") == "train" and r.get("loss") is not None]
    bad = [(step, loss) for step, loss in losses if not math.isfinite(loss)]
    if bad:
        step, loss = bad[0]
        return [Finding("loss", "warn", f"the training loss is {loss} at step {step}", "lower train.lr, or set "
                        "train.max_grad_norm", {"step": step, "loss": str(loss)}, "outcome")]
    if len(losses) < 2:
        return []
    low_step, low = min(losses, key=lambda s: s[1])
    last_step, last = losses[-1]
    if last > DIVERGENCE_FACTOR * max(low, 1e-12):
        return [Finding("loss", "warn", f"the training loss diverged: {last:.4f} at step {last_step}, "
                        f"{last / max(low, 1e-12):.1f}× its lowest ({low:.4f} at step {low_step})",
                        "lower train.lr (e.g. a tenth of it)", {"last": [last_step, last], "lowest": [low_step, low]},
                        "outcome")]
    return []


def never_predicted(view: TaskView, rows: list[dict], split: str) -> list[Finding]:
    gold, predicted = Counter(), Counter()
    for row in rows:
        g, p = view.predicted(row)
        gold.update(g)
        predicted.update(p)
    missing = {name: n for name, n in sorted(gold.items(), key=lambda kv: -kv[1]) if name not in predicted}
    if not missing:
        return []
    shown = ", ".join(f"'{k}' ({n} {split} examples)" for k, n in list(missing.items())[:5])
    return [Finding("never_predicted", "warn", f"{len(missing)} of {len(gold)} {view.kinds} of the {split} split "
                    f"are never predicted: {shown}", view.balance_advice or "more training data",
                    {"classes": missing, "present": len(gold)}, "outcome")]


# -- findings in the summary, on the terminal ------------------------------------------------------------------

def refresh(summary: dict, run_dir: Path, task: str, headline: tuple[str, ...]) -> list[dict]:
    """summary["doctor"]: its data findings as they were, the outcome findings read again from the run folder
    (after the baselines are scored, a "below baseline" finding joins them)."""
    data = [f for f in summary.get("doctor") or [] if f.get("stage") == "data"]
    summary["doctor"] = data + [f.as_dict() for f in outcome_findings(task, run_dir, summary, headline)]
    return summary["doctor"]


def log_findings(findings: list) -> None:
    for f in findings:
        f = f if isinstance(f, dict) else f.as_dict()
        logger.log(logging.WARNING if f["severity"] == "warn" else logging.INFO, "doctor: %s%s", f["message"],
                   f"; {f['advice']}" if f["advice"] else "")


def format_findings(findings: list) -> list[str]:
    """Terminal lines: a count, then each finding (warnings first) with what to do under it."""
    rows = sorted((f if isinstance(f, dict) else f.as_dict() for f in findings),
                  key=lambda f: SEVERITIES.index(f["severity"]))
    warns = sum(f["severity"] == "warn" for f in rows)
    lines = [f"doctor: {warns} warning{'s' * (warns != 1)}, {len(rows) - warns} note{'s' * (len(rows) - warns != 1)}"]
    for f in rows:
        lines.append(f"  {f['severity']:<5} {f['check']}: {f['message']}")
        if f["advice"]:
            lines.append(f"        → {f['advice']}")
    return lines
