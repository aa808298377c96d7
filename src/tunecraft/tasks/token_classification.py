"""Token classification (NER): data, sub-word label alignment, sliding windows, entity metrics, spans, report."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from transformers import AutoModelForTokenClassification

from ..data import LabelMap
from ..data.dataset import IGNORE, BundledSets, Encoded, TaskData, seeded_split, task_splits
from ..data.ner import BUNDLED_NER, Sentence, normalise, read_ner_file, split_words, tags_to_spans
from ..data.readers import Columns
from ..errors import DataError, TunecraftError
from ..metrics.labels import entity_metrics
from .base import Task, TaskSettings, records


class TokenClassificationSettings(TaskSettings):
    """Token classification (NER): how files are read, the tag scheme, and how sub-tokens are labelled."""

    name: Literal["token_classification"] = "token_classification"
    LEGACY = {"data.ner": ""}
    token_column: int = 0
    """CoNLL files: the column of the tokens (0 = first)."""
    tag_column: int = -1
    """CoNLL files: the column of the tags (-1 = last)."""
    scheme: Literal["bio", "bioes"] = "bio"
    """The tag scheme the model predicts; input files in either scheme are converted to it."""
    on_invalid: Literal["repair", "error"] = "repair"
    """An I-/E- tag with no entity of its type to continue: start a new entity (with a warning), or stop."""
    label_subtokens: Literal["first", "all"] = "first"
    """Train on the first sub-token of each word only, or on all of them (predictions always read the first)."""
    stride: int = Field(32, ge=0)
    """Tokens shared by consecutive windows of a sentence longer than model.max_length."""
    strict: bool = False
    """Score entities in seqeval's strict mode (exact scheme-valid tag sequences) instead of conlleval's."""


COLUMNS = Columns("tokens", "tags", None)


# -- data -------------------------------------------------------------------------------------------------------

def label_map_for(sentences: list[Sentence]) -> LabelMap:
    """O first, then each entity type's tags (B, I, E, S order) by type name."""
    tags = {t for s in sentences for t in s.tags}
    order = {"B": 0, "I": 1, "E": 2, "S": 3}
    rest = sorted(tags - {"O"}, key=lambda t: (t[2:], order[t[0]]))
    labels = ["O", *rest]
    if len(labels) < 2:
        raise TunecraftError("the training data has no entities")
    return LabelMap(labels)


def check_known(sentences: list[Sentence], label_map: LabelMap) -> None:
    known = set(label_map.labels)
    for s in sentences:
        for i, tag in enumerate(s.tags):
            if tag not in known:
                line = s.line + i if s.conll and s.line is not None else s.line
                raise DataError(s.path, line, "tag", f"unknown tag '{tag}' (token '{s.tokens[i]}'); the model "
                                f"knows: {', '.join(label_map.labels)}")


def bundled_split(name: str, seed: int, fractions: tuple[float, float]) -> dict[str, list[Sentence]]:
    """A bundled set's fixed split by sentence (line): test, validation, the rest train."""
    test, validation, train = seeded_split(BUNDLED_NER[name](), [fractions[1], fractions[0]], seed)
    return {"train": train, "validation": validation, "test": test}


