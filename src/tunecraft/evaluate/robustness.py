"""`tunecraft robustness RUN`: accuracy out of domain, under perturbations of the test split, and calibration.

Writes RUN/robustness/{robustness.json, robustness.md, reliability.png} and adds a "Robustness" section to
the run's report.md/report.html.
"""

from __future__ import annotations

import logging
import random
import string
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import AugmentConfig, DataConfig, build_config
from ..data import LabelMap, load_classification_data
from ..data.bundled import LANGUAGE, is_bundled, read_bundled
from ..data.long_documents import per_document
from ..data.readers import Example
from ..errors import TunecraftError
from ..io import write_json, write_text
from ..report import markdown, plt, save_figure
from ..runs import CONFIG, RunFolder
from ..runtime.inference import predict_logits
from ..runtime.precision import resolve as resolve_precision
from ..tasks import build_task
from ..trained import load_trained
from .report import write_report

logger = logging.getLogger(__name__)

def same_language_sets(dataset: str | None) -> list[str]:
    """The default out-of-domain sets: the other bundled sets in the same language as the run's own."""
    if not is_bundled(dataset):
        return []
    return [s for s, lang in LANGUAGE.items() if lang == LANGUAGE[dataset] and s != dataset]


def _limit(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """A seeded sample of n examples, in their original order (all of them when n is None)."""
    if n is None or n >= len(examples):
        return examples
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), n))]

# -- perturbations: (text, rng) -> perturbed text, or None when the example does not apply ----------------

KEYBOARD = dict(zip("qwertyuiopasdfghjklzxcvbnm", [
    "wa", "qes", "wrd", "etf", "ryg", "tuh", "yij", "uok", "ipl", "ol", "qsz", "awdx", "sefc", "drgv", "fthb",
    "gyjn", "hukm", "jil", "kop", "asx", "zdc", "xfv", "cgb", "vhn", "bjm", "nk"]))


def _pick(words: list[str], fraction: float, rng: random.Random, ok: Callable[[str], bool]) -> list[int]:
    candidates = [i for i, w in enumerate(words) if ok(w)]
    return sorted(rng.sample(candidates, min(len(candidates), max(1, round(fraction * len(words))))))


def typos(text: str, rng: random.Random, fraction: float = 0.1) -> str | None:
    """About `fraction` of the words of 4+ letters get one typo: swap, drop, double or a keyboard neighbour."""
    words = text.split()
    chosen = _pick(words, fraction, rng, lambda w: len(w) >= 4 and w.isalpha())
    if not chosen:
        return None
    for i in chosen:
        w, j = words[i], rng.randrange(len(words[i]) - 1)
        kind = rng.choice(["swap", "drop", "double", "neighbour"])
        if kind == "swap" and w[j] == w[j + 1]:  # swapping equal letters would change nothing
            kind = "neighbour"
        if kind == "swap":
            w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        elif kind == "drop":
            w = w[:j] + w[j + 1:]
        elif kind == "double":
            w = w[:j] + w[j] + w[j:]
        else:
            c = w[j].lower()
            w = w[:j] + rng.choice(KEYBOARD.get(c, c)) + w[j + 1:]
        words[i] = w
    return " ".join(words)


def casing(text: str, rng: random.Random) -> str | None:
    """Upper-case the whole text (an uncased model sees no change: a check of that, too)."""
    upper = text.upper()
    return upper if upper != text else None


def punctuation(text: str, rng: random.Random) -> str | None:
    """Remove every punctuation character."""
    stripped = " ".join(text.translate(str.maketrans("", "", string.punctuation)).split())
    return stripped if stripped and stripped != text else None


def word_drop(text: str, rng: random.Random, fraction: float = 0.1) -> str | None:
    """Drop about `fraction` of the words (at least one; texts of one word are left out)."""
    words = text.split()
    if len(words) < 2:
        return None
    dropped = set(_pick(words, fraction, rng, lambda w: True))
    return " ".join(w for i, w in enumerate(words) if i not in dropped)


