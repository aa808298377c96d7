"""Preference data: pairs (`prompt`/`chosen`/`rejected`) and judged single answers (KTO's
`prompt`/`completion`/`label`), as plain text or as OpenAI `messages` lists, the conventions TRL documents.
Every error names file, line and field; nothing is silently repaired."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, TunecraftError
from .chat import check_messages, check_text, check_turns, prompt_text, render
from .readers import existing_file, json_rows

Prompt = str | list[dict]
"""Plain text the model continues, or a conversation (messages) that the chat template renders."""


@dataclass
class PreferencePair:
    """One prompt, a preferred and a dispreferred answer; `margin` (optional) says by how much."""

    prompt: Prompt
    chosen: str
    rejected: str
    margin: float | None = None
    path: str = ""
    line: int | None = None


@dataclass
class Judgement:
    """One prompt and one answer judged good (`desirable`) or bad: thumbs up/down data (KTO)."""

    prompt: Prompt
    completion: str
    desirable: bool
    path: str = ""
    line: int | None = None


@dataclass
class PromptRow:
    """A prompt for online RL, with the answer a verifiable reward checks (optional)."""

    prompt: Prompt
    answer: str | None = None
    path: str = ""
    line: int | None = None


KINDS = ("auto", "pairs", "judgements")


def _prompt(path, line, value, field="prompt") -> Prompt:
    if isinstance(value, list):
        turns = check_turns(path, line, value, field)
        if turns[-1]["role"] == "assistant":
            raise DataError(path, line, field, "the prompt ends with an assistant turn; the answer goes in "
                            "chosen/rejected or completion")
        return turns
    return check_text(path, line, field, value)


def _answer(path, line, field, value) -> str:
    """A plain string, or TRL's conversational form: a list ending in one assistant message."""
    if isinstance(value, list):
        messages = check_messages(path, line, value, field)
        if messages[-1]["role"] != "assistant":
            raise DataError(path, line, field, "the last message must be the assistant's answer")
        return messages[-1]["content"]
    return check_text(path, line, field, value)


def _implicit_prompt(path, line, row) -> tuple[Prompt, str, str]:
    """TRL's implicit-prompt form: chosen and rejected are whole conversations sharing every turn but the last."""
    chosen = check_messages(path, line, row["chosen"], "chosen")
    rejected = check_messages(path, line, row["rejected"], "rejected")
    if chosen[:-1] != rejected[:-1] or not chosen[:-1]:
        raise DataError(path, line, "prompt", "missing, and chosen and rejected do not share a prompt (every turn "
                        "but the last) to take it from")
    for field, messages in (("chosen", chosen), ("rejected", rejected)):
        if messages[-1]["role"] != "assistant":
            raise DataError(path, line, field, "the last message must be the assistant's answer")
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def _pair(path, line, row: dict, prompt_required: bool = True) -> PreferencePair:
    for field in ("chosen", "rejected"):
        if field not in row:
            raise DataError(path, line, field, "missing (preference rows have prompt, chosen, rejected)")
    if not prompt_required and row.get("prompt", "") == "" and not isinstance(row["chosen"], list):
        prompt = ""  # two texts compared on their own (a reward model scores each alone)
        chosen = _answer(path, line, "chosen", row["chosen"])
        rejected = _answer(path, line, "rejected", row["rejected"])
    elif "prompt" in row:
        prompt = _prompt(path, line, row["prompt"])
        chosen = _answer(path, line, "chosen", row["chosen"])
        rejected = _answer(path, line, "rejected", row["rejected"])
    elif isinstance(row["chosen"], list) and isinstance(row["rejected"], list):
        prompt, chosen, rejected = _implicit_prompt(path, line, row)
    else:
        raise DataError(path, line, "prompt", "missing (preference rows have prompt, chosen, rejected)")
    if chosen.strip() == rejected.strip():
        raise DataError(path, line, "rejected", "the same text as chosen: nothing to prefer")
    margin = row.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, int | float)):
        raise DataError(path, line, "margin", f"expected a number, got {type(margin).__name__}")
    return PreferencePair(prompt, chosen, rejected, None if margin is None else float(margin), str(path), line)


def _judgement(path, line, row: dict) -> Judgement:
    for field in ("prompt", "completion", "label"):
        if field not in row:
            raise DataError(path, line, field, "missing (judged rows have prompt, completion, label)")
    if not isinstance(row["label"], bool):
        raise DataError(path, line, "label", f"expected true (a good answer) or false (a bad one), got "
                        f"{row['label']!r}")
    return Judgement(_prompt(path, line, row["prompt"]), _answer(path, line, "completion", row["completion"]),
                     row["label"], str(path), line)


def _kind_of(path, line, row: dict) -> str:
    if "chosen" in row or "rejected" in row:
        return "pairs"
    if "completion" in row or "label" in row:
        return "judgements"
    raise DataError(path, line, None, f"cannot tell the kind from the fields {sorted(row)}: expected "
                    "prompt/chosen/rejected (pairs) or prompt/completion/label (judged answers)")


