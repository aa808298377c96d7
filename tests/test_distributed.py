"""Multi-process training: 2 CPU processes (DDP over gloo, and FSDP2 over gloo, started by `accelerate launch`
with the shipped configs) against 1 process with the same global batch; exact gathered evaluation; resume
N → M processes, sharded or not; the export of a sharded run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunecraft.config import build_config, dump_config
from tunecraft.train import train

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
CPU_2PROC = ROOT / "recipes" / "accelerate" / "cpu-2proc.yaml"
CPU_FSDP = ROOT / "recipes" / "accelerate" / "cpu-fsdp-2proc.yaml"
EVAL = 37  # not a multiple of 2 processes × the eval batch (16): the gathered count must still be exact
STEPS = 4
# fp32, dropout 0, same examples per step: the only difference is the order of the floating-point sums
# (two local sums + an all-reduce vs one sum), a few float32 ulps.
RTOL = 1e-5


def tiny(out: Path, name: str, grad_accum: int) -> dict:
    """A 2-layer scratch encoder on 64 mr sentences; 8 micro-batches per epoch of 8 examples."""
    return {"name": name, "output_dir": str(out), "seed": 7,
            "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 64, "dropout": 0.0},
            "data": {"dataset": "mr", "max_train_samples": 64, "max_eval_samples": EVAL},
            "method": {"name": "full"},
            "train": {"max_steps": STEPS, "batch_size": 8, "grad_accum": grad_accum, "lr": 1e-3,
                      "precision": "fp32", "warmup_ratio": 0.0, "log_every": 1, "checkpoint_every": 2,
                      "progress": False, "tensorboard": False, "num_threads": 1},
            "baselines": {"zero_shot": False}}


def launch_two(recipe: Path, *extra: str, config: Path = CPU_2PROC, ok: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--main_process_port", str(free_port()), "-m", "tunecraft", "train", str(recipe), *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if ok:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def copy_run(source: Path, parent: Path) -> dict:
    """A copy of a run folder under `parent`; returns its recipe, output_dir pointing at the copy."""
    shutil.copytree(source, parent / source.name)
    raw = {**yaml.safe_load((source / "config.yaml").read_text()), "output_dir": str(parent)}
    (parent / source.name / "config.yaml").write_text(dump_config(build_config(raw)))
    return raw


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run_dir, "train")}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same job twice: 2 processes × batch 8, and 1 process × batch 8 × 2 accumulation steps."""
    out = tmp_path_factory.mktemp("ddp")
    two = build_config(tiny(out, "two", grad_accum=1))
    path = out / "two.yaml"
    path.write_text(dump_config(two))
    launch_two(path)
    one = train(build_config(tiny(out, "one", grad_accum=2)))
    return out, json.loads((two.run_dir / "summary.json").read_text()), one


def test_two_processes_reach_the_same_losses_and_metrics_as_one(pair):
    out, two, one = pair
    assert (two["processes"], one["processes"]) == (2, 1)
    assert two["train_tokens"] == one["train_tokens"]  # the same examples, counted over both processes
    a, b = losses(out / "two"), losses(out / "one")
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=RTOL), step
    assert two["metrics"]["accuracy"] == one["metrics"]["accuracy"]
    assert two["metrics"]["loss"] == pytest.approx(one["metrics"]["loss"], rel=RTOL)
    [eval_two], [eval_one] = records(out / "two", "eval"), records(out / "one", "eval")
    assert eval_two["accuracy"] == eval_one["accuracy"]