CONTRACTIONS = {"isn't": "is", "aren't": "are", "wasn't": "was", "weren't": "were", "doesn't": "does",
                "don't": "do", "didn't": "did"}
NEGATIONS = {"not", "never", "no", "cannot", "nothing", "nobody", "neither", "nor", *CONTRACTIONS,
             "can't", "won't", "couldn't", "wouldn't", "shouldn't", "hasn't", "haven't"}
COPULAS = {"is", "are", "was", "were"}
CONTRAST = {"but", "although", "though", "yet", "however", "while", "despite"}


def negate(text: str, rng: random.Random) -> str | None:
    """Flip the polarity of simple sentences: remove the single negation ('not', "isn't" → 'is', ...), or
    insert 'not' after the single copula of a sentence with no negation. Sentences with a contrast word,
    several negations or several copulas are left out. A heuristic: its labels are flipped, not re-rated."""
    words = text.split()
    lower = [w.lower().strip(string.punctuation.replace("'", "")) for w in words]
    if CONTRAST & set(lower):
        return None
    negs = [i for i, w in enumerate(lower) if w in NEGATIONS]
    if len(negs) == 1:
        i, w = negs[0], lower[negs[0]]
        if w == "not":
            return " ".join(words[:i] + words[i + 1:])
        if w in CONTRACTIONS:
            return " ".join(words[:i] + [CONTRACTIONS[w]] + words[i + 1:])
        return None
    copulas = [i for i, w in enumerate(lower) if w in COPULAS]
    if not negs and len(copulas) == 1:
        i = copulas[0]
        return " ".join(words[: i + 1] + ["not"] + words[i + 1:])
    return None


PERTURBATIONS: dict[str, Callable[[str, random.Random], str | None]] = {
    "typos": typos, "casing": casing, "punctuation": punctuation, "word-drop": word_drop, "negation": negate}
POLAR_PAIRS = ({"negative", "positive"}, {"neg", "pos"})


def flipped_labels(labels: list[str]) -> dict[str, str] | None:
    """label → its opposite, when the labels are a sentiment polarity pair; else None (no negation test)."""
    names = {name.lower(): name for name in labels}
    for pair in POLAR_PAIRS:
        if set(names) == pair:
            a, b = sorted(pair)
            return {names[a]: names[b], names[b]: names[a]}
    return None


def perturb(examples: list[Example], name: str, labels: list[str], seed: int = 0) -> list[tuple[int, Example]]:
    """(index into `examples`, perturbed example) for every example the perturbation applies to."""
    flip = flipped_labels(labels) if name == "negation" else None
    if name == "negation" and flip is None:
        return []
    rng = random.Random(f"{seed}-{name}")
    out = []
    for i, ex in enumerate(examples):
        text = PERTURBATIONS[name](ex.text, rng)
        if text is None:
            continue
        label = flip[ex.label] if flip else ex.label
        out.append((i, Example(text=text, label=label, text_pair=ex.text_pair, path=ex.path, line=ex.line)))
    return out


# -- calibration --------------------------------------------------------------------------------------

def expected_calibration_error(probs: torch.Tensor, labels: list[int], bins: int = 15) -> dict:
    """ECE with `bins` equal-width confidence bins: sum over bins of |B|/n * |accuracy(B) - confidence(B)|,
    confidence being the top class probability. Also returns the per-bin table for the reliability plot."""
    conf, pred = probs.max(dim=-1)
    correct = (pred == torch.tensor(labels)).float()
    edges = torch.linspace(0, 1, bins + 1)
    table, ece, n = [], 0.0, len(labels)
    for b in range(bins):
        lo, hi = edges[b].item(), edges[b + 1].item()
        inside = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        count = int(inside.sum())
        if count:
            acc, mean_conf = correct[inside].mean().item(), conf[inside].mean().item()
            ece += count / n * abs(acc - mean_conf)
            table.append({"low": lo, "high": hi, "count": count, "accuracy": acc, "confidence": mean_conf})
    return {"ece": ece, "bins": bins, "table": table}


