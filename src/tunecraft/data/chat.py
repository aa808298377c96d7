"""Instruction-tuning data: chat messages (OpenAI or ShareGPT), Alpaca rows and plain text, as conversations;
the bundled chitchat sets (chatterbot-corpus YAML). Every error names file, line and field."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import AssetError, DataError
from .readers import _decode, existing_file, json_rows

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
FORMATS = ("auto", "messages", "sharegpt", "alpaca", "text")


@dataclass
class Conversation:
    """A chat (`messages`: role + content, at least one assistant turn) or a plain `text`."""

    messages: list[dict] | None = None
    text: str | None = None
    path: str = ""
    line: int | None = None


def _detect(row: dict) -> str:
    for key, fmt in (("messages", "messages"), ("conversations", "sharegpt"), ("instruction", "alpaca"),
                     ("text", "text")):
        if key in row:
            return fmt
    return ""


def check_text(path, line, field, value, allow_empty=False) -> str:
    """A string, and not blank unless `allow_empty`."""
    if not isinstance(value, str):
        raise DataError(path, line, field, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(path, line, field, "is empty")
    return value


def check_turns(path, line, messages, key="messages") -> list[dict]:
    """A non-empty list of {role, content} turns, roles known and contents non-empty strings; each turn's other
    keys dropped."""
    if not isinstance(messages, list) or not messages:
        raise DataError(path, line, key, "expected a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(path, line, f"{key}[{i}]", "expected an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(path, line, f"{key}[{i}].role", f"unknown role '{m['role']}'; roles: {', '.join(ROLES)}")
        check_text(path, line, f"{key}[{i}].content", m["content"])
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def check_messages(path, line, messages, key="messages") -> list[dict]:
    """A conversation to learn from: `check_turns`, and at least one assistant turn."""
    turns = check_turns(path, line, messages, key)
    if not any(m["role"] == "assistant" for m in turns):
        raise DataError(path, line, key, "no assistant turn: nothing for the model to learn")
    return turns


def _system(path, line, row: dict) -> list[dict]:
    """The row's top-level `system` prompt (Alpaca, ShareGPT) as a first system turn; none when absent/blank."""
    value = row.get("system")
    if value is None or isinstance(value, str) and not value.strip():
        return []
    return [{"role": "system", "content": check_text(path, line, "system", value)}]


