"""Real training on the bundled MiniLM and movie-review data (small slices); outcomes, not 'it ran'."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tunecraft import predict
from tunecraft.assets import model_path
from tunecraft.plugins import AfterStep
from tunecraft.train import train
from tunecraft.train.checkpoint import latest_checkpoint

from .conftest import recipe

pytestmark = pytest.mark.slow


def test_lora_beats_chance_by_a_wide_margin(lora_run):
    run_dir, summary = lora_run
    assert summary["metrics"]["accuracy"] >= 0.75, summary["metrics"]
    assert summary["trainable_params"] < 0.05 * summary["total_params"]
    for name in ("config.yaml", "metrics.jsonl", "predictions.jsonl", "report.md", "report.html", "summary.json",
                 "plots/loss.png", "plots/confusion.png", "plots/metrics.png", "model/model.safetensors",
                 "adapter/adapter_model.safetensors"):
        assert (run_dir / name).is_file(), name
    report = (run_dir / "report.md").read_text()
    assert "| negative |" in report and "| positive |" in report
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "src='plots/" not in html


def test_full_fine_tune_beats_chance_by_a_wide_margin(full_run):
    _, summary = full_run
    assert summary["metrics"]["accuracy"] >= 0.75, summary["metrics"]
    assert summary["trainable_params"] == summary["total_params"]


def _texts(run_dir, n=64):
    return [json.loads(line)["text"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()[:n]]


def _logits(model, tokenizer, texts):
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_lora_merged_and_unmerged_give_the_same_logits(lora_run):
    run_dir, _ = lora_run
    texts = _texts(run_dir)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    merged = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    base = AutoModelForSequenceClassification.from_pretrained(model_path("minilm-l6"), num_labels=2)
    unmerged = PeftModel.from_pretrained(base, run_dir / "adapter")
    a, b = _logits(merged, tokenizer, texts), _logits(unmerged, tokenizer, texts)
    # fp32 on both sides; merging only re-associates the sums (W + BA)x = Wx + B(Ax)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_saved_model_reloads_in_plain_transformers_and_predicts_the_same_labels(lora_run):
    run_dir, _ = lora_run
    texts = _texts(run_dir, 200)
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    plain = [model.config.id2label[i] for i in _logits(model, tokenizer, texts).argmax(-1).tolist()]
    ours = [row["label"] for row in predict(run_dir, texts, precision="fp32")]
    assert plain == ours
    # the training job's own predictions ran under bf16 autocast: allow a borderline case or two
    saved = [json.loads(line)["prediction"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    agree = sum(p == s for p, s in zip(plain, saved[:200])) / len(plain)
    assert agree >= 0.98


def _trainable_after(tmp, name, batch_size, grad_accum):
    config = recipe(tmp, name, method={"name": "lora"}, model={"dropout": 0.0},
                    data={"max_train_samples": 256, "max_eval_samples": 32},
                    train={"batch_size": batch_size, "grad_accum": grad_accum, "max_steps": 3, "lr": 1e-3,
                           "precision": "fp32", "group_by_length": False, "eval_each_epoch": False,
                           "warmup_ratio": 0.0})
    train(config)
    from safetensors.torch import load_file

    return load_file(config.run_dir / "adapter" / "adapter_model.safetensors")


def test_gradient_accumulation_4x8_equals_1x32(runs):
    """Same examples, same update: the loss of a window is its example sum over the window's count.
    Dropout is off and precision fp32; tolerance 2e-5 absolute covers float re-association only."""
    big = _trainable_after(runs, "accum-1x32", 32, 1)
    small = _trainable_after(runs, "accum-4x8", 8, 4)
    assert big.keys() == small.keys()
    for key in big:
        torch.testing.assert_close(small[key], big[key], atol=2e-5, rtol=1e-4, msg=key)
    wrong = _trainable_after(runs, "accum-1x8", 8, 1)  # a control: a different batch really differs
    assert any(not torch.allclose(wrong[k], big[k], atol=1e-4) for k in big)


class Interrupt(Exception):
    pass


def test_resume_after_an_interruption_ends_exactly_like_an_uninterrupted_run(runs):
    settings = dict(method={"name": "lora"}, data={"max_train_samples": 384, "max_eval_samples": 96},
                    train={"epochs": 2, "batch_size": 16, "eval_every": 10, "checkpoint_every": 7, "lr": 1e-3})
    whole = recipe(runs, "whole", **settings)
    reference = train(whole)

    cut = recipe(runs, "cut", **settings)

    def stop_mid_epoch(loop):
        if loop.state.global_step == 17:  # epoch 1 has 24 steps; the last checkpoint is at step 14
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cut, plugins=[AfterStep(stop_mid_epoch)])
    assert latest_checkpoint(cut.run_dir / "checkpoints").name == "step-14"
    resumed = train(cut, resume=True)

    assert resumed["metrics"] == reference["metrics"]
    assert resumed["steps"] == reference["steps"] == 48
    strip = [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
             for line in (whole.run_dir / "metrics.jsonl").read_text().splitlines()]
    again = [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
             for line in (cut.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert again == strip
    from safetensors.torch import load_file

    a = load_file(whole.run_dir / "model" / "model.safetensors")
    b = load_file(cut.run_dir / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_changed_recipe(runs, lora_run):
    from tunecraft.errors import TunecraftError

    changed = recipe(runs, "lora", method={"name": "lora", "r": 4}, train={"lr": 1e-3})
    with pytest.raises(TunecraftError, match="differs from its config.yaml"):
        train(changed, resume=True)
    with pytest.raises(TunecraftError, match="already exists"):
        train(changed)


def test_early_stopping_stops_and_keeps_the_best_model(runs):
    # with mode=max on validation loss, which falls while training works, improvements are rare: the run
    # must stop after `patience` evaluations without a new best, and keep the best one
    config = recipe(runs, "early", method={"name": "lora"}, data={"max_train_samples": 320, "max_eval_samples": 64},
                    train={"epochs": 3, "batch_size": 16, "eval_every": 5, "lr": 1e-3,
                           "early_stopping": {"metric": "loss", "mode": "max", "patience": 2}})
    summary = train(config)
    records = [json.loads(x) for x in (config.run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    best, bad, expected_stop = None, 0, None
    for e in evals:  # replay the rule on the logged evaluations
        if best is None or e["loss"] > best["loss"]:
            best, bad = e, 0
        else:
            bad += 1
            if bad == 2:
                expected_stop = e["step"]
                break
    assert expected_stop is not None and summary["stopped_early"]
    assert summary["steps"] == expected_stop < summary["planned_steps"] == 60
    assert summary["best_step"] == best["step"] and summary["best_validation"]["loss"] == best["loss"]
    assert records[-1] == {"type": "early_stop", "step": expected_stop, "best_step": best["step"],
                           "best_loss": best["loss"]}
    # the exported adapter holds the best weights, not the last ones
    from safetensors.torch import load_file

    best_weights = load_file(config.run_dir / "checkpoints" / "best" / "trainable.safetensors")
    exported = load_file(config.run_dir / "adapter" / "adapter_model.safetensors")
    lora = {k.replace(".default", ""): v for k, v in best_weights.items() if "lora_" in k}
    assert lora and set(lora) <= set(exported)
    assert all(torch.equal(exported[k], v) for k, v in lora.items())