def reliability_plot(calibration: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    width = 1 / calibration["bins"]
    rows = calibration["table"]
    ax.bar([r["low"] for r in rows], [r["accuracy"] for r in rows], width=width, align="edge",
           edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {calibration['ece']:.3f})")
    ax.legend(loc="upper left")
    return save_figure(fig, path)


# -- the command --------------------------------------------------------------------------------------

def _saved_data(run: Path) -> DataConfig:
    """The run's data settings, read through the schema, without augmentation (the test split is scored)."""
    folder = RunFolder(run)
    if not folder.has_config():
        raise TunecraftError(f"{run}: no {CONFIG}; robustness needs a run folder made by tunecraft train")
    return folder.config(build_config).data.model_copy(update={"augment": AugmentConfig()})


def robustness(run: str | Path, ood: list[str] | None = None, perturbations: list[str] | None = None,
               seed: int = 0, max_examples: int | None = None, bins: int = 15, batch_size: int = 64,
               precision: str = "auto") -> dict:
    """Evaluate a run on out-of-domain sets, perturbed copies of its test split, and calibration.

    ood: bundled set names or files (default: the other bundled sentiment sets when the run trained on
    one); perturbations: names from PERTURBATIONS (default: all); max_examples: cap every set (for tests)."""
    run = Path(run)
    trained = load_trained(run)
    meta = trained.meta
    if "robustness" not in build_task(meta).OFFERS:
        raise TunecraftError(f"{run}: robustness reports are for classification runs (this one is {meta['task']})")
    data_cfg = _saved_data(run)
    test = load_classification_data(data_cfg).test
    if not test:
        raise TunecraftError(f"{run}: the run has no test split to perturb")
    test = _limit(test, max_examples, seed)
    ood, note = _default_ood(ood, data_cfg)
    names = list(PERTURBATIONS) if perturbations is None else perturbations
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise TunecraftError(f"unknown perturbation(s) {', '.join(unknown)}; choose from {', '.join(PERTURBATIONS)}")
    scorer = _Scorer(trained, batch_size, resolve_precision(precision)[1])
    clean_logits, clean_labels = scorer.logits(test)
    clean_correct = (clean_logits.argmax(-1) == torch.tensor(clean_labels)).float()
    result: dict = {"run": str(run), "seed": seed, "test_examples": len(test),
                    "clean": {"accuracy": float(clean_correct.mean()), "samples": len(test)},
                    "ood": {}, "perturbations": {}, **({"ood_note": note} if note else {})}
    for name in ood:
        examples = read_bundled(name) if is_bundled(name) else load_ood_file(name, meta)
        examples = _limit(examples, max_examples, seed)
        accuracy = scorer.accuracy(examples)
        result["ood"][name] = {"accuracy": accuracy, "samples": len(examples),
                               "drop": result["clean"]["accuracy"] - accuracy}
    for name in names:
        result["perturbations"][name] = _perturbed(scorer, test, name, clean_correct, seed)
    result["calibration"] = expected_calibration_error(torch.softmax(clean_logits, -1), clean_labels, bins)
    return _write(run, result)


def _default_ood(ood: list[str] | None, data_cfg: DataConfig) -> tuple[list[str], str | None]:
    """The sets asked for, else the run's default ones; and the note said when it has none."""
    if ood is not None:
        return ood, None
    # a run on the user's own file has no default: its config.yaml names no bundled set (an older one's
    # `dataset: mr` beside `train:` was the field's default, not the data)
    ood = [] if data_cfg.train else same_language_sets(data_cfg.dataset)
    if ood:
        return ood, None
    note = (f"no out-of-domain sets: the run trained on {data_cfg.train or data_cfg.dataset}, which has "
            "no default ones; pass --ood FILE (same columns) to add some. Perturbations and "
            "calibration are scored on its test split")
    logger.warning(note)
    return ood, note


class _Scorer:
    """A trained classifier's logits per document, each set encoded as in training (cut or windowed)."""

    def __init__(self, trained, batch_size: int, dtype):
        self.trained, self.batch_size, self.dtype = trained, batch_size, dtype
        self.task, self.label_map = build_task(trained.meta), LabelMap(trained.meta["labels"])

    def logits(self, examples: list[Example]) -> tuple[torch.Tensor, list[int]]:
        trained = self.trained
        enc = self.task.encode(trained.tokenizer, examples, trained.meta, self.label_map)
        return per_document(predict_logits(trained.model, enc, self.batch_size, trained.pad_id,
                                           torch.device("cpu"), self.dtype), enc)

    def accuracy(self, examples: list[Example]) -> float:
        logits, labels = self.logits(examples)
        return float((logits.argmax(-1) == torch.tensor(labels)).float().mean()) if labels else float("nan")


def _perturbed(scorer: _Scorer, test: list[Example], name: str, clean_correct: torch.Tensor, seed: int) -> dict:
    """Accuracy on the perturbed copies of the test examples the perturbation applies to, beside theirs."""
    pairs = perturb(test, name, scorer.label_map.labels, seed)
    if not pairs:
        return {"samples": 0, "accuracy": None, "clean_accuracy": None, "drop": None}
    acc = scorer.accuracy([ex for _, ex in pairs])
    clean = float(clean_correct[[i for i, _ in pairs]].mean())  # the same examples, unperturbed
    return {"samples": len(pairs), "accuracy": acc, "clean_accuracy": clean, "drop": clean - acc,
            "examples": [{"before": test[i].text, "after": ex.text, "label": ex.label} for i, ex in pairs[:3]]}


def _write(run: Path, result: dict) -> dict:
    """RUN/robustness/{robustness.json, robustness.md, reliability.png}, and the section in the run's report."""
    out = run / "robustness"
    out.mkdir(exist_ok=True)
    image = reliability_plot(result["calibration"], out / "reliability.png")
    write_json(out / "robustness.json", result)
    sections = robustness_sections(result, image)
    md = write_text(out / "robustness.md", markdown(f"Robustness of {run}", sections, out))
    folder = RunFolder(run)
    if folder.is_finished():
        summary = folder.summary()
        task = build_task(summary["task"])
        result["report"] = str(write_report(run, summary, folder.metrics(), task, extra_sections=sections))
    result["markdown"] = str(md)
    return result


def load_ood_file(path: str, meta: dict) -> list[Example]:
    from ..data.readers import Columns, read_examples

    if not Path(path).exists():
        raise TunecraftError(f"out-of-domain set '{path}' is neither a bundled dataset ({', '.join(LANGUAGE)}) "
                             "nor a file")
    return read_examples(path, Columns(meta["text_column"], meta["label_column"], meta["text_pair_column"]))


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def robustness_sections(result: dict, image: Path | None = None) -> list[tuple[str, list]]:
    """Report sections: accuracy and drop per out-of-domain set and per perturbation, and calibration."""
    clean = result["clean"]["accuracy"]
    rows = [("clean test split", result["clean"]["samples"], _pct(clean), "", "")]
    rows += [(f"out of domain: {name}", r["samples"], _pct(r["accuracy"]), _pct(clean), _pct(r["drop"]))
             for name, r in result["ood"].items()]
    rows += [(f"perturbed: {name}", r["samples"], _pct(r["accuracy"]), _pct(r["clean_accuracy"]), _pct(r["drop"]))
             for name, r in result["perturbations"].items()]
    header = ["set", "examples", "accuracy %", "reference accuracy % (test split; same examples unperturbed)",
              "drop (points)"]
    blocks: list = [("table", header, rows)]
    if result.get("ood_note"):
        blocks.append(("table", ["out-of-domain sets"], [(result["ood_note"],)]))
    cal = result["calibration"]
    blocks.append(("table", ["calibration", "value"],
                   [("expected calibration error (%)", _pct(cal["ece"])), ("confidence bins", cal["bins"])]))
    if image is not None:
        blocks.append(("image", image))
    return [("Robustness", blocks)]