def read_preference_file(path: str | Path, kind: str = "auto", prompt_required: bool = True,
                         columns: dict | None = None) -> list[PreferencePair] | list[Judgement]:
    """A JSONL file of preference pairs or judged answers (one kind per file, told by the first row when
    `kind` is auto). `prompt_required=False`: a pair of plain texts may have no prompt (or an empty one); its
    prompt is then "". `columns` (data.columns) maps the user's field names."""
    if kind not in KINDS:
        raise TunecraftError(f"unknown preference data kind '{kind}'; kinds: {', '.join(KINDS)}")
    path = existing_file(path)
    out: list = []
    for line, row in json_rows(path, columns):
        if kind == "auto":
            kind = _kind_of(path, line, row)
        elif _kind_of(path, line, row) != kind:
            raise DataError(path, line, None, f"a row of another kind in a file of {kind}: one kind per file")
        out.append(_pair(path, line, row, prompt_required) if kind == "pairs" else _judgement(path, line, row))
    if not out:
        raise DataError(path, None, None, "no examples")
    return out


def read_store_table(path: str | Path, table: str) -> list[dict] | None:
    """The rows of a feedback store's table (serve/feedback.py writes `feedback` and `chat_feedback`), oldest first,
    as dicts; None when the file or the table is absent. Read-only: a server may be writing to it."""
    path = Path(path)
    if table not in ("feedback", "chat_feedback"):
        raise ValueError(f"no table {table} in a feedback store")
    if not path.is_file():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() is None:
            return None
        return [dict(row) for row in db.execute(f"SELECT * FROM {table} ORDER BY id")]


def read_feedback_store(path: str | Path, good_rating: int = 1) -> list[PreferencePair | Judgement]:
    """A server's chat feedback (serve/feedback.py, table chat_feedback) as preference data, one item per row
    (`line` is the row's id): a correction of an answer is a pair (the correction chosen over the answer); a
    correction alone is a good answer; a rated answer is good at or above `good_rating`, bad below it. Rows
    with neither are left out."""
    path = existing_file(path)
    try:
        rows = read_store_table(path, "chat_feedback")
    except sqlite3.DatabaseError as err:
        raise DataError(path, None, None, f"not a tunecraft feedback store (table chat_feedback): {err}") from None
    if rows is None:
        raise DataError(path, None, None, "not a tunecraft feedback store: no table chat_feedback")
    out: list = []
    for row in rows:
        row_id, response, rating, correction = row["id"], row["response"], row["rating"], row["correction"]
        try:
            prompt = _prompt(path, row_id, json.loads(row["messages"]), "messages")
        except json.JSONDecodeError as err:
            raise DataError(path, row_id, "messages", f"not JSON: {err}") from None
        if correction and response and correction.strip() != response.strip():
            out.append(PreferencePair(prompt, correction, response, None, str(path), row_id))
        elif correction:
            out.append(Judgement(prompt, correction, True, str(path), row_id))
        elif response and rating is not None:
            out.append(Judgement(prompt, response, rating >= good_rating, str(path), row_id))
    if not out:
        raise DataError(path, None, None, "no feedback to learn from (rows need a correction, or a rating of the "
                        "answer they give)")
    return out


def read_prompt_file(path: str | Path, columns: dict | None = None) -> list[PromptRow]:
    """A JSONL file of prompts (`prompt`: text or messages; `answer`: optional, for an exact-answer reward), its
    field names mapped by `columns` (data.columns)."""
    path = existing_file(path)
    out = []
    for line, row in json_rows(path, columns):
        if "prompt" not in row:
            raise DataError(path, line, "prompt", "missing (prompt rows have prompt and, optionally, answer)")
        answer = row.get("answer")
        if answer is not None and not isinstance(answer, str | int | float):
            raise DataError(path, line, "answer", f"expected a string or a number, got {type(answer).__name__}")
        out.append(PromptRow(_prompt(path, line, row["prompt"]), None if answer is None else str(answer), str(path),
                             line))
    if not out:
        raise DataError(path, None, None, "no prompts")
    return out


def as_judgements(pairs: list[PreferencePair]) -> list[Judgement]:
    """Each pair as two judged answers (chosen good, rejected bad): how paired data trains KTO."""
    out = []
    for p in pairs:
        out += [Judgement(p.prompt, p.chosen, True, p.path, p.line), Judgement(p.prompt, p.rejected, False, p.path,
                                                                               p.line)]
    return out


# -- text for a model ----------------------------------------------------------------------------------------------

def render_prompt(tokenizer, prompt: Prompt) -> str:
    """What the model continues: a conversation through the chat template's generation prompt; plain text as is."""
    return prompt if isinstance(prompt, str) else prompt_text(tokenizer, prompt)


def render_completion(tokenizer, prompt: Prompt, answer: str) -> str:
    """The text the model would write after `render_prompt`: for a conversation, the answer as the template
    closes an assistant turn (its end-of-turn token included); for plain text, the answer and end of sequence."""
    if isinstance(prompt, str) or not tokenizer.chat_template:
        return answer + (tokenizer.eos_token or "")
    head = render_prompt(tokenizer, prompt)
    full = render(tokenizer, [*prompt, {"role": "assistant", "content": answer}])
    if not full.startswith(head):
        raise TunecraftError("the chat template does not render the prompt as a prefix of the answered "
                             "conversation; preference training needs it to")
    return full[len(head):]
