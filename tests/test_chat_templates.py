"""`model.chat_template` (#36 item 6): a named template or a Jinja file replaces the tokenizer's own; the run
trains on conversations rendered with it, saves it in model/, and what eval, serve and chat render from the
trained run (load_trained's tokenizer, prompt_ids) is the same template; a template whose turn marker the
tokenizer lacks as a token is refused before any work, naming the key."""

import pytest

from tests.tiny_decoder import tiny_base, tiny_run
from tunecraft.data.chat import prompt_ids, render
from tunecraft.errors import TunecraftError
from tunecraft.models import load_tokenizer, resolve_base
from tunecraft.models.chat_templates import CHAT_TEMPLATES, ZEPHYR, apply_chat_template
from tunecraft.trained import load_trained

MESSAGES = [{"role": "user", "content": "hello"}]


def smollm2_tokenizer():
    return load_tokenizer(resolve_base("smollm2-135m"))


def test_a_zephyr_run_trains_saves_and_serves_with_zephyr(tmp_path):
    base = tiny_base(tmp_path / "base")
    run = tiny_run(tmp_path, base, "zephyr", chat_template="zephyr")
    trained = load_trained(run)
    assert trained.tokenizer.chat_template == ZEPHYR
    eos = trained.tokenizer.eos_token
    assert trained.tokenizer.decode(prompt_ids(trained.tokenizer, MESSAGES)) == f"<|user|>\nhello{eos}\n<|assistant|>\n"
    own = smollm2_tokenizer()
    assert render(own, MESSAGES) != render(trained.tokenizer, MESSAGES)  # the base's own template was replaced


def test_chatml_keeps_smollm2s_end_of_turn_and_llama3_is_refused_naming_its_marker():
    tokenizer = smollm2_tokenizer()
    eos = tokenizer.eos_token
    apply_chat_template(tokenizer, "chatml")
    assert tokenizer.eos_token == eos == "<|im_end|>"
    assert render(tokenizer, MESSAGES, add_generation_prompt=True) == \
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(TunecraftError, match=r"model.chat_template: llama-3 ends each turn with <\|eot_id\|>"):
        apply_chat_template(smollm2_tokenizer(), "llama-3")


def test_a_template_file_and_an_unknown_name(tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"
                    "{% if add_generation_prompt %}[assistant] {% endif %}", encoding="utf-8")
    tokenizer = smollm2_tokenizer()
    apply_chat_template(tokenizer, str(path))
    assert render(tokenizer, MESSAGES, add_generation_prompt=True) == "[user] hello<|im_end|>[assistant] "
    with pytest.raises(TunecraftError, match="neither a template name"):
        apply_chat_template(smollm2_tokenizer(), "vicuna")
    assert set(CHAT_TEMPLATES) == {"chatml", "llama-3", "zephyr"}