def entity_counts(sentences: list[Sentence]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in sentences:
        for span in tags_to_spans(s.tags)[0]:
            counts[span.type] = counts.get(span.type, 0) + 1
    return dict(sorted(counts.items()))


# -- encoding: sub-word alignment and sliding windows -------------------------------------------------------------

def word_logits(logits: list[torch.Tensor], enc: Encoded, sizes: list[int]) -> list[torch.Tensor]:
    """Per sentence, one row of logits per word, read at the word's first sub-token in the window where that
    sub-token sits farthest from a window edge. A word that no window covers (one the tokenizer drops
    entirely, e.g. a lone control character) gets logits that predict O."""
    n_labels = logits[0].shape[-1] if logits else 1
    out = [torch.full((n, n_labels), -1e4) for n in sizes]
    for o in out:
        o[:, 0] = 0.0
    best = [[-1] * n for n in sizes]
    for f, (sample, words) in enumerate(zip(enc.sample, enc.word_ids)):
        previous, length = None, len(words)
        for pos, w in enumerate(words):
            if w is not None and w != previous:
                margin = min(pos, length - 1 - pos)
                if margin > best[sample][w]:
                    best[sample][w] = margin
                    out[sample][w] = logits[f][pos]
            previous = w
    return out


# -- training -------------------------------------------------------------------------------------------------

def _predicted_tags(per_word: list[torch.Tensor], labels: list[str]) -> list[list[str]]:
    return [[labels[i] for i in rows.argmax(dim=-1).tolist()] for rows in per_word]


# -- predictions ------------------------------------------------------------------------------------------------

def spans_with_offsets(sentence: Sentence, tags: list[str], probs: torch.Tensor | None = None) -> list[dict]:
    """Entities as character spans of the sentence's text, with a score: the mean probability of the
    predicted tag over the entity's words."""
    out = []
    for span in tags_to_spans(tags)[0]:
        start, end = sentence.offsets[span.start][0], sentence.offsets[span.end - 1][1]
        row = {"type": span.type, "start": start, "end": end, "text": sentence.text[start:end]}
        if probs is not None:
            row["score"] = round(float(probs[span.start : span.end].max(dim=-1).values.mean()), 6)
        out.append(row)
    return out


def _sentence(number: int, record: dict) -> Sentence:
    """A `predict` input as a sentence of words: its tokens as given, or its text split into words."""
    if "tokens" in record:
        return Sentence(list(record["tokens"]))
    tokens, offsets = split_words(record["text"])
    if not tokens:
        raise TunecraftError(f"text {number} has no words")
    return Sentence(tokens, None, given_text=record["text"], given_offsets=offsets)


class TokenClassification(Task):
    """Token classification (NER): a label per word, entity-level scores."""

    NAME = "token_classification"
    METRICS = ["f1", "precision", "recall", "macro_f1", "macro_precision", "macro_recall", "token_accuracy", "loss"]
    HEADLINE = ("f1", "token_accuracy")
    EARLY_STOPPING = ("f1", "max")
    MODEL_CLASS = AutoModelForTokenClassification
    PEFT_TASK_TYPE = "TOKEN_CLS"

    LEGACY_SETTINGS = "ner"
    Settings = TokenClassificationSettings
    BUNDLED = BundledSets(BUNDLED_NER, bundled_split, "NER set", lambda name: BUNDLED_NER[name]())

    def load_data(self, cfg) -> TaskData:
        ner = self.settings

        def read(path):
            return read_ner_file(path, "auto" if cfg.format == "auto" else cfg.format, ner.token_column, ner.tag_column,
                                 cfg.columns)

        parts, description = task_splits(cfg, read, BUNDLED_NER, bundled_split, "NER",
                                         "People's Daily 1998-01, character-level; split by line")
        for part in parts.values():
            for sentence in part:
                normalise(sentence, ner.scheme, ner.on_invalid)
        label_map = label_map_for(parts["train"])
        check_known(parts["validation"] + parts["test"], label_map)
        counts = {name: entity_counts(part) for name, part in parts.items()}
        return TaskData(parts["train"], parts["validation"], parts["test"], label_map, COLUMNS, description,
                        {"entities": counts})

    def read_file(self, path: str, meta: dict, fmt: str) -> list[Sentence]:
        opts = meta["ner"]
        return read_ner_file(path, "auto" if fmt == "auto" else fmt, opts["token_column"], opts["tag_column"],
                             meta.get("columns"))

    def load_eval_examples(self, spec: str, meta: dict, fmt: str, split: str, seed: int, fractions) -> list[Sentence]:
        opts = meta["ner"]
        sentences = super().load_eval_examples(spec, meta, fmt, split, seed, fractions)
        for sentence in sentences:
            normalise(sentence, opts["scheme"], opts["on_invalid"])
        check_known(sentences, LabelMap(meta["labels"]))
        return sentences

    def options(self, config) -> dict:
        return {"ner": self.settings.model_dump(exclude={"name"}), "text_column": "tokens", "label_column": "tags"}

    def encode(self, tokenizer, sentences: list[Sentence], meta: dict, label_map: LabelMap | None = None) -> Encoded:
        """Words → sub-words, with the word's label on its first sub-token (all sub-tokens with
        label_subtokens: all; the rest -100). A sentence longer than the model's window becomes several windows
        that overlap by `stride` tokens; evaluation merges them back, so nothing is cut off."""
        if not getattr(tokenizer, "is_fast", False):
            raise TunecraftError("token classification needs a fast (Rust) tokenizer, for word alignment")
        opts = meta["ner"]
        max_len = meta["max_length"]
        stride = min(opts["stride"], max_len // 2)
        out = tokenizer([s.tokens for s in sentences], is_split_into_words=True, truncation=True, max_length=max_len,
                        stride=stride, return_overflowing_tokens=True)
        samples = list(out["overflow_to_sample_mapping"])
        word_ids = [out.word_ids(i) for i in range(len(samples))]
        labels = None
        if label_map is not None and sentences and sentences[0].tags is not None:
            ids = label_map.label2id
            labels = []
            for sample, words in zip(samples, word_ids):
                tags, row, previous = sentences[sample].tags, [], None
                for w in words:
                    first = w is not None and w != previous
                    learned = first or (w is not None and opts["label_subtokens"] == "all")
                    row.append(ids[tags[w]] if learned else IGNORE)
                    previous = w
                labels.append(row)
        gold = [s.tags for s in sentences] if sentences and sentences[0].tags is not None else None
        return Encoded(list(out["input_ids"]), out.get("token_type_ids"), labels, 0, samples, word_ids, gold,
                       {"scheme": opts["scheme"], "strict": opts["strict"]})

    def build_model(self, base, label_map: LabelMap, dropout: float | None = None):
        from ..models import instantiate

        return instantiate(AutoModelForTokenClassification, base, label_map, dropout)

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def loss_sum(self, outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = outputs.logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=IGNORE,
                               reduction="sum")

    def evaluate(self, scores: list[torch.Tensor], enc: Encoded, label_map: LabelMap) -> dict:
        logits = scores  # one [features, tags] tensor per window
        per_word = word_logits(logits, enc, [len(g) for g in enc.gold])
        pred = _predicted_tags(per_word, label_map.labels)
        result = entity_metrics(enc.gold, pred, enc.options.get("scheme", "bio"), enc.options.get("strict", False))
        labels = torch.cat([torch.tensor(row) for row in enc.labels])
        result["loss"] = float(F.cross_entropy(torch.cat(logits), labels, ignore_index=IGNORE))
        return result

    def prediction_rows(self, sentences: list[Sentence], logits, enc: Encoded, label_map: LabelMap) -> list[dict]:
        per_word = word_logits(logits, enc, [len(s.tokens) for s in sentences])
        rows = []
        for sentence, scores in zip(sentences, per_word):
            probs = torch.softmax(scores, dim=-1)
            tags = [label_map.labels[i] for i in probs.argmax(dim=-1).tolist()]
            row = {"text": sentence.text, "tokens": sentence.tokens}
            if sentence.tags is not None:
                row.update(tags=sentence.tags, entities=spans_with_offsets(sentence, sentence.tags))
            row.update(predicted_tags=tags, predicted_entities=spans_with_offsets(sentence, tags, probs))
            rows.append(row)
        return rows

    def predict(self, trained, inputs: list[str | dict], batch_size: int, dtype, warn: bool = True) -> list[dict]:
        """Raw text (or a {"text"} record) → words (each CJK character one word), or a {"tokens"} record of words
        already split → entities with types, character offsets and scores. A sentence longer than max_length
        goes through overlapping windows, as in training."""
        from ..runtime.inference import predict_logits

        sentences = [_sentence(i, r) for i, r in enumerate(records(inputs), start=1)]
        label_map = LabelMap(trained.meta["labels"])
        enc = self.encode(trained.tokenizer, sentences, trained.meta)
        logits = predict_logits(trained.model, enc, batch_size, trained.tokenizer.pad_token_id, torch.device("cpu"),
                                dtype)
        rows = self.prediction_rows(sentences, logits, enc, label_map)
        return [{"text": r["text"], "entities": r["predicted_entities"], "tokens": r["tokens"],
                 "tags": r["predicted_tags"]} for r in rows]
