"""`tunecraft plan`: real steps of a tiny scratch encoder; the estimate's parts add up, --auto keeps the
global batch and respects the memory budget, gradient checkpointing is chosen only when nothing else fits."""

import pytest

from tunecraft.cli import main
from tunecraft.config import build_config, dump_config, load_config
from tunecraft.errors import ConfigError
from tunecraft.runtime.precision import cpu_has_bf16
from tunecraft.train.job import prepare_job
from tunecraft.train.plan import measure, parse_bytes, plan

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def tiny(tmp_path, **train) -> dict:
    return {"name": "tinyplan", "output_dir": str(tmp_path), "seed": 7,
            "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 96},
            "data": {"dataset": "mr", "max_train_samples": 128, "max_eval_samples": 16},
            "method": {"name": "full"},
            "train": {"epochs": 2, "batch_size": 8, "precision": "fp32", "progress": False,
                      "tensorboard": False, "num_threads": 1, **train},
            "baselines": {"zero_shot": False}}


def test_parse_bytes():
    assert parse_bytes("4GB") == 4_000_000_000
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("1.5g") == 1_500_000_000
    with pytest.raises(ConfigError, match="memory size"):
        parse_bytes("four gigs")


def test_plan_measures_a_consistent_estimate(tmp_path):
    config = build_config(tiny(tmp_path))
    result = plan(config, steps=2)
    c, e = result["chosen"], result["estimate"]
    for part in ("parameter_bytes", "gradient_bytes", "optimizer_bytes", "activation_bytes"):
        assert c[part] > 0, part
    assert c["peak_bytes"] > c["parameter_bytes"]
    assert c["peak_bytes"] == c["parameter_bytes"] + c["gradient_bytes"] + c["optimizer_bytes"] + c["activation_bytes"]
    assert c["gradient_bytes"] == c["parameter_bytes"]  # full fine-tune, fp32 weights
    # AdamW: two moments per trained weight (+ a 4-byte step counter per tensor)
    assert c["optimizer_bytes"] == pytest.approx(2 * c["gradient_bytes"], rel=0.01)
    assert c["tokens_per_second"] > 0 and c["steps_timed"] == 2
    assert e["epoch_seconds"] > 0
    assert e["run_seconds"] == pytest.approx(e["epoch_seconds"] * 2, rel=0.01)
    assert e["steps"] == 2 * 16  # 128 examples / batch 8, two epochs
    assert e["epoch_tokens"] == sum(prepare_job(config).train_enc.lengths)
    assert not (tmp_path / "tinyplan").exists()  # plan writes no run folder