def test_gathered_evaluation_counts_every_example_exactly_once(pair):
    out, two, _ = pair
    assert two["sizes"]["test"] == EVAL
    assert two["metrics"]["samples"] == EVAL
    predictions = (out / "two" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == EVAL


def test_an_evaluation_set_smaller_than_one_batch_per_process_does_not_hang(pair):
    """13 examples are one eval batch of 16: process 1 has none to run. Evaluating through the DDP wrapper
    hung here (its forward broadcasts buffers, a collective the idle process never joined)."""
    out, _, _ = pair
    launch_two(out / "two.yaml", "name=small", "data.max_eval_samples=13", "train.max_steps=2", "--overwrite")
    summary = json.loads((out / "small" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["metrics"]["samples"] == 13
    assert len(records(out / "small", "eval")) == 1


def test_a_two_process_checkpoint_resumes_on_one_process_at_the_right_step(pair, tmp_path):
    out, _, _ = pair
    reference = losses(out / "one")
    # a copy of the finished 2-process run: its checkpoint is step 2 (checkpoint_every 2; none at the end)
    run = tmp_path / "two"
    config = build_config(copy_run(out / "two", tmp_path))
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-2"]
    config.train.grad_accum = 2  # the same global batch on one process
    summary = train(config, resume=True)
    assert summary["processes"] == 1 and summary["steps"] == STEPS
    resumed = losses(run)
    assert sorted(resumed) == list(range(1, STEPS + 1))  # steps 3-4 redone once, not appended twice
    for step in (3, 4):
        assert resumed[step] == pytest.approx(reference[step], rel=RTOL), step


def test_a_one_process_checkpoint_resumes_on_two_processes_at_the_right_step(pair, tmp_path):
    out, _, _ = pair
    reference = losses(out / "one")
    run = tmp_path / "one"
    raw = copy_run(out / "one", tmp_path)
    raw["train"]["grad_accum"] = 1  # the same global batch on two processes
    path = tmp_path / "one.yaml"
    path.write_text(dump_config(build_config(raw)))
    launch_two(path, "--resume")
    resumed = losses(run)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in (3, 4):
        assert resumed[step] == pytest.approx(reference[step], rel=RTOL), step
    assert json.loads((run / "summary.json").read_text())["processes"] == 2


def test_resume_maps_the_position_in_the_epoch_to_another_layout(tmp_path):
    """3 steps of 1 process × 1 micro-batch done; resumed with 2 accumulation steps: 3 micro-batches of
    the epoch are done, so the new layout starts at its step 2 (micro-batches 4-5), skipping one."""
    from tunecraft.train.loop import LoopState, TrainingLoop

    class Acc:
        num_processes, process_index = 1, 0

    cfg = build_config(tiny(tmp_path, "x", grad_accum=2)).train
    cfg.max_steps, cfg.epochs = None, 2
    loop = TrainingLoop.__new__(TrainingLoop)
    loop.acc, loop.cfg, loop.seed, loop._windows = Acc(), cfg, 7, (None, [])
    loop.train_enc = type("Enc", (), {"lengths": [10] * 64})()
    loop.state = LoopState(epoch=0, step_in_epoch=3, global_step=3, total_steps=16, world_size=1, grad_accum=1)
    loop.resize(1, 2)
    s = loop.state
    assert (s.step_in_epoch, s.global_step) == (2, 3)
    assert s.total_steps == 3 + (4 - 2) + 4  # rest of epoch 0, then epoch 1, in steps of 2 micro-batches
    assert (s.world_size, s.grad_accum) == (1, 2)


# -- FSDP (accelerate's FSDP2, torch's fully_shard, over gloo on the CPU) ----------------------------------------
# The same job as `pair`: 2 processes × batch 8 with every parameter and optimizer state sharded across them.
# The sums are split as with DDP (reduce-scatter instead of all-reduce), so the same RTOL holds; weights are
# compared with WEIGHTS_ATOL after 2-4 Adam steps of lr 1e-3 (float32 rounding, no real difference).
WEIGHTS_ATOL = 1e-5


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def assert_same_weights(a: dict, b: dict) -> None:
    import torch

    assert sorted(a) == sorted(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=WEIGHTS_ATOL, rtol=RTOL, msg=name)


@pytest.fixture(scope="module")
def fsdp(pair):
    out, _, _ = pair
    launch_two(out / "two.yaml", "name=fsdp", config=CPU_FSDP)
    return out, json.loads((out / "fsdp" / "summary.json").read_text())


@pytest.mark.slow
def test_fsdp_on_two_processes_reaches_the_losses_metrics_and_checkpoint_of_one(fsdp):
    out, summary = fsdp
    one = json.loads((out / "one" / "summary.json").read_text())
    assert (summary["distributed"], summary["processes"]) == ("FSDP", 2)  # sharded, not DDP in disguise
    a, b = losses(out / "fsdp"), losses(out / "one")
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=RTOL), step
    assert summary["metrics"]["samples"] == EVAL
    assert summary["metrics"]["accuracy"] == one["metrics"]["accuracy"]
    assert summary["metrics"]["loss"] == pytest.approx(one["metrics"]["loss"], rel=RTOL)
    # the checkpoint holds full tensors in a one-process run's format: weights by name, optimizer by number
    ckpt_fsdp, ckpt_one = out / "fsdp" / "checkpoints" / "step-2", out / "one" / "checkpoints" / "step-2"
    assert_same_weights(weights(ckpt_fsdp / "trainable.safetensors"), weights(ckpt_one / "trainable.safetensors"))
    import torch

    opt_fsdp = torch.load(ckpt_fsdp / "optimizer.pt", weights_only=True)
    opt_one = torch.load(ckpt_one / "optimizer.pt", weights_only=True)
    assert [g["params"] for g in opt_fsdp["param_groups"]] == [g["params"] for g in opt_one["param_groups"]]
    assert sorted(opt_fsdp["state"]) == sorted(opt_one["state"])
    for number, state in opt_one["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(opt_fsdp["state"][number][key], value, atol=WEIGHTS_ATOL, rtol=RTOL)


@pytest.mark.slow
def test_a_fsdp_checkpoint_resumes_on_one_process_and_ends_as_an_uninterrupted_run(fsdp, tmp_path):
    out, _ = fsdp
    reference = losses(out / "one")
    config = build_config(copy_run(out / "fsdp", tmp_path))
    config.train.grad_accum = 2  # the same global batch on one process
    summary = train(config, resume=True)
    assert (summary["processes"], summary["steps"]) == (1, STEPS)
    resumed = losses(tmp_path / "fsdp")
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in (3, 4):
        assert resumed[step] == pytest.approx(reference[step], rel=RTOL), step
    assert_same_weights(weights(tmp_path / "fsdp" / "model" / "model.safetensors"),
                        weights(out / "one" / "model" / "model.safetensors"))


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_under_fsdp_and_ends_as_an_uninterrupted_run(pair, tmp_path):
    out, _, _ = pair
    reference = losses(out / "one")
    raw = copy_run(out / "one", tmp_path)
    raw["train"]["grad_accum"] = 1  # the same global batch on two processes
    path = tmp_path / "one.yaml"
    path.write_text(dump_config(build_config(raw)))
    launch_two(path, "--resume", config=CPU_FSDP)
    run = tmp_path / "one"
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["distributed"], summary["processes"], summary["steps"]) == ("FSDP", 2, STEPS)
    resumed = losses(run)
    for step in (3, 4):
        assert resumed[step] == pytest.approx(reference[step], rel=RTOL), step
    assert_same_weights(weights(run / "model" / "model.safetensors"),
                        weights(out / "one" / "model" / "model.safetensors"))


@pytest.mark.slow
def test_the_model_exported_by_fsdp_predicts_with_plain_transformers_as_the_run_evaluated(fsdp):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, _ = fsdp
    model_dir = out / "fsdp" / "model"
    # the full model, not process 0's shard: the same weights as the one-process run's export
    assert_same_weights(weights(model_dir / "model.safetensors"), weights(out / "one" / "model" / "model.safetensors"))
    rows = [json.loads(line) for line in (out / "fsdp" / "predictions.jsonl").read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    labels = json.loads((model_dir / "tunecraft.json").read_text())["labels"]
    batch = tokenizer([r["text"] for r in rows], truncation=True, max_length=64, padding=True, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**batch).logits.softmax(-1)
    assert len(rows) == EVAL
    for row, p in zip(rows, probabilities.tolist()):
        assert row["prediction"] == labels[max(range(len(p)), key=p.__getitem__)]
        assert [row["probabilities"][label] for label in labels] == pytest.approx(p, abs=1e-5)


@pytest.mark.slow
def test_lora_under_fsdp_matches_one_process(pair):
    """LoRA leaves frozen and trainable parameters in the same blocks; FSDP2 shards both."""
    out, _, _ = pair
    launch_two(out / "two.yaml", "name=fsdp-lora", "method.name=lora", "train.lr=1e-2", config=CPU_FSDP)
    raw = tiny(out, "one-lora", grad_accum=2)
    raw["method"]["name"], raw["train"]["lr"] = "lora", 1e-2
    one = train(build_config(raw))
    two = json.loads((out / "fsdp-lora" / "summary.json").read_text())
    assert two["distributed"] == "FSDP" and two["trainable_params"] == one["trainable_params"]
    a, b = losses(out / "fsdp-lora"), losses(out / "one-lora")
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=RTOL), step
    assert two["metrics"]["loss"] == pytest.approx(one["metrics"]["loss"], rel=RTOL)
    assert (out / "fsdp-lora" / "adapter" / "adapter_config.json").is_file()
    assert_same_weights(weights(out / "fsdp-lora" / "model" / "model.safetensors"),
                        weights(out / "one-lora" / "model" / "model.safetensors"))


@pytest.mark.slow
def test_fsdp_refuses_what_its_checkpoints_do_not_cover(pair):
    out, _, _ = pair
    done = launch_two(out / "two.yaml", "name=fsdp-ia3", "method.name=ia3", config=CPU_FSDP, ok=False)
    assert done.returncode != 0
    assert "not supported under FSDP" in done.stdout + done.stderr
    assert not (out / "fsdp-ia3").exists()  # refused before the run folder is touched


def test_only_train_accepts_an_fsdp_launch(monkeypatch):
    from tunecraft.errors import TunecraftError
    from tunecraft.train.session import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(TunecraftError, match="only"):
        make_accelerator("no")  # pretrain and plan call it so: their checkpoints would hold one shard
