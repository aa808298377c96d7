"""An Ollama `Modelfile` for a GGUF export: the run's chat template as Ollama's Go template, its default system
message, its stop strings and greedy/sampling settings.

Ollama templates are Go text/template, not Jinja: no general translation exists, so the run's template is probed
(rendered on fixed conversations) and, when it renders ChatML (`<|im_start|>role\\ncontent<|im_end|>\\n`, as
SmolLM2's does), written as the ChatML Go template below. Any other template is left out of the Modelfile, and
Ollama falls back to the `tokenizer.chat_template` the GGUF file carries (which it matches against templates it
knows); the export says so.
"""

from __future__ import annotations

import json
import re

from ..data.chat import render

# ChatML over Ollama's .Messages; the generation prompt only after a last message that is not the assistant's
CHATML = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ end }}
{{- end }}"""
END_OF_TURN = "<|im_end|>"


def _chatml(messages: list[dict], generation_prompt: bool) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if generation_prompt else "")


def chatml_system(tokenizer) -> tuple[bool, str | None]:
    """(whether the tokenizer's chat template renders ChatML, the system message it adds when a conversation
    has none). Probed on a one-turn and a multi-turn conversation, with and without a system message."""
    if not tokenizer.chat_template:
        return False, None
    user = [{"role": "user", "content": "Q1"}]
    rendered = render(tokenizer, user, add_generation_prompt=True)
    match = re.fullmatch(r"(?:<\|im_start\|>system\n(.*?)<\|im_end\|>\n)?" + re.escape(_chatml(user, True)),
                         rendered, flags=re.S)
    if match is None:
        return False, None
    longer = [{"role": "system", "content": "S"}, *user, {"role": "assistant", "content": "A1"},
              {"role": "user", "content": "Q2"}]
    if render(tokenizer, longer, add_generation_prompt=True) != _chatml(longer, True):
        return False, None
    return True, match[1]


def _quoted(text: str) -> str:
    if '"""' in text:
        raise ValueError('a Modelfile value cannot contain """')
    return f'"""{text}"""'


def modelfile(gguf_name: str, tokenizer, generation: dict) -> tuple[str, bool]:
    """(the Modelfile's text, whether the chat template was written into it)."""
    chatml, system = chatml_system(tokenizer)
    lines = [f"FROM ./{gguf_name}", ""]
    if chatml:
        lines += [f"TEMPLATE {_quoted(CHATML)}", ""]
        if system:
            lines += [f"SYSTEM {_quoted(system)}", ""]
    stops = ([END_OF_TURN] if chatml else []) + [s for s in generation.get("stop") or [] if s]
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    lines += [f"PARAMETER temperature {generation['temperature']}", f"PARAMETER top_p {generation['top_p']}",
              f"PARAMETER num_predict {generation['max_new_tokens']}"]
    return "\n".join(lines) + "\n", chatml
