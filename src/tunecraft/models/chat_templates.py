"""`model.chat_template`: the chat template a run renders conversations with, set on the base's tokenizer so
that the same template is saved in `model/` (transformers writes `chat_template.jinja`) and travels to `eval`,
`serve`, `chat` and every export (the GGUF writer copies `tokenizer.chat_template`).

The named templates are the common published layouts, written here as data in transformers' Jinja dialect.
Generation stops at the tokenizer's end-of-sequence token, so a template's turns must end with it: `zephyr`
closes each turn with `eos_token` and fits any tokenizer; `chatml` and `llama-3` end turns with their own
marker, which must be one token of the vocabulary (it then becomes the tokenizer's end-of-sequence token).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TunecraftError

CHATML = ("{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{%- endif %}")
LLAMA_3 = ("{{- bos_token }}{%- for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
           "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
           "{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
ZEPHYR = ("{%- for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + "
          "'\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- endif %}")

CHAT_TEMPLATES: dict[str, tuple[str, str | None]] = {
    "chatml": (CHATML, "<|im_end|>"),
    "llama-3": (LLAMA_3, "<|eot_id|>"),
    "zephyr": (ZEPHYR, None),
}
"""Name → (Jinja template, the marker that ends a turn; None: the tokenizer's own end-of-sequence token)."""


def apply_chat_template(tokenizer, choice: str) -> None:
    """Set `choice` (a name in CHAT_TEMPLATES, or a Jinja file) as the tokenizer's chat template; a named
    template's end-of-turn marker becomes its end-of-sequence token, so generation stops where a turn ends."""
    if tokenizer is None:
        raise TunecraftError("model.chat_template: this base has no tokenizer to render chats with")
    if choice in CHAT_TEMPLATES:
        template, end = CHAT_TEMPLATES[choice]
    elif Path(choice).is_file():
        template, end = Path(choice).read_text(encoding="utf-8"), None
    else:
        raise TunecraftError(f"model.chat_template: '{choice}' is neither a template name "
                             f"({', '.join(CHAT_TEMPLATES)}) nor a Jinja file")
    if end is not None and end != tokenizer.eos_token:
        ids = tokenizer(end, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or tokenizer.convert_ids_to_tokens(ids[0]) != end:
            raise TunecraftError(f"model.chat_template: {choice} ends each turn with {end}, which this tokenizer "
                                 "does not have as one token (generation could not stop); use zephyr, whose "
                                 "turns end with the tokenizer's own end-of-sequence token, or a template file")
        tokenizer.eos_token = end
    tokenizer.chat_template = template
