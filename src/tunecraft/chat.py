"""`tunecraft chat`: an interactive chat with a run, registered by task name for the tasks whose runs chat
(the causal LMs: causal_lm and the preference and RL runs, which are exported and served as causal LMs)."""

from __future__ import annotations

from collections.abc import Callable

from .errors import TunecraftError
from .tasks.causal_lm import generate


def chat_loop(trained, lines, write, system: str | None = None, dtype=None) -> list[dict]:
    """An interactive chat over `lines` (e.g. stdin): each line is the user's turn, the answer is written out and
    kept in the history. `/reset` forgets the history, `/exit` ends. Returns the conversation."""
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            break
        if text == "/reset":
            history = list(start)
            write("(history cleared)")
            continue
        history.append({"role": "user", "content": text})
        answer = generate(trained.model, trained.tokenizer, [history], trained.meta["generation"], 1, dtype)[0]
        history.append({"role": "assistant", "content": answer})
        write(answer)
    return history


CHATS: dict[str, Callable] = {"causal_lm": chat_loop, "preference": chat_loop, "rl": chat_loop}
"""Task name → its chat: (trained, lines, write, system, dtype) -> the conversation."""


def chat_of(task: str) -> Callable:
    """The chat of the task named `task`; a TunecraftError for a task whose runs do not chat."""
    if task not in CHATS:
        raise TunecraftError(f"{task} runs do not chat: `tunecraft chat` needs a causal_lm run")
    return CHATS[task]
