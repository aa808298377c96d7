"""LoRA instruction tuning of the real SmolLM2-135M on a tiny real chitchat slice: perplexity before/after,
merged vs unmerged greedy generation, predict, and chat through piped stdin."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tunecraft.config import build_config
from tunecraft.data.chat import BUNDLED_CHAT
from tunecraft.evaluate.runs import predict
from tunecraft.experiment import experiment
from tunecraft.models import resolve_base
from tunecraft.tasks import causal_lm
from tunecraft.trained import load_trained


def jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


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
        "name": "sft", "output_dir": str(tmp), "seed": 7, "task": {"name": "causal_lm", "overlong": "truncate",
                 "generation": {"max_new_tokens": 12, "eval_samples": 4, "report_samples": 2}},
        "model": {"base": "smollm2-135m", "max_length": 64},
        "data": {"dataset": None, "train": str(path), "validation": str(path), "test": str(path)},
        "method": {"name": "lora", "r": 8, "alpha": 16},
        "train": {"max_steps": 8, "batch_size": 8, "lr": 2e-3, "warmup_ratio": 0, "num_threads": 1,
                  "eval_each_epoch": False, "progress": False, "tensorboard": False}})
    return config.run_dir, experiment(config)  # the base model before training is scored beside the result


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
    with unmerged.disable_adapter():  # the adapter does change the answers
        assert causal_lm.generate(unmerged, merged.tokenizer, convs, gen) != a


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


@pytest.mark.slow
def test_eval_scores_a_file_with_perplexity_and_generated_answers(sft_run):
    from tunecraft.evaluate.runs import evaluate_run

    run_dir, summary = sft_run
    result = evaluate_run(run_dir, str(run_dir.parent / "tiny.jsonl"))
    m = result["metrics"]
    assert m["perplexity"] == pytest.approx(summary["metrics"]["perplexity"], rel=0.02)  # both in the run's bf16
    assert m["generated"] == 4 and 0.0 <= m["rouge_l"] <= 1.0
    assert "| prompt | reference | generated |" in (run_dir / "evals" / "tiny" / "report.md").read_text()
