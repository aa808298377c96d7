"""Generative models: SFT data (chat, ShareGPT, Alpaca, text), assistant-only labels, text metrics, and
LoRA instruction tuning of the real SmolLM2-135M on a tiny real slice: perplexity, merge, predict, chat."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tunecraft.config import build_config
from tunecraft.data.chat import BUNDLED_CHAT, read_sft_file
from tunecraft.data.dataset import IGNORE
from tunecraft.errors import ConfigError, DataError
from tunecraft.evaluate.runs import predict
from tunecraft.evaluate.text_metrics import exact_match, rouge_l
from tunecraft.models import load_tokenizer, load_trained, resolve_base
from tunecraft.tasks import causal_lm
from tunecraft.train import train

SFT = build_config({"task": "causal_lm"}).data.sft.model_dump()


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
    assert len(en) == 2025 and len(zh) == 467
    assert all(c.messages[-1]["role"] == "assistant" and c.line for c in en + zh)
    a, b = (causal_lm.bundled_split("chitchat-en", 42, (0.1, 0.1)) for _ in range(2))
    assert [len(a[s]) for s in ("train", "validation", "test")] == [1621, 202, 202]
    assert [c.line for c in a["test"]] == [c.line for c in b["test"]]
    assert not {(c.path, c.line) for c in a["test"]} & {(c.path, c.line) for c in a["train"]}


# -- encoding ---------------------------------------------------------------------------------------------------

def _learned(tokenizer, enc, row=0) -> str:
    return tokenizer.decode([t for t in enc.labels[row] if t != IGNORE])


def test_only_assistant_tokens_are_learned(write, tokenizer):
    path = write("c.jsonl", jsonl([{"messages": [
        {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "Green."}]}]))
    convs = read_sft_file(path)
    enc = causal_lm.encode(tokenizer, convs, meta())
    assert _learned(tokenizer, enc) == "Blue.<|im_end|>\nGreen.<|im_end|>\n"
    everything = causal_lm.encode(tokenizer, convs, meta(train_on="all"))
    assert everything.labels[0] == everything.input_ids[0]
    assert tokenizer.decode(enc.input_ids[0]).startswith("<|im_start|>system")  # the chat template was applied


def test_overlong_is_an_error_with_line_or_counted_when_dropped_or_cut(write, tokenizer):
    short = {"instruction": "Hi", "output": "Hello"}
    long = {"instruction": "Repeat", "output": "word " * 80}
    convs = read_sft_file(write("l.jsonl", jsonl([short, long])))
    with pytest.raises(DataError, match=r"l.jsonl, line 2: \d+ tokens, more than model.max_length=64"):
        causal_lm.encode(tokenizer, convs, meta(64, overlong="error"))
    dropped = causal_lm.encode(tokenizer, convs, meta(64, overlong="drop"))
    assert (len(dropped), dropped.truncated, dropped.sample) == (1, 1, [0])
    cut = causal_lm.encode(tokenizer, convs, meta(64, overlong="truncate"))
    assert (len(cut), cut.truncated, max(cut.lengths)) == (2, 1, 64)


def test_packing_joins_whole_examples_up_to_max_length(tokenizer):
    convs = BUNDLED_CHAT["chitchat-en"]()[:40]
    plain = causal_lm.encode(tokenizer, convs, meta(128))
    packed = causal_lm.encode(tokenizer, convs, meta(128, packing=True))
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


# -- training the real model on a tiny slice --------------------------------------------------------------------

PROMPTS = ["What is AI?", "Tell me a joke.", "My internet is not working."]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """LoRA on 16 real chitchat-en conversations, scored on those same 16 (a tiny set learned by heart)."""
    tmp = tmp_path_factory.mktemp("sft")
    convs = [c for c in BUNDLED_CHAT["chitchat-en"]() if len(c.messages) == 2][:16]
    path = tmp / "tiny.jsonl"
    path.write_text(jsonl([{"messages": c.messages} for c in convs]), encoding="utf-8")
    config = build_config({
        "name": "sft", "output_dir": str(tmp), "seed": 7, "task": "causal_lm",
        "model": {"base": "smollm2-135m", "max_length": 64},
        "data": {"dataset": None, "train": str(path), "validation": str(path), "test": str(path),
                 "sft": {"overlong": "truncate"}},
        "method": {"name": "lora", "r": 8, "alpha": 16},
        "generation": {"max_new_tokens": 12, "eval_samples": 4, "report_samples": 2},
        "train": {"max_steps": 8, "batch_size": 8, "lr": 2e-3, "warmup_ratio": 0, "num_threads": 1,
                  "eval_each_epoch": False, "progress": False, "tensorboard": False}})
    return config.run_dir, train(config)


@pytest.mark.slow
def test_lora_sft_lowers_perplexity_and_reports_before_after(sft_run):
    run_dir, summary = sft_run
    m = summary["metrics"]
    assert m["perplexity"] < 0.8 * m["before"]["perplexity"]
    assert m["tokens"] == m["before"]["tokens"] > 0
    assert 0.0 <= m["rouge_l"] <= 1.0 and m["generated"] == 4
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "| perplexity |" in report and "| prompt | reference | base model | trained |" in report
    rows = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4 and all({"prompt", "reference", "output", "before", "rouge_l"} <= set(r) for r in rows)
    assert (run_dir / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_merged_and_unmerged_adapter_generate_the_same(sft_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, _ = sft_run
    merged = load_trained(run_dir)
    base = AutoModelForCausalLM.from_pretrained(str(resolve_base("smollm2-135m")), dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
    gen = {**merged.meta["generation"], "max_new_tokens": 16}
    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    a = causal_lm.generate(merged.model, merged.tokenizer, convs, gen)
    b = causal_lm.generate(unmerged, merged.tokenizer, convs, gen)
    assert a == b and all(a)
    plain = causal_lm.generate(base, merged.tokenizer, convs, gen)  # the adapter does change the answers
    assert plain != a


@pytest.mark.slow
def test_predict_and_chat_from_the_command_line(sft_run):
    run_dir, _ = sft_run
    rows = predict(run_dir, PROMPTS[:2])
    assert [r["prompt"] for r in rows] == PROMPTS[:2] and all(r["response"] for r in rows)
    out = subprocess.run([sys.executable, "-m", "tunecraft", "chat", str(run_dir), "--max-new-tokens", "8"],
                         input="Hello\nWhat is AI?\n/reset\n/exit\nnever read\n", capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr
    trained = load_trained(run_dir)
    gen = {**trained.meta["generation"], "max_new_tokens": 8}
    first = causal_lm.generate(trained.model, trained.tokenizer, [[{"role": "user", "content": "Hello"}]], gen)[0]
    history = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": first},
               {"role": "user", "content": "What is AI?"}]
    second = causal_lm.generate(trained.model, trained.tokenizer, [history], gen)[0]  # answered with the history
    assert out.stdout == f"{first}\n{second}\n(history cleared)\n"