def _sharegpt(path, line, row: dict) -> list[dict]:
    turns = row.get("conversations")
    if not isinstance(turns, list):
        raise DataError(path, line, "conversations", "expected a list of {from, value} turns")
    messages = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or "from" not in t or "value" not in t:
            raise DataError(path, line, f"conversations[{i}]", "expected an object with 'from' and 'value'")
        if t["from"] not in SHAREGPT_ROLES:
            raise DataError(path, line, f"conversations[{i}].from", f"unknown role '{t['from']}'; roles: "
                            f"{', '.join(SHAREGPT_ROLES)}")
        messages.append({"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]})
    if messages and messages[0]["role"] == "system":
        return messages
    return _system(path, line, row) + messages


def _alpaca(path, line, row: dict) -> list[dict]:
    """system, then each `history` pair [instruction, output] as a user/assistant exchange, then the row."""
    for key in ("instruction", "output"):
        if key not in row:
            raise DataError(path, line, key, "missing (Alpaca rows have instruction, input, output)")
    history = row.get("history") or []
    if not isinstance(history, list):
        raise DataError(path, line, "history", "expected a list of [instruction, output] pairs")
    messages = _system(path, line, row)
    for i, pair in enumerate(history):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise DataError(path, line, f"history[{i}]", "expected a pair [instruction, output]")
        messages += [{"role": "user", "content": check_text(path, line, f"history[{i}][0]", pair[0])},
                     {"role": "assistant", "content": check_text(path, line, f"history[{i}][1]", pair[1])}]
    instruction = check_text(path, line, "instruction", row["instruction"])
    extra = check_text(path, line, "input", row.get("input") or "", allow_empty=True)
    output = check_text(path, line, "output", row["output"])
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _from_row(path, line, row: dict, fmt: str) -> Conversation:
    kind = _detect(row) if fmt == "auto" else fmt
    if kind == "messages":
        return Conversation(check_messages(path, line, row.get("messages")), path=str(path), line=line)
    if kind == "sharegpt":
        messages = check_messages(path, line, _sharegpt(path, line, row), "conversations")
        return Conversation(messages, path=str(path), line=line)
    if kind == "alpaca":
        return Conversation(_alpaca(path, line, row), path=str(path), line=line)
    if kind == "text":
        return Conversation(text=check_text(path, line, "text", row.get("text")), path=str(path), line=line)
    raise DataError(path, line, None, f"cannot tell the format from the fields {sorted(row)}: expected messages, "
                    "conversations (ShareGPT), instruction/input/output (Alpaca) or text")


def read_sft_file(path: str | Path, fmt: str = "auto", columns: dict | None = None) -> list[Conversation]:
    """A JSONL file of chats, Alpaca rows or texts, its field names mapped by `columns` (data.columns); a .txt
    file is plain text, one document per line."""
    path = existing_file(path)
    if path.suffix.lower() == ".txt" or fmt == "text" and path.suffix.lower() not in (".jsonl", ".json"):
        return [Conversation(text=line, path=str(path), line=n)
                for n, line in enumerate(_decode(path).splitlines(), start=1) if line.strip()]
    out = [_from_row(path, n, row, fmt) for n, row in json_rows(path, columns)]
    if not out:
        raise DataError(path, None, None, "no examples")
    return out


# -- bundled: chatterbot-corpus ------------------------------------------------------------------------------------

def _corpus_dir(language: str) -> Path:
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise AssetError("the bundled chitchat sets need chatterbot-corpus: pip install --no-deps "
                         "chatterbot-corpus==1.3.3")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / language


def read_chatterbot(language: str) -> list[Conversation]:
    """Every distinct conversation of the YAML files (turns alternating user / assistant) with its line number.
    The English files repeat many conversations word for word (2,025 listed, 898 distinct): repeats are dropped,
    else a held-out split would test on training answers."""
    out, seen = [], set()
    for path in sorted(_corpus_dir(language).glob("*.yml")):
        root = yaml.compose(path.read_text(encoding="utf-8"))
        node = next((v for k, v in root.value if k.value == "conversations"), None)
        for item in node.value if node is not None else []:
            turns = [str(t.value).strip() for t in item.value if isinstance(t, yaml.ScalarNode)]
            turns = turns[: len(turns) // 2 * 2]  # end on an answer
            if len(turns) < 2 or not all(turns):
                continue
            if tuple(turns) in seen:
                continue
            seen.add(tuple(turns))
            messages = [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(turns)]
            out.append(Conversation(messages, path=str(path), line=item.start_mark.line + 1))
    return out


BUNDLED_CHAT = {"chitchat-en": lambda: read_chatterbot("english"), "chitchat-zh": lambda: read_chatterbot("chinese")}


# -- rendering a conversation for a model ----------------------------------------------------------------------

def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def prompt_text(tokenizer, messages: list[dict]) -> str:
    """What the model continues: the chat template with the assistant's generation prompt (or the raw text
    for a tokenizer without a template)."""
    if tokenizer.chat_template:
        return render(tokenizer, messages, add_generation_prompt=True)
    return "\n".join(m["content"] for m in messages)


def special_strings(tokenizer) -> list[str]:
    """The text of each special token the tokenizer would match in its input (`<|im_end|>`, ...)."""
    return [t.content for t in tokenizer.added_tokens_decoder.values() if t.special and t.content]


def _text_spans(text: str, messages: list[dict], specials: list[str]) -> list[tuple[int, int]]:
    """Where the message contents that hold a special token's text sit in `text` (the rendered chat), in order."""
    spans, at = [], 0
    for i, message in enumerate(messages, start=1):
        content = message.get("content")
        if not isinstance(content, str):
            continue
        found = text.find(content, at)
        if found < 0 and content.strip():
            content = content.strip()  # a template that trims the content
            found = text.find(content, at)
        if found < 0:
            if any(s in content for s in specials):
                raise DataError(f"message {i}: its content holds a special token's text and the chat template "
                                     "changes the content, so it cannot be kept as plain text")
            continue
        if any(s in content for s in specials):
            spans.append((found, found + len(content)))
        at = found + len(content)
    return spans


def tokenize_chat(tokenizer, text: str, messages: list[dict], offsets: bool = False) -> dict:
    """`text` (the chat template rendered over `messages`) tokenized with the template's own special tokens as
    special tokens and the messages' text as text: a `<|im_end|>` typed in a message becomes ordinary tokens, so
    it cannot end a turn or forge a system or assistant one. Text without such strings tokenizes exactly as one
    tokenizer call. Written by hand: a tokenizer splits special tokens for a whole call or not at all."""
    spans = _text_spans(text, messages, special_strings(tokenizer))
    if not spans:
        return dict(tokenizer(text, add_special_tokens=False, return_offsets_mapping=offsets))
    ids, mapping, at = [], [], 0
    pieces = []
    for start, end in spans:
        pieces += [(at, start, False), (start, end, True)]
        at = end
    pieces.append((at, len(text), False))
    for start, end, as_text in pieces:
        if start == end:
            continue
        out = tokenizer(text[start:end], add_special_tokens=False, split_special_tokens=as_text,
                        return_offsets_mapping=offsets)
        ids += out["input_ids"]
        if offsets:
            mapping += [(a + start, b + start) for a, b in out["offset_mapping"]]
    return {"input_ids": ids, **({"offset_mapping": mapping} if offsets else {})}


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The token ids the model continues for `messages` (prompt_text, tokenized by tokenize_chat)."""
    return tokenize_chat(tokenizer, prompt_text(tokenizer, messages), messages)["input_ids"]


def cut_at_stops(text: str, stops: list[str]) -> str:
    ends = [text.find(s) for s in stops if s and s in text]
    return text[: min(ends)] if ends else text