def test_auto_fits_the_budget_at_the_best_measured_speed_and_writes_a_recipe(tmp_path, capsys):
    config = build_config(tiny(tmp_path, batch_size=4, grad_accum=2))
    lowest = "bf16" if cpu_has_bf16() else "fp32"
    smallest = measure(build_config(tiny(tmp_path, batch_size=1, grad_accum=8, precision=lowest)),
                       prepare_job(config), steps=1)
    # a budget that even micro-batches of one exceed without gradient checkpointing, in either precision
    budget = smallest.peak_bytes - 1
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(dump_config(config))
    out = tmp_path / "planned.yaml"
    code = main(["plan", str(recipe), "--auto", "--memory-budget", f"{budget}B", "--steps", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "chosen overrides: train.batch_size=" in printed
    planned = load_config(out)
    assert planned.train.batch_size * planned.train.grad_accum == 8  # the recipe's global batch
    assert planned.train.gradient_checkpointing
    assert planned.train.lr == config.train.lr and planned.name == config.name

    result = plan(config, steps=1, memory_budget=budget, auto=True, log=lambda _: None)
    chosen, measured = result["chosen"], result["measured"]
    assert chosen["peak_bytes"] <= budget
    assert all(r["fits"] == (r["peak_bytes"] <= budget) for r in measured)
    assert not any(r["fits"] for r in measured if not r["gradient_checkpointing"])
    fitting = [r for r in measured if r["fits"]]
    assert chosen["tokens_per_second"] == max(r["tokens_per_second"] for r in fitting)
    by_layout = {(r["batch_size"], r["precision"], r["gradient_checkpointing"]): r for r in measured}
    if cpu_has_bf16():  # bf16 autocast keeps half-size activations: each layout really ran in its precision
        for (b, p, ckpt), r in by_layout.items():
            if p == "bf16" and (b, "fp32", ckpt) in by_layout:
                assert r["activation_bytes"] < by_layout[(b, "fp32", ckpt)]["activation_bytes"], (b, ckpt)
    # checkpointing keeps less for backward than the same layout without it
    by_layout = {(r["batch_size"], r["precision"], r["gradient_checkpointing"]): r for r in measured}
    for (b, p, ckpt), r in by_layout.items():
        if ckpt:
            assert r["activation_bytes"] < by_layout[(b, p, False)]["activation_bytes"]


def test_auto_refuses_a_budget_nothing_fits(tmp_path):
    config = build_config(tiny(tmp_path, batch_size=2, grad_accum=1, precision="fp32"))
    with pytest.raises(ConfigError, match="no layout fits"):
        plan(config, steps=1, memory_budget=1000, auto=True, log=lambda _: None)


@pytest.mark.skipif(not cpu_has_bf16(), reason="bf16 autocast needs avx512_bf16/amx_bf16 on CPU")
def test_lora_bf16_counts_the_frozen_weights_cast_copies_once(tmp_path):
    """Training holds frozen Linear weights in bf16 beside their fp32 values (runtime.precision.frozen_linears_cast):
    plan counts those copies with the parameters, and not again among the tensors saved for backward."""
    import torch

    def lora(precision):
        config = build_config({**tiny(tmp_path, precision=precision, batch_size=4), "method": {"name": "lora"}})
        return config, prepare_job(config)

    config, job = lora("bf16")
    frozen_linear = sum(p.numel() for m in job.model.modules() if isinstance(m, torch.nn.Linear)
                        for p in m.parameters(recurse=False) if not p.requires_grad)
    # the classifier head and LoRA matrices train; the attention and MLP base weights are frozen
    assert frozen_linear > 0
    bf16 = measure(config, job, steps=1)
    config32, job32 = lora("fp32")
    fp32 = measure(config32, job32, steps=1)
    # the tiny scratch encoder's word embeddings are not tied to a Linear layer, so every frozen Linear is cast
    assert bf16.parameter_bytes - fp32.parameter_bytes == 2 * frozen_linear
    assert bf16.gradient_bytes == fp32.gradient_bytes and bf16.optimizer_bytes == fp32.optimizer_bytes
    assert bf16.activation_bytes < fp32.activation_bytes  # half-size activations under bf16


def test_saved_tensor_count_leaves_out_the_held_cast_copies():
    """A frozen Linear under the cast saves its bf16 weight for backward: that copy is counted with the
    parameters, so the activation count holds only the input saved for the weight-free gradient path."""
    import torch

    from tunecraft.runtime.precision import frozen_linears_cast
    from tunecraft.train.plan import _SavedTensors

    layer = torch.nn.Linear(64, 64).requires_grad_(False)
    x = torch.randn(8, 64, requires_grad=True)

    def saved_bytes(exclude: bool) -> tuple[int, int]:
        with frozen_linears_cast(layer, torch.bfloat16) as held:
            saved = _SavedTensors(held if exclude else ())
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), \
                    torch.autocast("cpu", dtype=torch.bfloat16):
                layer(x).sum().backward()
            return saved.bytes, sum(t.untyped_storage().nbytes() for t in held)

    counted, held_bytes = saved_bytes(exclude=True)
    everything, _ = saved_bytes(exclude=False)
    assert held_bytes == 2 * 64 * 64 + 2 * 64  # weight and bias, bf16
    assert everything - counted == 2 * 64 * 64  # the weight autograd saved is exactly the held copy, left out
